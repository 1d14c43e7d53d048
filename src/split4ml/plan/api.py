"""Planning entry points: make a plan for a model, or resolve (validate and complete) a plan file.

Both paths end in :func:`assemble`, so a generated plan and a hand-written one are checked and
priced by exactly the same code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..boards import Board, get_board
from ..errors import InfeasibleError, PlanError
from ..estimate.base import Cost, Estimator
from ..fixed import FixedType
from ..ir import COMPUTE_KINDS, Graph, Layer
from ..settings import STRATEGIES, BuildSettings, LayerPrecision, LayerSettings
from ..split import Pipeline, Stage, linear_pipeline, make_stages, whole_model_stage
from .metrics import pipeline_metrics
from .model import OBJECTIVES, Plan, PlanSpec, StagePlan, Wire, file_sha256, read_plan_spec


def get_estimator(name: str) -> Estimator:
    """The estimator called ``name`` (``analytic`` is the default)."""
    if name == "analytic":
        from ..estimate.analytic import AnalyticEstimator

        return AnalyticEstimator()
    raise PlanError(f"unknown estimator {name!r}; available: analytic")


def precision_family(precision: FixedType) -> BuildSettings:
    """Build settings for ``--precision``: weights, biases and accumulators in ``precision``;
    results and the model input with the same width, rounded (RND_CONV) and saturated."""
    p = FixedType(precision.width, precision.integer, precision.signed)
    r = FixedType(precision.width, precision.integer, precision.signed, rounding="RND_CONV", saturation="SAT")
    return BuildSettings(default_precision=p, result_precision=r, accum_precision=p, input_precision=r)


def _hls_precision(value: Any, where: str) -> LayerPrecision | FixedType:
    if isinstance(value, Mapping):
        known = {"weight", "bias", "result", "accum"}
        extra = set(value) - known
        if extra:
            raise PlanError(f"{where}: split4ml sets only {sorted(known)} precisions; remove {sorted(extra)}")
        return LayerPrecision.from_dict({k: str(v) for k, v in value.items()}, where=where)
    try:
        return FixedType.parse(str(value))
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from exc


def parse_hls_config(cfg: Mapping[str, Any], build: BuildSettings,
                     ) -> tuple[BuildSettings, int | None, str | None, dict[str, dict[str, Any]]]:
    """Read an hls4ml-style config (``Model`` and ``LayerName`` sections).

    Returns build settings, global reuse factor, global strategy, and per-layer overrides
    (``{"reuse_factor", "strategy", "precision"}``) for :func:`choose_settings`.
    """
    if not isinstance(cfg, Mapping):
        raise PlanError("--config: expected a mapping with 'Model' and/or 'LayerName' sections")
    unknown = set(cfg) - {"Model", "LayerName", "IOType"}
    if unknown:
        raise PlanError(f"--config: unknown section(s) {sorted(unknown)}; split4ml reads Model, LayerName, IOType")
    model = cfg.get("Model") or {}
    rf = model.get("ReuseFactor")
    strategy = model.get("Strategy")
    if strategy is not None:
        strategy = str(strategy).capitalize()
        if strategy not in STRATEGIES:
            raise PlanError(f"--config Model.Strategy: {model['Strategy']!r} is not one of {STRATEGIES}")
    if "Precision" in model:
        p = model["Precision"]
        if isinstance(p, Mapping):
            p = p.get("default", build.default_precision)
        t = _hls_precision(p, "--config Model.Precision")
        if isinstance(t, FixedType):
            build = BuildSettings(io_type=build.io_type, default_precision=t, result_precision=t, accum_precision=t,
                                  input_precision=t)
    io = cfg.get("IOType") or model.get("IOType")
    if io is not None:
        build = BuildSettings(io_type=str(io), default_precision=build.default_precision,
                              result_precision=build.result_precision, accum_precision=build.accum_precision,
                              input_precision=build.input_precision)
    overrides: dict[str, dict[str, Any]] = {}
    for name, lc in (cfg.get("LayerName") or {}).items():
        where = f"--config LayerName.{name}"
        if not isinstance(lc, Mapping):
            raise PlanError(f"{where}: expected a mapping")
        o: dict[str, Any] = {}
        if "ReuseFactor" in lc:
            o["reuse_factor"] = int(lc["ReuseFactor"])
        if "Strategy" in lc:
            o["strategy"] = str(lc["Strategy"]).capitalize()
        if "Precision" in lc:
            p = _hls_precision(lc["Precision"], f"{where}.Precision")
            if isinstance(p, FixedType):
                p = LayerPrecision(weight=p, bias=p, result=p, accum=p)
            o["precision"] = p
        overrides[name] = o
    return build, (int(rf) if rf is not None else None), strategy, overrides


def align_passthrough(graph: Graph, settings: dict[str, LayerSettings]) -> dict[str, LayerSettings]:
    """Give every Flatten the result type of its producer.

    hls4ml's io_parallel Flatten only renames its input, so its output carries the producer's
    type whatever its config says; a stage that ended at a Flatten with another declared type
    would send a wire of the wrong type.
    """
    prev: Layer | None = None
    for lyr in graph.body:
        if lyr.kind == "Flatten" and prev is not None:
            s = settings[lyr.name]
            want = settings[prev.name].precision.result
            if s.precision.result != want:
                settings[lyr.name] = replace(s, precision=replace(s.precision, result=want))
        prev = lyr
    return settings


def _unit_of(graph: Graph) -> dict[str, int]:
    return {lyr.name: i for i, unit in enumerate(graph.units()) for lyr in unit}


def _wire_type(settings: Mapping[str, LayerSettings], layer: Layer) -> FixedType:
    return settings[layer.name].precision.result


def assemble(graph: Graph, *, model: str, model_sha256: str | None, board: Board, cap: float, objective: str,
             estimator: Estimator, build: BuildSettings, stage_layers: Sequence[Sequence[str]],
             stage_boards: Sequence[Board], settings: Mapping[str, LayerSettings],
             where: Sequence[str] | None = None, board_files: Sequence[str] = (),
             base_dir: Path = Path(".")) -> Plan:
    """Price, check and package a partition as a :class:`Plan`.

    Checks that stages cover the model's layers once each, in order; that no stage starts with an
    activation separated from its producer; and that every stage fits its board under ``cap``.
    """
    if not graph.is_chain:
        raise PlanError(f"model {graph.name!r} is not a chain of layers; only chains can be planned for now")
    where = list(where) if where is not None else [f"stages[{i}]" for i in range(len(stage_layers))]
    body = [lyr.name for lyr in graph.body]
    flat = [n for names in stage_layers for n in names]
    for i, names in enumerate(stage_layers):
        for j, n in enumerate(names):
            if n not in graph or graph.layer(n).kind == "Input":
                raise PlanError(f"{where[i]}.layers[{j}]: layer {n!r} is not in the model; its layers are {body}")
    seen: set[str] = set()
    for i, names in enumerate(stage_layers):
        for j, n in enumerate(names):
            if n in seen:
                raise PlanError(f"{where[i]}.layers[{j}]: layer {n!r} is listed twice; each layer runs on one board")
            seen.add(n)
    missing = [n for n in body if n not in seen]
    if missing:
        raise PlanError(f"stages: layers {missing} are on no board; add them to a stage (in model order)")
    if flat != body:
        k = next(i for i, (a, b) in enumerate(zip(flat, body, strict=True)) if a != b)
        raise PlanError(f"stages: layer {flat[k]!r} comes where {body[k]!r} should; stages must hold contiguous runs "
                        f"of layers in model order: {body}")
    unit_of = _unit_of(graph)
    for i, names in enumerate(stage_layers[1:], start=1):
        first = graph.layer(names[0])
        prev = stage_layers[i - 1][-1]
        if unit_of[first.name] == unit_of[prev]:
            raise PlanError(f"{where[i]}.layers[0]: activation {first.name!r} must stay on the same board as "
                            f"{prev!r}, which produces its input; move it to {where[i - 1]}")
    costs: list[Cost] = []
    stages: list[StagePlan] = []
    in_wire = Wire(build.input_precision, graph.input.output_shape)
    bytes_in = in_wire.bytes_per_sample
    for i, (names, b) in enumerate(zip(stage_layers, stage_boards, strict=True)):
        layers = [graph.layer(n) for n in names]
        cost = estimator.segment_cost(layers, settings, build.io_type, b)
        over = cost.overflow(b, cap)
        if over:
            detail = ", ".join(f"{r.upper()} {v * 100:.0f}% of the cap" for r, v in over.items())
            raise InfeasibleError(
                f"{where[i]} (board {b.name}, layers {list(names)}) does not fit: {detail} "
                f"(cap {cap:.0%}). Move layers to another stage, raise their reuse_factor, use the Resource "
                "strategy, lower the precision, or use a bigger board.")
        out_wire = Wire(_wire_type(settings, layers[-1]), layers[-1].output_shape)
        costs.append(cost)
        stages.append(StagePlan(index=i, board=b, layers=tuple(names), settings={n: settings[n] for n in names},
                                cost=cost, input=in_wire, output=out_wire))
        in_wire = out_wire
    metrics = pipeline_metrics(costs, list(stage_boards), bytes_in, [s.output.bytes_per_sample for s in stages])
    return Plan(model=model, model_sha256=model_sha256, board=board, cap=cap, objective=objective,
                estimator=getattr(estimator, "name", "analytic"), build=build, stages=tuple(stages),
                metrics=metrics, board_files=tuple(board_files), base_dir=base_dir)


def _raise_reuse_floor(graph: Graph, settings: dict[str, LayerSettings], free: Sequence[str], io_type: str,
                       partition: Any) -> tuple[dict[str, LayerSettings], Any] | None:
    """The smallest common reuse-factor floor (bisection) under which ``partition`` succeeds."""
    from ..estimate import hls_rules

    layers = [graph.layer(n) for n in free]

    def at_floor(floor: int, strategy: str | None) -> dict[str, LayerSettings]:
        out = dict(settings)
        for lyr in layers:
            s = settings[lyr.name]
            st = strategy or s.strategy
            valid = hls_rules.valid_reuse_factors(lyr, st, io_type)
            rf = next((v for v in valid if v >= max(floor, s.reuse_factor)), valid[-1])
            out[lyr.name] = replace(s, reuse_factor=rf, strategy=st)
        return out

    def attempt(sets: dict[str, LayerSettings]) -> Any:
        try:
            return partition(sets)
        except InfeasibleError:
            return None

    for strategy in (None, "Resource"):
        floors = sorted({v for lyr in layers
                         for v in hls_rules.valid_reuse_factors(lyr, strategy or settings[lyr.name].strategy, io_type)})
        if not floors or attempt(at_floor(floors[-1], strategy)) is None:
            continue
        lo, hi = 0, len(floors) - 1  # feasible at floors[hi]; find the smallest feasible floor
        while lo < hi:
            mid = (lo + hi) // 2
            if attempt(at_floor(floors[mid], strategy)) is not None:
                hi = mid
            else:
                lo = mid + 1
        sets = at_floor(floors[lo], strategy)
        return sets, partition(sets)
    return None


def make_plan(graph: Graph, *, model: str | Path, board: Board, cap: float = 0.85, objective: str = "throughput",
              max_boards: int | None = None, n_stages: int | None = None, reuse_factor: int | None = None,
              strategy: str | None = None, hls_config: Mapping[str, Any] | None = None,
              build: BuildSettings | None = None, estimator: str = "analytic",
              board_files: Sequence[str] = ()) -> Plan:
    """Plan the optimal pipeline of ``graph`` on boards of type ``board``."""
    from .partition import partition_chain
    from .reuse import choose_settings

    if objective not in OBJECTIVES:
        raise PlanError(f"--objective {objective!r} is not one of {OBJECTIVES}")
    if not 0 < cap <= 1:
        raise PlanError(f"--cap must be in (0, 1], got {cap}")
    if not graph.is_chain:
        raise PlanError(f"model {graph.name!r} is not a chain of layers; only chains can be planned for now")
    build = build or BuildSettings()
    overrides: dict[str, dict[str, Any]] = {}
    if hls_config:
        build, cfg_rf, cfg_strategy, overrides = parse_hls_config(hls_config, build)
        reuse_factor = reuse_factor if reuse_factor is not None else cfg_rf
        strategy = strategy if strategy is not None else cfg_strategy
    est = get_estimator(estimator)
    settings = align_passthrough(graph, choose_settings(graph, board, cap, est, build, reuse_factor=reuse_factor,
                                                        strategy=strategy, overrides=overrides))
    units = graph.units()
    free = [lyr.name for lyr in graph.body
            if lyr.kind in COMPUTE_KINDS and reuse_factor is None and "reuse_factor" not in overrides.get(lyr.name, {})]

    def partition(sets: Mapping[str, LayerSettings]) -> Any:
        unit_costs = []
        for unit in units:
            c = Cost()
            for lyr in unit:
                c = c + est.layer_cost(lyr, sets[lyr.name], build.io_type, board)
            unit_costs.append(c)
        bytes_out = [math.prod(u[-1].output_shape) * _wire_type(sets, u[-1]).storage_bytes for u in units]
        bytes_in = math.prod(graph.input.output_shape) * build.input_precision.storage_bytes
        return partition_chain(unit_costs, bytes_in, bytes_out, board, cap, objective=objective,
                               max_boards=max_boards, n_stages=n_stages, unit_names=[u[0].name for u in units],
                               shell=est.shell_cost(board))

    try:
        part = partition(settings)
    except InfeasibleError:
        # Each layer got the smallest reuse factor that fits a board alone. If --boards/--stages
        # asks for fewer boards than that allows, raise the free reuse factors to a common floor,
        # the smallest that admits a plan (joint search comes with the design-space planner).
        found = _raise_reuse_floor(graph, settings, free, build.io_type, partition) if free else None
        if found is None:
            raise
        settings, part = found
    stage_layers = [tuple(lyr.name for u in units[a:b] for lyr in u)
                    for a, b in zip(part.bounds, part.bounds[1:], strict=False)]
    model_path = Path(model)
    sha = file_sha256(model_path) if model_path.is_file() else None
    return assemble(graph, model=str(model_path.resolve()) if model_path.exists() else str(model), model_sha256=sha,
                    board=board, cap=cap, objective=objective, estimator=est, build=build,
                    stage_layers=stage_layers, stage_boards=[board] * len(stage_layers), settings=settings,
                    board_files=board_files)


def resolve_plan(spec: PlanSpec, graph: Graph) -> Plan:
    """Validate a plan file against its model and fill in what it leaves out."""
    from .fit import fit_stage
    from .reuse import choose_settings

    try:
        board = get_board(spec.board, spec.board_files)
    except Exception as exc:
        raise PlanError(f"board: {exc}") from exc
    boards = []
    for st in spec.stages:
        try:
            boards.append(get_board(st.board or spec.board, spec.board_files))
        except Exception as exc:
            raise PlanError(f"{st.where}.board: {exc}") from exc
    overrides: dict[str, dict[str, Any]] = {}
    for st in spec.stages:
        for ls in st.layers:
            if ls.name not in graph:
                raise PlanError(f"{ls.where}: layer {ls.name!r} is not in the model; its layers are "
                                f"{[lyr.name for lyr in graph.body]}")
            o: dict[str, Any] = {}
            if ls.reuse_factor is not None:
                o["reuse_factor"] = ls.reuse_factor
            if ls.strategy is not None:
                o["strategy"] = ls.strategy
            if ls.precision is not None:
                o["precision"] = ls.precision
            if o:
                overrides[ls.name] = o
    est = get_estimator(spec.estimator)
    try:
        settings = choose_settings(graph, board, spec.cap, est, spec.build, reuse_factor=spec.reuse_factor,
                                   strategy=spec.strategy, overrides=overrides)
    except PlanError as exc:
        raise PlanError(f"stages: {exc}") from exc
    settings = align_passthrough(graph, settings)
    for st, b in zip(spec.stages, boards, strict=True):
        layers = [graph.layer(ls.name) for ls in st.layers]
        free = [ls.name for ls in st.layers if ls.name not in overrides or "reuse_factor" not in overrides[ls.name]]
        if spec.reuse_factor is None:
            settings.update(fit_stage(layers, settings, free, b, spec.cap, est, spec.build.io_type))
    if spec.model_sha256 and spec.model_path.is_file() and file_sha256(spec.model_path) != spec.model_sha256:
        raise PlanError(f"model_sha256: {spec.model_path} has changed since this plan was made; re-plan it, or "
                        "delete the model_sha256 line if the change is intended")
    return assemble(graph, model=spec.model, model_sha256=spec.model_sha256, board=board, cap=spec.cap,
                    objective=spec.objective, estimator=est, build=spec.build,
                    stage_layers=[tuple(ls.name for ls in st.layers) for st in spec.stages], stage_boards=boards,
                    settings=settings, where=[st.where for st in spec.stages], board_files=spec.board_files,
                    base_dir=spec.base_dir)


def load_plan(path: str | Path) -> tuple[Plan, Graph]:
    """Read a plan file, load its model, and validate the plan against it."""
    from ..frontends import load_model

    spec = read_plan_spec(path)
    if not spec.model_path.exists():
        raise PlanError(f"model: {spec.model_path} does not exist; fix the 'model' path in {path}")
    graph = load_model(spec.model_path)
    return resolve_plan(spec, graph), graph


def plan_pipeline(plan: Plan, graph: Graph) -> tuple[Pipeline, Stage]:
    """The boards of a plan as a :class:`~split4ml.split.Pipeline`, and the whole-model reference stage.

    Verify and the runtime both execute this topology, so what is checked is what runs.
    """
    stages, whole = plan_stages(plan, graph)
    return linear_pipeline(stages), whole


def plan_stages(plan: Plan, graph: Graph) -> tuple[list[Stage], Stage]:
    """The per-board stages of a plan, and the whole model as reference stage."""
    settings = plan.settings
    stages = make_stages(graph, [st.layers for st in plan.stages], [st.board for st in plan.stages], settings,
                         plan.build)
    whole = whole_model_stage(graph, plan.board, settings, plan.build)
    return stages, whole
