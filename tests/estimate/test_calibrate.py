"""Calibration: fitting corrections, the calibration file, the calibrated estimator, and the
plan -> build -> reports -> calibrate -> re-plan loop on synthetic Vivado/Vitis HLS reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli as _cli
from split4ml.boards import get_board
from split4ml.errors import PlanError, Split4mlError
from split4ml.estimate.analytic import AnalyticEstimator
from split4ml.estimate.base import Cost
from split4ml.estimate.calibrate import (
    CalibratedEstimator,
    Calibration,
    Correction,
    fit_calibration,
    fit_correction,
    read_hls4ml_report,
)
from split4ml.ir import Layer
from split4ml.settings import LayerSettings

PYNQ = get_board("pynq-z2")


# ------------------------------------------------------------------------------------------- fitting
def test_scale_fit_recovers_a_known_factor():
    rng = np.random.default_rng(0)
    est = rng.uniform(100, 10_000, 40)
    truth = 1.7 * est * rng.lognormal(0.0, 0.05, 40)
    c = fit_correction(est, truth, mode="scale")
    assert c.exponent == 1.0
    assert c.factor == pytest.approx(1.7, rel=0.03)
    assert c.n == 40 and c.n_zero == 0
    assert c.mdape_after < 5 < c.mdape_before


def test_power_fit_recovers_factor_and_exponent():
    rng = np.random.default_rng(1)
    est = np.exp(rng.uniform(np.log(50), np.log(50_000), 60))
    truth = 3.0 * est ** 0.8 * rng.lognormal(0.0, 0.02, 60)
    c = fit_correction(est, truth, mode="power")
    assert c.exponent == pytest.approx(0.8, abs=0.02)
    assert c.factor == pytest.approx(3.0, rel=0.15)
    assert c.apply(1000.0) == pytest.approx(3.0 * 1000 ** 0.8, rel=0.05)


def test_power_fit_needs_enough_spread_else_scale():
    est = [100.0, 101.0, 102.0, 99.0, 100.5, 98.0]
    truth = [2 * e for e in est]
    c = fit_correction(est, truth, mode="power")
    assert c.exponent == 1.0 and c.factor == pytest.approx(2.0)
    few = fit_correction([10.0, 1000.0], [5.0, 500.0], mode="power")
    assert few.exponent == 1.0 and few.factor == pytest.approx(0.5)


def test_exponent_is_clipped_and_zeros_are_counted():
    est = np.array([1.0, 10.0, 100.0, 1000.0, 10_000.0, 0.0, 5.0])
    truth = np.array([1.0, 1e3, 1e6, 1e9, 1e12, 7.0, 0.0])
    c = fit_correction(est, truth, mode="power")
    assert c.exponent == 1.5
    assert c.n == 5 and c.n_zero == 2
    assert c.apply(0.0) == 0.0


def test_fit_calibration_per_metric_and_missing_truths():
    ests = [Cost(lut=100 * k, ff=200 * k, dsp=10 * k, bram18=2 * k, latency_cycles=10 * k, ii_cycles=k)
            for k in range(1, 8)]
    truths = [{"lut": 0.5 * e.lut, "ff": 2 * e.ff, "dsp": e.dsp, "bram18": None, "latency_cycles": e.latency_cycles}
              for e in ests]
    cal = fit_calibration(ests, truths, "analytic", "hls", mode="scale")
    assert cal.corrections["lut"].factor == pytest.approx(0.5)
    assert cal.corrections["ff"].factor == pytest.approx(2.0)
    assert cal.corrections["dsp"].factor == pytest.approx(1.0)
    assert "bram18" not in cal.corrections and "ii_cycles" not in cal.corrections
    corrected = cal.apply(Cost(lut=1000, ff=10, dsp=3, bram18=4, ii_cycles=9))
    want = Cost(lut=500, ff=20, dsp=3, bram18=4, latency_cycles=0, ii_cycles=9)
    assert corrected.as_dict() == pytest.approx(want.as_dict())


def test_calibration_file_round_trip(tmp_path):
    cal = Calibration("analytic", "synth", {"lut": Correction(0.8, 1.1, n=5, mdape_before=30.0, mdape_after=8.0)},
                      sources=("a", "b"))
    p = tmp_path / "calib.yaml"
    cal.write(p)
    back = Calibration.read(p)
    assert back.estimator == "analytic" and back.stage == "synth" and back.sources == ("a", "b")
    assert back.corrections["lut"].factor == pytest.approx(0.8)
    assert back.corrections["lut"].exponent == pytest.approx(1.1)
    assert back.additive is False
    assert Calibration("analytic", "hls", {"lut": Correction(2.0)}).additive is True


def test_report_model_round_trip_and_old_files(tmp_path):
    cal = Calibration("analytic", "hls", {"lut": Correction(1.1)}, report_model="hls")
    p = tmp_path / "calib.yaml"
    cal.write(p)
    assert "report_model: hls" in p.read_text()
    assert Calibration.read(p).report_model == "hls"
    # a file written before the key existed was fitted on the default (synth) flavour
    old = cal.to_dict()
    del old["report_model"]
    assert Calibration.from_dict(old).report_model == "synth"
    # rule4ml calibrations do not carry it
    assert "report_model" not in Calibration("rule4ml", "hls", {}).to_dict()
    with pytest.raises(Split4mlError, match="report model"):
        fit_calibration([Cost(lut=1.0)], [{"lut": 1.0}], "analytic", "hls", report_model="impl")


def test_hls_calibration_prices_with_the_hls_report_model():
    # a Resource layer with RF > n_in: the two flavours differ (see analytic.REPORT_MODELS)
    layers = [Layer("w", "Dense", (32,), (256,), params={"units": 256, "use_bias": True})]
    sets = {"w": LayerSettings(512, "Resource")}
    synth, hls = AnalyticEstimator(), AnalyticEstimator(report="hls")
    assert hls.layer_cost(layers[0], sets["w"], "io_parallel", PYNQ).lut > \
        synth.layer_cost(layers[0], sets["w"], "io_parallel", PYNQ).lut
    cal = Calibration("analytic", "hls", {"lut": Correction(0.5)}, report_model="hls")
    est = CalibratedEstimator(synth, cal)
    assert est.base.report == "hls"
    want = 0.5 * hls.layer_cost(layers[0], sets["w"], "io_parallel", PYNQ).lut
    assert est.ip_cost(layers, sets, "io_parallel", PYNQ).lut == pytest.approx(want)
    # an old-style calibration keeps the default flavour, whatever the base was
    assert CalibratedEstimator(synth, Calibration("analytic", "hls", {})).base is synth
    assert CalibratedEstimator(hls, Calibration("analytic", "hls", {})).base.report == "synth"


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"report_model": "vivado"}, "report_model"),
        ({"estimator": "magic"}, "estimator"),
        ({"stage": "impl"}, "stage"),
        ({"corrections": {"luts": {"factor": 1}}}, "corrections.luts"),
        ({"corrections": {"lut": {"factor": -1}}}, "corrections.lut"),
        ({"corrections": {"lut": {"factor": 1, "exponent": 4}}}, "corrections.lut"),
        ({"split4ml_calibration": 7}, "split4ml_calibration"),
    ],
)
def test_bad_calibration_files_name_the_field(patch, where):
    d = Calibration("analytic", "hls", {"lut": Correction(1.2)}).to_dict()
    d.update(patch)
    with pytest.raises(PlanError, match=where):
        Calibration.from_dict(d, "calib.yaml")


# ------------------------------------------------------------------------------------------- estimator
def _dense(name: str, n_in: int, n_out: int) -> Layer:
    return Layer(name, "Dense", (n_in,), (n_out,), params={"units": n_out, "use_bias": True}, activation="relu")


def test_calibrated_estimator_corrects_the_ip_not_the_shell():
    base = AnalyticEstimator()
    layers = [_dense("a", 16, 32), _dense("b", 32, 8)]
    sets = {lyr.name: LayerSettings() for lyr in layers}
    cal = Calibration("analytic", "hls", {"lut": Correction(0.5), "dsp": Correction(2.0, 0.9)})
    est = CalibratedEstimator(base, cal)
    raw = base.segment_cost(layers, sets, "io_parallel", PYNQ)
    shell = base.shell_cost(PYNQ)
    got = est.segment_cost(layers, sets, "io_parallel", PYNQ)
    assert got.lut == pytest.approx(shell.lut + 0.5 * (raw.lut - shell.lut))
    assert got.dsp == pytest.approx(shell.dsp + 2.0 * (raw.dsp - shell.dsp) ** 0.9)
    assert got.ff == pytest.approx(raw.ff)
    assert est.name == "calibrated" and est.additive is False
    assert est.segment_source(layers, sets, "io_parallel", PYNQ) == "calibrated"
    with pytest.raises(PlanError, match="rule4ml"):
        CalibratedEstimator(base, Calibration("rule4ml", "hls", {}))


def test_get_estimator_takes_a_calibration_file(tmp_path):
    from split4ml.plan.api import get_estimator

    p = tmp_path / "c.yaml"
    Calibration("analytic", "hls", {"ff": Correction(3.0)}).write(p)
    for est in (get_estimator("analytic", p), get_estimator(str(p)), get_estimator("calibrated", p)):
        assert isinstance(est, CalibratedEstimator)
        assert est.calibration.corrections["ff"].factor == 3.0
    with pytest.raises(PlanError, match="fitted for the analytic"):
        get_estimator("rule4ml", p)


# ------------------------------------------------------------------------------------------- reports
CSYNTH = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <ReportVersion><Version>2020.1</Version></ReportVersion>
  <UserAssignments><Part>{part}</Part><TopModelName>{top}</TopModelName><TargetClockPeriod>10.00</TargetClockPeriod>
  </UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><unit>ns</unit><EstimatedClockPeriod>8.510</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><unit>clock cycles</unit><Best-caseLatency>{lat_min}</Best-caseLatency>
      <Average-caseLatency>{lat}</Average-caseLatency><Worst-caseLatency>{lat}</Worst-caseLatency>
      <Interval-min>{ii}</Interval-min><Interval-max>{ii}</Interval-max></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>{bram}</BRAM_18K><DSP48E>{dsp}</DSP48E><FF>{ff}</FF><LUT>{lut}</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>280</BRAM_18K><DSP48E>220</DSP48E><FF>106400</FF><LUT>53200</LUT><URAM>0</URAM>
    </AvailableResources>
  </AreaEstimates>
</profile>
"""

VIVADO_HLS_APP = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="com.autoesl.autopilot.project" name="{name}_prj" top="{top}">
  <solutions xmlns=""><solution name="solution1" status="active"/></solutions>
</project>
"""

SYNTH_RPT = """Copyright 1986-2020 Xilinx, Inc. All Rights Reserved.
Utilization Design Information

1. Slice Logic
--------------

+----------------------------+------+-------+-----------+-------+
|          Site Type         | Used | Fixed | Available | Util% |
+----------------------------+------+-------+-----------+-------+
| Slice LUTs*                | {lut} |     0 |     53200 |  1.00 |
|   LUT as Logic             | {lut} |     0 |     53200 |  1.00 |
| Slice Registers            | {ff} |     0 |    106400 |  1.00 |
+----------------------------+------+-------+-----------+-------+

2. Memory
---------

+-------------------+------+-------+-----------+-------+
|     Site Type     | Used | Fixed | Available | Util% |
+-------------------+------+-------+-----------+-------+
| Block RAM Tile    | {tiles} |     0 |       140 |  1.00 |
|   RAMB36/FIFO*    |    1 |     0 |       140 |  0.71 |
+-------------------+------+-------+-----------+-------+

3. DSP
------

+----------------+------+-------+-----------+-------+
|    Site Type   | Used | Fixed | Available | Util% |
+----------------+------+-------+-----------+-------+
| DSPs           | {dsp} |     0 |       220 |  1.00 |
+----------------+------+-------+-----------+-------+
"""


def write_reports(project: Path, *, lut: float, ff: float, dsp: float, bram18: float, latency: int, ii: int,
                  synth: dict[str, float] | None = None, name: str = "myproject", accelerator: bool = True) -> None:
    """Files shaped like Vivado HLS's output in an hls4ml project (what hls4ml's parser reads)."""
    project.mkdir(parents=True, exist_ok=True)
    tcl = project / "project.tcl"
    if not tcl.is_file():
        backend = "vivadoaccelerator" if accelerator else "vivado"
        tcl.write_text(f'variable project_name\nset project_name "{name}"\nvariable backend\nset backend "{backend}"\n')
    top = name + ("_axi" if "accelerator" in tcl.read_text() else "")
    prj = project / f"{name}_prj"
    (prj / "solution1" / "syn" / "report").mkdir(parents=True, exist_ok=True)
    (prj / "vivado_hls.app").write_text(VIVADO_HLS_APP.format(name=name, top=top))
    (prj / "solution1" / "syn" / "report" / f"{top}_csynth.xml").write_text(CSYNTH.format(
        part="xc7z020clg400-1", top=top, lat_min=latency, lat=latency, ii=ii, bram=round(bram18), dsp=round(dsp),
        ff=round(ff), lut=round(lut)))
    if synth is not None:
        (project / "vivado_synth.rpt").write_text(SYNTH_RPT.format(
            lut=round(synth["lut"]), ff=round(synth["ff"]), dsp=round(synth["dsp"]), tiles=synth["bram18"] / 2))


def test_read_report_with_hls4mls_parser(tmp_path):
    write_reports(tmp_path / "p", lut=1234, ff=2345, dsp=17, bram18=6, latency=42, ii=7,
                  synth={"lut": 900, "ff": 2000, "dsp": 16, "bram18": 5})
    rep = read_hls4ml_report(tmp_path / "p")
    assert rep.hls == {"lut": 1234, "ff": 2345, "dsp": 17, "bram18": 6, "latency_cycles": 42, "ii_cycles": 7}
    assert rep.synth == {"lut": 900, "ff": 2000, "dsp": 16, "bram18": 5.0}  # 2.5 tiles of 36 Kb
    assert rep.figures("synth")["latency_cycles"] == 42
    assert rep.tool == "vivado_hls"


def test_read_report_errors_say_what_is_missing(tmp_path):
    with pytest.raises(Split4mlError, match="not an hls4ml project"):
        read_hls4ml_report(tmp_path)
    (tmp_path / "project.tcl").write_text('set project_name "myproject"\nset backend "vivado"\n')
    (tmp_path / "myproject_prj" / "solution1").mkdir(parents=True)
    (tmp_path / "myproject_prj" / "vivado_hls.app").write_text(VIVADO_HLS_APP.format(name="myproject",
                                                                                      top="myproject"))
    with pytest.raises(Split4mlError, match="no C-synthesis report"):
        read_hls4ml_report(tmp_path)


# ------------------------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-stage analytic plan of a small MLP, written as hls4ml projects (not compiled)."""
    from split4ml.build import build_plan
    from split4ml.frontends import load_model
    from split4ml.networks import deep_mlp
    from split4ml.plan.api import make_plan

    root = tmp_path_factory.mktemp("calib")
    model = root / "mlp.keras"
    deep_mlp(widths=(24, 16), n_in=12, n_out=4).save(model)
    g = load_model(model)
    plan = make_plan(g, model=model, board=PYNQ, n_stages=3)
    build_plan(plan, g, root / "build")
    return model, root / "build"


#: The "real" tools in this test: LUT 0.6x the analytic figure, FF 1.8x, DSP and BRAM as estimated,
#: latency 2x.
TRUE_FACTORS = {"lut": 0.6, "ff": 1.8, "dsp": 1.0, "bram18": 1.0, "latency_cycles": 2.0}


def test_calibrate_then_plan_applies_it(monkeypatch, capsys, built, tmp_path):
    from split4ml.lower import plan_pipeline
    from split4ml.plan.api import load_plan

    model, build = built
    plan, g = load_plan(build / "plan.yaml")
    pipeline, _ = plan_pipeline(plan, g)
    base = AnalyticEstimator(report="hls")  # HLS reports: calibrated on what they count
    for node in pipeline.nodes:
        st = node.stage
        raw = Cost()
        for lyr in st.graph.body:
            raw = raw + base.layer_cost(lyr, st.settings[lyr.name], "io_parallel", st.board)
        write_reports(build / st.name, lut=TRUE_FACTORS["lut"] * raw.lut, ff=TRUE_FACTORS["ff"] * raw.ff,
                      dsp=raw.dsp, bram18=raw.bram18, latency=round(2 * raw.latency_cycles), ii=round(raw.ii_cycles))

    calib = tmp_path / "calib.yaml"
    rc, out, err = _cli(monkeypatch, capsys, "calibrate", str(build), "-o", str(calib), "--mode", "scale", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["estimator"] == "analytic" and d["stage"] == "hls" and d["n_designs"] == 3
    assert d["report_model"] == "hls"
    for m, f in TRUE_FACTORS.items():
        if m in d["corrections"]:
            assert d["corrections"][m]["factor"] == pytest.approx(f, rel=0.05), m
    assert d["corrections"]["lut"]["n"] == 3

    rc, out, err = _cli(monkeypatch, capsys, "plan", str(model), "--stages", "3", "--calibration", str(calib),
                        "-o", str(tmp_path / "cal_plan.yaml"), "--json")
    assert rc == 0, err
    p = json.loads(out)
    assert p["estimator"] == "calibrated"
    assert {st["estimate_source"] for st in p["stages"]} == {"calibrated"}
    shell = base.shell_cost(PYNQ)
    for st in p["stages"]:
        raw = Cost()
        for name in st["layers"]:
            s = st["layer_settings"][[x["name"] for x in st["layer_settings"]].index(name)]
            ls = LayerSettings(reuse_factor=s["reuse_factor"], strategy=s["strategy"],
                               precision=plan.settings[name].precision)
            raw = raw + base.layer_cost(g.layer(name), ls, "io_parallel", PYNQ)
        cal = Calibration.read(calib)
        assert st["resources"]["lut"] == pytest.approx(shell.lut + cal.corrections["lut"].apply(raw.lut))
        assert st["resources"]["ff"] == pytest.approx(shell.ff + cal.corrections["ff"].apply(raw.ff))
        assert st["latency_cycles"] == pytest.approx(cal.corrections["latency_cycles"].apply(raw.latency_cycles))

    # the plan file carries the calibration, so reading it back (build, verify) prices it the same way
    again, _ = load_plan(tmp_path / "cal_plan.yaml")
    assert again.estimator == "calibrated" and again.calibration is not None
    assert [st.cost.lut for st in again.stages] == pytest.approx([st["resources"]["lut"] for st in p["stages"]])


def test_calibrate_without_reports_says_so(monkeypatch, capsys, tmp_path):
    rc, _, err = _cli(monkeypatch, capsys, "calibrate", str(tmp_path), "-o", str(tmp_path / "c.yaml"))
    assert rc == 2
    assert "build directory" in err


def test_calibrate_one_stage_project(built, tmp_path):
    from split4ml.build_reports import calibrate_from_reports

    _, build = built
    # a stage project alone: only its report is read
    stage = build / "stage_0"
    if not (stage / "myproject_prj").exists():
        write_reports(stage, lut=1000, ff=1000, dsp=1, bram18=0, latency=5, ii=1)
    cal, got = calibrate_from_reports([stage], AnalyticEstimator(), mode="scale")
    assert len(got.points) == 1 and cal.sources == (str(stage.resolve()),)
    assert all(math.isfinite(c.factor) for c in cal.corrections.values())
