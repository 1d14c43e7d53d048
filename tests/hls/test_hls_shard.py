"""Shard and merge layers of intra-layer splits: hls4ml's layers for them, their types, conversion."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from split4ml.boards import get_board
from split4ml.fixed import FixedType
from split4ml.hls.project import convert_stage
from split4ml.hls.synthetic import layer_dicts, synthetic_config
from split4ml.ir import Layer
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.shard import MERGE_WEIGHT_TYPE, partial_sum_type, shard_unit
from split4ml.stages import chain_stage

PYNQ = get_board("pynq-z2")
BUILD = BuildSettings()
ACC = FixedType(18, 7)
PREC = LayerPrecision(accum=ACC)


def _conv(c_in: int = 4, filters: int = 5) -> Layer:
    rng = np.random.default_rng(0)
    return Layer(name="conv", kind="Conv2D", input_shape=(6, 6, c_in), output_shape=(4, 4, filters), inputs=("x",),
                 activation="relu",
                 params={"filters": filters, "kernel_size": (3, 3), "strides": (1, 1), "padding": "valid",
                         "use_bias": True},
                 weights={"kernel": rng.normal(size=(3, 3, c_in, filters)).astype(np.float32),
                          "bias": rng.normal(size=filters).astype(np.float32)})


def _dense(n_in: int = 10, n_out: int = 6) -> Layer:
    rng = np.random.default_rng(1)
    return Layer(name="fc", kind="Dense", input_shape=(n_in,), output_shape=(n_out,), inputs=("x",), activation="relu",
                 params={"units": n_out, "use_bias": True},
                 weights={"kernel": rng.normal(size=(n_in, n_out)).astype(np.float32),
                          "bias": rng.normal(size=n_out).astype(np.float32)})


@pytest.fixture(scope="module")
def dense_split():
    su = shard_unit([_dense()], "fc", "input", 3, {"fc": LayerSettings(precision=PREC)})
    shard = chain_stage(0, PYNQ, su.shards[0].layers, su.shards[0].settings, BUILD.input_precision, BUILD,
                        model_name="m", part=0, input_shape=su.shards[0].input_shape)
    merge = chain_stage(1, PYNQ, su.tail, su.tail_settings, su.concat_type, BUILD, model_name="m",
                        input_shape=su.concat_shape)
    return su, shard, merge


def test_hls4ml_layers_of_a_shard_without_bias_and_of_the_merge(dense_split) -> None:
    su, shard, merge = dense_split
    piece = su.shards[0].layer
    (d,) = layer_dicts(piece, ["in"], [piece.input_shape])
    assert d["class_name"] == "Dense" and d["n_out"] == 6 and d["inputs"] == ["in"]
    np.testing.assert_array_equal(d["weight_data"], piece.weights["kernel"])
    assert d["bias_data"] is None or not np.any(d["bias_data"])
    m = merge.graph.layer("fc__merge")
    md, act = layer_dicts(m, ["in"], [m.input_shape])
    np.testing.assert_array_equal(md["weight_data"], np.vstack([np.eye(6)] * 3))
    np.testing.assert_array_equal(md["bias_data"], _dense().weights["bias"])
    assert act["name"] == "fc__merge_relu" and act["class_name"] == "Activation"


def test_config_spells_partial_sum_and_merge_types(dense_split) -> None:
    _, shard, merge = dense_split
    wide = partial_sum_type(ACC, 3)
    assert wide == FixedType(20, 9)
    cfg = synthetic_config(list(shard.graph.body), shard.settings, {"stage0_0_input": shard.input_type})
    assert cfg["fc__i0"]["Precision"]["accum"] == "fixed<20,9>"
    assert cfg["fc__i0"]["Precision"]["result"] == "fixed<20,9>"
    cfg = synthetic_config(list(merge.graph.body), merge.settings, {"stage1_input": merge.input_type})
    assert cfg["stage1_input"]["Precision"]["result"] == wide.hls4ml()
    p = cfg["fc__merge"]["Precision"]
    assert p["weight"] == MERGE_WEIGHT_TYPE.hls4ml() == "ufixed<1,1>"
    assert p["accum"] == ACC.hls4ml() and p["result"] == PREC.result.hls4ml()
    assert cfg["fc__merge_relu"]["Precision"]["result"] == PREC.result.hls4ml()


def test_hls4ml_converts_double_underscore_names_and_pointwise_merge_quietly(tmp_path: Path) -> None:
    su = shard_unit([_conv()], "conv", "input", 2, {"conv": LayerSettings(precision=PREC)})
    merge = chain_stage(1, PYNQ, su.tail, su.tail_settings, su.concat_type, BUILD, input_shape=su.concat_shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hm = convert_stage(merge, tmp_path / "merge", write=False)  # checks wire types, no 'auto' left
    assert not [w for w in caught if "Overriding attribute" in str(w.message)]
    names = [layer.name for layer in hm.get_layers()]
    assert "conv__merge" in names
    merge_layer = next(layer for layer in hm.get_layers() if layer.name == "conv__merge")
    assert "Pointwise" in merge_layer.class_name  # hls4ml runs the 1x1 merge as a pointwise conv
    assert FixedType.parse(str(merge_layer.get_weights("weight").type.precision)) == MERGE_WEIGHT_TYPE
