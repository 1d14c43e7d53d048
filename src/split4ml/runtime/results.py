"""The sink's journal: every delivered batch written to disk as it arrives, so that nothing computed is
lost when the launcher dies, and ``split4ml run ... --resume DIR`` sends only what is missing.

``DIR/results.json`` says what the journal belongs to (the plan hash, the number of samples, the batch,
the output size and a sha256 of the quantised inputs); ``DIR/results.bin`` holds one record per
delivered batch, appended and flushed as it arrives::

    b"S4R1" | seq (u64) | count (u32) | values per sample (u32) | count x values float64 | CRC32

A record is written once per batch (the sink drops copies), so the journal holds every sample at most
once. On reading, a torn last record (the launcher killed while writing it) is cut off.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RuntimeFault

_MAGIC = b"S4R1"
_HEAD = struct.Struct("<4sQII")
_CRC = struct.Struct("<I")
JOURNAL = "results.bin"
MANIFEST = "results.json"


def inputs_sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest()


class Journal:
    """The journal of one run in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path, plan_hash: str, n: int, batch: int, out_size: int,
                 x_sha256: str, resume: bool) -> None:
        self.dir = Path(directory)
        self.manifest = {"plan_hash": plan_hash, "samples": int(n), "batch": int(batch), "out_size": int(out_size),
                         "inputs_sha256": x_sha256}
        self.path = self.dir / JOURNAL
        self.records: list[tuple[int, int, np.ndarray]] = []
        self.dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load()
        else:
            if self.path.exists() and self.path.stat().st_size > 0:
                raise RuntimeFault(f"{self.path} holds results of an earlier run; continue it with --resume "
                                   f"{self.dir}, or give another -o directory")
            (self.dir / MANIFEST).write_text(json.dumps(self.manifest, indent=1))
            self.path.write_bytes(b"")
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for the run, closed by close()

    def _load(self) -> None:
        man_path = self.dir / MANIFEST
        try:
            man = json.loads(man_path.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeFault(f"--resume {self.dir}: no results of an earlier run there ({exc}); run with -o "
                               f"{self.dir} first") from exc
        diff = {k: (man.get(k), v) for k, v in self.manifest.items() if man.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
            raise RuntimeFault(f"--resume {self.dir}: the earlier run differs ({what}); resume with the same plan, "
                               "samples (--data or --seed and --samples) and --batch")
        self.records, good = _read_records(self.path, self.manifest)
        if self.path.exists() and good < self.path.stat().st_size:  # a torn or damaged tail: its batches go again
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

    def append(self, seq: int, values: np.ndarray) -> None:
        """Write one delivered batch (``values``: ``(count, out_size)``) and flush it to the OS."""
        v = np.ascontiguousarray(values, dtype="<f8")
        body = _HEAD.pack(_MAGIC, int(seq), int(v.shape[0]), int(v.shape[1])) + v.tobytes()
        self._fh.write(body + _CRC.pack(zlib.crc32(body)))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _read_records(path: Path, manifest: dict[str, Any]) -> tuple[list[tuple[int, int, np.ndarray]], int]:
    """The whole records of the journal at ``path`` (each batch once), and how many bytes they take: the
    first torn, damaged or foreign record ends the reading."""
    data = path.read_bytes() if path.exists() else b""
    records: list[tuple[int, int, np.ndarray]] = []
    pos = 0
    seen: set[int] = set()
    while pos + _HEAD.size <= len(data):
        magic, seq, count, size = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + 8 * count * size + _CRC.size
        if magic != _MAGIC or size != manifest["out_size"] or end > len(data):
            break
        (crc,) = _CRC.unpack_from(data, end - _CRC.size)
        if zlib.crc32(data[pos:end - _CRC.size]) != crc:
            break
        vals = np.frombuffer(data, dtype="<f8", count=count * size, offset=pos + _HEAD.size).reshape(count, size)
        if seq not in seen and seq + count <= manifest["samples"]:
            records.append((int(seq), int(count), vals.copy()))
            seen.add(seq)
        pos = end
    return records, pos


def read_results(directory: str | Path) -> dict[str, Any]:
    """The journal of ``directory``, read without changing it: ``{"manifest": ..., "outputs": (n, out_size)
    with NaN where missing, "delivered": bool mask, "records": [(seq, count), ...]}`` (for scripts and
    tests)."""
    d = Path(directory)
    man = json.loads((d / MANIFEST).read_text())
    records, _ = _read_records(d / JOURNAL, man)
    out = np.full((man["samples"], man["out_size"]), np.nan)
    mask = np.zeros(man["samples"], dtype=bool)
    for seq, count, vals in records:
        out[seq:seq + count] = vals
        mask[seq:seq + count] = True
    return {"manifest": man, "outputs": out, "delivered": mask, "records": [(s, c) for s, c, _ in records]}


__all__ = ["JOURNAL", "Journal", "MANIFEST", "inputs_sha256", "read_results"]
