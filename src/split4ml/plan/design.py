"""The design-space planner for :func:`split4ml.plan.api.make_plan`: per-layer reuse factor and
strategy, chosen jointly with the cut points and the boards of a (possibly mixed) cluster.

:func:`plan_joint` lists each unit's versions (:mod:`split4ml.plan.versions`), solves the joint
problem exactly over them (:mod:`split4ml.plan.joint`), and returns the stages, their boards and
every layer's settings, ready for :func:`~split4ml.plan.api.assemble`. Settings the user fixed stay
fixed (such a unit has one version); a strategy the user fixed limits the versions to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..boards import Board
from ..errors import InfeasibleError, PlanError
from ..estimate.base import Estimator
from ..ir import COMPUTE_KINDS, Graph
from ..settings import BuildSettings, LayerSettings
from .chain import REL_TOL, chain_cuts
from .cluster import Cluster, homogeneous
from .joint import JointResult, solve_joint
from .metrics import DEFAULT_BATCH
from .versions import limit_versions, unit_versions


@dataclass(frozen=True)
class JointPlan:
    """What :func:`plan_joint` chose: every layer's settings, the layers and board of each stage."""

    settings: dict[str, LayerSettings]
    stage_layers: list[tuple[str, ...]]
    stage_boards: list[Board]
    result: JointResult
    n_versions: tuple[int, ...]
    #: names of the units whose versions were capped (:func:`~split4ml.plan.versions.limit_versions`):
    #: the plan is then optimal over the versions kept only
    capped: tuple[str, ...] = ()


def plan_joint(graph: Graph, settings: Mapping[str, LayerSettings], est: Estimator, build: BuildSettings, *,
               board: Board, cluster: Cluster | None, cap: float, objective: str, max_boards: int | None,
               n_stages: int | None, reuse_factor: int | None, strategy: str | None,
               overrides: Mapping[str, Mapping[str, Any]], version_budget: int | None = None,
               batch: int = DEFAULT_BATCH) -> JointPlan | None:
    """Plan ``graph`` with per-layer versions chosen jointly with the partition (module docstring).

    Returns ``None`` (one board type only) when the estimator is not additive, or some unit fits no
    board alone with any of its versions: the caller's split planner takes over (and reports what
    does not fit).

    Raises:
        InfeasibleError: one board type, and no choice of versions fits the stage/board limits (the
            message says how many boards the best choice needs); the caller's split planner may still
            find a plan, with more stages than units.
        PlanError: a cluster with a non-additive estimator.
        InfeasibleError: a cluster on which some unit fits no board alone.
        PlanError: a cluster with too few boards (the message names the file's ``boards`` field).
    """
    from ..estimate.calibrate import is_additive

    if not is_additive(est):
        if cluster is not None:
            raise PlanError(f"--cluster needs an additive estimator (analytic, or a linear calibration of it); "
                            f"{getattr(est, 'name', est)!r} prices whole boards only; plan with one --board type")
        return None
    units = graph.units()
    cl = cluster if cluster is not None else homogeneous(board, max_boards or len(units))
    types = cl.types
    versions = []
    for u in units:
        compute = next((lyr for lyr in u if lyr.kind in COMPUTE_KINDS), None)
        user = overrides.get(compute.name, {}) if compute is not None else {}
        free = compute is not None and reuse_factor is None and user.get("reuse_factor") is None
        vs = unit_versions(u, settings, types, cap, est, build.io_type, free=free,
                           strategy=user.get("strategy", strategy))
        if not vs:
            if cluster is None:
                return None
            raise InfeasibleError(
                f"layer {u[0].name!r} fits no board of the cluster ({', '.join(b.name for b in types)}) alone under "
                f"cap {cap:g} with any valid reuse factor and strategy; add a bigger board type to "
                f"{cl.source}, raise --cap, lower the precision, or plan with one --board type so that the "
                "planner may split the layer across boards")
        versions.append(vs)
    versions, capped = limit_versions(versions, types, [est.shell_cost(b) for b in types], cap, version_budget)
    cuts = chain_cuts(graph, units, settings, build)
    pool = cl.pool(shells=[est.shell_cost(b) for b in types])
    try:
        res = solve_joint([[v.costs for v in vs] for vs in versions], cuts.bytes_in, list(cuts.bytes_out), pool, cap,
                          objective=objective, max_boards=max_boards, n_stages=n_stages, batch=batch,
                          io_type=build.io_type, **cuts.solver_args())
    except InfeasibleError as exc:
        if cluster is not None:
            raise PlanError(f"{cl.source}: boards ({cl.describe()}): {exc}") from exc
        raise  # one board type: the caller's split planner may still find a plan (more stages than units)
    out = dict(settings)
    for u, v in enumerate(res.choice):
        out.update(versions[u][v].settings)
    stage_layers = [tuple(lyr.name for unit in units[i:j] for lyr in unit) for i, j in res.ranges]
    return JointPlan(settings=out, stage_layers=stage_layers, stage_boards=list(res.boards), result=res,
                     n_versions=tuple(len(vs) for vs in versions), capped=tuple(units[u][0].name for u in capped))


def objective_key(metrics: Any, n_boards: int, objective: str) -> tuple[float, float, float]:
    """The lexicographic key a plan is judged by (smaller is better; see :mod:`split4ml.plan.partition`)."""
    if objective == "throughput":
        return (metrics.bottleneck_us, float(n_boards), metrics.latency_us)
    if objective == "latency":
        return (metrics.latency_us, float(n_boards), metrics.bottleneck_us)
    return (float(n_boards), metrics.bottleneck_us, metrics.latency_us)


def better(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether key ``a`` is strictly better than ``b`` (values within a relative 1e-9 tie)."""
    for x, y in zip(a, b, strict=True):
        tol = REL_TOL * max(abs(x), abs(y)) + 1e-9
        if x < y - tol:
            return True
        if x > y + tol:
            return False
    return False
