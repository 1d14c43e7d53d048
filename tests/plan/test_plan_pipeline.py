"""plan_pipeline / stages_pipeline: the boards of a plan with intra-layer splits as a DAG (no hls4ml)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np
import pytest

from split4ml.boards import get_board
from split4ml.errors import PlanError
from split4ml.estimate.base import Cost
from split4ml.fixed import FixedType
from split4ml.ir import Graph, Layer
from split4ml.lower import _slice_sources, plan_pipeline, stages_pipeline
from split4ml.plan.planfile import ShardPlan, SplitSpec, StagePlan, Wire
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.shard import partial_sum_type
from split4ml.stages import Pipeline, Source

PYNQ = get_board("pynq-z2")
ZCU = get_board("zcu102")
BUILD = BuildSettings()


def _dense(name: str, n_in: int, n_out: int, act: str | None, prev: str, seed: int) -> Layer:
    rng = np.random.default_rng(seed)
    return Layer(name=name, kind="Dense", input_shape=(n_in,), output_shape=(n_out,), inputs=(prev,),
                 activation=act, params={"units": n_out, "use_bias": True},
                 weights={"kernel": rng.normal(size=(n_in, n_out)), "bias": rng.normal(size=n_out)})


def _mlp(sizes: Sequence[int], last: str | None = "softmax", standalone_softmax: bool = False) -> Graph:
    """Dense chain x -> fc1 (relu) -> ... -> fcN (``last``), optionally followed by an Activation softmax."""
    layers = [Layer(name="x", kind="Input", input_shape=(sizes[0],), output_shape=(sizes[0],))]
    for i in range(1, len(sizes)):
        act = "relu" if i < len(sizes) - 1 else last
        layers.append(_dense(f"fc{i}", sizes[i - 1], sizes[i], act, layers[-1].name, seed=i))
    if standalone_softmax:
        n = sizes[-1]
        layers.append(Layer(name="softmax", kind="Activation", input_shape=(n,), output_shape=(n,),
                            inputs=(layers[-1].name,), activation="softmax"))
    return Graph(name="mlp", layers=tuple(layers), outputs=(layers[-1].name,))


def _settings(graph: Graph, **per_layer: LayerSettings) -> dict[str, LayerSettings]:
    return {lyr.name: per_layer.get(lyr.name, LayerSettings()) for lyr in graph.body}


_WIRE = Wire(BUILD.input_precision, (1,))  # stages_pipeline does not read wires or costs


def _stage(index: int, layers: Sequence[str], settings: Mapping[str, LayerSettings], split: SplitSpec | None = None,
           merge: str | None = None, boards: Sequence | None = None,
           shard_settings: Sequence[Mapping[str, LayerSettings]] | None = None) -> StagePlan:
    shards: tuple[ShardPlan, ...] = ()
    if split is not None:
        boards = boards or [PYNQ] * split.parts
        sets = shard_settings or [{}] * split.parts
        shards = tuple(ShardPlan(part=p, board=boards[p], layers=tuple(sets[p]), settings=dict(sets[p]), cost=Cost(),
                                 input=_WIRE, output=_WIRE) for p in range(split.parts))
    return StagePlan(index=index, board=PYNQ, layers=tuple(layers), settings={n: settings[n] for n in layers},
                     cost=Cost(), input=_WIRE, output=_WIRE, split=split, shards=shards, merge=merge)


# ------------------------------------------------------------------------------- float evaluation
def _float_layer(lyr: Layer, x: np.ndarray) -> np.ndarray:
    if lyr.kind == "Dense":
        x = x @ lyr.weights["kernel"] + (lyr.weights["bias"] if "bias" in lyr.weights else 0.0)
    act = lyr.activation or "linear"
    if act == "relu":
        return np.maximum(x, 0.0)
    if act == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    assert act == "linear"
    return x


def _float_graph(graph: Graph, x: np.ndarray) -> np.ndarray:
    for lyr in graph.body:
        x = _float_layer(lyr, x)
    return x


def _float_run(pipe: Pipeline, x: np.ndarray) -> np.ndarray:
    """Run the DAG with every board computing its stage graph in float."""
    predict = {n.id: (lambda h, g=n.stage.graph: _float_graph(g, h)) for n in pipe.nodes}
    return pipe.run(x, predict)


# ------------------------------------------------------------------------------- topologies
def test_plain_chain_is_the_linear_pipeline() -> None:
    g = _mlp([6, 5, 4, 3])
    s = _settings(g)
    pipe = stages_pipeline(g, [_stage(0, ["fc1", "fc2"], s), _stage(1, ["fc3"], s)], BUILD)
    assert [n.id for n in pipe.nodes] == ["stage_0", "stage_1"]
    assert pipe.nodes[0].sources == (Source(None),) and pipe.nodes[1].sources == (Source("stage_0"),)
    assert pipe.outputs == (Source("stage_1"),) and pipe.steps == (("stage_0",), ("stage_1",))
    assert pipe.nodes[1].stage.input_type == s["fc2"].precision.result
    x = np.random.default_rng(0).normal(size=(4, 6))
    np.testing.assert_allclose(_float_run(pipe, x), _float_graph(g, x))


def test_plan_pipeline_gives_the_whole_model_as_reference() -> None:
    g = _mlp([6, 5, 3])
    s = _settings(g, fc2=LayerSettings(reuse_factor=5))
    stages = [_stage(0, ["fc1"], s, split=SplitSpec("fc1", "input", 2)), _stage(1, ["fc2"], s, merge="fc1")]
    plan = SimpleNamespace(stages=stages, build=BUILD, board=ZCU, settings={**s, "fc1__merge": LayerSettings()})
    pipe, whole = plan_pipeline(plan, g)
    assert [n.id for n in pipe.nodes] == ["stage_0.0", "stage_0.1", "stage_1"]
    assert whole.index == -1 and whole.board is ZCU and [lyr.name for lyr in whole.graph.body] == ["fc1", "fc2"]
    assert whole.settings["fc2"].reuse_factor == 5


def test_input_split_then_merge_on_the_next_board() -> None:
    g = _mlp([24, 30, 12, 5])
    s = _settings(g)
    stages = [_stage(0, ["fc1"], s, split=SplitSpec("fc1", "input", 3), boards=[PYNQ, ZCU, PYNQ]),
              _stage(1, ["fc2"], s, merge="fc1"), _stage(2, ["fc3"], s)]
    pipe = stages_pipeline(g, stages, BUILD)
    ids = [n.id for n in pipe.nodes]
    assert ids == ["stage_0.0", "stage_0.1", "stage_0.2", "stage_1", "stage_2"]
    assert pipe.steps == (("stage_0.0", "stage_0.1", "stage_0.2"), ("stage_1",), ("stage_2",))
    shards = pipe.nodes[:3]
    assert [n.sources for n in shards] == [(Source(None, 0, 8),), (Source(None, 8, 16),), (Source(None, 16, 24),)]
    assert [n.stage.board.name for n in shards] == ["pynq-z2", "zcu102", "pynq-z2"]
    wide = partial_sum_type(s["fc1"].precision.accum, 3)
    for i, n in enumerate(shards):
        assert n.stage.name == n.id and n.stage.part == i and n.stage.index == 0
        assert n.stage.input_type == BUILD.input_precision and n.stage.output_type == wide
        assert n.stage.input_shape == (8,) and n.stage.output_shape == (30,)
        assert [lyr.name for lyr in n.stage.graph.body] == [f"fc1__i{i}"]
    merge = pipe.nodes[3]
    assert merge.sources == tuple(Source(f"stage_0.{i}") for i in range(3))
    assert [lyr.name for lyr in merge.stage.graph.body] == ["fc1__merge", "fc2"]
    assert merge.stage.input_type == wide and merge.stage.input_shape == (90,)
    assert merge.stage.settings["fc1__merge"].precision.weight.width == 1
    assert merge.stage.graph.input.name not in {n.stage.graph.input.name for n in shards}
    x = np.random.default_rng(1).normal(size=(5, 24))
    np.testing.assert_allclose(_float_run(pipe, x), _float_graph(g, x), rtol=1e-10)


def test_neuron_split_feeding_an_input_split_maps_slices_across_boards() -> None:
    g = _mlp([24, 30, 12, 5])
    s = _settings(g)
    stages = [_stage(0, ["fc1"], s, split=SplitSpec("fc1", "neuron", 3)),
              _stage(1, ["fc2"], s, split=SplitSpec("fc2", "input", 4)),
              _stage(2, ["fc3"], s, merge="fc2")]
    pipe = stages_pipeline(g, stages, BUILD)
    node = {n.id: n for n in pipe.nodes}
    for i in range(3):
        assert node[f"stage_0.{i}"].sources == (Source(None),)
    # fc1 shards give 10 + 10 + 10 features; fc2's input slices are 8, 8, 7, 7
    assert node["stage_1.0"].sources == (Source("stage_0.0", 0, 8),)
    assert node["stage_1.1"].sources == (Source("stage_0.0", 8, 10), Source("stage_0.1", 0, 6))
    assert node["stage_1.2"].sources == (Source("stage_0.1", 6, 10), Source("stage_0.2", 0, 3))
    assert node["stage_1.3"].sources == (Source("stage_0.2", 3, 10),)
    assert [node[f"stage_1.{i}"].stage.input_shape for i in range(4)] == [(8,), (8,), (7,), (7,)]
    assert node["stage_1.0"].stage.input_type == s["fc1"].precision.result
    assert len(pipe.steps) == 3 and len(pipe.nodes) == 8
    x = np.random.default_rng(2).normal(size=(5, 24))
    np.testing.assert_allclose(_float_run(pipe, x), _float_graph(g, x), rtol=1e-10)


def test_neuron_split_of_the_last_layer_concatenates_at_the_output() -> None:
    g = _mlp([6, 8, 7], last="relu")
    s = _settings(g)
    pipe = stages_pipeline(g, [_stage(0, ["fc1"], s), _stage(1, ["fc2"], s, split=SplitSpec("fc2", "neuron", 3))],
                           BUILD)
    assert pipe.outputs == (Source("stage_1.0"), Source("stage_1.1"), Source("stage_1.2"))
    assert [n.stage.output_shape for n in pipe.nodes[1:]] == [(3,), (2,), (2,)]
    x = np.random.default_rng(3).normal(size=(5, 6))
    np.testing.assert_allclose(_float_run(pipe, x), _float_graph(g, x), rtol=1e-10)


def test_fused_softmax_runs_on_a_merge_board() -> None:
    g = _mlp([6, 8, 7], last="softmax")
    s = _settings(g)
    stages = [_stage(0, ["fc1"], s), _stage(1, ["fc2"], s, split=SplitSpec("fc2", "neuron", 2)),
              _stage(2, [], s, merge="fc2")]
    pipe = stages_pipeline(g, stages, BUILD)
    last = pipe.nodes[-1]
    assert last.id == "stage_2" and [lyr.name for lyr in last.stage.graph.body] == ["fc2__softmax"]
    assert last.stage.output_type == s["fc2"].precision.result
    assert all(n.stage.graph.body[0].activation == "linear" for n in pipe.nodes[1:3])
    x = np.random.default_rng(4).normal(size=(5, 6))
    np.testing.assert_allclose(_float_run(pipe, x), _float_graph(g, x), rtol=1e-10)


def test_consumer_settings_override_the_tail() -> None:
    g = _mlp([6, 4, 3])
    s = _settings(g)
    derived = stages_pipeline(g, [_stage(0, ["fc1"], s, split=SplitSpec("fc1", "input", 2)),
                                  _stage(1, ["fc2"], s, merge="fc1")], BUILD).nodes[-1].stage.settings["fc1__merge"]
    tail = LayerSettings(reuse_factor=4, strategy="Resource", precision=derived.precision)
    consumer = _stage(1, ["fc2"], s, merge="fc1")
    consumer = StagePlan(index=1, board=PYNQ, layers=("fc2",), settings={**consumer.settings, "fc1__merge": tail},
                         cost=Cost(), input=_WIRE, output=_WIRE, merge="fc1", tail=("fc1__merge",))
    shard_sets = [{"fc1__i0": LayerSettings(reuse_factor=3, precision=LayerPrecision(
        accum=partial_sum_type(s["fc1"].precision.accum, 2), result=partial_sum_type(s["fc1"].precision.accum, 2)))},
        {}]
    pipe = stages_pipeline(g, [_stage(0, ["fc1"], s, split=SplitSpec("fc1", "input", 2), shard_settings=shard_sets),
                               consumer], BUILD)
    assert pipe.nodes[-1].stage.settings["fc1__merge"] == tail
    assert pipe.nodes[0].stage.settings["fc1__i0"].reuse_factor == 3
    assert pipe.nodes[1].stage.settings["fc1__i1"].reuse_factor == 1


@pytest.mark.parametrize("n_sizes", [[4, 4], [3, 5, 2], [1, 7, 1, 3]])
def test_slice_sources_picks_the_right_features(n_sizes: list[int]) -> None:
    nodes = [f"n{i}" for i in range(len(n_sizes))]
    values = {nid: np.arange(100 * i, 100 * i + w, dtype=float)[None, :] for i, (nid, w) in
              enumerate(zip(nodes, n_sizes, strict=True))}
    # producers that themselves are slices of wider outputs (start offsets must carry over)
    values = {nid: np.concatenate([np.full((1, 2), -1.0), v], axis=1) for nid, v in values.items()}
    srcs = tuple(Source(nid, 2, 2 + w) for nid, w in zip(nodes, n_sizes, strict=True))
    full = Pipeline.gather(srcs, values)
    total = sum(n_sizes)
    for a in range(total):
        for b in range(a + 1, total + 1):
            got = Pipeline.gather(_slice_sources(srcs, n_sizes, a, b), values)
            np.testing.assert_array_equal(got, full[:, a:b])


# ------------------------------------------------------------------------------- errors
def test_errors_name_the_stage() -> None:
    g = _mlp([6, 5, 4, 3])
    s = _settings(g)
    inp = SplitSpec("fc1", "input", 2)
    with pytest.raises(PlanError, match=r"stages\[1\].*fc1__merge.*merge: fc1"):
        stages_pipeline(g, [_stage(0, ["fc1"], s, split=inp), _stage(1, ["fc2", "fc3"], s)], BUILD)
    with pytest.raises(PlanError, match=r"last layer 'fc3'.*add a merge stage"):
        stages_pipeline(g, [_stage(0, ["fc1", "fc2"], s), _stage(1, ["fc3"], s, split=SplitSpec("fc3", "input", 2))],
                        BUILD)
    with pytest.raises(PlanError, match=r"stages\[1\]\.merge: 'fc2' is not the layer split"):
        stages_pipeline(g, [_stage(0, ["fc1"], s, split=inp), _stage(1, ["fc2", "fc3"], s, merge="fc2")], BUILD)
    with pytest.raises(PlanError, match=r"stages\[0\]\.layers: a split stage holds exactly one unit"):
        stages_pipeline(g, [_stage(0, ["fc1", "fc2"], s, split=inp), _stage(1, ["fc3"], s, merge="fc1")], BUILD)
    with pytest.raises(PlanError, match=r"stages\[1\]: a split stage cannot also run the tail"):
        stages_pipeline(g, [_stage(0, ["fc1"], s, split=inp),
                            _stage(1, ["fc2"], s, split=SplitSpec("fc2", "neuron", 2), merge="fc1"),
                            _stage(2, ["fc3"], s)], BUILD)
    with pytest.raises(PlanError, match=r"stages\[1\]: the stage has no layers and no tail"):
        stages_pipeline(g, [_stage(0, ["fc1", "fc2", "fc3"], s), _stage(1, [], s)], BUILD)
    with pytest.raises(PlanError, match=r"stages\[0\]\.split: .*only 5 output units"):
        stages_pipeline(g, [_stage(0, ["fc1"], s, split=SplitSpec("fc1", "neuron", 6)), _stage(1, ["fc2", "fc3"], s)],
                        BUILD)


def test_input_split_of_a_saturating_accumulator_is_a_plan_error() -> None:
    g = _mlp([6, 5, 3])
    sat = LayerPrecision(accum=FixedType(24, 10, saturation="SAT"))
    s = _settings(g, fc1=LayerSettings(precision=sat))
    with pytest.raises(PlanError) as exc:
        stages_pipeline(g, [_stage(0, ["fc1"], s, split=SplitSpec("fc1", "input", 2)),
                            _stage(1, ["fc2"], s, merge="fc1")], BUILD)
    msg = str(exc.value)
    assert "stages[0].split" in msg and "'fc1'" in msg and "ap_fixed<24,10,AP_TRN,AP_SAT>" in msg
    assert "WRAP" in msg and "neuron split" in msg
    # the same layer may be split by neurons
    pipe = stages_pipeline(g, [_stage(0, ["fc1"], s, split=SplitSpec("fc1", "neuron", 2)), _stage(1, ["fc2"], s)],
                           BUILD)
    assert len(pipe.nodes) == 3
