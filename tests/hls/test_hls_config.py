"""hls_config: every precision concrete, taken from the stage's settings and wire types."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from split4ml.boards import get_board
from split4ml.errors import BuildError
from split4ml.fixed import FixedType
from split4ml.frontends.keras import graph_from_keras
from split4ml.hls.config import assert_no_auto_config, check_no_auto, hls_config
from split4ml.models import deep_mlp, small_cnn
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.split import make_stages, whole_model_stage

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
def mlp_stages():
    graph = graph_from_keras(deep_mlp())
    names = [lyr.name for lyr in graph.body]
    settings = {n: LayerSettings() for n in names}
    settings["fc2"] = LayerSettings(reuse_factor=4, strategy="Resource",
                                    precision=LayerPrecision(weight=W8, bias=B12, result=R18, accum=A24))
    build = BuildSettings(input_precision=IN14)
    board = get_board("pynq-z2")
    stages = make_stages(graph, [tuple(names[:2]), tuple(names[2:])], [board, board], settings, build)
    return stages, whole_model_stage(graph, board, settings, build)


def test_every_type_is_concrete_and_from_settings(mlp_stages) -> None:
    stages, whole = mlp_stages
    cfg = hls_config(stages[0])
    assert not [s for s in _all_strings(cfg) if s.lower() == "auto"]
    layers = cfg["LayerName"]
    assert layers["stage0_input"]["Precision"]["result"] == IN14.hls4ml()
    fc2 = layers["fc2"]
    assert fc2["Precision"] == {"weight": W8.hls4ml(), "bias": B12.hls4ml(), "result": R18.hls4ml(),
                                "accum": A24.hls4ml()}
    assert fc2["ReuseFactor"] == 4 and fc2["Strategy"] == "Resource"
    # hls4ml splits the fused relu off as fc2_relu: it carries fc2's result type
    assert layers["fc2_relu"]["Precision"]["result"] == R18.hls4ml()
    assert layers["fc1"]["Strategy"] == "Latency"
    assert cfg["Model"]["Precision"]["default"] == whole.build.default_precision.hls4ml()


def test_next_stage_input_is_upstream_result_type(mlp_stages) -> None:
    stages, _ = mlp_stages
    cfg = hls_config(stages[1])
    assert cfg["LayerName"]["stage1_input"]["Precision"]["result"] == R18.hls4ml()
    assert "fc2" not in cfg["LayerName"]


def test_softmax_tables_stay_at_concrete_hls4ml_defaults(mlp_stages) -> None:
    import hls4ml

    from split4ml.hls.keras_model import keras_model_from_graph

    _, whole = mlp_stages
    cfg = hls_config(whole)
    base = hls4ml.utils.config_from_keras_model(keras_model_from_graph(whole.graph), granularity="name",
                                                backend="VivadoAccelerator")
    sm, base_sm = cfg["LayerName"]["softmax"]["Precision"], base["LayerName"]["softmax"]["Precision"]
    for key in ("table", "exp_table", "inv_table", "inv_inp", "accum"):
        assert sm[key] == base_sm[key] and base_sm[key] != "auto"
    assert sm["result"] == whole.settings["softmax"].precision.result.hls4ml()


def test_cnn_config_is_concrete() -> None:
    graph = graph_from_keras(small_cnn())
    settings = {lyr.name: LayerSettings() for lyr in graph.body}
    stage = whole_model_stage(graph, get_board("zcu102"), settings, BuildSettings())
    cfg = hls_config(stage)
    assert not [s for s in _all_strings(cfg) if s.lower() == "auto"]
    assert set(cfg["LayerName"]) >= {"whole_input", "conv1", "conv1_relu", "pool1", "flatten", "fc1", "softmax"}


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
