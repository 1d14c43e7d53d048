"""matplotlib figures of a plan: the board diagram, per-board resource bars, the pipeline timeline.

The figures are drawn with matplotlib's object API (:class:`matplotlib.figure.Figure` rendered by
the Agg canvas): no display, no pyplot state. Their numbers come from the plain functions of
:mod:`.diagram`, :mod:`.resources` and :mod:`.timing`, so a test can check those instead of
pixels. Sizes are in inches; :func:`figure_png` renders at ``dpi`` pixels per inch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle
from matplotlib.path import Path as MplPath
from matplotlib.textpath import TextToPath
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

from ..boards import RESOURCES
from ..plan.planfile import Plan
from .diagram import SINK, SOURCE, DiagramBox, DiagramEdge, diagram_layout, wire_label
from .resources import RESOURCE_LABELS, resource_bars
from .timing import COMPUTE, LINK, SEND, GanttSegment, board_timings, gantt_rows, gantt_segments

#: Colours shared by the figures and the HTML page.
COLORS = {
    "compute": "#4C72B0",
    "send": "#DD8452",
    "link": "#9AA5B1",
    "bottleneck": "#C44E52",
    "box": "#EEF3FA",
    "box_edge": "#4C72B0",
    "io_box": "#F3F3F3",
    "io_edge": "#8C8C8C",
    "text": "#222222",
    "muted": "#666666",
    "near": "#B8860B",
    "over": "#C44E52",
    "cap": "#C44E52",
}
RESOURCE_COLORS = {"lut": "#4C72B0", "ff": "#55A868", "dsp": "#8172B3", "bram18": "#CCB974"}
LEVEL_COLORS = {"ok": COLORS["muted"], "near": COLORS["near"], "over": COLORS["over"]}


def figure_png(fig: Figure, dpi: int = 150) -> bytes:
    """The figure as PNG bytes (``dpi`` pixels per inch of the figure's size)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


# ----------------------------------------------------------------------------- board diagram
_TTP = TextToPath()
FS_TITLE = 10.5
FS_LINE = 9.5
FS_LABEL = 9.0


def _text_width_in(text: str, size: float, bold: bool = False) -> float:
    """Width of ``text`` set in matplotlib's default font at ``size`` points, in inches."""
    prop = FontProperties(size=size, weight="bold" if bold else "normal")
    w, _, _ = _TTP.get_text_width_height_descent(text, prop, ismath=False)
    return float(w) / 72.0


@dataclass(frozen=True)
class _Placed:
    box: DiagramBox
    x: float  # left, inches
    y: float  # bottom, inches
    w: float
    h: float
    row: int
    direction: int  # +1: the row flows left to right, -1: right to left

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def out_x(self) -> float:
        return self.x + self.w if self.direction > 0 else self.x

    @property
    def in_x(self) -> float:
        return self.x if self.direction > 0 else self.x + self.w


_PAD_X, _PAD_Y, _LINE_H, _TITLE_H = 0.12, 0.09, FS_LINE * 1.45 / 72, FS_TITLE * 1.6 / 72
_LANE_GAP, _ROW_GAP, _TAG_H, _MARGIN, _BUS = 0.22, 0.62, 0.2, 0.45, 0.22


def _box_size(box: DiagramBox) -> tuple[float, float]:
    w = max([_text_width_in(box.title, FS_TITLE, bold=True)] + [_text_width_in(s, FS_LINE) for s in box.lines])
    return w + 2 * _PAD_X, 2 * _PAD_Y + _TITLE_H + len(box.lines) * _LINE_H


def _gap_labels(edges: Sequence[DiagramEdge]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for e in edges:
        lab = wire_label(e.wire)
        if lab not in seen:
            seen.append(lab)
    return seen


def diagram_figure(plan: Plan, max_width_in: float = 14.0) -> Figure:
    """The board diagram: source, one box per board (a split step's shards stacked in a column),
    sink; arrows labelled with the wire type, shape and bytes per sample. The bottleneck step's
    boxes are outlined in red. Wide pipelines wrap into rows that snake left and right."""
    boxes, edges = diagram_layout(plan)
    n_cols = plan.n_stages + 2
    cols: list[list[DiagramBox]] = [[] for _ in range(n_cols)]
    for b in boxes:
        cols[b.column].append(b)
    sizes = {b.key: _box_size(b) for b in boxes}
    col_w = [max(sizes[b.key][0] for b in c) for c in cols]
    col_h = [sum(sizes[b.key][1] for b in c) + _LANE_GAP * (len(c) - 1) for c in cols]
    col_of = {b.key: b.column for b in boxes}
    gap_edges: list[list[DiagramEdge]] = [[] for _ in range(n_cols - 1)]
    for e in edges:
        gap_edges[col_of[e.src]].append(e)
    gap_w = []
    for ge in gap_edges:
        labs = _gap_labels(ge)
        widest = max(max(_text_width_in(a, FS_LABEL), _text_width_in(b, FS_LABEL)) for a, b in labs)
        gap_w.append(max(0.75, widest + 0.25))

    # snake the columns into rows no wider than max_width_in
    left_edge, right_edge = _MARGIN + _BUS, max(max_width_in - _MARGIN - _BUS, _MARGIN + _BUS + max(col_w))
    row_of, x_of, dir_of = [0] * n_cols, [0.0] * n_cols, [1] * n_cols
    row, direction, cursor = 0, 1, left_edge
    for c in range(n_cols):
        if c > 0:
            nxt = cursor + gap_w[c - 1] if direction > 0 else cursor - gap_w[c - 1]
            slack = col_w[c] if c == n_cols - 1 else 0.0  # the narrow sink may overhang rather than wrap alone
            fits = nxt + col_w[c] <= right_edge + slack if direction > 0 else nxt - col_w[c] >= left_edge - slack
            if fits:
                cursor = nxt
            else:  # next row, stacked under the previous column, flowing the other way
                row += 1
                direction = -direction
                cursor = x_of[c - 1] + col_w[c - 1] if direction < 0 else x_of[c - 1]
        row_of[c], dir_of[c] = row, direction
        if direction > 0:
            x_of[c] = cursor
            cursor = cursor + col_w[c]
        else:
            x_of[c] = cursor - col_w[c]
            cursor = x_of[c]
    n_rows = row + 1
    row_h = [max(col_h[c] for c in range(n_cols) if row_of[c] == r) + _TAG_H for r in range(n_rows)]
    height = 2 * 0.25 + sum(row_h) + _ROW_GAP * (n_rows - 1)
    width = max(x_of[c] + col_w[c] for c in range(n_cols)) + _BUS + _MARGIN
    if n_rows == 1:  # no bus to draw: drop the space kept for it on both sides
        x_of = [x - _BUS for x in x_of]
        width -= 2 * _BUS
    row_cy = []
    top = height - 0.25
    for r in range(n_rows):
        row_cy.append(top - _TAG_H - (row_h[r] - _TAG_H) / 2)
        top -= row_h[r] + _ROW_GAP

    placed: dict[str, _Placed] = {}
    for c, col in enumerate(cols):
        y = row_cy[row_of[c]] + col_h[c] / 2
        for b in sorted(col, key=lambda b: b.lane):
            w, h = col_w[c], sizes[b.key][1]
            y -= h
            placed[b.key] = _Placed(b, x_of[c], y, w, h, row_of[c], dir_of[c])
            y -= _LANE_GAP

    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    for p in placed.values():
        io = p.box.key in (SOURCE, SINK)
        bott = p.box.bottleneck
        edge = COLORS["bottleneck"] if bott else (COLORS["io_edge"] if io else COLORS["box_edge"])
        ax.add_patch(FancyBboxPatch((p.x, p.y), p.w, p.h, boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor=COLORS["io_box"] if io else COLORS["box"], edgecolor=edge,
                                    linewidth=2.4 if bott else 1.2, zorder=2))
        ty = p.y + p.h - _PAD_Y - _TITLE_H / 2
        ax.text(p.x + _PAD_X, ty, p.box.title, fontsize=FS_TITLE, fontweight="bold", va="center", ha="left",
                color=COLORS["text"], zorder=3)
        for i, line in enumerate(p.box.lines):
            ax.text(p.x + _PAD_X, ty - _TITLE_H / 2 - (i + 0.55) * _LINE_H, line, fontsize=FS_LINE, va="center",
                    ha="left", color=COLORS["text"] if i < len(p.box.lines) - 2 or io else COLORS["muted"],
                    zorder=3)
        if bott and p.box.lane == 0:
            ax.text(p.x + 0.02, p.y + p.h + 0.05, "bottleneck", fontsize=7.5, fontweight="bold", color="white",
                    va="bottom", ha="left", zorder=4,
                    bbox={"boxstyle": "round,pad=0.22", "facecolor": COLORS["bottleneck"], "edgecolor": "none"})

    arrow = {"arrowstyle": "-|>", "mutation_scale": 11, "color": "#555555", "linewidth": 1.1, "zorder": 1}
    label_box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.9}
    for c, ge in enumerate(gap_edges):
        labs = _gap_labels(ge)
        text = "\n".join(f"{a}\n{b}" for a, b in labs)
        if row_of[c] == row_of[c + 1]:
            for e in ge:
                a, b = placed[e.src], placed[e.dst]
                ax.add_patch(FancyArrowPatch((a.out_x, a.cy), (b.in_x, b.cy), shrinkA=0, shrinkB=1, **arrow))
            out_x = x_of[c] + col_w[c] if dir_of[c] > 0 else x_of[c]
            in_x = x_of[c + 1] if dir_of[c] > 0 else x_of[c + 1] + col_w[c + 1]
            ax.text((out_x + in_x) / 2, row_cy[row_of[c]] + 0.07, text, fontsize=FS_LABEL, ha="center", va="bottom",
                    color=COLORS["text"], linespacing=1.25, bbox=label_box, zorder=3)
        else:  # down to the next row along a bus on the outer side
            d = dir_of[c]
            bus = (max(x_of[c] + col_w[c], x_of[c + 1] + col_w[c + 1]) + _BUS if d > 0
                   else min(x_of[c], x_of[c + 1]) - _BUS)
            for e in ge:
                a, b = placed[e.src], placed[e.dst]
                path = MplPath([(a.out_x, a.cy), (bus, a.cy), (bus, b.cy), (b.in_x, b.cy)])
                ax.add_patch(FancyArrowPatch(path=path, shrinkA=0, shrinkB=1, **arrow))
            gap_mid = (row_cy[row_of[c]] - (col_h[c] / 2) + row_cy[row_of[c + 1]] + col_h[c + 1] / 2) / 2
            ax.text(bus - 0.1 * d, gap_mid, text, fontsize=FS_LABEL, ha="right" if d > 0 else "left", va="center",
                    color=COLORS["text"], linespacing=1.25, bbox=label_box, zorder=3)
    return fig


# ----------------------------------------------------------------------------- resource bars
def resource_figure(plan: Plan) -> Figure:
    """Per-board utilisation of LUT, FF, DSP and BRAM18 (% of the board), with the cap as a dashed line.

    The bars are :func:`~.resources.resource_bars` (one group per physical board); a value label
    turns amber above 80 % of the cap and red above the cap, as in the terminal.
    """
    bars = resource_bars(plan)
    n = len(bars)
    width = min(18.0, max(9.5, 1.05 * n + 2.0))
    height, left, right, bottom, top = 3.5, 0.75, 0.2, 0.62, 0.45
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, 1 - (left + right) / width, 1 - (bottom + top) / height))
    bw = 0.19
    offs = {r: (i - 1.5) * bw for i, r in enumerate(RESOURCES)}
    top = max([plan.cap * 100] + [b.utilization[r] * 100 for b in bars for r in RESOURCES])
    for r in RESOURCES:
        xs = [i + offs[r] for i in range(n)]
        hs = [b.utilization[r] * 100 for b in bars]
        ax.bar(xs, hs, width=bw * 0.92, color=RESOURCE_COLORS[r], label=RESOURCE_LABELS[r], zorder=2, gid=f"bar-{r}")
        if n <= 16:
            for x, h, b in zip(xs, hs, bars, strict=True):
                lvl = b.level(r, plan.cap)
                ax.text(x, h + top * 0.015, f"{h:.0f}", ha="center", va="bottom", fontsize=7,
                        color=LEVEL_COLORS[lvl], fontweight="bold" if lvl != "ok" else "normal")
    ax.axhline(plan.cap * 100, color=COLORS["cap"], linestyle="--", linewidth=1.4, zorder=3, gid="cap-line",
               label=f"cap {plan.cap:.0%}")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, max(100.0, top * 1.12))
    ax.set_xticks(range(n))
    bott = plan.metrics.bottleneck_stage
    ax.set_xticklabels([f"{b.label}\n{b.board}" for b in bars], fontsize=8)
    for lab, b in zip(ax.get_xticklabels(), bars, strict=True):
        if b.stage == bott:
            lab.set_color(COLORS["bottleneck"])
            lab.set_fontweight("bold")
    ax.set_ylabel("% of the board", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", color="#E5E5E5", zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=5, fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------- pipeline timeline
def time_breaks(segments: Sequence[GanttSegment], n_stages: int) -> list[tuple[float, float]]:
    """Stretches of the timeline (start, end in µs) in which no board works and samples are only in
    flight on links, long enough to be drawn compressed (longer than 1.5 x the longest busy stretch).

    Busy stretches are the boards' compute and send segments, the source's sending window and the
    sink's receiving window.
    """
    spans = [(s.start_us, s.end_us) for s in segments if s.kind in (COMPUTE, SEND)]
    sent = [s.start_us for s in segments if s.stage == -1]
    last = [s.end_us for s in segments if s.kind == LINK and s.stage == n_stages - 1]
    spans.append((min(sent), max(sent)))
    if last:
        spans.append((min(last), max(last)))
    spans.sort()
    clusters: list[list[float]] = []
    for a, b in spans:
        if clusters and a <= clusters[-1][1] + 1e-9:
            clusters[-1][1] = max(clusters[-1][1], b)
        else:
            clusters.append([a, b])
    longest = max(b - a for a, b in clusters)
    scale = longest if longest > 0 else max(1e-3, (clusters[-1][1] - clusters[0][0]) / 50)
    gaps = [(clusters[i][1], clusters[i + 1][0]) for i in range(len(clusters) - 1)]
    return [(a, b) for a, b in gaps if b - a > 1.5 * scale]


class _Compressor:
    """A piecewise-linear time axis: each break (a, b) is drawn ``width`` long."""

    def __init__(self, breaks: Sequence[tuple[float, float]], width: float) -> None:
        real, vis, shift = [0.0], [0.0], 0.0
        for a, b in breaks:
            real += [a, b]
            vis += [a - shift, a - shift + width]
            shift += (b - a) - width
        self.real = np.array(real)
        self.vis = np.array(vis)

    def forward(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        inner = np.interp(t, self.real, self.vis)
        return np.where(t > self.real[-1], self.vis[-1] + (t - self.real[-1]),
                        np.where(t < self.real[0], self.vis[0] + (t - self.real[0]), inner))

    def inverse(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        inner = np.interp(v, self.vis, self.real)
        return np.where(v > self.vis[-1], self.real[-1] + (v - self.vis[-1]),
                        np.where(v < self.vis[0], self.real[0] + (v - self.vis[0]), inner))


def gantt_figure(plan: Plan, n_samples: int = 6) -> Figure:
    """The pipeline timeline of ``n_samples`` samples (:func:`~.timing.gantt_segments`).

    One row per board (compute, then send) and per link (samples in flight, one thin lane per
    sample). The bottleneck step's rows are marked in red: at the steady-state rate they never
    idle. Long stretches where every sample is only in flight are drawn compressed (grey bands,
    labelled with their real length), so that microsecond-scale work and hundred-microsecond hops
    fit one axis.
    """
    segs = gantt_segments(plan, n_samples)
    rows = gantt_rows(plan)
    y_of = {r: -i for i, r in enumerate(rows)}
    bott = plan.metrics.bottleneck_stage
    bott_rows = {b.label for b in board_timings(plan)[bott]}
    breaks = time_breaks(segs, plan.n_stages)
    t_end = max(s.end_us for s in segs)
    active = t_end - sum(b - a for a, b in breaks)
    comp = _Compressor(breaks, width=max(active, 1e-9) * 0.08)

    width, height = 12.5, 1.2 + 0.34 * len(rows)
    left, right, bottom, top = 1.45, 0.25, 0.6, 0.55
    ax = (fig := Figure(figsize=(width, height))).add_axes(
        (left / width, bottom / height, 1 - (left + right) / width, 1 - (bottom + top) / height))
    ax.set_xscale("function", functions=(comp.forward, comp.inverse))
    colors = {COMPUTE: COLORS["compute"], SEND: COLORS["send"], LINK: COLORS["link"]}
    for r in bott_rows:
        ax.axhspan(y_of[r] - 0.5, y_of[r] + 0.5, color=COLORS["bottleneck"], alpha=0.08, zorder=0, linewidth=0)
    x0, x1 = comp.forward(np.array([0.0, t_end]))
    in_per_vis = (width - left - right) / max(x1 - x0, 1e-12)  # inches per unit of the compressed axis

    def drawn_width_in(seg: GanttSegment) -> float:
        a, b = comp.forward(np.array([seg.start_us, seg.end_us]))
        return float(b - a) * in_per_vis

    for s in segs:
        y = y_of[s.row]
        if s.kind == LINK:
            lane = 0.72 / n_samples
            y0 = y + 0.36 - (s.sample + 1) * lane
            ax.add_patch(Rectangle((s.start_us, y0 + lane * 0.12), s.duration_us, lane * 0.76,
                                   facecolor=colors[LINK], edgecolor="none", alpha=0.85, zorder=2))
        elif drawn_width_in(s) >= 0.03:
            ax.add_patch(Rectangle((s.start_us, y - 0.3), s.duration_us, 0.6, facecolor=colors[s.kind],
                                   edgecolor="white", linewidth=0.6, zorder=2))
        else:  # too thin to see as a bar: a line of at least one pixel
            ax.vlines((s.start_us + s.end_us) / 2, y - 0.3, y + 0.3, colors=colors[s.kind], linewidth=1.3, zorder=2)
    # sample numbers on compute bars wide enough to hold them
    for s in segs:
        if s.kind == COMPUTE:
            a, b = comp.forward(np.array([s.start_us, s.end_us]))
            if (b - a) * in_per_vis >= 0.16:
                ax.text(float(comp.inverse(np.array((a + b) / 2))), y_of[s.row], str(s.sample), ha="center",
                        va="center", fontsize=7, color="white", zorder=3)
    for a, b in breaks:
        ax.axvspan(a, b, color="#DDDDDD", alpha=0.6, zorder=1, linewidth=0)
        mid = float(comp.inverse(np.array((comp.forward(np.array(a)) + comp.forward(np.array(b))) / 2)))
        ax.text(mid, 0.62, f"+{b - a:,.0f} µs", ha="center", va="bottom", fontsize=7, color=COLORS["muted"],
                zorder=3, rotation=0)
    ax.set_ylim(-len(rows) + 0.5, 0.95)
    ax.set_xlim(0, t_end)
    ax.set_yticks([y_of[r] for r in rows])
    ax.set_yticklabels(rows, fontsize=8.5)
    for lab, r in zip(ax.get_yticklabels(), rows, strict=True):
        if r in bott_rows:
            lab.set_color(COLORS["bottleneck"])
            lab.set_fontweight("bold")
        elif "→" in r:
            lab.set_color(COLORS["muted"])
    ticks: list[float] = []
    edges = [0.0, *[v for ab in breaks for v in ab], t_end]
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        share = float(comp.forward(np.array(b)) - comp.forward(np.array(a))) / max(float(x1 - x0), 1e-12)
        vals = MaxNLocator(nbins=max(1, round(8 * share)), steps=[1, 2, 2.5, 5, 10]).tick_values(a, b)
        ticks.extend(float(v) for v in vals if a - 1e-9 <= v <= b + 1e-9)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(ticks))))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.4g}"))
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(f"µs after the source sent sample 0 (one sample every {plan.metrics.bottleneck_us:,.3g} µs, "
                  "the bottleneck interval)", fontsize=8.5)
    ax.spines[["top", "right"]].set_visible(False)
    handles = [Patch(color=COLORS["compute"], label="fabric (wrapper I/O included)"),
               Patch(color=COLORS["send"], label="rest of the interval (links, per-frame cost)"),
               Patch(color=COLORS["link"], label="in flight (per-frame cost, pipeline depth)"),
               Patch(color=COLORS["bottleneck"], alpha=0.25, label=f"bottleneck: stage {bott}")]
    if breaks:
        handles.append(Patch(color="#DDDDDD", label="compressed time"))
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(handles), fontsize=8,
              frameon=False)
    return fig
