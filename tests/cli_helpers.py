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
