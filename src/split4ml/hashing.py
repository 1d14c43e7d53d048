"""File digests, in one place (plan files record model checksums, runtime specs library checksums)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def hash_file(h: Any, path: str | Path) -> None:
    """Feed the bytes of ``path`` into the hash object ``h``, a MiB at a time."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    hash_file(h, path)
    return h.hexdigest()


__all__ = ["file_sha256", "hash_file"]
