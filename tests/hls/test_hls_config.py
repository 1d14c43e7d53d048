"""The hls4ml configuration: a float model's types from the plan, a quantized model's from hls4ml."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from split4ml.boards import get_board
from split4ml.errors import BuildError
from split4ml.fixed import FixedType
from split4ml.frontends.keras import graph_from_keras
from split4ml.hls.config import assert_no_auto_config, check_no_auto, layer_entries, model_config
from split4ml.hls.project import convert_stage
from split4ml.networks import deep_mlp, small_cnn
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.stages import make_stages

W8 = FixedType(8, 3)
B12 = FixedType(12, 4)
R18 = FixedType(18, 8, rounding="RND_CONV", saturation="SAT")
A24 = FixedType(24, 10)
IN14 = FixedType(14, 5)


def _all_strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _all_strings(v)]
    return [node] if isinstance(node, str) else []


@pytest.fixture(scope="module")
def mlp():
    graph = graph_from_keras(deep_mlp())
    settings = {lyr.name: LayerSettings() for lyr in graph.body}
    settings["fc2"] = LayerSettings(reuse_factor=4, strategy="Resource",
                                    precision=LayerPrecision(weight=W8, bias=B12, result=R18, accum=A24))
    return graph, settings, BuildSettings(input_precision=IN14)


def test_float_model_config_names_every_hls4ml_node_with_the_plans_types(mlp) -> None:
    graph, settings, build = mlp
    cfg = model_config(graph, settings, build)
    assert not [s for s in _all_strings(cfg) if s.lower() == "auto"]
    layers = cfg["LayerName"]
    assert layers[graph.input.name]["Precision"]["result"] == IN14.hls4ml()
    fc2 = layers["fc2"]
    assert fc2["Precision"] == {"weight": W8.hls4ml(), "bias": B12.hls4ml(), "result": R18.hls4ml(),
                                "accum": A24.hls4ml()}
    assert fc2["ReuseFactor"] == 4 and fc2["Strategy"] == "Resource"
    # hls4ml runs the fused relu as a node of its own, fc2_relu: it carries fc2's result type
    assert graph.layer("fc2").hls_nodes == ("fc2", "fc2_relu")
    assert layers["fc2_relu"]["Precision"]["result"] == R18.hls4ml()
    assert layers["fc1"]["Strategy"] == "Latency"
    assert cfg["Model"]["Precision"]["default"] == build.default_precision.hls4ml()


def test_layer_entries_of_a_layer_split4ml_builds_use_its_own_name() -> None:
    graph = graph_from_keras(deep_mlp())
    fc1 = graph.layer("fc1").with_(name="fc1__n0", hls_nodes=())
    entries = layer_entries(fc1, LayerSettings(reuse_factor=2), node_names=())
    assert set(entries) == {"fc1__n0", "fc1__n0_relu"} and entries["fc1__n0"]["ReuseFactor"] == 2


def test_stages_keep_hls4mls_softmax_tables_and_the_wire_types(mlp) -> None:
    import hls4ml

    graph, settings, build = mlp
    names = [lyr.name for lyr in graph.body]
    board = get_board("pynq-z2")
    stages = make_stages(graph, [tuple(names[:2]), tuple(names[2:])], [board, board], settings, build)
    assert stages[1].input_type == R18  # the wire carries fc2's result type
    hm = convert_stage(stages[1], "unused-dir", write=False)
    softmax = next(lyr for lyr in hm.get_layers() if lyr.class_name == "Softmax")
    base = hls4ml.utils.config_from_keras_model(deep_mlp(), granularity="name", backend="Vivado")
    defaults = base["LayerName"][softmax.name]["Precision"]
    for key in ("table", "exp_table", "inv_table", "inv_inp"):
        got = FixedType.parse(str(softmax.types[f"{key}_t"].precision))
        assert got == FixedType.parse(defaults[key]) and defaults[key] != "auto"
    assert FixedType.parse(str(hm.get_input_variables()[0].type.precision)) == R18


def test_cnn_config_is_concrete() -> None:
    graph = graph_from_keras(small_cnn())
    cfg = model_config(graph, {lyr.name: LayerSettings() for lyr in graph.body}, BuildSettings())
    assert not [s for s in _all_strings(cfg) if s.lower() == "auto"]
    assert set(cfg["LayerName"]) >= {graph.input.name, "conv1", "conv1_relu", "pool1", "flatten", "fc1", "softmax"}


def test_a_graph_built_by_hand_has_no_hls4ml_model() -> None:
    graph = graph_from_keras(deep_mlp())
    from split4ml.ir import Graph

    bare = Graph(name="bare", layers=graph.layers, outputs=graph.outputs)
    with pytest.raises(BuildError, match="not read from a model"):
        model_config(bare, {}, BuildSettings())


def test_assert_no_auto_config_names_the_place() -> None:
    with pytest.raises(BuildError, match=r"LayerName\.fc1\.Precision\.accum"):
        assert_no_auto_config({"LayerName": {"fc1": {"Precision": {"result": "fixed<16,6>", "accum": "auto"}}}})


def test_check_no_auto_rejects_unspecified_types() -> None:
    from hls4ml.model.types import FixedPrecisionType, NamedType, UnspecifiedPrecisionType

    good = SimpleNamespace(name="fc1", types={"result_t": NamedType("r", FixedPrecisionType(16, 6))})
    bad = SimpleNamespace(name="fc2", types={"accum_t": NamedType("a", UnspecifiedPrecisionType())})
    check_no_auto(SimpleNamespace(get_layers=lambda: [good]))
    with pytest.raises(BuildError, match="fc2.*accum_t"):
        check_no_auto(SimpleNamespace(get_layers=lambda: [good, bad]))
