"""The report's figures against the plan's numbers: timeline, resource bars, board diagram.

The figure data come from plain functions; each is checked against the plan (its stages, shards,
wires and ``plan.metrics``), and the drawn matplotlib artists against those functions.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import FancyBboxPatch
from report_helpers import mlp, plan_of

from split4ml.boards import RESOURCES
from split4ml.plan.planfile import Plan
from split4ml.report import (
    board_timings,
    diagram_layout,
    gantt_bottleneck,
    gantt_rows,
    gantt_segments,
    resource_bars,
)
from split4ml.report.figures import (
    COLORS,
    _Compressor,
    diagram_figure,
    figure_png,
    gantt_figure,
    resource_figure,
    time_breaks,
)
from split4ml.report.timing import COMPUTE, LINK, SEND, busy_fraction, input_hop_us, link_row, sink_arrivals

# ----------------------------------------------------------------------------- timing and timeline


def test_board_timings_are_the_metrics(any_plan: Plan) -> None:
    """Each step's slowest board gives exactly the interval and latency of plan.metrics."""
    m = any_plan.metrics
    timings = board_timings(any_plan)
    assert len(timings) == any_plan.n_stages
    assert sum(len(t) for t in timings) == any_plan.n_boards
    for i, tms in enumerate(timings):
        assert max(t.interval_us for t in tms) == pytest.approx(m.stage_interval_us[i], rel=1e-12)
        assert max(t.latency_us for t in tms) == pytest.approx(m.stage_latency_us[i], rel=1e-12)


def test_neuron_split_fan_out_is_sent_once_per_shard(neuron_split_plan: Plan) -> None:
    # the source feeds the split; the split's shards feed stage 1 once each
    tms = board_timings(neuron_split_plan)
    st0 = neuron_split_plan.stages[0]
    assert [t.bytes_sent for t in tms[0]] == [sh.output.bytes_per_sample for sh in st0.shards]
    # a plain stage feeding a 3-way neuron split sends its output three times
    p = plan_of(mlp([32, 64, 64, 10]), [{"layers": ["fc1"]},
                                        {"layers": ["fc2"], "split": {"layer": "fc2", "kind": "neuron", "parts": 3}},
                                        {"layers": ["fc3", "softmax"]}])
    t0 = board_timings(p)[0][0]
    assert t0.bytes_sent == 3 * p.stages[0].output.bytes_per_sample
    assert t0.interval_us == pytest.approx(p.metrics.stage_interval_us[0], rel=1e-12)


def test_gantt_latency_and_occupancy_follow_the_model(any_plan: Plan) -> None:
    n = 5
    segs = gantt_segments(any_plan, n)
    m = any_plan.metrics
    arrivals = sink_arrivals(any_plan, segs)
    assert sorted(arrivals) == list(range(n))
    for k in range(n):
        # sample k leaves the source at k x bottleneck and needs exactly the model's latency
        assert arrivals[k] - k * m.bottleneck_us == pytest.approx(m.latency_us, rel=1e-9)
    src = [s for s in segs if s.stage == -1]
    assert all(s.duration_us == pytest.approx(input_hop_us(any_plan)) for s in src)
    for tms in board_timings(any_plan):
        for t in tms:
            mine = [s for s in segs if s.row == t.label]
            comp = sorted((s for s in mine if s.kind == COMPUTE), key=lambda s: s.sample)
            send = sorted((s for s in mine if s.kind == SEND), key=lambda s: s.sample)
            assert len(comp) == n and (len(send) == n or t.interval_us == t.ii_us)
            for c in comp:
                assert c.duration_us == pytest.approx(t.ii_us)
            for s in send:  # what the links or the per-frame cost add to the fabric's interval
                assert s.duration_us == pytest.approx(t.interval_us - t.ii_us)
                assert t.interval_us == pytest.approx(max(t.bounds_us.values()))
            # a board never works on two samples at once
            spans = sorted((s.start_us, s.end_us) for s in mine)
            assert all(b[0] >= a[1] - 1e-9 for a, b in zip(spans, spans[1:], strict=False))
    assert {s.kind for s in segs} <= {COMPUTE, SEND, LINK}
    assert all(s.end_us >= s.start_us for s in segs)


def test_gantt_bottleneck_is_the_plans(any_plan: Plan) -> None:
    segs = gantt_segments(any_plan, 6)
    if any_plan.metrics.bottleneck != "stage":  # the host's link paces the pipeline: every board idles
        assert all(busy_fraction(segs, t.label) < 0.999 for tms in board_timings(any_plan) for t in tms)
        return
    bott = any_plan.metrics.bottleneck_stage
    assert gantt_bottleneck(any_plan, segs) == bott
    for tms in board_timings(any_plan):
        fracs = [busy_fraction(segs, t.label) for t in tms]
        if tms[0].stage == bott:
            assert max(fracs) == pytest.approx(1.0)  # never idles at the steady-state rate
        else:
            assert max(fracs) < 0.999


def test_gantt_rows_cover_every_board_and_link(any_plan: Plan) -> None:
    rows = gantt_rows(any_plan)
    boards = [t.label for tms in board_timings(any_plan) for t in tms]
    links = [link_row(any_plan, i) for i in range(-1, any_plan.n_stages)]
    assert set(rows) == set(boards) | set(links) and len(rows) == len(boards) + len(links)
    assert rows[0] == "source → stage 0" and rows[-1] == f"stage {any_plan.n_stages - 1} → sink"
    assert {s.row for s in gantt_segments(any_plan, 3)} <= set(rows)


def test_gantt_rejects_no_samples(chain_plan: Plan) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        gantt_segments(chain_plan, 0)


def test_time_breaks_hold_no_work_and_compress_monotonically(any_plan: Plan) -> None:
    segs = gantt_segments(any_plan, 6)
    breaks = time_breaks(segs, any_plan.n_stages)
    assert breaks, "the PYNQ-Z2 links' 200 us per hop dwarf the boards' work: the axis must be compressed"
    for a, b in breaks:
        for s in segs:
            if s.kind != LINK:
                assert s.end_us <= a + 1e-9 or s.start_us >= b - 1e-9, (s, a, b)
    comp = _Compressor(breaks, width=1.0)
    t = np.linspace(0, max(s.end_us for s in segs), 2001)
    v = comp.forward(t)
    assert np.all(np.diff(v) > 0)
    np.testing.assert_allclose(comp.inverse(v), t, rtol=1e-9, atol=1e-9)
    for a, b in breaks:
        assert float(comp.forward(np.array(b)) - comp.forward(np.array(a))) == pytest.approx(1.0)


def test_gantt_figure_marks_the_bottleneck(middle_plan: Plan) -> None:
    fig = gantt_figure(middle_plan, 4)
    ax = fig.axes[0]
    red = {lab.get_text() for lab in ax.get_yticklabels() if to_hex(lab.get_color()) == COLORS["bottleneck"].lower()}
    assert red == {t.label for t in board_timings(middle_plan)[middle_plan.metrics.bottleneck_stage]} == {"stage 1"}
    assert [lab.get_text() for lab in ax.get_yticklabels()] == gantt_rows(middle_plan)
    assert any("bottleneck: stage 1" in t.get_text() for t in ax.get_legend().get_texts())
    assert figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- resources


def test_resource_bars_are_the_plans_utilisation(any_plan: Plan) -> None:
    bars = resource_bars(any_plan)
    assert len(bars) == any_plan.n_boards
    by_stage = defaultdict(list)
    for b in bars:
        by_stage[b.stage].append(b)
    for st in any_plan.stages:
        mine = by_stage[st.index]
        if st.split is None:
            assert len(mine) == 1 and mine[0].utilization == st.utilization()
        else:
            assert [b.utilization for b in mine] == [sh.utilization() for sh in st.shards]
        for r in RESOURCES:
            assert max(b.utilization[r] for b in mine) == pytest.approx(st.utilization()[r])
        for b in mine:
            for r in RESOURCES:
                assert b.used[r] / b.available[r] == pytest.approx(b.utilization[r])


def test_resource_levels_follow_the_cap(chain_plan: Plan) -> None:
    b = resource_bars(chain_plan)[0]
    top = max(RESOURCES, key=lambda r: b.utilization[r])
    u = b.utilization[top]
    assert b.level(top, cap=u * 2) == "ok"
    assert b.level(top, cap=u / 0.9) == "near"
    assert b.level(top, cap=u * 0.9) == "over"


def test_resource_figure_draws_the_bars_and_the_cap(middle_plan: Plan) -> None:
    fig = resource_figure(middle_plan)
    ax = fig.axes[0]
    caps = [ln for ln in ax.lines if ln.get_gid() == "cap-line"]
    assert len(caps) == 1
    assert list(caps[0].get_ydata()) == pytest.approx([middle_plan.cap * 100] * 2)
    assert middle_plan.cap == 0.7
    bars = resource_bars(middle_plan)
    assert len(ax.containers) == len(RESOURCES)
    for r, cont in zip(RESOURCES, ax.containers, strict=True):
        assert cont.get_label() == {"lut": "LUT", "ff": "FF", "dsp": "DSP", "bram18": "BRAM18"}[r]
        heights = [p.get_height() for p in cont.patches]
        assert heights == pytest.approx([b.utilization[r] * 100 for b in bars])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [f"{b.label}\n{b.board}" for b in bars]
    assert "zcu102" in labels[1]


# ----------------------------------------------------------------------------- diagram


def test_diagram_boxes_and_wires_are_the_plans(any_plan: Plan) -> None:
    boxes, edges = diagram_layout(any_plan)
    assert len(boxes) == any_plan.n_boards + 2
    bott = any_plan.metrics.bottleneck_stage
    assert {b.key for b in boxes if b.bottleneck} == {
        f"s{bott}" if any_plan.stages[bott].split is None else f"s{bott}.{sh.part}"
        for sh in (any_plan.stages[bott].shards or [None])}
    into = defaultdict(list)
    for e in edges:
        into[e.dst].append(e)
    first, last = any_plan.stages[0], any_plan.stages[-1]
    src_edges = [e for e in edges if e.src == "source"]
    # the source sends the model input: whole (neuron split, one board) or sliced (input split)
    assert sum(math.prod(e.wire.shape) for e in src_edges) == (
        math.prod(first.input.shape) * (1 if first.split is None or first.split.kind == "input" else first.split.parts))
    assert all(e.wire.type == first.input.type for e in src_edges)
    sink_edges = into["sink"]
    assert sum(math.prod(e.wire.shape) for e in sink_edges) == math.prod(last.output.shape)
    for st in any_plan.stages[1:]:
        keys = [f"s{st.index}"] if st.split is None else [f"s{st.index}.{sh.part}" for sh in st.shards]
        for k in keys:
            got = into[k]
            assert got, k
            prev = any_plan.stages[st.index - 1]
            assert {e.wire.type for e in got} == {prev.output.type}
            if st.split is None:
                # a stage receives the previous stage's whole output (from one board or all shards)
                assert sum(e.bytes_per_sample for e in got) == prev.output.bytes_per_sample


def test_diagram_input_split_slices(input_split_plan: Plan) -> None:
    _, edges = diagram_layout(input_split_plan)
    src = [e for e in edges if e.src == "source"]
    assert [e.wire.shape for e in src] == [(392,), (392,)]
    assert [e.bytes_per_sample for e in src] == [784, 784]
    # partial sums travel at the accumulator width plus a guard bit, not the result type
    into1 = [e for e in edges if e.dst == "s1"]
    assert len(into1) == 2 and all(e.wire.type.width == 17 for e in into1)


def test_diagram_figure_draws_every_box(any_plan: Plan) -> None:
    fig = diagram_figure(any_plan)
    boxes, _ = diagram_layout(any_plan)
    drawn = [p for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch)]
    assert len(drawn) == len(boxes)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {b.title for b in boxes} <= texts
    assert "bottleneck" in texts


def test_long_pipelines_wrap_into_rows() -> None:
    g = mlp([256, 128, 128, 64, 64, 64, 32, 32, 10])
    p = plan_of(g, [{"layers": [f"fc{i}"]} for i in range(1, 8)] + [{"layers": ["fc8", "softmax"]}])
    fig = diagram_figure(p, max_width_in=12.0)
    w, h = fig.get_size_inches()
    assert w <= 12.0 + 1.5  # only the narrow sink may overhang
    assert h > 3.0  # more than one row
    assert len([x for x in fig.axes[0].patches if isinstance(x, FancyBboxPatch)]) == p.n_boards + 2
