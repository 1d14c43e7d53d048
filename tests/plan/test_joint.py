"""The joint planner (versions x cuts x board types) against brute force on small chains."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest

from split4ml.boards import Link, get_board
from split4ml.errors import InfeasibleError
from split4ml.estimate.base import Cost
from split4ml.plan.chain import REL_TOL, shell_cost
from split4ml.plan.joint import BoardPool, solve_joint
from split4ml.plan.metrics import DEFAULT_BATCH, pipeline_metrics
from split4ml.plan.partition import partition_chain

PYNQ = get_board("pynq-z2")
ZCU = get_board("zcu102")
#: a small, slow board with another link, so that board types differ in every respect
TINY = replace(PYNQ, name="tiny", lut=30000, ff=60000, dsp=120, bram18=140, clock_mhz=150.0,
               link=replace(PYNQ.link, bandwidth_mbps=400.0, latency_us=40.0))
#: about twice a PYNQ-Z2, slower clock
MID = replace(PYNQ, name="mid", lut=110000, ff=220000, dsp=400, bram18=500, clock_mhz=80.0,
              link=replace(PYNQ.link, bandwidth_mbps=2000.0, latency_us=80.0))


def _tie(v: float) -> float:
    return v + REL_TOL * abs(v) + 1e-9


def _keys(objective: str, m, n_boards: int) -> tuple[float, float, float]:
    if objective == "throughput":
        return (m.bottleneck_us, n_boards, m.latency_us)
    if objective == "latency":
        return (m.latency_us, n_boards, m.bottleneck_us)
    return (n_boards, m.bottleneck_us, m.latency_us)


def _lex_best(rows: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Lexicographic minimum with the planner's tie tolerance on every key."""
    out = []
    for k in range(3):
        best = min(r[k] for r in rows)
        out.append(best)
        rows = [r for r in rows if r[k] <= _tie(best)]
    return tuple(out)


def _compositions(n: int):
    for cuts in itertools.product([0, 1], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        yield list(zip(bounds[:-1], bounds[1:], strict=True))


def _type_sequences(pool: BoardPool, k: int):
    if pool.order is not None:
        for pos in itertools.combinations(range(len(pool.order)), k):
            yield tuple(pool.order[p] for p in pos)
    else:
        for seq in itertools.product(range(len(pool.types)), repeat=k):
            if all(seq.count(t) <= c for t, c in enumerate(pool.counts)):
                yield seq


def brute_force(costs, bytes_in, bytes_out, pool, cap, objective, max_boards=None, n_stages=None, values_in=0.0,
                values_out=None, batch=DEFAULT_BATCH, io_type="io_parallel", in_place=None):
    rows = []
    n = len(costs)
    for ranges in _compositions(n):
        k = len(ranges)
        if (max_boards is not None and k > max_boards) or (n_stages is not None and k != n_stages):
            continue
        if in_place is not None and any(all(in_place[i:j]) for i, j in ranges):  # a board of in-place units only
            continue
        for seq in _type_sequences(pool, k):
            # per stage, every version assignment that fits; keep them all (metrics need the mix)
            per_stage = []
            for (i, j), t in zip(ranges, seq, strict=True):
                opts = []
                for vs in itertools.product(*(range(len(costs[u])) for u in range(i, j))):
                    c = pool.shells[t]
                    for u, v in zip(range(i, j), vs, strict=True):
                        c = c + costs[u][v][t]
                    if c.fits(pool.types[t], cap):
                        opts.append(c)
                if not opts:
                    break
                per_stage.append(opts)
            else:
                boards = [pool.types[t] for t in seq]
                outs = [bytes_out[j - 1] for _, j in ranges]
                vouts = [values_out[j - 1] for _, j in ranges] if values_out is not None else None
                for combo in itertools.product(*per_stage):
                    m = pipeline_metrics(list(combo), boards, bytes_in, outs, values_in, vouts, batch=batch,
                                         io_type=io_type)
                    rows.append(_keys(objective, m, k))
    return _lex_best(rows) if rows else None


def _random_costs(rng: random.Random, n: int, n_versions: int, types) -> list:
    """Units of 20-70% of a PYNQ-Z2 at their fastest version; a slower version (reuse factor
    ``2**v``) takes fewer multipliers and may move weights to BRAM. Per board type the same
    absolute figures, give or take 15% (DSP shape, clock)."""
    costs = []
    for _ in range(n):
        base = rng.uniform(0.2, 0.7)
        vs = []
        for v in range(rng.randint(1, n_versions)):
            rf = 2 ** v
            frac = base / rf ** rng.uniform(0.5, 1.0)
            c = Cost(lut=frac * PYNQ.lut * rng.uniform(0.4, 1.0), ff=frac * PYNQ.ff * 0.3,
                     dsp=frac * PYNQ.dsp * rng.uniform(0.2, 1.0), bram18=PYNQ.bram18 * rng.uniform(0.0, 0.3) * (v % 2),
                     latency_cycles=rng.uniform(50, 300) * rf, ii_cycles=rf * rng.choice([50, 400]))
            per_type = []
            for _b in types:
                k = rng.uniform(0.85, 1.15)
                per_type.append(Cost(lut=c.lut * k, ff=c.ff * k, dsp=c.dsp * k, bram18=c.bram18,
                                     latency_cycles=c.latency_cycles, ii_cycles=c.ii_cycles))
            vs.append(per_type)
        costs.append(vs)
    return costs


def _check(res, costs, bytes_in, bytes_out, pool, cap, objective, **kw):
    # the reported plan is consistent: costs of the chosen versions, fits, metrics recomputed
    for (i, j), t, c in zip(res.ranges, res.stage_types, res.stage_costs, strict=True):
        total = pool.shells[t]
        for u in range(i, j):
            total = total + costs[u][res.choice[u]][t]
        assert total == c
        assert c.fits(pool.types[t], cap)
    got = _keys(objective, res.metrics, res.n_stages)
    want = brute_force(costs, bytes_in, bytes_out, pool, cap, objective, **kw)
    assert want is not None
    for g, w in zip(got, want, strict=True):
        assert g <= _tie(w) and w <= _tie(g), (objective, got, want)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
@pytest.mark.parametrize("seed", range(10))
def test_versions_one_board_type_match_brute_force(objective: str, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(3, 6)
    costs = _random_costs(rng, n, 3, [PYNQ])
    bytes_out = [rng.choice([20, 200, 2000]) for _ in range(n)]
    max_boards = rng.choice([None, n, max(2, n - 2)])
    pool = BoardPool(types=(PYNQ,), counts=(max_boards or n,))
    try:
        res = solve_joint(costs, 784.0, bytes_out, pool, 0.85, objective)
    except InfeasibleError:
        assert brute_force(costs, 784.0, bytes_out, pool, 0.85, objective) is None
        return
    _check(res, costs, 784.0, bytes_out, pool, 0.85, objective)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
@pytest.mark.parametrize("seed", range(12))
def test_wrapper_io_cycles_match_brute_force(objective: str, seed: int) -> None:
    """Cuts of very different widths: the AXI wrapper's reads and writes (one value a clock) are a large,
    start-dependent part of a stage's interval, which the solver's latency cut-offs must respect."""
    rng = random.Random(500 + seed)
    n = rng.randint(3, 6)
    costs = _random_costs(rng, n, 4, [PYNQ])
    values_out = [float(rng.choice([4, 64, 400, 1500])) for _ in range(n)]
    bytes_out = [2.0 * v for v in values_out]
    values_in = float(rng.choice([8, 784, 3000]))
    max_boards = rng.choice([None, n, max(2, n - 2)])
    pool = BoardPool(types=(PYNQ,), counts=(max_boards or n,))
    batch = rng.choice([1, 8, 64])
    kw = {"values_in": values_in, "values_out": values_out, "batch": batch}
    try:
        res = solve_joint(costs, 2.0 * values_in, bytes_out, pool, 0.85, objective, **kw)
    except InfeasibleError:
        assert brute_force(costs, 2.0 * values_in, bytes_out, pool, 0.85, objective, **kw) is None
        return
    _check(res, costs, 2.0 * values_in, bytes_out, pool, 0.85, objective, **kw)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("order", ["free", "fixed"])
def test_mixed_boards_match_brute_force(objective: str, seed: int, order: str) -> None:
    rng = random.Random(100 + seed)
    n = rng.randint(3, 5)
    types = (PYNQ, TINY, MID)[: rng.choice([2, 3])]
    costs = _random_costs(rng, n, 2, types)
    bytes_out = [rng.choice([20, 200, 2000]) for _ in range(n)]
    if order == "free":
        pool = BoardPool(types=types, counts=tuple(rng.randint(0, 3) for _ in types))
        if pool.n_boards == 0:
            pool = BoardPool(types=types, counts=(1,) + (0,) * (len(types) - 1))
    else:
        pool = BoardPool(types=types, order=tuple(rng.randrange(len(types)) for _ in range(rng.randint(2, 5))))
    try:
        res = solve_joint(costs, 100.0, bytes_out, pool, 0.8, objective)
    except InfeasibleError:
        assert brute_force(costs, 100.0, bytes_out, pool, 0.8, objective) is None
        return
    if order == "fixed":
        assert list(res.positions) == sorted(set(res.positions))
        assert all(pool.order[p] == t for p, t in zip(res.positions, res.stage_types, strict=True))
    _check(res, costs, 100.0, bytes_out, pool, 0.8, objective)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
def test_exact_stage_count(objective: str) -> None:
    rng = random.Random(7)
    costs = _random_costs(rng, 5, 3, [PYNQ])
    bytes_out = [100.0] * 5
    pool = BoardPool(types=(PYNQ,), counts=(5,))
    for k in (3, 4):
        try:
            res = solve_joint(costs, 10.0, bytes_out, pool, 0.85, objective, n_stages=k)
        except InfeasibleError:
            assert brute_force(costs, 10.0, bytes_out, pool, 0.85, objective, n_stages=k) is None
            continue
        assert res.n_stages == k
        _check(res, costs, 10.0, bytes_out, pool, 0.85, objective, n_stages=k)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
def test_one_version_equals_plain_partition(objective: str) -> None:
    """With one version per unit and one board type, the joint planner is the plain chain DP."""
    rng = random.Random(3)
    n = 8
    units = [Cost(lut=rng.uniform(2e3, 2e4), ff=rng.uniform(2e3, 3e4), dsp=rng.uniform(5, 90),
                  bram18=rng.uniform(0, 40), latency_cycles=rng.uniform(5, 400), ii_cycles=rng.choice([1, 4, 16, 64]))
             for _ in range(n)]
    bytes_out = [rng.choice([32, 256, 2048]) for _ in range(n)]
    plain = partition_chain(units, 64.0, bytes_out, PYNQ, 0.85, objective=objective)
    joint = solve_joint([[[c]] for c in units], 64.0, bytes_out, BoardPool(types=(PYNQ,), counts=(n,)), 0.85,
                        objective)
    a, b = _keys(objective, plain.metrics, plain.n_stages), _keys(objective, joint.metrics, joint.n_stages)
    assert all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a, b, strict=True))


def test_versions_trade_boards_for_interval() -> None:
    """A slower version lets two units share a board: the boards objective takes it, throughput does not."""
    fast = Cost(dsp=150, ii_cycles=1, latency_cycles=10)
    slow = Cost(dsp=40, ii_cycles=8, latency_cycles=30)
    costs = [[[fast], [slow]], [[fast], [slow]]]
    # no per-frame cost, so that the fabric (a unit's latency), not the board's software, bounds it
    pool = BoardPool(types=(replace(PYNQ, link=Link(bandwidth_mbps=940.0, latency_us=0.0)),), counts=(2,))
    thr = solve_joint(costs, 10.0, [10.0, 10.0], pool, 0.85, "throughput")
    assert thr.n_stages == 2 and thr.choice == (0, 0)
    few = solve_joint(costs, 10.0, [10.0, 10.0], pool, 0.85, "boards")
    assert few.n_stages == 1 and set(few.choice) == {1} or few.choice in ((0, 1), (1, 0))
    assert few.n_stages == 1


def test_infeasible_names_the_unit() -> None:
    big = Cost(dsp=10_000, ii_cycles=1)
    with pytest.raises(InfeasibleError, match=r"\['d2'\]"):
        solve_joint([[[Cost(dsp=1)]], [[big]]], 1.0, [1.0, 1.0], BoardPool(types=(PYNQ,), counts=(3,)), 0.85,
                    unit_names=["d1", "d2"])
    with pytest.raises(InfeasibleError, match="board"):
        solve_joint([[[Cost(dsp=150)]], [[Cost(dsp=150)]]], 1.0, [1.0, 1.0], BoardPool(types=(PYNQ,), counts=(1,)),
                    0.85)


def test_shell_of_each_type_is_charged() -> None:
    pool = BoardPool(types=(PYNQ, ZCU), counts=(1, 1))
    assert pool.shells == (shell_cost(PYNQ), shell_cost(ZCU))
    assert pool.n_boards == 2


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_pareto_front_equals_pairwise_definition(k: int) -> None:
    import numpy as np

    from split4ml.plan.joint import _distinct, _pareto

    rng = np.random.default_rng(k)
    for n, top in ((1, 15), (7, 15), (60, 15), (1300, 15), (3000, 400)):
        pts = rng.integers(0, top, size=(n, k)).astype(float)
        uniq = np.unique(pts, axis=0)
        want = [r for r in uniq if not ((uniq <= r).all(axis=1) & (uniq < r).any(axis=1)).any()]
        got = _pareto(pts)
        assert np.array_equal(np.unique(pts[got], axis=0), np.array(want).reshape(-1, k))
        # one index per set of equal rows, the first of them
        assert len(got) == len(want)
        assert all(int(np.nonzero((pts == pts[i]).all(axis=1))[0][0]) == i for i in got)
        assert np.array_equal(_distinct(pts), np.unique(pts, axis=0, return_index=True)[1])


def _small_chain(seed: int) -> tuple[list, list[int], BoardPool]:
    """A random chain of 4-6 units of 1-4 versions on as many PYNQ-Z2 boards: costs, output bytes, pool."""
    rng = random.Random(900 + seed)
    n = rng.randint(4, 6)
    costs = _random_costs(rng, n, 4, [PYNQ])
    bytes_out = [rng.choice([20, 200]) for _ in range(n)]
    return costs, bytes_out, BoardPool(types=(PYNQ,), counts=(n,))


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
@pytest.mark.parametrize("seed", range(12))
def test_rounded_fronts_still_give_a_plan_that_fits(monkeypatch, objective: str, seed: int) -> None:
    """With tiny front limits every stage's front is rounded. The fronts that carry latency are larger than
    the resource-only ones, so they round coarser and may lose the fewest-board plan the resource-only
    fronts found (this once ended in "backtrack lost its path"). The solver must still return a plan
    that fits, never better than the brute-force optimum, and say it is rounded when it is worse."""
    import split4ml.plan.joint as joint

    monkeypatch.setattr(joint, "_FRONT_LIMIT", 2)
    monkeypatch.setattr(joint, "_CAND_LIMIT", 3)
    monkeypatch.setattr(joint, "_GRID", 8)
    joint._TABLES.clear()
    costs, bytes_out, pool = _small_chain(seed)
    want = brute_force(costs, 784.0, bytes_out, pool, 0.85, objective)
    try:
        res = solve_joint(costs, 784.0, bytes_out, pool, 0.85, objective)
    except InfeasibleError:
        return  # rounding is conservative: it may find nothing where something fits
    finally:
        joint._TABLES.clear()
    assert want is not None
    for (i, j), t, c in zip(res.ranges, res.stage_types, res.stage_costs, strict=True):
        total = pool.shells[t]
        for u in range(i, j):
            total = total + costs[u][res.choice[u]][t]
        assert total == c and c.fits(pool.types[t], 0.85)
    got = _keys(objective, res.metrics, res.n_stages)
    assert not got < tuple(x * (1 - 1e-9) - 1e-9 for x in want)
    if tuple(round(x, 6) for x in got) != tuple(round(x, 6) for x in want):
        assert res.rounded


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
@pytest.mark.parametrize("seed", range(6))
def test_in_place_units_never_make_a_stage_alone(objective: str, seed: int) -> None:
    """Units hls4ml computes in place (an io_stream flatten: no cost, no cycles) join a neighbour's board:
    the solver equals the brute force over the partitions where every stage computes something, for
    every stage count, and says infeasible exactly where that brute force finds nothing."""
    rng = random.Random(100 + seed)
    n = rng.randint(3, 6)
    costs = _random_costs(rng, n, 2, [PYNQ])
    in_place = [False] * n
    for u in rng.sample(range(n), rng.randint(1, 2)):
        in_place[u] = True
        costs[u] = [[Cost()]]
    bytes_out = [rng.choice([20, 200, 2000]) for _ in range(n)]
    pool = BoardPool(types=(PYNQ,), counts=(n,))
    for n_stages in (None, *range(1, n + 1)):
        kw = {"n_stages": n_stages} if n_stages is not None else {}
        try:
            res = solve_joint(costs, 784.0, bytes_out, pool, 0.85, objective, in_place=in_place, **kw)
        except InfeasibleError:
            assert brute_force(costs, 784.0, bytes_out, pool, 0.85, objective, in_place=in_place, **kw) is None
            continue
        assert not any(all(in_place[i:j]) for i, j in res.ranges), res.ranges
        _check(res, costs, 784.0, bytes_out, pool, 0.85, objective, in_place=in_place, **kw)


def test_a_thinned_front_keeps_real_points_the_least_latency_of_each_cell(monkeypatch) -> None:
    """Thinning a front (``_coarse``) keeps points as they are (real sums of versions, so what fits,
    fits, and no error adds up over a long stage), at most ``_FRONT_LIMIT`` of them, one per cell of
    the grid it chose, and in each cell the point of least latency."""
    import numpy as np

    import split4ml.plan.joint as joint

    monkeypatch.setattr(joint, "_FRONT_LIMIT", 150)
    costs = [[[Cost(lut=100.0, dsp=1.0, latency_cycles=10.0)]]]
    solver = joint._Solver(costs, 8.0, [8.0], BoardPool(types=(PYNQ,), counts=(1,)), 0.85)
    rng = np.random.default_rng(0)
    room = np.array([1000.0, 50.0])
    cand = np.column_stack([rng.uniform(0, 1000, 600), rng.integers(0, 51, 600).astype(float),
                            rng.uniform(0, 5, 600)])
    kept, mask, g = solver._coarse(cand, room)
    assert solver.rounded and 8 <= g <= joint._GRID
    assert np.array_equal(kept, cand[mask]) and 0 < len(kept) <= 150
    cell = [tuple(np.ceil(row[:2] / room * g).astype(int)) for row in cand]
    best: dict[tuple, float] = {}
    for c, row in zip(cell, cand, strict=True):
        best[c] = min(best.get(c, np.inf), row[2])
    kept_cells = [cell[i] for i in np.nonzero(mask)[0]]
    assert len(set(kept_cells)) == len(kept_cells) == len(best)  # every occupied cell, once
    assert all(cand[i, 2] == best[cell[i]] for i in np.nonzero(mask)[0])
    # a finer grid (twice g) would have occupied more cells than allowed
    finer = {tuple(np.ceil(row[:2] / room * 2 * g).astype(int)) for row in cand}
    assert g == joint._GRID or len(finer) > 150


@pytest.mark.parametrize("objective", ["boards", "latency"])
def test_the_bound_search_builds_each_least_latency_table_once(monkeypatch, objective: str) -> None:
    """The fewest boards and the lowest latency build every stage's least-latency table once, at no
    bound (a bound past every stage's slowest choice cuts nothing, so that table serves every bound
    after): not again at each bound the search doubles through."""
    import split4ml.plan.joint as joint

    built: list[tuple[int, bool]] = []
    fronts = joint._Solver._fronts

    def count(self, t, j, stop, bound, resources_only, track=False):
        if not track:
            built.append((j, resources_only))
        return fronts(self, t, j, stop, bound, resources_only, track)

    monkeypatch.setattr(joint._Solver, "_fronts", count)
    joint._TABLES.clear()
    rng = random.Random(7)
    n = 9
    costs = _random_costs(rng, n, 4, [PYNQ])
    bytes_out = [rng.choice([20, 200]) for _ in range(n)]
    pool = BoardPool(types=(PYNQ,), counts=(n,))
    try:
        res = solve_joint(costs, 784.0, bytes_out, pool, 0.85, objective)
    finally:
        joint._TABLES.clear()
    want = brute_force(costs, 784.0, bytes_out, pool, 0.85, objective)
    assert tuple(round(x, 6) for x in _keys(objective, res.metrics, res.n_stages)) == tuple(round(x, 6) for x in want)
    latency_tables = [j for j, resources_only in built if not resources_only]
    assert len(latency_tables) == len(set(latency_tables)), sorted(latency_tables)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
def test_an_exact_only_solve_keeps_fronts_whole_up_to_its_own_limit(monkeypatch, objective: str) -> None:
    """A caller with another way to a proof (``exact_only``: the DAG planner's chain DP) never gets
    thinned fronts: up to ``_EXACT_FRONT_LIMIT`` points it keeps them whole and its plan is the
    brute-force optimum, where a plain solve with the same small ``_FRONT_LIMIT`` thins them; past
    that limit it gives up."""
    import split4ml.plan.joint as joint

    monkeypatch.setattr(joint, "_FRONT_LIMIT", 2)
    monkeypatch.setattr(joint, "_CAND_LIMIT", 3)
    thinned = 0
    for seed in range(8):
        costs, bytes_out, pool = _small_chain(seed)
        want = brute_force(costs, 784.0, bytes_out, pool, 0.85, objective)
        joint._TABLES.clear()
        try:
            thinned += solve_joint(costs, 784.0, bytes_out, pool, 0.85, objective).rounded
        except InfeasibleError:
            thinned += 1  # thinning lost every plan
        joint._TABLES.clear()
        res = solve_joint(costs, 784.0, bytes_out, pool, 0.85, objective, exact_only=True)
        assert not res.rounded
        assert tuple(round(x, 6) for x in _keys(objective, res.metrics, res.n_stages)) == \
            tuple(round(x, 6) for x in want)
        joint._TABLES.clear()
    assert thinned > 0  # the small limit did thin the plain solves' fronts
    monkeypatch.setattr(joint, "_EXACT_FRONT_LIMIT", 2)
    monkeypatch.setattr(joint, "_EXACT_CAND_LIMIT", 3)
    with pytest.raises(joint.Abandoned):
        solve_joint(costs, 784.0, bytes_out, pool, 0.85, objective, exact_only=True)
    joint._TABLES.clear()
