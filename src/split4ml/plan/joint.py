"""Exact joint choice of per-unit versions, cut points and board types for a chain.

The design-space planner. Every unit (a layer and its activations) offers a few *versions*:
hls4ml settings of its compute layer (reuse factor, strategy), each with a cost per board type
(:mod:`split4ml.plan.versions` makes them). Boards come from a *cluster*: one board type, or a mix
of types with counts, used in any order (``free``) or along a fixed sequence (``fixed``;
:mod:`split4ml.plan.cluster`). :func:`solve_joint` picks, at the same time, where to cut the chain,
which board each stage runs on, and one version per unit, optimally for the objective; the answer
is exact for the version sets it is given (tests check it against brute force).

Performance model: as :mod:`split4ml.plan.partition` (and :mod:`split4ml.plan.metrics`), with each
stage priced on its own board type (clock, link, shell, capacity). The input hop is priced on the
link of the first stage's board.

How (all exact):

* **Stage table under a bound.** For a bound ``T`` on stage intervals (microseconds), a unit may
  use a version only if ``ii_us(version) + send_us(stage end) <= T``. The best stage ``[i, j)`` on
  type ``t`` is a multi-choice knapsack in four resources (LUT, FF, DSP, BRAM18) minimising the
  stage latency: it is solved exactly by extending from ``j-1`` back to ``i`` the Pareto front of
  (resources, latency) sums of the allowed versions, dropping sums over the board's capped room
  (resources are non-negative, so a sum over the room never comes back) and dominated sums. A
  stage that does not fit stops the extension (a longer stage from the same end cannot fit). Rows
  are cached per (type, end, number of allowed interval values).
* **Board states.** A DP over (end ``j``, board state ``s``) gives the smallest latency of the
  units ``[0, j)`` that reach state ``s``. States fix the number of boards used: ``free`` order, the
  vector of counts used per type (polynomial in the counts); ``fixed`` order, (last position used,
  boards used), stages taking boards of the sequence in order, skipping unused ones; one type,
  the number of boards.
* **Objectives** (the keys of :mod:`split4ml.plan.partition`): ``throughput`` bisects on the
  finitely many candidate values ``ii_us + send_us`` for the smallest feasible bound, then takes
  the fewest boards, then the lowest latency; ``boards`` finds the fewest boards with no bound, then
  bisects the bound at that count, then the lowest latency; ``latency`` finds the lowest latency,
  then the fewest boards within its tie, then bisects the smallest bound keeping both.

Cost: the Pareto fronts are small in practice (a few versions per unit, capped rooms, and only the
resources that can bind for a stage are compared), so a 60-unit chain with up to 10 versions per
unit plans on PYNQ-Z2 boards in 0.2 to 1 s (2-core VM). The fronts grow with long stages of
many-version units on a big board (a 30-unit chain on a cluster with a ZCU102: about 11 s), which is
why :mod:`split4ml.plan.versions` caps the versions per unit. A front of more than
``_FRONT_LIMIT`` points has its resource sums rounded *up* to 1/``_GRID`` of the board's room
before pruning: conservative (what fits after rounding fits), and exact on every case the tests
check (their fronts stay far below the limit).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..boards import RESOURCES, Board
from ..errors import InfeasibleError, PlanError
from ..estimate.base import Cost
from .metrics import PipelineMetrics, pipeline_metrics
from .partition import _tie, check_options

_INF = math.inf
_NRES = len(RESOURCES)
_CHUNK = 512  # Pareto pruning compares points pairwise in blocks of this many
#: A front larger than this has its resource sums rounded up to 1/_GRID of the room (see _Solver._prune).
_FRONT_LIMIT = 3000
_GRID = 4096


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
            from .partition import shell_cost

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
    """

    bounds: tuple[int, ...]
    stage_types: tuple[int, ...]
    boards: tuple[Board, ...]
    choice: tuple[int, ...]
    stage_costs: tuple[Cost, ...]
    metrics: PipelineMetrics
    objective: str
    positions: tuple[int, ...] = ()

    @property
    def n_stages(self) -> int:
        return len(self.bounds) - 1

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self.bounds[:-1], self.bounds[1:], strict=True))


def _pareto(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` no other row dominates (<= everywhere, < somewhere); duplicates once.

    Rows are sorted lexicographically first, so a row can only be dominated by an earlier one: one
    or two columns take a linear sweep, more columns a blockwise check against the front so far.
    """
    pts = np.unique(points, axis=0)
    n, k = pts.shape
    if n <= 1 or k == 0:
        return pts[:1]
    if k == 1:
        return pts[:1]
    if k == 2:
        ys = pts[:, 1]
        before = np.minimum.accumulate(np.concatenate([[_INF], ys[:-1]]))
        return pts[ys < before]
    front = np.empty((0, k))
    for a0 in range(0, n, _CHUNK):
        blk = pts[a0:a0 + _CHUNK]
        if len(front):
            dom = np.zeros(len(blk), dtype=bool)
            for f0 in range(0, len(front), _CHUNK):
                dom |= (front[None, f0:f0 + _CHUNK, :] <= blk[:, None, :]).all(axis=2).any(axis=1)
            blk = blk[~dom]
        if len(blk) > 1:
            le = (blk[:, None, :] <= blk[None, :, :]).all(axis=2)  # le[a, b]: row a <= row b
            np.fill_diagonal(le, False)  # rows are unique: a != b and <= everywhere is dominance
            blk = blk[~le.any(axis=0)]
        front = np.vstack([front, blk])
    return front


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
    def __init__(self, costs: Sequence[Sequence[Sequence[Cost]]], bytes_in: float, bytes_out: Sequence[float],
                 pool: BoardPool, cap: float) -> None:
        self.n = len(costs)
        self.pool = pool
        self.costs = costs
        n_types = len(pool.types)
        self.res: list[list[np.ndarray]] = []  # [t][u] (V_u, 5): resources and latency_us
        self.ii: list[list[np.ndarray]] = []  # [t][u] (V_u,) ii_us
        self.send: list[np.ndarray] = []  # [t] (U+1,), send_us of a stage ending at j
        self.hop: list[np.ndarray] = []
        self.hop_in: list[float] = []
        self.room: list[np.ndarray] = []
        self.shell_ii: list[float] = []
        self.shell_lat: list[float] = []
        self.levels: list[np.ndarray] = []
        out = np.asarray([float(b) for b in bytes_out])
        for t, b in enumerate(pool.types):
            shell = pool.shells[t]
            self.res.append([np.array([[float(getattr(c[t], r)) for r in RESOURCES]
                                       + [b.cycles_to_us(float(c[t].latency_cycles))] for c in vs]).reshape(-1, 5)
                             for vs in costs])
            self.ii.append([np.array([b.cycles_to_us(float(c[t].ii_cycles)) for c in vs]) for vs in costs])
            self.send.append(np.concatenate([[0.0], b.link.transfer_us(out)]))
            self.hop.append(np.concatenate([[0.0], b.link.hop_us(out)]))
            self.hop_in.append(float(b.link.hop_us(float(bytes_in))))
            self.room.append(np.array([b.capped(r, cap) - float(getattr(shell, r)) + 1e-9 for r in RESOURCES]))
            self.shell_ii.append(b.cycles_to_us(float(shell.ii_cycles)))
            self.shell_lat.append(b.cycles_to_us(float(shell.latency_cycles)))
            self.levels.append(np.unique(np.concatenate([v for v in self.ii[t]] + [[self.shell_ii[t]]])))
        self.states = _States(pool)
        self._rows: dict[tuple[int, int, int], np.ndarray] = {}
        self.n_types = n_types

    # ------------------------------------------------------------------ stages
    def _level(self, t: int, j: int, bound: float) -> int:
        return int(np.searchsorted(self.levels[t] + self.send[t][j], bound, side="right"))

    def _allowed(self, t: int, u: int, j: int, bound: float) -> np.ndarray:
        return np.nonzero(self.ii[t][u] + self.send[t][j] <= bound)[0]

    def _binding(self, t: int, lo: int, j: int, bound: float, latency: bool = True) -> list[int]:
        """Columns that matter for stages ``[i, j)``, ``i >= lo``: the resources some choice of
        allowed versions could push over the room (the others always fit), and the latency."""
        worst = np.zeros(_NRES)
        for u in range(lo, j):
            a = self._allowed(t, u, j, bound)
            worst += self.res[t][u][a, :_NRES].max(axis=0)
        return [k for k in range(_NRES) if worst[k] > self.room[t][k]] + ([_NRES] if latency else [])

    def _reach(self, t: int, j: int, bound: float) -> int:
        """Smallest start ``i`` whose stage ``[i, j)`` might fit (per-resource lower bound), or ``j``."""
        lo = j
        low = np.zeros(_NRES)
        for u in range(j - 1, -1, -1):
            a = self._allowed(t, u, j, bound)
            if len(a) == 0:
                break
            low = low + self.res[t][u][a, :_NRES].min(axis=0)
            if (low > self.room[t]).any():
                break
            lo = u
        return lo

    def row(self, t: int, j: int, bound: float, latency: bool = True) -> np.ndarray:
        """Smallest latency (us, hop to the next stage included, input hop for i = 0) of each stage
        ``[i, j)`` on type ``t`` with every unit interval under ``bound``; ``inf`` where none fits.
        With ``latency=False`` only feasibility counts: fitting stages get 0 (smaller fronts)."""
        key = (t, j, self._level(t, j, bound), latency)
        hit = self._rows.get(key)
        if hit is not None:
            return hit
        out = np.full(j, _INF)
        send = self.send[t][j]
        if self.shell_ii[t] + send <= bound:
            lo = self._reach(t, j, bound)
            cols = self._binding(t, lo, j, bound, latency)
            n_res = len(cols) - (1 if latency else 0)
            room = self.room[t][cols[:n_res]]
            front = np.zeros((1, len(cols)))
            if not cols:  # no resource can bind: every stage from lo on fits
                out[lo:j] = 0.0
                lo = j
            for i in range(j - 1, lo - 1, -1):
                vals = self.res[t][i][self._allowed(t, i, j, bound)][:, cols]
                cand = (front[:, None, :] + vals[None, :, :]).reshape(-1, len(cols))
                cand = cand[(cand[:, :n_res] <= room).all(axis=1)]
                if len(cand) == 0:
                    break
                front = _pareto(self._coarse(cand, room))
                if not latency:
                    out[i] = 0.0
                    continue
                out[i] = (float(front[:, -1].min()) + self.shell_lat[t] + self.hop[t][j]
                          + (self.hop_in[t] if i == 0 else 0.0))
        self._rows[key] = out
        return out

    def _coarse(self, cand: np.ndarray, room: np.ndarray) -> np.ndarray:
        """``cand`` itself, or, when it holds more than ``_FRONT_LIMIT`` points, with its resource
        columns rounded *up* to a grid of ``room / _GRID`` (a stage that fits after rounding fits
        for real; the front shrinks because near-equal points merge)."""
        if len(cand) <= _FRONT_LIMIT or len(room) == 0:
            return cand
        out = cand.copy()
        step = np.maximum(room, 1e-9) / _GRID
        out[:, :len(room)] = np.ceil(out[:, :len(room)] / step) * step
        return out[(out[:, :len(room)] <= room).all(axis=1)]

    def stage_choice(self, t: int, i: int, j: int, bound: float) -> list[int]:
        """The versions of units ``i..j-1`` that reach :meth:`row`'s value for stage ``[i, j)``
        (the same fronts, built the same way, with where each point came from)."""
        cols = self._binding(t, self._reach(t, j, bound), j, bound)
        room = self.room[t][cols[:-1]]
        front = np.zeros((1, len(cols)))
        picks: list[list[int]] = [[]]
        for u in range(j - 1, i - 1, -1):
            allowed = self._allowed(t, u, j, bound)
            vals = self.res[t][u][allowed][:, cols]
            cand = (front[:, None, :] + vals[None, :, :]).reshape(-1, len(cols))
            src = [(a, int(v)) for a in range(len(front)) for v in allowed]
            keep = (cand[:, :-1] <= room).all(axis=1)
            cand = cand[keep]
            src = [sv for sv, k in zip(src, keep, strict=True) if k]
            coarse = self._coarse(cand, room)
            if len(coarse) != len(cand):  # rounding dropped points: keep sources aligned
                fits = (np.ceil(cand[:, :-1] / (np.maximum(room, 1e-9) / _GRID)) * (np.maximum(room, 1e-9) / _GRID)
                        <= room).all(axis=1)
                src = [sv for sv, k in zip(src, fits, strict=True) if k]
            cand = coarse
            front_new = _pareto(cand)
            # map every front point back to one source (any with identical values)
            rows = {tuple(r): k for k, r in enumerate(cand)}
            chosen = [rows[tuple(r)] for r in front_new]
            picks = [[*picks[src[c][0]], src[c][1]] for c in chosen]
            front = front_new
        best = int(np.argmin(front[:, -1]))
        return list(reversed(picks[best]))

    # ------------------------------------------------------------------ DP over (end, board state)
    def dp(self, bound: float, latency: bool = True) -> np.ndarray:
        """``f[j, s]``: smallest latency of units ``[0, j)`` on boards reaching state ``s`` (with
        ``latency=False``: 0 where reachable, ``inf`` elsewhere)."""
        st = self.states
        f = np.full((self.n + 1, st.n), _INF)
        f[0, st.start] = 0.0
        for j in range(1, self.n + 1):
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
        vals = []
        for t in range(self.n_types):
            send = self.send[t]
            for u in range(self.n):
                ends = send[u + 1:]
                vals.append((self.ii[t][u][:, None] + ends[None, :]).ravel())
                vals.append(self.shell_ii[t] + ends)
        return np.unique(np.concatenate(vals))


def solve_joint(costs: Sequence[Sequence[Sequence[Cost]]], bytes_in: float, bytes_out: Sequence[float],
                pool: BoardPool, cap: float, objective: str = "throughput", max_boards: int | None = None,
                n_stages: int | None = None, unit_names: Sequence[str] | None = None) -> JointResult:
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
    solver = _Solver(costs, bytes_in, bytes_out, pool, cap)
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

    inf_f = reach(_INF)
    if not np.isfinite(inf_f).any():
        raise InfeasibleError(_infeasible_message(solver, names, pool, cap, max_boards, n_stages))
    cands = solver.candidates()

    def smallest_bound(ok: Callable[[float], bool]) -> float:
        lo, hi = 0, len(cands) - 1
        if not ok(cands[hi]):
            return _INF
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(cands[mid]):
                hi = mid
            else:
                lo = mid + 1
        return float(cands[lo])

    counts = st.count
    if objective == "throughput":
        best = smallest_bound(lambda b: bool(np.isfinite(reach(b)).any()))
        bound = _tie(best)
        fin = finals(bound)
        k = int(counts[np.isfinite(fin)].min())
        fin = np.where(counts == k, fin, _INF)
    elif objective == "boards":
        k = int(counts[np.isfinite(inf_f)].min())
        best = smallest_bound(lambda b: bool(np.isfinite(reach(b)[counts == k]).any()))
        bound = _tie(best)
        fin = np.where(counts == k, finals(bound), _INF)
    else:
        inf_f = finals(_INF)
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
    metrics = pipeline_metrics(stage_costs, boards, float(bytes_in), [float(bytes_out[j - 1]) for j in bounds[1:]])
    return JointResult(bounds=bounds, stage_types=tuple(t for _, _, t, _ in stages), boards=tuple(boards),
                       choice=tuple(choice), stage_costs=tuple(stage_costs), metrics=metrics, objective=objective,
                       positions=positions)


def _infeasible_message(solver: _Solver, names: Sequence[str], pool: BoardPool, cap: float,
                        max_boards: int | None, n_stages: int | None) -> str:
    kinds = ", ".join(b.name for b in pool.types)
    alone = []
    for u in range(solver.n):
        if not any(np.isfinite(solver.row(t, u + 1, _INF)[u]) for t in range(solver.n_types)):
            alone.append(names[u])
    if alone:
        return (f"unit(s) {alone} fit no board ({kinds}) alone under cap {cap:g} with any of their reuse factors "
                "and strategies; use lower precision, a higher --cap, a bigger board, or let the planner split the "
                "layer (plan with one --board type)")
    limits = []
    if max_boards is not None:
        limits.append(f"--boards {max_boards}")
    if n_stages is not None:
        limits.append(f"--stages {n_stages}")
    return (f"the model does not fit the {pool.n_boards} board(s) on hand ({kinds})"
            + (f" within {' and '.join(limits)}" if limits else "")
            + f" under cap {cap:g}, with any reuse factors and strategies; add boards (or bigger ones) to the "
            "cluster, allow more boards, raise the cap, or lower the precision")
