"""shard: neuron and input splits of Dense/Conv units on the IR (slices, names, weights, types, errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from split4ml.errors import PlanError
from split4ml.estimate import hls_rules
from split4ml.fixed import FixedType
from split4ml.ir import Layer
from split4ml.settings import LayerPrecision, LayerSettings
from split4ml.shard import (
    MERGE_WEIGHT_TYPE,
    ShardedUnit,
    guard_bits,
    merge_name,
    partial_sum_type,
    shard_activation_name,
    shard_name,
    shard_unit,
    split_bounds,
    tail_activation_name,
)

RES = FixedType(16, 6, rounding="RND_CONV", saturation="SAT")
ACC = FixedType(20, 8)
PREC = LayerPrecision(weight=FixedType(12, 4), bias=FixedType(10, 3), result=RES, accum=ACC)


def _settings(*names: str, rf: int = 1, strategy: str = "Latency", prec: LayerPrecision = PREC) -> dict:
    return {n: LayerSettings(reuse_factor=rf, strategy=strategy, precision=prec) for n in names}


def _dense(name: str = "fc", n_in: int = 12, n_out: int = 10, act: str | None = "relu", seed: int = 0,
           use_bias: bool = True) -> Layer:
    rng = np.random.default_rng(seed)
    weights = {"kernel": rng.normal(size=(n_in, n_out)).astype(np.float32)}
    if use_bias:
        weights["bias"] = rng.normal(size=n_out).astype(np.float32)
    return Layer(name=name, kind="Dense", input_shape=(n_in,), output_shape=(n_out,), inputs=("prev",),
                 activation=act, params={"units": n_out, "use_bias": use_bias}, weights=weights)


def _conv(kind: str = "Conv2D", c_in: int = 5, filters: int = 7, act: str | None = "relu", seed: int = 1) -> Layer:
    rng = np.random.default_rng(seed)
    if kind == "Conv2D":
        ks, in_shape, out_shape = (3, 3), (6, 6, c_in), (4, 4, filters)
    else:
        ks, in_shape, out_shape = (3,), (9, c_in), (7, filters)
    return Layer(name="conv", kind=kind, input_shape=in_shape, output_shape=out_shape, inputs=("prev",),
                 activation=act,
                 params={"filters": filters, "kernel_size": ks, "strides": (1,) * len(ks), "padding": "valid",
                         "use_bias": True},
                 weights={"kernel": rng.normal(size=(*ks, c_in, filters)).astype(np.float32),
                          "bias": rng.normal(size=filters).astype(np.float32)})


def _act(name: str, fn: str, shape: tuple[int, ...], src: str) -> Layer:
    return Layer(name=name, kind="Activation", input_shape=shape, output_shape=shape, inputs=(src,), activation=fn)


# ------------------------------------------------------------------------------- float reference maths
def _apply(fn: str | None, v: np.ndarray) -> np.ndarray:
    if fn in (None, "linear"):
        return v
    if fn == "relu":
        return np.maximum(v, 0.0)
    if fn == "softmax":
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(fn)


def _run(layer: Layer, x: np.ndarray) -> np.ndarray:
    """Float forward pass of one IR layer on a batch (valid padding, stride 1 for convs)."""
    if layer.kind == "Activation":
        return _apply(layer.activation, x)
    k = np.asarray(layer.weights["kernel"], dtype=np.float64)
    if layer.kind == "Dense":
        out = x @ k
    elif layer.kind == "Conv1D":
        w = k.shape[0]
        n = x.shape[1] - w + 1
        out = np.stack([np.einsum("bwc,wcf->bf", x[:, i:i + w], k) for i in range(n)], axis=1)
    else:
        h, w = k.shape[:2]
        rows = []
        for i in range(x.shape[1] - h + 1):
            rows.append(np.stack([np.einsum("bhwc,hwcf->bf", x[:, i:i + h, j:j + w], k)
                                  for j in range(x.shape[2] - w + 1)], axis=1))
        out = np.stack(rows, axis=1)
    if "bias" in layer.weights:
        out = out + np.asarray(layer.weights["bias"], dtype=np.float64)
    return _apply(layer.activation, out)


def _run_chain(layers, x):
    for lyr in layers:
        x = _run(lyr, x)
    return x


def _run_sharded(su: ShardedUnit, x: np.ndarray) -> np.ndarray:
    parts = []
    for piece in su.shards:
        a, b = piece.source_slice if piece.source_slice is not None else (0, x.shape[-1])
        parts.append(_run_chain(piece.layers, x[..., a:b]))
    return _run_chain(su.tail, np.concatenate(parts, axis=-1))


# ------------------------------------------------------------------------------- bounds and types
def test_split_bounds_examples() -> None:
    assert split_bounds(46, 2) == [(0, 23), (23, 46)]
    assert split_bounds(784, 2) == [(0, 392), (392, 784)]
    assert split_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert split_bounds(5, 5) == [(i, i + 1) for i in range(5)]


@pytest.mark.parametrize("n", [1, 2, 7, 30, 101])
def test_split_bounds_balanced_contiguous_larger_first(n: int) -> None:
    for k in range(1, n + 1):
        b = split_bounds(n, k)
        assert len(b) == k and b[0][0] == 0 and b[-1][1] == n
        assert all(b[i][1] == b[i + 1][0] for i in range(k - 1))
        sizes = [hi - lo for lo, hi in b]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
        assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("n,k", [(3, 4), (0, 1), (5, 0), (5, -1)])
def test_split_bounds_rejects_impossible_cuts(n: int, k: int) -> None:
    with pytest.raises(PlanError, match="parts"):
        split_bounds(n, k)


def test_guard_bits_is_ceil_log2() -> None:
    table = {1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 7: 3, 8: 3, 9: 4, 16: 4, 17: 5, 1000: 10}
    assert {k: guard_bits(k) for k in table} == table
    for k in range(2, 300):
        g = guard_bits(k)
        assert 2 ** g >= k > 2 ** (g - 1)  # enough bits for k addends, and no more
    with pytest.raises(PlanError):
        guard_bits(0)


def test_partial_sum_type_widens_integer_bits_only() -> None:
    acc = FixedType(18, 7, rounding="RND", saturation="WRAP")
    t = partial_sum_type(acc, 3)
    assert (t.width, t.integer, t.fractional) == (20, 9, acc.fractional)
    assert (t.signed, t.rounding, t.saturation) == (True, "RND", "WRAP")
    assert partial_sum_type(FixedType(16, 6), 8) == FixedType(19, 9)


def test_merge_weight_type_is_one_bit_and_holds_zero_and_one_exactly() -> None:
    t = MERGE_WEIGHT_TYPE
    assert t.width == 1 and not t.signed
    np.testing.assert_array_equal(t.to_int(np.array([0.0, 1.0])), [0, 1])
    np.testing.assert_array_equal(t.quantize(np.array([0.0, 1.0])), [0.0, 1.0])


def test_names() -> None:
    assert shard_name("fc1", "neuron", 0) == "fc1__n0"
    assert shard_name("fc1", "input", 3) == "fc1__i3"
    assert merge_name("fc1") == "fc1__merge"
    assert shard_activation_name("relu1", 2) == "relu1__n2"
    assert tail_activation_name("fc3", "softmax") == "fc3__softmax"


# ------------------------------------------------------------------------------- neuron split
def test_dense_neuron_split_slices_outputs() -> None:
    fc = _dense(n_in=12, n_out=10)
    su = shard_unit([fc], "fc", "neuron", 3, _settings("fc"))
    assert (su.kind, su.k, su.layer, su.slices) == ("neuron", 3, "fc", ((0, 4), (4, 7), (7, 10)))
    assert su.tail == () and su.tail_settings == {}
    k0 = np.asarray(fc.weights["kernel"])
    for i, (piece, (a, b)) in enumerate(zip(su.shards, su.slices, strict=True)):
        (lyr,) = piece.layers
        assert lyr.name == f"fc__n{i}" and lyr.kind == "Dense" and lyr.activation == "relu"
        assert lyr.input_shape == (12,) and lyr.output_shape == (b - a,) and lyr.params["units"] == b - a
        np.testing.assert_array_equal(lyr.weights["kernel"], k0[:, a:b])
        np.testing.assert_array_equal(lyr.weights["bias"], np.asarray(fc.weights["bias"])[a:b])
        assert piece.source_slice is None and piece.out_shape == (b - a,) and piece.out_type == RES
        assert piece.settings[lyr.name].precision == PREC
    assert su.concat_shape == (10,) and su.output_shape == (10,) and su.output_type == RES
    x = np.random.default_rng(3).normal(size=(5, 12))
    np.testing.assert_allclose(_run_sharded(su, x), _run(fc, x), rtol=1e-12, atol=1e-12)


def test_neuron_split_moves_fused_softmax_to_the_tail() -> None:
    fc = _dense(n_in=6, n_out=8, act="softmax")
    su = shard_unit([fc], "fc", "neuron", 2, _settings("fc", rf=3))
    assert all(p.layer.activation == "linear" for p in su.shards)
    (tail,) = su.tail
    assert (tail.name, tail.kind, tail.activation) == ("fc__softmax", "Activation", "softmax")
    assert tail.input_shape == tail.output_shape == (8,)
    assert tail.inputs == ("fc__n0", "fc__n1")
    assert su.tail_settings["fc__softmax"].precision.result == RES
    assert su.tail_settings["fc__softmax"].reuse_factor == 1
    x = np.random.default_rng(4).normal(size=(4, 6))
    np.testing.assert_allclose(_run_sharded(su, x), _run(fc, x), rtol=1e-12)


def test_neuron_split_keeps_elementwise_standalone_activations_in_the_shards() -> None:
    fc = _dense(n_in=6, n_out=9, act=None)
    relu = _act("act_relu", "relu", (9,), "fc")
    soft = _act("act_soft", "softmax", (9,), "act_relu")
    relu_settings = LayerSettings(precision=LayerPrecision(result=FixedType(10, 4)))
    soft_settings = LayerSettings(precision=LayerPrecision(result=FixedType(18, 2, signed=False)))
    sets = {**_settings("fc"), "act_relu": relu_settings, "act_soft": soft_settings}
    su = shard_unit([fc, relu, soft], "fc", "neuron", 3, sets)
    for i, piece in enumerate(su.shards):
        assert [lyr.name for lyr in piece.layers] == [f"fc__n{i}", f"act_relu__n{i}"]
        act = piece.layers[1]
        assert act.inputs == (f"fc__n{i}",) and act.input_shape == act.output_shape == (3,)
        assert piece.settings[f"act_relu__n{i}"] == relu_settings
        assert piece.out_type == FixedType(10, 4)  # the type of the shard's last layer
    assert [lyr.name for lyr in su.tail] == ["act_soft"]
    assert su.tail_settings == {"act_soft": soft_settings} and su.output_type == soft_settings.precision.result
    x = np.random.default_rng(5).normal(size=(3, 6))
    np.testing.assert_allclose(_run_sharded(su, x), _run_chain([fc, relu, soft], x), rtol=1e-12)


@pytest.mark.parametrize("kind", ["Conv1D", "Conv2D"])
def test_conv_neuron_split_slices_filters(kind: str) -> None:
    conv = _conv(kind, c_in=5, filters=7)
    su = shard_unit([conv], "conv", "neuron", 4, _settings("conv"))
    assert su.slices == ((0, 2), (2, 4), (4, 6), (6, 7))
    k0 = np.asarray(conv.weights["kernel"])
    for piece, (a, b) in zip(su.shards, su.slices, strict=True):
        lyr = piece.layer
        assert lyr.params["filters"] == b - a and lyr.output_shape == (*conv.output_shape[:-1], b - a)
        assert lyr.input_shape == conv.input_shape
        np.testing.assert_array_equal(lyr.weights["kernel"], k0[..., a:b])
    x = np.random.default_rng(6).normal(size=(2, *conv.input_shape))
    np.testing.assert_allclose(_run_sharded(su, x), _run(conv, x), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------- input split
def test_dense_input_split_partial_sums_and_merge() -> None:
    fc = _dense(n_in=13, n_out=6, act="relu")
    sets = _settings("fc", rf=2)
    su = shard_unit([fc], "fc", "input", 3, sets)
    wide = partial_sum_type(ACC, 3)
    assert wide == FixedType(22, 10)
    assert su.slices == ((0, 5), (5, 9), (9, 13))
    k0 = np.asarray(fc.weights["kernel"])
    for i, (piece, (a, b)) in enumerate(zip(su.shards, su.slices, strict=True)):
        (lyr,) = piece.layers
        assert lyr.name == f"fc__i{i}" and lyr.activation == "linear"
        assert lyr.params["use_bias"] is False and set(lyr.weights) == {"kernel"}
        assert lyr.input_shape == (b - a,) and lyr.output_shape == (6,)
        np.testing.assert_array_equal(lyr.weights["kernel"], k0[a:b, :])
        assert piece.source_slice == (a, b) and piece.out_type == wide and piece.out_shape == (6,)
        p = piece.settings[lyr.name].precision
        assert p.accum == wide and p.result == wide and p.weight == PREC.weight
    (merge,) = su.tail
    assert merge.name == "fc__merge" and merge.kind == "Dense" and merge.activation == "relu"
    assert merge.input_shape == (18,) and merge.output_shape == (6,)
    kern = np.asarray(merge.weights["kernel"])
    assert kern.shape == (18, 6)
    for j in range(3):
        np.testing.assert_array_equal(kern[6 * j:6 * (j + 1)], np.eye(6))
    np.testing.assert_array_equal(merge.weights["bias"], fc.weights["bias"])
    ms = su.tail_settings["fc__merge"]
    assert ms.precision == LayerPrecision(weight=MERGE_WEIGHT_TYPE, bias=PREC.bias, result=RES, accum=ACC)
    assert su.concat_shape == (18,) and su.concat_type == wide and su.output_type == RES
    x = np.random.default_rng(7).normal(size=(4, 13))
    np.testing.assert_allclose(_run_sharded(su, x), _run(fc, x), rtol=1e-12, atol=1e-12)


def test_input_split_tail_holds_the_standalone_activations() -> None:
    fc = _dense(n_in=8, n_out=5, act=None, use_bias=False)
    soft = _act("soft", "softmax", (5,), "fc")
    sets = {**_settings("fc"), "soft": LayerSettings()}
    su = shard_unit([fc, soft], "fc", "input", 2, sets)
    assert [lyr.name for lyr in su.tail] == ["fc__merge", "soft"]
    assert su.tail[1].inputs == ("fc__merge",)
    assert "bias" not in su.tail[0].weights and su.tail[0].params["use_bias"] is False
    assert su.tail_settings["soft"] == sets["soft"]
    x = np.random.default_rng(8).normal(size=(3, 8))
    np.testing.assert_allclose(_run_sharded(su, x), _run_chain([fc, soft], x), rtol=1e-12)


@pytest.mark.parametrize("kind", ["Conv1D", "Conv2D"])
def test_conv_input_split_and_pointwise_merge(kind: str) -> None:
    conv = _conv(kind, c_in=5, filters=3)
    su = shard_unit([conv], "conv", "input", 2, _settings("conv"))
    k0 = np.asarray(conv.weights["kernel"])
    for piece, (a, b) in zip(su.shards, su.slices, strict=True):
        assert piece.layer.input_shape == (*conv.input_shape[:-1], b - a)
        assert piece.layer.output_shape == conv.output_shape
        np.testing.assert_array_equal(piece.layer.weights["kernel"], k0[..., a:b, :])
    (merge,) = su.tail
    ndim = 1 if kind == "Conv1D" else 2
    assert merge.kind == kind and merge.params["kernel_size"] == (1,) * ndim
    assert merge.input_shape == (*conv.output_shape[:-1], 6) and merge.output_shape == conv.output_shape
    kern = np.asarray(merge.weights["kernel"])
    assert kern.shape == (1,) * ndim + (6, 3)
    np.testing.assert_array_equal(kern.reshape(6, 3), np.vstack([np.eye(3), np.eye(3)]))
    x = np.random.default_rng(9).normal(size=(2, *conv.input_shape))
    np.testing.assert_allclose(_run_sharded(su, x), _run(conv, x), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------- reuse factors
def test_shard_reuse_factor_is_revalidated_for_the_new_size() -> None:
    fc = _dense(n_in=12, n_out=10)
    assert 4 in hls_rules.valid_reuse_factors_for(12, 10)
    su = shard_unit([fc], "fc", "input", 2, _settings("fc", rf=4, strategy="Resource"))
    for piece in su.shards:
        valid = hls_rules.valid_reuse_factors(piece.layer, "Resource")
        assert 4 not in valid  # (6, 10): the original RF would be changed by hls4ml
        rf = piece.settings[piece.layer.name].reuse_factor
        assert rf in valid and rf == hls_rules.closest_reuse_factor(valid, 4)
        assert piece.settings[piece.layer.name].strategy == "Resource"


def test_shard_settings_overrides() -> None:
    fc = _dense(n_in=12, n_out=10)
    sets = _settings("fc")
    su0 = shard_unit([fc], "fc", "neuron", 2, sets)
    good = {"fc__n1": LayerSettings(reuse_factor=12, strategy="Resource", precision=PREC)}
    su = shard_unit([fc], "fc", "neuron", 2, sets, shard_settings=good)
    assert su.shards[1].settings["fc__n1"].reuse_factor == 12
    assert su.shards[1].settings["fc__n1"].strategy == "Resource"
    assert su.shards[0].settings == su0.shards[0].settings
    with pytest.raises(PlanError, match=r"fc__n0.*reuse_factor 7.*nearest valid"):
        shard_unit([fc], "fc", "neuron", 2, sets,
                   shard_settings={"fc__n0": LayerSettings(reuse_factor=7, strategy="Resource", precision=PREC)})
    with pytest.raises(PlanError, match="fc__i0.*bit-exact"):
        shard_unit([fc], "fc", "input", 2, sets, shard_settings={"fc__i0": LayerSettings(precision=PREC)})
    with pytest.raises(PlanError, match="unknown layer.*fc__n5"):
        shard_unit([fc], "fc", "neuron", 2, sets, shard_settings={"fc__n5": LayerSettings(precision=PREC)})
    merge = shard_unit([fc], "fc", "input", 2, sets).tail_settings["fc__merge"]
    su = shard_unit([fc], "fc", "input", 2, sets,
                    tail_settings={"fc__merge": LayerSettings(reuse_factor=20, strategy="Resource",
                                                              precision=merge.precision)})
    assert su.tail_settings["fc__merge"].reuse_factor == 20


# ------------------------------------------------------------------------------- errors
def test_errors_name_the_layer() -> None:
    fc = _dense(n_in=4, n_out=3)
    relu = _act("relu", "relu", (3,), "fc")
    sets = {**_settings("fc"), "relu": LayerSettings()}
    with pytest.raises(PlanError, match=r"'relu' \(Activation\) is not a compute layer.*Dense"):
        shard_unit([fc, relu], "relu", "neuron", 2, sets)
    flat = Layer(name="flat", kind="Flatten", input_shape=(2, 2), output_shape=(4,))
    with pytest.raises(PlanError, match=r"'flat' \(Flatten\) is not a compute"):
        shard_unit([flat], "flat", "neuron", 2, {"flat": LayerSettings()})
    with pytest.raises(PlanError, match="'nope' is not in the unit"):
        shard_unit([fc], "nope", "neuron", 2, sets)
    with pytest.raises(PlanError, match="'fc'.*parts must be an integer >= 2"):
        shard_unit([fc], "fc", "neuron", 1, sets)
    with pytest.raises(PlanError, match="'fc'.*4 parts.*only 3 output units"):
        shard_unit([fc], "fc", "neuron", 4, sets)
    with pytest.raises(PlanError, match="'fc'.*5 parts.*only 4 input features"):
        shard_unit([fc], "fc", "input", 5, sets)
    with pytest.raises(PlanError, match="'fc'.*kind 'rows'"):
        shard_unit([fc], "fc", "rows", 2, sets)
    conv = _conv(c_in=2, filters=3)
    with pytest.raises(PlanError, match="only 2 input channels"):
        shard_unit([conv], "conv", "input", 3, _settings("conv"))


def test_input_split_needs_a_wrapping_accumulator() -> None:
    fc = _dense(n_in=8, n_out=3)
    sat = LayerPrecision(weight=PREC.weight, bias=PREC.bias, result=RES,
                         accum=FixedType(20, 8, rounding="TRN", saturation="SAT"))
    sets = _settings("fc", prec=sat)
    with pytest.raises(PlanError, match=r"input split of layer 'fc'.*saturates \(SAT\).*WRAP") as exc:
        shard_unit([fc], "fc", "input", 2, sets)
    assert "neuron split" in str(exc.value)
    su = shard_unit([fc], "fc", "neuron", 2, sets)  # a neuron split keeps the layer's arithmetic: allowed
    assert su.shards[0].settings["fc__n0"].precision.accum == sat.accum


def test_shard_unit_does_not_touch_its_inputs() -> None:
    fc = _dense(n_in=6, n_out=4)
    before = np.array(fc.weights["kernel"], copy=True)
    su = shard_unit([fc], "fc", "input", 2, _settings("fc"))
    np.testing.assert_array_equal(fc.weights["kernel"], before)
    assert fc.name == "fc" and fc.params["use_bias"] is True
    assert math.prod(su.shards[0].layer.weights["kernel"].shape) == 3 * 4


def test_pricing_the_same_split_again_reuses_its_arrays_and_costs() -> None:
    """The planner cuts a layer the same ways for every option, version and batch it prices: the cut
    kernels are made once (read-only, so no shard can change another's), the merge's stacked
    identities only when read, and the estimator's memo hits for the rebuilt shards."""
    from split4ml.boards import get_board
    from split4ml.estimate.analytic import AnalyticEstimator

    fc = _dense(n_in=40, n_out=24)
    sets = _settings("fc", rf=2)
    for kind in ("neuron", "input"):
        a, b = (shard_unit([fc], "fc", kind, 3, sets) for _ in range(2))
        for pa, pb in zip(a.shards, b.shards, strict=True):
            assert pa.layer is not pb.layer and pa.layer.weights["kernel"] is pb.layer.weights["kernel"]
            assert not pa.layer.weights["kernel"].flags.writeable
            with pytest.raises(ValueError):
                pa.layer.weights["kernel"][0] = 1.0
    merge = shard_unit([fc], "fc", "input", 4, sets).tail[0]
    assert merge.weights._made == {}  # not made by building the split
    est, board = AnalyticEstimator(), get_board("pynq-z2")
    cost = est.layer_cost(merge, sets["fc"], "io_parallel", board)
    assert merge.weights._made == {} and cost.dsp == 0
    assert hls_rules.mult_size(merge) == (96, 24) and merge.weights._made == {}
    assert merge.weights["kernel"].shape == (96, 24) and set(merge.weights._made) == {"kernel"}
    first = shard_unit([fc], "fc", "neuron", 3, sets).shards[0].layer
    again = shard_unit([fc], "fc", "neuron", 3, sets).shards[0].layer
    c1 = est.layer_cost(first, sets["fc"], "io_parallel", board)
    calls = []
    real = est._layer_cost
    est._layer_cost = lambda *args: calls.append(args) or real(*args)  # type: ignore[method-assign]
    assert est.layer_cost(again, sets["fc"], "io_parallel", board) == c1 and calls == []
    other = _dense(n_in=40, n_out=24, seed=5)  # same shapes, other weights: priced anew
    est.layer_cost(shard_unit([other], "fc", "neuron", 3, sets).shards[0].layer, sets["fc"], "io_parallel", board)
    assert len(calls) == 1
