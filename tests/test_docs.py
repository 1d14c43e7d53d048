"""The README stays short, and the documentation site builds without a warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_keeps_its_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12_000, f"README.md is {len(text.encode())} bytes; move details to docs/"
    lines = text.splitlines()
    assert "pip install -e . && split4ml demo" in lines
    assert 'pip install -e ".[test]" && pytest' in lines


def test_the_site_home_is_the_readme() -> None:
    """docs/index.md is the README with the picture's path seen from docs/ (one text, no drift):
    after editing the README, copy it there the same way."""
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "index.md").read_text() == readme.replace("(docs/report.png)", "(report.png)")


def test_the_documentation_site_builds_strictly(tmp_path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra (part of the test extra) is not installed")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("make_plan", "run_pipeline", "serve_node", "verify_plan"):  # pages made from the docstrings
        assert name in api, name
    assert (tmp_path / "site" / "results" / "index.html").is_file()
