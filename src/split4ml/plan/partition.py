"""Exact layer-wise partition of a chain of units onto a pipeline of identical boards.

A *unit* is a layer with the standalone activation layers after it (:meth:`Graph.units`); a cut is
allowed only between units. A partition cuts the chain ``0 .. U-1`` into contiguous stages, one
board each. The cost of a stage is the board shell plus the sum of its units (:class:`Cost`
addition: resources and latency add, the initiation interval is the largest), unless a
``segment_cost`` callable gives whole-stage costs.

The performance model is :mod:`split4ml.plan.metrics`, priced for a chain by :class:`ChainPrice`: a
stage ``[i, j)`` reads the tensor at cut ``i`` and writes the one at cut ``j``; its interval is the
largest of its fabric interval (AXI wrapper reads and writes included), the link time of what it
receives and sends, and its per-frame cost per sample; its latency is its frame's trip. The source
and the sink use the links of the first and last stage, so a single board type needs no extra step.

A stage is feasible when every resource fits under ``cap`` x the board's capacity
(:meth:`Cost.fits`).

Objectives, each a lexicographic key (floating values tie within a relative 1e-9):

* ``throughput``: smallest bottleneck interval, then fewest stages, then lowest latency;
* ``latency``: lowest end-to-end latency, then fewest stages, then smallest bottleneck;
* ``boards``: fewest stages, then smallest bottleneck, then lowest latency.

The solution is exact. Every primitive is a dynamic programme over a table of the feasible stages
``[i, j)``, stored per end ``j`` as a row of starts ``i = j-1-d`` (``d < W``, the longest feasible
stage), so each DP step is one numpy operation over a row or a whole layer:

* min-max DP (bottleneck), over the end index, or over (stages, end) when the stage count is bounded;
* min-sum DP (latency) and lexicographic (count, latency) DP, under a mask "interval <= best";
* for the latency objective's last key, bisection on the bottleneck value with an exact min-sum
  feasibility DP.

A greedy "fill each board as far as it goes" is not exact here: a stage's interval depends on the
bytes its last unit sends, so where to cut matters, not only how many units fit.

Costs: additive mode needs O(U log U) to find the feasible stages and O(U W) per DP pass (O(K U W)
for K-stage layered passes). A 500-unit chain onto 64 boards takes a few tens of milliseconds;
``benchmarks/planner_scaling.py`` measures it.

**Intra-layer splits.** When some unit has :class:`SplitOption` s (``options``), a pipeline step
may be a *split group*: the unit run as ``k`` shards on ``k`` boards in parallel, its tail (merge
node, softmax) at the start of the next step or on an extra merge board. Boards (``k`` per group)
and steps are then counted apart, the objectives' "fewest stages" becomes "fewest boards", the
stage before a neuron group pays for sending its output ``k`` times, and the solver is the exact
DP over a state graph in :mod:`split4ml.plan.partition_split`. Without options the plain solver
above runs, unchanged.

This module is the entry point, :func:`partition_chain`; the tables, prices and dynamic programmes it
runs are in :mod:`split4ml.plan.chain`, and the solver with split groups in
:mod:`split4ml.plan.partition_split`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..boards import Board
from ..errors import InfeasibleError
from ..estimate.base import Cost
from .chain import (
    _INF,
    _RES_LABEL,
    ChainPrice,
    Partition,
    SplitOption,
    _additive_table,
    _callable_table,
    _SegmentCache,
    _seq_count_sum,
    _solve_boards,
    _solve_latency,
    _solve_throughput,
    _unit_overflow_message,
    _validate,
    shell_cost,
)
from .metrics import DEFAULT_BATCH
from .partition_split import solve_with_splits


def partition_chain(unit_costs: Sequence[Cost], bytes_in: float, bytes_out: Sequence[float], board: Board,
                    cap: float, objective: str = "throughput", max_boards: int | None = None,
                    n_stages: int | None = None, unit_names: Sequence[str] | None = None,
                    segment_cost: Callable[[int, int], Cost] | None = None,
                    shell: Cost | None = None,
                    options: Sequence[Sequence[SplitOption]] | None = None, values_in: float = 0.0,
                    values_out: Sequence[float] | None = None, batch: int = DEFAULT_BATCH,
                    io_type: str = "io_parallel", in_place: Sequence[bool] | None = None) -> Partition:
    """Cut a chain of units into stages, one ``board`` each, optimally for ``objective``.

    With ``options``, a stage may also be a *split group*: one unit run as ``k`` parallel boards
    (:class:`SplitOption`); the solver then counts boards (``k`` per group) and pipeline steps apart,
    and stays exact (:mod:`split4ml.plan.partition_split`).

    Args:
        unit_costs: cost of each unit (layer plus its activations), without the board shell.
        bytes_in: bytes per sample of the model input (sent to the first board).
        bytes_out: bytes per sample each unit outputs (sent downstream if a stage ends there).
        board: the board type of every stage.
        cap: fraction (0, 1] of each board resource a stage may use.
        objective: ``throughput``, ``latency`` or ``boards`` (see the module docstring).
        max_boards: at most this many stages.
        n_stages: exactly this many stages.
        unit_names: names of the units for error messages (default ``unit 0``, ...).
        segment_cost: ``segment_cost(i, j)`` = full cost (shell included) of units ``[i, j)``; replaces
            the additive model (for non-additive estimators). Each stage is evaluated at most once,
            and only stages from a start up to the first one that does not fit.
        shell: cost of the board shell in additive mode; default the board catalogue's shell.
        values_in / values_out: values per sample of the model input and of each unit's output (what the
            boards' AXI wrappers read and write, one per clock); default none (no wrapper cycles).
        batch: samples per frame (per-frame costs and frame overhead are shared by a batch).
        io_type: the boards' hls4ml io type (how the wrapper overlaps its reads and writes).
        in_place: per unit, whether hls4ml computes it in place (an io_stream flatten): no stage may
            hold only such units (:class:`~split4ml.plan.chain.ChainPrice`).
        options: per unit, the ways it may be split across boards (may be empty). With splits,
            ``max_boards`` bounds the boards (a group of ``k`` counts ``k``), ``n_stages`` fixes the
            pipeline steps (a group counts one), and the objectives' "fewest stages" key becomes
            "fewest boards".

    Raises:
        InfeasibleError: no partition satisfies the resources and stage counts; the message names
            the units that do not fit and what would help, or the minimum number of boards.
    """
    additive = segment_cost is None
    _validate(unit_costs, bytes_out, objective, max_boards, n_stages, unit_names, cap, additive)
    n = len(unit_costs)
    names = [str(x) for x in unit_names] if unit_names is not None else [f"unit {i}" for i in range(n)]
    shell_c = shell if shell is not None else shell_cost(board)
    out_arr = np.asarray([float(b) for b in bytes_out])
    price = ChainPrice(board, float(bytes_in), out_arr, values_in, values_out, batch, io_type, in_place)
    if price.n_computing == 0:
        raise InfeasibleError("the model has no layer that computes something (only reshapes hls4ml makes in "
                              "place), so there is nothing to put on a board")

    seg = _SegmentCache(segment_cost) if segment_cost is not None else None
    if not shell_c.fits(board, cap) and seg is None:
        over = ", ".join(f"{_RES_LABEL[r]} {100 * v:.0f}%" for r, v in shell_c.overflow(board, cap).items())
        raise InfeasibleError(f"the {board.name} board shell alone exceeds cap {cap:g} ({over} of the allowed "
                              "amount); raise --cap or correct the board's shell figures")

    if options is not None and any(options):
        if len(options) != n:
            raise ValueError(f"options has {len(options)} entries for {n} units")
        return solve_with_splits(unit_costs, price, board, cap, objective, max_boards, n_stages,
                                 names, seg, shell_c, [tuple(o) for o in options])

    if n_stages is not None and n_stages > price.n_computing:
        m = price.n_computing
        relabel = (f"; the {n - m} flatten(s) hls4ml computes in place with {io_type} cannot be a board "
                   "alone") if m < n else ""
        raise InfeasibleError(
            f"asked for exactly {n_stages} stages but the model has only {m} units (layers with their "
            f"activations{relabel}), so at most {m} stages without intra-layer splits; use at most {m} boards")

    def stage_cost(i: int, j: int) -> Cost:
        if seg is not None:
            return seg(i, j)
        c = shell_c
        for u in unit_costs[i:j]:
            c = c + u
        return c

    tab = (_additive_table(unit_costs, shell_c, board, cap, price) if seg is None
           else _callable_table(n, seg, board, cap, price))

    bad = [(names[j - 1], stage_cost(j - 1, j)) for j in range(1, n + 1)
           if not tab.ok[j, 0] and price.buildable(j - 1, j)]
    if bad:
        raise InfeasibleError(_unit_overflow_message(bad, board, cap))

    min_count, _, _ = _seq_count_sum(tab, tab.ok)
    n_min = min_count[n]
    if n_min == _INF:  # only with a non-monotone segment_cost
        raise InfeasibleError(f"no partition of the {n} units into {board.name} stages fits under cap {cap:g}, "
                              "although every unit fits alone; the segment estimator is not monotone")
    n_min = int(n_min)
    limit = min(n, max_boards) if max_boards is not None else n
    if n_stages is None and n_min > limit:
        raise InfeasibleError(
            f"the model needs at least {n_min} {board.name} boards under cap {cap:g}, but at most {max_boards} "
            f"are allowed; allow {n_min} boards, raise the cap, use larger reuse factors or lower precision, "
            "or pick a bigger board")
    if n_stages is not None and n_stages < n_min:
        raise InfeasibleError(
            f"cannot use exactly {n_stages} {board.name} boards: the model needs at least {n_min} under "
            f"cap {cap:g}; ask for {n_min} or more stages, or make the layers smaller (reuse factor, precision)")

    lat_in = price.source_latency_us
    if objective == "throughput":
        bounds = _solve_throughput(tab, n_stages, limit)
    elif objective == "boards":
        bounds = _solve_boards(tab, n_stages if n_stages is not None else n_min)
    else:
        bounds = _solve_latency(tab, n_stages, limit, lat_in)
    if bounds is None:
        raise InfeasibleError(f"no partition into exactly {n_stages} {board.name} stages fits under cap {cap:g}")

    costs = tuple(stage_cost(i, j) for i, j in zip(bounds[:-1], bounds[1:], strict=True))
    metrics = price.metrics(costs, bounds)
    return Partition(bounds=bounds, stage_costs=costs, metrics=metrics, objective=objective)
