"""Shard and merge layers of intra-layer splits through Keras, the hls4ml config and conversion."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from split4ml.boards import get_board
from split4ml.fixed import FixedType
from split4ml.hls.config import hls_config
from split4ml.hls.keras_model import keras_model_from_graph
from split4ml.hls.project import convert_stage
from split4ml.ir import Layer
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.shard import MERGE_WEIGHT_TYPE, partial_sum_type, shard_unit
from split4ml.split import chain_stage

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


def test_keras_rebuilds_shard_without_bias_and_merge_exactly(dense_split) -> None:
    su, shard, merge = dense_split
    ks = keras_model_from_graph(shard.graph).get_layer("fc__i0")
    assert ks.use_bias is False and len(ks.get_weights()) == 1
    np.testing.assert_array_equal(ks.get_weights()[0], su.shards[0].layer.weights["kernel"])
    km = keras_model_from_graph(merge.graph).get_layer("fc__merge")
    kernel, bias = km.get_weights()
    np.testing.assert_array_equal(kernel, np.vstack([np.eye(6)] * 3))
    np.testing.assert_array_equal(bias, _dense().weights["bias"])


def test_config_spells_partial_sum_and_merge_types(dense_split) -> None:
    _, shard, merge = dense_split
    wide = partial_sum_type(ACC, 3)
    assert wide == FixedType(20, 9)
    cfg = hls_config(shard)["LayerName"]
    assert cfg["fc__i0"]["Precision"]["accum"] == "fixed<20,9>"
    assert cfg["fc__i0"]["Precision"]["result"] == "fixed<20,9>"
    cfg = hls_config(merge)["LayerName"]
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
