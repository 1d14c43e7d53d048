"""Graphs with skip connections: DAG helpers of the IR, link crossing/pricing, and per-board DAG stages.

No hls4ml compile here: the packed stage graphs are checked with a float numpy evaluator of the IR
(chained stages == whole graph, exactly), and against Keras rebuilt from the IR. The C-simulation
proof is in tests/test_dag_verify.py (slow).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from split4ml.boards import get_board
from split4ml.errors import PlanError, Split4mlError
from split4ml.fixed import FixedType
from split4ml.ir import Graph, Layer
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.stages import (
    crossing_tensors,
    dag_stage_of,
    dag_stages,
    linear_pipeline,
    link_bytes,
    stage_tensors,
    whole_model_stage,
)

BOARD = get_board("pynq-z2")
BUILD = BuildSettings()


def _dense(name: str, src: str, n_in: int, n_out: int, rng: np.random.Generator, act: str | None = None) -> Layer:
    return Layer(name=name, kind="Dense", input_shape=(n_in,), output_shape=(n_out,), inputs=(src,), activation=act,
                 params={"units": n_out, "use_bias": True},
                 weights={"kernel": rng.normal(size=(n_in, n_out)).astype(np.float32),
                          "bias": rng.normal(size=n_out).astype(np.float32)})


def resnet_graph(seed: int = 0) -> Graph:
    """x(6) -> stem(4, relu) -> [b1: fc1(relu), fc2, add(stem, fc2), relu] -> [b2 likewise] -> head(3) -> cat(head, b2_relu)."""
    rng = np.random.default_rng(seed)
    layers = [Layer(name="x", kind="Input", input_shape=(6,), output_shape=(6,)),
              _dense("stem", "x", 6, 4, rng, "relu")]
    h = "stem"
    for b in (1, 2):
        layers += [_dense(f"b{b}_fc1", h, 4, 4, rng, "relu"), _dense(f"b{b}_fc2", f"b{b}_fc1", 4, 4, rng),
                   Layer(name=f"b{b}_add", kind="Add", input_shape=(4,), output_shape=(4,), inputs=(h, f"b{b}_fc2"),
                         input_shapes=((4,), (4,))),
                   Layer(name=f"b{b}_relu", kind="Activation", input_shape=(4,), output_shape=(4,),
                         inputs=(f"b{b}_add",), activation="relu")]
        h = f"b{b}_relu"
    layers += [_dense("head", h, 4, 3, rng),
               Layer(name="cat", kind="Concatenate", input_shape=(3,), output_shape=(7,), inputs=("head", h),
                     input_shapes=((3,), (4,)), params={"axis": -1})]
    return Graph(name="resnet", layers=tuple(layers), outputs=("cat",))


def _settings(g: Graph) -> dict[str, LayerSettings]:
    return {lyr.name: LayerSettings() for lyr in g.body}


def np_eval(g: Graph, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Float64 numpy evaluation of a graph given every Input layer's batch; returns the outputs."""
    vals: dict[str, np.ndarray] = {}
    for lyr in g.layers:
        if lyr.kind == "Input":
            vals[lyr.name] = inputs[lyr.name].reshape((-1, *lyr.output_shape))
            continue
        args = [vals[s] for s in lyr.inputs]
        n = args[0].shape[0]
        if lyr.kind == "Dense":
            y = args[0] @ lyr.weights["kernel"].astype(np.float64) + lyr.weights["bias"].astype(np.float64)
            y = np.maximum(y, 0) if lyr.activation == "relu" else y
        elif lyr.kind == "Activation":
            y = np.maximum(args[0], 0)
        elif lyr.kind == "Add":
            y = args[0] + args[1]
        elif lyr.kind == "Concatenate":
            y = np.concatenate(args, axis=-1)
        elif lyr.kind == "Slice":
            y = args[0][:, lyr.params["start"]:lyr.params["stop"], :]
        elif lyr.kind == "Reshape":
            y = args[0].reshape((n, *lyr.params["target_shape"]))
        else:  # pragma: no cover - test helper
            raise AssertionError(lyr.kind)
        assert y.shape[1:] == lyr.output_shape, lyr.name
        vals[lyr.name] = y
    return [vals[o] for o in g.outputs]


# --------------------------------------------------------------------------- IR
def test_dag_helpers_and_units() -> None:
    g = resnet_graph()
    g.check_dag()
    assert not g.is_chain
    assert [c.name for c in g.consumers("stem")] == ["b1_fc1", "b1_add"]
    assert [c.name for c in g.consumers("b2_relu")] == ["head", "cat"]
    assert g.layer("cat").in_shapes == ((3,), (4,)) and g.layer("cat").is_merge
    assert g.layer("stem").in_shapes == ((6,),) and not g.layer("stem").is_merge
    units = [[lyr.name for lyr in u] for u in g.units()]
    assert units == [["stem"], ["b1_fc1"], ["b1_fc2"], ["b1_add", "b1_relu"], ["b2_fc1"], ["b2_fc2"],
                     ["b2_add", "b2_relu"], ["head"], ["cat"]]


def test_units_attach_activation_to_its_producer_not_the_previous_layer() -> None:
    rng = np.random.default_rng(1)
    x = Layer(name="x", kind="Input", input_shape=(3,), output_shape=(3,))
    a = _dense("a", "x", 3, 3, rng)
    b = _dense("b", "x", 3, 3, rng)
    ra = Layer(name="ra", kind="Activation", input_shape=(3,), output_shape=(3,), inputs=("a",), activation="relu")
    add = Layer(name="add", kind="Add", input_shape=(3,), output_shape=(3,), inputs=("ra", "b"),
                input_shapes=((3,), (3,)))
    g = Graph(name="g", layers=(x, a, b, ra, add), outputs=("add",))
    assert [[lyr.name for lyr in u] for u in g.units()] == [["a", "ra"], ["b"], ["add"]]


def test_check_dag_rejects_bad_order() -> None:
    g = resnet_graph()
    layers = list(g.layers)
    layers[2], layers[3] = layers[3], layers[2]  # b1_fc2 before b1_fc1
    with pytest.raises(Split4mlError, match="'b1_fc1', which comes after it"):
        Graph(name="bad", layers=tuple(layers), outputs=g.outputs).check_dag()
    with pytest.raises(Split4mlError, match="outputs"):
        Graph(name="bad", layers=g.layers, outputs=("nope",)).check_dag()


# --------------------------------------------------------------------------- assignments and links
SKIP_OVER = [["stem"], ["b1_fc1"], ["b1_fc2", "b1_add", "b1_relu", "b2_fc1"], ["b2_fc2", "b2_add", "b2_relu", "head",
                                                                               "cat"]]


def test_skip_tensor_crosses_every_link_up_to_its_last_reader() -> None:
    g = resnet_graph()
    links = crossing_tensors(g, SKIP_OVER)
    # stem is produced on board 0 and read by b1_add on board 2: it crosses link 0 and link 1 (forwarded by board 1)
    assert links == [["stem"], ["stem", "b1_fc1"], ["b1_relu", "b2_fc1"]]
    st = _settings(g)
    assert link_bytes(g, SKIP_OVER, st, BUILD) == [4 * 2, 8 * 2, 8 * 2]
    io = stage_tensors(g, SKIP_OVER)
    assert io[0] == (["x"], ["stem"]) and io[-1] == (["b1_relu", "b2_fc1"], ["cat"])


def test_model_input_is_forwarded_to_its_last_reader() -> None:
    rng = np.random.default_rng(2)
    x = Layer(name="x", kind="Input", input_shape=(4,), output_shape=(4,))
    a = _dense("a", "x", 4, 4, rng, "relu")
    b = _dense("b", "a", 4, 4, rng)
    add = Layer(name="add", kind="Add", input_shape=(4,), output_shape=(4,), inputs=("x", "b"),
                input_shapes=((4,), (4,)))
    g = Graph(name="g", layers=(x, a, b, add), outputs=("add",))
    assert crossing_tensors(g, [["a"], ["b"], ["add"]]) == [["x", "a"], ["x", "b"]]
    wide = {**_settings(g), "a": LayerSettings(precision=LayerPrecision(result=BUILD.input_precision))}
    assert link_bytes(g, [["a"], ["b"], ["add"]], wide, BUILD) == [16, 16]


def test_one_stage_is_the_whole_model() -> None:
    g = resnet_graph()
    assert crossing_tensors(g, [[lyr.name for lyr in g.body]]) == []


@pytest.mark.parametrize("stages,match", [
    ([["stem", "b1_fc2"], ["b1_fc1", "b1_add", "b1_relu", "b2_fc1", "b2_fc2", "b2_add", "b2_relu", "head", "cat"]],
     "reads 'b1_fc1', which runs later"),
    ([["stem", "b1_fc1", "b1_fc2", "b1_add"], ["b1_relu", "b2_fc1", "b2_fc2", "b2_add", "b2_relu", "head", "cat"]],
     "activation 'b1_relu' must stay on the same board as 'b1_add'"),
    ([["stem", "b1_fc1"], ["b1_fc2", "b1_add", "b1_relu"]], "are on no board"),
    ([["stem", "stem"], []], "listed twice"),
    ([["stem", "nope"]], "not in the model"),
    ([["stem"], []], "needs at least one layer"),
])
def test_invalid_assignments_are_refused(stages: list[list[str]], match: str) -> None:
    with pytest.raises(PlanError, match=match):
        dag_stage_of(resnet_graph(), stages)


def test_tensors_of_different_types_cannot_share_a_wire() -> None:
    g = resnet_graph()
    st = _settings(g)
    st["b1_fc1"] = LayerSettings(precision=LayerPrecision(result=FixedType(18, 8)))
    with pytest.raises(PlanError, match="different types"):
        dag_stages(g, SKIP_OVER, [BOARD] * 4, st, BUILD)


# --------------------------------------------------------------------------- stages
@pytest.mark.parametrize("stages", [
    SKIP_OVER,
    [["stem", "b1_fc1", "b1_fc2", "b1_add", "b1_relu"], ["b2_fc1", "b2_fc2", "b2_add", "b2_relu", "head", "cat"]],
    [["stem"], ["b1_fc1"], ["b1_fc2"], ["b1_add", "b1_relu", "b2_fc1", "b2_fc2"], ["b2_add", "b2_relu", "head"],
     ["cat"]],
])
def test_chained_packed_stages_compute_the_whole_graph(stages: list[list[str]]) -> None:
    g = resnet_graph()
    st = _settings(g)
    boards = [BOARD] * len(stages)
    built = dag_stages(g, stages, boards, st, BUILD)
    pipe = linear_pipeline(built)
    assert [n.id for n in pipe.nodes] == [f"stage_{i}" for i in range(len(stages))]
    links = crossing_tensors(g, stages)
    for k, s in enumerate(built):
        assert len([lyr for lyr in s.graph.layers if lyr.kind == "Input"]) == 1
        assert len(s.graph.outputs) == 1
        s.graph.check_dag()
        if k + 1 < len(built):  # what a board sends is what the next one takes, and what the link carries
            assert math.prod(s.output_shape) == math.prod(built[k + 1].input_shape)
            assert math.prod(s.output_shape) * 2 == link_bytes(g, stages, st, BUILD)[k]
            assert sum(g.layer(t).n_out for t in links[k]) == math.prod(s.output_shape)
        assert set(s.settings) == {lyr.name for lyr in s.graph.body}
    x = np.random.default_rng(3).normal(size=(16, 6))
    want = np_eval(g, {"x": x})[0]
    h = x
    for s in built:
        (h,) = np_eval(s.graph, {s.graph.input.name: h})
    np.testing.assert_array_equal(h.reshape(want.shape), want)
    whole = whole_model_stage(g, BOARD, st, BUILD)
    assert whole.name == "whole" and whole.input_shape == (6,) and whole.output_shape == (7,)
    np.testing.assert_array_equal(np_eval(whole.graph, {whole.graph.input.name: x})[0], want)


def test_packed_stage_layout() -> None:
    g = resnet_graph()
    built = dag_stages(g, SKIP_OVER, [BOARD] * 4, _settings(g), BUILD)
    s1, s2 = built[1], built[2]
    # board 1 receives stem alone (natural shape) and sends stem (forwarded) + b1_fc1 packed
    assert s1.input_shape == (4,) and s1.output_shape == (8,)
    assert [lyr.kind for lyr in s1.graph.layers] == ["Input", "Dense", "Concatenate"]
    assert s1.graph.layer(s1.graph.outputs[0]).inputs == ("stage1_input", "b1_fc1")
    # board 2 unpacks two tensors from an (8, 1) wire
    assert s2.input_shape == (8, 1)
    cuts = [(lyr.params["start"], lyr.params["stop"]) for lyr in s2.graph.layers if lyr.kind == "Slice"]
    assert cuts == [(0, 4), (4, 8)]
    assert s2.input_type == s1.output_type == BUILD.result_precision


def test_dag_stage_names_do_not_clash_with_model_layers() -> None:
    g = resnet_graph()
    renamed = Graph(name="g", layers=tuple(lyr.with_(name="stage1_input") if lyr.name == "head" else
                                           lyr.with_(inputs=tuple("stage1_input" if s == "head" else s
                                                                  for s in lyr.inputs))
                                           for lyr in g.layers), outputs=g.outputs)
    stages = [["stem", "b1_fc1", "b1_fc2", "b1_add", "b1_relu"], ["b2_fc1", "b2_fc2", "b2_add", "b2_relu",
                                                                  "stage1_input", "cat"]]
    built = dag_stages(renamed, stages, [BOARD] * 2, _settings(renamed), BUILD)
    names = [lyr.name for lyr in built[1].graph.layers]
    assert len(set(names)) == len(names) and built[1].graph.input.name == "stage1_input_1"


def test_keras_rebuild_of_packed_stages_matches_the_graph() -> None:
    pytest.importorskip("keras")
    from split4ml.hls.to_keras import keras_model_from_graph

    g = resnet_graph()
    built = dag_stages(g, SKIP_OVER, [BOARD] * 4, _settings(g), BUILD)
    x = np.random.default_rng(4).normal(size=(8, 6)).astype(np.float32)
    want = np_eval(g, {"x": x})[0]
    h = x
    for s in built:
        model = keras_model_from_graph(s.graph)
        assert [t.shape[1:] for t in model.inputs] == [s.input_shape]
        h = np.asarray(model.predict(h.reshape((-1, *s.input_shape)), verbose=0), dtype=np.float64)
    np.testing.assert_allclose(h, want, rtol=1e-5, atol=1e-5)
    whole = keras_model_from_graph(g)
    np.testing.assert_allclose(whole.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)


def test_conv_residual_stages_rebuilt_in_keras_match_the_model() -> None:
    """Feature maps cross packed wires (flattened, then reshaped back) and a channel Concatenate works."""
    keras = pytest.importorskip("keras")
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.hls.to_keras import keras_model_from_graph

    L = keras.layers
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 1), name="x")
    c0 = L.Conv2D(3, 3, padding="same", activation="relu", name="c0")(x)
    c1 = L.Conv2D(3, 3, padding="same", activation="relu", name="c1")(c0)
    c2 = L.Conv2D(3, 3, padding="same", name="c2")(c1)
    h = L.Activation("relu", name="r1")(L.Add(name="add1")([c0, c2]))
    h = L.MaxPooling2D(2, name="pool")(h)
    h = L.Concatenate(name="cat")([h, L.Conv2D(2, 1, name="proj")(h)])
    out = L.Dense(4, name="fc")(L.Flatten(name="flat")(h))
    model = keras.Model(x, out, name="conv_res")
    g = graph_from_keras(model)
    stages = [["c0"], ["c1"], ["c2", "add1", "r1", "pool", "proj", "cat", "flat", "fc"]]
    assert crossing_tensors(g, stages) == [["c0"], ["c0", "c1"]]
    built = dag_stages(g, stages, [BOARD] * 3, _settings(g), BUILD)
    assert built[1].output_shape == (6 * 6 * 3 * 2,) and built[2].input_shape == (6 * 6 * 3 * 2, 1)
    xs = np.random.default_rng(5).normal(size=(4, 6, 6, 1)).astype(np.float32)
    h = xs
    for s in built:
        h = np.asarray(keras_model_from_graph(s.graph).predict(h.reshape((-1, *s.input_shape)), verbose=0))
    np.testing.assert_allclose(h, model.predict(xs, verbose=0), rtol=1e-5, atol=1e-5)
