"""The original work's method as benchmarks/vs_enumeration.py implements it: rule, grid, enumeration."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import vs_enumeration as ve  # noqa: E402  (benchmarks/ is not a package)

from split4ml.boards import get_board  # noqa: E402
from split4ml.estimate.base import AdditiveEstimator, Cost  # noqa: E402


class ToyEstimator(AdditiveEstimator):
    """Dense layers cost DSP = 600 / RF (Latency) or 300 / RF (Resource), II = RF; nothing else costs."""

    name = "toy"

    def layer_cost(self, layer, settings, io_type, board):  # type: ignore[override]
        if layer.kind != "Dense":
            return Cost()
        per = 600.0 if settings.strategy == "Latency" else 300.0
        return Cost(dsp=per / settings.reuse_factor, latency_cycles=settings.reuse_factor,
                    ii_cycles=settings.reuse_factor)


def test_rule_counts_whole_model_percent():
    board = get_board("pynq-z2")  # 220 DSP, 53,200 LUT
    assert ve.boards_by_rule(Cost(dsp=219), board)[1] == 1
    assert ve.boards_by_rule(Cost(dsp=220), board)[1] == 2  # exactly 100 % -> 2, as // 100 + 1 gives
    worst, k = ve.boards_by_rule(Cost(dsp=100, lut=53200 * 2.5), board)
    assert worst == pytest.approx(250.0) and k == 3


def test_enumeration_takes_first_valid_cut():
    # 4 Dense layers then a softmax layer: a cut before layer 4 separates the softmax from fc4.
    acts = [False, False, False, False, True]
    en = ve.enumerate_cuts(acts, 2)
    # C(4, 1) = 4 combinations: (1), (2), (3), (4); (4) is invalid.
    assert (en.combinations, en.generated, en.valid, en.first, en.timed_out) == (4, 4, 3, (1,), False)
    en = ve.enumerate_cuts(acts, 4)
    # C(4, 3) = 4: (1,2,3) (1,2,4) (1,3,4) (2,3,4); only (1,2,3) keeps the softmax with fc4.
    assert (en.combinations, en.valid, en.first) == (4, 1, (1, 2, 3))
    en = ve.enumerate_cuts([False, True, False, True], 3)
    # C(3, 2) = 3: (1,2) (1,3) (2,3); each cuts before an activation (layer 1 or 3): no valid cut.
    assert (en.combinations, en.valid, en.first) == (3, 0, None)
    assert ve.first_valid_cuts([False, True, False, False, True], 2) == (2,)
    assert ve.enumerate_cuts(acts, 1).first == ()


def test_enumeration_stops_when_it_would_exceed_the_timeout():
    en = ve.enumerate_cuts([False] * 40, 10, timeout_s=1e-3, probe_s=0.0)
    assert en.timed_out
    assert en.combinations == math.comb(39, 9)
    assert 0 < en.generated < en.combinations
    assert en.projected_s > 1e-3


def test_global_setting_is_the_first_grid_point_with_fewest_boards():
    graph = ve.dense_chain(5, seed=1)  # 4 Dense + softmax
    board = get_board("pynq-z2")
    rf, strategy, sets, worst, k = ve.choose_global_setting(graph, ToyEstimator(), board)
    # Whole model: 4 x 600/RF (Latency) or 4 x 300/RF (Resource) DSP of 220. One board first at
    # Latency RF 16 (150 DSP) and Resource RF 8 (150 DSP); the grid meets (8, Resource) first.
    assert (rf, strategy, k) == (8, "Resource", 1)
    assert worst == pytest.approx(100 * 150 / 220)
    assert all(s.strategy == "Resource" for s in sets.values())


def test_baseline_deploys_first_cut_and_reports_boards_that_do_not_fit():
    graph = ve.dense_chain(12, seed=2)  # fc1..fc11 + softmax
    board = get_board("pynq-z2")
    out, detail = ve.run_baseline(graph, board, cap=0.85, timeout_s=60, probe_s=2)
    k = detail["k"]
    assert k >= 2 and out.boards == k == len(detail["first"]) + 1
    assert detail["combinations"] == math.comb(11, k - 1) == detail["generated"]
    assert detail["valid"] == math.comb(10, k - 1)  # every combination without a cut before the softmax
    assert detail["first"] == tuple(range(1, k))  # the first combination: one layer on each board but the last
    costs, m = ve.price_cuts(graph, detail["first"], ve.global_settings(graph, detail["reuse_factor"],
                                                                          detail["strategy"]),
                             ve.AnalyticEstimator(), board, ve.BuildSettings())
    assert out.fit_100 == sum(c.fits(board, 1.0) for c in costs)
    assert not costs[-1].fits(board, 1.0)  # the last board gets every remaining layer
    assert out.bottleneck_ii_cycles == pytest.approx(m.bottleneck_ii_cycles)
    split4ml = ve.run_split4ml(graph, board, 0.85, "boards", ve.global_settings(graph, detail["reuse_factor"],
                                                                                  detail["strategy"]))
    assert split4ml.boards >= 1 and split4ml.fit_cap == split4ml.boards  # every board of a plan fits
