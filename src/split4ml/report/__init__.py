"""Reports of a plan: a self-contained HTML page and PNG figures.

:func:`write_report` is what ``split4ml report`` runs. The numbers behind the figures come from
plain functions (:func:`diagram_layout`, :func:`resource_bars`, :func:`gantt_segments`), which
follow the plan and its performance model (:mod:`split4ml.plan.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..ir import Graph
from ..plan.planfile import Plan
from .diagram import DiagramBox, DiagramEdge, diagram_layout, wire_label
from .html import ReportFigure, render_html
from .inputs import read_run_json, read_verify_json
from .resources import ResourceBar, resource_bars
from .timing import BoardTiming, GanttSegment, board_timings, gantt_bottleneck, gantt_rows, gantt_segments

Progress = Callable[[str, int, int], None]

#: Step names reported to the ``progress`` callback.
STEP_FIGURES = "draw report figures"

#: The figures of a report: file stem and title.
FIGURES = (("boards", "Boards and wires"), ("resources", "Resources per board"), ("timeline", "Pipeline timeline"))


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote: the HTML file and the PNG files (``--png``)."""

    html: Path
    figures: tuple[Path, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The ``report --json`` contract: ``html`` and ``figures`` (PNG paths; keys are only added)."""
        return {"html": str(self.html), "figures": [str(p) for p in self.figures]}


def make_figures(plan: Plan, n_samples: int = 6, progress: Progress | None = None,
                 dpi: int = 150) -> dict[str, ReportFigure]:
    """Render the report's figures (board diagram, resource bars, timeline) to PNG."""
    from .figures import diagram_figure, figure_png, gantt_figure, resource_figure

    makers = {"boards": lambda: diagram_figure(plan), "resources": lambda: resource_figure(plan),
              "timeline": lambda: gantt_figure(plan, n_samples)}
    out: dict[str, ReportFigure] = {}
    for i, (name, title) in enumerate(FIGURES):
        if progress:
            progress(STEP_FIGURES, i, len(FIGURES))
        fig = makers[name]()
        w, h = fig.get_size_inches()
        out[name] = ReportFigure(name, title, figure_png(fig, dpi=dpi), float(w), float(h))
    if progress:
        progress(STEP_FIGURES, len(FIGURES), len(FIGURES))
    return out


def write_report(plan: Plan, graph: Graph, output: str | Path, *, verify: Mapping[str, Any] | None = None,
                 run: Mapping[str, Any] | None = None, png_dir: str | Path | None = None,
                 plan_path: str | None = None, n_samples: int = 6,
                 progress: Progress | None = None) -> ReportResult:
    """Write the HTML report of ``plan`` to ``output`` (and its figures as PNG files to ``png_dir``).

    ``verify`` and ``run`` are the results of ``split4ml verify --json`` and ``split4ml run --json``
    (see :func:`read_verify_json`, :func:`read_run_json`); ``n_samples`` is the number of samples
    in the timeline.
    """
    if n_samples < 1:
        raise DataError(f"the timeline needs at least one sample, got {n_samples}")
    figs = make_figures(plan, n_samples, progress)
    page = render_html(plan, graph, figs, verify=verify, run=run, plan_path=plan_path, n_samples=n_samples)
    out = Path(output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
        written: list[Path] = []
        if png_dir is not None:
            d = Path(png_dir)
            d.mkdir(parents=True, exist_ok=True)
            for name, fig in figs.items():
                p = d / f"{name}.png"
                p.write_bytes(fig.png)
                written.append(p)
    except OSError as exc:
        raise DataError(f"cannot write the report ({exc}); check the -o and --png paths") from exc
    return ReportResult(out, tuple(written))


__all__ = [
    "FIGURES",
    "BoardTiming",
    "DiagramBox",
    "DiagramEdge",
    "GanttSegment",
    "ReportFigure",
    "ReportResult",
    "ResourceBar",
    "board_timings",
    "diagram_layout",
    "gantt_bottleneck",
    "gantt_rows",
    "gantt_segments",
    "make_figures",
    "read_run_json",
    "read_verify_json",
    "render_html",
    "resource_bars",
    "wire_label",
    "write_report",
]
