"""A built plan's synthesis reports, matched to the estimator's figures, and the calibration they give.

``split4ml build PLAN -o DIR`` writes ``DIR/plan.yaml`` and one hls4ml project per board
(``DIR/stage_<i>``); after Vivado/Vitis HLS ran there, :func:`collect_reports` reads each board's
report (:func:`~split4ml.estimate.calibrate.read_hls4ml_report`) and prices the same board's layers
with the estimator, and :func:`calibrate_from_reports` fits a
:class:`~split4ml.estimate.calibrate.Calibration` from them. This reads a plan and lowers it to its
boards, so it stands above the planner; the fitting itself is in :mod:`split4ml.estimate.calibrate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Split4mlError
from .estimate.analytic import AnalyticEstimator
from .estimate.base import Cost, Estimator
from .estimate.calibrate import (
    STAGES,
    Calibration,
    ReportFigures,
    fit_calibration,
    ip_cost,
    read_hls4ml_report,
    segment_source,
)
from .lower import plan_pipeline
from .plan.api import load_plan


@dataclass(frozen=True)
class CalibrationPoint:
    """One design: the estimator's figures for its IP and its report."""

    label: str
    estimate: Cost
    report: ReportFigures
    source: str = ""


@dataclass(frozen=True)
class CollectedReports:
    """Designs matched to reports, and the project directories skipped (with why)."""

    points: tuple[CalibrationPoint, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())


def _build_dir_of(path: Path) -> tuple[Path, list[str] | None]:
    """The build directory holding ``path`` and the stage directories to read (None = all)."""
    if (path / "plan.yaml").is_file():
        return path, None
    if (path / "project.tcl").is_file() and (path.parent / "plan.yaml").is_file():
        return path.parent, [path.name]
    raise Split4mlError(f"{path} is neither a split4ml build directory (with plan.yaml) nor a stage project inside one; "
                        "calibrate reads the hls4ml projects that 'split4ml build PLAN -o DIR' wrote, after "
                        "Vivado/Vitis HLS ran in them")


def collect_reports(paths: Iterable[str | Path], estimator: Estimator) -> CollectedReports:
    """Match every stage project under ``paths`` with ``estimator``'s figures for its IP.

    Each path is a build directory (every ``stage_*`` project in it with a report is used) or one
    stage project directory inside a build directory.
    """
    wanted: dict[Path, set[str] | None] = {}
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise Split4mlError(f"{p} does not exist")
        build, names = _build_dir_of(p.resolve())
        if names is None:
            wanted[build] = None
        elif build not in wanted:
            wanted[build] = set(names)
        elif wanted[build] is not None:
            wanted[build] |= set(names)  # type: ignore[operator]
    points: list[CalibrationPoint] = []
    skipped: list[tuple[str, str]] = []
    for build, names in wanted.items():
        plan, graph = load_plan(build / "plan.yaml")
        pipeline, _ = plan_pipeline(plan, graph)
        for node in pipeline.nodes:
            st = node.stage
            if names is not None and st.name not in names:
                continue
            pdir = build / st.name
            if not pdir.is_dir():
                skipped.append((str(pdir), "no project directory"))
                continue
            try:
                rep = read_hls4ml_report(pdir)
            except Split4mlError as exc:
                skipped.append((str(pdir), str(exc)))
                continue
            layers = list(st.graph.body)
            est = ip_cost(estimator, layers, st.settings, plan.build.io_type, st.board)
            points.append(CalibrationPoint(label=str(pdir), estimate=est, report=rep,
                                           source=segment_source(estimator, layers, st.settings, plan.build.io_type,
                                                                 st.board)))
    return CollectedReports(points=tuple(points), skipped=tuple(skipped))


def calibrate_from_reports(paths: Iterable[str | Path], estimator: Estimator, stage: str = "auto",
                           mode: str = "power") -> tuple[Calibration, CollectedReports]:
    """Fit a :class:`Calibration` of ``estimator`` from the reports under ``paths``.

    ``stage="auto"`` fits Vivado synthesis figures when every design has them, else HLS ones.
    Designs the estimator priced with another estimator (rule4ml's fallback) are left out. An
    analytic calibration on HLS reports is fitted on the analytic model's ``hls`` flavour (what those
    reports count) and records ``report_model: hls``; applying it prices with that flavour.

    Raises:
        Split4mlError: no design with a report was found.
    """
    if stage not in ("auto", *STAGES):
        raise Split4mlError(f"--stage {stage!r} is not one of auto, hls, synth")
    paths = list(paths)
    got = collect_reports(paths, estimator)
    name = str(getattr(estimator, "name", "analytic"))
    usable = [p for p in got.points if p.source == name]
    skipped = list(got.skipped) + [(p.label, f"priced by the {p.source} estimator, not {name}")
                                   for p in got.points if p.source != name]
    if not usable:
        detail = "; ".join(f"{p}: {why}" for p, why in skipped[:5])
        raise Split4mlError("no synthesis report to calibrate from" + (f" ({detail})" if detail else "") +
                            "; run the vendor build (build_all.sh) in the build directory first")
    if stage == "auto":
        stage = "synth" if all(p.report.synth for p in usable) else "hls"
    report_model = "synth"
    if name == "analytic" and stage == "hls":
        # HLS reports count what the analytic model's "hls" flavour prices (see REPORT_MODELS).
        report_model = "hls"
        if getattr(estimator, "report", "synth") != "hls":
            again = {p.label: p for p in collect_reports(paths, AnalyticEstimator(report="hls")).points}
            usable = [again[p.label] for p in usable]
    cal = fit_calibration([p.estimate for p in usable], [p.report.figures(stage) for p in usable], name, stage, mode,
                          sources=[p.label for p in usable], report_model=report_model)
    return cal, CollectedReports(points=tuple(usable), skipped=tuple(skipped))
