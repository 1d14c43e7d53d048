"""Headless Chromium renders the report: every image decodes and the console stays silent.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it). The page itself records, after
load, how many of its images decoded; the console is read from Chromium's stderr log. A broken
page is checked too, so the check is known to catch what it is for.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from split4ml.ir import Graph
from split4ml.plan.planfile import Plan
from split4ml.report import write_report
from split4ml.report.browser import check_page, find_chromium, screenshot

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (apt-get install -y chromium); .ci/run installs it so CI runs this test")


@pytest.fixture(scope="module")
def report_file(chain_plan: Plan, chain_graph: Graph, tmp_path_factory: pytest.TempPathFactory) -> Path:
    verify = {"bit_exact": True, "samples": 50, "mismatched_samples": 0, "max_abs_diff": 0.0}
    run = {"samples": 50, "delivered": 50, "lost": 0, "duplicated": 0, "rejected": 0, "bit_exact": True,
           "throughput_per_s": 1000.0, "latency_us": {"p50": 900.0, "p99": 1500.0},
           "stages": [{"id": "stage_0", "frames": 7, "busy_fraction": 0.5}], "restarts": 0}
    out = tmp_path_factory.mktemp("report") / "report.html"
    return write_report(chain_plan, chain_graph, out, verify=verify, run=run).html


def test_report_renders_in_chromium(report_file: Path) -> None:
    res = check_page(report_file)
    assert res.images == 3
    assert res.images_loaded == 3
    assert res.console == (), res.console
    assert res.ok
    assert re.search(r'<section id="timeline">', res.dom)


def test_check_catches_a_broken_image_and_console_errors(report_file: Path, tmp_path: Path) -> None:
    page = report_file.read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAA', page, count=1)
    broken = broken.replace("<main>", "<main><script>console.error('report broke'); undefined_fn();</script>", 1)
    f = tmp_path / "broken.html"
    f.write_text(broken)
    res = check_page(f)
    assert res.images == 3 and res.images_loaded == 2
    assert any("report broke" in line for line in res.console)
    assert any("undefined_fn" in line for line in res.console)
    assert not res.ok


def test_screenshot(report_file: Path, tmp_path: Path) -> None:
    png = screenshot(report_file, tmp_path / "shot.png", width=900, height=700)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (900, 700)
