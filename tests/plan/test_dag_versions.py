"""Per-unit versions (reuse factor, strategy) chosen jointly with the DAG partition by CP-SAT,
against brute force over every version assignment x every monotone stage assignment."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

import pytest
from test_dag_partition import ODD, TINY, _assert_keys, _best_keys, _brute, _keys_of, _random_dag

from split4ml.boards import Board, Link
from split4ml.estimate.base import Cost
from split4ml.plan import dag
from split4ml.plan.chain import OBJECTIVES
from split4ml.plan.dag import Tensor, partition_dag

# a board where fast versions are DSP-hungry: two fast units never share a board
NARROW = Board(name="narrow", part="xc-test", lut=1000, ff=2000, dsp=100, bram18=50, uram=0, clock_mhz=100.0,
               backend="Vitis", link=Link(bandwidth_mbps=400.0, latency_us=1.0),
               shell_lut=60.0, shell_ff=90.0, shell_dsp=0.0, shell_bram18=2.0)


def _versions(rng: random.Random, base: Sequence[Cost], n_versions: Sequence[int]) -> list[list[Cost]]:
    """Versions of each unit: version j is about 2^j (+ noise) times slower and 2^j times smaller,
    like a reuse factor ladder; sometimes one is dominated or an odd trade-off."""
    out = []
    for c, nv in zip(base, n_versions, strict=True):
        vs = []
        for j in range(nv):
            f = 2 ** j * rng.uniform(0.8, 1.25) if j else 1.0
            vs.append(Cost(lut=math.ceil(c.lut / f), ff=math.ceil(c.ff / f), dsp=math.ceil(c.dsp / f),
                           bram18=c.bram18, latency_cycles=int(c.latency_cycles * f) + rng.randrange(0, 5),
                           ii_cycles=max(1, int(c.ii_cycles * f))))
        rng.shuffle(vs)  # the solver must not rely on an order
        out.append(vs)
    return out


def _brute_versions(versions: Sequence[Sequence[Cost]], tensors: Sequence[Tensor], board: Board, cap: float,
                    max_k: int) -> list[tuple[tuple[int, ...], tuple[int, ...], int, float, float]]:
    """(stage_of, version_of, stages, bottleneck_us, latency_us) of every feasible plan."""
    rows = []
    for ver in itertools.product(*[range(len(vs)) for vs in versions]):
        units = [versions[u][v] for u, v in enumerate(ver)]
        rows += [(r[0], ver, *r[1:]) for r in _brute(units, tensors, board, cap, max_k)]
    return rows


def _keys_rows(rows):
    return [(r[0], r[2], r[3], r[4]) for r in rows]  # the shape _best_keys reads


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("board", [TINY, ODD, NARROW], ids=["tiny", "odd", "narrow"])
def test_random_dags_with_versions_match_brute_force(objective: str, board: Board, way: str) -> None:
    # cp-sat-coarse: with a coarse proxy (whole microseconds) the exact refinement must still reach
    # the optimum
    rng = random.Random(f"versions-{objective}-{board.name}")
    checked = joint_mattered = 0
    for case in range(12):
        n_units = rng.randrange(3, 7)
        base, tensors = _random_dag(rng, n_units, float_bytes=board is ODD and case % 2 == 0)
        if board is NARROW:
            base = [Cost(lut=c.lut // 3, ff=c.ff // 2, dsp=rng.randrange(40, 75), bram18=c.bram18,
                         latency_cycles=c.latency_cycles, ii_cycles=c.ii_cycles) for c in base]
        n_versions = [rng.choice([1, 2, 3]) for _ in range(n_units)]
        while math.prod(n_versions) > 96:
            n_versions[n_versions.index(max(n_versions))] -= 1
        versions = _versions(rng, base, n_versions)
        max_boards = rng.choice([2, 3])
        rows = _brute_versions(versions, tensors, board, 0.85, max_boards)
        if not rows:
            with pytest.raises(dag.InfeasibleError):
                partition_dag(versions, tensors, board, 0.85, objective=objective, max_boards=max_boards)
            continue
        part = partition_dag(versions, tensors, board, 0.85, objective=objective, max_boards=max_boards)
        assert part.optimal
        assert (part.n_solves == 0) == (way == "order-dp")  # which way decided
        match = [r for r in rows if r[0] == part.stage_of and r[1] == part.version_of]
        assert match, f"case {case}: solver plan {part.stage_of} / {part.version_of} is not feasible"
        _, _, n, b, lat = match[0]
        assert part.n_stages == n
        assert part.metrics.bottleneck_us == pytest.approx(b, rel=1e-12)
        assert part.metrics.latency_us == pytest.approx(lat, rel=1e-12)
        best = _best_keys(_keys_rows(rows), objective)
        _assert_keys(_keys_of(part, objective), best)
        # did choosing versions jointly matter? (the best plan with every unit's fastest version
        # that fits, i.e. versions fixed before the partition, is worse)
        fixed = [r for r in rows if all(_fastest(versions[u], board) == v for u, v in enumerate(r[1]))]
        if not fixed or _best_keys(_keys_rows(fixed), objective) != best:
            joint_mattered += 1
        checked += 1
    assert checked >= 5
    # latency: the fastest versions are also the shortest, so fixing them first rarely loses
    assert joint_mattered >= 1 or objective == "latency"


def _fastest(vs: Sequence[Cost], board: Board) -> int:
    shell = Cost(lut=board.shell_lut, ff=board.shell_ff, dsp=board.shell_dsp, bram18=board.shell_bram18)
    fit = [v for v in range(len(vs)) if (shell + vs[v]).fits(board, 0.85)] or list(range(len(vs)))
    return min(fit, key=lambda v: (vs[v].ii_cycles, vs[v].latency_cycles))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_exact_stage_count_with_versions(objective: str) -> None:
    rng = random.Random(f"n-stages-{objective}")
    for _ in range(4):
        base, tensors = _random_dag(rng, 5)
        versions = _versions(rng, base, [2] * 5)
        rows = [r for r in _brute_versions(versions, tensors, TINY, 0.85, 3) if r[2] == 3]
        if not rows:
            continue
        part = partition_dag(versions, tensors, TINY, 0.85, objective=objective, n_stages=3)
        assert part.n_stages == 3
        _assert_keys(_keys_of(part, objective), _best_keys(_keys_rows(rows), objective))


def test_one_version_per_unit_is_the_plain_partition() -> None:
    rng = random.Random("plain")
    base, tensors = _random_dag(rng, 6)
    for objective in OBJECTIVES:
        a = partition_dag(base, tensors, TINY, 0.85, objective=objective, max_boards=3)
        b = partition_dag([[c] for c in base], tensors, TINY, 0.85, objective=objective, max_boards=3)
        assert a.stage_of == b.stage_of and a.version_of == b.version_of == (0,) * 6
        assert a.metrics == b.metrics


def test_slow_small_version_lets_one_board_beat_two() -> None:
    # unit 1 fast needs its own board (70 DSP + 70 DSP > 85); its slow version shares a board
    fast0 = Cost(lut=100, dsp=70, latency_cycles=10, ii_cycles=10)
    fast1 = Cost(lut=100, dsp=70, latency_cycles=10, ii_cycles=10)
    slow1 = Cost(lut=100, dsp=10, latency_cycles=20, ii_cycles=20)
    tensors = dag.chain_tensors(4.0, [400.0, 4.0])  # 400 bytes on a link: 8 us at 400 Mbit/s
    part = partition_dag([[fast0], [fast1, slow1]], tensors, NARROW, 0.85, objective="throughput")
    assert part.n_stages == 1 and part.version_of == (0, 1)
    # io_parallel: one board's fabric interval is its latency, 10 + 20 cycles at 100 MHz; it is above its
    # links (4 bytes + the frame header shared by a frame of 8 samples, at 400 Mbit/s) and per-frame cost
    fabric, link, frame = 30 / 100, (4 + 84 / 8) * 8 / 400, 1.0 / 8
    assert part.metrics.bottleneck_us == pytest.approx(max(fabric, link, frame)) == pytest.approx(fabric)


# --------------------------------------------------------------------------- make_plan on a ResNet-style model
@pytest.fixture(scope="module")
def resnet_graph():
    pytest.importorskip("keras")
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.networks import residual_mlp

    return graph_from_keras(residual_mlp(blocks=2, width=16, seed=0))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_resnet_unbudgeted_plan_is_at_least_as_good_as_one_board(resnet_graph, objective: str) -> None:
    from split4ml.boards import get_board
    from split4ml.plan.api import make_plan
    from split4ml.plan.design import better, objective_key

    board = get_board("pynq-z2")
    free = make_plan(resnet_graph, model="res.keras", board=board, objective=objective)
    key = objective_key(free.metrics, free.n_boards, objective)
    for kw in ({"max_boards": 1}, {"max_boards": 3}, {"n_stages": 2}, {"joint": False}):
        other = make_plan(resnet_graph, model="res.keras", board=board, objective=objective, **kw)
        assert not better(objective_key(other.metrics, other.n_boards, objective), key), (kw, other.metrics)
    if objective == "throughput":
        # the two-step planner (smallest reuse factor per layer, then the cuts) is strictly worse here
        two_step = make_plan(resnet_graph, model="res.keras", board=board, objective=objective, joint=False)
        assert better(key, objective_key(two_step.metrics, two_step.n_boards, objective))


def test_resnet_joint_settings_reach_the_plan_and_pinned_ones_stay(resnet_graph) -> None:
    from split4ml.boards import get_board
    from split4ml.estimate import hls_rules
    from split4ml.plan.api import get_estimator, make_plan

    board = get_board("pynq-z2")
    plan = make_plan(resnet_graph, model="res.keras", board=board, n_stages=3)
    rfs = {name: (s.reuse_factor, s.strategy) for name, s in plan.settings.items()}
    for lyr in resnet_graph.body:
        if lyr.kind == "Dense":  # a valid reuse factor hls4ml keeps, for the strategy chosen
            rf, strategy = rfs[lyr.name]
            assert rf in hls_rules.valid_reuse_factors(lyr, strategy, plan.build.io_type)
    # every stage records the chosen settings of its layers, and its cost is priced under them
    est = get_estimator("analytic")
    graph_layers = {lyr.name: lyr for lyr in resnet_graph.body}
    for st in plan.stages:
        assert {name: st.settings[name] for name in st.layers} == {name: plan.settings[name] for name in st.layers}
        cost = est.shell_cost(board)
        for name in st.layers:
            cost = cost + est.layer_cost(graph_layers[name], plan.settings[name], plan.build.io_type, board)
        assert st.cost.dsp == pytest.approx(cost.dsp) and st.cost.lut == pytest.approx(cost.lut)
    assert len({rfs[lyr.name] for lyr in resnet_graph.body if lyr.kind == "Dense"}) > 1  # chosen per layer
    pinned = make_plan(resnet_graph, model="res.keras", board=board, n_stages=3,
                       hls_config={"LayerName": {"b1_fc1": {"ReuseFactor": 4, "Strategy": "Resource"}}})
    assert (pinned.settings["b1_fc1"].reuse_factor, pinned.settings["b1_fc1"].strategy) == (4, "Resource")
    everywhere = make_plan(resnet_graph, model="res.keras", board=board, n_stages=3, reuse_factor=16)
    assert all(everywhere.settings[lyr.name].reuse_factor == 16 for lyr in resnet_graph.body if lyr.kind == "Dense")


def test_versions_solved_in_a_child_process_give_the_same_plan() -> None:
    rng = random.Random("child")
    base, tensors = _random_dag(rng, 5, forced=False)  # CP-SAT, not the chain DP, decides
    assert not dag.in_forced_order(len(base), tensors)
    versions = _versions(rng, base, [3, 2, 1, 3, 2])
    here = partition_dag(versions, tensors, TINY, 0.85, max_boards=3, isolate=False)
    there = partition_dag(versions, tensors, TINY, 0.85, max_boards=3, isolate=True)
    assert (here.stage_of, here.version_of, here.metrics) == (there.stage_of, there.version_of, there.metrics)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_a_start_plan_changes_the_search_not_the_optimum(objective: str, cp_sat: None) -> None:
    """``start`` (the two-step plan make_plan hands CP-SAT's joint search): every feasible plan given as
    the start, the worst included, still ends at the brute-force optimum; a start that breaks a rule
    is not used (and the optimum is still found)."""
    rng = random.Random(f"start-{objective}")
    checked = 0
    for case in range(10):
        n_units = rng.randrange(3, 6)
        base, tensors = _random_dag(rng, n_units)
        versions = _versions(rng, base, [rng.choice([1, 2, 3]) for _ in range(n_units)])
        rows = _brute_versions(versions, tensors, TINY, 0.85, 3)
        if not rows:
            continue
        best = _best_keys(_keys_rows(rows), objective)
        worst = max(rows, key=lambda r: (r[3], r[2], r[4]))  # largest bottleneck, then boards, then latency
        bad = ([0] * n_units, [len(vs) for vs in versions])  # version indices out of range
        backwards = (list(range(n_units))[::-1], [0] * n_units)  # links would go back
        for start in (worst[:2], rng.choice(rows)[:2], bad, backwards):
            part = partition_dag(versions, tensors, TINY, 0.85, objective=objective, max_boards=3, start=start)
            assert part.optimal, f"case {case}"
            _assert_keys(_keys_of(part, objective), best)
        checked += 1
    assert checked >= 4


def test_start_versions_maps_a_cost_to_a_version_at_least_as_good() -> None:
    v = [Cost(lut=100, ff=100, dsp=8, bram18=0, latency_cycles=10),
         Cost(lut=100, ff=100, dsp=4, bram18=0, latency_cycles=12),
         Cost(lut=90, ff=90, dsp=4, bram18=0, latency_cycles=11)]
    # the two-step cost equals version 1; version 2 is at least as good everywhere and faster
    assert dag.start_versions([Cost(lut=100, ff=100, dsp=4, bram18=0, latency_cycles=12)], [v]) == [2]
    assert dag.start_versions([Cost(lut=100, ff=100, dsp=8, bram18=0, latency_cycles=10)], [v]) == [0]
    # nothing is at least as good in every figure
    assert dag.start_versions([Cost(lut=100, ff=100, dsp=2, bram18=0, latency_cycles=30)], [v]) is None
