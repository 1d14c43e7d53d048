"""The in-process CLI runner that CLI tests share (imported as ``from cli_helpers import run_cli``)."""

from __future__ import annotations

import sys

import pytest


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``split4ml *args`` in this process; return (exit code, stdout, stderr)."""
    from split4ml import cli

    monkeypatch.setattr(sys, "argv", ["split4ml", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def verify_and_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], plan: object, *,
                   n_boards: int, verify_samples: int = 40, run_samples: int = 24) -> None:
    """``split4ml verify PLAN`` and ``split4ml run PLAN --emulate``: both bit-exact, every sample delivered."""
    import json

    rc, out, _ = run_cli(monkeypatch, capsys, "verify", str(plan), "-n", str(verify_samples), "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["samples"] == verify_samples and v["n_boards"] == n_boards
    rc, out, _ = run_cli(monkeypatch, capsys, "run", str(plan), "--emulate", "-n", str(run_samples), "--json")
    r = json.loads(out)
    assert rc == 0 and r["bit_exact"] and r["completed"] and r["delivered"] == run_samples
