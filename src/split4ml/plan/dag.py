"""Exact partition of a DAG of units (skip connections, merges) onto a pipeline of boards, by CP-SAT.

**Model.** Units ``0 .. U-1`` (a layer plus its standalone activations) are in topological order,
each with a :class:`Cost` (resources, ``latency_cycles``, ``ii_cycles``; board shell excluded).
Data moves as :class:`Tensor` s: a producer unit (or ``-1``, the model input, which comes from the
host), its consumer units, and ``n_bytes`` per sample (the producer's result type x its shape).

* **Versions**: a unit may come in several *versions* (reuse factor and strategy of its compute
  layer, :mod:`split4ml.plan.versions`), each with its own cost; the solver picks exactly one per
  unit, jointly with the stages (issue #9). A unit given one cost has one version.
* **Decision**: the stage ``s(u)`` in ``0 .. K-1`` and the version of every unit, with
  ``s(p) <= s(v)`` on every edge (a pipeline only sends forward). The stages used form a prefix
  ``0 .. n-1`` and each holds at least one unit. A stage's cost is the board shell plus the sum of
  its units' chosen versions (resources and latency add, the interval is the largest); it must fit
  under ``cap`` x the board capacity (:meth:`Cost.fits`).
* **Links**: link ``k`` leaves stage ``k``. A tensor produced at stage ``a`` whose last consumer is
  at stage ``b > a`` crosses links ``a .. b-1``: the boards in between forward it (pass-through). It
  is counted once per link, however many consumers it has downstream. The model input crosses from
  the host into stage 0 and then links ``0 .. b-1`` (``b`` its last consumer's stage); a model
  output crosses from its producer's stage to the last stage and then the last link, to the sink.
  ``B_k`` is the bytes per sample on link ``k``. A link is one wire of one type: tensors of
  different types (:attr:`Tensor.type`) never cross the same link, the rule the plan checker
  (:func:`split4ml.stages.link_wire`) enforces.
* **Metrics** (as :mod:`split4ml.plan.metrics`, so a chain gets exactly the figures of
  :func:`~split4ml.plan.partition.partition_chain`), for frames of ``batch`` samples and
  ``io_parallel`` (the only io type planned for DAGs): stage ``k``'s fabric takes
  ``F_k = E_{k-1} + shell and layers' latency + E_k`` cycles (``E_k`` the values per sample on link
  ``k``, ``E_{-1}`` the model input's: the wrapper reads and writes one value a clock); its interval
  is the largest of ``F_k / clock``, its links' ``link_us(B)`` (payload plus the frame header's share)
  and the per-frame cost over the batch; the source's link counts too. The bottleneck is the largest
  interval. The latency is linear in the stages ``n``, ``TB = sum_k B_k`` and ``X = 2 TE + LC``
  (``TE = sum_k E_k``, ``LC`` the chosen versions' latency cycles).
* **Objectives** (lexicographic, floating values tie within a relative 1e-9 as in partition.py):
  ``throughput`` (bottleneck, then fewest boards, then latency), ``latency`` (latency, then fewest
  boards, then bottleneck), ``boards`` (fewest boards, then bottleneck, then latency); ``max_boards``
  bounds the stages, ``n_stages`` fixes them.

**Exactness and scaling.** Times are never compared after rounding. The keys' constraints are
exact integer constraints, and the times are only rounded in the objective that guides a search:

* bytes are integers (the bytes per sample of a tensor are; otherwise they are counted in
  milli-bytes, ``BYTE_QUANTUM``), so ``B_k`` and ``TB = sum_k B_k`` are exact integers;
* "every interval <= T" is exact: the largest integer ``B`` with ``link_us(B) <= T`` and the largest
  integer fabric ``F`` with ``F / clock <= T`` are computed in floating point with the formulas of
  the metrics, and the constraints are ``B_k <= Bmax`` and ``used_k => F_k <= Fmax``;
* with one board type, ``latency_us = lat_in + n lat_per_stage + batch X / clock + batch TB 8 /
  bandwidth``, a rational inequality in ``(n, TB, X)``: ``n == k => A X + Bc TB <= D (L -
  fixed(k))`` (clock and bandwidth as fractions), with a relative margin of 1e-12
  (:data:`LATENCY_MARGIN`), far below the 1e-9 tie tolerance and far above float rounding, so it
  neither admits a plan that is not better nor excludes one better by more than a tie;
* the bottleneck and the latency are minimised on a proxy, times in integer picoseconds
  (``TIME_SCALE = 1e6`` per microsecond), then made exact: while some plan is strictly better than
  the current plan's exact value (by the exact constraint above), take it; none left proves the
  optimum. The next keys keep the value ``<=`` the optimum plus the tie tolerance. The tests
  check this with a deliberately coarse proxy (whole microseconds).

Resources are integers in practice; fractional ones are counted in thousandths, rounded up (the
solver may then miss a plan that fits by less than 0.001 of a LUT; it never returns one that does
not fit). Fractional latency cycles (with versions) are counted in thousandths too; the latency
optimum is then exact up to half a thousandth of a cycle per unit.

**Units in forced order.** When every unit reads the one before it (a residual MLP, a ResNet), links
only going forward makes every plan's stages runs of consecutive units: the model is a chain whose
cut ``c`` carries every tensor made before unit ``c`` and read from unit ``c`` on (or sent to the sink),
and a cut that tensors of two wire types cross is no link (:func:`order_cuts`). The exact joint chain
DP (:func:`split4ml.plan.joint.solve_joint`, same formulas) then decides, in a fraction of CP-SAT's
time where stages are short (throughput); it gives up, for CP-SAT to decide, as soon as a Pareto front
grows too large to keep whole (``_EXACT_FRONT_LIMIT`` in :mod:`split4ml.plan.joint`) or after
:data:`ORDER_DP_SHARE` of the time limit.

**Solver.** CP-SAT (OR-Tools): Booleans ``x[u, k]`` (unit ``u`` on stage ``k``), ``y[u, v]`` (unit
``u`` as version ``v``, exactly one per unit) and ``z[u, v, k]`` (both; ``sum_v z = x``, ``sum_k z
= y``; stage resources sum ``z`` times the versions' integer resources), ``used[k]`` and
``c[t, k]`` (tensor ``t`` crosses link ``k``, ``c >= [s(p) <= k] + [s(v) > k] - 1`` for every
consumer ``v``, and with ``[k <= n-1]`` for a model output). Each key is one or a few solves;
``boards`` and ``latency`` shrink the stage slots to the counts that can still win. The solves
share one time limit; if one stops before proving optimality, the best plan so far is returned
and says so (``optimal=False``). OR-Tools crashes in a process that loaded TensorFlow before it,
so :func:`partition_dag` then solves in a child process (see its ``isolate`` argument).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..boards import RESOURCES, Board
from ..errors import InfeasibleError, PlanError, TimeLimitError
from ..estimate.base import Cost, Estimator, layers_cost
from ..ir import Graph, Layer
from ..settings import BuildSettings, LayerSettings
from .chain import ABS_TOL_US, REL_TOL, _unit_overflow_message, check_options, shell_cost
from .design import objective_key
from .metrics import (
    DEFAULT_BATCH,
    FRAME_OVERHEAD_BYTES,
    BoardLoad,
    Endpoint,
    PipelineMetrics,
    frame_link_us,
    group_metrics,
    link_us,
    per_frame_us,
)

#: Integer time units per microsecond in the bottleneck and latency proxies (picoseconds).
TIME_SCALE = 1_000_000
#: Byte counting unit when some tensor has a fractional byte count (milli-bytes).
BYTE_QUANTUM = 1000
#: Resource counting unit when some resource figure is fractional (thousandths).
RESOURCE_QUANTUM = 1000
#: Latency counting unit when some latency figure is fractional (thousandths of a cycle).
LATENCY_QUANTUM = 1000
#: Relative margin of the rational latency bound (module docstring), far below the tie tolerance.
LATENCY_MARGIN = 1e-12
#: Default wall-clock budget of the whole solve, in seconds.
DEFAULT_TIME_LIMIT_S = 60.0
_MAX_REFINE = 1000
#: What a plan of a model in forced order says decided it (``DagPartition.solver``).
ORDER_DP = "exact DP, units in forced order"
#: The share of the time limit the exact chain DP may take on a model in forced order before CP-SAT
#: takes over (``partition_dag``). Where its fronts grow too large it gives up at once; where they stay
#: exact but long (few boards on a 60-layer ResNet-style model) it needs seconds, and then proves a
#: plan CP-SAT does not prove within the whole limit.
ORDER_DP_SHARE = 0.5


@dataclass(frozen=True)
class Tensor:
    """One tensor of the DAG, as it moves between boards.

    Attributes:
        producer: index of the unit that computes it, or ``-1`` for the model input (from the host).
        consumers: indices of the units that read it (each later than ``producer``).
        n_bytes: bytes per sample (shape x the producer's result type).
        output: a model output: it goes from the last stage to the sink.
        name: for messages and reports (the producing layer's name).
        type: its wire type (e.g. ``ap_fixed<16,6>``). A link is one wire of one type, so tensors of
            different types never cross the same link (the plan checker, :func:`split4ml.stages.link_wire`,
            refuses it). Empty: any type (a problem without type information).
    """

    producer: int
    consumers: tuple[int, ...]
    n_bytes: float
    output: bool = False
    name: str = ""
    type: str = ""
    #: values per sample (what the AXI wrappers of the boards it crosses read and write, one per clock)
    n_values: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "consumers", tuple(int(c) for c in self.consumers))


@dataclass(frozen=True)
class DagPartition:
    """Units of a DAG assigned to pipeline stages, one board each.

    Attributes:
        stage_of: stage of every unit.
        version_of: the version chosen for every unit (index into its list of costs; 0 for a unit
            given one cost).
        stage_units: units of every stage, in topological order.
        stage_costs: cost of every stage, board shell included.
        link_bytes: bytes per sample leaving every stage (the last one's go to the sink).
        link_tensors: indices (into the tensors given) of the tensors crossing each link.
        metrics: bottleneck, latency, throughput (:mod:`split4ml.plan.metrics`).
        objective: the objective optimised.
        optimal: False when a solve stopped at its time limit before proving optimality.
        solve_s: wall-clock seconds spent.
        n_solves: CP-SAT solves made.
        bound: a proven lower bound of the objective's first key (``bottleneck_us``, ``latency_us``
            or the number of boards), from the solver's own bound when it stopped early; equal to the
            plan's value when ``optimal``. ``None`` when no solve of that key ran.
    """

    stage_of: tuple[int, ...]
    version_of: tuple[int, ...]
    stage_units: tuple[tuple[int, ...], ...]
    stage_costs: tuple[Cost, ...]
    link_bytes: tuple[float, ...]
    link_tensors: tuple[tuple[int, ...], ...]
    metrics: PipelineMetrics
    objective: str = "throughput"
    optimal: bool = True
    solve_s: float = 0.0
    n_solves: int = 0
    bound: float | None = None
    #: what decided: ``CP-SAT``, or :data:`ORDER_DP` for units in forced order
    solver: str = "CP-SAT"

    @property
    def n_stages(self) -> int:
        return len(self.stage_units)


def chain_tensors(bytes_in: float, bytes_out: Sequence[float]) -> list[Tensor]:
    """The tensors of a chain of ``len(bytes_out)`` units (unit ``i`` feeds ``i+1``, the last is the output)."""
    n = len(bytes_out)
    out = [Tensor(-1, (0,), float(bytes_in), name="input")]
    out += [Tensor(i, (i + 1,) if i + 1 < n else (), float(bytes_out[i]), output=i == n - 1, name=f"unit {i}")
            for i in range(n)]
    return out


def tensors_from_inputs(unit_inputs: Sequence[Sequence[int]], bytes_in: float, bytes_out: Sequence[float],
                        outputs: Sequence[int]) -> list[Tensor]:
    """Tensors when every unit has one output tensor: ``unit_inputs[v]`` lists the producers of unit
    ``v`` (``-1`` = the model input); ``outputs`` are the units whose tensors are model outputs."""
    n = len(unit_inputs)
    cons: dict[int, list[int]] = {p: [] for p in range(-1, n)}
    for v, ps in enumerate(unit_inputs):
        for p in ps:
            if p not in cons:
                raise ValueError(f"unit {v} reads unit {p}, which does not exist")
            if v not in cons[p]:
                cons[p].append(v)
    outs = set(int(o) for o in outputs)
    ts = [Tensor(-1, tuple(cons[-1]), float(bytes_in), name="input")]
    ts += [Tensor(p, tuple(cons[p]), float(bytes_out[p]), output=p in outs, name=f"unit {p}") for p in range(n)
           if cons[p] or p in outs]
    return ts


def link_loads(stage_of: Sequence[int], tensors: Sequence[Tensor]) -> tuple[list[float], list[list[int]]]:
    """Bytes per sample on each link (out of each stage; the last to the sink) and the tensors on it."""
    n = max(stage_of) + 1
    loads = [0.0] * n
    which: list[list[int]] = [[] for _ in range(n)]
    for i, t in enumerate(tensors):
        a = 0 if t.producer < 0 else stage_of[t.producer]
        b = max([stage_of[v] for v in t.consumers] + [n if t.output else -1])
        for k in range(a, b):
            loads[k] += t.n_bytes
            which[k].append(i)
    return loads, which


def evaluate(stage_of: Sequence[int], unit_costs: Sequence[Cost], tensors: Sequence[Tensor], board: Board,
             shell: Cost | None = None, batch: int = DEFAULT_BATCH,
             io_type: str = "io_parallel") -> tuple[list[Cost], list[float], PipelineMetrics]:
    """Stage costs, link bytes and metrics (:func:`~split4ml.plan.metrics.group_metrics`) of an assignment
    of units to stages (no feasibility check): stage ``k`` receives link ``k - 1`` (the model input for
    the first) and sends link ``k``."""
    sh = shell if shell is not None else shell_cost(board)
    n = max(stage_of) + 1
    costs = [sh] * n
    for u, k in enumerate(stage_of):
        costs[k] = costs[k] + unit_costs[u]
    loads, which = link_loads(stage_of, tensors)
    values = [sum(tensors[i].n_values for i in w) for w in which]
    bytes_in = sum(t.n_bytes for t in tensors if t.producer < 0)
    values_in = sum(t.n_values for t in tensors if t.producer < 0)
    steps = [[BoardLoad(costs[k], board, bytes_sent=loads[k], bytes_recv=loads[k - 1] if k else bytes_in,
                        n_in=values[k - 1] if k else values_in, n_out=values[k])] for k in range(n)]
    metrics = group_metrics(steps, Endpoint(board.link, bytes_in), Endpoint(board.link, loads[-1]), batch=batch,
                            io_type=io_type)
    return costs, loads, metrics


def _tie(value: float) -> float:
    return value + REL_TOL * abs(value) + ABS_TOL_US


def _is_int(v: float) -> bool:
    return float(v).is_integer()


Sol = tuple[list[int], list[int]]
"""A solution: the stage of every unit and the version chosen for it."""


class _Problem:
    """The fixed data of one partition problem, and CP-SAT models built from it.

    ``versions[u]`` lists the costs of unit ``u``'s versions (one entry: a fixed unit)."""

    def __init__(self, versions: Sequence[Sequence[Cost]], tensors: Sequence[Tensor], board: Board, cap: float,
                 shell: Cost, n_slots: int, deadline: float, workers: int, batch: int = DEFAULT_BATCH) -> None:
        self.vers = [list(vs) for vs in versions]
        self.tensors = list(tensors)
        self.board = board
        self.shell = shell
        self.cap = cap
        self.K = n_slots
        self.U = len(self.vers)
        self.deadline = deadline
        self.workers = workers
        self.batch = int(batch)
        self.optimal = True
        self.n_solves = 0
        #: per goal, the largest proven lower bound (proxy units) of an unconstrained minimisation
        self.proxy_bound: dict[str, float] = {}
        self.bq = 1 if all(_is_int(t.n_bytes) for t in tensors) else BYTE_QUANTUM
        self.tb = [int(round(t.n_bytes * self.bq)) for t in tensors]
        self.te = [int(round(t.n_values)) for t in tensors]
        vals = [float(getattr(c, r)) for vs in self.vers for c in vs for r in RESOURCES]
        self.rq = 1 if all(_is_int(v) for v in vals) else RESOURCE_QUANTUM
        lats = [float(c.latency_cycles) for vs in self.vers for c in vs] + [float(shell.latency_cycles)]
        self.lq = 1 if all(_is_int(v) for v in lats) else LATENCY_QUANTUM
        self.lat_q = [[int(round(float(c.latency_cycles) * self.lq)) for c in vs] for vs in self.vers]
        self.shell_lat_q = int(round(float(shell.latency_cycles) * self.lq))
        self.lc_min = sum(min(q) for q in self.lat_q)
        self.bytes_in = sum(t.n_bytes for t in tensors if t.producer < 0)
        self.values_in = sum(t.n_values for t in tensors if t.producer < 0)
        self.values_out = sum(t.n_values for t in tensors if t.output)
        link, b = board.link, self.batch
        #: the parts of every interval that no choice changes: per-frame cost, the source's link
        self.fixed_interval = max(per_frame_us(board, b), link_us(link, self.bytes_in, 1, b))
        #: latency = lat_in + n lat_per_stage + batch (2 TE + LC) / clock + batch TB 8 / bandwidth
        #: (io_parallel: a stage's fabric interval and latency are both n_in + L + n_out cycles)
        self.lat_in = (frame_link_us(link, self.bytes_in, 1, b)
                       + board.cycles_to_us(b * (self.values_in - self.values_out)))
        self.lat_per_stage = (link.latency_us + board.cycles_to_us(b * float(shell.latency_cycles))
                              + link.transfer_us(float(FRAME_OVERHEAD_BYTES)))

    # ------------------------------------------------------------------ exact float formulas
    def link_time_us(self, q: int) -> float:
        """A link carrying ``q`` byte quanta per sample, per sample (as the metrics price it)."""
        return link_us(self.board.link, q / self.bq, 1, self.batch)

    def fabric_us(self, q: int) -> float:
        """A board whose wrapper reads and writes and layers take ``q`` latency quanta, per sample."""
        return self.board.cycles_to_us(q / self.lq)

    def latency_us(self, n: int, tb_q: int, x_q: int) -> float:
        """``n`` stages, ``tb_q`` byte quanta on the links, ``x_q`` = 2 lq TE + LC latency quanta."""
        return (self.lat_in + n * self.lat_per_stage + self.board.cycles_to_us(self.batch * x_q / self.lq)
                + self.board.link.transfer_us(self.batch * tb_q / self.bq))

    def max_q(self, f: Any, limit: float, strict: bool, top: int) -> int:
        """Largest integer q in [-1, top] with f(q) <= limit (< limit when ``strict``); f increasing in q."""

        def ok(q: int) -> bool:
            v = f(q)
            return v < limit if strict else v <= limit

        if not ok(0):
            return -1
        lo, hi = 0, top
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if ok(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _latency_rates(self) -> tuple[int, int, int]:
        """Integers (A, Bc, D) with ``A / D`` = microseconds per ``x`` quantum (batch latency quanta) and
        ``Bc / D`` per byte quantum (batch of them), from the clock and the bandwidth as rationals
        (denominators <= 1e6)."""
        for limit in (10**6, 10**3):
            clock = Fraction(self.board.clock_mhz).limit_denominator(limit)
            bw = Fraction(self.board.link.bandwidth_mbps).limit_denominator(limit)
            alpha = self.batch / (clock * self.lq)
            beta = 8 * self.batch / (bw * self.bq)
            d = math.lcm(alpha.denominator, beta.denominator)
            a, b = int(alpha * d), int(beta * d)
            top = (a * (sum(max(q) for q in self.lat_q) + 2 * self.lq * sum(self.te) * (self.K + 1))
                   + b * sum(self.tb) * (self.K + 1))
            if top < 2**60:
                return a, b, d
        raise PlanError(f"board {self.board.name!r}: clock {self.board.clock_mhz} MHz and bandwidth "
                        f"{self.board.link.bandwidth_mbps} Mbit/s are too irregular for the exact latency bound; "
                        "round them in the board file")

    # ------------------------------------------------------------------ model
    def build(self, *, n_lo: int, n_hi: int, interval_max: float | None = None, strict: bool = False,
              tb_max: int | None = None, latency_max: float | None = None, lat_strict: bool = False,
              goal: str = "n", hint: Sol | None = None) -> Any:
        from ortools.sat.python import cp_model

        m = cp_model.CpModel()
        U, K = self.U, self.K
        x = [[m.NewBoolVar(f"x{u}_{k}") for k in range(K)] for u in range(U)]
        # y[u][v]: unit u built as version v; z[u][v][k]: and placed on stage k
        y: list[list[Any]] = []
        z: list[list[list[Any]]] = []
        for u, vs in enumerate(self.vers):
            if len(vs) == 1:
                y.append([m.NewConstant(1)])
                z.append([x[u]])
                continue
            yu = [m.NewBoolVar(f"y{u}_{v}") for v in range(len(vs))]
            zu = [[m.NewBoolVar(f"z{u}_{v}_{k}") for k in range(K)] for v in range(len(vs))]
            m.AddExactlyOne(yu)
            for v in range(len(vs)):
                m.Add(sum(zu[v]) == yu[v])
            for k in range(K):
                m.Add(sum(zu[v][k] for v in range(len(vs))) == x[u][k])
            y.append(yu)
            z.append(zu)
        used = [m.NewBoolVar(f"used{k}") for k in range(K)]
        for u in range(U):
            m.AddExactlyOne(x[u])
        m.Add(used[0] == 1)
        for k in range(K):
            for u in range(U):
                m.AddImplication(x[u][k], used[k])
            m.AddBoolOr([x[u][k] for u in range(U)]).OnlyEnforceIf(used[k])
            if k + 1 < K:
                m.AddImplication(used[k + 1], used[k])
        n = sum(used)
        m.Add(n >= n_lo)
        m.Add(n <= n_hi)
        stage = [sum(k * x[u][k] for k in range(1, K)) for u in range(U)]
        for t in self.tensors:
            if t.producer >= 0:
                for v in t.consumers:
                    m.Add(stage[t.producer] <= stage[v])
        # resources
        for r in RESOURCES:
            room = self.board.capped(r, self.cap) - float(getattr(self.shell, r)) + 1e-9
            room_q = int(math.floor(room * self.rq + 1e-9))
            a = [[int(math.ceil(float(getattr(c, r)) * self.rq - 1e-6)) for c in vs] for vs in self.vers]
            if all(w == 0 for row in a for w in row):
                continue
            for k in range(K):
                m.Add(sum(a[u][v] * z[u][v][k] for u in range(U) for v in range(len(a[u])) if a[u][v]) <= room_q)
        # links: B[k] byte quanta and E[k] values per sample on link k
        B: list[Any] = []
        E: list[Any] = []
        typed = len({t.type for t in self.tensors if t.type}) > 1
        for k in range(K):
            terms = []
            vterms = []
            crossing: dict[str, list[Any]] = {}  # wire type -> its tensors' "crosses link k"
            for i, t in enumerate(self.tensors):
                if self.tb[i] == 0 and self.te[i] == 0 and not typed:
                    continue
                p = t.producer
                prod_le = 1 if p < 0 else sum(x[p][j] for j in range(k + 1))
                lows = [sum(x[v][j] for j in range(k + 1, K)) for v in t.consumers]
                if t.output:
                    lows.append(used[k])
                if not lows:
                    continue
                c = m.NewBoolVar(f"c{i}_{k}")
                for low in lows:
                    m.Add(c >= prod_le + low - 1)
                if self.tb[i]:
                    terms.append(self.tb[i] * c)
                if self.te[i]:
                    vterms.append(self.te[i] * c)
                if typed and t.type:
                    crossing.setdefault(t.type, []).append(c)
            if len(crossing) > 1:  # one wire type per link: at most one type group crosses it
                groups = []
                for cs in crossing.values():
                    h = m.NewBoolVar(f"h{k}_{len(groups)}")
                    for c in cs:
                        m.AddImplication(c, h)
                    groups.append(h)
                m.AddAtMostOne(groups)
            B.append(sum(terms) if terms else 0)
            E.append(sum(vterms) if vterms else 0)
        tb_total = sum(B)
        # F[k]: latency quanta of stage k's fabric (io_parallel wrapper): values in + layers + values out
        e_in = int(round(self.values_in)) * self.lq
        F = []
        for k in range(K):
            layers = self.shell_lat_q + sum(self.lat_q[u][v] * z[u][v][k] for u in range(U)
                                            for v in range(len(self.vers[u])) if self.lat_q[u][v])
            F.append((e_in if k == 0 else self.lq * E[k - 1]) + layers + self.lq * E[k])
        # X = 2 lq TE + LC: the part of the latency the choices move besides n and TB
        x_total = 2 * self.lq * sum(E) + sum(self.lat_q[u][v] * y[u][v] for u in range(U)
                                             for v in range(len(self.vers[u])) if self.lat_q[u][v])
        if tb_max is not None:
            m.Add(tb_total <= tb_max)
        if interval_max is not None:
            self._interval_bound(m, used, B, F, interval_max, strict)
        if latency_max is not None:
            self._latency_bound(m, used, tb_total, x_total, latency_max, lat_strict)
        w_b, w_f, w_x, a_n, h = self._weights()
        if goal == "n":
            m.Minimize(n)
        elif goal == "tb":
            m.Minimize(tb_total)
        elif goal == "latency":  # proxy in picoseconds, refined exactly by min_latency
            m.Minimize(a_n * n + w_b * self.batch * tb_total + w_x * x_total)
        elif goal == "bottleneck":  # proxy in picoseconds, refined exactly by min_bottleneck
            top_f = (e_in + self.shell_lat_q + sum(max(q) for q in self.lat_q)
                     + 2 * self.lq * sum(self.te) * (K + 1))
            ub = w_f * top_f + w_b * sum(self.tb) * (K + 1) + h + int(self.fixed_interval * TIME_SCALE) + 2
            zz = m.NewIntVar(0, ub, "bottleneck")
            m.Add(zz >= int(math.floor(self.fixed_interval * TIME_SCALE)))
            for k in range(K):
                m.Add(zz >= w_b * B[k] + h)
                m.Add(zz >= w_f * F[k]).OnlyEnforceIf(used[k])
            m.Minimize(zz)
        if hint is not None:
            for u in range(U):
                for k in range(K):
                    m.AddHint(x[u][k], hint[0][u] == k)
                if len(self.vers[u]) > 1:
                    for v in range(len(self.vers[u])):
                        m.AddHint(y[u][v], hint[1][u] == v)
        return m, x, y

    def _weights(self) -> tuple[int, int, int, int, int]:
        """Picosecond weights of the proxy objectives: per byte quantum on a link, per latency quantum
        of a fabric, per ``x`` quantum of the latency (batch latency quanta), per stage, and the
        frame header's share of a link's time per sample."""
        link = self.board.link

        def w(v: float) -> int:
            return max(1, int(round(v))) if v > 0 else 0

        return (w(link.transfer_us(1.0 / self.bq) * TIME_SCALE), w(self.board.cycles_to_us(1.0 / self.lq) * TIME_SCALE),
                w(self.board.cycles_to_us(self.batch / self.lq) * TIME_SCALE),
                int(round(self.lat_per_stage * TIME_SCALE)),
                int(math.floor(link.transfer_us(FRAME_OVERHEAD_BYTES / self.batch) * TIME_SCALE)))

    def _interval_bound(self, m: Any, used: list[Any], B: list[Any], F: list[Any], limit: float,
                        strict: bool) -> None:
        """Every used stage's interval <= ``limit`` (< when ``strict``), exactly: its per-frame cost and
        the source's link (fixed), every link's bytes, and every used stage's fabric quanta, each
        bounded by the largest integer the float formulas of the metrics admit."""
        ok_fixed = self.fixed_interval < limit if strict else self.fixed_interval <= limit
        if not ok_fixed:
            m.Add(used[0] == 0)  # nothing can meet it
            return
        top_b = sum(self.tb) * (self.K + 1)
        qb = self.max_q(self.link_time_us, limit, strict, top_b)
        top_f = (int(round(self.values_in)) * self.lq + self.shell_lat_q + sum(max(q) for q in self.lat_q)
                 + 2 * self.lq * sum(self.te) * (self.K + 1))
        qf = self.max_q(self.fabric_us, limit, strict, top_f)
        for k in range(self.K):
            if qb < 0 or qf < 0:
                m.Add(used[k] == 0)
                continue
            if not isinstance(B[k], int):
                m.Add(B[k] <= qb)
            m.Add(F[k] <= qf).OnlyEnforceIf(used[k])

    def _latency_bound(self, m: Any, used: list[Any], tb_total: Any, x_total: Any, limit: float,
                       strict: bool) -> None:
        """latency <= ``limit`` (< when ``strict``). Latency is linear in (n, TB, X) and the bound is an
        exact rational inequality (it differs from the floating-point formula only by rounding, far
        inside the tie tolerance)."""
        K = self.K
        a, b, d = self._latency_rates()
        # a margin far below the tie tolerance and far above float rounding: "strictly below"
        # means below by more than rounding, "at most" admits what rounding could put above
        margin = LATENCY_MARGIN * max(1.0, abs(limit))
        lim = Fraction(limit - margin if strict else limit + margin)
        for k in range(1, K + 1):
            is_k = [used[k - 1]] + ([used[k].Not()] if k < K else [])
            rest = lim - Fraction(self.lat_in) - k * Fraction(self.lat_per_stage)
            bound = rest * d
            rhs = math.ceil(bound) - 1 if strict else math.floor(bound)
            m.Add(a * x_total + b * tb_total <= rhs).OnlyEnforceIf(is_k)

    def solve(self, **kw: Any) -> Sol | None:
        """Solve one model; the stage and the version of every unit, or None when infeasible."""
        try:
            from ortools.sat.python import cp_model
        except ImportError as exc:
            raise PlanError("planning a model with skip connections needs OR-Tools (CP-SAT): pip install "
                            "'ortools>=9.10'") from exc

        left = self.deadline - time.monotonic()
        if left <= 0:  # out of time: no further improvement is tried
            self.optimal = False
            return None
        m, x, y = self.build(**kw)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = left
        solver.parameters.num_workers = self.workers
        solver.parameters.random_seed = 0
        status = solver.Solve(m)
        self.n_solves += 1
        if status == cp_model.INFEASIBLE:
            return None
        if status == cp_model.MODEL_INVALID:  # pragma: no cover - a bug in build()
            raise AssertionError(m.Validate())
        if status == cp_model.UNKNOWN:
            self.optimal = False
            return None
        if status != cp_model.OPTIMAL:
            self.optimal = False
        goal = kw.get("goal", "n")
        if not any(kw.get(c) is not None for c in ("interval_max", "latency_max", "tb_max")):
            self.proxy_bound[goal] = max(self.proxy_bound.get(goal, -math.inf), float(solver.BestObjectiveBound()))
        stage_of = [next(k for k in range(self.K) if solver.Value(x[u][k])) for u in range(self.U)]
        ver = [next(v for v in range(len(y[u])) if solver.Value(y[u][v])) for u in range(self.U)]
        return stage_of, ver

    def lower_bound(self, goal: str) -> float | None:
        """A proven lower bound of the true value of ``goal`` (``n``: boards; ``bottleneck``,
        ``latency``: microseconds) from the solver's bound of its rounded proxy objective.

        Each proxy weight ``w`` stands for an exact rate ``r`` (picoseconds per byte quantum, per
        latency quantum, per stage); every term of the true value is at least ``min(1, r / w)`` times
        its proxy term, and a rounded-down constant is at most one proxy unit below the exact one."""
        raw = self.proxy_bound.get(goal)
        if raw is None:
            return self.fixed_interval if goal == "bottleneck" else None
        if goal == "n":
            return float(math.ceil(raw - 1e-6))
        link = self.board.link
        rates = {"b": link.transfer_us(1.0 / self.bq) * TIME_SCALE,
                 "f": self.board.cycles_to_us(1.0 / self.lq) * TIME_SCALE,
                 "x": self.board.cycles_to_us(self.batch / self.lq) * TIME_SCALE,
                 "n": self.lat_per_stage * TIME_SCALE}
        w_b, w_f, w_x, a_n, _ = self._weights()
        weights = {"b": w_b, "f": w_f, "x": w_x, "n": a_n}

        def ratio(key: str) -> float:
            return min(1.0, rates[key] / weights[key]) if weights[key] else 1.0

        if goal == "bottleneck":
            return max(self.fixed_interval, (min(ratio("b"), ratio("f")) * raw - 1.0) / TIME_SCALE)
        f = min(ratio("b"), ratio("x"), ratio("n"))
        return self.lat_in + max(0.0, f * raw) / TIME_SCALE

    # ------------------------------------------------------------------ exact evaluation
    def evaluate(self, sol: Sol) -> PipelineMetrics:
        stage_of, ver = sol
        return evaluate(stage_of, [self.vers[u][v] for u, v in enumerate(ver)], self.tensors, self.board, self.shell,
                        self.batch)[2]

    def exact(self, sol: Sol) -> tuple[int, float, int]:
        """(stages, bottleneck_us, TB in byte quanta) of a solution, as the metrics price it."""
        stage_of, _ = sol
        _, which = link_loads(stage_of, self.tensors)
        return max(stage_of) + 1, self.evaluate(sol).bottleneck_us, sum(self.tb[i] for w in which for i in w)

    def exact_latency(self, sol: Sol) -> float:
        return self.evaluate(sol).latency_us

    def _stop(self, value: float, best: float, what: str) -> None:
        """A refinement found no strict improvement: fine within the tie tolerance (the rational
        latency bound and the floating-point formula differ by rounding); otherwise a bug."""
        if value > _tie(best):  # pragma: no cover - the exact bounds forbid it
            raise AssertionError(f"refinement did not improve the {what} ({value} >= {best})")

    def min_latency(self, **kw: Any) -> tuple[float, Sol] | None:
        """Exact smallest latency under the constraints ``kw`` (no ``latency_max``), and a plan."""
        hint = kw.pop("hint", None)
        sol = self.solve(goal="latency", hint=hint, **kw)
        if sol is None:
            return None
        best = self.exact_latency(sol)
        limit = best
        # fractional latency cycles are counted in quanta: the bound may then admit a plan that is
        # not better by up to half a quantum per unit; such a plan tightens the bound by that much
        slack = self.board.cycles_to_us(0.5 * self.U * self.batch / self.lq) if self.lq > 1 else 0.0
        for _ in range(_MAX_REFINE):
            better = self.solve(goal="latency", latency_max=limit, lat_strict=True, hint=sol, **kw)
            if better is None:
                return best, sol
            value = self.exact_latency(better)
            if value >= best:
                if slack == 0.0:
                    self._stop(value, best, "latency")
                limit = limit - slack - LATENCY_MARGIN * max(1.0, abs(limit))
                continue
            best, sol, limit = value, better, value
        self.optimal = False  # pragma: no cover - each round strictly improves; a safety stop
        return best, sol

    def min_bottleneck(self, start: Sol | None = None, **kw: Any) -> tuple[float, Sol] | None:
        """Exact smallest bottleneck under the constraints ``kw`` (no ``interval_max``), and a plan.

        With ``start`` (a plan that meets ``kw``) the search starts from it instead of the proxy
        objective's first solve: each solve then only asks for a strictly smaller bottleneck, which the
        exact interval constraints prune hard. A plan at :attr:`fixed_interval` (the per-frame cost and
        the source's link, which every plan pays) is optimal without a solve."""
        hint = kw.pop("hint", None)
        if start is not None:
            sol = start
        else:
            sol = self.solve(goal="bottleneck", hint=hint, **kw)
            if sol is None:
                return None
        best = self.exact(sol)[1]
        for _ in range(_MAX_REFINE):
            if best <= self.fixed_interval:  # the floor of every plan: nothing is strictly below it
                return best, sol
            better = self.solve(goal="bottleneck", interval_max=best, strict=True, hint=sol, **kw)
            if better is None:
                return best, sol
            value = self.exact(better)[1]
            if value >= best:
                self._stop(value, best, "bottleneck")
                return best, sol
            best, sol = value, better
        self.optimal = False  # pragma: no cover - each round strictly improves; a safety stop
        return best, sol


def in_forced_order(n_units: int, tensors: Sequence[Tensor]) -> bool:
    """Whether every unit reads the one before it. Links only go forward, so every plan's stages are
    then runs of consecutive units: a chain, whose cut ``c`` carries every tensor made before unit
    ``c`` and read from unit ``c`` on, or sent to the sink (:func:`order_cuts`). A residual MLP or
    ResNet is such a model."""
    reads_previous = {v for t in tensors if t.producer >= 0 for v in t.consumers if v == t.producer + 1}
    return all(v in reads_previous for v in range(1, n_units))


def order_cuts(n_units: int, tensors: Sequence[Tensor]) -> tuple[list[float], list[float], list[bool]]:
    """Per cut ``c`` in ``0 .. U`` of a model in forced order (:func:`in_forced_order`): the bytes and
    values per sample of the tensors crossing it (made before unit ``c``; read by unit ``c`` or later, or
    a model output: :func:`link_loads` for stages that are runs), and whether it may be a link (at most
    one wire type crosses it)."""
    typed = len({t.type for t in tensors if t.type}) > 1
    n_bytes, n_values, ok = [], [], []
    for c in range(n_units + 1):
        crossing = [t for t in tensors if t.producer < c and (t.output or max(t.consumers, default=-1) >= c)]
        n_bytes.append(sum(t.n_bytes for t in crossing))
        n_values.append(sum(t.n_values for t in crossing))
        ok.append(not typed or len({t.type for t in crossing if t.type}) <= 1 or c in (0, n_units))
    return n_bytes, n_values, ok


def _partition_in_order(versions: Sequence[Sequence[Cost]], tensors: Sequence[Tensor], board: Board, cap: float,
                        shell: Cost, objective: str, max_boards: int | None, n_stages: int | None,
                        names: Sequence[str], batch: int, started: float, budget_s: float) -> DagPartition | None:
    """The optimal partition of a model in forced order by the exact joint chain DP
    (:func:`split4ml.plan.joint.solve_joint`, which brute-force tests check), priced by the same
    formulas. None as soon as that DP would have to round a Pareto front, or after ``budget_s`` seconds
    (long stages of many versions, e.g. the fewest boards: CP-SAT is then the faster way to a proof),
    or when it finds no plan (CP-SAT then decides, with its own messages)."""
    from .joint import Abandoned, BoardPool, solve_joint

    n = len(versions)
    n_bytes, n_values, ok = order_cuts(n, tensors)
    limit = n if max_boards is None else min(n, max_boards)
    pool = BoardPool(types=(board,), counts=(limit,), shells=(shell,))
    try:
        res = solve_joint([[[c] for c in vs] for vs in versions], n_bytes[0], n_bytes[1:], pool, cap,
                          objective=objective, max_boards=max_boards, n_stages=n_stages, unit_names=names,
                          values_in=n_values[0], values_out=n_values[1:], batch=batch, cut_ok=ok, exact_only=True,
                          give_up_at=time.monotonic() + budget_s)
    except (InfeasibleError, Abandoned):
        return None
    if res.rounded:  # pragma: no cover - exact_only raises first
        return None
    stage_of = [k for k, (i, j) in enumerate(res.ranges) for _ in range(i, j)]
    ver = list(res.choice)
    costs, loads, metrics = evaluate(stage_of, [versions[u][v] for u, v in enumerate(ver)], tensors, board, shell,
                                     batch)
    _, which = link_loads(stage_of, tensors)
    value = objective_key(metrics, res.n_stages, objective)[0]
    return DagPartition(stage_of=tuple(stage_of), version_of=tuple(ver),
                        stage_units=tuple(tuple(range(i, j)) for i, j in res.ranges), stage_costs=tuple(costs),
                        link_bytes=tuple(loads), link_tensors=tuple(tuple(w) for w in which), metrics=metrics,
                        objective=objective, optimal=True, solve_s=time.monotonic() - started, n_solves=0,
                        bound=value, solver=ORDER_DP)


def _check_start(start: tuple[Sequence[int], Sequence[int]] | None, versions: Sequence[Sequence[Cost]],
                 tensors: Sequence[Tensor], board: Board, cap: float, shell: Cost, n_lo: int,
                 n_hi: int) -> Sol | None:
    """``start`` as a solution of the problem, or None when there is none or it breaks a rule of the
    model: its shape, the stages used (``0 .. n-1``, ``n_lo <= n <= n_hi``), links forward only, every
    stage under the cap, one wire type per link."""
    if start is None:
        return None
    stage_of, ver = [int(k) for k in start[0]], [int(v) for v in start[1]]
    if len(stage_of) != len(versions) or len(ver) != len(versions):
        return None
    if any(not 0 <= v < len(vs) for v, vs in zip(ver, versions, strict=True)) or min(stage_of) != 0:
        return None
    n = max(stage_of) + 1
    if set(stage_of) != set(range(n)) or not n_lo <= n <= n_hi:
        return None
    if any(t.producer >= 0 and stage_of[t.producer] > stage_of[v] for t in tensors for v in t.consumers):
        return None
    costs, _, _ = evaluate(stage_of, [versions[u][v] for u, v in enumerate(ver)], tensors, board, shell)
    if not all(c.fits(board, cap) for c in costs):
        return None
    _, which = link_loads(stage_of, tensors)
    if any(len({tensors[i].type for i in w if tensors[i].type}) > 1 for w in which):
        return None
    return stage_of, ver


def start_versions(costs: Sequence[Cost], versions: Sequence[Sequence[Cost]]) -> list[int] | None:
    """For a plan priced with ``costs`` (one per unit, e.g. the two-step settings), a version of every
    unit that is at least as good in every resource and in latency (the least-latency such version),
    so the same stages keep fitting and no interval grows; None when some unit has none."""
    figures = (*RESOURCES, "latency_cycles")
    out = []
    for c, vs in zip(costs, versions, strict=True):
        ok = [v for v, x in enumerate(vs) if all(float(getattr(x, f)) <= float(getattr(c, f)) for f in figures)]
        if not ok:
            return None
        out.append(min(ok, key=lambda v: (float(vs[v].latency_cycles), v)))
    return out


def _validate(unit_costs: Sequence[Cost], tensors: Sequence[Tensor], objective: str, cap: float,
              max_boards: int | None, n_stages: int | None) -> None:
    n = len(unit_costs)
    if n == 0:
        raise PlanError("the model has no units (layers) to place on boards")
    check_options(objective, cap, max_boards, n_stages)
    for i, c in enumerate(unit_costs):
        vals = [getattr(c, r) for r in RESOURCES] + [c.latency_cycles, c.ii_cycles]
        if any(v < 0 for v in vals):
            raise ValueError(f"unit {i} has a negative cost {c}; costs must be non-negative")
    for t in tensors:
        if t.n_bytes < 0:
            raise ValueError(f"tensor {t.name or t.producer} has negative bytes {t.n_bytes}")
        if not -1 <= t.producer < n:
            raise ValueError(f"tensor {t.name!r}: producer {t.producer} is not a unit index or -1")
        for v in t.consumers:
            if not t.producer < v < n:
                raise ValueError(f"tensor {t.name or t.producer}: consumer {v} must be a unit after its producer "
                                 f"{t.producer} (units are in topological order)")
    if not any(t.output for t in tensors):
        raise ValueError("no tensor is a model output; mark the model's output tensor(s) with output=True")


def partition_dag(unit_costs: Sequence[Cost | Sequence[Cost]], tensors: Sequence[Tensor], board: Board, cap: float,
                  objective: str = "throughput", max_boards: int | None = None, n_stages: int | None = None,
                  unit_names: Sequence[str] | None = None, shell: Cost | None = None,
                  time_limit_s: float = DEFAULT_TIME_LIMIT_S, workers: int = 1,
                  isolate: bool | None = None, batch: int = DEFAULT_BATCH,
                  start: tuple[Sequence[int], Sequence[int]] | None = None,
                  order_dp: bool = True) -> DagPartition:
    """Assign the units of a DAG to pipeline stages on ``board`` s, optimally for ``objective``.

    Args:
        unit_costs: cost of each unit (no shell), in topological order; or, for a unit that has
            several *versions* (reuse factor, strategy), the list of their costs: the solver picks
            one per unit jointly with the stages (``DagPartition.version_of``).
        tensors: the tensors between units, from the host and to the sink (:class:`Tensor`).
        board: the board type of every stage.
        cap: fraction (0, 1] of each board resource a stage may use.
        objective: ``throughput``, ``latency`` or ``boards`` (see the module docstring).
        max_boards: at most this many stages; ``n_stages``: exactly this many.
        unit_names: for error messages.
        shell: board shell cost; default the catalogue's.
        time_limit_s: wall-clock budget for all solves; past it the best plan found is returned with
            ``optimal=False`` (a :class:`PlanError` if none was found).
        workers: CP-SAT search workers (threads).
        isolate: solve in a child Python process. OR-Tools' CP-SAT crashes (SIGSEGV) in a process that
            imported TensorFlow before it (google/or-tools#3230: the two link different protobuf/absl
            builds), so by default (``None``) the solve runs in a child process exactly when that
            happened (:func:`cpsat_in_process_safe`); ``SPLIT4ML_CPSAT_ISOLATE=1``/``0`` forces it.
        start: a known plan, ``(stage of every unit, version of every unit)``, e.g. the two-step plan
            (:func:`start_versions`): every solve is hinted with it, and the throughput and boards
            objectives search from it for a strictly better bottleneck (:meth:`_Problem.min_bottleneck`).
            It changes how fast the optimum is found and proven, not the optimum. A start that breaks a
            rule (a stage over the cap, a link that goes back, two wire types on a link, the board
            limits) is not used.
        order_dp: give units in forced order to the chain DP first (above). The child process of an
            isolated solve is told not to: its parent has already tried.

    Raises:
        InfeasibleError: a unit does not fit one board alone (named, with the resources over the
            cap), or the units need more boards than allowed.
    """
    if isolate is None:
        flag = os.environ.get("SPLIT4ML_CPSAT_ISOLATE", "")
        isolate = flag == "1" or (flag != "0" and not cpsat_in_process_safe())
    started = time.monotonic()
    versions = [[c] if isinstance(c, Cost) else list(c) for c in unit_costs]
    if any(not vs for vs in versions):
        raise ValueError("every unit needs at least one version (cost)")
    _validate([vs[0] for vs in versions], tensors, objective, cap, max_boards, n_stages)
    for u, vs in enumerate(versions):
        for c in vs[1:]:
            if any(getattr(c, r) < 0 for r in (*RESOURCES, "latency_cycles", "ii_cycles")):
                raise ValueError(f"unit {u} has a version with a negative cost {c}; costs must be non-negative")
    U = len(versions)
    names = [str(x) for x in unit_names] if unit_names is not None else [f"unit {i}" for i in range(U)]
    sh = shell if shell is not None else shell_cost(board)
    if not sh.fits(board, cap):
        over = ", ".join(f"{r} {100 * v:.0f}%" for r, v in sh.overflow(board, cap).items())
        raise InfeasibleError(f"the {board.name} board shell alone exceeds cap {cap:g} ({over} of the allowed "
                              "amount); raise --cap or correct the board's shell figures")
    bad = [(names[u], sh + min(vs, key=lambda c: (sh + c).max_utilization(board)))
           for u, vs in enumerate(versions) if not any((sh + c).fits(board, cap) for c in vs)]
    if bad:
        raise InfeasibleError(_unit_overflow_message(bad, board, cap, note=""))
    if n_stages is not None and n_stages > U:
        raise InfeasibleError(f"asked for exactly {n_stages} stages but the model has only {U} units (layers with "
                              f"their activations); use at most {U} boards")
    if order_dp and in_forced_order(U, tensors):  # every plan is a chain of runs: the exact chain DP decides
        done = _partition_in_order(versions, tensors, board, cap, sh, objective, max_boards, n_stages, names,
                                   batch, started, ORDER_DP_SHARE * time_limit_s)
        if done is not None:
            return done
    if isolate:
        return _solve_in_child(dict(unit_costs=list(unit_costs), tensors=list(tensors), board=board, cap=cap,
                                    objective=objective, max_boards=max_boards, n_stages=n_stages,
                                    unit_names=None if unit_names is None else list(unit_names), shell=shell,
                                    time_limit_s=max(time_limit_s - (time.monotonic() - started), 1e-3),
                                    workers=workers, batch=batch, order_dp=False,
                                    start=None if start is None else (list(start[0]), list(start[1]))))
    limit = min(U, max_boards) if max_boards is not None else U
    K = n_stages if n_stages is not None else limit
    deadline = time.monotonic() + time_limit_s
    problems: list[_Problem] = []

    def problem(n_slots: int) -> _Problem:
        problems.append(_Problem(versions, tensors, board, cap, sh, n_slots, deadline, workers, batch))
        return problems[-1]

    prob = problem(K)

    lo, hi = (n_stages, n_stages) if n_stages is not None else (1, limit)
    incumbent = _check_start(start, versions, tensors, board, cap, sh, lo, hi)
    first = prob.solve(n_lo=lo, n_hi=hi, goal="n", hint=incumbent)
    if first is None:
        if not prob.optimal:
            raise TimeLimitError(f"no plan found within the time limit ({time_limit_s:g} s); raise it (--time-limit)")
        fewest = problem(U).solve(n_lo=1, n_hi=U, goal="n") if K < U else None
        need = f"at least {max(fewest[0]) + 1}" if fewest is not None else "more"
        if n_stages is not None:
            raise InfeasibleError(f"cannot use exactly {n_stages} {board.name} boards under cap {cap:g}: the model "
                                  f"needs {need}; ask for another stage count, or make the layers smaller "
                                  "(reuse factor, precision)")
        raise InfeasibleError(
            f"the model needs {need} {board.name} boards under cap {cap:g}, but at most {max_boards} are allowed; "
            "allow more boards, raise the cap, use larger reuse factors or lower precision, or pick a bigger board")
    n_min = max(first[0]) + 1

    def least_latency(small: _Problem, n: int, thr: float, hint: Sol) -> Sol:
        """The plan of least latency with ``n`` stages and every interval <= ``thr``."""
        got = small.min_latency(n_lo=n, n_hi=n, interval_max=thr, hint=hint)
        return got[1] if got is not None else hint

    # Every step keeps the best plan so far (``sol``), so a solve stopped by the time limit leaves a
    # valid plan (then ``optimal`` is False).
    sol = first
    if objective == "throughput":
        found = prob.min_bottleneck(n_lo=lo, n_hi=hi, start=incumbent)
        if found is not None:
            thr = _tie(found[0])
            sol = prob.solve(n_lo=lo, n_hi=hi, interval_max=thr, goal="n", hint=found[1]) or found[1]
            sol = least_latency(prob, max(sol[0]) + 1, thr, sol)
    elif objective == "boards":
        n = n_min
        small = problem(n) if n < K else prob  # n boards need only n slots
        found = small.min_bottleneck(n_lo=n, n_hi=n, start=incumbent if incumbent and max(incumbent[0]) + 1 == n else None)
        if found is not None:
            sol = least_latency(small, n, _tie(found[0]), found[1])
    else:
        # a plan with more stages than the latency of a known plan allows cannot win: fewer slots
        known = prob.exact_latency(first)
        cap_n = max([k for k in range(n_min, hi + 1) if prob.latency_us(k, 0, prob.lc_min) <= _tie(known)],
                    default=n_min)
        small = problem(cap_n) if cap_n < K else prob
        lo_n, hi_n = max(lo, n_min), min(hi, cap_n)
        found = small.min_latency(n_lo=lo_n, n_hi=hi_n, hint=incumbent if incumbent and max(incumbent[0]) + 1 <= cap_n else first)
        if found is not None:
            thr = _tie(found[0])
            sol = small.solve(n_lo=lo_n, n_hi=hi_n, latency_max=thr, goal="n", hint=found[1]) or found[1]
            n = max(sol[0]) + 1
            found = small.min_bottleneck(n_lo=n, n_hi=n, latency_max=thr, hint=sol)
            if found is not None:
                sol = found[1]

    stage_of, ver = sol
    costs, loads, metrics = evaluate(stage_of, [versions[u][v] for u, v in enumerate(ver)], tensors, board, sh, batch)
    _, which = link_loads(stage_of, tensors)
    stage_units = tuple(tuple(u for u in range(U) if stage_of[u] == k) for k in range(max(stage_of) + 1))
    optimal = all(p.optimal for p in problems)
    value = objective_key(metrics, len(stage_units), objective)[0]
    goal = {"throughput": "bottleneck", "latency": "latency", "boards": "n"}[objective]
    bounds = [b for b in (p.lower_bound(goal) for p in problems) if b is not None]
    bound = value if optimal else (min(max(bounds), value) if bounds else None)
    return DagPartition(stage_of=tuple(stage_of), version_of=tuple(ver), stage_units=stage_units,
                        stage_costs=tuple(costs),
                        link_bytes=tuple(loads), link_tensors=tuple(tuple(w) for w in which), metrics=metrics,
                        objective=objective, optimal=optimal,
                        solve_s=time.monotonic() - started, n_solves=sum(p.n_solves for p in problems),
                        bound=bound)


# --------------------------------------------------------------------------- child process
_CP_MODEL = "ortools.sat.python.cp_model"


def cpsat_in_process_safe() -> bool:
    """True when CP-SAT can run in this process: TensorFlow is not loaded (then OR-Tools is loaded
    now, so that it comes first), or OR-Tools was loaded before it (``sys.modules`` keeps import
    order). Import this early (``import_cpsat_first``) to keep solves in-process."""
    if "tensorflow" not in sys.modules:
        import_cpsat_first()
        return True
    order = list(sys.modules)
    return _CP_MODEL in sys.modules and order.index(_CP_MODEL) < order.index("tensorflow")


def import_cpsat_first() -> None:
    """Load OR-Tools' CP-SAT now, before anything loads TensorFlow (see :func:`partition_dag`, ``isolate``)."""
    if "tensorflow" not in sys.modules:
        try:
            import ortools.sat.python.cp_model  # noqa: F401
        except ImportError:  # reported when a solve needs it
            pass


def _solve_in_child(kwargs: dict[str, Any]) -> DagPartition:
    """:func:`partition_dag` in a fresh Python (``python -m split4ml.plan.dag``): arguments and the
    result (or the exception) go through pickle on stdin/stdout."""
    started = time.monotonic()
    env = {**os.environ, "SPLIT4ML_CPSAT_ISOLATE": "0"}
    try:
        proc = subprocess.run([sys.executable, "-m", "split4ml.plan.dag"], input=pickle.dumps(kwargs),
                              capture_output=True, env=env, timeout=float(kwargs["time_limit_s"]) + 120.0)
    except subprocess.TimeoutExpired as exc:
        raise PlanError(f"the CP-SAT partitioner did not finish within {kwargs['time_limit_s']:g} s + 120 s") from exc
    try:
        status, value = pickle.loads(proc.stdout)
    except Exception as exc:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise PlanError(f"the CP-SAT partitioner child process failed (exit code {proc.returncode}): {tail}") from exc
    if status == "error":
        raise value
    return dataclasses.replace(value, solve_s=time.monotonic() - started)


def _child_main() -> None:
    kwargs = pickle.loads(sys.stdin.buffer.read())
    try:
        out: tuple[str, Any] = ("ok", partition_dag(**kwargs, isolate=False))
    except Exception as exc:  # sent back to the parent, which raises it
        out = ("error", exc)
    sys.stdout.buffer.write(pickle.dumps(out))
    sys.stdout.buffer.flush()


# --------------------------------------------------------------------------- from a Graph
def graph_problem(graph: Graph, settings: Mapping[str, LayerSettings], estimator: Estimator, build: BuildSettings,
                  board: Board) -> tuple[list[tuple[Layer, ...]], list[Cost], list[Tensor]]:
    """The units of ``graph`` (:meth:`Graph.units`), their costs (sum of the estimator's layer costs, no
    shell) and the tensors between them: one per layer read outside its unit or a model output,
    ``n_out x storage_bytes`` of its type (the producer's result type; the model input's is
    ``build.input_precision``), as :func:`split4ml.stages.link_bytes` prices a link."""
    units = graph.units()
    unit_of = {lyr.name: i for i, unit in enumerate(units) for lyr in unit}
    unit_of[graph.input.name] = -1
    costs = [layers_cost(estimator, unit, settings, build.io_type, board) for unit in units]
    tensors = []
    for lyr in graph.layers:
        p = unit_of[lyr.name]
        readers = sorted({unit_of[c.name] for c in graph.consumers(lyr.name)} - {p})
        output = lyr.name in graph.outputs
        if not readers and not output:
            continue
        wtype = build.input_precision if p < 0 else settings[lyr.name].precision.result
        tensors.append(Tensor(p, tuple(readers), float(lyr.n_out * wtype.storage_bytes), output=output,
                              name=lyr.name, type=str(wtype), n_values=float(lyr.n_out)))
    return units, costs, tensors


def graph_versions(graph: Graph, settings: Mapping[str, LayerSettings], estimator: Estimator, build: BuildSettings,
                   board: Board, cap: float, *, reuse_factor: int | None = None, strategy: str | None = None,
                   overrides: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[list[list[Any]], list[str]] | None:
    """The versions of every unit of ``graph`` (:func:`split4ml.plan.versions.unit_versions`, the
    same pruning and the same budget as for chains, :func:`~split4ml.plan.versions.limit_versions`),
    and the names of the units that lost some to the cap (the plan is then not proven optimal). A
    unit whose reuse factor the user fixed (``reuse_factor``, or ``overrides[layer]['reuse_factor']``)
    keeps its settings, a strategy the user fixed limits its versions to it. ``None`` when some unit
    has no version that fits ``board`` alone."""
    from ..ir import COMPUTE_KINDS
    from .versions import limit_versions, unit_versions

    out = []
    units = graph.units()
    for unit in units:
        compute = next((lyr for lyr in unit if lyr.kind in COMPUTE_KINDS), None)
        user = (overrides or {}).get(compute.name, {}) if compute is not None else {}
        free = compute is not None and reuse_factor is None and user.get("reuse_factor") is None
        vs = unit_versions(unit, settings, [board], cap, estimator, build.io_type, free=free,
                           strategy=user.get("strategy", strategy))
        if not vs:
            return None
        out.append(vs)
    kept, capped = limit_versions(out, [board], [estimator.shell_cost(board)], cap)
    return kept, [units[u][0].name for u in capped]


def partition_graph(graph: Graph, settings: Mapping[str, LayerSettings], estimator: Estimator,
                    build: BuildSettings, board: Board, cap: float, objective: str = "throughput",
                    max_boards: int | None = None, n_stages: int | None = None,
                    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
                    versions: Sequence[Sequence[Any]] | None = None, batch: int = DEFAULT_BATCH,
                    start: tuple[DagPartition, Mapping[str, LayerSettings]] | None = None,
                    ) -> tuple[DagPartition, list[tuple[str, ...]]]:
    """:func:`partition_dag` of a model with skip connections under ``settings``; also returns the layer
    names of every stage, in graph order (what :func:`split4ml.plan.api.assemble` takes).

    With ``versions`` (per unit, :class:`~split4ml.plan.versions.UnitVersion` s for ``board``, e.g.
    from :func:`graph_versions`) every unit's version is chosen jointly with the stages; the settings
    of the versions chosen are :func:`chosen_settings`. Versions change reuse factors and strategies,
    never precisions, so the tensors between units are those of ``settings``.

    ``start``: a partition of the same graph and the settings it was made under (the two-step plan),
    which the joint search starts from (``partition_dag``'s ``start``): each unit takes the version
    :func:`start_versions` maps its cost to. Ignored without ``versions``.

    Raises:
        PlanError: the estimator is not additive (it prices whole boards, e.g. rule4ml).
        InfeasibleError: as :func:`partition_dag`.
    """
    from ..estimate.calibrate import is_additive

    if not is_additive(estimator):
        raise PlanError(f"the {getattr(estimator, 'name', '?')} estimator prices whole boards, not layers; "
                        f"planning model {graph.name!r} (skip connections) needs an additive estimator: use "
                        "--estimator analytic, or a linear calibration of it")
    units, costs, tensors = graph_problem(graph, settings, estimator, build, board)
    known: tuple[list[int], list[int]] | None = None
    if versions is not None:
        if len(versions) != len(units):
            raise ValueError(f"{len(versions)} version lists for {len(units)} units")
        costs = [[v.costs[0] for v in vs] for vs in versions]
        if start is not None:
            mapped = start_versions(graph_problem(graph, start[1], estimator, build, board)[1], costs)
            known = None if mapped is None else (list(start[0].stage_of), mapped)
    part = partition_dag(costs, tensors, board, cap, objective=objective, max_boards=max_boards, n_stages=n_stages,
                         unit_names=[u[0].name for u in units], shell=estimator.shell_cost(board),
                         time_limit_s=time_limit_s, batch=batch, start=known)
    order = {lyr.name: i for i, lyr in enumerate(graph.layers)}
    stage_layers = [tuple(sorted((lyr.name for u in members for lyr in units[u]), key=order.__getitem__))
                    for members in part.stage_units]
    return part, stage_layers


def chosen_settings(settings: Mapping[str, LayerSettings], versions: Sequence[Sequence[Any]],
                    part: DagPartition) -> dict[str, LayerSettings]:
    """``settings`` with every unit's layers set as the version the partition chose."""
    out = dict(settings)
    for u, v in enumerate(part.version_of):
        out.update(versions[u][v].settings)
    return out


if __name__ == "__main__":  # the child process of _solve_in_child; run in the importable module so that
    from split4ml.plan import dag as _module  # what it pickles names split4ml.plan.dag, not __main__

    _module._child_main()
