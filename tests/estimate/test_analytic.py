"""The analytic estimator: structure (monotonicity, additivity, what maps where), not exact numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from split4ml.boards import get_board
from split4ml.errors import UnsupportedLayerError
from split4ml.estimate.analytic import (
    AnalyticEstimator,
    bram18_for,
    dsps_per_product,
    measured_weight_stats,
    product_in_luts,
    uniform_weight_stats,
)
from split4ml.estimate.base import Cost
from split4ml.estimate.hls_rules import valid_reuse_factors
from split4ml.fixed import FixedType
from split4ml.ir import Layer
from split4ml.settings import LayerPrecision, LayerSettings

PYNQ = get_board("pynq-z2")
ZCU = get_board("zcu102")


@pytest.fixture
def est() -> AnalyticEstimator:
    return AnalyticEstimator()


def dense(n_in: int, n_out: int, act: str | None = None, name: str = "d", **kw) -> Layer:
    return Layer(name, "Dense", (n_in,), (n_out,), params={"units": n_out, "use_bias": True}, activation=act, **kw)


def conv2d(h: int, c: int, f: int, k: int = 3, act: str | None = None) -> Layer:
    return Layer("c", "Conv2D", (h, h, c), (h - k + 1, h - k + 1, f), activation=act,
                 params={"filters": f, "kernel_size": (k, k), "strides": (1, 1), "padding": "valid", "use_bias": True})


def prec(data: int = 16, weight: int = 16, accum: int = 16) -> LayerPrecision:
    return LayerPrecision(weight=FixedType(weight, 6 if weight > 6 else 1), bias=FixedType(weight, 6 if weight > 6 else 1),
                          result=FixedType(data, 6 if data > 6 else 1), accum=FixedType(accum, 6))


# ------------------------------------------------------------------ helpers behave like Xilinx parts
def test_dsp_shape_depends_on_family():
    assert dsps_per_product(16, 16, True) == 1
    assert dsps_per_product(26, 18, True) == 2  # 26 > 25 on a DSP48E1
    assert dsps_per_product(26, 18, False) == 1  # fits a 27x18 DSP48E2
    assert dsps_per_product(32, 32, True) > dsps_per_product(18, 18, True)


def test_small_products_go_to_luts():
    assert product_in_luts(16, 4) and product_in_luts(8, 8)
    assert not product_in_luts(16, 6) and not product_in_luts(16, 16)


def test_bram18_tiling():
    assert bram18_for(1024, 18) == 1
    assert bram18_for(512, 36) == 1
    assert bram18_for(512, 72) == 2
    assert bram18_for(2, 1000) == 28  # shallow and wide: 36 bits per block
    assert bram18_for(0, 10) == 0


def test_uniform_weight_stats_match_a_brute_force_count():
    for width in (4, 8, 10):
        n = width - 1
        mags = np.arange(2**n)
        spans = []
        for m in mags[1:]:
            odd = m // (m & -m)
            spans.append(int(odd).bit_length())
        spans = np.array(spans)
        st = uniform_weight_stats(width)
        assert st.zero_frac == pytest.approx(1 / 2**n)
        assert st.dsp_frac == pytest.approx((spans >= 7).mean())
        assert st.all_extra_bits == pytest.approx((spans - 1).mean())


def test_measured_stats_see_zeros_and_short_constants():
    t = FixedType(16, 6)
    k = np.zeros((10, 10))
    k[0, :5] = 0.5  # one significant bit
    st = measured_weight_stats(k, t)
    assert st.zero_frac == pytest.approx(0.95) and st.dsp_frac == 0 and st.all_extra_bits == 0


# ------------------------------------------------------------------ monotonicity in RF
@pytest.mark.parametrize("strategy", ["Latency", "Resource"])
def test_more_reuse_fewer_dsp_and_longer_ii(est, strategy):
    lyr = dense(64, 32)
    rfs = valid_reuse_factors(lyr, strategy)
    costs = [est.layer_cost(lyr, LayerSettings(rf, strategy), "io_parallel", PYNQ) for rf in rfs]
    dsps = [c.dsp for c in costs]
    iis = [c.ii_cycles for c in costs]
    assert all(a >= b for a, b in zip(dsps, dsps[1:], strict=False)), dsps
    assert dsps[0] > dsps[-1]
    assert all(a < b for a, b in zip(iis, iis[1:], strict=False)), iis


def test_more_reuse_fewer_lut_multipliers(est):
    # 8-bit data x 8-bit weights: products built from LUTs, weights from BRAM (Resource).
    lyr = dense(64, 32)
    p = prec(data=8, weight=8)
    luts = [est.layer_cost(lyr, LayerSettings(rf, "Resource", p), "io_parallel", PYNQ).lut
            for rf in (2, 4, 8, 16, 32, 64)]
    assert all(c.dsp == 0 for c in [est.layer_cost(lyr, LayerSettings(4, "Resource", p), "io_parallel", PYNQ)])
    assert all(a > b for a, b in zip(luts, luts[1:], strict=False)), luts


# ------------------------------------------------------------------ monotonicity in precision
@pytest.mark.parametrize("strategy,rf", [("Latency", 1), ("Resource", 8)])
def test_wider_precision_more_resources(est, strategy, rf):
    lyr = dense(64, 32)
    prev: Cost | None = None
    prev_weighted = 0.0
    for bits in (8, 12, 16, 24):
        c = est.layer_cost(lyr, LayerSettings(rf, strategy, prec(data=bits, weight=bits, accum=bits + 8)),
                           "io_parallel", PYNQ)
        # Crossing the LUT -> DSP product threshold (8 -> 12 bits) trades LUTs for DSPs, so compare a
        # weighted total there and every resource within one mapping (12 -> 16 -> 24 bits).
        weighted = c.lut + c.ff + 200 * c.dsp + 500 * c.bram18
        if prev is not None:
            assert weighted > prev_weighted
            assert c.bram18 >= prev.bram18 and c.dsp >= prev.dsp
            if bits > 12:
                assert c.lut > prev.lut and c.ff > prev.ff
        prev, prev_weighted = c, weighted


def test_wider_accumulator_more_luts_and_ffs(est):
    lyr = dense(32, 32)
    a = est.layer_cost(lyr, LayerSettings(1, "Latency", prec(accum=16)), "io_parallel", PYNQ)
    b = est.layer_cost(lyr, LayerSettings(1, "Latency", prec(accum=32)), "io_parallel", PYNQ)
    assert b.lut > a.lut and b.ff > a.ff


# ------------------------------------------------------------------ Resource strategy of a 784x16 layer
def test_resource_784x16_uses_bram_and_rf_sets_ii(est):
    lyr = dense(784, 16)
    seen = []
    for rf in (49, 98, 196, 392, 784):
        c = est.layer_cost(lyr, LayerSettings(rf, "Resource"), "io_parallel", PYNQ)
        assert c.bram18 > 0
        assert c.ii_cycles == rf
        assert rf < c.latency_cycles < rf + 10
        seen.append(c)
    assert seen[0].dsp > seen[-1].dsp
    # a 16-bit 784x16 weight array is 200,704 bits: at least 11 BRAM18 of 18 Kb must hold it
    assert all(c.bram18 >= 200_704 / 18_432 for c in seen)


def test_latency_strategy_keeps_weights_out_of_bram(est):
    c = est.layer_cost(dense(64, 32), LayerSettings(1, "Latency"), "io_parallel", PYNQ)
    assert c.bram18 == 0 and c.ii_cycles == 1


def test_large_latency_layers_grow_faster_than_their_size(est):
    small = est.layer_cost(dense(64, 64), LayerSettings(1, "Latency"), "io_parallel", ZCU)  # 4096 products
    big = est.layer_cost(dense(256, 64), LayerSettings(1, "Latency"), "io_parallel", ZCU)  # 16384
    assert big.lut / small.lut > 4.5
    res = est.layer_cost(dense(256, 64), LayerSettings(1, "Resource"), "io_parallel", ZCU)
    assert big.lut > res.lut  # same multiplications, no size penalty for Resource


def test_pruned_weights_cost_less_with_constant_weights(est):
    rng = np.random.default_rng(0)
    k = rng.normal(0, 0.5, (64, 32))
    pruned = k * (rng.random(k.shape) < 0.25)
    full = est.layer_cost(dense(64, 32, weights={"kernel": k}), LayerSettings(1, "Latency"), "io_parallel", ZCU)
    sparse = est.layer_cost(dense(64, 32, weights={"kernel": pruned}), LayerSettings(1, "Latency"), "io_parallel", ZCU)
    assert sparse.lut < 0.5 * full.lut and sparse.dsp < 0.5 * full.dsp
    # weights in BRAM (Resource, RF > 1) are multiplied whatever their value
    a = est.layer_cost(dense(64, 32, weights={"kernel": k}), LayerSettings(8, "Resource"), "io_parallel", ZCU)
    b = est.layer_cost(dense(64, 32, weights={"kernel": pruned}), LayerSettings(8, "Resource"), "io_parallel", ZCU)
    assert a == b


def test_dsp_count_depends_on_board_family(est):
    lyr = dense(16, 16)
    p = LayerPrecision(weight=FixedType(26, 6), bias=FixedType(26, 6), result=FixedType(18, 6),
                       accum=FixedType(32, 12))
    s = LayerSettings(4, "Resource", p)
    assert est.layer_cost(lyr, s, "io_parallel", PYNQ).dsp == 2 * est.layer_cost(lyr, s, "io_parallel", ZCU).dsp


# ------------------------------------------------------------------ additivity and fused activations
def test_segment_cost_is_shell_plus_sum(est):
    layers = [dense(64, 32, "relu", name="a"), dense(32, 16, name="b"),
              Layer("s", "Activation", (16,), (16,), activation="softmax")]
    settings = {"a": LayerSettings(4, "Resource"), "b": LayerSettings(1, "Latency"), "s": LayerSettings()}
    seg = est.segment_cost(layers, settings, "io_parallel", PYNQ)
    parts = [est.layer_cost(lyr, settings[lyr.name], "io_parallel", PYNQ) for lyr in layers]
    shell = est.shell_cost(PYNQ)
    for f in ("lut", "ff", "dsp", "bram18", "latency_cycles"):
        assert getattr(seg, f) == pytest.approx(getattr(shell, f) + sum(getattr(c, f) for c in parts))
    assert seg.ii_cycles == max(c.ii_cycles for c in parts)
    assert shell.lut > 0 and seg.lut > shell.lut


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "softmax"])
def test_fused_activation_costs_like_a_separate_layer(est, io_type, act):
    s = LayerSettings(2, "Resource")
    fused = est.layer_cost(dense(32, 10, act), s, io_type, PYNQ)
    plain = est.layer_cost(dense(32, 10), s, io_type, PYNQ)
    alone = est.layer_cost(Layer("a", "Activation", (10,), (10,), activation=act), s, io_type, PYNQ)
    assert alone.lut > 0
    assert dataclasses.astuple(fused) == pytest.approx(dataclasses.astuple(plain + alone))


def test_activation_tables_and_linear(est):
    s = LayerSettings()
    for act in ("sigmoid", "tanh", "softmax"):
        assert est.layer_cost(Layer("a", "Activation", (8,), (8,), activation=act), s, "io_parallel", PYNQ).bram18 > 0
    assert est.layer_cost(Layer("a", "Activation", (8,), (8,), activation="linear"), s, "io_parallel", PYNQ) == Cost()
    assert est.layer_cost(dense(8, 8, "linear"), s, "io_parallel", PYNQ) == est.layer_cost(dense(8, 8), s,
                                                                                          "io_parallel", PYNQ)
    big = est.layer_cost(Layer("a", "Activation", (64,), (64,), activation="sigmoid"), s, "io_parallel", PYNQ)
    small = est.layer_cost(Layer("a", "Activation", (8,), (8,), activation="sigmoid"), s, "io_parallel", PYNQ)
    assert big.bram18 > small.bram18 and big.lut > small.lut


# ------------------------------------------------------------------ conv, pooling, BN, flatten
@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("strategy", ["Latency", "Resource"])
def test_conv_costs_positive_and_scale_with_image(est, io_type, strategy):
    s = LayerSettings(3, strategy)
    small = est.layer_cost(conv2d(12, 3, 8, act="relu"), s, io_type, ZCU)
    big = est.layer_cost(conv2d(28, 3, 8, act="relu"), s, io_type, ZCU)
    for c in (small, big):
        assert c.lut > 0 and c.ff > 0 and c.latency_cycles > 0 and c.ii_cycles > 0
    assert big.ii_cycles > small.ii_cycles
    assert big.lut + big.ff + 500 * big.bram18 > small.lut + small.ff + 500 * small.bram18
    # same kernel, same multipliers
    assert big.dsp == small.dsp


def test_conv_io_parallel_one_pixel_per_pass(est):
    c = conv2d(10, 2, 4)  # 8x8 output pixels
    cost = est.layer_cost(c, LayerSettings(2, "Latency"), "io_parallel", ZCU)
    assert cost.ii_cycles == 64 * 2


def test_conv1d_stream(est):
    c1 = Layer("c1", "Conv1D", (64, 4), (60, 8), params={"filters": 8, "kernel_size": (5,), "strides": (1,)})
    c = est.layer_cost(c1, LayerSettings(1, "Latency"), "io_stream", PYNQ)
    assert c.ii_cycles == 64 and c.dsp > 0


@pytest.mark.parametrize("kind", ["MaxPooling2D", "AveragePooling2D"])
@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_pooling_costs_positive_and_scale(est, kind, io_type):
    def pool(h: int) -> Layer:
        return Layer("p", kind, (h, h, 8), (h // 2, h // 2, 8), params={"pool_size": (2, 2), "strides": (2, 2)})

    small = est.layer_cost(pool(8), LayerSettings(), io_type, PYNQ)
    big = est.layer_cost(pool(64), LayerSettings(), io_type, PYNQ)
    assert small.lut > 0 and small.dsp == 0
    assert big.lut + big.ff + 500 * big.bram18 > small.lut + small.ff + 500 * small.bram18
    if io_type == "io_stream":
        assert big.ii_cycles > small.ii_cycles


def test_pooling1d(est):
    p = Layer("p", "MaxPooling1D", (32, 4), (16, 4), params={"pool_size": (2,), "strides": (2,)})
    assert est.layer_cost(p, LayerSettings(), "io_parallel", PYNQ).lut > 0


def test_batchnorm_and_flatten(est):
    bn = Layer("bn", "BatchNormalization", (32,), (32,))
    c = est.layer_cost(bn, LayerSettings(), "io_parallel", PYNQ)
    assert c.lut > 0 and c.latency_cycles >= 1
    fl = Layer("f", "Flatten", (4, 4, 2), (32,))
    assert est.layer_cost(fl, LayerSettings(), "io_parallel", PYNQ) == Cost()
    assert est.layer_cost(fl, LayerSettings(), "io_stream", PYNQ) == Cost()


def test_unsupported_kind_raises_and_other_activations_are_tables(est):
    with pytest.raises(UnsupportedLayerError, match="LSTM"):
        est.layer_cost(Layer("x", "LSTM", (4,), (4,)), LayerSettings(), "io_parallel", PYNQ)
    # any other activation hls4ml runs is a table lookup, priced as sigmoid is
    gelu = est.layer_cost(Layer("x", "Activation", (4,), (4,), activation="gelu"), LayerSettings(), "io_parallel", PYNQ)
    sig = est.layer_cost(Layer("x", "Activation", (4,), (4,), activation="sigmoid"), LayerSettings(), "io_parallel",
                         PYNQ)
    assert gelu == sig and gelu.bram18 > 0


def test_stream_fifos_use_bram_for_big_feature_maps(est):
    big = est.layer_cost(conv2d(30, 1, 16), LayerSettings(1, "Latency"), "io_stream", PYNQ)
    par = est.layer_cost(conv2d(30, 1, 16), LayerSettings(1, "Latency"), "io_parallel", PYNQ)
    assert big.bram18 > 0 and par.bram18 == 0


def test_input_split_merge_is_priced_as_an_adder_tree():
    """The merge layer's k*n x n 0/1 kernel is not k*n*n multipliers: Vivado keeps only the adders."""
    from split4ml.boards import get_board
    from split4ml.estimate.analytic import AnalyticEstimator
    from split4ml.ir import Layer
    from split4ml.settings import LayerSettings
    from split4ml.shard import shard_unit

    rng = np.random.default_rng(0)
    fc = Layer(name="fc", kind="Dense", input_shape=(500,), output_shape=(500,), inputs=("x",), activation="relu",
               params={"units": 500, "use_bias": True},
               weights={"kernel": rng.normal(size=(500, 500)).astype(np.float32),
                        "bias": rng.normal(size=(500,)).astype(np.float32)})
    su = shard_unit([fc], "fc", "input", 4, {"fc": LayerSettings()})
    merge = su.tail[0]
    assert merge.params["merge_parts"] == 4
    board = get_board("pynq-z2")
    est = AnalyticEstimator()
    c = est.layer_cost(merge, su.tail_settings[merge.name], "io_parallel", board)
    assert c.dsp == 0 and c.bram18 == 0
    # ~500 outputs x 4 additions x 16 bits, not 2,000 x 500 products
    assert 500 * 4 * 16 * 0.25 < c.lut < board.lut
    # a plain Dense of the same shape is priced as multipliers, far above
    plain = merge.with_(params={"units": 500, "use_bias": True})
    assert est.layer_cost(plain, su.tail_settings[merge.name], "io_parallel", board).lut > 10 * c.lut


# ------------------------------------------------------------------ the HLS-report flavour
def _res(est: AnalyticEstimator, n_in: int, n_out: int, rf: int, bits: int = 16) -> Cost:
    return est.layer_cost(dense(n_in, n_out), LayerSettings(rf, "Resource", prec(weight=bits)), "io_parallel", ZCU)


def test_hls_report_model_prices_one_accumulator_select_per_multiplier():
    synth, hls = AnalyticEstimator(), AnalyticEstimator(report="hls")
    assert synth.report == "synth" and hls.report == "hls"
    # RF > n_in, outscale = RF / n_in = 16 or 32: halving RF doubles the multipliers (block 16 vs 8);
    # the HLS report adds a 256:1 accumulator select of 16 bits (255 / 3 LUT per bit) per multiplier.
    step_hls = _res(hls, 32, 256, 512).lut - _res(hls, 32, 256, 1024).lut
    step_synth = _res(synth, 32, 256, 512).lut - _res(synth, 32, 256, 1024).lut
    assert step_hls - step_synth == pytest.approx(8 * 16 * 255 / 3, rel=1e-6)
    # the select spans the next power of two of n_out: 160 and 256 outputs cost the same per multiplier
    per_mult_160 = (_res(hls, 32, 160, 512).lut - _res(hls, 32, 160, 1024).lut) / 5
    per_mult_256 = step_hls / 8
    assert per_mult_160 == pytest.approx(per_mult_256, rel=0.05)
    # outscale 2: the outidx ROM holds one bit, the report prices a 2:1 select, far cheaper
    assert _res(hls, 192, 256, 384).lut < 0.5 * _res(hls, 192, 256, 768).lut
    # the HLS report counts more than the synthesised logic, never less
    for n_in, n_out, rf in ((32, 32, 1024), (64, 128, 512), (96, 224, 384)):
        assert _res(hls, n_in, n_out, rf).lut > _res(synth, n_in, n_out, rf).lut


def test_hls_report_model_changes_only_the_resource_kernel_beyond_n_in():
    synth, hls = AnalyticEstimator(), AnalyticEstimator(report="hls")
    for strategy, rf in (("Latency", 1), ("Latency", 4), ("Resource", 1), ("Resource", 8), ("Resource", 64)):
        s = LayerSettings(rf, strategy)
        assert hls.layer_cost(dense(64, 32, "relu"), s, "io_parallel", PYNQ) == \
            synth.layer_cost(dense(64, 32, "relu"), s, "io_parallel", PYNQ)
    # DSP, BRAM and cycles are the same in both flavours
    a, b = _res(synth, 64, 256, 512, bits=8), _res(hls, 64, 256, 512, bits=8)
    assert (a.dsp, a.bram18, a.latency_cycles, a.ii_cycles) == (b.dsp, b.bram18, b.latency_cycles, b.ii_cycles)
    # the report counts the accumulators (and a few FFs per DSP product), not inputs and results
    assert b.ff < a.ff
    assert b.ff == pytest.approx(256 * 16 + 32 * 11.0 + 60.0)


def test_hls_report_model_is_monotone_in_size():
    hls = AnalyticEstimator(report="hls")
    luts = [_res(hls, n_in, 128, 4 * n_in).lut for n_in in (32, 64, 128, 256)]
    assert all(a < b for a, b in zip(luts, luts[1:], strict=False)), luts
    luts = [_res(hls, 64, n_out, 1024).lut for n_out in (32, 64, 128, 256)]
    assert all(a < b for a, b in zip(luts, luts[1:], strict=False)), luts


def test_unknown_report_model_is_refused():
    from split4ml.errors import Split4mlError

    with pytest.raises(Split4mlError, match="report model 'vivado'.*synth, hls"):
        AnalyticEstimator(report="vivado")
