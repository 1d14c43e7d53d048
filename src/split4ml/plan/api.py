"""Planning entry points: make a plan for a model, or resolve (validate and complete) a plan file.

Both paths end in :func:`assemble`, so a generated plan and a hand-written one are checked and
priced by exactly the same code.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..boards import Board, get_board
from ..errors import InfeasibleError, PlanError, TimeLimitError
from ..estimate.base import Cost, Estimator, layers_cost
from ..estimate.hls_rules import relabels_stream
from ..fixed import FixedType
from ..ir import COMPUTE_KINDS, Graph, Layer
from ..lower import stages_pipeline
from ..settings import STRATEGIES, BuildSettings, LayerPrecision, LayerSettings, choice, parse_hls_config
from ..shard import channel_wise_after, split_stage_units
from .chain import chain_cuts
from .dag import DEFAULT_TIME_LIMIT_S
from .fit import check_stage_fit
from .metrics import per_frame_us
from .planfile import (
    FIRST_KEY,
    OBJECTIVES,
    Optimality,
    Plan,
    PlanHeader,
    PlanSpec,
    ShardPlan,
    StageChoice,
    StagePlan,
    Wire,
    file_sha256,
    model_sha256,
    price_stages,
    read_plan_spec,
)

#: How much slower than at :data:`MAX_AUTO_BATCH` samples a frame a plan may be at the batch the planner
#: chooses by itself (see ``_smallest_batch``).
BATCH_SLACK = 0.02
#: The largest batch (samples per frame) the planner chooses by itself (``--batch`` may ask for more).
MAX_AUTO_BATCH = 256

@dataclass(frozen=True)
class PlanRequest:
    """What :func:`make_plan` is asked to plan a graph with (its keywords, but the batch and the io
    type choice, which it settles first); the planner's internal steps pass it whole."""

    model: str | Path
    board: Board
    cap: float = 0.85
    objective: str = "throughput"
    max_boards: int | None = None
    n_stages: int | None = None
    reuse_factor: int | None = None
    strategy: str | None = None
    hls_config: Mapping[str, Any] | None = None
    build: BuildSettings | None = None
    estimator: str | Path | Estimator = "analytic"
    board_files: tuple[str, ...] = ()
    calibration: str | Path | Mapping[str, Any] | None = None
    model_options: Mapping[str, Any] | None = None
    cluster: Any = None
    joint: bool = True
    time_limit_s: float = DEFAULT_TIME_LIMIT_S


@dataclass(frozen=True)
class _Start:
    """A request made concrete for one solve: the plan's header (its build settings read from the
    request's hls config), the estimator, every layer's starting settings (the smallest reuse factor
    that fits a board alone), the layers whose settings the planner may change, the config's
    per-layer overrides, and the global reuse factor and strategy asked for."""

    header: PlanHeader
    est: Estimator
    settings: Mapping[str, LayerSettings]
    free: list[str]
    overrides: dict[str, dict[str, Any]]
    reuse_factor: int | None
    strategy: str | None


#: Estimator names :func:`get_estimator` knows (``calibrated`` needs a calibration).
ESTIMATORS = ("analytic", "rule4ml", "calibrated")


def get_estimator(name: str | Path | Estimator = "analytic",
                  calibration: str | Path | Mapping[str, Any] | Any | None = None) -> Estimator:
    """The estimator ``name``: ``analytic`` (the default), ``rule4ml``, ``calibrated``, a calibration
    file (``calib.yaml``: the estimator it was fitted for, calibrated), or an Estimator object.

    With ``calibration`` (a file written by ``split4ml calibrate``, its mapping, or a
    :class:`~split4ml.estimate.calibrate.Calibration`), the estimator is wrapped in a
    :class:`~split4ml.estimate.calibrate.CalibratedEstimator` (name ``calibrated``); ``name`` may
    then be ``calibrated`` (the calibration's own estimator) or must match the calibration's.
    """
    from ..estimate.calibrate import CalibratedEstimator, Calibration

    if isinstance(name, Path) or (isinstance(name, str) and name.endswith((".yaml", ".yml"))):
        if calibration is not None:
            raise PlanError(f"estimator {str(name)!r} is a calibration file and --calibration is given too; give one")
        calibration, name = name, "calibrated"
    cal: Calibration | None = None
    if calibration is not None:
        if isinstance(calibration, Calibration):
            cal = calibration
        elif isinstance(calibration, Mapping):
            cal = Calibration.from_dict(calibration, "calibration")
        else:
            cal = Calibration.read(calibration)
    if not isinstance(name, str):
        base: Estimator = name
    else:
        try:
            name = choice(name, ESTIMATORS, "estimator")
        except PlanError:
            raise PlanError(f"unknown estimator {name!r}; available: {', '.join(ESTIMATORS)}") from None
        if name == "calibrated":
            if cal is None:
                raise PlanError("the calibrated estimator needs a calibration: pass --calibration calib.yaml (written "
                                "by 'split4ml calibrate')")
            name = cal.estimator
        if name == "analytic":
            from ..estimate.analytic import AnalyticEstimator

            base = AnalyticEstimator()
        elif name == "rule4ml":
            from ..estimate.rule4ml import Rule4mlEstimator

            base = Rule4mlEstimator()
    return CalibratedEstimator(base, cal) if cal is not None else base


def segment_cost_callable(est: Estimator, units: Sequence[Sequence[Layer]], settings: Mapping[str, LayerSettings],
                          io_type: str, board: Board) -> Any:
    """``partition_chain``'s ``segment_cost(i, j)`` for an estimator that is not additive (rule4ml, a
    power-law calibration); ``None`` for additive ones (the partitioner then sums unit costs)."""
    from ..estimate.calibrate import is_additive

    if is_additive(est):
        return None

    def seg(i: int, j: int) -> Cost:
        return est.segment_cost([lyr for u in units[i:j] for lyr in u], settings, io_type, board)

    return seg


def annotate_estimates(plan: Plan, graph: Graph, est: Estimator) -> Plan:
    """``plan`` with, per stage and shard, which estimator priced it (``estimate_source``), and the
    calibration of a calibrated estimator (so the plan file re-prices the same way)."""
    from ..estimate.calibrate import CalibratedEstimator, segment_source

    pipeline = stages_pipeline(graph, plan.stages, plan.build)
    by_index: dict[int, dict[int | None, str]] = {}
    for node in pipeline.nodes:
        st = node.stage
        src = segment_source(est, list(st.graph.body), st.settings, plan.build.io_type, st.board)
        by_index.setdefault(st.index, {})[st.part] = src
    stages = []
    for st in plan.stages:
        srcs = by_index.get(st.index, {})
        shards = tuple(replace(sh, estimate_source=srcs.get(sh.part)) for sh in st.shards)
        names = sorted(set(srcs.values()))
        stages.append(replace(st, shards=shards, estimate_source="+".join(names) if names else None))
    cal = est.calibration.to_dict() if isinstance(est, CalibratedEstimator) else None
    return replace(plan, stages=tuple(stages), calibration=cal)


def model_build(graph: Graph, build: BuildSettings) -> BuildSettings:
    """``build`` for ``graph``: a quantized model's input type is the model's own (what hls4ml's
    conversion gives its input), not split4ml's default."""
    if graph.quantized and graph.input.precision is not None:
        return replace(build, input_precision=graph.input.precision.result)
    return build


def align_passthrough(graph: Graph, settings: dict[str, LayerSettings]) -> dict[str, LayerSettings]:
    """Give every Flatten the result type of its producer.

    hls4ml's io_parallel Flatten only renames its input, so its output carries the producer's
    type whatever its config says; a stage that ended at a Flatten with another declared type
    would send a wire of the wrong type.
    """
    for lyr in graph.body:  # in a DAG, a Flatten's producer is its input (not always the layer before it)
        if lyr.kind == "Flatten" and lyr.inputs and lyr.inputs[0] in settings:
            s = settings[lyr.name]
            want = settings[lyr.inputs[0]].precision.result
            if s.precision.result != want:
                settings[lyr.name] = replace(s, precision=replace(s.precision, result=want))
    return settings


def _unit_of(graph: Graph) -> dict[str, int]:
    return {lyr.name: i for i, unit in enumerate(graph.units()) for lyr in unit}


def _wire_type(settings: Mapping[str, LayerSettings], layer: Layer) -> FixedType:
    return settings[layer.name].precision.result


def assemble(graph: Graph, header: PlanHeader, stages: Sequence[StageChoice], settings: Mapping[str, LayerSettings],
             estimator: Estimator, tail_settings: Mapping[str, LayerSettings] | None = None) -> Plan:
    """Price, check and package the stages a planner or a plan file chose as a :class:`Plan` (priced
    by :func:`~split4ml.plan.planfile.price_stages` for frames of ``header.batch`` samples).

    ``header.model_options`` (framework, weights, entry, input_shape) are recorded so the plan reloads
    the model the same way (:func:`load_plan`).

    Checks that stages cover the model's layers once each, in order; that no stage starts with an
    activation separated from its producer; and that every board fits under ``header.cap``.

    A stage with a ``split`` is a group of boards running shards of one unit
    (:func:`split4ml.shard.shard_unit`; its ``shard_settings`` may fix the shards' reuse factors and
    strategies, by shard layer name). The split's tail (merge adder, or a softmax after a neuron
    split) runs first on the next stage; after the last stage, or before another split, it gets a
    merge board of its own. ``tail_settings`` may fix tail layers' settings.
    """
    if not graph.is_chain:  # skip connections: plan/dag_plan.py
        from .dag_plan import assemble_dag

        return assemble_dag(graph, header, stages, settings, estimator)
    cap, build = header.cap, header.build
    stage_layers = [c.layers for c in stages]
    stage_boards = [c.board for c in stages]
    where = [c.where or f"stages[{i}]" for i, c in enumerate(stages)]
    splits = [c.split for c in stages]
    shard_settings = [dict(c.shard_settings) for c in stages]
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
    nonempty = [(i, names) for i, names in enumerate(stage_layers) if names]  # () = a merge board
    for (h, before), (i, names) in zip(nonempty, nonempty[1:], strict=False):
        first = graph.layer(names[0])
        prev = before[-1]
        if unit_of[first.name] == unit_of[prev]:
            raise PlanError(f"{where[i]}.layers[0]: activation {first.name!r} must stay on the same board as "
                            f"{prev!r}, which produces its input; move it to {where[h]}")
    tail_settings = dict(tail_settings or {})
    units = graph.units()
    planned: list[StagePlan] = []
    in_wire = Wire(build.input_precision, graph.input.output_shape)
    pending: Any = None  # the ShardedUnit of the split stage just before
    index = 0

    def plain_stage(names: Sequence[str], b: Board, what: str) -> None:
        nonlocal in_wire, pending, index
        tail = list(pending.tail) if pending is not None else []
        sets = {**(pending.tail_settings if pending is not None else {}),
                **{n: tail_settings[n] for n in (lyr.name for lyr in tail) if n in tail_settings},
                **{n: settings[n] for n in names}}
        layers = [*tail, *(graph.layer(n) for n in names)]
        if layers and all(relabels_stream((lyr,), build.io_type, graph.outputs) for lyr in layers):
            raise PlanError(f"{what}: the stage holds only {[lyr.name for lyr in layers]}, which hls4ml computes in "
                            f"place with {build.io_type} (a re-labelling of the stream, no logic), so no board can "
                            "run it alone; move those layers to the stage before or after it")
        cost = estimator.segment_cost(layers, sets, build.io_type, b)
        check_stage_fit(cost, b, cap, what, [lyr.name for lyr in layers])
        out_wire = Wire(_wire_type(sets, layers[-1]), layers[-1].output_shape)
        planned.append(StagePlan(index=index, board=b, layers=tuple(names), settings=sets, cost=cost, input=in_wire,
                                output=out_wire, merge=pending.layer if pending is not None and tail else None,
                                tail=tuple(lyr.name for lyr in tail)))
        in_wire, pending, index = out_wire, None, index + 1

    for i, (names, b) in enumerate(zip(stage_layers, stage_boards, strict=True)):
        sp = splits[i]
        if sp is None:
            plain_stage(names, b, where[i])
            continue
        from ..shard import shard_unit

        if not split_stage_units(units, tuple(names), sp):
            raise PlanError(f"{where[i]}.split: a split stage holds exactly one unit starting with the split layer "
                            f"{sp.layer!r} (a compute layer and its activation layers; for a neuron split, optionally "
                            "the channel-wise layers after it: pooling, batch normalization, with their activations), "
                            f"got {list(names)}")
        if pending is not None and pending.tail:
            # the previous split's tail needs a board of its own before this split
            plain_stage((), b, f"{where[i]} (merge of {pending.layer!r})")
        unit = [graph.layer(n) for n in names]
        try:
            su = shard_unit(unit, sp.layer, sp.kind, sp.parts, settings, shard_settings=shard_settings[i] or None,
                            io_type=build.io_type)
        except PlanError as exc:
            raise PlanError(f"{where[i]}.split: {exc}") from exc
        shards = []
        for part, piece in enumerate(su.shards):
            cost = estimator.segment_cost(piece.layers, piece.settings, build.io_type, b)
            check_stage_fit(cost, b, cap, f"{where[i]} shard {part} of {sp.layer!r}",
                            [lyr.name for lyr in piece.layers])
            if piece.source_slice is None:
                sh_in = in_wire
            else:
                a, z = piece.source_slice
                sh_in = Wire(in_wire.type, (*in_wire.shape[:-1], z - a))
            shards.append(ShardPlan(part=part, board=b, layers=tuple(lyr.name for lyr in piece.layers),
                                    settings=dict(piece.settings), cost=cost, input=sh_in,
                                    output=Wire(piece.out_type, piece.out_shape)))
        biggest = max(shards, key=lambda sh: (sh.cost.max_utilization(sh.board), -sh.part))
        out_wire = Wire(su.concat_type, su.concat_shape)
        planned.append(StagePlan(index=index, board=b, layers=tuple(names), settings={n: settings[n] for n in names},
                                cost=biggest.cost, input=in_wire, output=out_wire, split=sp, shards=tuple(shards)))
        in_wire, pending, index = out_wire, su, index + 1
    if pending is not None and pending.tail:
        plain_stage((), stage_boards[-1], f"merge of {pending.layer!r}")
    return header.plan(getattr(estimator, "name", "analytic"), planned)


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
              build: BuildSettings | None = None, estimator: str | Path | Estimator = "analytic",
              board_files: Sequence[str] = (), calibration: str | Path | Mapping[str, Any] | None = None,
              model_options: Mapping[str, Any] | None = None, cluster: Any = None, joint: bool = True,
              time_limit_s: float = DEFAULT_TIME_LIMIT_S, batch: int | None = None,
              choose_io_type: bool = False) -> Plan:
    """Plan the optimal pipeline of ``graph`` on boards of type ``board``, or on the boards of
    ``cluster`` (a :class:`~split4ml.plan.cluster.Cluster`: mixed types, counts, order).

    With ``choose_io_type`` (``split4ml plan`` without ``--io-type``) a chain with convolutions whose
    io type the user left open (``hls_config`` has no ``IOType``) is planned with both io types, and
    the better plan for the objective is kept (:func:`_choose_io_type`).

    ``batch`` is the samples per frame the pipeline runs with (the runtime's ``--batch``): each board
    pays its per-frame cost once per frame. Without it the planner chooses: 1 for the latency
    objective (a frame's samples wait for each other); otherwise the plan is made at
    :data:`MAX_AUTO_BATCH` samples a frame and then given the smallest batch that keeps its bottleneck
    within :data:`BATCH_SLACK` (2 %) of that (:func:`_smallest_batch`), and planned again at that batch.

    The plan's :attr:`~split4ml.plan.planfile.Plan.optimality` says what was proven: a chain is planned
    by exact dynamic programmes (optimal over the candidate settings searched); a model with skip
    connections by CP-SAT, which may stop at ``time_limit_s`` (seconds, the joint and the two-step
    solves together) with the best plan found and a lower bound of the objective's first key.

    With ``joint`` (the default) each free layer's reuse factor and strategy are chosen jointly
    with the partition (:mod:`split4ml.plan.design`); ``joint=False`` is the older two-step way
    (smallest reuse factor that fits one board, then the partition), kept for comparison.

    ``estimator`` and ``calibration`` are as :func:`get_estimator` takes them. ``model_options`` are
    the :func:`split4ml.frontends.load_model` keywords ``graph`` was loaded with (``framework``,
    ``weights``, ``entry``, ``input_shape``; ``None`` values are dropped); the plan records them.
    """
    # one estimator for every solve (both io types, both batches), so its memoised costs serve them all
    req = PlanRequest(model=model, board=board, cap=cap, objective=objective, max_boards=max_boards,
                      n_stages=n_stages, reuse_factor=reuse_factor, strategy=strategy, hls_config=hls_config,
                      build=build, estimator=get_estimator(estimator, calibration), board_files=tuple(board_files),
                      model_options=model_options, cluster=cluster, joint=joint, time_limit_s=time_limit_s)
    if choose_io_type and graph.is_chain and any(lyr.kind in ("Conv1D", "Conv2D") for lyr in graph.body) \
            and "IOType" not in (hls_config or {}):
        return _choose_io_type(graph, batch, req)
    return _plan_batches(graph, batch, req)


def _choose_io_type(graph: Graph, batch: int | None, req: PlanRequest) -> Plan:
    """The better of the ``io_parallel`` plan (hls4ml's default) and the ``io_stream`` plan, by the
    objective's key; a tie keeps ``io_parallel``. A plan that takes ``io_stream`` says why
    (:attr:`~split4ml.plan.planfile.Plan.io_type_chosen`).

    In ``io_parallel`` a convolution holds its whole feature map in registers and each board's AXI
    wrapper reads its inputs, runs the model, then writes its outputs; in ``io_stream`` a convolution
    streams a pixel at a time through line buffers (large maps fit where they otherwise would not), and
    the wrapper's reads and writes overlap the computation. Both are hls4ml's own conversions, and
    ``verify`` compares a plan with the whole model converted in the plan's io type."""
    from .design import better, objective_key

    base = req.build or BuildSettings()
    plans: dict[str, Plan] = {}
    errors: dict[str, InfeasibleError] = {}
    for io in ("io_parallel", "io_stream"):
        try:
            plans[io] = _plan_batches(graph, batch, replace(req, build=replace(base, io_type=io)))
        except InfeasibleError as exc:
            errors[io] = exc
    if not plans:
        raise InfeasibleError(f"the model fits with neither io type. io_parallel: {errors['io_parallel']} "
                              f"io_stream: {errors['io_stream']}") from errors["io_stream"]
    if "io_stream" not in plans:
        return plans["io_parallel"]
    stream = plans["io_stream"]
    if "io_parallel" in errors:
        return replace(stream, io_type_chosen="io_stream: with io_parallel the model fits no number of boards "
                                              f"({_infeasible_why(errors['io_parallel'])})")
    parallel = plans["io_parallel"]
    objective = stream.objective
    if not better(objective_key(stream.metrics, stream.n_boards, objective),
                  objective_key(parallel.metrics, parallel.n_boards, objective)):
        return parallel
    return replace(stream, io_type_chosen=f"io_stream: {_io_comparison(stream, parallel, objective)}")


def _infeasible_why(exc: InfeasibleError) -> str:
    """The gist of why a model fits no boards: the first clause of the planner's message, and the units
    it names as fitting no board alone when that clause does not name them."""
    text = str(exc)
    why = text.split(": ", 1)[0]
    names = list(dict.fromkeys(re.findall(r"unit '([^']+)' needs", text)))
    if names and not any(f"'{n}'" in why for n in names):
        why += f": {', '.join(repr(n) for n in names)} fit{'s' if len(names) == 1 else ''} no board alone"
    return why


def _io_comparison(stream: Plan, parallel: Plan, objective: str) -> str:
    """Why the io_stream plan beat the io_parallel one: the first figure of the objective's key that
    differs, and the two plans' figures."""
    from .design import better, objective_key

    names = {"throughput": ("a shorter interval", "fewer boards", "a lower latency"),
             "latency": ("a lower latency", "fewer boards", "a shorter interval"),
             "boards": ("fewer boards", "a shorter interval", "a lower latency")}[objective]
    a = objective_key(stream.metrics, stream.n_boards, objective)
    b = objective_key(parallel.metrics, parallel.n_boards, objective)
    k = next(k for k in range(3) if better(a[k:k + 1], b[k:k + 1]))

    def figures(p: Plan) -> str:
        return (f"{p.n_boards} board(s), {p.metrics.bottleneck_us:.3g} us a sample, "
                f"latency {p.metrics.latency_us:.3g} us")

    same = ""
    if k:
        same = {"throughput": " at the same interval", "latency": " at the same latency",
                "boards": " on as many boards"}[objective]
    return f"{names[k]} than io_parallel{same} ({figures(stream)}; io_parallel: {figures(parallel)})"


def _plan_batches(graph: Graph, batch: int | None, req: PlanRequest) -> Plan:
    """:func:`make_plan` with its io type settled: at ``batch``, or at the batch chosen for the objective."""
    if batch is not None:
        if batch < 1:
            raise PlanError(f"--batch must be at least 1 sample per frame, got {batch}")
        return _make_plan(graph, req, batch)
    if choice(req.objective, OBJECTIVES, "--objective") == "latency":
        return _make_plan(graph, req, 1)
    t0 = time.monotonic()
    widest = _make_plan(graph, req, MAX_AUTO_BATCH)
    batch = _smallest_batch(widest)
    left = req.time_limit_s - (time.monotonic() - t0)  # --time-limit bounds both solves together
    opt = widest.optimality
    if batch == widest.batch or left <= 0 or (opt is not None and opt.solver == "CP-SAT" and not opt.optimal):
        return widest
    return _make_plan(graph, replace(req, time_limit_s=left), batch)


def _smallest_batch(plan: Plan) -> int:
    """The smallest batch at which ``plan`` (planned at :data:`MAX_AUTO_BATCH` samples a frame) keeps
    its bottleneck interval within :data:`BATCH_SLACK`.

    Per-sample costs never grow with the batch, so ``plan``'s bottleneck bounds every plan at a
    smaller batch. Smaller frames wait less for each other (lower latency), and once the per-frame
    costs are paid only the frame header's share still shrinks, so a small slack buys a much
    smaller batch. :func:`make_plan` then plans anew at that batch (optimal for it)."""
    io_type = plan.build.io_type
    best = plan.metrics.bottleneck_us
    lo, hi = 1, plan.batch
    while lo < hi:
        mid = (lo + hi) // 2
        if price_stages(plan.stages, mid, io_type).bottleneck_us <= best * (1 + BATCH_SLACK):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _make_plan(graph: Graph, req: PlanRequest, batch: int) -> Plan:
    """:func:`make_plan` at one ``batch``: the request's options checked and its starting settings
    chosen (:class:`_Start`), then the chain or the DAG planner."""
    from .reuse import choose_settings

    objective = choice(req.objective, OBJECTIVES, "--objective")
    strategy = choice(req.strategy, STRATEGIES, "--strategy") if req.strategy is not None else None
    reuse_factor = req.reuse_factor
    if not 0 < req.cap <= 1:
        raise PlanError(f"--cap must be in (0, 1], got {req.cap}")
    build = req.build or BuildSettings()
    overrides: dict[str, dict[str, Any]] = {}
    if req.hls_config:
        build, cfg_rf, cfg_strategy, overrides = parse_hls_config(req.hls_config, build)
        reuse_factor = reuse_factor if reuse_factor is not None else cfg_rf
        strategy = strategy if strategy is not None else cfg_strategy
    build = model_build(graph, build)
    est = get_estimator(req.estimator, req.calibration)
    settings = align_passthrough(graph, choose_settings(graph, req.board, req.cap, est, build,
                                                        reuse_factor=reuse_factor, strategy=strategy,
                                                        overrides=overrides))
    free = [lyr.name for lyr in graph.body
            if lyr.kind in COMPUTE_KINDS and reuse_factor is None and "reuse_factor" not in overrides.get(lyr.name, {})]
    model_str, sha = _model_record(req.model)
    header = PlanHeader(model=model_str, model_sha256=sha, board=req.board, cap=req.cap, objective=objective,
                        build=build, board_files=tuple(req.board_files),
                        model_options=_recorded_options(req.model_options), batch=batch)
    start = _Start(header=header, est=est, settings=settings, free=free, overrides=overrides,
                   reuse_factor=reuse_factor, strategy=strategy)
    if not graph.is_chain:  # skip connections, merges: CP-SAT partition of the DAG (plan/dag.py) [E2]
        if req.cluster is not None:
            raise PlanError(f"--cluster: model {graph.name!r} has skip connections, and mixed board clusters are "
                            "planned for chains only so far; plan it on one board type with --board (and --boards)")
        if not req.time_limit_s > 0:
            raise PlanError(f"--time-limit must be a positive number of seconds, got {req.time_limit_s}")
        return _make_dag_plan(graph, req, start)
    return _exact(_make_chain_plan(graph, req, start))


def _exact(plan: Plan) -> Plan:
    """``plan`` as the exact chain planners return it: proven optimal over the candidates searched,
    unless the joint planner had to round its fronts (it then says so in ``plan.optimality``)."""
    if plan.optimality is not None and not plan.optimality.optimal:
        return plan
    return replace(plan, optimality=Optimality(True, plan.first_key(), FIRST_KEY[plan.objective], "exact DP"))


def _make_chain_plan(graph: Graph, req: PlanRequest, start: _Start) -> Plan:
    """:func:`make_plan` for a chain: the design-space planner and the split planner, the better plan."""
    from .partition import partition_chain

    header = start.header
    board, cap, objective, build, batch = req.board, header.cap, header.objective, header.build, header.batch
    max_boards, n_stages, cluster = req.max_boards, req.n_stages, req.cluster
    est, settings, free, overrides = start.est, dict(start.settings), start.free, start.overrides
    reuse_factor, strategy = start.reuse_factor, start.strategy
    units = graph.units()

    # Design-space planner (plan/design.py): per-layer settings chosen jointly with the cuts and
    # boards. It returns None when some unit fits no board alone (the split planner below takes
    # over); with a board budget the split planner runs too, and the better plan wins.
    joint_plan: Plan | None = None
    joint_reasons: list[str] = []  # why the joint search proves nothing (see _unproven)
    joint_error: InfeasibleError | None = None  # why every choice of versions misses the limits
    if req.joint or cluster is not None:
        from .design import plan_joint

        try:
            jp = plan_joint(graph, settings, est, build, board=board, cluster=cluster, cap=cap, objective=objective,
                            max_boards=max_boards, n_stages=n_stages, reuse_factor=reuse_factor, strategy=strategy,
                            overrides=overrides, batch=batch)
        except InfeasibleError as exc:  # one board type: the split planner below may still find a plan
            jp, joint_error = None, exc
        if jp is not None:
            jheader = replace(header, board=jp.stage_boards[0],
                              board_files=(*header.board_files, *getattr(cluster, "board_files", ())))
            choices = [StageChoice(tuple(names), b) for names, b in zip(jp.stage_layers, jp.stage_boards, strict=True)]
            joint_plan = annotate_estimates(assemble(graph, jheader, choices, jp.settings, est), graph, est)
            joint_reasons += ["fronts rounded"] if jp.result.rounded else []
            joint_reasons += [f"versions capped on {len(jp.capped)} layers"] if jp.capped else []
            joint_plan = _unproven(joint_plan, joint_reasons)
            if cluster is not None or max_boards is None or objective == "boards":
                return joint_plan

    # Intra-layer splits: every unit that fits no board alone must be split (the partitioner picks
    # kind and parts); with a board budget, throughput and latency may also buy splits of units that
    # fit (see _optional_splits). The partitioner is exact over the options it is given.
    policy = [_split_policy(u, settings, board, cap, est, build.io_type, objective=objective,
                            max_boards=max_boards, reuse_factor=reuse_factor, strategy=strategy, overrides=overrides)
              for u in units]

    def offer(u: int, max_parts: int | None = None) -> list[Any]:
        return _unit_splits(units[u], settings, board, cap, est, build.io_type, required=policy[u] == "required",
                            max_boards=max_boards, n_units=len(units), reuse_factor=reuse_factor, strategy=strategy,
                            overrides=overrides, max_parts=max_parts, following=channel_wise_after(units, u))

    options: list[list[Any]] = [offer(u) if p == "required" else [] for u, p in enumerate(policy)]

    def apart(p: Plan) -> Plan:
        """``p`` with what is not proven of the better of the two plans: the joint search's reasons, and
        with optional splits (priced at the two-step settings and offered lazily, _optional_splits, while
        the joint search takes no splits) that the two were searched apart."""
        apart_reason = ["splits and settings searched apart"] if "optional" in policy else []
        return _unproven(p, joint_reasons + apart_reason)

    def partition(sets: Mapping[str, LayerSettings]) -> Any:
        unit_costs = [layers_cost(est, unit, sets, build.io_type, board) for unit in units]
        cuts = chain_cuts(graph, units, sets, build)
        return partition_chain(unit_costs, cuts.bytes_in, cuts.bytes_out, board, cap, objective=objective,
                               max_boards=max_boards, n_stages=n_stages, shell=est.shell_cost(board), options=options,
                               segment_cost=segment_cost_callable(est, units, sets, build.io_type, board),
                               batch=batch, io_type=build.io_type, **cuts.solver_args())

    try:
        part = partition(settings)
    except InfeasibleError:
        # Each layer got the smallest reuse factor that fits a board alone. If --boards/--stages
        # asks for fewer boards than that allows, raise the free reuse factors to a common floor,
        # the smallest that admits a plan (joint search comes with the design-space planner).
        found = _raise_reuse_floor(graph, settings, free, build.io_type, partition) if free else None
        if found is None:
            if joint_plan is not None:
                return apart(joint_plan)
            if joint_error is not None and n_stages is None:  # it knows every reuse factor, not only the
                raise joint_error from None  # smallest that fit (with --stages the two-step message says more)
            raise
        settings, part = found
    if "optional" in policy:
        part = _optional_splits(part, lambda: partition(settings), offer, options, policy, units, settings, est,
                                build.io_type, board, objective, max_boards)
    choices, tail_sets = _split_stages(part, units, options, board)
    plan = assemble(graph, header, choices, settings, est, tail_settings=tail_sets)
    if joint_plan is not None:
        from .design import better, objective_key

        if not better(objective_key(plan.metrics, plan.n_boards, objective),
                      objective_key(joint_plan.metrics, joint_plan.n_boards, objective)):
            return apart(joint_plan)
    return apart(annotate_estimates(plan, graph, est))  # the joint search's reasons hold for the better plan too


def _unproven(plan: Plan, reasons: Sequence[str]) -> Plan:
    """``plan``, not proven optimal for ``reasons`` when there are any: the joint planner rounded the
    resource sums of some long stage (plan/joint.py), searched only some versions of some units
    (plan/versions.py), or weighed optional splits apart from the settings."""
    if not reasons:
        return plan
    return replace(plan, optimality=Optimality(False, None, FIRST_KEY[plan.objective],
                                               f"exact DP ({', '.join(reasons)})"))


def _make_dag_plan(graph: Graph, req: PlanRequest, start: _Start) -> Plan:
    """:func:`make_plan` for a graph with skip connections: units priced by the (additive) estimator,
    stages chosen by :func:`split4ml.plan.dag.partition_graph`, the plan built by :func:`assemble` (its
    DAG path).

    With ``joint`` (the default, as for chains) every unit's version (reuse factor and strategy of
    its compute layer; :func:`split4ml.plan.dag.graph_versions`) is chosen by the CP-SAT model jointly
    with the stages. Otherwise (or when some unit has no version that fits a board alone, or the
    joint model is infeasible) the two-step way: ``settings`` (smallest reuse factor that fits one
    board), then the partition; with a board limit those settings cannot meet, the free reuse
    factors are raised to a common floor. As for chains, with a board budget both ways run and the
    better plan wins; so they do when the joint solve stopped at its time limit unproven.

    The two-step plan is made first, and the joint search starts from it (CP-SAT finds and proves
    plans near a known one much faster than from nothing). The solves share ``time_limit_s``: the
    two-step one takes at most half of it when the joint one follows, which gets at least a tenth.
    The plan's ``optimality`` comes from the joint solve when it ran (its version space holds the
    two-step settings, so its bound holds for both), else from the two-step one."""
    from ..estimate.calibrate import is_additive
    from .dag import chosen_settings, graph_versions, partition_graph
    from .design import better, objective_key

    header = start.header
    board, cap, objective, build, batch = req.board, header.cap, header.objective, header.build, header.batch
    max_boards, n_stages, time_limit_s = req.max_boards, req.n_stages, req.time_limit_s
    est, settings, free = start.est, dict(start.settings), start.free
    deadline = time.monotonic() + time_limit_s
    capped: list[str] = []

    def proven(plan: Plan, part: Any, *others: Any) -> Plan:
        """``plan`` with what the solves proved: the bound of ``part`` (a
        :class:`~split4ml.plan.dag.DagPartition`; never above the plan's value), optimal when every solve
        was and ``plan`` reaches that bound on the first key."""
        value = plan.first_key()
        reached = part.bound is not None and value <= part.bound + 1e-9 * max(1.0, abs(part.bound))
        bound = None if part.bound is None else min(part.bound, value)
        optimal = reached and all(p.optimal for p in (part, *others))
        if capped:  # CP-SAT searched only some versions: neither optimality nor its bound holds over all
            return replace(plan, optimality=Optimality(False, None, FIRST_KEY[objective],
                                                       f"{part.solver} (versions capped on {len(capped)} layers)",
                                                       time_limit_s))
        return replace(plan, optimality=Optimality(optimal, bound, FIRST_KEY[objective], part.solver, time_limit_s))

    def make(stage_layers: Sequence[Sequence[str]], sets: Mapping[str, LayerSettings]) -> Plan:
        plan = assemble(graph, header, [StageChoice(tuple(names), board) for names in stage_layers], dict(sets), est)
        return annotate_estimates(plan, graph, est)

    def partition(sets: Mapping[str, LayerSettings], versions: Any = None, begin: Any = None,
                  share: float = 1.0) -> Any:
        left = max(min(deadline - time.monotonic(), share * time_limit_s), 0.1 * time_limit_s)
        return partition_graph(graph, sets, est, build, board, cap, objective=objective, max_boards=max_boards,
                               n_stages=n_stages, versions=versions, time_limit_s=left, batch=batch, start=begin)

    versions = None
    if req.joint and is_additive(est):
        found = graph_versions(graph, settings, est, build, board, cap, reuse_factor=start.reuse_factor,
                               strategy=start.strategy, overrides=start.overrides)
        versions, capped = found if found is not None else (None, [])
    # The two-step plan first: its settings are fixed, so its problem is small, and the joint search
    # starts from it (a 59-layer residual MLP: the joint search alone did not reach the two-step
    # plan's bottleneck in 60 s; from it, the bottleneck is proven at once).
    base_settings = settings
    part: Any = None
    two_step_error: InfeasibleError | TimeLimitError | None = None
    try:
        part, stage_layers = partition(settings, share=0.5 if versions is not None else 1.0)
    except InfeasibleError as exc:
        found = _raise_reuse_floor(graph, settings, free, build.io_type, partition) if free else None
        if found is None:
            two_step_error = exc
        else:
            settings, (part, stage_layers) = found
    except TimeLimitError as exc:
        if versions is None:
            raise
        two_step_error = exc
    joint_plan: Plan | None = None
    joint_part: Any = None
    joint_error: InfeasibleError | TimeLimitError | None = None
    if versions is not None:
        try:
            joint_part, joint_layers = partition(base_settings, versions,
                                                 begin=None if part is None else (part, settings))
        except (InfeasibleError, TimeLimitError) as exc:  # the two-step plan may still stand
            joint_error = exc
        else:
            joint_plan = proven(make(joint_layers, chosen_settings(base_settings, versions, joint_part)), joint_part)
    if part is None:
        if joint_plan is not None:
            return joint_plan
        raise (joint_error if joint_error is not None else two_step_error) from None  # the joint one knows versions
    plan = proven(make(stage_layers, settings), *((joint_part, part) if joint_part is not None else (part,)))
    if isinstance(joint_error, TimeLimitError) and plan.optimality is not None:
        # the joint search ran out of time before any plan: nothing is proven over its candidates
        plan = replace(plan, optimality=replace(plan.optimality, optimal=False, bound=None))
    if joint_plan is not None and not better(objective_key(plan.metrics, plan.n_boards, objective),
                                             objective_key(joint_plan.metrics, joint_plan.n_boards, objective)):
        return joint_plan
    return plan


def _model_record(model: str | Path) -> tuple[str, str | None]:
    """How a plan records its model file: the absolute path (as given when it does not exist) and
    its :func:`model_sha256` (None when it is not a file)."""
    path = Path(model)
    sha = model_sha256(path) if path.is_file() else None
    return (str(path.resolve()) if path.exists() else str(model)), sha


def _recorded_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The model options a plan records: ``None`` dropped, the weights path absolute."""
    out = {k: v for k, v in (options or {}).items() if v is not None}
    if "weights" in out:
        w = Path(str(out["weights"]))
        out["weights"] = str(w.resolve()) if w.exists() else str(w)
        if w.is_file():
            out["weights_sha256"] = file_sha256(w)
    if "input_shape" in out:
        out["input_shape"] = [int(d) for d in out["input_shape"]]
    return out


def _split_policy(unit: Sequence[Layer], settings: Mapping[str, LayerSettings], board: Board, cap: float,
                  est: Estimator, io_type: str, *, objective: str, max_boards: int | None, reuse_factor: int | None,
                  strategy: str | None, overrides: Mapping[str, Mapping[str, Any]]) -> str:
    """Whether ``unit`` must be split (``required``: it fits no board alone), may be split
    (``optional``), or is never split (``none``).

    ``optional``: with a board budget (``max_boards``) and the throughput or latency objective, a
    compute unit whose reuse factor the planner had to raise above the smallest valid one (shards
    could take smaller ones). Without a budget, splits of units that fit are not considered: the
    objective's first key would buy any small gain with many boards (the MNIST demo would take 26
    boards for a 7x shorter interval). The boards objective never gains from them, and a reuse
    factor the user fixed is kept.
    """
    from ..estimate import hls_rules

    layer = unit[0]
    if layer.kind not in COMPUTE_KINDS:
        return "none"
    if not est.segment_cost(unit, settings, io_type, board).fits(board, cap):
        return "required"
    user = overrides.get(layer.name, {})
    user_strategy = user.get("strategy", strategy)
    if objective == "boards" or max_boards is None or user.get("reuse_factor", reuse_factor) is not None:
        return "none"
    smallest = min(hls_rules.valid_reuse_factors(layer, st, io_type)[0]
                   for st in ([user_strategy] if user_strategy else STRATEGIES))
    return "optional" if settings[layer.name].reuse_factor > smallest else "none"


def _unit_splits(unit: Sequence[Layer], settings: Mapping[str, LayerSettings], board: Board, cap: float,
                 est: Estimator, io_type: str, *, required: bool, max_boards: int | None, n_units: int,
                 reuse_factor: int | None, strategy: str | None, overrides: Mapping[str, Mapping[str, Any]],
                 max_parts: int | None = None, following: Sequence[Sequence[Layer]] = ()) -> list[Any]:
    """The feasible splits of ``unit`` (:func:`~split4ml.plan.split_options.split_options`), ``k`` up
    to :data:`~split4ml.plan.split_options.MAX_PARTS`, the split axis, the board limit and
    ``max_parts``. A reuse factor the user fixed is a floor for the shards, and a strategy the user
    fixed is kept. ``following``: the channel-wise units (pooling, batch normalization) after ``unit``
    (:func:`~split4ml.shard.channel_wise_after`); the neuron splits that also run the first ``m`` of them on every shard are
    offered too, with ``span`` ``m + 1`` (the partitioner weighs both).

    Raises:
        InfeasibleError: ``required`` and no split fits; the message names the layer.
    """
    from ..estimate import hls_rules
    from .split_options import MAX_PARTS, split_options

    layer = unit[0]
    user = overrides.get(layer.name, {})
    user_rf = user.get("reuse_factor", reuse_factor)
    budget = MAX_PARTS if max_boards is None else min(MAX_PARTS, max_boards - (1 if n_units > 1 else 0))
    if max_parts is not None:
        budget = min(budget, max_parts)
    opts, problems = (split_options(unit, settings, board, cap, est, io_type, max_parts=budget,
                                    strategy=user.get("strategy", strategy), min_reuse_factor=int(user_rf or 1))
                      if budget >= 2 else ([], [f"--boards {max_boards} leaves no room for a split"]))
    spanned: list[Any] = []
    for m in range(1, len(following) + 1 if budget >= 2 else 0):
        ext = [*unit, *(lyr for u in following[:m] for lyr in u)]
        more, _ = split_options(ext, settings, board, cap, est, io_type, max_parts=budget, kinds=("neuron",),
                                strategy=user.get("strategy", strategy), min_reuse_factor=int(user_rf or 1))
        spanned += [replace(o, span=m + 1) for o in more if o.tail is None]
    if required and not opts:
        alone = est.segment_cost(unit, settings, io_type, board)
        over = ", ".join(f"{r.upper()} {getattr(alone, r):,.0f} ({v:.0%} of the allowed)"
                         for r, v in sorted(alone.overflow(board, cap).items(), key=lambda kv: -kv[1]))
        n_in, n_out = hls_rules.mult_size(layer)
        # per kind, the reason at the largest part count tried (the closest to fitting)
        last = {p.split(" ", 1)[0]: p for p in problems}
        shown = "; ".join(last.values())
        raise InfeasibleError(
            f"layer {layer.name!r} ({layer.kind}, {n_in}x{n_out} multiplications) cannot fit: alone on one "
            f"{board.name} board it needs {over} (cap {cap:g}, board shell included), and no neuron or input "
            f"split into 2..{max(2, budget)} parts fits either ({shown}). Use lower precision (narrower weights), "
            "a higher --cap, a bigger board (`split4ml boards`)" +
            (", or allow more boards (--boards)" if max_boards is not None else "") +
            ("; or --io-type io_stream: a convolution then streams its feature map a pixel at a time instead of "
             "holding it whole in registers" if io_type == "io_parallel" and layer.kind in ("Conv1D", "Conv2D")
             else "") + ".")
    return opts + spanned


def _optional_splits(part: Any, solve: Any, offer: Any, options: list[list[Any]], policy: Sequence[str],
                     units: Sequence[Sequence[Layer]], settings: Mapping[str, LayerSettings], est: Estimator,
                     io_type: str, board: Board, objective: str, max_boards: int | None) -> Any:
    """Offer the ``optional`` splits where they can pay, and re-plan until none is left to offer.

    Pricing every split of every unit of a long chain is slow, so options are added lazily:
    throughput offers them to the units of the current bottleneck step(s), again and again until
    the bottleneck step holds no unit left to offer (or is itself a split); latency offers them
    once to the units whose compute latency exceeds one hop's fixed cost (less could not pay for the
    hop a split may add). Parts are bounded by the boards the current plan leaves free, plus the
    unit's own. The partition is exact over the options offered. Throughput stops offering once the
    bottleneck is the pipeline's floor (:func:`_interval_floor`), which no split can lower.
    """
    offered: set[int] = set()
    while True:
        slack = (part.n_boards if max_boards is None else max_boards - part.n_boards) + 1
        if slack < 2:
            return part
        if objective == "throughput":
            m = part.metrics
            if m.bottleneck_us <= _interval_floor(part, board) * (1 + 1e-9):
                return part
            top = [s for s, v in enumerate(m.stage_interval_us) if v >= m.bottleneck_us * (1 - 1e-9)]
            cand = {u for s in top if part.splits[s] is None for u in range(part.bounds[s], part.bounds[s + 1])}
        else:
            cand = {u for u in range(len(units))
                    if board.cycles_to_us(est.segment_cost(units[u], settings, io_type, board).latency_cycles)
                    > board.link.latency_us}
        cand = {u for u in cand if policy[u] == "optional" and u not in offered}
        if not cand:
            return part
        for u in sorted(cand):
            options[u] = offer(u, slack)
            offered.add(u)
        part = solve()
        if objective != "throughput":
            return part


def _interval_floor(part: Any, board: Board) -> float:
    """An interval no plan of this chain on ``board`` boards can beat at the partition's batch, us.

    Every board pays its per-frame cost once a frame; the host sends the model input at least once
    (a split first step receives more copies, or more frames) and receives the output at least once.
    """
    m = part.metrics
    floor = per_frame_us(board, m.batch)
    if part.splits[0] is None:
        floor = max(floor, m.source_us)
    if part.splits[-1] is None:
        floor = max(floor, m.sink_us)
    return floor


def _split_stages(part: Any, units: Sequence[Sequence[Layer]], options: Sequence[Sequence[Any]], board: Board,
                  ) -> tuple[list[StageChoice], dict[str, LayerSettings]]:
    """``assemble``'s stages for a partition (layers, split and shard settings of every stage on
    ``board``), and the settings of every tail layer.

    A merge stage (the tail of a split alone on a board) is left to ``assemble``, which adds one
    after the last stage and before a split; elsewhere it is kept as a stage without layers.
    """
    stages: list[StageChoice] = []
    tail_sets: dict[str, LayerSettings] = {}
    ranges = part.ranges
    for s, (a, b) in enumerate(ranges):
        g = part.splits[s]
        names = tuple(lyr.name for u in units[a:b] for lyr in u)
        if g is not None:
            choice = options[a][g].label  # a group covers units [a, b): its own, and the channel-wise ones on its shards
            stages.append(StageChoice(names, board, split=choice.spec, shard_settings=dict(choice.shard_settings)))
            tail_sets.update(choice.tail_settings)
            continue
        if a == b:  # a merge stage
            last = s == len(ranges) - 1
            if last or part.splits[s + 1] is not None:
                continue
        stages.append(StageChoice(names, board))
    return stages, tail_sets


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
    est = get_estimator(spec.estimator, calibration=spec.calibration)
    build = model_build(graph, spec.build)
    try:
        settings = choose_settings(graph, board, spec.cap, est, build, reuse_factor=spec.reuse_factor,
                                   strategy=spec.strategy, overrides=overrides)
    except PlanError as exc:
        raise PlanError(f"stages: {exc}") from exc
    settings = align_passthrough(graph, settings)
    kept = list(zip(spec.stages, boards, strict=True))  # a merge stage (layers: []) is kept where it stands
    shard_sets: list[dict[str, LayerSettings]] = []
    tail_sets: dict[str, LayerSettings] = {}
    for st, b in kept:
        layers = [graph.layer(ls.name) for ls in st.layers]
        free = [ls.name for ls in st.layers if ls.name not in overrides or "reuse_factor" not in overrides[ls.name]]
        if st.split is None and spec.reuse_factor is None:
            settings.update(fit_stage(layers, settings, free, b, spec.cap, est, build.io_type))
        shard_sets.append(_shard_settings(st, layers, settings, b, spec.cap, est, build.io_type)
                          if st.split is not None else {})
    for st in spec.stages:
        for ls in st.tail_layers:
            if ls.reuse_factor is not None or ls.strategy is not None:
                tail_sets[ls.name] = LayerSettings(reuse_factor=ls.reuse_factor or 1, strategy=ls.strategy or "Latency",
                                                   precision=ls.precision or LayerPrecision())
    if spec.model_sha256 and spec.model_path.is_file() and model_sha256(spec.model_path) != spec.model_sha256:
        raise PlanError(f"model_sha256: {spec.model_path} has changed since this plan was made; re-plan it, or "
                        "delete the model_sha256 line if the change is intended")
    weights = spec.load_options().get("weights")
    w_sha = spec.model_options.get("weights_sha256")
    if w_sha and weights and Path(weights).is_file() and file_sha256(weights) != w_sha:
        raise PlanError(f"model_options.weights_sha256: {weights} has changed since this plan was made; re-plan "
                        "it, or delete the weights_sha256 line if the change is intended")
    header = PlanHeader(model=spec.model, model_sha256=spec.model_sha256, board=board, cap=spec.cap,
                        objective=spec.objective, build=build, board_files=tuple(spec.board_files),
                        base_dir=spec.base_dir, model_options=dict(spec.model_options or {}), batch=spec.batch)
    choices = [StageChoice(tuple(ls.name for ls in st.layers), b, split=st.split, shard_settings=sh, where=st.where)
               for (st, b), sh in zip(kept, shard_sets, strict=True)]
    plan = assemble(graph, header, choices, settings, est, tail_settings=tail_sets)
    return annotate_estimates(plan, graph, est)


def _shard_settings(st: Any, unit: Sequence[Layer], settings: Mapping[str, LayerSettings], board: Board, cap: float,
                    est: Estimator, io_type: str) -> dict[str, LayerSettings]:
    """Shard settings of a hand-written split stage: what the file gives, else for each shard the
    smallest hls4ml-valid reuse factor (Latency, then Resource) that fits one board."""
    from ..estimate import hls_rules
    from ..shard import shard_unit

    split = st.split
    try:
        derived = shard_unit(unit, split.layer, split.kind, split.parts, settings, io_type=io_type)
    except PlanError as exc:
        raise PlanError(f"{st.where}.split: {exc}") from exc
    given = {ls.name: ls for part in st.shard_layers for ls in part}
    unknown = sorted(set(given) - set(derived.shard_settings))
    if unknown:
        raise PlanError(f"{st.where}.shards: unknown shard layer(s) {unknown}; the shard layers are "
                        f"{sorted(derived.shard_settings)}")
    out: dict[str, LayerSettings] = {}
    for piece in derived.shards:
        for lyr in piece.layers:
            base = piece.settings[lyr.name]
            ls = given.get(lyr.name)
            if ls is not None and (ls.reuse_factor is not None or ls.strategy is not None):
                out[lyr.name] = replace(base, reuse_factor=ls.reuse_factor or base.reuse_factor,
                                        strategy=ls.strategy or base.strategy)
            elif lyr.kind in COMPUTE_KINDS:
                options = [(r, s) for s in STRATEGIES for r in hls_rules.valid_reuse_factors(lyr, s, io_type)]
                for r, s in options:
                    trial = {**piece.settings, lyr.name: replace(base, reuse_factor=r, strategy=s)}
                    if est.segment_cost(piece.layers, trial, io_type, board).fits(board, cap):
                        out[lyr.name] = trial[lyr.name]
                        break
    return out


def load_plan(path: str | Path) -> tuple[Plan, Graph]:
    """Read a plan file, load its model, and validate the plan against it."""
    from ..frontends import load_model

    spec = read_plan_spec(path)
    if not spec.model_path.exists():
        raise PlanError(f"model: {spec.model_path} does not exist; fix the 'model' path in {path}")
    graph = load_model(spec.model_path, **spec.load_options())
    return resolve_plan(spec, graph), graph
