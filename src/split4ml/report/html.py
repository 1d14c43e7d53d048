"""The self-contained HTML report: one file, figures embedded as base64 PNG, inline CSS.

The page loads nothing: a Content-Security-Policy allows only ``data:`` images, the inline style
and one inline script. The script records, after load, how many images the page has and how many
decoded (``<body data-images="N" data-images-loaded="M">``), so a headless browser can check the
page (see :mod:`split4ml.report.browser`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..boards import RESOURCES, Board
from ..ir import Graph
from ..plan.metrics import FRAME_OVERHEAD_BYTES
from ..plan.planfile import Plan, Wire
from .figures import COLORS
from .resources import RESOURCE_LABELS, resource_bars
from .timing import board_timings, input_bytes_sent, input_hop_us


@dataclass(frozen=True)
class ReportFigure:
    """A rendered figure: ``name`` (file stem, e.g. ``timeline``), its title, PNG bytes and size in inches."""

    name: str
    title: str
    png: bytes
    width_in: float
    height_in: float


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

CSS = """
:root { --ink: #222; --muted: #666; --line: #e3e6ea; --accent: #4C72B0; --bad: #C44E52; --good: #2E7D32;
        --warn: #B8860B; --card: #f7f9fc; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 40px; }
header h1 { margin: 0 0 2px; font-size: 26px; }
header .sub { color: var(--muted); margin: 0; font-size: 14px; }
header .brand { color: var(--accent); font-weight: 600; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin: 20px 0 6px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 21px; font-weight: 600; white-space: nowrap; }
.card .d { color: var(--muted); font-size: 12.5px; }
.card.bad .v { color: var(--bad); } .card.good .v { color: var(--good); }
figure { margin: 6px 0 4px; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; margin: 6px 0 10px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: #f3f5f8; font-weight: 600; }
th.l, td.l { text-align: left; }
tr.bott td { background: #fbeeee; }
.ok { color: var(--ink); } .near { color: var(--warn); font-weight: 600; } .over { color: var(--bad); font-weight: 700; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; color: #fff; font-weight: 600; font-size: 13px; }
.badge.good { background: var(--good); } .badge.bad { background: var(--bad); }
.formula { background: #f7f7f9; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px;
           font: 13px/1.6 "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: pre-wrap; }
.meter { display: inline-block; width: 90px; height: 9px; background: #eceff3; border-radius: 5px;
         vertical-align: middle; margin-right: 6px; overflow: hidden; }
.meter > span { display: block; height: 100%; background: var(--accent); }
.note { color: var(--muted); font-size: 13px; }
code { font: 13px "DejaVu Sans Mono", Menlo, Consolas, monospace; background: #f3f4f6; padding: 0 3px;
       border-radius: 3px; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 36px; border-top: 1px solid var(--line);
         padding-top: 10px; }
"""

# Records whether every image decoded; a headless browser reads it back from the DOM.
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float, digits: int = 3) -> str:
    """A number with thousands separators and about ``digits`` significant digits."""
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:,.{digits}g}"


def _table(head: Sequence[str] | None, rows: Sequence[Sequence[Any]], align: str = "l",
           row_class: Sequence[str] | None = None) -> str:
    """An HTML table (no header row when ``head`` is None). ``align`` gives each column's alignment,
    ``l`` or ``r`` (the last letter repeats). Cells are escaped unless they are :class:`_Raw`."""
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="l"' if (align[i] if i < len(align) else align[-1]) == "l" else ""
        return f"<{tag}{cls}>{v.html if isinstance(v, _Raw) else _e(v)}</{tag}>"

    out = ['<div class="scroll"><table>']
    if head is not None:
        out += ["<thead><tr>", *(cell("th", i, h) for i, h in enumerate(head)), "</tr></thead>"]
    out.append("<tbody>")
    for j, r in enumerate(rows):
        cls = f' class="{row_class[j]}"' if row_class and row_class[j] else ""
        out.append(f"<tr{cls}>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


@dataclass(frozen=True)
class _Raw:
    html: str


def _figure(fig: ReportFigure, caption: str) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure id="fig-{_e(fig.name)}"><img src="data:image/png;base64,{data}" alt="{_e(fig.title)}" '
            f'width="{round(fig.width_in * 96)}" height="{round(fig.height_in * 96)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _card(key: str, value: str, detail: str = "", cls: str = "") -> str:
    return (f'<div class="card {cls}"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div>'
            f'<div class="d">{_e(detail)}</div></div>')


def _plan_boards(plan: Plan) -> list[Board]:
    seen: dict[str, Board] = {}
    for st in plan.stages:
        for b in [sh.board for sh in st.shards] if st.split is not None else [st.board]:
            seen.setdefault(b.name, b)
    return list(seen.values())


def _stage_of_layers(plan: Plan) -> dict[str, str]:
    out: dict[str, str] = {}
    for st in plan.stages:
        for n in st.layers:
            out[n] = (f"stage {st.index} ({st.split.kind} split × {st.split.parts})" if st.split is not None
                      else f"stage {st.index}")
    for st in plan.stages:  # a layer after a split (e.g. softmax) runs on the board that merges it
        for n in st.tail:
            if n in out:
                out[n] = f"stage {st.index} (after the merge)"
    return out


# ----------------------------------------------------------------------------- sections
def _header(plan: Plan, graph: Graph, plan_path: str | None) -> str:
    boards = ", ".join(sorted({b.name for b in _plan_boards(plan)}))
    src = f"plan <code>{_e(plan_path)}</code> · " if plan_path else ""
    return (f'<header><p class="sub"><span class="brand">split4ml</span> report</p><h1>{_e(graph.name)}</h1>'
            f'<p class="sub">{src}model <code>{_e(plan.model)}</code> · {plan.n_boards} × {_e(boards)} · '
            f"objective {_e(plan.objective)} · estimator {_e(plan.estimator)} · cap {plan.cap:.0%}</p></header>")


def _cards(plan: Plan, graph: Graph, verify: Mapping[str, Any] | None, run: Mapping[str, Any] | None) -> str:
    m = plan.metrics
    shape = lambda s: "×".join(str(d) for d in s)  # noqa: E731
    cards = [
        _card("parameters", f"{graph.n_params:,}", f"{len(graph.body)} layers · in [{shape(graph.input.output_shape)}]"
              f" · out [{shape(graph.layers[-1].output_shape)}]"),
        _card("boards", f"{plan.n_boards} × {plan.board.name}", f"{plan.n_stages} pipeline stages"),
        _card("throughput", f"{m.throughput_per_s:,.0f} /s", f"model: a sample every {_num(m.bottleneck_us)} µs"),
        _card("latency", f"{_num(m.latency_us, 4)} µs", f"model: {m.latency_cycles:,.0f} cycles"),
        _card("bottleneck", f"stage {m.bottleneck_stage}", f"{m.bottleneck_ii_cycles:,.0f} cycles per sample",
              "bad"),
    ]
    if verify is not None:
        ok = bool(verify["bit_exact"])
        cards.append(_card("verify", "bit-exact" if ok else "MISMATCH",
                           f"{verify['samples']:,} samples · {verify['mismatched_samples']} mismatched",
                           "good" if ok else "bad"))
    if run is not None:
        ok = bool(run["bit_exact"]) and run["delivered"] == run["samples"]
        cards.append(_card("run", f"{run['throughput_per_s']:,.0f} /s",
                           f"measured · {run['delivered']:,}/{run['samples']:,} delivered · "
                           f"{'bit-exact' if ok else 'NOT bit-exact'}", "good" if ok else "bad"))
    return f'<section class="cards">{"".join(cards)}</section>'


def _boards_section(plan: Plan, fig: ReportFigure) -> str:
    cap = ("Boxes are boards with the layers they run (reuse factor, strategy), their fullest resource and "
           "their interval; a split layer's shards are stacked boxes running in parallel. Arrows carry the "
           "fixed-point values of the upstream result type, with shape and bytes per sample. "
           f"The bottleneck (stage {plan.metrics.bottleneck_stage}) is outlined in red.")
    def wire(w: Wire) -> _Raw:
        return _Raw(f"<code>{_e(w.type)}</code> [{'×'.join(map(str, w.shape))}] · {w.bytes_per_sample:,} B")

    rows = []
    for st in plan.stages:
        kind = f"{st.split.kind} split × {st.split.parts}" if st.split is not None else ""
        merge = f"merge of {st.merge}: {', '.join(st.tail)}" if st.merge else ""
        rows.append([f"stage {st.index}", f"{st.n_boards} × {st.board.name}", ", ".join(st.layers) or "–",
                     "; ".join(x for x in (kind, merge) if x) or "–", wire(st.input), wire(st.output)])
    table = _table(["stage", "boards", "layers", "split / merge", "input per sample", "output per sample"], rows)
    return f'<section id="boards"><h2>Boards and wires</h2>{_figure(fig, cap)}{table}</section>'


def _resources_section(plan: Plan, fig: ReportFigure) -> str:
    bars = resource_bars(plan)
    rows, classes = [], []
    for b in bars:
        cells: list[Any] = [b.label, b.board]
        for r in RESOURCES:
            lvl = b.level(r, plan.cap)
            cells.append(_Raw(f'<span class="{lvl}">{b.utilization[r]:.1%}</span> '
                              f'<span class="note">{b.used[r]:,.0f} / {b.available[r]:,}</span>'))
        rows.append(cells)
        classes.append("bott" if b.stage == plan.metrics.bottleneck_stage else "")
    table = _table(["board", "type", *(RESOURCE_LABELS[r] for r in RESOURCES)], rows, "llr", row_class=classes)
    cap = (f"Estimated use of each board ({_e(plan.estimator)} estimator, the board's shell included) as a "
           f"share of the device; the dashed line is the {plan.cap:.0%} cap every resource must stay under. "
           "Values turn amber above 80 % of the cap and red above it.")
    return f'<section id="resources"><h2>Resources per board</h2>{_figure(fig, cap)}{table}</section>'


def _timeline_section(plan: Plan, fig: ReportFigure, n_samples: int) -> str:
    m = plan.metrics
    cap = (f"{n_samples} samples through the pipeline, the source sending one every {_num(m.bottleneck_us)} µs "
           f"(the bottleneck interval, the steady-state rate). Each board holds a sample for one interval: its "
           "fabric (blue, the wrapper's reads and writes included), then what its links or per-frame cost add "
           "(orange); grey lanes are frames in flight to the next board (per-frame cost, pipeline depth). "
           + (f"The bottleneck, stage {m.bottleneck_stage}, never idles"
              if m.bottleneck == "stage" else f"The host's {m.bottleneck} link paces the pipeline: every board idles")
           + "; grey bands are stretches where every sample is in flight, drawn compressed and labelled with "
           "their real length.")
    return f'<section id="timeline"><h2>Pipeline timeline</h2>{_figure(fig, cap)}</section>'


def _model_section(plan: Plan) -> str:
    m = plan.metrics
    boards = _plan_boards(plan)
    assumptions = _table(
        ["board", "part", "fabric clock", "link", "bandwidth", "per-frame cost"],
        [[b.name, b.part, f"{b.clock_mhz:g} MHz", b.link.medium or "–", f"{b.link.bandwidth_mbps:,g} Mb/s",
          f"{b.link.latency_us:g} µs"] for b in boards], "llrlr")
    timings = board_timings(plan)
    rows, classes = [], []
    for tms in timings:
        for t in tms:
            bd = t.bounds_us
            rows.append([t.label, t.board.name, f"{t.load.n_in:,.0f}", f"{t.cost.latency_cycles:,.0f}",
                         f"{t.load.n_out:,.0f}", _num(bd["fabric"]), _num(bd["recv"]), f"{t.bytes_sent:,.0f}",
                         _num(bd["send"]), _num(bd["frame"]), _num(t.interval_us), _num(t.latency_us)])
            classes.append("bott" if t.stage == m.bottleneck_stage and m.bottleneck == "stage" else "")
    per_board = _table(["board", "type", "values in", "latency (cycles)", "values out", "fabric (µs)", "receive (µs)",
                        "bytes sent", "send (µs)", "per-frame (µs)", "interval (µs)", "frame latency (µs)"], rows,
                       "llr", row_class=classes)
    hop_in = input_hop_us(plan)
    lat_terms = " + ".join(_num(x, 4) for x in (hop_in, *m.stage_latency_us))
    where = {"stage": f"stage {m.bottleneck_stage}", "source": "the source's link", "sink": "the sink's link"}
    formula = (
        f"batch        = {m.batch} samples per frame; every frame adds {FRAME_OVERHEAD_BYTES} bytes (header, CRC)\n"
        "fabric       = (values_in + latency_cycles + values_out) / clock_MHz   (io_parallel AXI wrapper: read, run,"
        " write)\n"
        "link(b, f)   = (b + f × overhead / batch) × 8 / bandwidth_Mbps           (receive and send overlap the fabric)\n"
        "interval_us  = max(fabric, link(received), link(sent), per-frame cost / batch)   (a split step: its slowest"
        " board)\n"
        f"bottleneck   = max(source, stages, sink) = {_num(m.bottleneck_us)} µs  ({where[m.bottleneck]}); fabric bound "
        f"{_num(m.fabric_bound_us)}, link bound {_num(m.link_bound_us)}, per-frame bound {_num(m.frame_bound_us)}\n"
        f"throughput   = 10^6 / bottleneck = {m.throughput_per_s:,.0f} samples/s\n"
        "latency_us   = source frame + Σ stages (per-frame cost + ((batch − 1) × fabric + fabric latency) + frame on "
        "the link)\n"
        f"             = {lat_terms} = {_num(m.latency_us, 5)} µs\n"
        f"cycles       = µs × {plan.stages[0].board.clock_mhz:g} MHz (the first board's clock): bottleneck "
        f"{m.bottleneck_ii_cycles:,.0f}, latency {m.latency_cycles:,.0f}")
    notes = (f"The source sends {input_bytes_sent(plan):,.0f} bytes per sample to stage 0 (a frame takes "
             f"{_num(hop_in)} µs). A board (or the source) feeding a neuron split sends its output once per shard. "
             "Resources and cycles are estimates; bandwidth and per-frame cost are the board file's figures "
             "(<code>split4ml boards</code>; override them with <code>--board-file</code>). The model is "
             "<code>split4ml/plan/metrics.py</code>.")
    return (f'<section id="performance"><h2>Latency and throughput model</h2><h3>Assumptions</h3>{assumptions}'
            f'<h3>Formulas</h3><div class="formula">{_e(formula)}</div><p class="note">{notes}</p>'
            f"<h3>Per board</h3>{per_board}</section>")


def _layers_section(plan: Plan, graph: Graph) -> str:
    where = _stage_of_layers(plan)
    settings = plan.settings
    rows = []
    for lyr in graph.layers:
        s = settings.get(lyr.name)
        rows.append([lyr.name, lyr.kind, f"[{'×'.join(map(str, lyr.input_shape))}]",
                     f"[{'×'.join(map(str, lyr.output_shape))}]", lyr.activation or "", f"{lyr.n_params:,}",
                     where.get(lyr.name, "source" if lyr.kind == "Input" else "–"),
                     s.reuse_factor if s else "", s.strategy if s else "", str(s.precision.result) if s else ""])
    table = _table(["layer", "type", "input", "output", "activation", "params", "runs on", "RF", "strategy",
                    "result type"], rows, "llrrlrlrll")
    return (f'<section id="model"><h2>Model</h2><p>{_e(graph.name)}: {len(graph.body)} layers, '
            f"{graph.n_params:,} parameters; input [{'×'.join(map(str, graph.input.output_shape))}], output "
            f"[{'×'.join(map(str, graph.layers[-1].output_shape))}]. Build: {_e(plan.build.io_type)}, inputs "
            f"<code>{_e(plan.build.input_precision)}</code>.</p>{table}</section>")


def _pct(x: Any) -> str:
    return "–" if x is None else f"{float(x):.2%}"


def _verify_section(verify: Mapping[str, Any]) -> str:
    ok = bool(verify["bit_exact"])
    badge = f'<span class="badge {"good" if ok else "bad"}">{"BIT-EXACT" if ok else "MISMATCH"}</span>'
    rows = [["samples compared", f"{verify['samples']:,}"],
            ["mismatched samples", f"{verify['mismatched_samples']:,}"],
            ["max |difference|", f"{float(verify['max_abs_diff']):g}"],
            ["pipeline stages / boards", f"{verify.get('n_stages', '–')} / {verify.get('n_boards', '–')}"],
            ["accuracy, fixed point (whole-model C-sim)", _pct(verify.get("fixed_accuracy"))],
            ["accuracy, float (the framework's model)", _pct(verify.get("float_accuracy"))]]
    ref = verify.get("reference")
    if ref:
        rows.insert(0, ["reference", f"{ref.get('converter')} of {ref.get('model')}"
                        + (f" ({ref['via']})" if ref.get("via") else "")])
    bad = verify.get("mismatched_indices") or []
    extra = (f'<p class="note">first mismatched samples: {_e(", ".join(map(str, bad[:20])))}</p>' if bad else "")
    return (f'<section id="verify"><h2>Verification {badge}</h2><p class="note">The chained per-board hls4ml '
            "C-simulations against the whole model's C-simulation (the reference: hls4ml's own conversion of the "
            "model file), value for value.</p>"
            f"{_table(None, rows, 'lr')}{extra}</section>")


def _run_section(plan: Plan, run: Mapping[str, Any]) -> str:
    m = plan.metrics
    ok = bool(run["bit_exact"]) and run["delivered"] == run["samples"]
    badge = f'<span class="badge {"good" if ok else "bad"}">{"BIT-EXACT" if ok else "NOT BIT-EXACT"}</span>'
    lat = run["latency_us"]
    rows = [["samples sent / delivered", f"{run['samples']:,} / {run['delivered']:,}"],
            ["lost / duplicated / rejected", f"{run['lost']} / {run['duplicated']} / {run['rejected']}"],
            ["restarts", str(run["restarts"])],
            ["throughput (measured / model)", f"{run['throughput_per_s']:,.0f} / {m.throughput_per_s:,.0f} samples/s"],
            ["latency p50 / p99 (measured)", f"{_num(float(lat['p50']), 4)} / {_num(float(lat['p99']), 4)} µs"],
            ["latency (model)", f"{_num(m.latency_us, 4)} µs"]]
    if run.get("reference"):
        rows.append(["checked against", str(run["reference"])])
    if run.get("batch"):
        rows.append(["samples per frame", str(run["batch"])])
    nodes = []
    for s in run["stages"]:
        frac = float(s.get("busy_fraction", 0.0))
        meter = _Raw(f'<span class="meter"><span style="width:{max(0.0, min(frac, 1.0)) * 100:.1f}%"></span></span>'
                     f"{frac:.0%}")
        nodes.append([s.get("id", "?"), s.get("driver", ""), f"{s.get('frames', 0):,}", f"{s.get('samples', 0):,}",
                      meter, s.get("rejected", ""), s.get("restarts", "")])
    node_table = _table(["node", "driver", "frames", "samples", "busy", "rejected", "restarts"], nodes, "llr")
    faults = "".join(f"<li>{_e(f)}</li>" for f in run.get("faults") or [])
    failure = run.get("failure")
    return (f'<section id="run"><h2>Run {badge}</h2><p class="note">Measured by <code>split4ml run</code>: the '
            "nodes as processes linked by ZeroMQ, every output checked against the reference. Measured figures "
            "reflect the machine that ran them (an emulated run shares its cores), not the boards.</p>"
            f"{_table(None, rows, 'lr')}<h3>Nodes</h3>{node_table}"
            + (f"<h3>Faults</h3><ul>{faults}</ul>" if faults else "")
            + (f'<p class="over">stopped: {_e(failure)}</p>' if failure else "") + "</section>")


def render_html(plan: Plan, graph: Graph, figures: Mapping[str, ReportFigure], *,
                verify: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None,
                plan_path: str | None = None, n_samples: int = 6) -> str:
    """The report page. ``figures`` holds the ``boards``, ``resources`` and ``timeline`` figures."""
    body = [
        _header(plan, graph, plan_path),
        _cards(plan, graph, verify, run),
        _boards_section(plan, figures["boards"]),
        _resources_section(plan, figures["resources"]),
        _timeline_section(plan, figures["timeline"], n_samples),
        _model_section(plan),
    ]
    if verify is not None:
        body.append(_verify_section(verify))
    if run is not None:
        body.append(_run_section(plan, run))
    body.append(_layers_section(plan, graph))
    body.append(f"<footer>Made by split4ml {_e(__version__)} (<code>split4ml report</code>). Resources and cycles "
                f"are estimates ({_e(plan.estimator)}); the figures follow the plan's performance model.</footer>")
    style = CSS.replace("#4C72B0", COLORS["compute"]).replace("#C44E52", COLORS["bottleneck"])
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>split4ml report: {_e(graph.name)}</title><style>{style}</style></head>\n"
            f"<body><main>{''.join(body)}</main><script>{CHECK_SCRIPT}</script></body></html>\n")
