"""The Plan: the contract between planner, user, builder and runtime, and its YAML file.

A plan file is meant to be read and edited by a person. The smallest hand-written plan is::

    split4ml_plan: 1
    model: mnist.keras
    board: pynq-z2
    stages:
      - layers: [fc1]
      - layers: [fc2, fc3, softmax]

Everything else has defaults: the board of every stage, the cap (0.85), the hls4ml settings of
every layer (chosen as the planner would), the wire types (upstream result type) and the
estimates. A generated plan writes all of it out, so the file documents itself. A layer entry may
be a name or a mapping ``{name, reuse_factor, strategy, precision: {weight, bias, result, accum}}``.

Generated and hand-written plans go through the same validation (:func:`spec_from_dict` here, then
``plan.api.resolve_plan``); every error names its YAML path, e.g. ``stages[1].layers[0]``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..boards import Board
from ..errors import PlanError
from ..estimate.base import Cost
from ..fixed import FixedType
from ..hashing import file_sha256, hash_file
from ..settings import (
    OBJECTIVES,
    STRATEGIES,
    BuildSettings,
    LayerPrecision,
    LayerSettings,
    build_settings_from_dict,
    choice,
    parse_layer_precision,
)
from ..shard import SPLIT_KINDS
from ..yamlio import read_yaml
from .metrics import DEFAULT_BATCH, BoardLoad, Endpoint, PipelineMetrics, group_metrics

PLAN_VERSION = 1


# ----------------------------------------------------------------------------- unresolved spec
@dataclass(frozen=True)
class LayerSpec:
    """A layer entry of a plan file; ``None`` fields are chosen by the planner."""

    name: str
    reuse_factor: int | None = None
    strategy: str | None = None
    precision: LayerPrecision | None = None
    where: str = ""


@dataclass(frozen=True)
class SplitSpec:
    """A split of one compute layer into ``parts`` shards, run on ``parts`` boards in parallel.

    ``kind`` is ``neuron`` (slices of output units / filters; merged by concatenation) or ``input``
    (slices of input features / channels; partial sums merged by an adder layer in firmware).
    """

    layer: str
    kind: str
    parts: int

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "kind": self.kind, "parts": self.parts}




@dataclass(frozen=True)
class StageSpec:
    layers: tuple[LayerSpec, ...]
    board: str | None = None
    where: str = ""
    split: SplitSpec | None = None
    #: per-shard layer settings given in the file: part -> layer specs (shard layer names)
    shard_layers: tuple[tuple[LayerSpec, ...], ...] = ()
    #: settings of the tail layers (merge adder, softmax) this stage runs first
    tail_layers: tuple[LayerSpec, ...] = ()
    merge: str | None = None


@dataclass(frozen=True)
class PlanSpec:
    """A plan file as written, checked for form but not yet against the model."""

    model: str
    board: str
    stages: tuple[StageSpec, ...]
    cap: float = 0.85
    objective: str = "throughput"
    estimator: str = "analytic"
    build: BuildSettings = field(default_factory=BuildSettings)
    reuse_factor: int | None = None
    strategy: str | None = None
    model_sha256: str | None = None
    board_files: tuple[str, ...] = ()
    base_dir: Path = Path(".")
    #: the corrections of a ``calibrated`` estimator (the ``calibration`` mapping of the plan file)
    calibration: Mapping[str, Any] | None = None
    #: samples per frame the plan is priced for (``batch`` of the plan file)
    batch: int = DEFAULT_BATCH
    #: how to load the model file besides its path (``model_options`` of the plan file: ``framework``,
    #: ``weights``, ``entry``, ``input_shape``; see :func:`split4ml.frontends.load_model`)
    model_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        p = Path(self.model)
        return p if p.is_absolute() else (self.base_dir / p)

    def load_options(self) -> dict[str, Any]:
        """``model_options`` as :func:`split4ml.frontends.load_model` keywords (weights made absolute)."""
        return resolve_model_options(self.model_options, self.base_dir)


#: Keys of a plan's ``model_options`` (keywords of :func:`split4ml.frontends.load_model`).
MODEL_OPTION_KEYS = ("framework", "weights", "entry", "input_shape")
#: ``model_options`` keys that are checks, not load keywords: the sha256 of the ``weights`` file.
MODEL_CHECK_KEYS = ("weights_sha256",)


def resolve_model_options(options: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """``options`` as load keywords: a relative ``weights`` path taken relative to ``base_dir`` (the plan
    file's folder), the check keys (``weights_sha256``) left out."""
    out = {k: v for k, v in options.items() if k not in MODEL_CHECK_KEYS}
    if out.get("weights") is not None and not Path(str(out["weights"])).is_absolute():
        out["weights"] = str(base_dir / str(out["weights"]))
    return out


def _model_options(raw: Any) -> dict[str, Any]:
    """Check the form of a plan file's ``model_options`` mapping."""
    if raw is None:
        return {}
    _expect(isinstance(raw, Mapping), "model_options",
            f"expected a mapping with some of {', '.join(MODEL_OPTION_KEYS)}, got {raw!r}")
    allowed = (*MODEL_OPTION_KEYS, *MODEL_CHECK_KEYS)
    unknown = sorted(set(raw) - set(allowed))
    _expect(not unknown, "model_options", f"unknown field(s) {unknown}; allowed: {', '.join(allowed)}")
    out: dict[str, Any] = {}
    for key in ("framework", "weights", "entry", "weights_sha256"):
        if raw.get(key) is not None:
            _expect(isinstance(raw[key], str), f"model_options.{key}", f"expected a string, got {raw[key]!r}")
            out[key] = raw[key]
    shape = raw.get("input_shape")
    if shape is not None:
        _expect(isinstance(shape, list) and len(shape) > 0
                and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape),
                "model_options.input_shape", f"expected a list of positive integers (no batch), got {shape!r}")
        out["input_shape"] = [int(d) for d in shape]
    return out


def _expect(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise PlanError(f"{where}: {msg}")


def _int(value: Any, where: str, minimum: int = 1) -> int:
    _expect(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, where,
            f"expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _layer_spec(item: Any, where: str) -> LayerSpec:
    if isinstance(item, str):
        return LayerSpec(name=item, where=where)
    _expect(isinstance(item, Mapping), where, f"expected a layer name or a mapping with 'name', got {item!r}")
    unknown = set(item) - {"name", "reuse_factor", "strategy", "precision"}
    _expect(not unknown, where, f"unknown field(s) {sorted(unknown)}; allowed: name, reuse_factor, strategy, precision")
    _expect("name" in item and isinstance(item["name"], str), where, "missing 'name' (the layer name)")
    rf = _int(item["reuse_factor"], f"{where}.reuse_factor") if item.get("reuse_factor") is not None else None
    strategy = item.get("strategy")
    if strategy is not None:
        strategy = choice(strategy, STRATEGIES, f"{where}.strategy:")
    precision = None
    if item.get("precision") is not None:
        precision = parse_layer_precision(item["precision"], f"{where}.precision")
    return LayerSpec(name=item["name"], reuse_factor=rf, strategy=strategy, precision=precision, where=where)


def _split_spec(d: Any, where: str) -> SplitSpec | None:
    if d is None:
        return None
    _expect(isinstance(d, Mapping), where, "expected {layer: NAME, kind: neuron|input, parts: K}")
    unknown = set(d) - {"layer", "kind", "parts"}
    _expect(not unknown, where, f"unknown field(s) {sorted(unknown)}; a split has layer, kind, parts")
    _expect(isinstance(d.get("layer"), str), f"{where}.layer", "missing: the name of the layer to split")
    kind = choice(d.get("kind"), SPLIT_KINDS, f"{where}.kind:")
    parts = _int(d.get("parts"), f"{where}.parts", minimum=2)
    return SplitSpec(layer=d["layer"], kind=str(kind), parts=parts)


def spec_from_dict(data: Any, base_dir: Path = Path(".")) -> PlanSpec:
    """Check the form of a plan mapping (as read from YAML); errors name the YAML path."""
    _expect(isinstance(data, Mapping), "plan", "a plan file must be a YAML mapping with 'model', 'board', 'stages'")
    version = data.get("split4ml_plan", PLAN_VERSION)
    _expect(version == PLAN_VERSION, "split4ml_plan", f"unsupported plan version {version!r}; this is version 1")
    _expect("model" in data, "model", "missing: the path of the model file (relative to the plan file)")
    _expect("stages" in data, "stages", "missing: a list of stages, each with 'layers: [...]'")
    board = data.get("board")
    stages_raw = data["stages"]
    _expect(isinstance(stages_raw, list) and len(stages_raw) > 0, "stages", "expected a non-empty list of stages")
    stages = []
    for i, st in enumerate(stages_raw):
        w = f"stages[{i}]"
        if isinstance(st, list):
            st = {"layers": st}
        _expect(isinstance(st, Mapping), w, "expected a mapping with 'layers' (and optionally 'board')")
        allowed = {"layers", "board", "index", "input", "output", "estimate", "utilization", "interval_us",
                   "latency_us", "split", "shards", "merge", "tail", "estimate_source"}
        unknown = set(st) - allowed
        _expect(not unknown, w, f"unknown field(s) {sorted(unknown)}; a stage has 'board' and 'layers'")
        _expect("layers" in st, f"{w}.layers", "missing: the layers this board runs")
        layers = st["layers"]
        merge = st.get("merge")
        _expect(isinstance(layers, list) and (len(layers) > 0 or merge is not None), f"{w}.layers",
                "expected a non-empty list of layers (only a merge stage, with 'merge: LAYER', may have none)")
        stage_board = st.get("board", board)
        _expect(stage_board is not None, f"{w}.board", "no board: give 'board' at the top level or per stage")
        split = _split_spec(st.get("split"), f"{w}.split")
        shard_layers: list[tuple[LayerSpec, ...]] = []
        if st.get("shards") is not None:
            _expect(split is not None, f"{w}.shards", "shards are given but the stage has no 'split'")
            _expect(isinstance(st["shards"], list), f"{w}.shards", "expected a list of shards")
            for k, sh in enumerate(st["shards"]):
                sw = f"{w}.shards[{k}]"
                _expect(isinstance(sh, Mapping), sw, "expected a mapping with 'layers'")
                shard_layers.append(tuple(_layer_spec(x, f"{sw}.layers[{j}]")
                                          for j, x in enumerate(sh.get("layers") or [])))
        tail_raw = st.get("tail") or []
        _expect(isinstance(tail_raw, list), f"{w}.tail", "expected a list of tail layers")
        stages.append(StageSpec(layers=tuple(_layer_spec(x, f"{w}.layers[{j}]") for j, x in enumerate(layers)),
                                board=str(stage_board), where=w, split=split, shard_layers=tuple(shard_layers),
                                tail_layers=tuple(_layer_spec(x, f"{w}.tail[{j}]") for j, x in enumerate(tail_raw)),
                                merge=str(merge) if merge is not None else None))
    if board is None:
        board = stages[0].board
    cap = data.get("cap", 0.85)
    _expect(isinstance(cap, (int, float)) and 0 < float(cap) <= 1, "cap", f"expected 0 < cap <= 1, got {cap!r}")
    objective = choice(data.get("objective", "throughput"), OBJECTIVES, "objective:")
    hls = data.get("hls") or {}
    build = build_settings_from_dict(hls)
    rf = _int(hls["reuse_factor"], "hls.reuse_factor") if hls.get("reuse_factor") is not None else None
    strategy = hls.get("strategy")
    if strategy is not None:
        strategy = choice(strategy, STRATEGIES, "hls.strategy:")
    board_files = data.get("board_files") or []
    _expect(isinstance(board_files, list), "board_files", "expected a list of board YAML paths")
    return PlanSpec(
        model=str(data["model"]),
        board=str(board),
        stages=tuple(stages),
        cap=float(cap),
        objective=objective,
        estimator=str(data.get("estimator", "analytic")),
        build=build,
        reuse_factor=rf,
        strategy=strategy,
        model_sha256=data.get("model_sha256"),
        board_files=tuple(str(base_dir / f) if not Path(f).is_absolute() else str(f) for f in board_files),
        base_dir=base_dir,
        calibration=data.get("calibration"),
        model_options=_model_options(data.get("model_options")),
        batch=_int(data.get("batch", DEFAULT_BATCH), "batch", minimum=1),
    )


def read_plan_spec(path: str | Path) -> PlanSpec:
    """Read a plan YAML file (form only)."""
    p = Path(path)
    data = read_yaml(p, "plan file", PlanError, hint=f"make one with 'split4ml plan MODEL -o {p.name}'")
    return spec_from_dict(data, base_dir=p.resolve().parent)




def _onnx_external_files(path: Path) -> list[Path]:
    """The external-data files an ONNX model's initializers point to (torch's exporter writes the
    weights of a model to ``m.onnx.data`` next to ``m.onnx``), sorted; ``[]`` when the weights are
    inside the file or the ``onnx`` package is not installed."""
    try:
        import onnx
    except ImportError:
        return []
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a readable ONNX file: the frontend says why when it loads it
        return []
    names = {entry.value for init in proto.graph.initializer for entry in init.external_data
             if entry.key == "location"}
    return sorted(path.parent / n for n in names)


def model_sha256(path: str | Path) -> str:
    """The SHA-256 of a model file as a plan records it (``model_sha256``).

    For an ONNX model whose weights live in external-data files, those files are hashed too (in
    name order, after the model file), so a plan notices when the weights change; so is the weights
    file found next to a Keras ``.json`` architecture.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        from ..frontends.keras import weights_next_to

        weights = weights_next_to(path)
        if weights is None:
            return file_sha256(path)
        h = hashlib.sha256()
        hash_file(h, path)
        h.update(weights.name.encode())
        hash_file(h, weights)
        return h.hexdigest()
    if path.suffix.lower() != ".onnx":
        return file_sha256(path)
    h = hashlib.sha256()
    hash_file(h, path)
    for extra in _onnx_external_files(path):
        h.update(extra.name.encode())
        if extra.is_file():
            hash_file(h, extra)
    return h.hexdigest()


# ----------------------------------------------------------------------------- resolved plan
@dataclass(frozen=True)
class Wire:
    """An edge between boards: fixed-point type and shape of what crosses it, per sample.

    ``tensors`` (plans of models with skip connections) names the tensors packed on the wire, in
    order (producer layer names; the model input by its Input layer's name); empty for chains.
    """

    type: FixedType
    shape: tuple[int, ...]
    tensors: tuple[str, ...] = ()

    @property
    def bytes_per_sample(self) -> int:
        return int(math.prod(self.shape)) * self.type.storage_bytes

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": str(self.type), "shape": list(self.shape),
                               "bytes_per_sample": self.bytes_per_sample}
        if self.tensors:
            out["tensors"] = list(self.tensors)
        return out


def layer_entries(names: Sequence[str], settings: Mapping[str, LayerSettings]) -> list[dict[str, Any]]:
    """``[{name, reuse_factor, strategy, precision}]`` of layers, as plan files and ``--json`` write them."""
    return [{"name": n, "reuse_factor": settings[n].reuse_factor, "strategy": settings[n].strategy,
             "precision": settings[n].precision.as_dict()} for n in names]


@dataclass(frozen=True, eq=False)
class ShardPlan:
    """One board of a split stage."""

    part: int
    board: Board
    layers: tuple[str, ...]
    settings: Mapping[str, LayerSettings]
    cost: Cost
    input: Wire
    output: Wire
    #: which estimator priced this board: analytic, rule4ml or calibrated (None: not recorded)
    estimate_source: str | None = None

    def utilization(self) -> dict[str, float]:
        return self.cost.utilization(self.board)


@dataclass(frozen=True, eq=False)
class StagePlan:
    """One pipeline step: one board, or (``split``) a group of boards running shards in parallel.

    ``layers`` and ``settings`` name the model's original layers. A split stage's ``cost`` is that
    of its largest shard (each board must fit), and ``output`` the concatenated shard outputs.
    ``merge`` names the split layer whose tail (merge adder, or softmax after a neuron split) this
    stage runs first; ``tail`` lists those tail layers (they are not in the original model).
    """

    index: int
    board: Board
    layers: tuple[str, ...]
    settings: Mapping[str, LayerSettings]
    cost: Cost
    input: Wire
    output: Wire
    split: SplitSpec | None = None
    shards: tuple[ShardPlan, ...] = ()
    merge: str | None = None
    tail: tuple[str, ...] = ()
    #: which estimator priced the stage: analytic, rule4ml or calibrated; a split stage whose shards
    #: differ lists them joined by '+' (None: not recorded)
    estimate_source: str | None = None

    @property
    def n_boards(self) -> int:
        return len(self.shards) if self.split else 1

    def utilization(self) -> dict[str, float]:
        if self.shards:
            per = [sh.utilization() for sh in self.shards]
            return {r: max(u[r] for u in per) for r in per[0]}
        return self.cost.utilization(self.board)


def _values(wire: Wire) -> float:
    return float(math.prod(wire.shape))


def stage_loads(stages: Sequence[StagePlan]) -> tuple[list[list[BoardLoad]], Endpoint, Endpoint]:
    """What every board of ``stages`` moves per sample (:mod:`split4ml.plan.metrics`), and the source and
    sink. A board feeding a neuron split sends its output once per shard, in one frame each; the
    slices of an input split count as one frame, as the planners price them."""
    steps: list[list[BoardLoad]] = []
    for k, st in enumerate(stages):
        nxt = stages[k + 1] if k + 1 < len(stages) else None
        fan = nxt.split.parts if nxt is not None and nxt.split is not None and nxt.split.kind == "neuron" else 1
        pieces = [(sh.cost, sh.board, sh.input, sh.output) for sh in st.shards] if st.split else \
            [(st.cost, st.board, st.input, st.output)]
        steps.append([BoardLoad(c, b, bytes_sent=float(o.bytes_per_sample * fan), bytes_recv=float(i.bytes_per_sample),
                                n_in=_values(i), n_out=_values(o), frames_sent=fan) for c, b, i, o in pieces])
    first, last = stages[0], stages[-1]
    fan0 = first.split.parts if first.split is not None and first.split.kind == "neuron" else 1
    source = Endpoint(first.board.link, float(first.input.bytes_per_sample * fan0), fan0)
    sink = Endpoint(last.board.link, float(last.output.bytes_per_sample))
    return steps, source, sink


def price_stages(stages: Sequence[StagePlan], batch: int, io_type: str) -> PipelineMetrics:
    """The figures of a plan's stages: the one pricing every plan, generated, hand-written or read, goes
    through (the planners' solvers optimise the same model)."""
    steps, source, sink = stage_loads(stages)
    return group_metrics(steps, source, sink, batch=batch, io_type=io_type)


#: The first key of each objective, as a plan's figures name it.
FIRST_KEY = {"throughput": "bottleneck_us", "latency": "latency_us", "boards": "n_boards"}


@dataclass(frozen=True)
class StageChoice:
    """One stage as a planner or a plan file chooses it, before :func:`split4ml.plan.api.assemble`
    checks and prices it: its layers and board, and for a split stage the split and the shards'
    settings. ``where`` names it in errors (a plan file's ``stages[i]``)."""

    layers: tuple[str, ...]
    board: Board
    split: SplitSpec | None = None
    shard_settings: Mapping[str, LayerSettings] = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class PlanHeader:
    """What a plan records besides its stages: the model file and how it is loaded, the board type,
    the cap, the objective, the hls4ml build settings and the batch its figures are for."""

    model: str
    model_sha256: str | None
    board: Board
    cap: float
    objective: str
    build: BuildSettings
    board_files: tuple[str, ...] = ()
    base_dir: Path = Path(".")
    model_options: Mapping[str, Any] = field(default_factory=dict)
    batch: int = DEFAULT_BATCH

    def plan(self, estimator: str, stages: Sequence[StagePlan]) -> Plan:
        """The plan of ``stages`` under this header, priced (:func:`price_stages`)."""
        return Plan(model=self.model, model_sha256=self.model_sha256, board=self.board, cap=self.cap,
                    objective=self.objective, estimator=estimator, build=self.build, stages=tuple(stages),
                    metrics=price_stages(stages, self.batch, self.build.io_type), board_files=tuple(self.board_files),
                    base_dir=self.base_dir, model_options=dict(self.model_options), batch=self.batch)


@dataclass(frozen=True)
class Optimality:
    """What the planner proved about the plan it returns.

    Attributes:
        optimal: proven optimal for the objective over the candidates the planner searched (the
            per-layer versions of :mod:`split4ml.plan.versions`, the split options it offered);
            False when a solver stopped at its time limit first.
        bound: a proven lower bound of the objective's first key (:data:`FIRST_KEY`): the plan's own
            value when optimal; ``None`` when the solver proved none.
        key: that first key.
        solver: ``exact DP`` (chains) or ``CP-SAT`` (models with skip connections); a chain's plan that
            is not proven says why in brackets: ``fronts rounded`` (:mod:`split4ml.plan.joint`),
            ``versions capped`` (:func:`split4ml.plan.versions.limit_versions`).
        time_limit_s: the solver's time limit, where it has one.
    """

    optimal: bool
    bound: float | None
    key: str
    solver: str
    time_limit_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"optimal": self.optimal, "bound": self.bound, "bound_key": self.key, "solver": self.solver,
                "time_limit_s": self.time_limit_s}

    def describe(self) -> str:
        """One line for the plan table."""
        if self.optimal:
            return f"optimal for its objective over the candidate settings searched ({self.solver})"
        if "(" in self.solver:  # it names why: rounded fronts or capped versions, not a time limit
            return (f"NOT proven optimal: {self.solver}; every board fits, but a better plan may exist over "
                    "the settings not searched")
        unit = "boards" if self.key == "n_boards" else "us"
        bound = (f"; the {self.key.removesuffix('_us')} is at least {self.bound:,.2f} {unit}"
                 if self.bound is not None else "")
        limit = f" {self.time_limit_s:g} s" if self.time_limit_s is not None else ""
        return (f"NOT proven optimal: {self.solver} stopped at its{limit} time limit{bound}; raise --time-limit "
                "to search longer")


@dataclass(frozen=True, eq=False)
class Plan:
    """A validated plan: stages with boards, layers, settings, wires and estimates."""

    model: str
    model_sha256: str | None
    board: Board
    cap: float
    objective: str
    estimator: str
    build: BuildSettings
    stages: tuple[StagePlan, ...]
    metrics: PipelineMetrics
    board_files: tuple[str, ...] = ()
    base_dir: Path = Path(".")
    #: the corrections of a ``calibrated`` estimator (:meth:`Calibration.to_dict` form), so that the
    #: plan is re-priced the same way when it is read back
    calibration: Mapping[str, Any] | None = None
    #: how the model file is loaded besides its path (see :attr:`PlanSpec.model_options`)
    model_options: Mapping[str, Any] = field(default_factory=dict)
    #: what the planner proved (``None`` for a plan read from a file: nothing is claimed)
    optimality: Optimality | None = None
    #: samples per frame the figures are for (the runtime's ``--batch``)
    batch: int = DEFAULT_BATCH
    #: when the planner chose io_stream for a model with convolutions that io_parallel cannot hold
    #: (``split4ml plan`` without ``--io-type``): why (``None`` otherwise)
    io_type_chosen: str | None = None

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    def first_key(self, objective: str | None = None) -> float:
        """The value of the first key of ``objective`` (default the plan's own): its bottleneck (us),
        latency (us) or number of boards."""
        key = FIRST_KEY[objective or self.objective]
        return float(self.n_boards) if key == "n_boards" else float(getattr(self.metrics, key))

    @property
    def n_boards(self) -> int:
        return sum(st.n_boards for st in self.stages)

    @property
    def model_path(self) -> Path:
        p = Path(self.model)
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def settings(self) -> dict[str, LayerSettings]:
        out: dict[str, LayerSettings] = {}
        for st in self.stages:
            out.update(st.settings)
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """The YAML form (a generated plan writes everything, so a person can read and edit it)."""
        model = self.model_path
        if relative_to is not None:
            try:
                model = model.resolve().relative_to(relative_to.resolve())
            except ValueError:
                model = model.resolve()
        m = self.metrics
        options = dict(self.model_options)
        if options.get("weights") is not None:
            weights = Path(str(options["weights"]))
            weights = weights if weights.is_absolute() else self.base_dir / weights
            if relative_to is not None:
                try:
                    weights = weights.resolve().relative_to(relative_to.resolve())
                except ValueError:
                    weights = weights.resolve()
            options["weights"] = str(weights)
        if options.get("input_shape") is not None:
            options["input_shape"] = [int(d) for d in options["input_shape"]]
        out: dict[str, Any] = {
            "split4ml_plan": PLAN_VERSION,
            "model": str(model),
            "model_sha256": self.model_sha256,
            **({"model_options": options} if options else {}),
            "board": self.board.name,
            "cap": self.cap,
            "objective": self.objective,
            "batch": self.batch,
            "estimator": self.estimator,
            **({"calibration": dict(self.calibration)} if self.calibration else {}),
            "hls": {
                "io_type": self.build.io_type,
                "default_precision": str(self.build.default_precision),
                "result_precision": str(self.build.result_precision),
                "accum_precision": str(self.build.accum_precision),
                "input_precision": str(self.build.input_precision),
            },
            "stages": [],
            "summary": {
                "n_stages": self.n_stages,
                "n_boards": self.n_boards,
                "bottleneck_stage": m.bottleneck_stage,
                "bottleneck_ii_cycles": round(m.bottleneck_ii_cycles, 1),
                "bottleneck_us": round(m.bottleneck_us, 3),
                "latency_cycles": round(m.latency_cycles, 1),
                "latency_us": round(m.latency_us, 3),
                "throughput_per_s": round(m.throughput_per_s, 1),
                "bottleneck": m.bottleneck,
                "fabric_bound_us": round(m.fabric_bound_us, 3),
                "link_bound_us": round(m.link_bound_us, 3),
                "frame_bound_us": round(m.frame_bound_us, 3),
                **({"optimal": self.optimality.optimal} if self.optimality else {}),
                **({"bound": {self.optimality.key: round(self.optimality.bound, 3)}}
                   if self.optimality and self.optimality.bound is not None else {}),
            },
        }
        if self.board_files:
            out["board_files"] = list(self.board_files)
        for st in self.stages:
            layers = layer_entries(st.layers, st.settings)
            entry: dict[str, Any] = {"index": st.index, "board": st.board.name, "layers": layers}
            if st.merge:
                entry["merge"] = st.merge
                entry["tail"] = layer_entries(st.tail, st.settings)
            if st.split:
                entry["split"] = st.split.as_dict()
                entry["shards"] = [
                    {"part": sh.part, "board": sh.board.name,
                     "layers": layer_entries(sh.layers, sh.settings),
                     "input": sh.input.as_dict(), "output": sh.output.as_dict(), "estimate": sh.cost.as_dict(),
                     **({"estimate_source": sh.estimate_source} if sh.estimate_source else {})}
                    for sh in st.shards]
            out["stages"].append({
                **entry,
                "input": st.input.as_dict(),
                "output": st.output.as_dict(),
                "estimate": st.cost.as_dict(),
                **({"estimate_source": st.estimate_source} if st.estimate_source else {}),
                "utilization": {k: round(v, 4) for k, v in st.utilization().items()},
                "interval_us": round(m.stage_interval_us[st.index], 3),
                "latency_us": round(m.stage_latency_us[st.index], 3),
            })
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``plan --json`` contract (keys are stable; new keys may be added)."""
        m = self.metrics
        return {
            "objective": self.objective,
            "board": self.board.name,
            "n_stages": self.n_stages,
            "n_boards": self.n_boards,
            "cap": self.cap,
            "estimator": self.estimator,
            "bottleneck_ii_cycles": m.bottleneck_ii_cycles,
            "bottleneck_stage": m.bottleneck_stage,
            "latency_cycles": m.latency_cycles,
            "latency_us": m.latency_us,
            "throughput_per_s": m.throughput_per_s,
            "batch": self.batch,
            "io_type": self.build.io_type,
            "io_type_chosen": self.io_type_chosen,
            "bottleneck": m.bottleneck,
            "bottleneck_us": m.bottleneck_us,
            "fabric_bound_us": m.fabric_bound_us,
            "link_bound_us": m.link_bound_us,
            "frame_bound_us": m.frame_bound_us,
            "source_us": m.source_us,
            "sink_us": m.sink_us,
            "optimal": self.optimality.optimal if self.optimality else None,
            "bound": self.optimality.bound if self.optimality else None,
            "optimality": self.optimality.as_dict() if self.optimality else None,
            "stages": [
                {
                    "index": st.index,
                    "board": st.board.name,
                    "board_type": st.board.name,
                    "layers": list(st.layers),
                    "resources": st.cost.resources(),
                    "utilization": st.utilization(),
                    "ii_cycles": st.cost.ii_cycles,
                    "latency_cycles": st.cost.latency_cycles,
                    "interval_us": m.stage_interval_us[st.index],
                    "input": st.input.as_dict(),
                    "output": st.output.as_dict(),
                    "n_boards": st.n_boards,
                    "merge": st.merge,
                    "estimate_source": st.estimate_source,
                    "shards": [
                        {"board": sh.board.name, "board_type": sh.board.name, "layer": st.split.layer, "kind": st.split.kind, "part": sh.part,
                         "parts": st.split.parts, "layers": list(sh.layers), "resources": sh.cost.resources(),
                         "utilization": sh.utilization(), "ii_cycles": sh.cost.ii_cycles,
                         "latency_cycles": sh.cost.latency_cycles, "estimate_source": sh.estimate_source}
                        for sh in st.shards
                    ] if st.split else [],
                    "layer_settings": layer_entries(st.layers, st.settings),
                }
                for st in self.stages
            ],
        }

    def write(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(self.to_dict(relative_to=p.parent), sort_keys=False, width=110)
        header = ("# split4ml plan: one stage per board. Edit 'layers' (and per-layer settings) to split by hand;\n"
                  "# 'input', 'output', 'estimate', 'utilization' and 'summary' are recomputed when the plan is read.\n")
        p.write_text(header + text)


def stage_names(stages: Sequence[StagePlan]) -> list[tuple[str, ...]]:
    return [st.layers for st in stages]
