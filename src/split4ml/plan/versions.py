"""The *versions* of a unit: the hls4ml settings its compute layer may take, each with its cost.

The design-space planner (:mod:`split4ml.plan.joint`) picks one version per unit jointly with the
cut points and the boards. :func:`unit_versions` lists them:

* **Candidates.** Every reuse factor hls4ml keeps unchanged for the unit's compute layer
  (:func:`split4ml.estimate.hls_rules.valid_reuse_factors`, never one hls4ml would silently
  change), under the Latency and the Resource strategy (or only the strategy the user fixed), and
  at least ``min_reuse_factor``. A unit whose settings the user fixed (reuse factor, or a global
  reuse factor), or without a compute layer, has one version: its settings as they are.
* **Priced** per board type with the estimator (unit cost without the shell, as the partitioner
  adds it); a candidate that fits no board type alone (shell included, under the cap) is dropped.
* **Pruned.** A candidate is dropped when another one is at least as good in every figure the
  performance model reads, on every board type: LUT, FF, DSP, BRAM18, latency, and with ``io_stream``
  the II (with ``io_parallel`` a board's interval is ``n_in + latency + n_out`` cycles, so the II
  never matters; :mod:`split4ml.plan.metrics`). Such a candidate can never be needed. Equal figures
  keep the first (Latency before Resource, smaller reuse factor first).
* **Capped only when the problem is large** (:func:`limit_versions`). Every version left is kept
  while the model's units hold at most :data:`VERSION_BUDGET` of them together (divided by the
  number of board types of a mixed cluster), and the planner is
  then exact over every valid setting. Past that, a unit keeps :data:`MAX_VERSIONS`: the fastest
  (smallest II), the cheapest (smallest largest utilisation of the first board type), and the rest
  spread geometrically over the II range of the Pareto set. That bounds the planner's work, and the
  plan then says it is not proven optimal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..boards import RESOURCES, Board
from ..estimate import hls_rules
from ..estimate.base import Cost, Estimator, layers_cost
from ..ir import COMPUTE_KINDS, Layer
from ..settings import STRATEGIES, LayerSettings

#: Versions a unit keeps when the model's versions together pass :data:`VERSION_BUDGET`.
MAX_VERSIONS = 10
#: Every Pareto version of every unit is kept while they number at most this many in all (times the
#: board types of a mixed cluster). Measured (``benchmarks/planner_scaling.py``): on 30 Dense layers
#: (330 versions) keeping all costs no time; on 50 (575) about 1.5x; on 100 (1,090) 2-3x, where the
#: cap applies; the 30-layer chain on a 2-type cluster (660) took 57 s instead of 15 s.
VERSION_BUDGET = 600


@dataclass(frozen=True)
class UnitVersion:
    """One way to build a unit: settings of its layers, and its cost on each board type (no shell)."""

    settings: Mapping[str, LayerSettings]
    costs: tuple[Cost, ...]



def unit_versions(unit: Sequence[Layer], settings: Mapping[str, LayerSettings], boards: Sequence[Board], cap: float,
                  est: Estimator, io_type: str, *, free: bool, strategy: str | None = None,
                  min_reuse_factor: int = 1, max_versions: int | None = None) -> list[UnitVersion]:
    """The versions of ``unit`` on the board types ``boards`` (see the module docstring).

    Args:
        unit: the unit's layers (a layer and its activations).
        settings: current settings of at least the unit's layers (precisions; pinned values).
        boards: the board types of the cluster; costs come per type, in this order.
        cap: fraction (0, 1] of each board resource a stage may use.
        est: an additive estimator (``layer_cost``, ``shell_cost``).
        io_type: hls4ml io type.
        free: whether the planner may choose the compute layer's reuse factor and strategy.
        strategy: the strategy the user fixed, or None for both.
        min_reuse_factor: smallest reuse factor offered.
        max_versions: cap on the versions returned (see :func:`limit_versions`); None keeps every
            version that is not dominated.

    Returns:
        The versions, fastest first; empty when none fits any board type alone (shell included).
    """
    base = {lyr.name: settings[lyr.name] for lyr in unit}
    compute = [lyr for lyr in unit if lyr.kind in COMPUTE_KINDS]
    shells = [est.shell_cost(b) for b in boards]
    if not free or not compute:
        costs = tuple(layers_cost(est, unit, base, io_type, b) for b in boards)
        fits = any((sh + c).fits(b, cap) for sh, c, b in zip(shells, costs, boards, strict=True))
        return [UnitVersion(base, costs)] if fits else []
    layer = compute[0]
    cands: list[UnitVersion] = []
    for s in ([strategy] if strategy else list(STRATEGIES)):
        for rf in hls_rules.valid_reuse_factors(layer, s, io_type):
            if rf < min_reuse_factor:
                continue
            sets = {**base, layer.name: LayerSettings(reuse_factor=rf, strategy=s,
                                                      precision=base[layer.name].precision)}
            costs = tuple(layers_cost(est, unit, sets, io_type, b) for b in boards)
            if any((sh + c).fits(b, cap) for sh, c, b in zip(shells, costs, boards, strict=True)):
                cands.append(UnitVersion(sets, costs))
    if not cands:
        return []
    kept = _pareto(cands, io_type)
    kept.sort(key=lambda v: (v.costs[0].ii_cycles, v.costs[0].latency_cycles))
    if max_versions is not None and len(kept) > max_versions:
        kept = _cap(kept, boards, shells, cap, max_versions)
    return kept


def limit_versions(versions: Sequence[list[UnitVersion]], boards: Sequence[Board], shells: Sequence[Cost],
                   cap: float, budget: int | None = None,
                   max_versions: int = MAX_VERSIONS) -> tuple[list[list[UnitVersion]], list[int]]:
    """The versions a planner searches, and the units that lost some (see the module docstring).

    ``versions`` are every unit's undominated versions (:func:`unit_versions` without a cap). While
    they number at most ``budget`` in all (times the number of board types: a mixed cluster's solver
    prices each on every type) they are returned as they are; otherwise every unit with more
    than ``max_versions`` keeps ``max_versions`` of them, and its index is in the second list (the
    plan is then exact over the versions kept only). ``budget`` defaults to :data:`VERSION_BUDGET`.
    """
    # a cluster's solver prices every version on every board type: its work grows with both
    if sum(len(vs) for vs in versions) * len(boards) <= (VERSION_BUDGET if budget is None else budget):
        return [list(vs) for vs in versions], []
    out, capped = [], []
    for u, vs in enumerate(versions):
        if len(vs) > max_versions:
            out.append(_cap(list(vs), boards, shells, cap, max_versions))
            capped.append(u)
        else:
            out.append(list(vs))
    return out, capped


def _cap(kept: list[UnitVersion], boards: Sequence[Board], shells: Sequence[Cost], cap: float,
         k: int) -> list[UnitVersion]:
    fits = [[(sh + v.costs[t]).fits(b, cap) for v in kept] for t, (sh, b) in enumerate(zip(shells, boards,
                                                                                          strict=True))]
    return _spread(kept, boards, fits, k)


def _figures(v: UnitVersion, io_type: str) -> np.ndarray:
    figures = (*RESOURCES, "latency_cycles") + (("ii_cycles",) if io_type == "io_stream" else ())
    return np.array([float(getattr(c, f)) for c in v.costs for f in figures])


def _pareto(cands: list[UnitVersion], io_type: str) -> list[UnitVersion]:
    figs = np.array([_figures(v, io_type) for v in cands])
    out = []
    for a in range(len(cands)):
        le = (figs <= figs[a]).all(axis=1)
        lt = (figs < figs[a]).any(axis=1)
        same_before = le & ~lt & (np.arange(len(cands)) < a)  # equal figures: keep the first
        if (le & lt).any() or same_before.any():
            continue
        out.append(cands[a])
    return out


def _spread(kept: list[UnitVersion], boards: Sequence[Board], fits: list[list[bool]], k: int) -> list[UnitVersion]:
    """``k`` of the versions (sorted by II): the fastest and the cheapest, the fastest that fits each
    board type alone, then, taking the board types in turn, the versions nearest to a geometric
    spread over the II range of those that fit that type."""
    ii = np.array([max(float(v.costs[0].ii_cycles), 1e-9) for v in kept])
    cheapest = min(range(len(kept)), key=lambda i: (kept[i].costs[0].max_utilization(boards[0]), i))
    chosen = {0, cheapest}
    on_type = [[i for i in range(len(kept)) if f[i]] for f in fits]
    for idx in on_type:
        if idx and len(chosen) < k:
            chosen.add(idx[0])
    targets = [list(np.geomspace(ii[idx[0]], ii[idx[-1]], num=max(k, 2))) if idx else [] for idx in on_type]
    while len(chosen) < k and any(targets):
        for t, idx in enumerate(on_type):
            while targets[t] and len(chosen) < k:
                tgt = targets[t].pop(0)
                order = sorted(idx, key=lambda i, tgt=tgt: (abs(np.log(ii[i]) - np.log(tgt)), i))
                pick = next((i for i in order if i not in chosen), None)
                if pick is not None:
                    chosen.add(pick)
                    break
    return [kept[i] for i in sorted(chosen)]
