"""Drivers: the reference driver's fixed-point arithmetic against hls4ml's C-simulation, and its casts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from runtime_helpers import dense_stage

from split4ml.errors import RuntimeFault, UnsupportedLayerError
from split4ml.fixed import FixedType
from split4ml.runtime.drivers import ReferenceDriver, _cast, make_driver, save_reference_model
from split4ml.settings import LayerPrecision, LayerSettings
from split4ml.verify import random_inputs


@pytest.mark.parametrize("rounding", ["TRN", "RND", "RND_CONV", "TRN_ZERO"])
@pytest.mark.parametrize("saturation", ["WRAP", "SAT"])
def test_integer_cast_matches_quantize(rounding: str, saturation: str) -> None:
    to = FixedType(8, 3, rounding=rounding, saturation=saturation)
    ints = np.random.default_rng(0).integers(-(1 << 14), 1 << 14, size=5000)
    ints[:8] = [-(1 << 12) - 64, -64, -32, 32, 96, 160, 0, 1]  # exact halves (6 dropped bits: half = 32)
    frac = 11
    got = _cast(ints, frac, to).astype(np.float64) * to.lsb
    want = to.quantize(ints.astype(np.float64) * 2.0**-frac)
    np.testing.assert_array_equal(got, want)


def test_cast_widens_and_handles_unsigned() -> None:
    u = FixedType(6, 2, signed=False, saturation="SAT")
    np.testing.assert_array_equal(_cast(np.array([-5, 3, 1000]), 2, u), [0, 12, 63])
    np.testing.assert_array_equal(_cast(np.array([-3, 5]), 0, FixedType(16, 8)), [-768, 1280])


def test_reference_model_file_and_errors(tmp_path) -> None:
    st = dense_stage(0, (5, 4, 3), seed=4)
    path = save_reference_model(st, tmp_path / "s.npz")
    x = random_inputs(st.input_type, (5,), 20, seed=1)
    a = ReferenceDriver(path).predict(x)
    b = ReferenceDriver(st).predict(x)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, 3)
    st.output_type.to_int(a)  # what it returns is sendable
    assert not np.array_equal(ReferenceDriver(st, "float").predict(x), np.zeros_like(a))
    with pytest.raises(RuntimeFault, match="reference mode"):
        ReferenceDriver(st, "approximate")
    conv = dataclasses.replace(st, graph=dataclasses.replace(
        st.graph, layers=(st.graph.layers[0], st.graph.layers[1].with_(kind="Conv1D"), st.graph.layers[2])))
    with pytest.raises(UnsupportedLayerError, match="Conv1D"):
        save_reference_model(conv, tmp_path / "c.npz")
    with pytest.raises(RuntimeFault, match="no reference model"):
        make_driver("reference", {}, (5,), (3,), st.input_type, st.output_type)
    with pytest.raises(RuntimeFault, match="no C-simulation library"):
        make_driver("csim", {}, (5,), (3,), st.input_type, st.output_type)
    with pytest.raises(RuntimeFault, match="unknown driver"):
        make_driver("gpu", {}, (5,), (3,), st.input_type, st.output_type)


@pytest.mark.slow
def test_reference_fixed_mode_is_bit_exact_with_csim_on_dense_relu(mlp) -> None:
    """hls4ml's Dense: products cast to the accumulator, summed from the bias, cast to the result."""
    from split4ml.hls.csim import compile_stage

    _, stages, _ = mlp
    for st in stages[:2]:  # Dense + ReLU only (stage 2 ends with a table-based softmax)
        x = random_inputs(st.input_type, st.input_shape, 400, seed=21)
        want = compile_stage(st).predict(x)
        got = ReferenceDriver(st, "fixed").predict(x)
        assert np.array_equal(got, want), f"{st.name}: {int(np.any(got != want, axis=1).sum())} samples differ"
        # the float mode ignores the accumulator's wrap-around: it must differ on inputs over the whole range
        assert not np.array_equal(ReferenceDriver(st, "float").predict(x), want)


@pytest.mark.slow
def test_reference_fixed_mode_with_saturating_accumulator(mlp) -> None:
    from split4ml.hls.csim import compile_stage

    _, stages, _ = mlp
    st = stages[1]
    prec = LayerPrecision(weight=FixedType(12, 3), accum=FixedType(18, 8, saturation="SAT"),
                          result=FixedType(14, 5, rounding="RND", saturation="SAT"))
    settings = {n: LayerSettings(precision=prec) for n in st.settings}
    st = dataclasses.replace(st, settings=settings, output_type=prec.result)
    x = random_inputs(st.input_type, st.input_shape, 300, seed=22)
    np.testing.assert_array_equal(ReferenceDriver(st).predict(x), compile_stage(st).predict(x))
