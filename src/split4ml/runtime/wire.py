"""The runtime's wire format: one frame per ZeroMQ message.

A frame is ``header | payload | crc32``, all little-endian:

=========  =====  ==========================================================================
field      bytes  meaning
=========  =====  ==========================================================================
magic      4      ``b"S4ML"``
version    1      :data:`VERSION` (a receiver rejects any other)
kind       1      :data:`KIND_DATA` (samples) or :data:`KIND_STOP` (the launcher stops a node)
flags      2      reserved, 0
plan_hash  8      first 8 bytes of the pipeline's content hash (:func:`split4ml.runtime.spec.pipeline_hash`)
src        2      producer: node index, or :data:`SOURCE` (the pipeline input)
dst        2      consumer: node index, or :data:`SINK` (the pipeline output)
part       2      which of the consumer's sources this is (index in ``Node.sources``)
reserved   2      0
seq        8      sequence number of the first sample in the frame
count      4      samples in the frame (a frame carries a batch ``seq .. seq+count-1``)
t0_ns      8      when the source first sent these samples (``time.monotonic_ns``; informative)
width      1      fixed-point type of the values: total bits ...
integer    2      ... integer bits (signed 16-bit) ...
signed     1      ... signedness, ...
rounding   1      ... rounding mode and ...
saturation 1      ... overflow mode (indices into :data:`ROUNDINGS` / :data:`SATURATIONS`)
storage    1      bytes per value in the payload (1, 2, 4 or 8)
ndim       1      dimensions of one sample (at most :data:`MAX_NDIM`)
shape      4x6    per-sample shape, zero-padded
length     4      payload bytes (``count * prod(shape) * storage``)
=========  =====  ==========================================================================

The payload holds the raw fixed-point integers ``value * 2**(width - integer)`` of the edge's
wire type (:meth:`split4ml.fixed.FixedType.to_int`) as little-endian signed (unsigned for
``ap_ufixed``) integers of ``storage`` bytes: never float32, so every value crosses a hop
unchanged. The CRC32 (zlib) covers header and payload.

:func:`decode_frame` checks, in order: length, magic, version, CRC, plan hash, destination, part
and producer, fixed-point type, shape and payload length, and raises
:class:`~split4ml.errors.FrameError` with a short ``reason`` (one of :data:`REJECT_REASONS`) for
the first failure. A rejected frame is counted by its receiver and never fed to a model.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import FrameError, PlanError
from ..fixed import FixedType

MAGIC = b"S4ML"
VERSION = 1
KIND_DATA = 1
KIND_STOP = 2
#: Producer index of the pipeline input (the source).
SOURCE = 0xFFFF
#: Consumer index of the pipeline output (the sink).
SINK = 0xFFFE
MAX_NDIM = 6
ROUNDINGS = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV")
SATURATIONS = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
REJECT_REASONS = ("truncated", "magic", "version", "crc", "plan_hash", "destination", "part", "type", "shape",
                  "length", "join", "stop", "count")

_HEADER = struct.Struct("<4sBBH8sHHHHQIQBhBBBBB6II")
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size
#: Bytes a frame adds to its payload (header and CRC).
OVERHEAD_BYTES = _HEADER.size + _CRC.size


def _dtype(wire: FixedType) -> np.dtype:
    return np.dtype(f"<{'i' if wire.signed else 'u'}{wire.storage_bytes}")


@dataclass(frozen=True)
class Expect:
    """What a receiver accepts on one of its parts: the producer, the wire type and the per-sample shape."""

    src: int
    wire: FixedType
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))


def max_frame_bytes(parts: Mapping[int, Expect] | list[Expect], batch: int) -> int:
    """The largest frame a receiver of these parts can get in a run of ``batch`` samples a frame."""
    exps = list(parts.values()) if isinstance(parts, Mapping) else list(parts)
    return OVERHEAD_BYTES + max([batch * e.size * e.wire.storage_bytes for e in exps] + [0])


@dataclass(frozen=True)
class Frame:
    """A decoded data frame: ``values`` is float64 of shape ``(count, *shape)``, exactly the sent values."""

    kind: int
    src: int
    dst: int
    part: int
    seq: int
    count: int
    t0_ns: int
    values: np.ndarray


def encode_frame(plan_hash: bytes, src: int, dst: int, part: int, seq: int, values: np.ndarray,
                 wire: FixedType, t0_ns: int = 0) -> bytes:
    """One data frame carrying ``values`` (float64, ``(count, *shape)``) in the wire type ``wire``.

    Raises:
        PlanError: a value is not representable in ``wire`` (not on its grid, or out of range);
            nothing that would change on the wire is ever sent.
    """
    a = np.asarray(values)
    count = int(a.shape[0])
    shape = tuple(int(d) for d in a.shape[1:])
    if len(shape) > MAX_NDIM:
        raise PlanError(f"a sample has {len(shape)} dimensions; frames carry at most {MAX_NDIM}")
    payload = wire.to_int(a).astype(_dtype(wire), copy=False).tobytes()
    return _pack(KIND_DATA, plan_hash, src, dst, part, seq, count, t0_ns, wire, shape, payload)


def encode_stop(plan_hash: bytes, dst: int) -> bytes:
    """A control frame asking node ``dst`` to send its final statistics and exit."""
    return _pack(KIND_STOP, plan_hash, SOURCE, dst, 0, 0, 0, 0, FixedType(8, 8), (), b"")


def _pack(kind: int, plan_hash: bytes, src: int, dst: int, part: int, seq: int, count: int, t0_ns: int,
          wire: FixedType, shape: tuple[int, ...], payload: bytes) -> bytes:
    dims = (*shape, *([0] * (MAX_NDIM - len(shape))))
    header = _HEADER.pack(MAGIC, VERSION, kind, 0, plan_hash[:8].ljust(8, b"\0"), src, dst, part, 0, seq, count,
                          t0_ns, wire.width, wire.integer, int(wire.signed), ROUNDINGS.index(wire.rounding),
                          SATURATIONS.index(wire.saturation), wire.storage_bytes, len(shape), *dims, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(header))
    return b"".join((header, payload, _CRC.pack(crc)))


def peek_kind(buf: bytes) -> int:
    """The ``kind`` byte of a frame (0 if the buffer is too short to have one)."""
    return buf[5] if len(buf) > 5 else 0


def decode_frame(buf: bytes | memoryview, plan_hash: bytes, dst: int, parts: Mapping[int, Expect],
                 max_count: int | None = None) -> Frame:
    """Check and decode one frame addressed to receiver ``dst`` whose parts are ``parts``: a STOP frame
    only from the source, a data frame of 1 to ``max_count`` samples (no limit: None).

    Raises:
        FrameError: with ``reason`` in :data:`REJECT_REASONS`; the frame must be dropped.
    """
    mv = memoryview(buf)
    if len(mv) < OVERHEAD_BYTES:
        raise FrameError("truncated", f"frame of {len(mv)} bytes is shorter than a header ({OVERHEAD_BYTES} bytes)")
    (magic, version, kind, _flags, phash, src, fdst, part, _res, seq, count, t0_ns, width, integer, signed, rnd,
     sat, storage, ndim, *rest) = _HEADER.unpack_from(mv, 0)
    dims, length = rest[:MAX_NDIM], rest[MAX_NDIM]
    if magic != MAGIC:
        raise FrameError("magic", f"not a split4ml frame (magic {magic!r})")
    if version != VERSION:
        raise FrameError("version", f"frame version {version}, this runtime speaks version {VERSION}")
    if len(mv) != HEADER_BYTES + length + _CRC.size:
        raise FrameError("length", f"frame is {len(mv)} bytes but its header announces a payload of {length}")
    (crc,) = _CRC.unpack_from(mv, HEADER_BYTES + length)
    if zlib.crc32(mv[HEADER_BYTES:HEADER_BYTES + length], zlib.crc32(mv[:HEADER_BYTES])) != crc:
        raise FrameError("crc", f"CRC mismatch on frame seq {seq} from {src}")
    if phash != plan_hash[:8].ljust(8, b"\0"):
        raise FrameError("plan_hash", f"frame seq {seq} belongs to another plan (hash {phash.hex()}, "
                                      f"expected {plan_hash[:8].hex()}); restart every node with the same plan")
    if fdst != dst:
        raise FrameError("destination", f"frame seq {seq} is addressed to {fdst}, this is {dst}")
    if kind == KIND_STOP:
        if src != SOURCE:
            raise FrameError("stop", f"a STOP frame from producer {src}: only the source may stop a node")
        return Frame(kind, src, fdst, part, seq, 0, t0_ns, np.zeros((0,)))
    if kind != KIND_DATA:
        raise FrameError("magic", f"unknown frame kind {kind}")
    if count < 1 or (max_count is not None and count > max_count):
        raise FrameError("count", f"frame seq {seq} carries {count} samples; a frame carries 1 to "
                                  f"{max_count if max_count is not None else 'any number of'} samples")
    exp = parts.get(part)
    if exp is None or exp.src != src:
        raise FrameError("part", f"frame seq {seq}: part {part} from {src} is not an input of {dst}")
    w = exp.wire
    if (width, integer, bool(signed), rnd, sat, storage) != (w.width, w.integer, w.signed, ROUNDINGS.index(w.rounding),
                                                            SATURATIONS.index(w.saturation), w.storage_bytes):
        raise FrameError("type", f"frame seq {seq} part {part} carries fixed<{width},{integer}> "
                                 f"(signed={bool(signed)}), expected {w}")
    shape = tuple(dims[:ndim])
    if ndim > MAX_NDIM or shape != exp.shape or any(dims[ndim:]):
        raise FrameError("shape", f"frame seq {seq} part {part} has sample shape {shape}, expected {exp.shape}")
    if length != count * exp.size * storage:
        raise FrameError("length", f"frame seq {seq}: payload of {length} bytes for {count} samples of "
                                   f"{exp.shape} x {storage} B")
    ints = np.frombuffer(mv, dtype=_dtype(w), count=count * exp.size, offset=HEADER_BYTES)
    values = ints.astype(np.float64).reshape((count, *exp.shape)) * w.lsb
    return Frame(kind, src, fdst, part, seq, count, t0_ns, values)
