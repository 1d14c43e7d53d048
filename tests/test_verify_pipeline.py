"""verify_pipeline: intra-layer splits (shards and merge boards) against the whole model, bit for bit."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from split4ml.boards import get_board
from split4ml.errors import BuildError
from split4ml.estimate.base import Cost
from split4ml.fixed import FixedType
from split4ml.frontends.keras import graph_from_keras
from split4ml.ir import Graph
from split4ml.lower import stages_pipeline
from split4ml.plan.api import align_passthrough
from split4ml.plan.planfile import ShardPlan, SplitSpec, StagePlan, Wire
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.stages import Node, Pipeline, Source, Stage, whole_model_stage
from split4ml.verify import VerifyResult, random_inputs, verify_pipeline

PYNQ = get_board("pynq-z2")
BUILD = BuildSettings()
_WIRE = Wire(BUILD.input_precision, (1,))


def _stage(index: int, layers: Sequence[str], settings: Mapping[str, LayerSettings], split: SplitSpec | None = None,
           merge: str | None = None) -> StagePlan:
    shards = tuple(ShardPlan(part=p, board=PYNQ, layers=(), settings={}, cost=Cost(), input=_WIRE, output=_WIRE)
                   for p in range(split.parts)) if split is not None else ()
    return StagePlan(index=index, board=PYNQ, layers=tuple(layers), settings={n: settings[n] for n in layers},
                     cost=Cost(), input=_WIRE, output=_WIRE, split=split, shards=shards, merge=merge)


def _samples(t: FixedType, shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """Two thirds spread over the whole input range, one third typical (normal) values."""
    wide = random_inputs(t, shape, n - n // 3, seed=seed)
    typical = t.quantize(np.random.default_rng(seed + 1).normal(size=(n // 3, *shape)))
    return np.concatenate([wide, typical])


def _init(keras, i: int) -> dict:
    return {"kernel_initializer": keras.initializers.GlorotUniform(seed=10 + i),
            "bias_initializer": keras.initializers.RandomUniform(-0.5, 0.5, seed=50 + i)}


def _mlp(sizes: Sequence[int], last: str | None, standalone_softmax: bool) -> Graph:
    import keras

    layers = [keras.Input(shape=(sizes[0],), name="x")]
    for i in range(1, len(sizes)):
        act = "relu" if i < len(sizes) - 1 else last
        layers.append(keras.layers.Dense(sizes[i], activation=act, name=f"fc{i}", **_init(keras, i)))
    if standalone_softmax:
        layers.append(keras.layers.Activation("softmax", name="softmax"))
    return graph_from_keras(keras.Sequential(layers, name="mlp_" + "_".join(map(str, sizes))))


def _conv_model(kind: str) -> Graph:
    import keras

    kl = keras.layers
    if kind == "Conv2D":
        body = [keras.Input(shape=(8, 8, 3), name="x"), kl.Conv2D(8, 3, activation="relu", name="conv1", **_init(keras, 1)),
                kl.Conv2D(6, 3, padding="same", name="conv2", **_init(keras, 2)), kl.Activation("relu", name="relu2"),
                kl.Flatten(name="flatten"), kl.Dense(4, activation="softmax", name="fc", **_init(keras, 3))]
    else:
        body = [keras.Input(shape=(16, 5), name="x"), kl.Conv1D(6, 3, activation="relu", name="conv1", **_init(keras, 4)),
                kl.Flatten(name="flatten"), kl.Dense(3, name="fc", **_init(keras, 5))]
    return graph_from_keras(keras.Sequential(body, name=f"cnn_{kind.lower()}"))


def _case(graph: Graph, layout: Sequence[tuple], **per_layer: LayerSettings) -> tuple[Pipeline, Stage]:
    """Pipeline and whole-model reference of ``graph`` cut as ``layout``: (layers, split, merge) per stage."""
    settings = align_passthrough(graph, {lyr.name: per_layer.get(lyr.name, LayerSettings()) for lyr in graph.body})
    stages = [_stage(i, layers, settings, split, merge) for i, (layers, split, merge) in enumerate(layout)]
    return stages_pipeline(graph, stages, BUILD), whole_model_stage(graph, PYNQ, settings, BUILD)


def _check_exact(res: VerifyResult, n: int, n_stages: int, n_boards: int) -> None:
    assert res.bit_exact and res.mismatched_samples == 0 and res.max_abs_diff == 0.0, res
    assert (res.samples, res.n_stages, res.n_boards) == (n, n_stages, n_boards)
    assert res.as_dict()["n_boards"] == n_boards


# ------------------------------------------------------------------------------- the two manual cases
@pytest.fixture(scope="session")
def neuron_256_46_10() -> tuple[Pipeline, Stage]:
    """256-46(relu)-10-softmax, fc1 split by neurons 23/23 (Resource strategy on the split layer)."""
    g = _mlp([256, 46, 10], last=None, standalone_softmax=True)
    return _case(g, [(["fc1"], SplitSpec("fc1", "neuron", 2), None), (["fc2", "softmax"], None, None)],
                 fc1=LayerSettings(reuse_factor=16, strategy="Resource"))


@pytest.fixture(scope="session")
def input_784_16_10() -> tuple[Pipeline, Stage]:
    """784-16(relu)-10-softmax, fc1 split by inputs 392/392 (Resource strategy on the split layer)."""
    g = _mlp([784, 16, 10], last=None, standalone_softmax=True)
    return _case(g, [(["fc1"], SplitSpec("fc1", "input", 2), None), (["fc2", "softmax"], None, "fc1")],
                 fc1=LayerSettings(reuse_factor=28, strategy="Resource"))


@pytest.mark.slow
def test_256_46_10_neuron_split_is_bit_exact(neuron_256_46_10) -> None:
    pipe, whole = neuron_256_46_10
    shards = pipe.nodes[:2]
    assert [n.stage.output_shape for n in shards] == [(23,), (23,)]
    assert [n.stage.graph.body[0].activation for n in shards] == ["relu", "relu"]
    assert all(n.stage.settings[n.stage.graph.body[0].name].reuse_factor == 16 for n in shards)
    x = _samples(whole.input_type, (256,), 300, seed=21)
    _check_exact(verify_pipeline(pipe, whole, x), 300, 2, 3)


@pytest.mark.slow
def test_784_16_10_input_split_is_bit_exact(input_784_16_10) -> None:
    pipe, whole = input_784_16_10
    assert [n.sources for n in pipe.nodes[:2]] == [(Source(None, 0, 392),), (Source(None, 392, 784),)]
    assert [lyr.name for lyr in pipe.nodes[2].stage.graph.body] == ["fc1__merge", "fc2", "softmax"]
    assert pipe.nodes[2].stage.graph.body[0].activation == "relu"
    x = _samples(whole.input_type, (784,), 300, seed=22)
    _check_exact(verify_pipeline(pipe, whole, x), 300, 2, 3)


@pytest.mark.slow
def test_broken_splits_are_detected(input_784_16_10) -> None:
    """The check can fail: a merge without the bias, saturating partial sums, shards fed swapped slices."""
    pipe, whole = input_784_16_10
    x = _samples(whole.input_type, (784,), 150, seed=23)
    s0, s1, merge = pipe.nodes

    def with_node(i: int, node: Node) -> Pipeline:
        nodes = list(pipe.nodes)
        nodes[i] = node
        return Pipeline(nodes=tuple(nodes), outputs=pipe.outputs, steps=pipe.steps)

    # 1) the merge board forgets the bias
    g = merge.stage.graph
    m = g.layer("fc1__merge")
    no_bias = m.with_(weights={**m.weights, "bias": np.zeros_like(m.weights["bias"])})
    graph = Graph(g.name, tuple(no_bias if lyr.name == m.name else lyr for lyr in g.layers), g.outputs)
    res = verify_pipeline(with_node(2, Node(merge.id, dataclasses.replace(merge.stage, graph=graph), merge.sources)),
                          whole, x)
    assert not res.bit_exact and res.mismatched_samples > 0 and res.n_boards == 3
    # 2) partial sums that saturate instead of wrapping (same width, guard bit included)
    nodes = list(pipe.nodes)
    for i, node in enumerate((s0, s1)):
        name = node.stage.graph.body[0].name
        ls = node.stage.settings[name]
        sat = dataclasses.replace(ls.precision.accum, saturation="SAT")
        st = dataclasses.replace(node.stage, output_type=sat, settings={
            name: dataclasses.replace(ls, precision=dataclasses.replace(ls.precision, accum=sat, result=sat))})
        nodes[i] = Node(node.id, st, node.sources)
    res = verify_pipeline(Pipeline(nodes=tuple(nodes), outputs=pipe.outputs, steps=pipe.steps), whole, x)
    assert not res.bit_exact and res.mismatched_samples > 0
    # 3) each shard fed the other's slice of the input (no recompile: only the topology changes)
    res = verify_pipeline(with_node(1, Node(s1.id, s1.stage, s0.sources)), whole, x)
    assert not res.bit_exact and res.mismatched_samples > 0


# ------------------------------------------------------------------------------- 3- and 4-way splits
@pytest.mark.slow
def test_dense_input3_and_neuron4_splits_are_bit_exact() -> None:
    """24-30-12-5: fc1 input split 3 ways (merge on the next board), fc3 (fused softmax) neuron split 4 ways
    (the softmax on a merge board)."""
    g = _mlp([24, 30, 12, 5], last="softmax", standalone_softmax=False)
    pipe, whole = _case(g, [(["fc1"], SplitSpec("fc1", "input", 3), None), (["fc2"], None, "fc1"),
                            (["fc3"], SplitSpec("fc3", "neuron", 4), None), ([], None, "fc3")],
                        fc2=LayerSettings(reuse_factor=6, strategy="Resource"))
    assert [lyr.name for lyr in pipe.nodes[-1].stage.graph.body] == ["fc3__softmax"]
    x = _samples(whole.input_type, (24,), 300, seed=31)
    _check_exact(verify_pipeline(pipe, whole, x), 300, 4, 9)


@pytest.mark.slow
def test_dense_neuron3_into_input4_split_is_bit_exact() -> None:
    """fc1 neuron split 3 ways feeding fc2 input split 4 ways: input slices cross shard boundaries."""
    g = _mlp([24, 30, 12, 5], last="softmax", standalone_softmax=False)
    pipe, whole = _case(g, [(["fc1"], SplitSpec("fc1", "neuron", 3), None),
                            (["fc2"], SplitSpec("fc2", "input", 4), None), (["fc3"], None, "fc2")],
                        fc2=LayerSettings(reuse_factor=6, strategy="Resource"))
    assert pipe.node("stage_1.1").sources == (Source("stage_0.0", 8, 10), Source("stage_0.1", 0, 6))
    rfs = [pipe.node(f"stage_1.{i}").stage.settings[f"fc2__i{i}"].reuse_factor for i in range(4)]
    assert rfs == [4, 4, 7, 7]  # 6 is not valid for (8, 12) nor (7, 12): the closest valid ones
    x = _samples(whole.input_type, (24,), 300, seed=32)
    _check_exact(verify_pipeline(pipe, whole, x), 300, 3, 8)


@pytest.mark.slow
def test_conv2d_neuron4_and_input3_splits_are_bit_exact() -> None:
    """conv1 split by filters 4 ways; conv2 (padding same, standalone relu) split by input channels 3 ways,
    its channel slices crossing conv1's shards; the 1x1-conv merge runs before flatten + dense."""
    g = _conv_model("Conv2D")
    pipe, whole = _case(g, [(["conv1"], SplitSpec("conv1", "neuron", 4), None),
                            (["conv2", "relu2"], SplitSpec("conv2", "input", 3), None),
                            (["flatten", "fc"], None, "conv2")])
    merge = pipe.nodes[-1].stage
    assert [lyr.name for lyr in merge.graph.body] == ["conv2__merge", "relu2", "flatten", "fc"]
    assert merge.input_shape == (6, 6, 18) and merge.graph.body[0].params["kernel_size"] == (1, 1)
    x = _samples(whole.input_type, (8, 8, 3), 240, seed=33)
    _check_exact(verify_pipeline(pipe, whole, x), 240, 3, 8)


@pytest.mark.slow
def test_conv1d_input_split_is_bit_exact() -> None:
    g = _conv_model("Conv1D")
    pipe, whole = _case(g, [(["conv1"], SplitSpec("conv1", "input", 2), None), (["flatten", "fc"], None, "conv1")])
    assert [n.sources for n in pipe.nodes[:2]] == [(Source(None, 0, 3),), (Source(None, 3, 5),)]
    x = _samples(whole.input_type, (16, 5), 240, seed=34)
    _check_exact(verify_pipeline(pipe, whole, x), 240, 2, 3)


# ------------------------------------------------------------------------------- logic, with fake C-sims
class _Fake:
    def __init__(self, fn):
        self.fn = fn

    def predict(self, x):
        return self.fn(np.asarray(x, dtype=np.float64))


def _patch_compile(monkeypatch, table) -> list[str]:
    import split4ml.hls.csim as csim

    seen: list[str] = []

    def fake_compile_stages(stages, progress=None):
        seen.extend(st.name for st in stages)
        return [table[st.name] for st in stages]

    monkeypatch.setattr(csim, "compile_stages", fake_compile_stages)
    return seen


def _toy() -> tuple[Pipeline, Stage]:
    g = _mlp([4, 6, 3], last=None, standalone_softmax=False)
    return _case(g, [(["fc1"], SplitSpec("fc1", "input", 2), None), (["fc2"], None, "fc1")])


def test_pipeline_runs_as_a_dag_and_counts_boards(monkeypatch) -> None:
    pipe, whole = _toy()
    lsb = whole.input_type.lsb
    got: dict[str, np.ndarray] = {}

    def shard(name, k):
        def f(x):
            got[name] = x
            return np.tile(x.sum(axis=1, keepdims=True), (1, 6)) * k
        return f

    table = {"stage_0.0": _Fake(shard("a", 1)), "stage_0.1": _Fake(shard("b", 2)),
             "stage_1": _Fake(lambda h: h[:, [0, 6, 11]]),
             "whole": _Fake(lambda x: np.stack([x[:, :2].sum(1), 2 * x[:, 2:].sum(1), 2 * x[:, 2:].sum(1)], 1))}
    seen = _patch_compile(monkeypatch, table)
    x = np.array([[0.5, 0.25, 1.0, 2.0], [1.0, -1.0, 0.0, lsb]])
    res = verify_pipeline(pipe, whole, x)
    assert seen == ["stage_0.0", "stage_0.1", "stage_1", "whole"]
    np.testing.assert_array_equal(got["a"], x[:, :2])
    np.testing.assert_array_equal(got["b"], x[:, 2:])
    assert res.bit_exact and (res.n_stages, res.n_boards) == (2, 3)


def test_off_grid_shard_output_names_the_shard(monkeypatch) -> None:
    pipe, whole = _toy()
    _patch_compile(monkeypatch, {"stage_0.0": _Fake(lambda x: np.zeros((len(x), 6))),
                                 "stage_0.1": _Fake(lambda x: np.full((len(x), 6), 1e-7)),
                                 "stage_1": _Fake(lambda h: h[:, :3]), "whole": _Fake(lambda x: x[:, :3])})
    with pytest.raises(BuildError, match=r"stage_0\.1 on pynq-z2.*not representable"):
        verify_pipeline(pipe, whole, np.zeros((2, 4)))


def test_pipelines_that_do_not_chain_are_rejected(monkeypatch) -> None:
    pipe, whole = _toy()
    _patch_compile(monkeypatch, {})
    s0, s1, merge = pipe.nodes
    bad = Pipeline(nodes=(s0, s1, Node(merge.id, merge.stage, (Source("stage_0.0"),))), outputs=pipe.outputs)
    with pytest.raises(BuildError, match=r"shape \(6,\) but stage_1 takes \(12,\)"):
        verify_pipeline(bad, whole, np.zeros((2, 4)))
    bad = Pipeline(nodes=(Node(s0.id, s0.stage, (Source(None, 0, 7),)), s1, merge), outputs=pipe.outputs)
    with pytest.raises(BuildError, match=r"stage_0\.0 on pynq-z2 reads features 0:7 of the model input"):
        verify_pipeline(bad, whole, np.zeros((2, 4)))
    bad = Pipeline(nodes=(s0, s1, Node(merge.id, merge.stage, (Source("stage_9"),))), outputs=pipe.outputs)
    with pytest.raises(BuildError, match="'stage_9', which is not a node before it"):
        verify_pipeline(bad, whole, np.zeros((2, 4)))
    other = dataclasses.replace(s1.stage, input_type=FixedType(10, 4))
    bad = Pipeline(nodes=(s0, Node(s1.id, other, s1.sources), merge), outputs=pipe.outputs)
    with pytest.raises(BuildError, match="2 different input types"):
        verify_pipeline(bad, whole, np.zeros((2, 4)))
    bad = Pipeline(nodes=pipe.nodes, outputs=(Source("stage_0.0"),))
    with pytest.raises(BuildError, match=r"pipeline outputs shape \(6,\) but the whole model outputs \(3,\)"):
        verify_pipeline(bad, whole, np.zeros((2, 4)))


def test_merge_precision_is_the_cheapest_exact_one() -> None:
    pipe, _ = _toy()
    p = pipe.nodes[-1].stage.settings["fc1__merge"].precision
    assert p.weight == FixedType(1, 1, signed=False)
    assert p == LayerPrecision(weight=p.weight, bias=LayerPrecision().bias, result=LayerPrecision().result,
                               accum=LayerPrecision().accum)
