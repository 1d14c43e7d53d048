import numpy as np
import pytest

from split4ml.errors import PlanError
from split4ml.fixed import FixedType


@pytest.mark.parametrize(
    "text,width,integer,signed,q,o",
    [
        ("ap_fixed<16,6>", 16, 6, True, "TRN", "WRAP"),
        ("fixed<16,6,RND_CONV,SAT>", 16, 6, True, "RND_CONV", "SAT"),
        ("ap_fixed<18,8,AP_RND,AP_SAT>", 18, 8, True, "RND", "SAT"),
        ("ap_ufixed<8,0>", 8, 0, False, "TRN", "WRAP"),
        ("ap_int<8>", 8, 8, True, "TRN", "WRAP"),
        ("uint<4>", 4, 4, False, "TRN", "WRAP"),
    ],
)
def test_parse(text, width, integer, signed, q, o):
    t = FixedType.parse(text)
    assert (t.width, t.integer, t.signed, t.rounding, t.saturation) == (width, integer, signed, q, o)
    # both spellings round-trip
    assert FixedType.parse(str(t)) == t
    assert FixedType.parse(t.hls4ml()) == t


def test_parse_error_says_how():
    with pytest.raises(PlanError, match="ap_fixed<W,I>"):
        FixedType.parse("float32")
    with pytest.raises(PlanError, match="rounding"):
        FixedType(16, 6, rounding="NEAREST")


def test_range_and_storage():
    t = FixedType.parse("ap_fixed<16,6>")
    assert t.min_value == -32.0
    assert t.max_value == 32.0 - 2**-10
    assert t.storage_bytes == 2
    assert FixedType.parse("ap_fixed<17,7>").storage_bytes == 4
    assert FixedType.parse("ap_ufixed<8,1>").min_value == 0.0


def test_quantize_rounding_and_saturation():
    t = FixedType(8, 4, rounding="RND_CONV", saturation="SAT")  # lsb 1/16, range [-8, 8)
    x = np.array([0.03125, 0.09375, 100.0, -100.0, 1.0])
    q = t.quantize(x)
    assert q[0] == 0.0 and q[1] == 0.125  # ties to even
    assert q[2] == t.max_value and q[3] == t.min_value
    assert q[4] == 1.0
    w = FixedType(8, 4)  # TRN, WRAP
    assert w.quantize(np.array([8.0]))[0] == -8.0  # wraps
    assert w.quantize(np.array([0.07]))[0] == 0.0625  # truncates toward -inf


def test_to_int_refuses_off_grid_and_out_of_range():
    t = FixedType.parse("ap_fixed<16,6>")
    vals = t.quantize(np.linspace(-30, 30, 101))
    ints = t.to_int(vals)
    assert np.array_equal(t.from_int(ints), vals)
    with pytest.raises(PlanError, match="not representable"):
        t.to_int(np.array([2**-11]))
    with pytest.raises(PlanError, match="out of the range"):
        t.to_int(np.array([40.0]))
