"""The chain partitioner against brute-force enumeration of every cut set."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest

from split4ml.boards import RESOURCES, Board, Link, get_board
from split4ml.errors import InfeasibleError, PlanError
from split4ml.estimate.base import Cost
from split4ml.plan.chain import OBJECTIVES, Partition
from split4ml.plan.metrics import pipeline_metrics
from split4ml.plan.partition import partition_chain

TOL = 1e-9
BATCH = 8  # split4ml.plan.metrics.DEFAULT_BATCH

TINY = Board(name="tiny", part="xc-test", lut=1000, ff=2000, dsp=100, bram18=50, uram=0, clock_mhz=100.0,
             backend="Vitis", link=Link(bandwidth_mbps=80.0, latency_us=3.0),
             shell_lut=60.0, shell_ff=90.0, shell_dsp=0.0, shell_bram18=2.0)


# --------------------------------------------------------------------------- brute force (reference)
def _shell(board: Board) -> Cost:
    return Cost(lut=board.shell_lut, ff=board.shell_ff, dsp=board.shell_dsp, bram18=board.shell_bram18)


def _all_bounds(n: int) -> list[tuple[int, ...]]:
    """Every partition of units 0..n-1 into contiguous stages, as bounds (0, ..., n)."""
    out = []
    for cuts in itertools.product((False, True), repeat=n - 1):
        out.append((0, *[i + 1 for i, c in enumerate(cuts) if c], n))
    return out


def _brute(units: Sequence[Cost], bytes_in: float, bytes_out: Sequence[float], board: Board, cap: float,
           seg: Callable[[int, int], Cost] | None = None,
           shell: Cost | None = None) -> list[tuple[tuple[int, ...], float, float]]:
    """(bounds, bottleneck_us, latency_us) of every feasible partition, formulas written out here."""
    rows = []
    for bounds in _all_bounds(len(units)):
        costs = []
        for i, j in zip(bounds[:-1], bounds[1:], strict=True):
            if seg is not None:
                c = seg(i, j)
            else:
                c = shell if shell is not None else _shell(board)
                for u in units[i:j]:
                    c = c + u
            costs.append(c)
        if not all(all(getattr(c, r) <= board.capacity(r) * cap + 1e-9 for r in RESOURCES) for c in costs):
            continue
        # the performance model (split4ml.plan.metrics), written out: frames of BATCH samples, each with
        # an 84-byte overhead; io_parallel fabric = latency (no values given: no wrapper cycles)
        cut = [bytes_in, *bytes_out]
        bw, c0 = board.link.bandwidth_mbps, board.link.latency_us

        def link(b: float, bw: float = bw) -> float:
            return (b + 84 / BATCH) * 8.0 / bw

        bottleneck = max(max(c.latency_cycles / board.clock_mhz, link(cut[i]), link(cut[j]), c0 / BATCH)
                         for c, i, j in zip(costs, bounds[:-1], bounds[1:], strict=True))
        latency = (BATCH * bytes_in + 84) * 8.0 / bw
        latency += sum(c0 + BATCH * c.latency_cycles / board.clock_mhz + (BATCH * cut[j] + 84) * 8.0 / bw
                       for c, j in zip(costs, bounds[1:], strict=True))
        rows.append((bounds, bottleneck, latency))
    return rows


def _key(objective: str, n: int, bottleneck: float, latency: float) -> tuple[float, float, float]:
    if objective == "throughput":
        return (bottleneck, n, latency)
    if objective == "latency":
        return (latency, n, bottleneck)
    return (n, bottleneck, latency)


def _lex_optimum(keys: list[tuple[float, float, float]]) -> tuple[float, ...]:
    """Progressive minima: best first key, best second key among ties of the first, and so on."""
    best = []
    for pos in range(3):
        m = min(k[pos] for k in keys)
        best.append(m)
        keys = [k for k in keys if k[pos] <= m + TOL * abs(m) + TOL]
    return tuple(best)


def _check(result: Partition, inst: Instance, objective: str, rows: list, max_boards: int | None,
           n_stages: int | None) -> None:
    units, bytes_in, bytes_out, board, cap = inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap
    n = len(units)
    allowed = [r for r in rows if (max_boards is None or len(r[0]) - 1 <= max_boards)
               and (n_stages is None or len(r[0]) - 1 == n_stages)]
    assert allowed, "caller must expect InfeasibleError"
    b = result.bounds
    assert b[0] == 0 and b[-1] == n and all(x < y for x, y in zip(b, b[1:], strict=False))
    assert result.n_stages == len(b) - 1
    if max_boards is not None:
        assert result.n_stages <= max_boards
    if n_stages is not None:
        assert result.n_stages == n_stages
    assert all(c.fits(board, cap) for c in result.stage_costs)
    expect = pipeline_metrics(result.stage_costs, [board] * result.n_stages, bytes_in, [bytes_out[j - 1] for j in b[1:]])
    assert result.metrics == expect
    mine = {r[0]: r for r in rows}[b]  # the chosen partition is one of the feasible ones
    assert math.isclose(mine[1], result.metrics.bottleneck_us, rel_tol=1e-9)
    assert math.isclose(mine[2], result.metrics.latency_us, rel_tol=1e-9)
    opt = _lex_optimum([_key(objective, len(r[0]) - 1, r[1], r[2]) for r in allowed])
    got = _key(objective, result.n_stages, mine[1], mine[2])
    for g, o in zip(got, opt, strict=True):
        assert g == pytest.approx(o, rel=1e-7, abs=1e-7), (objective, b, got, opt)


# --------------------------------------------------------------------------- random instances
@dataclass(frozen=True)
class Instance:
    units: list[Cost]
    bytes_in: float
    bytes_out: list[float]
    cap: float
    board: Board
    shell: Cost


def _random_instance(rng: np.random.Generator) -> Instance:
    board = replace(TINY, link=Link(bandwidth_mbps=float(rng.choice([8.0, 80.0, 800.0])),
                                    latency_us=float(rng.choice([0.0, 3.0, 60.0]))))
    shell = _shell(board)
    if rng.random() < 0.3:  # a shell with its own cycles (e.g. a calibrated stream wrapper)
        shell = replace(shell, latency_cycles=float(rng.integers(0, 5000)), ii_cycles=float(rng.integers(0, 400)))
    n = int(rng.integers(3, 9)) if rng.random() < 0.8 else int(rng.integers(1, 3))
    cap = float(rng.choice([1.0, 0.85, 0.6]))
    # Tied values make the tie-break keys decide: equal ii values tie bottlenecks; cuts with equal
    # bytes_out tie on end-to-end latency (the units' latencies add up the same whatever the cuts),
    # and with a zero-latency link two cuts of 40 bytes tie with one of 80.
    ii_ties = rng.random() < 0.3
    bytes_mode = rng.choice(["wide", "few", "extreme"])
    integer = rng.random() < 0.6
    units = []
    for _ in range(n):
        fields = {}
        scale = float(rng.choice([0.05, 0.15, 0.35, 0.6, 0.95]))
        for r in RESOURCES:
            room = board.capped(r, cap) - getattr(shell, r)
            v = rng.uniform(0.0, scale) * room
            if rng.random() < 0.1:
                v = room  # barely fits alone
            fields[r] = float(math.floor(v)) if integer else float(v)
        ii = float(rng.choice([5, 50])) if ii_ties else float(rng.integers(1, 400))
        lat = ii + (float(rng.choice([10, 100])) if ii_ties else float(rng.integers(0, 900)))
        units.append(Cost(**fields, latency_cycles=lat, ii_cycles=ii))
    if bytes_mode == "few":
        bytes_out = [float(rng.choice([40, 80, 400])) for _ in range(n)]
    elif bytes_mode == "extreme":
        bytes_out = [float(rng.choice([4, 4000])) for _ in range(n)]
    else:
        bytes_out = [float(rng.choice([4, 40, 400, 4000]) * rng.uniform(0.5, 1.5)) for _ in range(n)]
    return Instance(units, float(rng.integers(1, 2000)), bytes_out, cap, board, shell)


def _solve_or_refuse(inst: Instance, rows: list, objective: str, max_boards: int | None, n_stages: int | None,
                     **kw: object) -> None:
    """Check the partition against the brute force ``rows``, or that it is refused where ``rows`` hold no
    partition within the limits."""
    allowed = [r for r in rows if (max_boards is None or len(r[0]) - 1 <= max_boards)
               and (n_stages is None or len(r[0]) - 1 == n_stages)]
    kwargs = dict(objective=objective, max_boards=max_boards, n_stages=n_stages, shell=inst.shell, **kw)
    if not allowed:
        with pytest.raises(InfeasibleError):
            partition_chain(inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap, **kwargs)
        return
    res = partition_chain(inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap, **kwargs)
    _check(res, inst, objective, rows, max_boards, n_stages)


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    for _ in range(25):
        inst = _random_instance(rng)
        n = len(inst.units)
        names = [f"layer{i}" for i in range(n)]
        rows = _brute(inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap, shell=inst.shell)
        modes: list[tuple[int | None, int | None]] = [(None, None)]
        modes += [(k, None) for k in range(1, n + 1)] + [(None, k) for k in range(1, n + 2)]
        for objective in OBJECTIVES:
            for max_boards, n_stages in modes:
                _solve_or_refuse(inst, rows, objective, max_boards, n_stages, unit_names=names)


@pytest.mark.parametrize("config", ["free-link-ties", "hop-vs-shell"])
def test_latency_objective_matches_brute_force(config: str) -> None:
    """Latency-specific cases: ties across cut sets and stage counts (a free link, cuts of 40 or
    80 bytes), and trades between a per-stage shell latency, hop latency and bytes at the cuts."""
    rng = np.random.default_rng(99)
    if config == "free-link-ties":
        board = replace(TINY, link=Link(bandwidth_mbps=80.0, latency_us=0.0))
        shell, sizes = _shell(board), [40, 80]
    else:
        board = replace(TINY, link=Link(bandwidth_mbps=800.0, latency_us=20.0))
        shell, sizes = replace(_shell(board), latency_cycles=1000.0, ii_cycles=50.0), [4, 400, 2000, 2500, 4000]
    for _ in range(150):
        n = int(rng.integers(3, 9))
        units = [Cost(lut=float(rng.integers(100, 600)), ff=100.0, dsp=float(rng.integers(0, 60)), bram18=1.0,
                      latency_cycles=float(rng.integers(0, 300)), ii_cycles=float(rng.integers(1, 400)))
                 for _ in range(n)]
        inst = Instance(units, 8.0, [float(rng.choice(sizes)) for _ in range(n)], 1.0, board, shell)
        rows = _brute(inst.units, inst.bytes_in, inst.bytes_out, board, 1.0, shell=shell)
        for max_boards, n_stages in [(None, None), (2, None), (3, None), (None, 2), (None, 3), (None, 4)]:
            allowed = [r for r in rows if (max_boards is None or len(r[0]) - 1 <= max_boards)
                       and (n_stages is None or len(r[0]) - 1 == n_stages)]
            if not allowed:
                continue
            res = partition_chain(units, 8.0, inst.bytes_out, board, 1.0, objective="latency",
                                  max_boards=max_boards, n_stages=n_stages, shell=shell)
            _check(res, inst, "latency", rows, max_boards, n_stages)


def test_matches_brute_force_with_segment_cost() -> None:
    """A non-additive estimator: extra LUT grows with the square of the stage length."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        inst = _random_instance(rng)
        n = len(inst.units)

        def seg(i: int, j: int, inst: Instance = inst) -> Cost:
            c = inst.shell
            for u in inst.units[i:j]:
                c = c + u
            return Cost(lut=c.lut + 15.0 * (j - i) ** 2, ff=c.ff, dsp=c.dsp, bram18=c.bram18,
                        latency_cycles=c.latency_cycles * 0.9 + 7, ii_cycles=c.ii_cycles + (j - i))

        calls: list[tuple[int, int]] = []

        def counted(i: int, j: int, seg: Callable[[int, int], Cost] = seg, calls: list = calls) -> Cost:
            calls.append((i, j))
            return seg(i, j)

        rows = _brute(inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap, seg=seg)
        for objective in OBJECTIVES:
            for max_boards in (None, 2):
                allowed = [r for r in rows if max_boards is None or len(r[0]) - 1 <= max_boards]
                calls.clear()
                args = (inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap)
                if not allowed:
                    with pytest.raises(InfeasibleError):
                        partition_chain(*args, objective=objective, max_boards=max_boards, segment_cost=counted)
                    continue
                res = partition_chain(*args, objective=objective, max_boards=max_boards, segment_cost=counted)
                assert len(calls) == len(set(calls)), "each stage is evaluated at most once"
                assert len(calls) <= n * (n + 1) // 2
                assert res.stage_costs == tuple(seg(i, j) for i, j in res.ranges)
                _check(res, inst, objective, rows, max_boards, None)


# --------------------------------------------------------------------------- specific behaviour
def _dense(dsp: float, ii: float = 10.0, lat: float = 40.0) -> Cost:
    return Cost(lut=100.0, ff=100.0, dsp=dsp, bram18=1.0, latency_cycles=lat, ii_cycles=ii)


def test_greedy_fill_is_not_optimal_but_partition_is() -> None:
    # Two units fit per board. Greedy packs units 0,1 together and sends unit 1's 8000 bytes;
    # the optimum cuts after unit 0, which sends 8 bytes.
    units = [_dense(40), _dense(40), _dense(40)]
    res = partition_chain(units, 8.0, [8.0, 8000.0, 8.0], TINY, 1.0, objective="throughput", max_boards=2)
    assert res.bounds == (0, 1, 3)
    link = (8.0 + 84 / BATCH) * 8 / 80  # 8 bytes in and out of each board
    assert res.metrics.bottleneck_us == pytest.approx(max(link, 2 * 40 / 100, 3.0 / BATCH))


def test_throughput_prefers_fewer_stages_on_ties() -> None:
    # six units of 20 cycles: 1.2 us of fabric on one board, under the 1.85 us its 8-byte links take
    units = [_dense(10, ii=10, lat=20) for _ in range(6)]
    res = partition_chain(units, 8.0, [8.0] * 6, TINY, 1.0, objective="throughput")
    assert res.n_stages == 1  # more boards do not improve the interval, so one board is used
    assert res.metrics.bottleneck_us == pytest.approx((8.0 + 84 / BATCH) * 8 / 80)


def test_latency_and_boards_objectives_differ_from_throughput() -> None:
    # Unit 1 has a long ii: throughput wants it alone; latency wants few hops.
    units = [_dense(30, ii=5, lat=10), _dense(30, ii=500, lat=600), _dense(30, ii=5, lat=10)]
    out = [8.0, 8.0, 8.0]
    thr = partition_chain(units, 8.0, out, TINY, 1.0, objective="throughput")
    lat = partition_chain(units, 8.0, out, TINY, 1.0, objective="latency")
    brd = partition_chain(units, 8.0, out, TINY, 1.0, objective="boards")
    assert lat.n_stages == 1 and brd.n_stages == 1
    assert thr.metrics.bottleneck_us <= lat.metrics.bottleneck_us
    assert lat.metrics.latency_us < partition_chain(units, 8.0, out, TINY, 1.0, n_stages=3).metrics.latency_us


def test_n_stages_uses_all_boards() -> None:
    units = [_dense(10) for _ in range(5)]
    for k in range(1, 6):
        res = partition_chain(units, 8.0, [8.0] * 5, TINY, 1.0, n_stages=k)
        assert res.n_stages == k


def test_unit_that_does_not_fit_is_named_with_resource_and_help() -> None:
    units = [_dense(10), _dense(312), _dense(10)]
    with pytest.raises(InfeasibleError) as err:
        partition_chain(units, 8.0, [8.0] * 3, TINY, 0.85, unit_names=["fc0", "fc1", "fc2"])
    msg = str(err.value)
    assert "'fc1'" in msg and "fc0" not in msg and "fc2" not in msg
    assert "DSP 312 of 85 allowed (367%)" in msg
    assert "reuse factor" in msg and "Resource strategy" in msg and "bigger board" in msg
    assert "tiny" in msg


def test_max_boards_too_small_says_minimum() -> None:
    units = [_dense(60) for _ in range(5)]  # one per board (60 + 60 > 100)
    with pytest.raises(InfeasibleError, match="at least 5 tiny boards"):
        partition_chain(units, 8.0, [8.0] * 5, TINY, 1.0, max_boards=3)
    with pytest.raises(InfeasibleError, match="needs at least 5"):
        partition_chain(units, 8.0, [8.0] * 5, TINY, 1.0, n_stages=4)


@pytest.mark.parametrize("seed", range(4))
def test_in_place_units_never_make_a_stage_alone(seed: int) -> None:
    """Units hls4ml computes in place (an io_stream flatten) join a neighbour's board: the partition equals
    the brute force over the partitions where every stage computes something, under every objective and
    stage count, and a count that needs a board of in-place units only is refused, saying why."""
    rng = np.random.default_rng(500 + seed)
    for _ in range(15):
        inst = _random_instance(rng)
        n = len(inst.units)
        if n < 2:
            continue
        flags = [bool(x) for x in rng.random(n) < 0.3]
        if all(flags):
            flags[0] = False
        inst = replace(inst, units=[Cost() if f else c for c, f in zip(inst.units, flags, strict=True)])
        rows = [r for r in _brute(inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap, shell=inst.shell)
                if not any(all(flags[i:j]) for i, j in zip(r[0][:-1], r[0][1:], strict=True))]
        for objective in OBJECTIVES:
            for n_stages in (None, *range(1, n + 1)):
                _solve_or_refuse(inst, rows, objective, None, n_stages, in_place=flags)
    with pytest.raises(InfeasibleError, match=r"only 2 units.*1 flatten\(s\) hls4ml computes in place.*at most 2 stages"):
        partition_chain([_dense(1), Cost(), _dense(1)], 8.0, [8.0] * 3, TINY, 1.0, n_stages=3,
                        in_place=[False, True, False], io_type="io_stream")


def test_more_stages_than_units() -> None:
    units = [_dense(10) for _ in range(4)]
    with pytest.raises(InfeasibleError, match="only 4 units"):
        partition_chain(units, 8.0, [8.0] * 4, TINY, 1.0, n_stages=5)


def test_bad_arguments() -> None:
    units = [_dense(10)]
    with pytest.raises(PlanError, match="objective"):
        partition_chain(units, 8.0, [8.0], TINY, 1.0, objective="speed")
    with pytest.raises(PlanError, match="max_boards"):
        partition_chain(units, 8.0, [8.0], TINY, 1.0, max_boards=0)
    with pytest.raises(PlanError, match="cap"):
        partition_chain(units, 8.0, [8.0], TINY, 1.5)
    with pytest.raises(ValueError):
        partition_chain(units, 8.0, [8.0, 8.0], TINY, 1.0)


def _reference_bottleneck(units: list[Cost], bytes_in: float, bytes_out: list[float], board: Board, cap: float,
                          k_max: int) -> float:
    """Plain O(K U^2) DP: best[k][j] = smallest bottleneck covering units [0, j) with k stages."""
    n = len(units)
    best = [[math.inf] * (n + 1) for _ in range(k_max + 1)]
    best[0][0] = 0.0
    for k in range(1, k_max + 1):
        for j in range(1, n + 1):
            for i in range(j):
                c = _shell(board)
                for u in units[i:j]:
                    c = c + u
                if not c.fits(board, cap):
                    continue
                cut = [bytes_in, *bytes_out]
                link = [(b + 84 / BATCH) * 8 / board.link.bandwidth_mbps for b in (cut[i], cut[j])]
                iv = max(c.latency_cycles / board.clock_mhz, *link, board.link.latency_us / BATCH)
                best[k][j] = min(best[k][j], max(best[k - 1][i], iv))
    return min(best[k][n] for k in range(1, k_max + 1))


def test_larger_chain_against_reference_dp_and_greedy_count() -> None:
    rng = np.random.default_rng(3)
    board = get_board("pynq-z2")
    for _ in range(3):
        n = 30
        units = [Cost(lut=float(rng.integers(500, 9000)), ff=float(rng.integers(500, 9000)),
                      dsp=float(rng.integers(0, 90)), bram18=float(rng.integers(0, 60)),
                      latency_cycles=float(rng.integers(5, 300)), ii_cycles=float(rng.integers(1, 64)))
                 for _ in range(n)]
        bytes_out = [float(rng.integers(16, 20000)) for _ in range(n)]
        # fewest boards = greedy fill (feasibility is monotone in the stage length)
        greedy, c = 1, _shell(board)
        for u in units:
            if (c + u).fits(board, 0.85):
                c = c + u
            else:
                greedy, c = greedy + 1, _shell(board) + u
        res = partition_chain(units, 64.0, bytes_out, board, 0.85, objective="boards")
        assert res.n_stages == greedy
        k = greedy + 2
        res = partition_chain(units, 64.0, bytes_out, board, 0.85, objective="throughput", max_boards=k)
        ref = _reference_bottleneck(units, 64.0, bytes_out, board, 0.85, k)
        assert res.metrics.bottleneck_us == pytest.approx(ref, rel=1e-12)
        assert res.n_stages <= k


def test_scales_to_long_chains() -> None:
    """500 units onto at most 64 boards, every objective, stays fast (loose bound, not a benchmark)."""
    import time

    rng = np.random.default_rng(11)
    board = get_board("pynq-z2")
    units = [Cost(lut=float(rng.integers(200, 4000)), ff=float(rng.integers(200, 5000)),
                  dsp=float(rng.integers(0, 30)), bram18=float(rng.integers(0, 12)),
                  latency_cycles=float(rng.integers(5, 200)), ii_cycles=float(rng.integers(1, 32)))
             for _ in range(500)]
    bytes_out = [float(rng.integers(16, 4000)) for _ in range(500)]
    t0 = time.perf_counter()
    for objective in OBJECTIVES:
        res = partition_chain(units, 64.0, bytes_out, board, 0.85, objective=objective, max_boards=64)
        assert res.n_stages <= 64
    assert time.perf_counter() - t0 < 20.0
