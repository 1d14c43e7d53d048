"""Read the results a report can show: ``split4ml verify --json`` and ``split4ml run --json`` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError

#: Keys a verify result must have (``split4ml verify --json``).
VERIFY_KEYS = ("bit_exact", "samples", "mismatched_samples", "max_abs_diff")
#: Keys a run result must have (``split4ml run --json``).
RUN_KEYS = ("samples", "delivered", "lost", "duplicated", "rejected", "bit_exact", "throughput_per_s", "latency_us",
            "stages", "restarts")


def _read(path: Path, option: str) -> Any:
    if not path.is_file():
        raise DataError(f"{option} {path} does not exist; write it with the command's --json output")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{option} {path} is not a JSON file ({exc}); pass what --json printed") from exc


def read_verify_json(path: str | Path) -> dict[str, Any]:
    """A ``split4ml verify --json`` result (the ``verify`` part of ``split4ml demo --json`` also works)."""
    p = Path(path)
    data = _read(p, "--verify-json")
    if isinstance(data, dict) and "bit_exact" not in data and isinstance(data.get("verify"), dict):
        data = data["verify"]
    missing = [k for k in VERIFY_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"--verify-json {p}: missing key(s) {missing}; make it with "
                        "'split4ml verify PLAN --json > verify.json'")
    return dict(data)


def read_run_json(path: str | Path) -> dict[str, Any]:
    """A ``split4ml run --json`` result."""
    p = Path(path)
    data = _read(p, "--run-json")
    missing = [k for k in RUN_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"--run-json {p}: missing key(s) {missing}; make it with "
                        "'split4ml run PLAN --emulate --json > run.json'")
    lat = data["latency_us"]
    if not isinstance(lat, dict) or not {"p50", "p99"} <= set(lat):
        raise DataError(f"--run-json {p}: 'latency_us' must be {{\"p50\": ..., \"p99\": ...}}, got {lat!r}")
    if not isinstance(data["stages"], list):
        raise DataError(f"--run-json {p}: 'stages' must be a list of {{id, frames, busy_fraction}}")
    return dict(data)
