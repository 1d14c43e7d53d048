"""The HTML report: self-contained, the plan's numbers, verify and run results; the JSON readers."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from report_helpers import mlp, plan_of

from split4ml.errors import DataError
from split4ml.ir import Graph
from split4ml.plan.planfile import Plan
from split4ml.report import (
    FIGURES,
    make_figures,
    read_run_json,
    read_verify_json,
    render_html,
    resource_bars,
    write_report,
)

VERIFY = {"bit_exact": True, "samples": 500, "mismatched_samples": 0, "max_abs_diff": 0.0, "n_stages": 3,
          "n_boards": 3, "fixed_accuracy": 0.89, "float_accuracy": 0.894, "mismatched_indices": []}
RUN = {"samples": 200, "delivered": 198, "lost": 2, "duplicated": 1, "rejected": 3, "bit_exact": False,
       "throughput_per_s": 2803.07, "latency_us": {"p50": 12052.7, "p99": 46803.9},
       "stages": [{"id": "stage_0", "frames": 25, "busy_fraction": 0.38, "driver": "csim"},
                  {"id": "stage_1", "frames": 25, "busy_fraction": 0.03}], "restarts": 1,
       "faults": ["stage_1 died after 3 frames"], "failure": None}


@pytest.fixture(scope="module")
def figures(chain_plan: Plan) -> dict:
    return make_figures(chain_plan, n_samples=4)


def test_figures_are_pngs(figures: dict) -> None:
    assert list(figures) == [name for name, _ in FIGURES]
    for f in figures.values():
        assert f.png[:8] == b"\x89PNG\r\n\x1a\n"
        assert f.width_in > 3 and f.height_in > 1


def test_page_is_self_contained(chain_plan: Plan, chain_graph: Graph, figures: dict) -> None:
    page = render_html(chain_plan, chain_graph, figures, verify=VERIFY, run=RUN, plan_path="plan.yaml")
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert len(imgs) == len(FIGURES)
    for src, fig in zip(imgs, figures.values(), strict=True):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == fig.png
    # nothing is fetched: no URLs in src/href, no external stylesheets or scripts
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "data-images-loaded" in page  # the load check read by the browser test


def test_page_shows_the_plans_numbers(chain_plan: Plan, chain_graph: Graph, figures: dict) -> None:
    m = chain_plan.metrics
    page = render_html(chain_plan, chain_graph, figures)
    text = re.sub(r"<[^>]+>", " ", page)
    assert f"{m.throughput_per_s:,.0f} /s" in text
    assert f"stage {m.bottleneck_stage}" in text
    assert f"{chain_graph.n_params:,}" in text
    for b in resource_bars(chain_plan):
        for r in ("lut", "ff", "dsp", "bram18"):
            assert f"{b.utilization[r]:.1%}" in text
    for st in chain_plan.stages:
        assert f"{st.output.bytes_per_sample:,} B" in text
    board = chain_plan.board
    assert f"{board.link.bandwidth_mbps:,g} Mb/s" in text and f"{board.link.latency_us:g} µs" in text
    assert f"{board.clock_mhz:g} MHz" in text
    assert 'id="verify"' not in page and 'id="run"' not in page
    for lyr in chain_graph.body:
        assert f"<td class=\"l\">{lyr.name}</td>" in page


def test_page_shows_verify_and_run(chain_plan: Plan, chain_graph: Graph, figures: dict) -> None:
    page = render_html(chain_plan, chain_graph, figures, verify=VERIFY, run=RUN)
    assert 'id="verify"' in page and "BIT-EXACT" in page and "89.00%" in page and "89.40%" in page
    assert 'id="run"' in page and "NOT BIT-EXACT" in page and "198" in page and "stage_1 died after 3 frames" in page
    assert "12,053" in page and "46,804" in page  # p50 / p99
    assert 'style="width:38.0%"' in page  # busy meter of stage_0
    bad = render_html(chain_plan, chain_graph, figures, verify={**VERIFY, "bit_exact": False, "mismatched_samples": 7,
                                                               "mismatched_indices": [3, 9]})
    assert "MISMATCH" in bad and "3, 9" in bad


def test_text_is_escaped(figures: dict) -> None:
    g = mlp([8, 4, 2], name="<script>alert(1)</script>")
    p = plan_of(g, [{"layers": ["fc1", "fc2", "softmax"]}])
    page = render_html(p, g, figures)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the image check


def test_write_report_and_pngs(chain_plan: Plan, chain_graph: Graph, tmp_path: Path) -> None:
    steps: list[tuple[str, int, int]] = []
    res = write_report(chain_plan, chain_graph, tmp_path / "out" / "r.html", png_dir=tmp_path / "png",
                       progress=lambda s, d, t: steps.append((s, d, t)))
    assert res.html.is_file() and res.html.read_text().startswith("<!doctype html>")
    assert [p.name for p in res.figures] == ["boards.png", "resources.png", "timeline.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in res.figures)
    assert steps[-1][1] == steps[-1][2] == len(FIGURES)
    assert res.as_dict() == {"html": str(res.html), "figures": [str(p) for p in res.figures]}
    none = write_report(chain_plan, chain_graph, tmp_path / "plain.html")
    assert none.figures == () and none.as_dict()["figures"] == []


def test_read_verify_json(tmp_path: Path) -> None:
    f = tmp_path / "v.json"
    f.write_text(json.dumps(VERIFY))
    assert read_verify_json(f)["samples"] == 500
    f.write_text(json.dumps({"plan_file": "p.yaml", "verify": VERIFY}))  # split4ml demo --json
    assert read_verify_json(f)["bit_exact"] is True
    f.write_text(json.dumps({"samples": 3}))
    with pytest.raises(DataError, match=r"--verify-json .*missing key\(s\).*bit_exact"):
        read_verify_json(f)
    f.write_text("{not json")
    with pytest.raises(DataError, match="not a JSON file"):
        read_verify_json(f)
    with pytest.raises(DataError, match="does not exist"):
        read_verify_json(tmp_path / "nope.json")


def test_read_run_json(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text(json.dumps(RUN))
    assert read_run_json(f)["delivered"] == 198
    f.write_text(json.dumps({**RUN, "latency_us": 5}))
    with pytest.raises(DataError, match="latency_us"):
        read_run_json(f)
    f.write_text(json.dumps(VERIFY))
    with pytest.raises(DataError, match=r"--run-json .*missing key\(s\).*delivered"):
        read_run_json(f)


def test_layers_after_a_split_run_on_the_merge_board(figures: dict) -> None:
    g = mlp([64, 32, 10])
    p = plan_of(g, [{"layers": ["fc1"]}, {"layers": ["fc2", "softmax"],
                                         "split": {"layer": "fc2", "kind": "neuron", "parts": 2}}])
    page = render_html(p, g, figures)
    row = re.search(r"<tr><td class=\"l\">softmax</td>.*?</tr>", page)
    assert row is not None and "stage 2 (after the merge)" in row.group(0)
    row = re.search(r"<tr><td class=\"l\">fc2</td>.*?</tr>", page)
    assert row is not None and "stage 1 (neuron split × 2)" in row.group(0)
