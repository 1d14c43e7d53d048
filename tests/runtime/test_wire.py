"""The frame format: raw fixed-point payloads that round-trip exactly, and every kind of bad frame rejected."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from split4ml.errors import FrameError, PlanError
from split4ml.fixed import FixedType
from split4ml.runtime.wire import (
    HEADER_BYTES,
    KIND_DATA,
    KIND_STOP,
    OVERHEAD_BYTES,
    SINK,
    SOURCE,
    Expect,
    decode_frame,
    encode_frame,
    encode_stop,
    peek_kind,
)
from split4ml.verify import random_inputs

H = bytes.fromhex("0123456789abcdef")
T16 = FixedType(16, 6, rounding="RND_CONV", saturation="SAT")


@pytest.mark.parametrize(("text", "shape"), [("ap_fixed<16,6,AP_RND_CONV,AP_SAT>", (10,)), ("ap_fixed<8,3>", (3, 4)),
                                              ("ap_ufixed<12,4>", (2, 2, 3)), ("ap_fixed<32,12>", (7,)),
                                              ("ap_fixed<40,20>", (5,))])
def test_values_round_trip_exactly_as_raw_integers(text: str, shape: tuple[int, ...]) -> None:
    t = FixedType.parse(text)
    x = random_inputs(t, shape, 9, seed=1)
    buf = encode_frame(H, 2, 3, 1, 1000, x, t, t0_ns=77)
    n_values = x.size
    assert len(buf) == OVERHEAD_BYTES + n_values * t.storage_bytes  # raw integers, not float32
    payload = buf[HEADER_BYTES:HEADER_BYTES + n_values * t.storage_bytes]
    dtype = f"<{'i' if t.signed else 'u'}{t.storage_bytes}"
    np.testing.assert_array_equal(np.frombuffer(payload, dtype=dtype), t.to_int(x).ravel())
    fr = decode_frame(buf, H, 3, {1: Expect(2, t, shape)})
    assert (fr.kind, fr.src, fr.dst, fr.part, fr.seq, fr.count, fr.t0_ns) == (KIND_DATA, 2, 3, 1, 1000, 9, 77)
    assert fr.values.dtype == np.float64 and fr.values.shape == (9, *shape)
    np.testing.assert_array_equal(fr.values, x)
    assert peek_kind(buf) == KIND_DATA


def test_values_not_representable_are_never_sent() -> None:
    with pytest.raises(PlanError, match="multiples of its LSB"):
        encode_frame(H, SOURCE, 0, 0, 0, np.array([[0.3]]), T16)
    with pytest.raises(PlanError, match="out of the range"):
        encode_frame(H, SOURCE, 0, 0, 0, np.array([[40.0]]), T16)


def _good() -> tuple[bytes, dict[int, Expect], np.ndarray]:
    x = random_inputs(T16, (6,), 4, seed=2)
    return encode_frame(H, 0, 1, 0, 8, x, T16), {0: Expect(0, T16, (6,))}, x


def _recrc(buf: bytearray) -> bytes:
    """Recompute the CRC, so that a changed header field is checked on its own merits."""
    body = bytes(buf[:-4])
    crc = zlib.crc32(body[HEADER_BYTES:], zlib.crc32(body[:HEADER_BYTES]))
    return body + struct.pack("<I", crc)


@pytest.mark.parametrize("where", ["payload", "header", "crc"])
def test_any_flipped_bit_is_caught_by_the_crc(where: str) -> None:
    buf, parts, _ = _good()
    pos = {"payload": HEADER_BYTES + 3, "header": 40, "crc": len(buf) - 1}[where]
    bad = bytearray(buf)
    bad[pos] ^= 0x10
    with pytest.raises(FrameError) as exc:
        decode_frame(bytes(bad), H, 1, parts)
    assert exc.value.reason == "crc"


def test_rejections_name_their_reason() -> None:
    buf, parts, _ = _good()

    def reason(b: bytes, **kw) -> str:
        with pytest.raises(FrameError) as exc:
            decode_frame(b, kw.get("h", H), kw.get("dst", 1), kw.get("parts", parts))
        return exc.value.reason

    assert reason(buf[:20]) == "truncated"
    assert reason(b"XXXX" + buf[4:]) == "magic"
    bad = bytearray(buf)
    bad[4] = 9
    assert reason(_recrc(bad)) == "version"
    assert reason(buf[:-6] + buf[-4:]) == "length"
    assert reason(buf, h=bytes(8)) == "plan_hash"
    assert reason(buf, dst=2) == "destination"
    assert reason(buf, parts={1: parts[0]}) == "part"
    assert reason(buf, parts={0: Expect(5, T16, (6,))}) == "part"  # right part, wrong producer
    assert reason(buf, parts={0: Expect(0, FixedType(16, 6), (6,))}) == "type"  # modes differ
    assert reason(buf, parts={0: Expect(0, FixedType(16, 7, rounding="RND_CONV", saturation="SAT"), (6,))}) == "type"
    assert reason(buf, parts={0: Expect(0, T16, (3, 2))}) == "shape"
    assert reason(buf, parts={0: Expect(0, T16, (7,))}) == "shape"
    # a header announcing more samples than its payload holds
    bad = bytearray(buf)
    struct.pack_into("<I", bad, 32, 5)  # count
    assert reason(_recrc(bad)) == "length"
    decode_frame(buf, H, 1, parts)  # the original is fine


def test_stop_only_from_the_source_and_frames_of_one_to_max_count_samples() -> None:
    from split4ml.runtime.wire import _pack

    forged = _pack(KIND_STOP, H, 3, 4, 0, 0, 0, 0, FixedType(8, 8), (), b"")  # "STOP" from producer 3
    with pytest.raises(FrameError) as exc:
        decode_frame(forged, H, 4, {})
    assert exc.value.reason == "stop"
    buf, parts, _ = _good()
    n = decode_frame(buf, H, 1, parts).count
    decode_frame(buf, H, 1, parts, max_count=n)
    with pytest.raises(FrameError) as exc:
        decode_frame(buf, H, 1, parts, max_count=n - 1)
    assert exc.value.reason == "count"
    empty = encode_frame(H, 0, 1, 0, 0, np.zeros((0, 6)), T16)
    with pytest.raises(FrameError) as exc:
        decode_frame(empty, H, 1, parts)
    assert exc.value.reason == "count"


def test_stop_frames_and_batch_metadata() -> None:
    stop = encode_stop(H, 4)
    assert peek_kind(stop) == KIND_STOP
    fr = decode_frame(stop, H, 4, {})
    assert fr.kind == KIND_STOP and fr.count == 0
    with pytest.raises(FrameError):
        decode_frame(stop, bytes(8), 4, {})
    # one sample and a 3-D sample shape, addressed to the sink
    t = FixedType(8, 8)
    x = np.arange(24, dtype=np.float64).reshape(1, 2, 3, 4) - 12
    fr = decode_frame(encode_frame(H, 7, SINK, 2, 2**40, x, t), H, SINK, {2: Expect(7, t, (2, 3, 4))})
    assert fr.seq == 2**40 and fr.count == 1
    np.testing.assert_array_equal(fr.values, x)
