"""The chain partitioner's parts: objectives, tolerances, split options, partitions, stage tables
and their prices, and the exact dynamic programmes over them.

:func:`split4ml.plan.partition.partition_chain` (plain chains) and
:func:`split4ml.plan.partition_split.solve_with_splits` (chains with intra-layer splits) are built
from these; both import this module, and neither imports the other's solver.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..boards import RESOURCES, Board
from ..errors import PlanError
from ..estimate.base import Cost
from ..estimate.hls_rules import relabels_stream
from ..ir import Graph, Layer
from ..settings import OBJECTIVES, BuildSettings, LayerSettings
from ..shard import SPLIT_KINDS
from .metrics import (
    DEFAULT_BATCH,
    BoardLoad,
    Endpoint,
    PipelineMetrics,
    fabric_cycles,
    frame_link_us,
    group_metrics,
    link_us,
    per_frame_us,
)

#: Relative and absolute (microseconds) tolerance under which two objective values tie.
REL_TOL = 1e-9
ABS_TOL_US = 1e-9

_RES_LABEL = {"lut": "LUT", "ff": "FF", "dsp": "DSP", "bram18": "BRAM18"}
_INF = math.inf


@dataclass(frozen=True)
class SplitOption:
    """One way to run a unit as a *split group*: ``k`` boards in parallel, one shard of the unit each.

    Attributes:
        kind: ``neuron`` (every shard computes a slice of the outputs from the whole input, so the
            stage before the group sends its whole output to each of the ``k`` shards: fan-out ``k``)
            or ``input`` (every shard takes a slice of the input and outputs partial sums; the stage
            before sends its output once, sliced: fan-out 1).
        shard_costs: cost of each shard's board, board shell included.
        shard_bytes_out: bytes per sample each shard outputs (before any fan-out to the next group).
        tail: cost (no shell) of the layers that run once the shards' outputs are joined (merge
            node, softmax, ...): at the start of the next stage, or on an extra one-board merge
            stage when the unit is the last. ``None`` when the join is a plain concatenation, which
            the next stage (or the sink) does for free.
        label: anything the caller wants back with the chosen option (not used by the solver).
        span: units the group covers, from its own on: 1, or more for a neuron split whose shards also
            run the channel-wise units that follow (pooling): their outputs are then the pooled slices.
            A group of span > 1 has no tail.
    """

    kind: str
    shard_costs: tuple[Cost, ...]
    shard_bytes_out: tuple[float, ...]
    tail: Cost | None = None
    label: Any = field(default=None, compare=False)
    #: values per sample each shard reads and writes (its AXI wrapper's reads and writes); empty: none
    shard_values_in: tuple[float, ...] = ()
    shard_values_out: tuple[float, ...] = ()
    span: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard_costs", tuple(self.shard_costs))
        object.__setattr__(self, "shard_bytes_out", tuple(float(b) for b in self.shard_bytes_out))
        for name in ("shard_values_in", "shard_values_out"):
            vals = tuple(float(v) for v in getattr(self, name)) or (0.0,) * len(self.shard_costs)
            if len(vals) != len(self.shard_costs):
                raise ValueError(f"{name} needs one entry per shard")
            object.__setattr__(self, name, vals)
        if self.kind not in SPLIT_KINDS:
            raise ValueError(f"split kind {self.kind!r} is not one of {SPLIT_KINDS}")
        if len(self.shard_costs) < 2 or len(self.shard_bytes_out) != len(self.shard_costs):
            raise ValueError("a split option needs k >= 2 shard costs and as many shard output sizes")
        if any(b < 0 for b in self.shard_bytes_out):
            raise ValueError("shard_bytes_out must be non-negative")
        if self.span < 1 or (self.span > 1 and (self.kind != "neuron" or self.tail is not None)):
            raise ValueError("a split option spans 1 unit, or more as a neuron split without a tail")

    @property
    def k(self) -> int:
        """Number of shards (boards) of the group."""
        return len(self.shard_costs)

    @property
    def fanout(self) -> int:
        """Copies of the upstream output the group needs: ``k`` (neuron) or 1 (input, sliced)."""
        return self.k if self.kind == "neuron" else 1


@dataclass(frozen=True)
class Partition:
    """A chain cut into pipeline stages; a stage is one board, or a split group of parallel boards.

    Attributes:
        bounds: unit index where each stage starts, plus ``U`` at the end: ``(0, b1, ..., U)``. A split
            group holds exactly one unit; a merge stage that holds only the tail of the split before
            it has no unit (two equal bounds).
        stage_costs: cost of every stage (board shell included); for a split group, the envelope of
            its shards (per field, the largest shard).
        metrics: bottleneck, latency and throughput of the pipeline (:mod:`split4ml.plan.metrics`;
            a group's interval and latency are those of its slowest shard).
        objective: the objective this partition optimises.
        splits: per stage, the index of the chosen :class:`SplitOption` in ``options[bounds[s]]`` for a
            split group, else ``None``.
        tails: per stage, whether it starts with the tail of the split group just before it.
        board_costs: per stage, the cost of each of its boards (one, or one per shard).
    """

    bounds: tuple[int, ...]
    stage_costs: tuple[Cost, ...]
    metrics: PipelineMetrics
    objective: str = "throughput"
    splits: tuple[int | None, ...] = ()
    tails: tuple[bool, ...] = ()
    board_costs: tuple[tuple[Cost, ...], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.bounds) - 1
        if not self.splits:
            object.__setattr__(self, "splits", (None,) * n)
        if not self.tails:
            object.__setattr__(self, "tails", (False,) * n)
        if not self.board_costs:
            object.__setattr__(self, "board_costs", tuple((c,) for c in self.stage_costs))

    @property
    def n_stages(self) -> int:
        """Pipeline steps (a split group counts once)."""
        return len(self.bounds) - 1

    @property
    def n_boards(self) -> int:
        """Physical boards: one per plain stage, ``k`` per split group."""
        return sum(len(b) for b in self.board_costs)

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """``(start, end)`` unit indices of each stage, end exclusive."""
        return tuple(zip(self.bounds[:-1], self.bounds[1:], strict=True))


@dataclass(frozen=True)
class ChainCuts:
    """The tensors between a chain's units, as every chain solver prices them (:class:`ChainPrice`):
    the units' names, the bytes and values per sample of the model input and of each unit's output (a
    unit sends its last layer's result type), and which units hls4ml computes in place."""

    names: tuple[str, ...]
    bytes_in: float
    bytes_out: tuple[float, ...]
    values_in: float
    values_out: tuple[float, ...]
    in_place: tuple[bool, ...]

    def solver_args(self) -> dict[str, Any]:
        """The keywords :func:`~split4ml.plan.partition.partition_chain` and
        :func:`~split4ml.plan.joint.solve_joint` take for them (besides ``bytes_in`` and ``bytes_out``)."""
        return {"unit_names": list(self.names), "values_in": self.values_in, "values_out": list(self.values_out),
                "in_place": list(self.in_place)}


def chain_cuts(graph: Graph, units: Sequence[Sequence[Layer]], settings: Mapping[str, LayerSettings],
               build: BuildSettings) -> ChainCuts:
    """:class:`ChainCuts` of ``graph``'s ``units`` under ``settings`` (the one place they are worked out)."""
    shape_in = graph.input.output_shape
    return ChainCuts(
        names=tuple(u[0].name for u in units),
        bytes_in=float(math.prod(shape_in) * build.input_precision.storage_bytes),
        bytes_out=tuple(float(math.prod(u[-1].output_shape) * settings[u[-1].name].precision.result.storage_bytes)
                        for u in units),
        values_in=float(math.prod(shape_in)),
        values_out=tuple(float(math.prod(u[-1].output_shape)) for u in units),
        in_place=tuple(relabels_stream(u, build.io_type, graph.outputs) for u in units))


def shell_cost(board: Board) -> Cost:
    """The fixed cost of one board's shell, from the board catalogue (no cycles)."""
    return Cost(lut=board.shell_lut, ff=board.shell_ff, dsp=board.shell_dsp, bram18=board.shell_bram18)


# --------------------------------------------------------------------------- the stage table
@dataclass(frozen=True)
class _Table:
    """Feasible stages of the chain, one row per end ``j`` (0..U), one column per ``d``.

    Column ``d`` of row ``j`` is the stage ``[j-1-d, j)``; ``start[j, d] = j-1-d`` (clipped at 0).
    ``interval`` and ``latency`` are in microseconds and ``inf`` where the stage is infeasible.
    ``latency`` is the stage's frame trip: per-frame cost, the batch through its fabric, the frame on its link.
    """

    n_units: int
    start: np.ndarray
    ok: np.ndarray
    interval: np.ndarray
    latency: np.ndarray
    ii_cycles: np.ndarray | None = None  # the stage's cycles (shell included), to re-price it
    lat_cycles: np.ndarray | None = None

    @property
    def width(self) -> int:
        return int(self.start.shape[1])


def _grid(n_units: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    j = np.arange(n_units + 1)[:, None]
    d = np.arange(width)[None, :]
    raw = j - 1 - d
    return raw, np.clip(raw, 0, None)


class ChainPrice:
    """The performance model (:mod:`split4ml.plan.metrics`) of the stages of a chain on one board type.

    Cut ``c`` (``0 .. U``) is the tensor entering unit ``c`` (the model input at 0, the model output at
    ``U``): ``cut_bytes[c]`` bytes and ``cut_values[c]`` values per sample. A stage ``[i, j)`` reads cut
    ``i`` and writes cut ``j``; :meth:`stage` prices it from its cycles, vectorised over numpy arrays.

    ``in_place``: per unit, whether hls4ml computes it in place (an io_stream flatten,
    :func:`~split4ml.estimate.hls_rules.relabels_stream`). A stage of such units alone is no
    computation and cannot be built: :meth:`buildable` says which stages every solver may use.

    ``cut_ok``: per cut ``0 .. U``, whether a stage may start or end there (default: every cut). A
    model with skip connections whose units run in one forced order is priced as a chain whose cuts
    carry every tensor crossing them; a cut where tensors of two wire types cross is no link
    (:mod:`split4ml.plan.dag`).
    """

    def __init__(self, board: Board, bytes_in: float, bytes_out: Sequence[float], values_in: float = 0.0,
                 values_out: Sequence[float] | None = None, batch: int = DEFAULT_BATCH,
                 io_type: str = "io_parallel", in_place: Sequence[bool] | None = None,
                 cut_ok: Sequence[bool] | None = None) -> None:
        self.board = board
        self.batch = int(batch)
        self.io_type = io_type
        self.cut_bytes = np.concatenate([[float(bytes_in)], np.asarray(bytes_out, dtype=float)])
        vo = np.zeros(len(bytes_out)) if values_out is None else np.asarray(values_out, dtype=float)
        self.cut_values = np.concatenate([[float(values_in)], vo])
        link = board.link
        self.link_us = link_us(link, self.cut_bytes, 1, self.batch)  # receiving or sending cut c
        self.frame_send_us = frame_link_us(link, self.cut_bytes, 1, self.batch)
        self.per_frame = per_frame_us(board, self.batch)
        #: the source sending the model input: the first step of the pipeline and of its latency
        self.source_us = float(self.link_us[0])
        self.source_latency_us = float(self.frame_send_us[0])
        n = len(bytes_out)
        flags = [False] * n if in_place is None else [bool(x) for x in in_place]
        if len(flags) != n:
            raise ValueError(f"in_place has {len(flags)} entries for {n} units")
        #: ``in_place_from[j]``: the first unit of the run of in-place units that ends at unit ``j - 1``
        #: (``j`` when unit ``j - 1`` computes something)
        self.in_place_from = np.arange(n + 1)
        for j in range(1, n + 1):
            if flags[j - 1]:
                self.in_place_from[j] = self.in_place_from[j - 1]
        self.n_computing = n - sum(flags)
        self.cut_ok = np.ones(n + 1, dtype=bool) if cut_ok is None else np.asarray(cut_ok, dtype=bool)
        if self.cut_ok.shape != (n + 1,) or not (self.cut_ok[0] and self.cut_ok[-1]):
            raise ValueError(f"cut_ok needs {n + 1} entries, the first and last True")

    def buildable(self, start: Any, end: Any) -> Any:
        """Whether stages ``[start, end)`` hold a unit that computes something (not only in-place
        units) and start and end at cuts that may be links, vectorised."""
        return (np.asarray(start) < self.in_place_from[end]) & self.cut_ok[start] & self.cut_ok[end]

    def stage(self, start: Any, end: Any, ii_cycles: Any, latency_cycles: Any, copies: int = 1,
              read: tuple[float, float] | None = None) -> tuple[Any, Any]:
        """(interval, latency) in microseconds of stages ``[start, end)`` with these cycles (shell
        included): the largest of fabric, receive, send and per-frame cost; and the frame's trip.
        ``copies``: it sends its output that many times (to the shards of a neuron split); ``read``:
        ``(values, bytes)`` per sample it reads when that is not cut ``start`` (the shards' outputs
        before the merge layer that starts it)."""
        values_in = self.cut_values[start] if read is None else read[0]
        recv = self.link_us[start] if read is None else link_us(self.board.link, read[1], 1, self.batch)
        return self.board_times(ii_cycles, latency_cycles, values_in, self.cut_values[end], recv,
                                copies * self.cut_bytes[end], copies)

    def board_times(self, ii_cycles: Any, latency_cycles: Any, values_in: Any, values_out: Any, recv_us: Any,
                    bytes_sent: Any, frames_sent: int) -> tuple[Any, Any]:
        """(interval, latency) in microseconds of one board (see :class:`~split4ml.plan.metrics.BoardLoad`)."""
        fi, fl = fabric_cycles(ii_cycles, latency_cycles, values_in, values_out, self.io_type)
        fi_us, fl_us = self.board.cycles_to_us(fi), self.board.cycles_to_us(fl)
        link = self.board.link
        send = link_us(link, bytes_sent, frames_sent, self.batch)
        interval = np.maximum(np.maximum(fi_us, self.per_frame), np.maximum(recv_us, send))
        latency = link.latency_us + (self.batch - 1) * fi_us + fl_us + frame_link_us(link, bytes_sent, frames_sent,
                                                                                     self.batch)
        return interval, latency

    def metrics(self, costs: Sequence[Cost], bounds: Sequence[int]) -> PipelineMetrics:
        """The figures of the stages ``bounds`` (cut indices ``0 = b0 < b1 < ... = U``) with ``costs``."""
        loads = [[BoardLoad(c, self.board, bytes_sent=self.cut_bytes[j], bytes_recv=self.cut_bytes[i],
                            n_in=self.cut_values[i], n_out=self.cut_values[j])]
                 for c, i, j in zip(costs, bounds[:-1], bounds[1:], strict=True)]
        link = self.board.link
        return group_metrics(loads, Endpoint(link, self.cut_bytes[0]), Endpoint(link, self.cut_bytes[-1]),
                             batch=self.batch, io_type=self.io_type)


def _additive_table(units: Sequence[Cost], shell: Cost, board: Board, cap: float, price: ChainPrice) -> _Table:
    n = len(units)
    res = np.array([[float(getattr(c, r)) for r in RESOURCES] for c in units], dtype=float).reshape(n, len(RESOURCES))
    prefix = np.vstack([np.zeros((1, len(RESOURCES))), np.cumsum(res, axis=0)])
    # A stage [i, j) fits iff shell + prefix[j] - prefix[i] <= capped + 1e-9 (as Cost.fits), i.e.
    # prefix[i] >= prefix[j] - room; prefix is non-decreasing so the fitting starts are i >= lo[j].
    room = np.array([board.capped(r, cap) - float(getattr(shell, r)) + 1e-9 for r in RESOURCES])
    lo = np.zeros(n + 1, dtype=int)
    for k in range(len(RESOURCES)):
        lo = np.maximum(lo, np.searchsorted(prefix[:, k], prefix[:, k] - room[k], side="left"))
    ends = np.arange(n + 1)
    width = max(1, int(np.max(ends - lo)))
    raw, start = _grid(n, width)
    ok = (raw >= 0) & (raw >= lo[:, None]) & price.buildable(start, np.arange(n + 1)[:, None])
    ok[0, :] = False

    ii = np.array([float(c.ii_cycles) for c in units])
    run_max = np.maximum.accumulate(ii[start], axis=1)  # max ii of units j-1-d .. j-1
    stage_ii = np.maximum(run_max, float(shell.ii_cycles))
    lat_prefix = np.concatenate([[0.0], np.cumsum([float(c.latency_cycles) for c in units])])
    stage_lat = float(shell.latency_cycles) + lat_prefix[:, None] - lat_prefix[start]
    ends = np.broadcast_to(np.arange(n + 1)[:, None], start.shape)
    iv, lt = price.stage(start, ends, stage_ii, stage_lat)
    interval = np.where(ok, iv, _INF)
    latency = np.where(ok, lt, _INF)
    return _Table(n, start, ok, interval, latency, stage_ii, np.broadcast_to(stage_lat, start.shape))


class _SegmentCache:
    """Calls ``segment_cost(i, j)`` at most once per stage."""

    def __init__(self, fn: Callable[[int, int], Cost]) -> None:
        self._fn = fn
        self.costs: dict[tuple[int, int], Cost] = {}

    def __call__(self, i: int, j: int) -> Cost:
        key = (i, j)
        if key not in self.costs:
            self.costs[key] = self._fn(i, j)
        return self.costs[key]


def _callable_table(n: int, seg: _SegmentCache, board: Board, cap: float, price: ChainPrice) -> _Table:
    """Evaluate stages from each start until the first one that does not fit.

    Assumes a stage with more units never needs fewer resources (true of every sane estimator),
    so a longer stage from the same start is not tried once one does not fit.
    """
    feasible: list[tuple[int, int, Cost]] = []
    for i in range(n):
        for j in range(i + 1, n + 1):
            c = seg(i, j)
            if not c.fits(board, cap):
                break
            feasible.append((i, j, c))
    width = max([1] + [j - i for i, j, _ in feasible])
    raw, start = _grid(n, width)
    ok = np.zeros(raw.shape, dtype=bool)
    interval = np.full(raw.shape, _INF)
    latency = np.full(raw.shape, _INF)
    ii_c = np.full(raw.shape, _INF)
    lat_c = np.full(raw.shape, _INF)
    for i, j, c in feasible:
        if not price.buildable(i, j):
            continue
        d = j - 1 - i
        ok[j, d] = True
        ii_c[j, d], lat_c[j, d] = float(c.ii_cycles), float(c.latency_cycles)
        iv, lt = price.stage(i, j, ii_c[j, d], lat_c[j, d])
        interval[j, d], latency[j, d] = float(iv), float(lt)
    return _Table(n, start, ok, interval, latency, ii_c, lat_c)


# --------------------------------------------------------------------------- DP primitives
def _tie(value: float) -> float:
    """Largest value that still ties with ``value``."""
    return value + REL_TOL * abs(value) + ABS_TOL_US


def _path(arg: np.ndarray, start: np.ndarray, n: int) -> tuple[int, ...]:
    bounds = [n]
    j = n
    while j > 0:
        j = int(start[j, int(arg[j])])
        bounds.append(j)
    return tuple(reversed(bounds))


def _layered_path(args: list[np.ndarray], start: np.ndarray, n: int, k: int) -> tuple[int, ...]:
    bounds = [n]
    j = n
    for layer in range(k, 0, -1):
        j = int(start[j, int(args[layer][j])])
        bounds.append(j)
    if j != 0:  # pragma: no cover - guarded by the finite DP value
        raise AssertionError("layered DP path does not start at unit 0")
    return tuple(reversed(bounds))


def _seq_minmax(tab: _Table, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest largest stage value over [0, j) for every j, any number of stages."""
    n = tab.n_units
    best = np.full(n + 1, _INF)
    best[0] = 0.0
    arg = np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):
        cand = np.maximum(best[tab.start[j]], values[j])
        d = int(np.argmin(cand))
        best[j] = cand[d]
        arg[j] = d
    return best, arg


def _seq_count_sum(tab: _Table, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fewest stages, then smallest latency sum, over [0, j) using only ``mask`` stages."""
    n = tab.n_units
    count = np.full(n + 1, _INF)
    total = np.full(n + 1, _INF)
    count[0] = total[0] = 0.0
    arg = np.zeros(n + 1, dtype=int)
    lat = np.where(mask, tab.latency, _INF)
    cnt_step = np.where(mask, 1.0, _INF)
    for j in range(1, n + 1):
        s = tab.start[j]
        c = count[s] + cnt_step[j]
        m = c.min()
        if m == _INF:
            continue
        t = np.where(c == m, total[s] + lat[j], _INF)
        d = int(np.argmin(t))
        count[j], total[j], arg[j] = m, t[d], d
    return count, total, arg


def _seq_sum(tab: _Table, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest latency sum over [0, j), any number of stages."""
    n = tab.n_units
    total = np.full(n + 1, _INF)
    total[0] = 0.0
    arg = np.zeros(n + 1, dtype=int)
    lat = np.where(mask, tab.latency, _INF)
    for j in range(1, n + 1):
        t = total[tab.start[j]] + lat[j]
        d = int(np.argmin(t))
        total[j], arg[j] = t[d], d
    return total, arg


def _layered(tab: _Table, values: np.ndarray, n_layers: int, combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
             exact: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """DP over (stages k, end j): ``f_k[j] = min_d combine(f_{k-1}[start[j, d]], values[j, d])``.

    Rows that cannot lie on a path of ``n_layers`` stages (``exact``) or at most ``n_layers`` stages
    ending at U are skipped. Returns ``f_0..f_K`` and the argmin columns of every layer.
    """
    n, width = tab.n_units, tab.width
    f0 = np.full(n + 1, _INF)
    f0[0] = 0.0
    fs, args = [f0], [np.zeros(n + 1, dtype=int)]
    for k in range(1, n_layers + 1):
        left = n_layers - k
        lo = max(k, n - left * width)
        hi = min(n, k * width, n - left if exact else n)
        f = np.full(n + 1, _INF)
        a = np.zeros(n + 1, dtype=int)
        if lo <= hi:
            cand = combine(fs[-1][tab.start[lo:hi + 1]], values[lo:hi + 1])
            best = np.argmin(cand, axis=1)
            f[lo:hi + 1] = cand[np.arange(hi + 1 - lo), best]
            a[lo:hi + 1] = best
        fs.append(f)
        args.append(a)
    return fs, args


# --------------------------------------------------------------------------- messages
def _unit_overflow_message(bad: list[tuple[str, Cost]], board: Board, cap: float, note: str = "") -> str:
    parts = []
    for name, cost in bad:
        over = cost.overflow(board, cap)
        items = ", ".join(
            f"{_RES_LABEL[r]} {getattr(cost, r):,.0f} of {board.capped(r, cap):,.0f} allowed ({ratio:.0%})"
            for r, ratio in sorted(over.items(), key=lambda kv: -kv[1]))
        parts.append(f"unit {name!r} needs {items}")
    return (
        f"no partition fits: {len(bad)} unit(s) cannot fit on one {board.name} board even alone "
        f"(board shell included, cap {cap:g} of each resource): " + "; ".join(parts) + ". "
        "To make a unit fit: a larger reuse factor for its layer (fewer multipliers per clock), the "
        "Resource strategy, lower precision (narrower weights and accumulators), a higher --cap, a "
        "bigger board (`split4ml boards` lists them), or a split of the layer across boards"
        + (note or " (an intra-layer split)") + "."
    )


def check_options(objective: str, cap: float, max_boards: int | None = None, n_stages: int | None = None) -> None:
    """The planner options every partitioner (chain, joint, DAG) checks the same way.

    Raises:
        PlanError: unknown objective, cap outside (0, 1], a board or stage count below 1, or more
            stages asked for than boards allowed.
    """
    if objective not in OBJECTIVES:
        raise PlanError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if not 0 < cap <= 1:
        raise PlanError(f"cap {cap!r} must be in (0, 1]: the fraction of each board resource a stage may use")
    if max_boards is not None and max_boards < 1:
        raise PlanError(f"max_boards must be at least 1, got {max_boards}")
    if n_stages is not None and n_stages < 1:
        raise PlanError(f"the number of stages must be at least 1, got {n_stages}")
    if n_stages is not None and max_boards is not None and n_stages > max_boards:
        raise PlanError(f"asked for exactly {n_stages} stages but at most {max_boards} boards")


def _validate(units: Sequence[Cost], bytes_out: Sequence[float], objective: str, max_boards: int | None,
              n_stages: int | None, unit_names: Sequence[str] | None, cap: float, additive: bool) -> None:
    n = len(units)
    if n == 0:
        raise PlanError("the model has no units (layers) to place on boards")
    if len(bytes_out) != n:
        raise ValueError(f"bytes_out has {len(bytes_out)} entries for {n} units")
    if unit_names is not None and len(unit_names) != n:
        raise ValueError(f"unit_names has {len(unit_names)} entries for {n} units")
    check_options(objective, cap, max_boards, n_stages)
    if any(b < 0 for b in bytes_out):
        raise ValueError("bytes_out must be non-negative")
    if additive:
        for i, c in enumerate(units):
            vals = [getattr(c, r) for r in RESOURCES] + [c.latency_cycles, c.ii_cycles]
            if any(v < 0 for v in vals):
                raise ValueError(f"unit {i} has a negative cost {c}; costs must be non-negative")


# --------------------------------------------------------------------------- the solver
def _min_sum_exact(tab: _Table, mask: np.ndarray, k: int) -> tuple[float, tuple[int, ...] | None]:
    lat = np.where(mask, tab.latency, _INF)
    fs, args = _layered(tab, lat, k, np.add, exact=True)
    val = float(fs[k][tab.n_units])
    if val == _INF:
        return val, None
    return val, _layered_path(args, tab.start, tab.n_units, k)


def _solve_throughput(tab: _Table, n_stages: int | None, limit: int) -> tuple[int, ...] | None:
    n = tab.n_units
    if n_stages is not None:
        fs, _ = _layered(tab, tab.interval, n_stages, np.maximum, exact=True)
        best = float(fs[n_stages][n])
        if best == _INF:
            return None
        mask = tab.ok & (tab.interval <= _tie(best))
        return _min_sum_exact(tab, mask, n_stages)[1]
    best_any, _ = _seq_minmax(tab, tab.interval)
    best = float(best_any[n])
    count, _, arg = _seq_count_sum(tab, tab.ok & (tab.interval <= _tie(best)))
    if count[n] > limit:
        fs, _ = _layered(tab, tab.interval, limit, np.maximum, exact=False)
        best = min(float(f[n]) for f in fs[1:])
        count, _, arg = _seq_count_sum(tab, tab.ok & (tab.interval <= _tie(best)))
    return _path(arg, tab.start, n)


def _solve_boards(tab: _Table, k: int) -> tuple[int, ...] | None:
    fs, _ = _layered(tab, tab.interval, k, np.maximum, exact=True)
    best = float(fs[k][tab.n_units])
    if best == _INF:
        return None
    return _min_sum_exact(tab, tab.ok & (tab.interval <= _tie(best)), k)[1]


def _solve_latency(tab: _Table, n_stages: int | None, limit: int, lat_in: float) -> tuple[int, ...] | None:
    n = tab.n_units
    if n_stages is not None:
        fs, args = _layered(tab, tab.latency, n_stages, np.add, exact=True)
        k = n_stages
        best = float(fs[k][n])
        if best == _INF:
            return None
    else:
        total, arg = _seq_sum(tab, tab.ok)
        k_opt = len(_path(arg, tab.start, n)) - 1
        top = k_opt if k_opt <= limit else limit
        fs, args = _layered(tab, tab.latency, top, np.add, exact=False)
        best = min(float(f[n]) for f in fs[1:])
        thr = _tie(best + lat_in) - lat_in
        k = next(k for k in range(1, top + 1) if fs[k][n] <= thr)
    thr = _tie(best + lat_in) - lat_in
    # Last key: smallest bottleneck among k-stage partitions with latency <= thr. Bracket it by the
    # unconstrained k-stage bottleneck and the bottleneck of one latency-optimal partition, then
    # bisect over the interval values in between with an exact min-latency feasibility DP.
    path = _layered_path(args, tab.start, n, k)
    upper = max(float(tab.interval[j, j - 1 - i]) for i, j in zip(path[:-1], path[1:], strict=True))
    fmm, _ = _layered(tab, tab.interval, k, np.maximum, exact=True)
    lower = float(fmm[k][n])
    if upper <= _tie(lower):
        return path
    cands = np.unique(tab.interval[tab.ok & (tab.interval >= lower) & (tab.interval < upper)])
    lo_i, hi_i = 0, len(cands)  # answer index in [lo_i, hi_i]; hi_i means "upper" (path)
    best_path = path
    while lo_i < hi_i:
        mid = (lo_i + hi_i) // 2
        val, p = _min_sum_exact(tab, tab.ok & (tab.interval <= cands[mid]), k)
        if p is not None and val <= thr:
            hi_i, best_path = mid, p
        else:
            lo_i = mid + 1
    return best_path
