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


# ---------------------------------------------------------------- results tables written by the benchmarks
RESULTS = ROOT / "docs" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
import headline  # noqa: E402  (benchmarks/ is not a package)
import machine as bench_machine  # noqa: E402


def _included() -> list[str]:
    import re

    return re.findall(r'^--8<-- "([^"]+)"$', (ROOT / "docs" / "results.md").read_text(), flags=re.M)


def test_the_results_page_includes_every_table_a_benchmark_wrote_and_nothing_else() -> None:
    included = _included()
    written = sorted(p.name for p in RESULTS.glob("*.md"))
    assert sorted(included) == written, "docs/results.md must include each docs/results/*.md exactly once"
    assert len(set(included)) == len(included)


def test_no_results_table_was_edited_by_hand() -> None:
    """Each table is the file its benchmark wrote: its JSON records the file's SHA-256, and its last line
    names the command, machine and date."""
    import hashlib
    import json

    for md in sorted(RESULTS.glob("*.md")):
        text = md.read_text()
        rec = json.loads(md.with_suffix(".json").read_text())
        assert hashlib.sha256(text.encode()).hexdigest() == rec["markdown_sha256"], (
            f"{md.name} differs from what {rec['benchmark']} wrote: rerun `{rec['command']}`")
        assert text.startswith(bench_machine.GENERATED.format(script=rec["benchmark"]))
        assert text.rstrip().splitlines()[-1].startswith(f"*Measured by `{rec['command']}`")


def test_the_readme_results_table_is_the_one_the_recorded_figures_give() -> None:
    table = headline.render()
    readme = (ROOT / "README.md").read_text()
    assert table in readme, "README.md's results table is out of date: run python benchmarks/headline.py"
    assert headline.replace(readme, table) == readme
    assert table.count("\n| ") >= 5  # the header row and at least the demo, zoo, big MLP and an example


def test_write_results_writes_the_table_its_figures_and_where_they_came_from(tmp_path, monkeypatch) -> None:
    import json

    monkeypatch.setattr(bench_machine, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(sys, "argv", ["benchmarks/toy.py", "--results", "/home/me/data"])
    started = {**bench_machine.machine(), "load_avg_1min": 0.25}
    md = bench_machine.write_results("toy", bench_machine.md_table(["a", "b"], [[1, "x"]]), {"rows": [1]},
                                     started=started, seconds=12.4,
                                     command=bench_machine.command_line(hide={"/home/me/data": "PATH"}))
    text = md.read_text()
    assert text.splitlines()[0] == "<!-- Written by benchmarks/toy.py --results. Do not edit by hand: rerun the benchmark. -->"
    assert "| a | b |\n|---|---|\n| 1 | x |" in text
    assert "`python benchmarks/toy.py --results PATH`" in text and "load average 0.25" in text and "12 s" in text
    rec = json.loads((tmp_path / "toy.json").read_text())
    assert rec["rows"] == [1] and rec["seconds"] == 12.4 and rec["benchmark"] == "benchmarks/toy.py"
    # a re-render keeps the recorded run (command, machine, date, figures) and only changes the table
    (tmp_path / "toy.json").write_text(json.dumps({**rec, "date": "2026-01-02"}))
    bench_machine.rerender("toy", "| c |\n|---|\n| 2 |")
    again = json.loads((tmp_path / "toy.json").read_text())
    assert again["rows"] == [1] and again["date"] == "2026-01-02" and again["command"] == rec["command"]
    assert "| c |" in md.read_text() and "on 2026-01-02" in md.read_text()
