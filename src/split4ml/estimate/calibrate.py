"""Calibration: correct an estimator with real synthesis reports.

The loop a user runs: ``split4ml plan``, ``split4ml build``, run Vivado/Vitis HLS in the build
directory, ``split4ml calibrate BUILD_DIR -o calib.yaml``, then ``split4ml plan --calibration
calib.yaml`` again.

**What is fitted.** For every metric (LUT, FF, DSP, BRAM18, latency and interval cycles) one
correction of the estimator's figure ``x`` for the hls4ml IP (the segment without the board shell,
which the reports do not contain): ``y = factor * x ** exponent``, fitted on log scale
(``log y = log factor + exponent * log x``):

* ``mode="scale"``: ``exponent = 1`` and ``factor`` = the median ratio report / estimate (robust to a
  few odd designs);
* ``mode="power"`` (default): least squares for the exponent, clipped to
  [:data:`MIN_EXPONENT`, :data:`MAX_EXPONENT`] so that it cannot run away outside the fitted
  range, then the median for the factor. With fewer than :data:`MIN_POINTS_POWER` designs, or
  estimates spanning less than :data:`MIN_LOG_SPREAD` on log scale, it falls back to ``scale``.

Designs where the report or the estimate is 0 cannot enter a log fit; they are counted
(``n_zero``) and a 0 estimate stays 0. A metric without any usable design is left uncorrected.
The calibration file records the estimator it was fitted for, the report stage (``hls``: the HLS
C-synthesis estimate; ``synth``: Vivado logic synthesis, preferred where every design has it),
the designs used, and the in-sample median absolute percentage error before and after.

**Which model is corrected.** HLS C-synthesis reports count logic that Vivado synthesis later
removes (the Resource kernel's accumulator select when RF > n_in, see
:data:`split4ml.estimate.analytic.HLS_ACC_SELECT_SCALE`). An analytic calibration on ``hls``
reports is therefore fitted on the analytic model's ``report="hls"`` flavour and records
``report_model: hls``; applying it prices segments with that flavour. Files without the key were
fitted on the default ``synth`` flavour and load as before.

**Applying it.** :class:`CalibratedEstimator` (name ``calibrated``) wraps the base estimator: a
segment costs the board shell plus the corrected IP figures. A segment the base prices with
another estimator (rule4ml's analytic fallback) is left as is. With every exponent 1 the wrapper
stays additive; otherwise the planner prices whole segments.

**Reading reports.** hls4ml's own parser, :func:`hls4ml.report.parse_vivado_report`, reads a
project directory (``project.tcl``, the ``<name>_prj`` solution's ``*_csynth.xml`` and, when the
project ran ``vsynth``, ``vivado_synth.rpt``; both Vivado HLS and Vitis HLS layouts). Its
``BRAM_18K`` figure of ``vivado_synth.rpt`` is the report's "Block RAM Tile" count, i.e. 36 Kb
tiles, so split4ml doubles it. A report is matched to its design through the build directory that
``split4ml build`` wrote (``plan.yaml`` and one ``stage_<i>`` project per board): that is
:mod:`split4ml.build_reports`, above the planner, since it reads a plan.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..boards import Board
from ..errors import PlanError, Split4mlError
from ..ir import Layer
from ..settings import LayerSettings
from .analytic import REPORT_MODELS, AnalyticEstimator
from .base import Cost, Estimator, layers_cost

#: Metrics a calibration corrects (the fields of :class:`Cost`).
METRICS = ("lut", "ff", "dsp", "bram18", "latency_cycles", "ii_cycles")
RESOURCE_METRICS = ("lut", "ff", "dsp", "bram18")
CALIBRATION_VERSION = 1
MODES = ("power", "scale")
STAGES = ("hls", "synth")
#: Fewest designs for a power-law fit (below: scale factor only).
MIN_POINTS_POWER = 5
#: Smallest standard deviation of log(estimate) for a power-law fit.
MIN_LOG_SPREAD = 0.3
#: Bounds of a fitted exponent.
MIN_EXPONENT, MAX_EXPONENT = 0.5, 1.5


def _mdape(est: np.ndarray, truth: np.ndarray) -> float:
    return float(np.median(np.abs(est - truth) / truth) * 100.0) if truth.size else float("nan")


@dataclass(frozen=True)
class Correction:
    """``y = factor * x ** exponent`` for one metric, with its fit statistics.

    Attributes:
        factor: multiplicative factor (1 = none).
        exponent: power of the estimate (1 = a plain scale factor).
        n: designs fitted (report and estimate both > 0).
        n_zero: designs left out because the report or the estimate was 0.
        mdape_before, mdape_after: in-sample median absolute percentage error (%) of the estimate
            before and after the correction.
    """

    factor: float = 1.0
    exponent: float = 1.0
    n: int = 0
    n_zero: int = 0
    mdape_before: float = float("nan")
    mdape_after: float = float("nan")

    def apply(self, value: float) -> float:
        """The corrected figure (0 and negative estimates stay as they are)."""
        if value <= 0:
            return float(value)
        return float(self.factor * value ** self.exponent)

    def as_dict(self) -> dict[str, Any]:
        def r(v: float, nd: int) -> float | None:
            return None if math.isnan(v) else round(float(v), nd)

        return {"factor": r(self.factor, 6), "exponent": r(self.exponent, 6), "n": self.n, "n_zero": self.n_zero,
                "mdape_before": r(self.mdape_before, 2), "mdape_after": r(self.mdape_after, 2)}


def fit_correction(estimates: Sequence[float], truths: Sequence[float], mode: str = "power") -> Correction:
    """Fit one metric's correction (see the module docstring); ``None``-free sequences of equal length."""
    if mode not in MODES:
        raise Split4mlError(f"calibration mode {mode!r} is not one of {MODES}")
    e = np.asarray(estimates, dtype=float)
    t = np.asarray(truths, dtype=float)
    ok = (e > 0) & (t > 0) & np.isfinite(e) & np.isfinite(t)
    n_zero = int((~ok).sum())
    if not ok.any():
        return Correction(n=0, n_zero=n_zero)
    x, y = np.log(e[ok]), np.log(t[ok])
    exponent = 1.0
    if mode == "power" and ok.sum() >= MIN_POINTS_POWER and float(np.std(x)) >= MIN_LOG_SPREAD:
        slope = float(np.polyfit(x, y, 1)[0])
        exponent = float(np.clip(slope, MIN_EXPONENT, MAX_EXPONENT))
    log_factor = float(np.median(y - exponent * x))
    c = Correction(factor=math.exp(log_factor), exponent=exponent, n=int(ok.sum()), n_zero=n_zero)
    after = np.array([c.apply(v) for v in e[ok]])
    return Correction(factor=c.factor, exponent=exponent, n=c.n, n_zero=n_zero,
                      mdape_before=_mdape(e[ok], t[ok]), mdape_after=_mdape(after, t[ok]))


@dataclass(frozen=True)
class Calibration:
    """Per-metric corrections of one estimator, fitted on one kind of report.

    Attributes:
        estimator: name of the estimator the corrections apply to (``analytic`` or ``rule4ml``).
        stage: report figures fitted: ``hls`` (HLS C-synthesis) or ``synth`` (Vivado synthesis).
        corrections: metric -> :class:`Correction` (metrics without one are not corrected).
        mode: ``power`` or ``scale``.
        sources: the designs fitted (report paths or labels).
        report_model: for the analytic estimator, the flavour of its model the corrections were fitted
            on (:data:`split4ml.estimate.analytic.REPORT_MODELS`): ``hls`` when fitted on HLS
            C-synthesis reports (what those reports count), ``synth`` otherwise. Files without the
            key (written before it existed) were fitted on ``synth``.
    """

    estimator: str
    stage: str
    corrections: Mapping[str, Correction]
    mode: str = "power"
    sources: tuple[str, ...] = ()
    report_model: str = "synth"

    def __post_init__(self) -> None:
        object.__setattr__(self, "corrections", dict(self.corrections))
        object.__setattr__(self, "sources", tuple(self.sources))

    @property
    def additive(self) -> bool:
        """True when every correction is a plain factor (sums of corrected layers stay exact)."""
        return all(c.exponent == 1.0 for c in self.corrections.values())

    def apply(self, cost: Cost) -> Cost:
        """``cost`` (an IP cost, no shell) with every metric corrected."""
        vals = {m: float(getattr(cost, m)) for m in METRICS}
        for m, c in self.corrections.items():
            vals[m] = c.apply(vals[m])
        return Cost(**vals)

    # ------------------------------------------------------------------ YAML
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split4ml_calibration": CALIBRATION_VERSION, "estimator": self.estimator,
                               "stage": self.stage, "mode": self.mode}
        if self.estimator == "analytic":
            out["report_model"] = self.report_model
        out.update({"n_designs": len(self.sources), "sources": list(self.sources),
                    "corrections": {m: self.corrections[m].as_dict() for m in METRICS if m in self.corrections}})
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> Calibration:
        """Read the :meth:`to_dict` form; errors name the offending field."""
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: expected a mapping written by 'split4ml calibrate'")
        if data.get("split4ml_calibration") != CALIBRATION_VERSION:
            raise PlanError(f"{where}.split4ml_calibration: expected {CALIBRATION_VERSION}, got "
                            f"{data.get('split4ml_calibration')!r}; write the file with 'split4ml calibrate'")
        est = data.get("estimator")
        if est not in ("analytic", "rule4ml"):
            raise PlanError(f"{where}.estimator: {est!r} is not one of analytic, rule4ml")
        stage = data.get("stage", "hls")
        if stage not in STAGES:
            raise PlanError(f"{where}.stage: {stage!r} is not one of {STAGES}")
        mode = data.get("mode", "power")
        if mode not in MODES:
            raise PlanError(f"{where}.mode: {mode!r} is not one of {MODES}")
        report_model = data.get("report_model", "synth")
        if report_model not in REPORT_MODELS:
            raise PlanError(f"{where}.report_model: {report_model!r} is not one of {REPORT_MODELS}; write the file "
                            "with 'split4ml calibrate'")
        raw = data.get("corrections") or {}
        if not isinstance(raw, Mapping):
            raise PlanError(f"{where}.corrections: expected a mapping of metric -> {{factor, exponent}}")
        corr: dict[str, Correction] = {}
        for m, c in raw.items():
            w = f"{where}.corrections.{m}"
            if m not in METRICS:
                raise PlanError(f"{w}: unknown metric; calibrations correct {', '.join(METRICS)}")
            if not isinstance(c, Mapping):
                raise PlanError(f"{w}: expected a mapping with 'factor' and 'exponent'")
            try:
                factor = float(c.get("factor", 1.0))
                exponent = float(c.get("exponent", 1.0))
            except (TypeError, ValueError) as exc:
                raise PlanError(f"{w}: factor and exponent must be numbers") from exc
            if not (factor > 0 and math.isfinite(factor) and MIN_EXPONENT <= exponent <= MAX_EXPONENT):
                raise PlanError(f"{w}: factor must be > 0 and exponent within [{MIN_EXPONENT}, {MAX_EXPONENT}], got "
                                f"{factor} and {exponent}")
            stats = {k: float("nan") if c.get(k) is None else float(c[k]) for k in ("mdape_before", "mdape_after")}
            corr[m] = Correction(factor=factor, exponent=exponent, n=int(c.get("n", 0) or 0),
                                 n_zero=int(c.get("n_zero", 0) or 0), **stats)
        return cls(estimator=str(est), stage=str(stage), corrections=corr, mode=str(mode),
                   sources=tuple(str(s) for s in data.get("sources") or ()), report_model=str(report_model))

    @classmethod
    def read(cls, path: str | Path) -> Calibration:
        from ..yamlio import read_yaml

        return cls.from_dict(read_yaml(path, "calibration file", PlanError,
                                       hint="write one with 'split4ml calibrate BUILD_DIR -o calib.yaml'"), str(path))

    def write(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        header = ("# split4ml calibration: y = factor * estimate ** exponent per metric, for the hls4ml IP (no board\n"
                  "# shell). Use it with: split4ml plan MODEL --calibration " + p.name + "\n")
        p.write_text(header + yaml.safe_dump(self.to_dict(), sort_keys=False, width=110))


def fit_calibration(estimates: Sequence[Cost | Mapping[str, float]], truths: Sequence[Mapping[str, float | None]],
                    estimator: str, stage: str, mode: str = "power", sources: Sequence[str] = (),
                    report_model: str = "synth") -> Calibration:
    """Fit every metric's correction from pairs (estimate of a design's IP, its report figures).

    ``truths[i][metric]`` may be missing or ``None`` (not reported); such designs are left out of
    that metric. ``report_model`` names the analytic model flavour the estimates came from.
    """
    if report_model not in REPORT_MODELS:
        raise Split4mlError(f"report model {report_model!r} is not one of {REPORT_MODELS}")
    if len(estimates) != len(truths):
        raise ValueError(f"{len(estimates)} estimates for {len(truths)} reports")
    if stage not in STAGES:
        raise Split4mlError(f"report stage {stage!r} is not one of {STAGES}")
    corr: dict[str, Correction] = {}
    for m in METRICS:
        pairs = []
        for e, t in zip(estimates, truths, strict=True):
            tv = t.get(m)
            if tv is None or (isinstance(tv, float) and math.isnan(tv)):
                continue
            ev = float(getattr(e, m)) if isinstance(e, Cost) else float(e[m])
            pairs.append((ev, float(tv)))
        if not pairs:
            continue
        c = fit_correction([p[0] for p in pairs], [p[1] for p in pairs], mode)
        if c.n > 0:
            corr[m] = c
    return Calibration(estimator=estimator, stage=stage, corrections=corr, mode=mode, sources=tuple(sources),
                       report_model=report_model)


# ---------------------------------------------------------------------------------------------- estimators
def ip_cost(est: Estimator, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
            board: Board) -> Cost:
    """What ``est`` gives for a segment's hls4ml IP, without the board shell."""
    inner = getattr(est, "ip_cost", None)
    if callable(inner):
        return inner(layers, settings, io_type, board)
    return layers_cost(est, layers, settings, io_type, board)


def segment_source(est: Estimator, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                   board: Board) -> str:
    """Which estimator prices this segment: ``analytic``, ``rule4ml`` or ``calibrated``."""
    inner = getattr(est, "segment_source", None)
    if callable(inner):
        return str(inner(layers, settings, io_type, board))
    return str(getattr(est, "name", "analytic"))


def is_additive(est: Estimator) -> bool:
    """True when a segment's cost is the shell plus the sum of its layers' costs."""
    return bool(getattr(est, "additive", True))


class CalibratedEstimator:
    """``base`` with a :class:`Calibration` applied to the IP part of every segment it prices."""

    name = "calibrated"

    def __init__(self, base: Estimator, calibration: Calibration) -> None:
        base_name = getattr(base, "name", "?")
        if base_name != calibration.estimator:
            raise PlanError(f"the calibration was fitted for the {calibration.estimator} estimator, not {base_name}; "
                            f"use --estimator {calibration.estimator} or calibrate {base_name} again")
        base_report = getattr(base, "report", None)  # only the analytic estimator has flavours
        if base_report is not None and base_report != calibration.report_model:
            # Correct the figures of the flavour the calibration was fitted on.
            base = AnalyticEstimator(report=calibration.report_model)
        self.base = base
        self.calibration = calibration
        self.additive = is_additive(base) and calibration.additive

    def shell_cost(self, board: Board) -> Cost:
        return self.base.shell_cost(board)

    def segment_source(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                       board: Board) -> str:
        src = segment_source(self.base, layers, settings, io_type, board)
        return self.name if src == self.calibration.estimator else src

    def ip_cost(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                board: Board) -> Cost:
        raw = ip_cost(self.base, layers, settings, io_type, board)
        if segment_source(self.base, layers, settings, io_type, board) != self.calibration.estimator:
            return raw
        return self.calibration.apply(raw)

    def segment_cost(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                     board: Board) -> Cost:
        return self.shell_cost(board) + self.ip_cost(layers, settings, io_type, board)

    def layer_cost(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        """One layer, corrected as a segment of its own (exact in sums when the calibration is additive)."""
        return self.ip_cost([layer], {layer.name: settings}, io_type, board)


# ---------------------------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class ReportFigures:
    """What one hls4ml project's reports say.

    Attributes:
        project_dir: the hls4ml project.
        hls: HLS C-synthesis figures (metric -> value or None).
        synth: Vivado synthesis resources (metric -> value), or None when the project has none.
        tool: ``vivado_hls`` or ``vitis_hls`` (from the solution file), when known.
    """

    project_dir: Path
    hls: Mapping[str, float | None]
    synth: Mapping[str, float | None] | None = None
    tool: str = ""

    def figures(self, stage: str) -> dict[str, float | None]:
        """Resources of ``stage`` (``hls`` or ``synth``), latency and interval from the HLS report."""
        src = self.synth if stage == "synth" else self.hls
        if src is None:
            raise Split4mlError(f"{self.project_dir}: no Vivado synthesis report (vivado_synth.rpt); calibrate "
                                "with --stage hls, or run the build with vsynth=1")
        out: dict[str, float | None] = {m: src.get(m) for m in RESOURCE_METRICS}
        out["latency_cycles"] = self.hls.get("latency_cycles")
        out["ii_cycles"] = self.hls.get("ii_cycles")
        return out


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(str(value).strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def read_hls4ml_report(project_dir: str | Path) -> ReportFigures:
    """The synthesis figures of one hls4ml project, read with hls4ml's own report parser.

    Raises:
        Split4mlError: the directory is not an hls4ml project, or has no C-synthesis report yet.
    """
    from hls4ml.report import parse_vivado_report

    d = Path(project_dir)
    if not (d / "project.tcl").is_file():
        raise Split4mlError(f"{d} is not an hls4ml project (no project.tcl); pass a directory that "
                            "'split4ml build' wrote, after Vivado/Vitis HLS ran in it")
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet):
            rep = parse_vivado_report(str(d))
    except Exception as exc:  # hls4ml's parser raises assorted errors on half-written projects
        raise Split4mlError(f"{d}: hls4ml could not parse its reports: {type(exc).__name__}: {exc}") from exc
    cs = (rep or {}).get("CSynthesisReport")
    if not cs:
        raise Split4mlError(f"{d}: no C-synthesis report (<project>_prj/<solution>/syn/report/*_csynth.xml); run the "
                            "HLS synthesis first (stage build.sh)")
    hls = {"lut": _num(cs.get("LUT")), "ff": _num(cs.get("FF")), "dsp": _num(cs.get("DSP")),
           "bram18": _num(cs.get("BRAM_18K")), "latency_cycles": _num(cs.get("WorstLatency")),
           "ii_cycles": _num(cs.get("IntervalMax"))}
    vs = (rep or {}).get("VivadoSynthReport")
    synth = None
    if vs:
        tiles = _num(vs.get("BRAM_18K"))  # hls4ml's key for the 'Block RAM Tile' column: 36 Kb tiles
        synth = {"lut": _num(vs.get("LUT")), "ff": _num(vs.get("FF")), "dsp": _num(vs.get("DSP48E")),
                 "bram18": None if tiles is None else 2.0 * tiles}
    tool = ""
    prj = [p for p in d.glob("*_prj") if p.is_dir()]
    if prj:
        tool = "vitis_hls" if (prj[0] / "hls.app").is_file() else "vivado_hls" if (
            prj[0] / "vivado_hls.app").is_file() else ""
    return ReportFigures(project_dir=d, hls=hls, synth=synth, tool=tool)
