"""Exact chain partition when units may also run as split groups (intra-layer splits).

:func:`split4ml.plan.partition.partition_chain` calls :func:`solve_with_splits` when some unit has
:class:`~split4ml.plan.chain.SplitOption` s. The chain is cut into pipeline *steps*:

* a **plain stage**: one board running, in order, the tail of the split group just before it (if
  that group has one), then units ``[i, j)``; it may hold the tail alone (a *merge stage*);
* a **split group**: one unit ``u`` run as the ``k`` shards of one of its options, ``k`` boards in
  parallel; a neuron option of ``span`` s > 1 also runs units ``u+1 .. u+s-1`` (channel-wise pooling)
  on every shard, so the group covers units ``[u, u+s)`` and sends the pooled slices.

Rules (design of issue 3): a group's tail (merge node, softmax) runs at the start of the next step,
which must then be a plain stage; a group without a tail may be followed by anything (the next
step, or the sink, concatenates the shards). The step before a *neuron* group sends its output to
each of the ``k`` shards (fan-out): a plain stage sends ``k * bytes_out[j-1]``, each shard of a
group ``k`` times its own bytes, the source ``k * bytes_in``. Before an input group or a plain stage
everything is sent once (an input group's shards take slices).

Pricing is :mod:`split4ml.plan.metrics`: a board's interval is the largest of its fabric interval
(the wrapper's reads and writes included), the link time of what it receives and sends, and its
per-frame cost per sample; its latency is its frame's trip (per-frame cost, the batch through the
fabric, the frame on its link); a group takes the largest over its shards; the bottleneck is the
largest of the source, the steps and the sink; latency is the source's frame plus the sum over
steps. Boards count ``k`` per group, steps count one per step.

**Solver.** A shortest-path problem on a DAG whose states say "units ``[0, j)`` are placed and the
next step is ...":

* ``Z(j)``: a plain stage without a tail, or an input group of unit ``j`` (the step before sends once);
* ``N(j, o)``: neuron option ``o`` of unit ``j`` (the step before sends ``k_o`` copies);
* ``T(j, o)``: a plain stage starting with the tail of option ``o`` of unit ``j-1``.

Edges are steps, each with its interval, latency, boards (1 or ``k``) and one step. The objectives
are lexicographic keys that mix a maximum (bottleneck) with sums (boards, latency) under limits on
boards and steps. Each is solved exactly by dynamic programmes over the DAG in topological order,
with the limited counters (steps when ``n_stages`` is fixed, boards where the board count must be
exact) as an extra table dimension, and bisection over the candidate bottleneck values (the edge
intervals) for the maximum:

* ``throughput``: min-max DP gives the bottleneck; if the fewest boards at that bottleneck exceed
  ``max_boards``, bisection finds the smallest bottleneck whose min-boards DP fits; then a
  lexicographic (boards, latency) DP over the steps within it;
* ``boards``: the fewest boards; bisection for the smallest bottleneck that keeps that count; then
  the lexicographic (boards, latency) DP within it;
* ``latency``: a min-latency DP indexed by boards used (up to ``max_boards`` or the boards of one
  latency-optimal path), the fewest boards reaching the best latency, then bisection for the
  smallest bottleneck that keeps both.

Floating values tie within :data:`~split4ml.plan.chain.REL_TOL` as in the plain solver. Costs:
``O(E C)`` per DP pass for ``E`` edges (about ``U W`` plain stages plus one per option and
neighbouring state) and ``C`` counter cells (1 unless a count is limited), times ``O(log E)``
passes for a bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..boards import Board
from ..errors import InfeasibleError
from ..estimate.base import Cost
from .chain import (
    _INF,
    ChainPrice,
    Partition,
    SplitOption,
    _additive_table,
    _callable_table,
    _SegmentCache,
    _tie,
    _unit_overflow_message,
)
from .metrics import BoardLoad, Endpoint, frame_link_us, group_metrics, link_us

_Z, _N, _T = "Z", "N", "T"


@dataclass(frozen=True)
class _In:
    """The incoming edges (steps) of one state, as parallel arrays."""

    src: np.ndarray  # source state
    start: np.ndarray  # first unit of the step (the unit of a group; the end for a merge stage)
    opt: np.ndarray  # option index of a group step, -1 for a plain stage
    interval: np.ndarray  # us
    latency: np.ndarray  # us, the step's frame trip (metrics.BoardLoad.latency_us)
    boards: np.ndarray  # boards of the step (1 or k)


def _envelope(costs: Sequence[Cost]) -> Cost:
    """Per field, the largest of ``costs`` (what a group asks of each of its boards, at most)."""
    fields = ("lut", "ff", "dsp", "bram18", "latency_cycles", "ii_cycles")
    return Cost(**{f: max(float(getattr(c, f)) for c in costs) for f in fields})


class _Dag:
    """States, steps and the dynamic programmes of one problem instance."""

    def __init__(self, units: Sequence[Cost], price: ChainPrice, board: Board, cap: float,
                 seg: _SegmentCache | None, shell: Cost, options: Sequence[tuple[SplitOption, ...]]) -> None:
        self.units, self.board, self.cap, self.seg, self.shell = units, board, cap, seg, shell
        self.price, self.options = price, options
        self.bytes_in, self.bytes_out = float(price.cut_bytes[0]), price.cut_bytes[1:]
        n = self.n = len(units)
        link, batch = board.link, price.batch
        # An option is usable when every shard fits a board and its tail fits a board (with the shell)
        # at least alone: the merge stage is the smallest stage that can run it.
        self.feasible = [[all(c.fits(board, cap) for c in o.shard_costs)
                          and (o.tail is None or (shell + o.tail).fits(board, cap)) for o in opts] for opts in options]

        # ---- states, in topological order: T(j, .), Z(j), N(j, .) for j = 0..n
        self.states: list[tuple[str, int, int]] = []
        self.index: dict[tuple[str, int, int], int] = {}

        def add(key: tuple[str, int, int]) -> None:
            self.index[key] = len(self.states)
            self.states.append(key)

        for j in range(n + 1):
            if j >= 1:
                for o, opt in enumerate(options[j - 1]):
                    if opt.tail is not None and self.feasible[j - 1][o]:
                        add((_T, j, o))
            add((_Z, j, -1))
            if j < n:
                for o, opt in enumerate(options[j]):
                    if opt.kind == "neuron" and self.feasible[j][o]:
                        add((_N, j, o))
        self.final = self.index[(_Z, n, -1)]
        # the source: its frame's trip starts the latency, and its link is a step of the pipeline
        self.init: dict[int, float] = {self.index[(_Z, 0, -1)]: price.source_latency_us}
        init_iv: dict[int, float] = {self.index[(_Z, 0, -1)]: price.source_us}
        for o, opt in enumerate(options[0] if n else ()):
            if (_N, 0, o) in self.index:
                f = opt.fanout
                self.init[self.index[(_N, 0, o)]] = float(frame_link_us(link, f * self.bytes_in, f, batch))
                init_iv[self.index[(_N, 0, o)]] = float(link_us(link, f * self.bytes_in, f, batch))

        # ---- plain stages without a tail: the table of the plain solver (re-priced here for fan-outs)
        self.tab = (_additive_table(units, shell, board, cap, price) if seg is None
                    else _callable_table(n, seg, board, cap, price))
        # ---- plain stages starting with a tail: rows T(u+1, o) -> ends j >= u+1
        tail_in: list[list[tuple[int, int, int, float, float]]] = [[] for _ in range(n + 1)]
        for key, t in self.index.items():
            if key[0] != _T:
                continue
            _, i, o = key
            for j in range(i, n + 1):
                c = self.plain_cost(i, j, options[i - 1][o].tail)
                if not c.fits(board, cap):
                    break
                tail_in[j].append((t, i, o, float(c.ii_cycles), float(c.latency_cycles)))

        # ---- groups by the end of the units they cover: (unit, option) of every usable tail-less option
        ending: list[list[tuple[int, int]]] = [[] for _ in range(n + 1)]
        for u, opts in enumerate(options):
            for g, opt in enumerate(opts):
                if opt.tail is None and self.feasible[u][g] and u + opt.span <= n:
                    ending[u + opt.span].append((u, g))
        # ---- incoming edges of every state
        z_of = np.array([self.index[(_Z, j, -1)] for j in range(n + 1)])
        self.inc: list[_In | None] = [None] * len(self.states)
        for t, (kind, j, o) in enumerate(self.states):
            if j == 0:
                continue
            f = options[j][o].fanout if kind == _N else 1
            parts: list[tuple[np.ndarray, ...]] = []
            if kind != _T:
                cols = np.flatnonzero(self.tab.ok[j])
                if cols.size:
                    starts = self.tab.start[j, cols]
                    iv, lat = price.stage(starts, j, self.tab.ii_cycles[j, cols], self.tab.lat_cycles[j, cols],
                                          copies=f)
                    parts.append((z_of[starts], starts, np.full(cols.size, -1), np.asarray(iv, dtype=float),
                                  np.asarray(lat, dtype=float), np.ones(cols.size, dtype=int)))
                for src, st, to, ii, lt in tail_in[j]:
                    iv, lat = price.stage(st, j, ii, lt, copies=f, read=self.tail_read(options[st - 1][to]))
                    parts.append((np.array([src]), np.array([st]), np.array([-1]), np.array([float(iv)]),
                                  np.array([float(lat)]), np.array([1])))
                groups = ending[j]
            else:
                groups = [(j - 1, o)]
            for u, g in groups:
                opt = options[u][g]
                src_key = (_N, u, g) if opt.kind == "neuron" else (_Z, u, -1)
                iv, lat = self.group_times(opt, f, u)
                parts.append((np.array([self.index[src_key]]), np.array([u]), np.array([g]), np.array([iv]),
                              np.array([lat]), np.array([opt.k])))
            if parts:
                e = _In(*(np.concatenate([p[k] for p in parts]) for k in range(6)))
                # the source's link bounds the first step, the sink's (the model output, one frame per
                # batch) the last one
                floor = np.array([init_iv.get(int(x), 0.0) for x in e.src])
                if t == self.final:
                    floor = np.maximum(floor, float(price.link_us[n]))
                self.inc[t] = _In(e.src, e.start, e.opt, np.maximum(e.interval, floor), e.latency, e.boards)
        finite = [e.interval for e in self.inc if e is not None]
        self.cands = np.unique(np.concatenate(finite)) if finite else np.zeros(0)
        self._shift_cache: dict[tuple[int, tuple[tuple[str, int], ...]], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ pricing
    def plain_cost(self, i: int, j: int, tail: Cost | None) -> Cost:
        """Cost of a plain stage: the tail (if any), then units ``[i, j)``, shell included."""
        if self.seg is not None and j > i:
            c = self.seg(i, j)
            return c + tail if tail is not None else c
        c = self.shell + tail if tail is not None else self.shell
        for u in self.units[i:j]:
            c = c + u
        return c

    def shard_bytes_in(self, opt: SplitOption, u: int, values_in: float) -> float:
        """Bytes per sample a shard of ``opt`` (a split of unit ``u``) receives: the whole input of the unit
        (neuron split) or its slice of it (input split)."""
        cut_bytes, cut_values = float(self.price.cut_bytes[u]), float(self.price.cut_values[u])
        if opt.kind == "neuron":
            return cut_bytes
        return cut_bytes * values_in / cut_values if cut_values > 0 else cut_bytes / opt.k

    def shard_loads(self, opt: SplitOption, f: int, u: int) -> list[BoardLoad]:
        """The boards of a group of ``opt`` (unit ``u``) whose shards each send ``f`` copies of their output."""
        return [BoardLoad(c, self.board, bytes_sent=f * bo, bytes_recv=self.shard_bytes_in(opt, u, vi), n_in=vi,
                          n_out=vo, frames_sent=f)
                for c, bo, vi, vo in zip(opt.shard_costs, opt.shard_bytes_out, opt.shard_values_in,
                                         opt.shard_values_out, strict=True)]

    def group_times(self, opt: SplitOption, f: int, u: int) -> tuple[float, float]:
        """Interval and latency (us) of a group of ``opt`` (unit ``u``) whose shards each send ``f`` copies."""
        p = self.price
        loads = self.shard_loads(opt, f, u)
        return (max(ld.interval_us(p.io_type, p.batch) for ld in loads),
                max(ld.latency_us(p.io_type, p.batch) for ld in loads))

    @staticmethod
    def tail_read(opt: SplitOption) -> tuple[float, float]:
        """(values, bytes) per sample the stage starting with ``opt``'s tail reads: the shards' outputs."""
        return float(sum(opt.shard_values_out)), float(sum(opt.shard_bytes_out))

    def fanout(self, t: int) -> int:
        kind, j, o = self.states[t]
        return self.options[j][o].fanout if kind == _N else 1

    # ------------------------------------------------------------------ dynamic programmes
    @staticmethod
    def _layout(counters: tuple[tuple[str, int], ...]) -> tuple[int, list[int], list[int]]:
        dims = [lim + 1 for _, lim in counters]
        strides = [int(math.prod(dims[d + 1:])) for d in range(len(dims))]
        return int(math.prod(dims)), dims, strides

    def cell(self, counters: tuple[tuple[str, int], ...], values: dict[str, int]) -> int:
        _, _, strides = self._layout(counters)
        return sum(s * values[name] for (name, _), s in zip(counters, strides, strict=True))

    def _inc(self, e: _In, counters: tuple[tuple[str, int], ...]) -> list[np.ndarray]:
        return [np.ones_like(e.boards) if name == "steps" else e.boards for name, _ in counters]

    def _shift(self, t: int, counters: tuple[tuple[str, int], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per edge and counter cell of state ``t``: the source cell, whether it exists, and the flat increment."""
        key = (t, counters)
        hit = self._shift_cache.get(key)
        if hit is None:
            e = self.inc[t]
            assert e is not None
            size, dims, strides = self._layout(counters)
            cells = np.arange(size)
            valid = np.ones((e.src.size, size), dtype=bool)
            flat = np.zeros(e.src.size, dtype=int)
            for inc, dim, stride in zip(self._inc(e, counters), dims, strides, strict=True):
                coord = (cells // stride) % dim
                valid &= coord[None, :] >= inc[:, None]
                flat += stride * inc
            idx = np.where(valid, cells[None, :] - flat[:, None], 0)
            hit = (idx, valid, flat)
            self._shift_cache[key] = hit
        return hit

    def run(self, mode: str, limit: float, counters: tuple[tuple[str, int], ...] = ()
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One DP pass over the states, using only steps with interval <= ``limit``.

        ``mode``: ``max`` (smallest largest interval), ``sum`` (smallest latency, the source's
        frame included), ``lex`` (fewest boards, then smallest latency), ``count`` / ``negcount`` (fewest /
        most steps, the latter as a negative number). Returns the primary value, the
        secondary value (``lex`` only) and the chosen incoming edge per state and counter cell.
        """
        size, _, _ = self._layout(counters)
        n_states = len(self.states)
        f1 = np.full((n_states, size), _INF)
        f2 = np.full((n_states, size), _INF)
        arg = np.full((n_states, size), -1, dtype=int)
        for s, lat_in in self.init.items():
            f1[s, 0] = lat_in if mode == "sum" else 0.0
            f2[s, 0] = lat_in
        cols = np.arange(size)
        for t in range(n_states):
            e = self.inc[t]
            if e is None:
                continue
            allowed = e.interval <= limit
            if mode == "max":
                v1 = np.where(allowed, e.interval, _INF)
            elif mode in ("count", "negcount"):
                v1 = np.where(allowed, 1.0 if mode == "count" else -1.0, _INF)
            elif mode == "sum":
                v1 = np.where(allowed, e.latency, _INF)
            else:
                v1 = np.where(allowed, e.boards.astype(float), _INF)
            if size == 1:
                g1 = f1[e.src, 0][:, None]
                g2 = f2[e.src, 0][:, None]
            else:
                idx, valid, _ = self._shift(t, counters)
                g1 = np.where(valid, f1[e.src[:, None], idx], _INF)
                g2 = np.where(valid, f2[e.src[:, None], idx], _INF)
            c1 = np.maximum(g1, v1[:, None]) if mode == "max" else g1 + v1[:, None]
            if mode == "lex":
                m = c1.min(axis=0)
                c2 = np.where(c1 == m[None, :], g2 + e.latency[:, None], _INF)
                best = np.argmin(c2, axis=0)
                f1[t] = m
                f2[t] = c2[best, cols]
            else:
                best = np.argmin(c1, axis=0)
                f1[t] = c1[best, cols]
            arg[t] = best
        return f1, f2, arg

    def path(self, arg: np.ndarray, counters: tuple[tuple[str, int], ...], cell: int) -> list[tuple[int, int]]:
        """The steps ``(state, edge)`` of the DP solution ending in ``cell`` of the final state, in order."""
        out: list[tuple[int, int]] = []
        t, c = self.final, cell
        while t not in self.init:
            e = int(arg[t, c])
            inc = self.inc[t]
            assert inc is not None and e >= 0, "DP path left the reachable states"
            out.append((t, e))
            if counters:
                c -= int(self._shift(t, counters)[2][e])
            t = int(inc.src[e])
        out.reverse()
        return out

    def path_start(self, steps: list[tuple[int, int]]) -> int:
        t, e = steps[0]
        inc = self.inc[t]
        assert inc is not None
        return int(inc.src[e])

    def bottleneck(self, steps: list[tuple[int, int]]) -> float:
        return max(float(self.inc[t].interval[e]) for t, e in steps)  # type: ignore[union-attr]

    def n_boards(self, steps: list[tuple[int, int]]) -> int:
        return sum(int(self.inc[t].boards[e]) for t, e in steps)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ result
    def partition(self, steps: list[tuple[int, int]], objective: str) -> Partition:
        board = self.board
        bounds: list[int] = []
        stage_costs: list[Cost] = []
        board_costs: list[tuple[Cost, ...]] = []
        splits: list[int | None] = []
        tails: list[bool] = []
        loads: list[list[BoardLoad]] = []
        for t, e in steps:
            inc = self.inc[t]
            assert inc is not None
            kind, j, _ = self.states[t]
            src_kind, _, src_opt = self.states[int(inc.src[e])]
            start, g = int(inc.start[e]), int(inc.opt[e])
            f = self.fanout(t)
            bounds.append(start)
            p = self.price
            if g >= 0:
                opt = self.options[start][g]
                costs = opt.shard_costs
                step = self.shard_loads(opt, f, start)
                splits.append(g)
                tails.append(False)
            else:
                tail_opt = self.options[start - 1][src_opt] if src_kind == _T else None
                costs = (self.plain_cost(start, j, tail_opt.tail if tail_opt is not None else None),)
                values_in, bytes_in = (self.tail_read(tail_opt) if tail_opt is not None
                                       else (float(p.cut_values[start]), float(p.cut_bytes[start])))
                step = [BoardLoad(costs[0], board, bytes_sent=f * float(p.cut_bytes[j]), bytes_recv=bytes_in,
                                  n_in=values_in, n_out=float(p.cut_values[j]), frames_sent=f)]
                splits.append(None)
                tails.append(src_kind == _T)
            board_costs.append(tuple(costs))
            stage_costs.append(costs[0] if len(costs) == 1 else _envelope(costs))
            loads.append(step)
        bounds.append(self.n)
        f0 = self.fanout(self.path_start(steps))
        p, link = self.price, board.link
        metrics = group_metrics(loads, Endpoint(link, f0 * self.bytes_in, f0), Endpoint(link, float(p.cut_bytes[-1])),
                                batch=p.batch, io_type=p.io_type)
        return Partition(bounds=tuple(bounds), stage_costs=tuple(stage_costs), metrics=metrics, objective=objective,
                         splits=tuple(splits), tails=tuple(tails), board_costs=tuple(board_costs))

    # ------------------------------------------------------------------ checks
    def unplaceable(self) -> list[int]:
        """Units that fit no board: not alone, not after any tail, under no option, and inside no group."""
        bad = []
        tail_rows = {(j, o) for (kind, j, o) in self.states if kind == _T}
        for u in range(self.n):
            if self.tab.ok[u + 1, 0] or not self.price.buildable(u, u + 1):  # (an in-place unit joins any stage)
                continue
            if any(self.plain_cost(u, u + 1, self.options[u - 1][o].tail).fits(self.board, self.cap)
                   for (j, o) in tail_rows if j == u):
                continue
            if any(self.feasible[u]):
                continue
            if any(self.feasible[v][g] and v + o.span > u  # inside a group that spans it
                   for v in range(u) for g, o in enumerate(self.options[v])):
                continue
            bad.append(u)
        return bad


def _bisect(cands: np.ndarray, ok: object) -> int | None:
    """Smallest index ``i`` of ascending ``cands`` with ``ok(cands[i])`` (monotone), or None."""
    lo, hi = 0, len(cands)
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(float(cands[mid])):  # type: ignore[operator]
            hi = mid
        else:
            lo = mid + 1
    return lo if lo < len(cands) else None


def solve_with_splits(units: Sequence[Cost], price: ChainPrice, board: Board, cap: float,
                      objective: str, max_boards: int | None, n_stages: int | None, names: Sequence[str],
                      seg: _SegmentCache | None, shell: Cost,
                      options: Sequence[tuple[SplitOption, ...]]) -> Partition:
    """The optimal partition with split groups (see the module docstring); arguments as ``partition_chain``."""
    dag = _Dag(units, price, board, cap, seg, shell, options)
    bad = dag.unplaceable()
    if bad:
        details = []
        for u in bad:
            cost = seg(u, u + 1) if seg is not None else dag.plain_cost(u, u + 1, None)
            details.append((names[u], cost))
        offered = sorted({o.k for u in bad for o in options[u]})
        note = (f"; the splits offered ({', '.join(f'k={k}' for k in offered)}) do not fit either: some shard "
                "exceeds a board" if offered else " (an intra-layer split)")
        raise InfeasibleError(_unit_overflow_message(details, board, cap, note))

    steps_c: tuple[tuple[str, int], ...] = (("steps", n_stages),) if n_stages is not None else ()
    s_cell = dag.cell(steps_c, {"steps": n_stages} if n_stages is not None else {})
    exact = f"exactly {n_stages} pipeline steps" if n_stages is not None else "any number of steps"

    def lex(limit: float) -> tuple[float, np.ndarray]:
        f1, _, arg = dag.run("lex", limit, steps_c)
        return float(f1[dag.final, s_cell]), arg

    def too_few_boards(bmin: float) -> InfeasibleError:
        return InfeasibleError(
            f"the model needs at least {int(bmin)} {board.name} boards under cap {cap:g} (split groups count one "
            f"board per shard), with {exact}, but at most {max_boards} are allowed; allow {int(bmin)} boards, "
            "raise the cap, use larger reuse factors or lower precision, or pick a bigger board")

    bmin, arg = lex(_INF)
    if bmin == _INF:
        if n_stages is not None:
            lo = float(dag.run("count", _INF)[0][dag.final, 0])
            hi = -float(dag.run("negcount", _INF)[0][dag.final, 0])
            if lo < _INF and not lo <= n_stages <= hi:
                span = f"{lo:.0f}" if lo == hi else f"{lo:.0f} to {hi:.0f}"
                raise InfeasibleError(
                    f"asked for exactly {n_stages} pipeline step(s), but the {dag.n} units make {span} on "
                    f"{board.name} boards under cap {cap:g} (a split layer is a step of its own, and the merge of "
                    f"its parts may take one more); ask for {span} stages")
        raise InfeasibleError(f"no partition of the {dag.n} units into {board.name} boards fits under cap {cap:g} "
                              f"with {exact} (split groups count as one step, merge stages as one more)")
    if max_boards is not None and bmin > max_boards:
        raise too_few_boards(bmin)

    if objective == "throughput":
        f1, _, _ = dag.run("max", _INF, steps_c)
        v0 = float(f1[dag.final, s_cell])
        b0, arg = lex(_tie(v0))
        if max_boards is not None and b0 > max_boards:
            cands = dag.cands[dag.cands > v0]
            i = _bisect(cands, lambda v: lex(_tie(v))[0] <= max_boards)
            assert i is not None  # every step allowed gives bmin <= max_boards
            _, arg = lex(_tie(float(cands[i])))
        return dag.partition(dag.path(arg, steps_c, s_cell), objective)

    if objective == "boards":
        f1, _, _ = dag.run("max", _INF, steps_c)
        v_lo = float(f1[dag.final, s_cell])
        cands = dag.cands[dag.cands >= v_lo]
        i = _bisect(cands, lambda v: lex(_tie(v))[0] <= bmin)
        assert i is not None
        _, arg = lex(_tie(float(cands[i])))
        return dag.partition(dag.path(arg, steps_c, s_cell), objective)

    # latency: fewest boards among the latency ties needs the board count as a DP dimension
    _, _, arg0 = dag.run("sum", _INF, steps_c)
    b_opt = dag.n_boards(dag.path(arg0, steps_c, s_cell))
    b_top = b_opt if max_boards is None else min(b_opt, max_boards)
    cnt = (*steps_c, ("boards", b_top))
    base = {"steps": n_stages} if n_stages is not None else {}
    cells = [dag.cell(cnt, {**base, "boards": b}) for b in range(b_top + 1)]
    f1, _, arg = dag.run("sum", _INF, cnt)
    vals = f1[dag.final, cells]
    best = float(vals.min())
    assert best < _INF  # bmin <= b_top boards reach the final state
    thr = _tie(best)
    b_star = int(np.flatnonzero(vals <= thr)[0])
    cell = cells[b_star]
    steps = dag.path(arg, cnt, cell)
    upper = dag.bottleneck(steps)
    fmax, _, _ = dag.run("max", _INF, cnt)
    lower = float(fmax[dag.final, cell])
    if upper <= _tie(lower):
        return dag.partition(steps, objective)
    cands = dag.cands[(dag.cands >= lower) & (dag.cands < upper)]

    def keeps(v: float) -> bool:
        return float(dag.run("sum", _tie(v), cnt)[0][dag.final, cell]) <= thr

    i = _bisect(cands, keeps)
    if i is not None:
        _, _, arg = dag.run("sum", _tie(float(cands[i])), cnt)
        steps = dag.path(arg, cnt, cell)
    return dag.partition(steps, objective)
