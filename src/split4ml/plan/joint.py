"""Exact joint choice of per-unit versions, cut points and board types for a chain.

The design-space planner. Every unit (a layer and its activations) offers a few *versions*:
hls4ml settings of its compute layer (reuse factor, strategy), each with a cost per board type
(:mod:`split4ml.plan.versions` makes them). Boards come from a *cluster*: one board type, or a mix
of types with counts, used in any order (``free``) or along a fixed sequence (``fixed``;
:mod:`split4ml.plan.cluster`). :func:`solve_joint` picks, at the same time, where to cut the chain,
which board each stage runs on, and one version per unit, optimally for the objective; the answer
is exact for the version sets it is given (tests check it against brute force).

Performance model: as :mod:`split4ml.plan.partition` (and :mod:`split4ml.plan.metrics`), with each
stage priced on its own board type (clock, link, shell, capacity) by that type's
:class:`~split4ml.plan.chain.ChainPrice`. The source and sink use the links of the first and
last stage's boards.

How (exact unless a front is rounded, below):

* **Stage rows.** The best stage ``[i, j)`` on type ``t`` is a multi-choice knapsack in four
  resources (LUT, FF, DSP, BRAM18) minimising the stage latency: it is solved by extending from
  ``j-1`` back to ``i`` the Pareto front of (resources, latency) sums of the allowed versions,
  dropping sums over the board's capped room (resources are non-negative, so a sum over the room
  never comes back) and dominated sums. A stage that does not fit stops the extension (a longer
  stage from the same end cannot fit). With ``io_parallel`` the fabric interval is ``n_in + L +
  n_out`` cycles, so the least-latency choice also has the least interval: one row per (type, end)
  serves every bound, which only decides whether that interval (and the stage's links and
  per-frame cost) is under it. With ``io_stream`` a bound ``T`` admits the versions of II ``<= T``,
  and rows are cached per (type, end, number of admitted II values); without latency, their fronts
  hold resources only.
* **Board states.** A DP over (end ``j``, board state ``s``) gives the smallest latency of the
  units ``[0, j)`` that reach state ``s``. States fix the number of boards used: ``free`` order, the
  vector of counts used per type (polynomial in the counts); ``fixed`` order, (last position used,
  boards used), stages taking boards of the sequence in order, skipping unused ones; one type,
  the number of boards.
* **Objectives** (the keys of :mod:`split4ml.plan.partition`): ``throughput`` finds the smallest
  feasible bound (``io_stream``: bisection over the finitely many values a stage interval can take;
  ``io_parallel``: doubling, then bisection over the reals), then takes the fewest boards, then the
  lowest latency; ``boards`` finds the fewest boards with no bound, then the smallest bound at that
  count, then the lowest latency; ``latency`` finds the lowest latency, then the fewest boards
  within its tie, then the smallest bound keeping both.

Cost: the fronts are small when few resources can bind (only those are compared). They grow with
long stages of many-version units on a big board, where the latency column adds trade-offs. A front
whose candidates exceed ``_FRONT_LIMIT`` is *rounded*: thinned to one point per cell of a grid of the
room (coarser until it is small enough), the cell's least-latency point, its sums untouched.
Conservative (every point kept is a real choice, so what fits, fits), but the optimum may be lost, so
the result says ``rounded`` and the plan is marked not proven optimal. Feasibility and the final DP
read the same rows, so they agree even then.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..boards import RESOURCES, Board
from ..errors import InfeasibleError, PlanError
from ..estimate.base import Cost
from .chain import ABS_TOL_US, REL_TOL, ChainPrice, _tie, check_options
from .metrics import DEFAULT_BATCH, BoardLoad, Endpoint, PipelineMetrics, group_metrics

_INF = math.inf
_NRES = len(RESOURCES)
_CHUNK = 512  # Pareto pruning compares points pairwise in blocks of this many
#: Pareto pruning first compares every point with this many of least scaled sum
_STRONG = 64
#: A front larger than this is thinned to one point per cell of a grid of the room (see _Solver._coarse).
_FRONT_LIMIT = 1000
#: More candidates than this (a front times a unit's versions) are thinned before the Pareto pruning.
_CAND_LIMIT = 4000
#: With ``exact_only`` (a caller with another way to a proof) fronts are never thinned: the solve gives
#: up past this many points (or candidates), where the Pareto pruning would take seconds a step.
_EXACT_FRONT_LIMIT = 5000
_EXACT_CAND_LIMIT = 50000
_GRID = 4096
#: Stage tables of recent problems (io_parallel), by (problem digest, stage end, resources only): the
#: bound each was made for, the table, and whether a front was rounded. A plan is solved at two
#: batches; both share them.
_TABLES: OrderedDict[tuple[bytes, int, bool], tuple[float, np.ndarray, bool]] = OrderedDict()
_TABLES_SIZE = 4096


class Abandoned(Exception):
    """:func:`solve_joint` gave up, as its caller asked (``exact_only``): a stage's Pareto front grew past
    ``_EXACT_FRONT_LIMIT`` points (or its candidates past ``_EXACT_CAND_LIMIT``), where it would have to
    be rounded (:meth:`_Solver._coarse`), or the time given ran out."""


@dataclass(frozen=True)
class BoardPool:
    """The boards a pipeline may use, in solver terms.

    Attributes:
        types: the distinct board types.
        counts: ``free`` order: how many boards of each type are on hand (a single type with a
            count is the plain homogeneous case).
        order: ``fixed`` order: the type index of each board along the chain; stages use boards in
            this order, skipping any (``None`` for free order).
        shells: the shell cost of each type (default: the board catalogue's).
    """

    types: tuple[Board, ...]
    counts: tuple[int, ...] = ()
    order: tuple[int, ...] | None = None
    shells: tuple[Cost, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", tuple(self.types))
        if not self.types:
            raise PlanError("a board pool needs at least one board type")
        if self.order is None:
            if len(self.counts) != len(self.types) or any(c < 0 for c in self.counts):
                raise PlanError("a free-order board pool needs one non-negative count per board type")
        else:
            object.__setattr__(self, "order", tuple(int(t) for t in self.order))
            if any(not 0 <= t < len(self.types) for t in self.order):
                raise PlanError("a fixed-order board pool names a board type index out of range")
        if not self.shells:
            from .chain import shell_cost

            object.__setattr__(self, "shells", tuple(shell_cost(b) for b in self.types))

    @property
    def n_boards(self) -> int:
        """Boards on hand."""
        return len(self.order) if self.order is not None else int(sum(self.counts))


@dataclass(frozen=True)
class JointResult:
    """The chosen pipeline: cut points, board type of each stage, version of each unit.

    Attributes:
        bounds: ``(0, b1, ..., U)``: unit index where each stage starts, and ``U``.
        stage_types: index into ``BoardPool.types`` of each stage's board.
        boards: the board of each stage.
        choice: index of the chosen version of each unit.
        stage_costs: cost of each stage, shell included.
        metrics: bottleneck, latency, throughput (:func:`pipeline_metrics`).
        objective: the objective optimised.
        positions: ``fixed`` order: the position in the board sequence of each stage's board.
        rounded: some stage's Pareto front was rounded (see ``_Solver._coarse``): the result fits, but
            is not proven optimal.
    """

    bounds: tuple[int, ...]
    stage_types: tuple[int, ...]
    boards: tuple[Board, ...]
    choice: tuple[int, ...]
    stage_costs: tuple[Cost, ...]
    metrics: PipelineMetrics
    objective: str
    positions: tuple[int, ...] = ()
    rounded: bool = False

    @property
    def n_stages(self) -> int:
        return len(self.bounds) - 1

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self.bounds[:-1], self.bounds[1:], strict=True))


def _leq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``m[i, j]``: row ``a[i]`` is <= row ``b[j]`` in every column (column by column: a reduction over
    a short last axis is far slower in numpy than a few 2-D comparisons)."""
    m = a[:, None, 0] <= b[None, :, 0]
    for c in range(1, a.shape[1]):
        m &= a[:, None, c] <= b[None, :, c]
    return m


def _dominated(front: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``pts`` that some row of ``front`` is <= in every column."""
    out = np.zeros(len(pts), dtype=bool)
    for f0 in range(0, len(front), _CHUNK):
        out |= _leq(front[f0:f0 + _CHUNK], pts).any(axis=0)
    return out


def _distinct(points: np.ndarray) -> np.ndarray:
    """Indices of the first of each set of equal rows of ``points``, in lexicographic order of the rows
    (as ``np.unique(points, axis=0, return_index=True)``, several times faster)."""
    n, k = points.shape
    if k == 0:
        return np.arange(min(n, 1))
    order = np.lexsort(points.T[::-1])  # stable: equal rows keep their order
    if n > 1:
        pts = points[order]
        new = np.ones(n, dtype=bool)
        new[1:] = (pts[1:] != pts[:-1]).any(axis=1)
        order = order[new]
    return order


def _cell_keys(steps: np.ndarray, g: int) -> np.ndarray:
    """One integer per row of ``steps`` (whole numbers in ``[0, g]``, a point's grid cell,
    :meth:`_Solver._coarse`): ``g <= _GRID`` and at most four resources fit in 64 bits."""
    key = np.zeros(len(steps), dtype=np.int64)
    for c in range(steps.shape[1]):
        key = key * (g + 1) + np.minimum(steps[:, c], g).astype(np.int64)
    return key


def _pareto(points: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``points`` no other row dominates (<= everywhere, < somewhere);
    one index per set of equal rows (the first).

    Rows are sorted lexicographically first, so a row can only be dominated by an earlier one: one
    or two columns take a linear sweep, more columns a blockwise check against the front so far,
    after a cheap first pass against the few rows of least (scaled) sum, which dominate most of the
    rest.
    """
    order = _distinct(points)
    pts = points[order]
    n, k = pts.shape
    if n <= 1 or k <= 1:
        return order[:1]
    if k == 2:
        ys = pts[:, 1]
        before = np.minimum.accumulate(np.concatenate([[_INF], ys[:-1]]))
        return order[ys < before]
    if n > _STRONG:
        low = pts.min(axis=0)
        span = pts.max(axis=0) - low
        strong = np.argsort(((pts - low) / np.where(span > 0, span, 1.0)).sum(axis=1), kind="stable")[:_STRONG]
        le = _leq(pts[strong], pts)
        le[np.arange(_STRONG), strong] = False  # a row is <= itself; rows are unique, so any other <= dominates
        alive = np.nonzero(~le.any(axis=0))[0]
    else:
        alive = np.arange(n)
    front = np.empty((0, k))
    kept: list[np.ndarray] = []
    for a0 in range(0, len(alive), _CHUNK):
        idx = alive[a0:a0 + _CHUNK]
        blk = pts[idx]
        if len(front):
            keep = ~_dominated(front, blk)
            blk, idx = blk[keep], idx[keep]
        if len(blk) > 1:
            le = _leq(blk, blk)  # le[a, b]: row a <= row b
            np.fill_diagonal(le, False)  # rows are unique: a != b and <= everywhere is dominance
            mine = ~le.any(axis=0)
            blk, idx = blk[mine], idx[mine]
        front = np.vstack([front, blk])
        kept.append(idx)
    return order[np.concatenate(kept)]


class _States:
    """Board states of the DP: per state the boards used, and per type its transitions."""

    def __init__(self, pool: BoardPool) -> None:
        n_types = len(pool.types)
        if pool.order is None:
            states = list(itertools.product(*(range(c + 1) for c in pool.counts)))
            index = {s: k for k, s in enumerate(states)}
            self.count = np.array([sum(s) for s in states], dtype=int)
            self.start = index[tuple(0 for _ in pool.counts)]
            trans: list[list[tuple[int, int]]] = [[] for _ in range(n_types)]
            for s, k in index.items():
                for t in range(n_types):
                    if s[t] < pool.counts[t]:
                        trans[t].append((k, index[s[:t] + (s[t] + 1,) + s[t + 1:]]))
            self.position = None
        else:
            m = len(pool.order)
            states = [(p, k) for p in range(m + 1) for k in range(p + 1) if (k == 0) == (p == 0)]
            index = {s: k for k, s in enumerate(states)}
            self.count = np.array([k for _, k in states], dtype=int)
            self.start = index[(0, 0)]
            trans = [[] for _ in range(n_types)]
            for (p, k), src in index.items():
                for q in range(p + 1, m + 1):
                    trans[pool.order[q - 1]].append((src, index[(q, k + 1)]))
            self.position = np.array([p for p, _ in states], dtype=int)
        self.n = len(states)
        self.trans = [(np.array([a for a, _ in tr], dtype=int), np.array([b for _, b in tr], dtype=int))
                      for tr in trans]


class _Solver:
    """The stage tables and DPs of one problem. Every stage is priced by the type's :class:`ChainPrice`.

    Fronts hold, per point, the resource sums of the chosen versions that can bind, their latency sum
    (microseconds of the type's clock), and with ``io_stream`` their largest II (combined by max): a
    stage's fabric interval is ``n_in + L + n_out`` cycles (``io_parallel``, so its least latency is its
    least interval) or ``max(n_in, II, n_out)`` (``io_stream``).
    """

    def __init__(self, costs: Sequence[Sequence[Sequence[Cost]]], bytes_in: float, bytes_out: Sequence[float],
                 pool: BoardPool, cap: float, values_in: float = 0.0, values_out: Sequence[float] | None = None,
                 batch: int = DEFAULT_BATCH, io_type: str = "io_parallel",
                 in_place: Sequence[bool] | None = None, cut_ok: Sequence[bool] | None = None,
                 exact_only: bool = False, give_up_at: float | None = None) -> None:
        self.n = len(costs)
        #: raise Abandoned instead of rounding a front, or once time.monotonic() passes give_up_at
        self.exact_only = exact_only
        self.give_up_at = give_up_at
        self.pool = pool
        self.costs = costs
        self.stream = io_type == "io_stream"
        n_types = len(pool.types)
        self.prices = [ChainPrice(b, bytes_in, bytes_out, values_in, values_out, batch, io_type, in_place, cut_ok)
                       for b in pool.types]
        self.res: list[list[np.ndarray]] = []  # [t][u] (V_u, 5 or 6): resources, latency_us (, ii_us)
        self.ii: list[list[np.ndarray]] = []  # [t][u] (V_u,) ii_us
        self.room: list[np.ndarray] = []
        self.shell_ii: list[float] = []
        self.shell_lat: list[float] = []
        self.levels: list[np.ndarray] = []
        #: per type and cut: the parts of a stage's interval that do not depend on its versions
        self.cut_us: list[np.ndarray] = []
        for t, b in enumerate(pool.types):
            shell = pool.shells[t]
            cols = [*RESOURCES, "latency_cycles"] + (["ii_cycles"] if self.stream else [])
            self.res.append([np.array([[float(getattr(c[t], r)) for r in RESOURCES]
                                       + [b.cycles_to_us(float(c[t].latency_cycles))]
                                       + ([b.cycles_to_us(float(c[t].ii_cycles))] if self.stream else [])
                                       for c in vs]).reshape(-1, len(cols))
                             for vs in costs])
            self.ii.append([np.array([b.cycles_to_us(float(c[t].ii_cycles)) for c in vs]) for vs in costs])
            self.room.append(np.array([b.capped(r, cap) - float(getattr(shell, r)) + 1e-9 for r in RESOURCES]))
            self.shell_ii.append(b.cycles_to_us(float(shell.ii_cycles)))
            self.shell_lat.append(b.cycles_to_us(float(shell.latency_cycles)))
            self.levels.append(np.unique(np.concatenate([v for v in self.ii[t]] + [[self.shell_ii[t]]])))
            pr = self.prices[t]
            self.cut_us.append(b.cycles_to_us(pr.cut_values))
        self.states = _States(pool)
        #: whether some front was rounded (see _coarse): the result is then not proven optimal
        self.rounded = False
        self._rows: dict[tuple[int, int, int, bool], tuple[np.ndarray, np.ndarray]] = {}
        #: io_parallel rows priced from a stage table: (interval, latency, the table, the bound it was made for)
        self._priced: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
        self._reaches: dict[tuple[int, int, int], int] = {}
        #: per type: a digest of what its stage tables depend on (see _table)
        self._digest = [self._problem_digest(t) for t in range(n_types)]
        #: per type: a bound whose latency room (_latency_room) cuts no front: every unit's slowest version,
        #: the shell and the widest cut twice (as the digest, it depends on neither the batch nor the links)
        self._uncut = [(sum(float(r[:, _NRES].max()) for r in self.res[t]) + self.shell_lat[t]
                        + 2 * float(self.cut_us[t].max())) * (1 + 1e-9) + 1e-9 for t in range(n_types)]
        self.n_types = n_types

    def _problem_digest(self, t: int) -> bytes:
        """What type ``t``'s least-latency tables depend on: the versions' resources and latencies, the
        room, the cuts' values and the shell's latency (not the batch or the links)."""
        import hashlib

        h = hashlib.sha256()
        for arr in [*self.res[t], self.room[t], self.prices[t].cut_values]:
            h.update(np.ascontiguousarray(arr, dtype=float).tobytes())
            h.update(b"|")
        h.update(repr((float(self.pool.shells[t].latency_cycles), self.pool.types[t].clock_mhz,
                       self.stream)).encode())
        return h.digest()

    # ------------------------------------------------------------------ stages
    def _level(self, t: int, bound: float) -> int:
        """Which versions a bound admits: with io_stream those of II <= bound; with io_parallel all."""
        return int(np.searchsorted(self.levels[t], bound, side="right")) if self.stream else 0

    def _allowed(self, t: int, u: int, bound: float) -> np.ndarray:
        if not self.stream:
            return np.arange(len(self.ii[t][u]))
        return np.nonzero(self.ii[t][u] <= bound)[0]

    def _fixed_interval(self, t: int, i: Any, j: int) -> Any:
        """The part of stage ``[i, j)``'s interval its versions do not change: its links, its per-frame
        cost, and with io_stream the wrapper's reads and writes and the shell's II."""
        pr = self.prices[t]
        v = np.maximum(np.maximum(pr.link_us[i], pr.link_us[j]), pr.per_frame)
        if self.stream:
            v = np.maximum(v, np.maximum(np.maximum(self.cut_us[t][i], self.cut_us[t][j]), self.shell_ii[t]))
        return v

    def _binding(self, t: int, lo: int, j: int, allowed: Sequence[np.ndarray]) -> list[int]:
        """Columns that matter for stages ``[i, j)``, ``i >= lo``: the resources some choice of
        ``allowed[u - lo]`` versions could push over the room (the others always fit), the latency, and
        the II (io_stream)."""
        worst = np.zeros(_NRES)
        for u in range(lo, j):
            a = allowed[u - lo]
            if len(a):
                worst += self.res[t][u][a, :_NRES].max(axis=0)
        return [k for k in range(_NRES) if worst[k] > self.room[t][k]] + [_NRES] + ([_NRES + 1] if self.stream else [])

    def _reach(self, t: int, j: int, bound: float) -> int:
        """Smallest start ``i`` whose stage ``[i, j)`` might fit (per-resource lower bound), or ``j``; it
        never decreases as ``j`` grows."""
        key = (t, j, self._level(t, bound))
        hit = self._reaches.get(key)
        if hit is None:
            hit = self._reaches[key] = self._reach_of(t, j, bound)
        return hit

    def _reach_of(self, t: int, j: int, bound: float) -> int:
        lo = j
        low = np.zeros(_NRES)
        for u in range(j - 1, -1, -1):
            a = self._allowed(t, u, bound)
            if len(a) == 0:
                break
            low = low + self.res[t][u][a, :_NRES].min(axis=0)
            if (low > self.room[t]).any():
                break
            lo = u
        return lo

    def _extend(self, front: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """Every point of ``front`` with every row of ``vals``: sums, and the II column (last, io_stream)
        by max."""
        cand = front[:, None, :] + vals[None, :, :]
        if self.stream:
            cand[:, :, -1] = np.maximum(front[:, None, -1], vals[None, :, -1])
        return cand.reshape(-1, front.shape[1])

    def _stage_values(self, t: int, i: int, j: int, front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(interval, latency) in microseconds of stage ``[i, j)`` for every point of its front; the
        latency includes the source's frame for ``i = 0``."""
        pr, b = self.prices[t], self.pool.types[t]
        lat_cycles = (front[:, -2] if self.stream else front[:, -1]) / b.cycles_to_us(1.0)
        lat_cycles = lat_cycles + float(self.pool.shells[t].latency_cycles)
        ii_cycles = (np.maximum(front[:, -1], self.shell_ii[t]) / b.cycles_to_us(1.0) if self.stream
                     else np.zeros(len(front)))
        iv, lat = pr.stage(i, j, ii_cycles, lat_cycles)
        if i == 0:
            lat = lat + pr.source_latency_us
        return np.broadcast_to(iv, lat.shape), lat

    def _latency_room(self, t: int, j: int, stop: int, bound: float) -> np.ndarray | None:
        """io_parallel, a finite ``bound``: per ``i`` in ``[stop, j)``, the largest latency (us, the units'
        sum) any stage ``[i', j)`` with ``stop <= i' <= i`` may have for its fabric (``n_in + L + n_out``
        cycles, the shell's latency included) to stay under ``bound``. A front point above it at step
        ``i`` can only make stages that miss the bound (latencies only grow as the stage extends).
        None: no such limit."""
        if self.stream or not math.isfinite(bound):
            return None
        b = self.pool.types[t]
        vin = self.prices[t].cut_values
        least = np.minimum.accumulate(vin[stop:j])  # least[k]: the smallest input of a start in [stop, stop + k]
        fixed = b.cycles_to_us(least + vin[j] + float(self.pool.shells[t].latency_cycles))
        out = np.full(j, _INF)
        out[stop:j] = (bound - fixed) * (1 + 1e-9) + 1e-9
        return out

    def _fronts(self, t: int, j: int, stop: int, bound: float, resources_only: bool,
                track: bool = False) -> Any:
        """Yield ``(i, front, paths)`` for ``i = j-1`` down to ``stop`` (or until nothing fits): the
        Pareto front of stage ``[i, j)``'s chosen versions on type ``t`` (binding resources, latency,
        and with io_stream the II), and with ``track`` the version of each unit behind every point.
        With io_parallel and a finite ``bound``, points and versions whose latency keeps every stage
        they could be in over the bound are dropped (:meth:`_latency_room`): the least-latency point of
        every stage that meets the bound stays."""
        allowed = [self._allowed(t, u, bound) for u in range(stop, j)]
        lat_room = None if resources_only else self._latency_room(t, j, stop, bound)
        if lat_room is not None:  # a version slower alone than any stage it could be in allows is no choice
            allowed = [a[self.res[t][u][a, _NRES] <= lat_room[u]] for u, a in zip(range(stop, j), allowed, strict=True)]
        cols = self._binding(t, stop, j, allowed)
        if resources_only:
            cols = cols[:len(cols) - (2 if self.stream else 1)]
        n_res = len(cols) - (0 if resources_only else (2 if self.stream else 1))
        room = self.room[t][cols[:n_res]]
        front = np.zeros((1, len(cols)))
        paths = np.zeros((1, 0), dtype=int)
        grid = _GRID  # of the last rounding (see _coarse)
        for i in range(j - 1, stop - 1, -1):
            if self.give_up_at is not None and time.monotonic() > self.give_up_at:
                raise Abandoned("out of time")
            if not cols:  # resources only, and none can bind: every choice fits
                yield i, front, np.zeros((1, j - i), dtype=int)
                continue
            a = allowed[i - stop]
            vals = self.res[t][i][a][:, cols]
            cand = self._extend(front, vals)
            parent = np.repeat(np.arange(len(front)), len(a))
            version = np.tile(a, len(front))
            keep = (cand[:, :n_res] <= room).all(axis=1)
            if lat_room is not None:
                keep &= cand[:, n_res] <= lat_room[i]
            cand, parent, version = cand[keep], parent[keep], version[keep]
            if len(cand) == 0:
                return
            if len(cand) > (_EXACT_CAND_LIMIT if self.exact_only else _CAND_LIMIT):  # thin first
                cand, fits, grid = self._coarse(cand, room, 2 * grid)
                if fits is not None:
                    parent, version = parent[fits], version[fits]
            pick = _pareto(cand)
            if len(pick) > (_EXACT_FRONT_LIMIT if self.exact_only else _FRONT_LIMIT):
                cand, fits, grid = self._coarse(cand[pick], room, 2 * grid)
                parent, version = parent[pick], version[pick]
                if fits is not None:
                    parent, version = parent[fits], version[fits]
                pick = _pareto(cand)
            front = cand[pick]
            if track:
                paths = np.column_stack([version[pick], paths[parent[pick]]])
            yield i, front, paths

    def full_row(self, t: int, j: int, bound: float, latency: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per start ``i < j``, the (interval, latency) in us of the least-latency choice of versions for
        stage ``[i, j)`` on type ``t`` among those ``bound`` admits (io_stream: II <= bound; io_parallel:
        a latency that keeps the fabric under ``bound``); ``inf`` where none fits the board.

        Without ``latency``, with io_stream (where the bound filters versions by II and the latency cannot
        bound the stage), fronts hold resources only: the interval is the stage's fixed part and the
        latency 0."""
        if not self.stream:
            return self._parallel_row(t, j, bound, latency)
        resources_only = not latency
        key = (t, j, self._level(t, bound), not resources_only)
        hit = self._rows.get(key)
        if hit is not None:
            return hit
        iv_out = np.full(j, _INF)
        lat_out = np.full(j, _INF)
        for i, front, _ in self._fronts(t, j, self._reach(t, j, bound), bound, resources_only):
            if resources_only:
                iv_out[i], lat_out[i] = float(self._fixed_interval(t, i, j)), 0.0
                continue
            iv, lat = self._stage_values(t, i, j, front)
            best = int(np.argmin(lat))
            iv_out[i], lat_out[i] = float(iv[best]), float(lat[best])
        self._rows[key] = (iv_out, lat_out)
        return iv_out, lat_out

    def _parallel_row(self, t: int, j: int, bound: float, latency: bool) -> tuple[np.ndarray, np.ndarray]:
        """io_parallel :meth:`full_row`, priced from :meth:`_table`. Every version is allowed under
        any bound, and the least-latency choice has the least interval and stage latency too (both grow
        with the fabric's ``n_in + L + n_out`` cycles). Feasibility with no bound (``latency=False``,
        ``bound = inf``) needs resources only."""
        if not latency and not math.isfinite(bound):
            key = (t, j, -1, False)
            hit = self._rows.get(key)
            if hit is None:
                fits = self._table(t, j, _INF, resources_only=True)
                ok = np.nonzero(fits)[0]
                iv_out, lat_out = np.full(j, _INF), np.full(j, _INF)
                iv_out[ok], lat_out[ok] = self._fixed_interval(t, ok, j), 0.0
                hit = self._rows[key] = (iv_out, lat_out)
            return hit
        table = self._table(t, j, bound)
        hit = self._priced.get((t, j))
        if hit is not None and hit[2] is table:
            return hit[0], hit[1]
        made_for = _TABLES[(self._digest[t], j, False)][0]
        pr, b = self.prices[t], self.pool.types[t]
        iv_out, lat_out = np.full(j, _INF), np.full(j, _INF)
        ok = np.nonzero(np.isfinite(table))[0]
        if len(ok):
            lat_cycles = table[ok] / b.cycles_to_us(1.0) + float(self.pool.shells[t].latency_cycles)
            iv, lat = pr.stage(ok, j, np.zeros(len(ok)), lat_cycles)
            lat = lat + np.where(ok == 0, pr.source_latency_us, 0.0)
            iv_out[ok], lat_out[ok] = np.broadcast_to(iv, lat.shape), lat
        self._priced[(t, j)] = (iv_out, lat_out, table, made_for)
        return iv_out, lat_out

    def _table(self, t: int, j: int, bound: float, resources_only: bool = False) -> np.ndarray:
        """io_parallel: per start ``i < j``, the least latency (us, the units' sum) of a choice of versions
        for stage ``[i, j)`` that fits type ``t``; ``inf`` where none fits (``resources_only``: whether
        one fits). Fronts are cut at the latency ``bound`` allows (:meth:`_latency_room`), so a table
        made for a bound ``B`` is exact wherever its stage can meet ``B``, and its other entries are
        above ``B`` too (or ``inf``): it serves every bound up to ``B``. Tables depend on the versions,
        cuts and board, not on the batch: they are kept across solvers of the same problem
        (:data:`_TABLES`), with the largest bound made and whether a front was rounded."""
        if not resources_only:  # past this bound the latency cuts nothing: one table serves them all
            bound = min(bound, self._uncut[t])
        key = (self._digest[t], j, resources_only)
        hit = _TABLES.get(key)
        if hit is not None and hit[0] >= bound:
            _TABLES.move_to_end(key)
            if hit[2] and self.exact_only:
                raise Abandoned("a stage table made with rounded fronts")
            self.rounded |= hit[2]
            return hit[1]
        was, self.rounded = self.rounded, False
        if resources_only:
            out = np.zeros(j, dtype=bool)
            for i, _, _ in self._fronts(t, j, self._reach(t, j, bound), bound, True):
                out[i] = True
        else:
            out = np.full(j, _INF)
            for i, front, _ in self._fronts(t, j, self._reach(t, j, bound), bound, False):
                out[i] = float(front[:, -1].min())
        _TABLES[key] = (bound, out, self.rounded)
        self.rounded |= was
        while len(_TABLES) > _TABLES_SIZE:
            _TABLES.popitem(last=False)
        return out

    def row(self, t: int, j: int, bound: float, latency: bool = True) -> np.ndarray:
        """Smallest latency (us, the source's frame for i = 0) of each stage ``[i, j)`` on type ``t`` whose
        interval is under ``bound``; ``inf`` where none fits. With ``latency=False`` only feasibility
        counts: fitting stages get 0."""
        iv, lat = self.full_row(t, j, bound, latency)
        ok = (iv <= bound) & self.prices[t].buildable(np.arange(j), j)
        if not latency:
            return np.where(ok & np.isfinite(lat), 0.0, _INF)
        return np.where(ok, lat, _INF)

    def lower_bound(self) -> float:
        """An interval every plan reaches: a board's per-frame cost, and the source's link."""
        return min(max(pr.per_frame, float(pr.link_us[0])) for pr in self.prices)

    def upper_bound(self) -> float:
        """An interval no stage of any fitting choice exceeds (io_parallel: every latency and value)."""
        top = 0.0
        for t in range(self.n_types):
            lat = sum(float(r[:, _NRES].max()) for r in self.res[t]) + self.shell_lat[t]
            cut = float(self.cut_us[t].max())
            pr = self.prices[t]
            top = max(top, lat + 2 * cut, float(pr.link_us.max()), pr.per_frame)
        return top * (1 + 1e-9) + 1e-9

    def _coarse(self, cand: np.ndarray, room: np.ndarray, grid: int = _GRID) -> tuple[np.ndarray, np.ndarray | None, int]:
        """``(cand, None, grid)``, or, when ``cand`` holds more than ``_FRONT_LIMIT`` points, the points
        kept, the mask of them, and ``g``: the resource space is cut into a grid of ``room / g`` cells,
        and each cell keeps one point, its least latency (io_stream: then least II; then least
        resources, as a sum of shares of the room). ``g`` is halved from ``grid`` (at most ``_GRID``)
        until at most ``_FRONT_LIMIT`` cells are occupied (or ``g`` reaches 8). With ``exact_only``
        nothing is thinned: :meth:`_fronts` calls this past ``_EXACT_FRONT_LIMIT`` points (or
        ``_EXACT_CAND_LIMIT`` candidates) only, and it raises :class:`Abandoned`.

        The points kept are untouched: each is a real choice of versions, so a stage that fits here
        fits for real, and the error of one step does not add up over a long stage (as rounding the
        sums up did). A dropped point may have been the optimum's, so this sets ``self.rounded``.
        :meth:`_fronts` starts each step from twice the grid of its last thinning: a front grows step
        by step, so most steps count the cells once or twice, and a rebuilt front
        (:meth:`stage_choice`) is thinned the same way."""
        if len(room) == 0:  # latency (and II) only: the Pareto front is one point
            return cand, None, grid
        if self.exact_only:  # called only past the exact limits
            raise Abandoned(f"a stage front of {len(cand)} points")
        if len(cand) <= _FRONT_LIMIT:
            return cand, None, grid
        self.rounded = True
        r = len(room)
        share = cand[:, :r] / np.maximum(room, 1e-9)
        rest = cand[:, r:]
        ties = [share.sum(axis=1), *(rest[:, c] for c in range(rest.shape[1] - 1, -1, -1))]
        g = min(grid, _GRID)
        while True:
            key = _cell_keys(np.ceil(share * g), g)
            order = np.lexsort([*ties, key])  # by cell, the cell's best point first
            k = key[order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = k[1:] != k[:-1]
            if g <= 8 or int(first.sum()) <= _FRONT_LIMIT:
                keep = np.zeros(len(cand), dtype=bool)
                keep[order[first]] = True
                return cand[keep], keep, g
            g //= 2

    def stage_choice(self, t: int, i: int, j: int, bound: float) -> list[int]:
        """The versions of units ``i..j-1`` that reach :meth:`full_row`'s value for stage ``[i, j)``
        (the same fronts, built the same way, with the versions behind each point)."""
        # the very fronts the row came from (same start range, bound, binding columns and rounding)
        if not self.stream:
            bound = self._priced[(t, j)][3]
        last = None
        for k, front, paths in self._fronts(t, j, self._reach(t, j, bound), bound, False, track=True):
            if k == i:
                last = front, paths
                break
        if last is None:  # pragma: no cover - the row said the stage fits
            raise AssertionError(f"joint stage [{i}, {j}) on type {t} lost its front")
        front, paths = last
        _, lat = self._stage_values(t, i, j, front)
        return [int(v) for v in paths[int(np.argmin(lat))]]

    # ------------------------------------------------------------------ DP over (end, board state)
    def dp(self, bound: float, latency: bool = True) -> np.ndarray:
        """``f[j, s]``: smallest latency of units ``[0, j)`` on boards reaching state ``s`` (with
        ``latency=False``: 0 where reachable, ``inf`` elsewhere)."""
        st = self.states
        f = np.full((self.n + 1, st.n), _INF)
        f[0, st.start] = 0.0
        last = 0  # the last end some state reaches
        for j in range(1, self.n + 1):
            if not self.stream and min(self._reach(t, j, bound) for t in range(self.n_types)) > last:
                break  # no stage ending at j (or later: starts only move right) can follow a reached end
            for t in range(self.n_types):
                src, dst = st.trans[t]
                if len(src) == 0:
                    continue
                r = self.row(t, j, bound, latency)
                idx = np.nonzero(np.isfinite(r))[0]
                if len(idx) == 0:
                    continue
                cand = (f[idx][:, src] + r[idx][:, None]).min(axis=0)
                np.minimum.at(f[j], dst, cand)
            if np.isfinite(f[j]).any():
                last = j
        return f

    def backtrack(self, f: np.ndarray, final: int, bound: float) -> list[tuple[int, int, int, int]]:
        """Stages ``(i, j, t, state after)`` of a path reaching ``f[U, final]``, first stage first."""
        st = self.states
        out: list[tuple[int, int, int, int]] = []
        j, s = self.n, final
        while j > 0:
            found = None
            for t in range(self.n_types):
                src, dst = st.trans[t]
                prevs = src[dst == s]
                if len(prevs) == 0:
                    continue
                r = self.row(t, j, bound)
                for i in np.nonzero(np.isfinite(r))[0]:
                    vals = f[i, prevs] + r[i]
                    hit = np.nonzero(vals == f[j, s])[0]
                    if len(hit):
                        found = (int(i), t, int(prevs[hit[0]]))
                        break
                if found:
                    break
            if found is None:  # pragma: no cover - f was built from the same rows
                raise AssertionError("joint DP backtrack lost its path")
            i, t, s_prev = found
            out.append((i, j, t, s))
            j, s = i, s_prev
        return list(reversed(out))

    def candidates(self) -> np.ndarray:
        """io_stream: every value a stage's interval can take (the largest of its fixed parts and its
        versions' IIs): the bottleneck of an optimal plan is one of them."""
        vals = []
        for t in range(self.n_types):
            for j in range(1, self.n + 1):
                vals.append(self._fixed_interval(t, np.arange(j), j))
                vals.extend(self.ii[t][u] for u in range(j))
        return np.unique(np.concatenate(vals))

def solve_joint(costs: Sequence[Sequence[Sequence[Cost]]], bytes_in: float, bytes_out: Sequence[float],
                pool: BoardPool, cap: float, objective: str = "throughput", max_boards: int | None = None,
                n_stages: int | None = None, unit_names: Sequence[str] | None = None, values_in: float = 0.0,
                values_out: Sequence[float] | None = None, batch: int = DEFAULT_BATCH,
                io_type: str = "io_parallel", in_place: Sequence[bool] | None = None,
                cut_ok: Sequence[bool] | None = None, exact_only: bool = False,
                give_up_at: float | None = None) -> JointResult:
    """Cut a chain into stages on the boards of ``pool``, one version per unit, optimally.

    Args:
        costs: ``costs[u][v][t]``: cost (no shell) of version ``v`` of unit ``u`` on board type ``t``.
            A unit with one setting has one version.
        bytes_in: bytes per sample of the model input.
        bytes_out: bytes per sample each unit outputs.
        pool: the boards on hand (:class:`BoardPool`).
        cap: fraction (0, 1] of each board resource a stage may use.
        objective: ``throughput``, ``latency`` or ``boards`` (module docstring).
        max_boards: at most this many stages (in addition to the pool's own limit).
        n_stages: exactly this many stages.
        unit_names: names of the units, for error messages.
        values_in / values_out, batch, io_type, in_place: as :func:`~split4ml.plan.partition.partition_chain`.
        cut_ok: per cut ``0 .. U``, whether a stage may start or end there (:class:`ChainPrice`).
        exact_only: raise :class:`Abandoned` as soon as a front would be rounded (the caller has
            another way to a proven plan) instead of returning a ``rounded`` result.
        give_up_at: with ``exact_only``, also raise it once ``time.monotonic()`` passes this.

    Raises:
        InfeasibleError: no choice of versions, cuts and boards fits; the message names a unit that
            fits no board type alone when there is one, else the boards needed and available.
    """
    n = len(costs)
    if n == 0:
        raise PlanError("the model has no units (layers) to place on boards")
    check_options(objective, cap)
    if len(bytes_out) != n:
        raise ValueError(f"bytes_out has {len(bytes_out)} entries for {n} units")
    if any(len(vs) == 0 for vs in costs):
        raise ValueError("every unit needs at least one version")
    names = [str(x) for x in unit_names] if unit_names is not None else [f"unit {i}" for i in range(n)]
    solver = _Solver(costs, bytes_in, bytes_out, pool, cap, values_in, values_out, batch, io_type, in_place, cut_ok,
                     exact_only, give_up_at if exact_only else None)
    st = solver.states
    allowed = st.count >= 1
    if max_boards is not None:
        allowed &= st.count <= max_boards
    if n_stages is not None:
        allowed &= st.count == n_stages

    def finals(bound: float, latency: bool = True) -> np.ndarray:
        return np.where(allowed, solver.dp(bound, latency)[n], _INF)

    def reach(bound: float) -> np.ndarray:  # feasibility only: cheaper fronts
        return finals(bound, latency=False)

    def infeasible() -> InfeasibleError:
        return InfeasibleError(_infeasible_message(solver, names, pool, cap, max_boards, n_stages))

    # throughput needs no bound-free pass: a bound that admits every stage's fabric fails only when
    # nothing fits (smallest_bound then says inf)
    if solver.stream:
        inf_f: np.ndarray | None = reach(_INF)
    elif objective == "throughput":
        inf_f = None
    else:  # io_parallel: the least-latency tables at no bound serve every bound after (see _table)
        inf_f = finals(_INF)
    if inf_f is not None and not np.isfinite(inf_f).any():
        raise infeasible()
    cands = solver.candidates() if solver.stream else None

    def smallest_bound(ok: Callable[[float], bool], from_top: bool = False) -> float:
        """The smallest bound ``ok`` accepts (``inf`` if none). With io_parallel, a small bound is
        doubled until it is met (small bounds prune the fronts hardest), then bisected; with
        ``from_top``, the bisection starts from the bound that admits every stage: for the fewest
        boards, whose stages are long and whose bound is far above the floor, doubling would build
        the stage tables anew at every bound on the way, while the tables made for the top serve
        every bound below it."""
        if cands is None:  # io_parallel: stage intervals are sums of latencies; bisect the reals
            top = solver.upper_bound()
            floor = max(solver.lower_bound(), 1e-6)
            if from_top:
                if not ok(top):
                    return _INF
                if floor < top and ok(floor):  # every plan pays the floor: nothing below it to look for
                    return floor
                lo, hi = floor, top
            else:
                hi = min(top, floor)
                while not ok(hi):
                    if hi >= top:
                        return _INF
                    hi = min(top, 2 * hi)
                # every plan pays the lower bound: met there, nothing is below it to look for
                lo = hi / 2 if hi > solver.lower_bound() else hi
            for _ in range(200):
                mid = (lo + hi) / 2
                # a quarter of the tie tolerance is enough: the plan is then taken at _tie(hi), which
                # admits every plan that ties with the optimum (30-odd passes, not 50-odd to the last bit)
                if not lo < mid < hi or hi - lo <= 0.25 * (REL_TOL * hi + ABS_TOL_US):
                    break
                if ok(mid):
                    hi = mid
                else:
                    lo = mid
            return hi
        lo_i, hi_i = 0, len(cands) - 1
        if not ok(cands[hi_i]):
            return _INF
        while lo_i < hi_i:
            mid_i = (lo_i + hi_i) // 2
            if ok(cands[mid_i]):
                hi_i = mid_i
            else:
                lo_i = mid_i + 1
        return float(cands[lo_i])

    counts = st.count
    if objective == "throughput":
        best = smallest_bound(lambda b: bool(np.isfinite(reach(b)).any()))
        if not math.isfinite(best):
            raise infeasible()
        bound = _tie(best)
        fin = finals(bound)
        k = int(counts[np.isfinite(fin)].min())
        fin = np.where(counts == k, fin, _INF)
    elif objective == "boards":
        k = int(counts[np.isfinite(inf_f)].min())
        best = smallest_bound(lambda b: bool(np.isfinite(reach(b)[counts == k]).any()), from_top=True)
        if not math.isfinite(best):
            # the fronts with a latency column were rounded where the resource-only ones were not, and
            # lost every k-board plan: take the fewest boards those fronts reach (the result says rounded)
            lat_f = finals(_INF)
            if not np.isfinite(lat_f).any():
                raise infeasible()
            k = int(counts[np.isfinite(lat_f)].min())
            best = smallest_bound(lambda b: bool(np.isfinite(reach(b)[counts == k]).any()), from_top=True)
        bound = _tie(best)
        fin = np.where(counts == k, finals(bound), _INF)
    else:
        inf_f = finals(_INF) if solver.stream else inf_f
        thr = _tie(float(inf_f.min()))
        k = int(counts[inf_f <= thr].min())
        best = smallest_bound(lambda b: bool((finals(b)[counts == k] <= thr).any()))
        bound = _tie(best)
        fin = np.where(counts == k, finals(bound), _INF)
    final = int(np.argmin(fin))
    f = solver.dp(bound)
    stages = solver.backtrack(f, final, bound)
    choice = [0] * n
    stage_costs = []
    boards = []
    for i, j, t, _ in stages:
        picks = solver.stage_choice(t, i, j, bound)
        c = pool.shells[t]
        for u, v in zip(range(i, j), picks, strict=True):
            choice[u] = v
            c = c + costs[u][v][t]
        stage_costs.append(c)
        boards.append(pool.types[t])
    bounds = (0, *(j for _, j, _, _ in stages))
    positions: tuple[int, ...] = ()
    if st.position is not None:
        positions = tuple(int(st.position[s]) - 1 for _, _, _, s in stages)
    loads = []
    for (i, j, t, _), c in zip(stages, stage_costs, strict=True):
        pr = solver.prices[t]
        loads.append([BoardLoad(c, pool.types[t], bytes_sent=float(pr.cut_bytes[j]), bytes_recv=float(pr.cut_bytes[i]),
                                n_in=float(pr.cut_values[i]), n_out=float(pr.cut_values[j]))])
    first, last = solver.prices[stages[0][2]], solver.prices[stages[-1][2]]
    metrics = group_metrics(loads, Endpoint(first.board.link, float(first.cut_bytes[0])),
                            Endpoint(last.board.link, float(last.cut_bytes[-1])), batch=first.batch, io_type=io_type)
    return JointResult(bounds=bounds, stage_types=tuple(t for _, _, t, _ in stages), boards=tuple(boards),
                       choice=tuple(choice), stage_costs=tuple(stage_costs), metrics=metrics, objective=objective,
                       positions=positions, rounded=solver.rounded)


def _infeasible_message(solver: _Solver, names: Sequence[str], pool: BoardPool, cap: float,
                        max_boards: int | None, n_stages: int | None) -> str:
    kinds = ", ".join(b.name for b in pool.types)
    alone = []
    for u in range(solver.n):
        if not solver.prices[0].buildable(u, u + 1):  # an in-place unit: it joins a neighbour's board
            continue
        if not any(np.isfinite(solver.row(t, u + 1, _INF)[u]) for t in range(solver.n_types)):
            alone.append(names[u])
    if alone:
        return (f"unit(s) {alone} fit no board ({kinds}) alone under cap {cap:g} with any of their reuse factors "
                "and strategies; use lower precision, a higher --cap, a bigger board, or let the planner split the "
                "layer (plan with one --board type)")
    fewest = _fewest_boards(solver) if n_stages is None and len(pool.types) == 1 and pool.order is None else None
    allowed = min(pool.n_boards, max_boards or pool.n_boards)
    if fewest is not None and fewest > allowed:
        return (f"the model needs at least {fewest} {kinds} boards under cap {cap:g} with the best reuse factors and "
                f"strategies, but at most {allowed} are allowed; allow {fewest} boards (--boards {fewest}), raise "
                "the cap, lower the precision, or pick a bigger board")
    limits = []
    if max_boards is not None:
        limits.append(f"--boards {max_boards}")
    if n_stages is not None:
        limits.append(f"--stages {n_stages}")
    return (f"the model does not fit the {pool.n_boards} board(s) on hand ({kinds})"
            + (f" within {' and '.join(limits)}" if limits else "")
            + f" under cap {cap:g}, with any reuse factors and strategies; add boards (or bigger ones) to the "
            "cluster, allow more boards, raise the cap, or lower the precision")


def _fewest_boards(solver: _Solver) -> int | None:
    """The fewest boards of the solver's one type that hold the chain, however many are on hand
    (resources only: every stage's versions chosen to fit); None when no number does."""
    best = np.full(solver.n + 1, _INF)
    best[0] = 0.0
    for j in range(1, solver.n + 1):
        ok = np.nonzero(np.isfinite(solver.row(0, j, _INF, latency=False)))[0]
        if len(ok):
            best[j] = float(best[ok].min()) + 1
    return int(best[-1]) if math.isfinite(best[-1]) else None
