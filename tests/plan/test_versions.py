"""Which versions (reuse factor x strategy) of each unit the planner searches (plan/versions.py).

Issue #14, 4a: a cap of 10 versions per unit lost the optimum on small chains. Versions are now dropped
only when another is at least as good in every figure the performance model reads, and capped only
when the whole model has more than ``VERSION_BUDGET`` of them, in which case the plan says so.
"""

from __future__ import annotations

import pytest
from test_joint import brute_force  # noqa: E402

from split4ml.boards import get_board
from split4ml.estimate.analytic import AnalyticEstimator
from split4ml.ir import COMPUTE_KINDS
from split4ml.plan import versions
from split4ml.plan.api import make_plan
from split4ml.plan.joint import BoardPool
from split4ml.plan.reuse import choose_settings
from split4ml.settings import BuildSettings

keras = pytest.importorskip("keras")

PYNQ = get_board("pynq-z2")


def _graph(widths, n_in, n_out):
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.networks import deep_mlp

    return graph_from_keras(deep_mlp(widths, n_in, n_out, seed=0))


def test_the_issues_one_board_plan_is_found_and_a_capped_search_says_it_is_unproven(monkeypatch):
    """deep_mlp((90, 90), 16, 10) on PYNQ-Z2: with 10 versions a unit the planner used 2 boards; a hand
    plan (fc1 RF 32 Resource, fc2 RF 90 Resource, fc3 RF 30 Latency) holds it on one, faster. Every
    version is now searched, and the planner finds that plan itself."""
    g = _graph((90, 90), 16, 10)
    p = make_plan(g, model="deep.keras", board=PYNQ, objective="throughput")
    got = {n: (s.reuse_factor, s.strategy) for n, s in p.settings.items() if g.layer(n).kind in COMPUTE_KINDS}
    assert p.n_boards == 1 and p.optimality.optimal
    assert got == {"fc1": (32, "Resource"), "fc2": (90, "Resource"), "fc3": (30, "Latency")}

    monkeypatch.setattr(versions, "VERSION_BUDGET", 0)  # as if the model were large: 10 versions a unit
    capped = make_plan(g, model="deep.keras", board=PYNQ, objective="throughput")
    assert capped.metrics.bottleneck_us > p.metrics.bottleneck_us * (1 + 1e-6)
    opt = capped.optimality
    assert not opt.optimal and opt.bound is None and opt.solver.startswith("exact DP (versions capped on ")
    assert capped.to_json()["optimal"] is False
    assert opt.describe().startswith("NOT proven optimal: exact DP (versions capped on ")
    assert "time limit" not in opt.describe()


def test_limit_versions_keeps_everything_within_the_budget():
    est = AnalyticEstimator()
    g = _graph((90, 90), 16, 10)
    settings = choose_settings(g, PYNQ, 0.85, est, BuildSettings())
    vs = [versions.unit_versions(u, settings, [PYNQ], 0.85, est, "io_parallel", free=True) for u in g.units()]
    total = sum(len(v) for v in vs)
    assert max(len(v) for v in vs) > versions.MAX_VERSIONS
    kept, capped = versions.limit_versions(vs, [PYNQ], [est.shell_cost(PYNQ)], 0.85, budget=total)
    assert [len(v) for v in kept] == [len(v) for v in vs] and capped == []
    kept, capped = versions.limit_versions(vs, [PYNQ], [est.shell_cost(PYNQ)], 0.85, budget=total - 1)
    assert capped == [u for u, v in enumerate(vs) if len(v) > versions.MAX_VERSIONS]
    assert all(len(k) == min(len(v), versions.MAX_VERSIONS) for k, v in zip(kept, vs, strict=True))
    for k, v in zip(kept, vs, strict=True):
        assert all(any(x is y for y in v) for x in k)  # a subset, in order
        assert k[0] is v[0]  # the fastest stays


@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
def test_pruning_by_dominance_loses_no_optimum(monkeypatch, io_type: str, objective: str):
    """Brute force over *every* valid reuse factor and strategy of a small chain equals brute force over
    the versions kept: the pruning drops only versions that can never be needed (with io_parallel the
    II is not among the figures, since a board's interval there is n_in + latency + n_out)."""
    from dataclasses import replace

    est = AnalyticEstimator()
    g = _graph((12,), 8, 6)
    build = BuildSettings(io_type=io_type)
    board = replace(PYNQ, dsp=128)  # few DSPs, so that resources trade against cycles
    settings = choose_settings(g, board, 0.85, est, build)
    units = g.units()

    def costs(prune: bool):
        if not prune:
            monkeypatch.setattr(versions, "_pareto", lambda cands, _io: list(cands))
        out = [[v.costs for v in versions.unit_versions(u, settings, [board], 0.85, est, io_type, free=True)]
               for u in units]
        monkeypatch.undo()
        return out

    every, kept = costs(False), costs(True)
    assert sum(map(len, kept)) < sum(map(len, every))
    bytes_out = [2.0 * u[-1].output_shape[-1] for u in units]
    values_out = [float(u[-1].output_shape[-1]) for u in units]
    pool = BoardPool(types=(board,), counts=(len(units),), shells=(est.shell_cost(board),))
    # a large batch, so that the per-frame cost does not hide the fabric
    kw = dict(values_in=8.0, values_out=values_out, batch=4096, io_type=io_type)
    want = brute_force(every, 16.0, bytes_out, pool, 0.85, objective, **kw)
    got = brute_force(kept, 16.0, bytes_out, pool, 0.85, objective, **kw)
    assert want is not None and got == pytest.approx(want, rel=1e-12)


def test_a_plan_that_weighed_optional_splits_is_not_called_optimal():
    """With a board budget, splits of layers that fit are priced at the two-step settings and offered
    to the bottleneck's layers only, apart from the joint search of settings (issue #14, 4b): such a plan
    fits, but is not proven optimal, and says why. Without a budget no optional split is weighed."""
    g = _graph((30, 30, 30, 60), 64, 10)
    p = make_plan(g, model="deep.keras", board=PYNQ, objective="throughput", max_boards=9)
    assert not p.optimality.optimal and p.optimality.bound is None
    assert "splits and settings searched apart" in p.optimality.solver
    assert all(st.cost.fits(st.board, 0.85) for st in p.stages)
    free = make_plan(g, model="deep.keras", board=PYNQ, objective="throughput")
    assert free.optimality.optimal and free.optimality.solver == "exact DP"



def test_too_few_boards_names_the_fewest_any_reuse_factors_need():
    """With too few boards allowed, the message gives the fewest boards over every reuse factor and
    strategy, the number the fewest-boards plan uses: not the count at each layer's smallest reuse
    factor that fits a board alone (it said "at least 5" where 2 do)."""
    from split4ml.errors import InfeasibleError

    g = _graph((128, 128, 128, 128), 64, 10)
    fewest = make_plan(g, model="deep.keras", board=PYNQ, objective="boards").n_boards
    assert fewest == 2
    with pytest.raises(InfeasibleError, match=r"needs at least 2 pynq-z2 boards .* best reuse factors .* \(--boards 2\)"):
        make_plan(g, model="deep.keras", board=PYNQ, objective="throughput", max_boards=1)
