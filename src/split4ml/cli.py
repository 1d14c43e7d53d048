"""The ``split4ml`` command line: a thin layer over the Python API.

Every command has ``--json`` (only JSON on stdout). Exit codes: 0 ok, 1 verification mismatch,
2 bad input (the message goes to stderr, without a traceback).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .errors import Split4mlError
from .settings import choice

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Split a neural network that is too big for one FPGA into a pipeline of boards.")
# Wide tables when piped (rich would otherwise fold them to 80 columns); COLUMNS still wins.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout (for scripts).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
BoardOpt = Annotated[str, typer.Option("--board", "-b", help="Board name (see 'split4ml boards') or a board YAML.")]
BoardFileOpt = Annotated[list[Path] | None, typer.Option("--board-file", help="Extra board catalogue YAML file(s).")]
CapOpt = Annotated[float, typer.Option("--cap", help="Utilisation cap of every resource (0-1].")]
RfOpt = Annotated[int | None, typer.Option("--reuse-factor", "-r", help="hls4ml reuse factor for every layer.")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="hls4ml strategy: Latency or Resource.")]
PrecisionOpt = Annotated[str | None, typer.Option(
    "--precision", help="Default precision, e.g. 'ap_fixed<16,6>' (results are rounded and saturated).")]
IoOpt = Annotated[str, typer.Option("--io-type", help="io_parallel or io_stream.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="hls4ml-style config YAML (Model / LayerName).")]
EstimatorOpt = Annotated[str, typer.Option(
    "--estimator", help="analytic (default) or rule4ml (needs the rule4ml extra); calibrated with --calibration.")]
CalibrationOpt = Annotated[Path | None, typer.Option(
    "--calibration", help="Calibration YAML written by 'split4ml calibrate': corrects the estimator it was fitted for.")]
FrameworkOpt = Annotated[str | None, typer.Option(
    "--framework", help="keras, pytorch or onnx (default: from the file extension: .keras/.h5/.json, "
                        ".pt2/.pt/.pth/.py, .onnx).")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="Weights file: a PyTorch state_dict for a .py model, or Keras weights for a .json model.")]
EntryOpt = Annotated[str | None, typer.Option(
    "--entry", help="PyTorch .py model: the nn.Module class or factory function in the file that builds it.")]
InputShapeOpt = Annotated[str | None, typer.Option(
    "--input-shape", help="PyTorch .py/TorchScript model: input shape without batch, channels-first, e.g. 1,8,8.")]


def _model_options(framework: str | None, weights: Path | None, entry: str | None,
                   input_shape: str | None) -> dict[str, Any]:
    """The :func:`split4ml.frontends.load_model` keywords given on the command line (None dropped)."""
    shape: list[int] | None = None
    if input_shape is not None:
        try:
            shape = [int(d) for d in input_shape.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            shape = []
        if not shape or min(shape) < 1:
            raise Split4mlError(f"--input-shape {input_shape!r}: expected positive integers like 1,8,8 "
                                "(channels-first, without the batch dimension)")
    opts = {"framework": framework, "weights": str(weights) if weights is not None else None, "entry": entry,
            "input_shape": shape}
    return {k: v for k, v in opts.items() if v is not None}


def _load(model: Path, options: dict[str, Any]) -> Any:
    from .frontends import load_model

    return load_model(model, **options)


@contextmanager
def _estimator_warnings(enabled: bool = True) -> Iterator[None]:
    """Show an estimator's fallback warnings (a segment outside rule4ml's range) as one clean line each."""
    import warnings

    from rich.markup import escape

    from .estimate.rule4ml import EstimatorFallbackWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EstimatorFallbackWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, EstimatorFallbackWarning):
                    if enabled:
                        err.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=float) + "\n")


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr, driven by the library's ``progress(step, done, total)`` callback."""
    if not enabled:
        yield None
        return
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as bar:
        def cb(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        yield cb


@contextmanager
def _step(enabled: bool, description: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr, for one long step that cannot count its progress."""
    if not enabled:
        yield
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        bar.add_task(description, total=None)
        yield


def _build_settings(precision: str | None, io_type: str) -> Any:
    from .fixed import FixedType
    from .settings import BuildSettings, precision_family

    if precision:
        b = precision_family(FixedType.parse(precision))
        return BuildSettings(io_type=io_type, default_precision=b.default_precision,
                             result_precision=b.result_precision, accum_precision=b.accum_precision,
                             input_precision=b.input_precision)
    return BuildSettings(io_type=io_type)


def _check_precision_option(graph: Any, precision: str | None) -> None:
    """Refuse ``--precision`` for a quantized model, whose types are its quantizers'."""
    if precision and graph.quantized:
        raise Split4mlError(f"--precision {precision}: model {graph.name!r} is quantized, so its types come from its "
                            "quantizers; --precision is for float models: drop it")


def _read_yaml(path: Path, what: str) -> Any:
    from .yamlio import read_yaml

    return read_yaml(path, what)


def _pct_style(frac: float, cap: float) -> str:
    if frac > cap:
        return "bold red"
    if frac > 0.8 * cap:
        return "yellow"
    return "green"


# --------------------------------------------------------------------------------------------- commands
@app.command()
def boards(json_out: JsonOpt = False, board_file: BoardFileOpt = None) -> None:
    """List the board catalogue."""
    from .boards import catalogue

    cat = catalogue(tuple(board_file or ()))
    rows = [{"name": b.name, "part": b.part, "lut": b.lut, "ff": b.ff, "dsp": b.dsp, "bram18": b.bram18,
             "uram": b.uram, "clock_mhz": b.clock_mhz, "backend": b.backend,
             "link": {"bandwidth_mbps": b.link.bandwidth_mbps, "latency_us": b.link.latency_us,
                      "medium": b.link.medium}} for b in sorted(cat.values(), key=lambda b: b.name)]
    if json_out:
        _emit_json({"boards": rows})
        return
    t = Table(title="Boards")
    for c in ("name", "part", "LUT", "FF", "DSP", "BRAM18", "clock", "backend", "link"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], r["part"], f"{r['lut']:,}", f"{r['ff']:,}", f"{r['dsp']:,}", f"{r['bram18']:,}",
                  f"{r['clock_mhz']:g} MHz", r["backend"],
                  f"{r['link']['bandwidth_mbps']:g} Mb/s + {r['link']['latency_us']:g} us/hop")
    out.print(t)


@app.command()
def inspect(model: Path, json_out: JsonOpt = False, quiet: QuietOpt = False, framework: FrameworkOpt = None,
            weights: WeightsOpt = None, entry: EntryOpt = None, input_shape: InputShapeOpt = None) -> None:
    """Show a model's layers, shapes and parameters as split4ml reads them."""
    options = _model_options(framework, weights, entry, input_shape)
    with _step(not (quiet or json_out), f"reading {model.name}"):
        g = _load(model, options)
    layers = [{"name": lyr.name, "type": lyr.kind, "input_shape": list(lyr.input_shape),
               "output_shape": list(lyr.output_shape), "activation": lyr.activation, "params": lyr.n_params,
               "inputs": list(lyr.inputs), "hls_nodes": list(lyr.hls_nodes),
               "precision": lyr.precision.as_dict() if lyr.precision is not None else None}
              for lyr in g.layers]
    src = g.source
    data = {"model": g.name, "n_layers": len(g.body), "n_params": g.n_params,
            "input_shape": list(g.input.output_shape), "output_shape": list(g.layers[-1].output_shape),
            "layers": layers, "units": [[lyr.name for lyr in u] for u in g.units()],
            "quantized": g.quantized, "reader": src.reader if src is not None else None,
            "via": (src.via or None) if src is not None else None}
    if json_out:
        _emit_json(data)
        return
    t = Table(title=f"{g.name}: {len(g.body)} layers, {g.n_params:,} parameters")
    dag = not g.is_chain  # skip connections: show where each layer reads from
    q = g.quantized  # a quantized model: show the types its quantizers give
    for c in ("layer", "type", *(("from",) if dag else ()), "input", "output", "activation",
              *(("result type",) if q else ()), "params"):
        t.add_column(c, justify="right" if c == "params" else "left")
    for r in layers:
        res = (r["precision"]["result"] if r["precision"] else "",) if q else ()
        t.add_row(r["name"], r["type"], *((" + ".join(r["inputs"]),) if dag else ()), str(tuple(r["input_shape"])),
                  str(tuple(r["output_shape"])), r["activation"] or "", *res, f"{r['params']:,}")
    out.print(t)
    how = f"read by hls4ml ({data['reader']})" + (f", {data['via']}" if data["via"] else "") if src else ""
    out.print(f"cut points: between {len(data['units'])} units (a layer stays with the element-wise layers after "
              f"it); {how}" + ("; quantized: its types come from its quantizers" if q else ""))


@app.command()
def estimate(model: Path, board: BoardOpt = "pynq-z2", reuse_factor: RfOpt = None, strategy: StrategyOpt = None,
             precision: PrecisionOpt = None, io_type: IoOpt = "io_parallel", config: ConfigOpt = None,
             cap: CapOpt = 0.85, board_file: BoardFileOpt = None, json_out: JsonOpt = False,
             quiet: QuietOpt = False, estimator: EstimatorOpt = "analytic", calibration: CalibrationOpt = None,
             framework: FrameworkOpt = None, weights: WeightsOpt = None, entry: EntryOpt = None,
             input_shape: InputShapeOpt = None) -> None:
    """Estimate each layer's cost on a board (settings chosen as the planner would)."""
    options = _model_options(framework, weights, entry, input_shape)
    with _estimator_warnings():
        _estimate(model, board, reuse_factor, strategy, precision, io_type, config, cap, board_file, json_out, quiet,
                  estimator, calibration, options)


def _estimate(model: Path, board: str, reuse_factor: int | None, strategy: str | None, precision: str | None,
              io_type: str, config: Path | None, cap: float, board_file: list[Path] | None, json_out: bool,
              quiet: bool, estimator: str, calibration: Path | None, options: dict[str, Any]) -> None:
    from .boards import get_board
    from .estimate.summary import model_figures
    from .plan.api import get_estimator, model_build
    from .plan.reuse import choose_settings
    from .settings import parse_hls_config

    with _step(not (quiet or json_out), f"reading {model.name}"):
        g = _load(model, options)
    _check_precision_option(g, precision)
    b = get_board(board, tuple(board_file or ()))
    build = model_build(g, _build_settings(precision, io_type))
    overrides: dict[str, Any] = {}
    if config:
        build, crf, cst, overrides = parse_hls_config(_read_yaml(config, "--config"), build)
        reuse_factor = reuse_factor if reuse_factor is not None else crf
        strategy = strategy if strategy is not None else cst
    est = get_estimator(estimator, calibration)
    settings = choose_settings(g, b, cap, est, build, reuse_factor=reuse_factor, strategy=strategy,
                               overrides=overrides)
    data = model_figures(g, settings, est, build.io_type, b, cap)
    rows, total = data["layers"], data["total"]
    if json_out:
        _emit_json(data)
        return
    t = Table(title=f"{g.name} on {b.name} ({est.name} estimate)")
    for c in ("layer", "type", "RF", "strategy", "LUT", "FF", "DSP", "BRAM18", "latency", "II"):
        t.add_column(c, justify="left" if c in ("layer", "type", "strategy") else "right")
    for r in rows:
        t.add_row(r["name"], r["type"], str(r["reuse_factor"]), r["strategy"], f"{r['lut']:,.0f}",
                  f"{r['ff']:,.0f}", f"{r['dsp']:,.0f}", f"{r['bram18']:,.1f}", f"{r['latency_cycles']:,.0f}",
                  f"{r['ii_cycles']:,.0f}")
    util, shell = total["utilization"], total["shell"]
    t.add_section()
    t.add_row("shell", "", "", "", f"{shell['lut']:,.0f}", f"{shell['ff']:,.0f}", f"{shell['dsp']:,.0f}",
              f"{shell['bram18']:,.1f}", "", "")
    t.add_row("[bold]total", "", "", "", *[f"[{_pct_style(util[r], cap)}]{util[r]:.0%}"
                                           for r in ("lut", "ff", "dsp", "bram18")],
              f"{total['latency_cycles']:,.0f}", f"{total['ii_cycles']:,.0f}")
    out.print(t)
    verdict = "fits" if total["fits_one_board"] else "does NOT fit"
    out.print(f"The whole model {verdict} one {b.name} under a {cap:.0%} cap.")


def print_plan(plan: Any) -> None:
    """Rich table of a plan: per-board utilisation, coloured as the cap nears."""
    m = plan.metrics
    names = [sh.board.name for st in plan.stages for sh in st.shards] if any(st.split for st in plan.stages) else []
    names = [st.board.name for st in plan.stages if not st.split] + names
    boards = " + ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names)) or f"{plan.n_boards} x {plan.board.name}"
    t = Table(title=f"Plan: {boards} in {plan.n_stages} pipeline "
                    f"step{'s' if plan.n_stages != 1 else ''}, "
                    f"objective {plan.objective}, cap {plan.cap:.0%}")
    for c in ("stage", "board", "layers", "LUT", "FF", "DSP", "BRAM18", "latency (cyc)", "interval (us)", "out wire"):
        t.add_column(c, justify="left" if c in ("board", "layers", "out wire") else "right")
    for st in plan.stages:
        u = st.utilization()
        mark = " *" if st.index == m.bottleneck_stage else ""
        layers = ", ".join(([f"merge of {st.merge}"] if st.merge else []) + list(st.layers))
        if st.split:
            layers += f" ({st.split.kind} split x{st.split.parts}: {st.n_boards} boards, fullest shown)"
        t.add_row(f"{st.index}{mark}", st.board.name, layers,
                  *[f"[{_pct_style(u[r], plan.cap)}]{u[r]:.0%}" for r in ("lut", "ff", "dsp", "bram18")],
                  f"{st.cost.latency_cycles:,.0f}", f"{m.stage_interval_us[st.index]:,.2f}",
                  f"{st.output.type} x{list(st.output.shape)} ({st.output.bytes_per_sample} B)")
    out.print(t)
    where = {"stage": f"stage {m.bottleneck_stage} (*)", "source": "the source's link", "sink": "the sink's link"}
    out.print(f"bottleneck: {where[m.bottleneck]}, {m.bottleneck_us:,.2f} us "
              f"= {m.bottleneck_ii_cycles:,.0f} cycles -> {m.throughput_per_s:,.0f} samples/s; "
              f"latency {m.latency_us:,.1f} us (batch {plan.batch})")
    out.print(f"bounds: fabric {m.fabric_bound_us:,.2f} us, links {m.link_bound_us:,.2f} us "
              f"(source {m.source_us:,.2f}, sink {m.sink_us:,.2f}), per-frame cost {m.frame_bound_us:,.2f} us "
              f"per sample")
    if plan.io_type_chosen is not None:
        out.print(f"io type {plan.io_type_chosen}")
    if plan.optimality is not None:
        style = "green" if plan.optimality.optimal else "bold yellow"
        out.print(f"[{style}]{plan.optimality.describe()}")


@app.command()
def plan(model: Path, board: BoardOpt = "pynq-z2",
         boards_: Annotated[int | None, typer.Option("--boards", help="At most this many boards.")] = None,
         stages: Annotated[int | None, typer.Option("--stages", help="Exactly this many stages.")] = None,
         objective: Annotated[str, typer.Option("--objective", help="throughput, latency or boards.")] = "throughput",
         reuse_factor: RfOpt = None, strategy: StrategyOpt = None, config: ConfigOpt = None,
         precision: PrecisionOpt = None,
         io_type: Annotated[str | None, typer.Option(
             "--io-type", help="io_parallel or io_stream. Default: io_parallel, or io_stream for a model with "
                               "convolutions that no number of boards holds with io_parallel (and no IOType in "
                               "--config).")] = None,
         cap: CapOpt = 0.85, board_file: BoardFileOpt = None,
         output: Annotated[Path, typer.Option("-o", "--output", help="Plan file to write.")] = Path("plan.yaml"),
         json_out: JsonOpt = False, quiet: QuietOpt = False, estimator: EstimatorOpt = "analytic",
         calibration: CalibrationOpt = None, framework: FrameworkOpt = None, weights: WeightsOpt = None,
         entry: EntryOpt = None, input_shape: InputShapeOpt = None,
         cluster: Annotated[Path | None, typer.Option(
             "--cluster", help="Cluster YAML: the boards on hand (types, counts), order fixed|free, links. "
                               "Replaces --board.")] = None,
         joint: Annotated[bool, typer.Option(
             "--joint/--no-joint", help="Choose each layer's reuse factor and strategy jointly with the cuts "
                                        "(default), or first per layer (smallest that fits a board) and then "
                                        "cut (the two-step way).")] = True,
         batch: Annotated[int | None, typer.Option(
             "--batch", help="Samples per frame the pipeline runs with (each board pays its per-frame cost once per "
                             "frame); default: chosen for the objective (1 for latency).")] = None,
         time_limit: Annotated[float, typer.Option(
             "--time-limit", help="Seconds the CP-SAT planner of models with skip connections may search; past "
                                  "it the best plan found is kept, marked not proven optimal, with a bound.")] = 60.0,
         ) -> None:
    """Choose the optimal pipeline of boards for MODEL and write it as a plan file."""
    from .boards import get_board
    from .plan.api import make_plan

    if boards_ is not None and stages is not None and stages > boards_:
        raise Split4mlError(f"--stages {stages} is more than --boards {boards_}; drop one of them")
    options = _model_options(framework, weights, entry, input_shape)
    from .plan.dag import import_cpsat_first

    import_cpsat_first()  # [E2] CP-SAT (models with skip connections) crashes if TensorFlow loads before it
    with _step(not (quiet or json_out), f"reading {model.name}"):
        g = _load(model, options)
    _check_precision_option(g, precision)
    cl = None
    if cluster is not None:
        from .plan.cluster import read_cluster

        cl = read_cluster(cluster, [str(f) for f in board_file or ()])
        b = cl.types[0]
    else:
        b = get_board(board, tuple(board_file or ()))
    with _estimator_warnings(), _progress(not (quiet or json_out) and estimator == "rule4ml") as cb:
        p = make_plan(g, model=model, board=b, cap=cap, objective=objective, max_boards=boards_, n_stages=stages,
                      reuse_factor=reuse_factor, strategy=strategy,
                      hls_config=_read_yaml(config, "--config") if config else None,
                      build=_build_settings(precision, io_type or "io_parallel"),
                      board_files=[str(f) for f in board_file or ()],
                      estimator=_with_progress(estimator, calibration, cb), calibration=calibration,
                      model_options=options, cluster=cl, joint=joint, time_limit_s=time_limit, batch=batch,
                      choose_io_type=io_type is None)
    p.write(output)
    if json_out:
        _emit_json({**p.to_json(), "plan_file": str(output)})
        return
    print_plan(p)
    out.print(f"wrote {output}")


@app.command()
def check(plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
          output: Annotated[Path | None, typer.Option(
              "-o", "--output", help="Write the plan out in full (settings, wires, estimates) to this file.")] = None,
          json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Price a plan file, hand-written or edited, the way 'plan' prices its own: the same table, the same
    --json keys (throughput, latency, per-stage resources), and with -o the complete plan."""
    from .plan.api import load_plan

    with _step(not (quiet or json_out), f"reading {plan_file.name}"):
        p, _ = load_plan(plan_file)
    if output is not None:
        p.write(output)
    if json_out:
        _emit_json({**p.to_json(), "plan_file": str(output if output is not None else plan_file),
                    "checked": str(plan_file)})
        return
    print_plan(p)
    if output is not None:
        out.print(f"wrote {output}")


def _with_progress(estimator: str, calibration: Path | None, cb: Any) -> Any:
    """The estimator for ``plan``; rule4ml's calls (0.1-0.4 s each) drive a progress bar."""
    if estimator != "rule4ml" or cb is None:
        return estimator
    from .plan.api import get_estimator

    est = get_estimator("rule4ml")
    inner = getattr(est, "base", est)  # a calibrated wrapper keeps rule4ml as its base
    if hasattr(inner, "on_request"):
        inner.on_request = lambda calls, hits: cb("rule4ml estimates (calls, cached)", calls + hits, None)
    return est


@app.command()
def build(plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
          output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")] = Path("build"),
          scheduler: Annotated[list[str] | None, typer.Option(
              "--scheduler", help="Also write a job array for a cluster's scheduler: slurm or htcondor (repeat for "
                                  "both): one task per board, logs, and collect.sh for the summary.")] = None,
          json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Write one hls4ml project per stage, and the vendor build scripts (run them where Vivado is)."""
    from .build import build_plan
    from .errors import BuildError
    from .hls.scheduler import SCHEDULERS
    from .plan.api import load_plan

    schedulers = list(dict.fromkeys(choice(s, SCHEDULERS, "--scheduler", BuildError) for s in scheduler or ()))
    p, g = load_plan(plan_file)
    with _progress(not (quiet or json_out)) as cb:
        res = build_plan(p, g, output, progress=cb, schedulers=schedulers)
    if json_out:
        _emit_json(res.as_dict())
        return
    for s in res.stages:
        out.print(f"stage {s.index} ({s.board}, {s.backend}): {s.project_dir}")
    out.print(f"vendor build: {res.build_all} --jobs N   (needs Vivado/Vitis on PATH)")
    scripts = res.scheduler_scripts
    if "slurm" in scripts:
        out.print(f"on Slurm: cd {output} && sbatch {scripts['slurm'].name}   (one task per board)")
    if "htcondor" in scripts:
        out.print(f"on HTCondor: cd {output} && condor_submit {scripts['htcondor'].name}   (one job per board)")
    if scripts:
        out.print(f"when the jobs are done: {scripts['collect']}   (which boards built, which failed)")


def _load_data(path: Path) -> tuple[Any, Any]:
    import numpy as np

    from .errors import DataError

    if not path.is_file():
        raise DataError(f"--data {path} does not exist; pass an .npz with an array 'x' (and optionally 'y')")
    try:
        d = np.load(path)
    except Exception as exc:
        raise DataError(f"--data {path} is not a readable .npz file: {exc}") from exc
    if "x" not in d:
        raise DataError(f"--data {path} has no array 'x' (found {list(d.keys())}); save it with np.savez(f, x=..., y=...)")
    return d["x"], (d["y"] if "y" in d else None)


@app.command()
def verify(plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
           data: Annotated[Path | None, typer.Option("--data", help=".npz with 'x' (and 'y' labels).")] = None,
           samples: Annotated[int, typer.Option("--samples", "-n", help="Number of samples.")] = 200,
           seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
           json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Check that the chained per-board C-simulations equal the whole model's, bit for bit."""
    import numpy as np

    from .errors import DataError
    from .plan.api import load_plan
    from .verify import random_inputs, verify_plan

    if samples < 1:
        raise DataError(f"--samples must be at least 1, got {samples}")
    p, g = load_plan(plan_file)
    in_shape = g.input.output_shape
    if data is not None:
        x, y = _load_data(data)
        if tuple(x.shape[1:]) != tuple(in_shape):
            if x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(in_shape)):
                x = x.reshape((x.shape[0], *in_shape))
            else:
                raise DataError(f"--data x has sample shape {tuple(x.shape[1:])}, the model input is {tuple(in_shape)}")
        x, y = x[:samples], (y[:samples] if y is not None else None)
    else:
        x, y = random_inputs(p.build.input_precision, in_shape, samples, seed=seed), None
    with _progress(not (quiet or json_out)) as cb:
        res = verify_plan(p, g, x, y, progress=cb)
    d = res.as_dict()
    if json_out:
        _emit_json(d)
    else:
        _print_verify(d)
    if not res.bit_exact:
        raise typer.Exit(1)


def _print_verify(d: dict[str, Any]) -> None:
    ok = d["bit_exact"]
    style = "bold green" if ok else "bold red"
    out.print(f"[{style}]{'BIT-EXACT' if ok else 'MISMATCH'}[/]: {d['samples']} samples through {d['n_stages']} "
              f"stages; {d['mismatched_samples']} mismatched, max |diff| {d['max_abs_diff']:g}")
    ref = d.get("reference")
    if ref:
        via = f", via {ref['via']}" if ref.get("via") else ""
        out.print(f"reference: {ref['converter']}({ref['model']}){via}")
    fw = d.get("framework_agreement")
    if fw:
        out.print(f"{fw['framework']} itself: {fw['matching_samples']} of {fw['samples']} samples identical, "
                  f"max |diff| {fw['max_abs_diff']:g}")
    if d.get("fixed_accuracy") is not None:
        fa = d.get("float_accuracy")
        out.print(f"accuracy: fixed-point {d['fixed_accuracy']:.2%}"
                  + (f", float (framework) {fa:.2%}" if fa is not None else ""))


@app.command()
def demo(output: Annotated[Path, typer.Option("-o", "--output", help="Working directory.")] = Path("split4ml-demo"),
         samples: Annotated[int, typer.Option("--samples", "-n", help="Test samples to verify.")] = 500,
         stages: Annotated[int, typer.Option(
             "--stages", min=0, help="Boards to split across (default 3, to show a split; 0 = the planner's "
             "own choice, which fits this small network on one board at a higher reuse factor).")] = 3,
         json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """The original work's MNIST network, trained, planned, built and verified across PYNQ-Z2 boards."""
    from .demo import run_demo

    with _progress(not (quiet or json_out)) as cb:
        res = run_demo(output, samples=samples, n_stages=stages or None, progress=cb,
                       log=(lambda s: None) if (json_out or quiet) else (lambda s: err.print(s)))
    if json_out:
        _emit_json(res)
    else:
        from .plan.api import load_plan

        print_plan(load_plan(res["plan_file"])[0])
        _print_verify(res["verify"])
        out.print(f"hls4ml projects: {res['build']['out_dir']}")
    if not res["verify"]["bit_exact"]:
        raise typer.Exit(1)


@app.command()
def node(plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan .yaml, or the pipeline.json 'run' writes.")],
         stage: Annotated[str, typer.Option("--stage", help="Node id (e.g. stage_1) or index.")],
         bind_address: Annotated[str, typer.Option("--bind", help="Input address, e.g. tcp://0.0.0.0:5555.")],
         connect_to: Annotated[list[str] | None, typer.Option(
             "--connect", help="Consumer address, ID=tcp://HOST:PORT (ID: a node id or 'sink'); repeat per consumer.")]
         = None,
         driver: Annotated[str, typer.Option("--driver", help="csim, pynq or reference.")] = "csim",
         stats: Annotated[str | None, typer.Option("--stats", help="The launcher's statistics address.")] = None,
         bitstream: Annotated[str | None, typer.Option("--bitstream", help="pynq: the stage's .bit (.hwh beside it).")]
         = None,
         reference_mode: Annotated[str, typer.Option("--reference-mode", help="reference: fixed or float.")] = "fixed",
         hwm: Annotated[int, typer.Option("--hwm", help="High-water mark of every socket, frames.")] = 16,
         idle_exit: Annotated[float | None, typer.Option("--idle-exit", help="Exit after S seconds without frames.")]
         = None,
         incarnation: Annotated[int, typer.Option("--incarnation", hidden=True)] = 0,
         replaces: Annotated[int | None, typer.Option("--replaces", hidden=True)] = None,
         parent_pid: Annotated[int | None, typer.Option("--parent-pid", hidden=True)] = None,
         die_after: Annotated[int | None, typer.Option("--die-after", hidden=True)] = None,
         hang_after: Annotated[int | None, typer.Option("--hang-after", hidden=True)] = None,
         corrupt_at: Annotated[int | None, typer.Option("--corrupt-at", hidden=True)] = None,
         pace: Annotated[Path | None, typer.Option(
             "--pace", help="Pace file written by 'run --emulate --pace': run at the model's speed, stretched.")]
         = None,
         max_batch: Annotated[int | None, typer.Option(
             "--max-batch", help="Reject frames of more samples than this (the run's batch).")] = None,
         keys: Annotated[Path | None, typer.Option(
             "--keys", help="Keys folder from 'split4ml keys': CURVE-encrypted, authenticated links.")] = None,
         json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Run one board's piece: receive frames, run the stage, send the result downstream."""
    from .runtime.drivers import DRIVERS
    from .runtime.node import NodeOptions, serve_node

    driver = choice(driver, DRIVERS, "--driver", Split4mlError)
    connect: dict[str, str] = {}
    for item in connect_to or []:
        key, sep, addr = item.partition("=")
        if not sep:
            key, addr = "", item
        connect[key] = addr
    from .runtime.spec import node_spec

    spec = node_spec(plan_file, stage, driver)
    me = spec.node(stage)
    node_pace, factor = None, 1.0
    if pace is not None:
        from .runtime.pace import read_pace

        model = read_pace(pace)
        if me.id not in model.nodes or model.factor is None:
            raise Split4mlError(f"--pace {pace}: has no figures for node {me.id} (or no factor); use the pace file "
                                "'split4ml run --pace' wrote for this pipeline")
        node_pace, factor = model.nodes[me.id], model.factor
    if not (quiet or json_out):
        err.print(f"node {me.id} ({driver}): listening on {bind_address}, sending to {connect or '-'}")
    res = serve_node(spec, NodeOptions(node=me.id, bind=bind_address, connect=connect, driver=driver, stats=stats,
                                       hwm=hwm, reference_mode=reference_mode, bitstream=bitstream,
                                       die_after=die_after, hang_after=hang_after, corrupt_at=corrupt_at,
                                       parent_pid=parent_pid,
                                       idle_exit_s=idle_exit, incarnation=incarnation, pace=node_pace,
                                       pace_factor=factor, max_batch=max_batch,
                                       keys=str(keys) if keys is not None else None, replaces=replaces))
    if json_out:
        _emit_json(res)
    elif not quiet:
        out.print(f"node {me.id}: {res['frames']} frames, {res['samples']} samples, busy {res['busy_s']:.3f} s, "
                  f"rejected {res['rejected_total']}")


def _print_run(d: dict[str, Any]) -> None:
    ok = d["bit_exact"] and d["completed"]
    style = "bold green" if ok else "bold red"
    verdict = "BIT-EXACT" if ok else ("MISMATCH" if d["mismatched_samples"] else "INCOMPLETE")
    out.print(f"[{style}]{verdict}[/]: {d['delivered']} of {d['samples']} samples delivered "
              f"(checked against the {d['reference']}); lost {d['lost']}, duplicated {d['duplicated']} (dropped "
              f"at the sink), rejected {d['rejected']}, restarts {d['restarts']}")
    out.print(f"throughput {d['throughput_per_s']:,.0f} samples/s; latency p50 {d['latency_us']['p50']:,.0f} us, "
              f"p99 {d['latency_us']['p99']:,.0f} us; frames sent {d['sent_frames']}, received "
              f"{d['received_frames']}, re-sent {d['resent_frames']} (batch {d['batch']})")
    if d.get("pace") is not None:
        pred, meas = d["predicted_throughput_per_s"], d["steady_throughput_per_s"]
        out.print(f"paced {d['pace']:g}x: the model predicts {pred:,.1f} samples/s ({d['pace_bottleneck']}-bound), "
                  f"measured {meas:,.1f} samples/s once the pipeline was full ({meas / pred:.1%} of the prediction); "
                  f"on the boards: {pred * d['pace']:,.0f} samples/s predicted", highlight=False)
        if d.get("pace_overruns"):
            out.print(f"[yellow]note:[/] {d['pace_overruns']} frames took longer in the C-simulation than their "
                      "paced fabric time; a larger --pace factor measures the model more faithfully", highlight=False)
    t = Table(title="nodes")
    for c in ("node", "driver", "frames", "samples", "busy", "rejected", "restarts"):
        t.add_column(c, justify="left" if c in ("node", "driver") else "right")
    for s in d["stages"]:
        t.add_row(s["id"], s["driver"], f"{s['frames']:,}", f"{s['samples']:,}", f"{s['busy_fraction']:.0%}",
                  str(s["rejected"]), str(s["restarts"]))
    out.print(t)
    for f in d["faults"]:
        out.print(f"[yellow]fault:[/] {f}", highlight=False)
    if d["failure"]:
        fl = d["in_flight"]
        shown = ", ".join(map(str, fl[:20])) + (" ..." if len(fl) > 20 else "")
        out.print(f"[bold red]stopped:[/] {d['failure']}", highlight=False)
        out.print(f"completed {d['delivered']} samples; in flight {len(fl)} [{shown}]; not sent {d['not_sent']}")
    if not d.get("encrypted", False):
        out.print("links: plain TCP, neither encrypted nor authenticated", style="dim")
    if d.get("resumed"):
        out.print(f"resumed: {d['resumed']} samples came from the journal of the earlier run")
    if d.get("results"):
        out.print(f"results journal: {d['results']}/results.bin (every delivered batch, once)")
    if d.get("workdir"):
        out.print(f"spec and node logs: {d['workdir']}")


@app.command("keys")
def keys_cmd(directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write the keys into.")],
             plan_file: Annotated[Path | None, typer.Option(
                 "--plan", help="Make keys for the launcher and every node of this plan.")] = None,
             names: Annotated[list[str] | None, typer.Option("--names", help="Make keys for these parties.")] = None,
             json_out: JsonOpt = False) -> None:
    """Make the CURVE key pairs of a run: DIR/public/<name>.key for every party, DIR/secret/<name>.key_secret
    for each (copy a node's own secret key to its board only)."""
    from .boards import SAFE_NAME
    from .runtime.security import LAUNCHER, make_keys

    parties: list[str] = list(names or [])
    if plan_file is not None:
        from .lower import plan_pipeline
        from .plan.api import load_plan

        p, g = load_plan(plan_file)
        pipeline, _ = plan_pipeline(p, g)
        parties += [LAUNCHER, *(n.id for n in pipeline.nodes)]
    if not parties:
        raise Split4mlError("give --plan PLAN (the launcher and every node) or --names NAME ...")
    for n in parties:
        if not SAFE_NAME.fullmatch(n):
            raise Split4mlError(f"--names {n!r}: a party name holds only letters, digits, '.', '_' and '-'")
    written = make_keys(directory, dict.fromkeys(parties))
    if json_out:
        _emit_json({"directory": str(directory), "parties": list(dict.fromkeys(parties)), "written": written})
        return
    out.print(f"{len(written)} key pair(s) written to {directory} ({', '.join(written) or 'all existed'}); give each "
              f"board {directory}/public/ and its own {directory}/secret/<node>.key_secret, and run with --keys "
              f"{directory}")


@app.command()
def run(plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
        emulate: Annotated[bool, typer.Option("--emulate", help="Every node as a local process (C-sim driver).")]
        = False,
        hosts: Annotated[Path | None, typer.Option("--hosts", help="hosts.yaml: drive real hosts.")] = None,
        data: Annotated[Path | None, typer.Option("--data", help=".npz with 'x'.")] = None,
        samples: Annotated[int, typer.Option("--samples", "-n", help="Number of samples.")] = 200,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs.")] = 0,
        batch: Annotated[int | None, typer.Option("--batch", help="Samples per frame (default: the plan's).")] = None,
        restart: Annotated[bool, typer.Option("--restart", help="Restart a node that dies; finish the run.")] = False,
        chaos: Annotated[list[str] | None, typer.Option(
            "--chaos", help="Inject a fault: kill:STAGE@N (kill after N frames), hang:STAGE@N (stop it there) or "
            "corrupt:STAGE@N.")] = None,
        driver: Annotated[str, typer.Option("--driver", help="--emulate: csim or reference.")] = "csim",
        timeout: Annotated[float | None, typer.Option("--timeout", help="Stop after this many seconds.")] = None,
        start_timeout: Annotated[float | None, typer.Option(
            "--start-timeout", help="Seconds for the nodes to report (default 60; 600 with --hosts).")] = None,
        workdir: Annotated[Path | None, typer.Option(
            "--workdir", "-o", help="Keep the spec, the node logs and the results journal (every delivered batch, "
            "written as it arrives) here.")] = None,
        resume: Annotated[Path | None, typer.Option(
            "--resume", help="Continue the run whose -o folder this is: send only the samples its journal lacks.")]
        = None,
        keys: Annotated[Path | None, typer.Option(
            "--keys", help="Keys folder from 'split4ml keys': every link CURVE-encrypted and authenticated (--hosts: "
            "or the hosts file's 'keys').")] = None,
        pace: Annotated[str | None, typer.Option(
            "--pace", metavar="[FACTOR]", help="--emulate: pace every node and link to the plan's figures, stretched "
            "FACTOR times (alone: chosen so every C-simulation fits), and print the model's prediction beside the "
            "measurement.")] = None,
        json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Stream samples through the pipeline of a plan, check them bit for bit, and measure it."""
    import numpy as np

    from .errors import DataError
    from .lower import plan_pipeline
    from .plan.api import load_plan
    from .runtime.drivers import DRIVERS
    from .runtime.pace import pace_model
    from .runtime.run import Chaos, RunOptions, run_pipeline
    from .verify import random_inputs

    if emulate == (hosts is not None):
        raise Split4mlError("give exactly one of --emulate (every node on this machine) or --hosts hosts.yaml")
    if pace is not None and not emulate:
        raise Split4mlError("--pace paces an emulated run; use it with --emulate")
    if samples < 1 or (batch is not None and batch < 1):
        raise DataError(f"--samples and --batch must be at least 1, got {samples} and {batch}")
    p, g = load_plan(plan_file)
    pipeline, whole = plan_pipeline(p, g)
    if data is not None:
        x, _ = _load_data(data)
        x = x[:samples]
    else:
        x = random_inputs(p.build.input_precision, g.input.output_shape, samples, seed=seed)
    run_batch = batch if batch is not None else p.batch
    paced = None
    if pace is not None:
        paced = pace_model(p, pipeline, run_batch)
        if pace != PACE_AUTO:
            try:
                paced = paced.with_factor(float(pace))
            except ValueError:
                raise Split4mlError(f"--pace {pace!r}: expected a positive number (the stretch factor), or --pace "
                                    "alone to let split4ml choose it") from None
    if resume is not None:
        if workdir is not None and workdir != resume:
            raise Split4mlError(f"--resume {resume} continues the run kept there; leave out -o {workdir}")
        workdir = resume
    opts = RunOptions(batch=run_batch, pace=paced, keys=keys, results=workdir, resume=resume is not None,
                      driver=choice(driver, DRIVERS, "--driver", Split4mlError), restart=restart,
                      chaos=tuple(Chaos.parse(c) for c in chaos or []),
                      timeout_s=timeout, workdir=workdir,
                      start_timeout_s=start_timeout if start_timeout is not None else (600.0 if hosts else 60.0))
    with _progress(not (quiet or json_out)) as cb:
        if hosts is not None:
            from .runtime.hosts import format_launches, read_hosts, run_hosts

            h = read_hosts(hosts)
            for w in h.warnings():
                err.print(f"[yellow]warning:[/] {w}", highlight=False)

            def announce(launches: Any) -> None:
                if h.launch == "print" and not json_out:
                    spec_file = (workdir or Path("split4ml-run")) / "pipeline.json"
                    err.print(f"copy {spec_file} to each host's working directory, then start these there "
                              "(waiting for them to report):")
                    for line in format_launches(launches):
                        err.print(line, highlight=False, soft_wrap=True)

            res = run_hosts(pipeline, np.asarray(x), h, whole=whole, plan_path=str(plan_file), options=opts,
                            progress=cb, announce=announce, out_dir=workdir or Path("split4ml-run"))
        else:
            res = run_pipeline(pipeline, np.asarray(x), whole=whole, options=opts, progress=cb)
    d = res.as_dict()
    if json_out:
        _emit_json(d)
    else:
        _print_run(d)
    if not res.ok:
        raise typer.Exit(1)


@app.command()
def report(plan_file: Annotated[Path, typer.Argument(metavar="PLAN")],
           verify_json: Annotated[Path | None, typer.Option(
               "--verify-json", help="Show this 'split4ml verify --json' result.")] = None,
           run_json: Annotated[Path | None, typer.Option(
               "--run-json", help="Show this 'split4ml run --json' result.")] = None,
           output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")] = Path("report.html"),
           png: Annotated[Path | None, typer.Option("--png", help="Also write the figures as PNG files here.")]
           = None,
           json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Write a self-contained HTML report of a plan: boards, resources, timeline, performance model."""
    from .plan.api import load_plan
    from .report import read_run_json, read_verify_json, write_report

    verify_res = read_verify_json(verify_json) if verify_json is not None else None
    run_res = read_run_json(run_json) if run_json is not None else None
    show = not (quiet or json_out)
    with _step(show, f"reading {plan_file.name} and its model"):
        p, g = load_plan(plan_file)
    with _progress(show) as cb:
        res = write_report(p, g, output, verify=verify_res, run=run_res, png_dir=png, plan_path=str(plan_file),
                           progress=cb)
    if json_out:
        _emit_json(res.as_dict())
        return
    out.print(f"wrote {res.html}")
    for f in res.figures:
        out.print(f"wrote {f}")


@app.command()
def calibrate(
    reports: Annotated[list[Path], typer.Argument(
        metavar="REPORTS...", help="Build directories written by 'split4ml build' (after the vendor build ran in "
        "them), or stage project directories inside one.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Calibration file to write.")] = Path("calib.yaml"),
    estimator: EstimatorOpt = "analytic",
    stage: Annotated[str, typer.Option(
        "--stage", help="Report figures to fit: auto (Vivado synthesis where every design has it, else HLS), hls, "
        "synth.")] = "auto",
    mode: Annotated[str, typer.Option(
        "--mode", help="power (factor * estimate ** exponent, log-scale fit) or scale (factor only).")] = "power",
    json_out: JsonOpt = False,
) -> None:
    """Fit per-resource corrections of an estimator from real Vivado/Vitis HLS synthesis reports."""
    from rich.markup import escape

    from .build_reports import calibrate_from_reports
    from .estimate.calibrate import METRICS
    from .plan.api import get_estimator

    if estimator not in ("analytic", "rule4ml"):
        raise Split4mlError(f"--estimator {estimator!r}: calibrate fits analytic or rule4ml")
    with _estimator_warnings(not json_out):
        cal, got = calibrate_from_reports(reports, get_estimator(estimator), stage=stage, mode=mode)
    cal.write(output)
    data = {**cal.to_dict(), "calibration_file": str(output),
            "skipped": [{"path": p, "reason": why} for p, why in got.skipped]}
    if json_out:
        _emit_json(data)
        return
    flavour = f" ({cal.report_model} model)" if cal.estimator == "analytic" else ""
    t = Table(title=f"Calibration of the {cal.estimator} estimator{flavour} on {len(got.points)} design(s), "
              f"{cal.stage} figures")
    for c in ("metric", "factor", "exponent", "designs", "zero", "MdAPE before", "MdAPE after"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for m in METRICS:
        c = cal.corrections.get(m)
        if c is None:
            t.add_row(m, "-", "-", "0", "", "", "")
            continue
        t.add_row(m, f"{c.factor:.4g}", f"{c.exponent:.3f}", str(c.n), str(c.n_zero), f"{c.mdape_before:.1f} %",
                  f"{c.mdape_after:.1f} %")
    out.print(t)
    for p, why in got.skipped:
        err.print(f"[yellow]skipped[/] {escape(p)}: {escape(why)}", highlight=False)
    out.print(f"wrote {output}; use it with: split4ml plan MODEL --calibration {output}")


#: ``run --pace`` given without a factor.
PACE_AUTO = "auto"


def optional_values(args: list[str]) -> list[str]:
    """``args`` with :data:`PACE_AUTO` after a ``run --pace`` that has no factor (click options take a
    value or none, not an optional one): the next word is a factor when it is a number or ``auto``."""
    words = [a for a in args if not a.startswith("-")]
    if not words or words[0] != "run":
        return args
    out: list[str] = []
    for k, a in enumerate(args):
        out.append(a)
        if a == "--pace":
            nxt = args[k + 1] if k + 1 < len(args) else None
            try:
                is_value = nxt is not None and (nxt == PACE_AUTO or float(nxt) == float(nxt))
            except ValueError:
                is_value = False
            if not is_value:
                out.append(PACE_AUTO)
    return out


def main() -> None:
    """Entry point: run the app, turn split4ml errors into a message and exit code 2."""
    sys.argv[1:] = optional_values(sys.argv[1:])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow's oneDNN notice is printed before its log level applies; the option also makes
    # Keras float results reproducible run to run.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        rc = app(standalone_mode=False)
    except Split4mlError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc.format_message()}", highlight=False)
        sys.exit(exc.exit_code if exc.exit_code else 2)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
