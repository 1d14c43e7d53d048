"""The partitioner with split groups (intra-layer splits) against brute-force enumeration.

The brute force enumerates every sequence of pipeline steps (plain stages with or without the tail
of the split before them, and every split option of every unit) and prices it with formulas written
out here, independently of ``split4ml.plan.metrics``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest

from split4ml.boards import RESOURCES, Board, Link, get_board
from split4ml.errors import InfeasibleError
from split4ml.estimate.base import Cost
from split4ml.plan.chain import OBJECTIVES, ChainPrice, Partition, SplitOption
from split4ml.plan.partition import partition_chain
from split4ml.plan.partition_split import solve_with_splits

TOL = 1e-9
BATCH = 8  # split4ml.plan.metrics.DEFAULT_BATCH

TINY = Board(name="tiny", part="xc-test", lut=1000, ff=2000, dsp=100, bram18=50, uram=0, clock_mhz=100.0,
             backend="Vitis", link=Link(bandwidth_mbps=80.0, latency_us=3.0),
             shell_lut=60.0, shell_ff=90.0, shell_dsp=0.0, shell_bram18=2.0)


def _shell(board: Board) -> Cost:
    return Cost(lut=board.shell_lut, ff=board.shell_ff, dsp=board.shell_dsp, bram18=board.shell_bram18)


@dataclass(frozen=True)
class Inst:
    units: list[Cost]
    bytes_in: float
    bytes_out: list[float]
    cap: float
    board: Board
    shell: Cost
    options: list[list[SplitOption]]


# --------------------------------------------------------------------------- brute force (reference)
Step = tuple  # ("plain", i, j, tail_option_or_None) | ("group", u, option)


def _sequences(n: int, options: Sequence[Sequence[SplitOption]]) -> list[list[Step]]:
    out: list[list[Step]] = []

    def rec(j: int, pending: int | None, acc: list[Step]) -> None:
        if j == n and pending is None:
            out.append(acc)
            return
        for j2 in range(j if pending is not None else j + 1, n + 1):
            rec(j2, None, [*acc, ("plain", j, j2, pending)])
        if pending is None and j < n:
            for o, opt in enumerate(options[j]):
                if j + opt.span <= n:  # a group covers its unit and, with span > 1, the units after it
                    rec(j + opt.span, o if opt.tail is not None else None, [*acc, ("group", j, o)])

    rec(0, None, [])
    return out


def _fits(c: Cost, board: Board, cap: float) -> bool:
    return all(getattr(c, r) <= board.capacity(r) * cap + 1e-9 for r in RESOURCES)


def _price(seq: list[Step], inst: Inst) -> tuple[float, float, int, int] | None:
    """(bottleneck_us, latency_us, boards, steps) of a step sequence, or None if a board overflows."""
    board, link = inst.board, inst.board.link

    def fan(k: int) -> int:  # copies the step before step k sends
        if k == len(seq) or seq[k][0] == "plain":
            return 1
        opt = inst.options[seq[k][1]][seq[k][2]]
        return opt.k if opt.kind == "neuron" else 1

    # the performance model (split4ml.plan.metrics), written out: frames of BATCH samples with an 84-byte
    # overhead each; no values given, so an io_parallel fabric takes its layers' latency
    bw, c0 = link.bandwidth_mbps, link.latency_us
    cut = [inst.bytes_in, *inst.bytes_out]

    def link_us(b: float, frames: int) -> float:
        return (b + frames * 84 / BATCH) * 8.0 / bw

    f0 = fan(0)
    bottleneck = max(link_us(f0 * inst.bytes_in, f0), link_us(cut[-1], 1))  # the source and the sink
    latency, boards = (BATCH * f0 * inst.bytes_in + f0 * 84) * 8.0 / bw, 0
    for k, step in enumerate(seq):
        f = fan(k + 1)
        if step[0] == "plain":
            _, i, j, tail = step
            c = inst.shell
            if tail is not None:
                c = c + inst.options[i - 1][tail].tail
            for u in inst.units[i:j]:
                c = c + u
            recv = sum(inst.options[i - 1][tail].shard_bytes_out) if tail is not None else cut[i]
            members = [(c, recv, f * cut[j])]
        else:
            u, opt = step[1], inst.options[step[1]][step[2]]
            recv = cut[u] if opt.kind == "neuron" else cut[u] / opt.k
            members = [(c, recv, f * b) for c, b in zip(opt.shard_costs, opt.shard_bytes_out, strict=True)]
        if not all(_fits(c, board, inst.cap) for c, _, _ in members):
            return None
        bottleneck = max(bottleneck, max(max(c.latency_cycles / board.clock_mhz, link_us(r, 1), link_us(b, f), c0 / BATCH)
                                         for c, r, b in members))
        latency += max(c0 + BATCH * c.latency_cycles / board.clock_mhz + (BATCH * b + f * 84) * 8.0 / bw
                       for c, _, b in members)
        boards += len(members)
    return bottleneck, latency, boards, len(seq)


def _key(objective: str, row: tuple[float, float, int, int]) -> tuple[float, float, float]:
    bottleneck, latency, boards, _ = row
    if objective == "throughput":
        return (bottleneck, boards, latency)
    if objective == "latency":
        return (latency, boards, bottleneck)
    return (boards, bottleneck, latency)


def _lex_optimum(keys: list[tuple[float, float, float]]) -> tuple[float, ...]:
    best = []
    for pos in range(3):
        m = min(k[pos] for k in keys)
        best.append(m)
        keys = [k for k in keys if k[pos] <= m + TOL * abs(m) + TOL]
    return tuple(best)


def _as_steps(p: Partition) -> list[Step]:
    seq: list[Step] = []
    for s, (i, j) in enumerate(p.ranges):
        if p.splits[s] is not None:
            assert j == i + p_options(p, i, s).span
            seq.append(("group", i, p.splits[s]))
        else:
            seq.append(("plain", i, j, p.splits[s - 1] if p.tails[s] else None))
    return seq


_OPTIONS: list = []  # the options of the instance being checked (for _as_steps)


def p_options(p: Partition, i: int, s: int) -> SplitOption:
    return _OPTIONS[i][p.splits[s]]


def _check(p: Partition, inst: Inst, objective: str, rows: dict, max_boards: int | None,
           n_stages: int | None) -> None:
    _OPTIONS[:] = inst.options
    seq = _as_steps(p)
    key = tuple(seq)
    assert key in rows, f"chosen steps {seq} are not a feasible sequence"
    mine = rows[key]
    assert p.n_boards == mine[2] and p.n_stages == mine[3]
    assert math.isclose(p.metrics.bottleneck_us, mine[0], rel_tol=1e-9)
    assert math.isclose(p.metrics.latency_us, mine[1], rel_tol=1e-9)
    if max_boards is not None:
        assert p.n_boards <= max_boards
    if n_stages is not None:
        assert p.n_stages == n_stages
    for s, costs in enumerate(p.board_costs):
        assert all(c.fits(inst.board, inst.cap) for c in costs)
        assert p.stage_costs[s].fits(inst.board, inst.cap)
    allowed = [r for r in rows.values() if (max_boards is None or r[2] <= max_boards)
               and (n_stages is None or r[3] == n_stages)]
    opt = _lex_optimum([_key(objective, r) for r in allowed])
    got = _key(objective, mine)
    for g, o in zip(got, opt, strict=True):
        assert g == pytest.approx(o, rel=1e-7, abs=1e-7), (objective, seq, got, opt)


# --------------------------------------------------------------------------- random instances
def _cost(rng: np.random.Generator, board: Board, cap: float, shell: Cost, scale: float) -> Cost:
    fields = {}
    for r in RESOURCES:
        room = board.capped(r, cap) - getattr(shell, r)
        v = rng.uniform(0.0, scale) * room
        fields[r] = float(math.floor(v))
    ii = float(rng.integers(1, 400))
    return Cost(**fields, latency_cycles=ii + float(rng.integers(0, 600)), ii_cycles=ii)


def _random_inst(rng: np.random.Generator, n_max: int = 5, spans: bool = False) -> Inst:
    board = replace(TINY, link=Link(bandwidth_mbps=float(rng.choice([8.0, 80.0, 800.0])),
                                    latency_us=float(rng.choice([0.0, 3.0, 60.0]))))
    shell = _shell(board)
    cap = float(rng.choice([1.0, 0.85]))
    n = int(rng.integers(1, n_max + 1))
    units, options = [], []
    for _ in range(n):
        big = rng.random() < 0.3
        units.append(_cost(rng, board, cap, shell, 1.6 if big else float(rng.choice([0.1, 0.4, 0.8]))))
        opts = []
        if big or rng.random() < 0.5:
            for _ in range(int(rng.integers(1, 4))):
                kind = str(rng.choice(["neuron", "input"]))
                k = int(rng.integers(2, 5))
                shards = tuple(_cost(rng, board, cap, shell, float(rng.choice([0.2, 0.5, 1.05]))) + shell
                               for _ in range(k))
                out = tuple(float(rng.choice([4, 40, 400])) for _ in range(k))
                tail = None
                if kind == "input" or rng.random() < 0.4:
                    tail = _cost(rng, board, cap, shell, float(rng.choice([0.05, 0.3, 0.9])))
                span = 1
                if spans and kind == "neuron" and tail is None and rng.random() < 0.6:
                    span = int(rng.integers(2, 4))  # also runs the (pooling) units after it
                opts.append(SplitOption(kind=kind, shard_costs=shards, shard_bytes_out=out, tail=tail, span=span))
        options.append(opts)
    bytes_out = [float(rng.choice([4, 40, 400, 4000])) for _ in range(n)]
    return Inst(units, float(rng.integers(1, 2000)), bytes_out, cap, board, shell, options)


def _brute_rows(inst: Inst) -> dict:
    rows = {}
    for seq in _sequences(len(inst.units), inst.options):
        r = _price(seq, inst)
        if r is not None:
            rows[tuple(seq)] = r
    return rows


def _solve(inst: Inst, **kw: object) -> Partition:
    return partition_chain(inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap, shell=inst.shell,
                           options=inst.options, unit_names=[f"u{i}" for i in range(len(inst.units))], **kw)


@pytest.mark.parametrize("seed", range(10))
def test_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    checked = 0
    for _ in range(12):
        inst = _random_inst(rng)
        if not any(inst.options):
            continue
        rows = _brute_rows(inst)
        max_b = max([r[2] for r in rows.values()], default=1)
        max_s = max([r[3] for r in rows.values()], default=1)
        modes: list[tuple[int | None, int | None]] = [(None, None)]
        modes += [(b, None) for b in range(1, max_b + 1)] + [(None, s) for s in range(1, max_s + 2)]
        modes += [(max_b - 1, s) for s in (1, 2, 3) if max_b > 1 and s <= max_b - 1]
        for objective in OBJECTIVES:
            for max_boards, n_stages in modes:
                checked += _solve_or_refuse(inst, rows, objective, max_boards, n_stages)
    assert checked > 0


def _solve_or_refuse(inst: Inst, rows: dict, objective: str, max_boards: int | None, n_stages: int | None,
                     **kw: object) -> int:
    """1 after checking the solver's partition against the brute force ``rows``; 0 after checking that it
    refuses where ``rows`` hold no sequence within the limits."""
    allowed = [r for r in rows.values() if (max_boards is None or r[2] <= max_boards)
               and (n_stages is None or r[3] == n_stages)]
    if not allowed:
        with pytest.raises(InfeasibleError):
            _solve(inst, objective=objective, max_boards=max_boards, n_stages=n_stages, **kw)
        return 0
    res = _solve(inst, objective=objective, max_boards=max_boards, n_stages=n_stages, **kw)
    _check(res, inst, objective, rows, max_boards, n_stages)
    return 1


@pytest.mark.parametrize("seed", range(4))
def test_in_place_units_join_a_computing_step(seed: int) -> None:
    """Units hls4ml computes in place (an io_stream flatten: no cost, no options) never make a plain stage
    alone; a merge stage (a split's tail) may hold them. Equal to the brute force over such sequences."""
    rng = np.random.default_rng(900 + seed)
    checked = 0
    for _ in range(12):
        inst = _random_inst(rng)
        n = len(inst.units)
        flags = [bool(x) and not inst.options[u] for u, x in enumerate(rng.random(n) < 0.4)]
        if not any(flags) or not any(inst.options):
            continue
        inst = replace(inst, units=[Cost() if f else c for c, f in zip(inst.units, flags, strict=True)])
        rows = {k: r for k, r in _brute_rows(inst).items()
                if not any(st[0] == "plain" and st[3] is None and all(flags[st[1]:st[2]]) for st in k)}
        for objective in OBJECTIVES:
            for n_stages in (None, 1, 2, 3, 4):
                checked += _solve_or_refuse(inst, rows, objective, None, n_stages, in_place=flags)
    assert checked > 0


def test_groups_spanning_the_pooling_after_them_match_brute_force() -> None:
    """Neuron options of span 2 or 3 (a split that also runs the channel-wise units after it on its shards)
    next to ordinary ones: the solver's optimum equals enumeration under every objective and limit."""
    rng = np.random.default_rng(900)
    checked = spanned = 0
    for _ in range(96):
        inst = _random_inst(rng, spans=True)
        if not any(o.span > 1 for opts in inst.options for o in opts):
            continue
        rows = _brute_rows(inst)
        max_b = max([r[2] for r in rows.values()], default=1)
        for objective in OBJECTIVES:
            for max_boards in (None, *range(1, max_b + 1)):
                allowed = [r for r in rows.values() if max_boards is None or r[2] <= max_boards]
                if not allowed:
                    with pytest.raises(InfeasibleError):
                        _solve(inst, objective=objective, max_boards=max_boards)
                    continue
                res = _solve(inst, objective=objective, max_boards=max_boards)
                _check(res, inst, objective, rows, max_boards, None)
                checked += 1
                spanned += any(g is not None and inst.options[i][g].span > 1
                               for (i, _), g in zip(res.ranges, res.splits, strict=True))
    assert checked > 0 and spanned > 0  # some optimum uses a spanning group


def test_latency_ties_and_fanout_trades() -> None:
    """Neuron splits on a slow link: fan-out makes the upstream stage pay k sends; the solver must
    weigh that against the shards' shorter intervals, exactly (brute force decides)."""
    rng = np.random.default_rng(42)
    board = replace(TINY, link=Link(bandwidth_mbps=8.0, latency_us=0.0))
    shell = _shell(board)
    for _ in range(60):
        n = int(rng.integers(2, 5))
        units = [Cost(lut=300.0, ff=100.0, dsp=float(rng.integers(20, 90)), bram18=1.0,
                      latency_cycles=float(rng.integers(100, 900)), ii_cycles=float(rng.integers(100, 800)))
                 for _ in range(n)]
        options = []
        for u in units:
            opts = []
            for k in (2, 3):
                shard = Cost(lut=shell.lut + 150.0, ff=shell.ff + 50.0, dsp=u.dsp / k, bram18=shell.bram18 + 1.0,
                             latency_cycles=u.latency_cycles / k, ii_cycles=u.ii_cycles / k)
                opts.append(SplitOption("neuron", (shard,) * k, (float(rng.choice([2, 20])),) * k,
                                        tail=None if rng.random() < 0.5 else Cost(lut=50.0, latency_cycles=5.0,
                                                                                 ii_cycles=3.0)))
            options.append(opts)
        inst = Inst(units, 16.0, [float(rng.choice([4, 40])) for _ in range(n)], 1.0, board, shell, options)
        rows = _brute_rows(inst)
        for objective in OBJECTIVES:
            for max_boards in (None, 3, 5):
                allowed = [r for r in rows.values() if max_boards is None or r[2] <= max_boards]
                if not allowed:
                    continue
                _check(_solve(inst, objective=objective, max_boards=max_boards), inst, objective, rows,
                       max_boards, None)


def test_generic_solver_equals_plain_solver_without_options() -> None:
    """With no option anywhere, the split solver (forced) finds the plain solver's optimum."""
    rng = np.random.default_rng(8)
    for _ in range(30):
        inst = _random_inst(rng, n_max=7)
        inst = replace(inst, units=[replace(u, dsp=min(u.dsp, 80.0)) for u in inst.units])
        n = len(inst.units)
        price = ChainPrice(inst.board, inst.bytes_in, inst.bytes_out)
        for objective in OBJECTIVES:
            for max_boards, n_stages in [(None, None), (2, None), (None, 2), (None, n)]:
                kw = dict(objective=objective, max_boards=max_boards, n_stages=n_stages, shell=inst.shell)
                try:
                    plain = partition_chain(inst.units, inst.bytes_in, inst.bytes_out, inst.board, inst.cap, **kw)
                except InfeasibleError:
                    with pytest.raises(InfeasibleError):
                        solve_with_splits(inst.units, price, inst.board,
                                          inst.cap, objective, max_boards, n_stages, [str(i) for i in range(n)],
                                          None, inst.shell, [()] * n)
                    continue
                gen = solve_with_splits(inst.units, price, inst.board, inst.cap,
                                        objective, max_boards, n_stages, [str(i) for i in range(n)], None,
                                        inst.shell, [()] * n)
                a = (plain.metrics.bottleneck_us, plain.n_stages, plain.metrics.latency_us)
                b = (gen.metrics.bottleneck_us, gen.n_boards, gen.metrics.latency_us)
                assert b == pytest.approx(a, rel=1e-9), (objective, max_boards, n_stages)
                assert gen.splits == (None,) * gen.n_stages and not any(gen.tails)


# --------------------------------------------------------------------------- specific behaviour
def _u(dsp: float, ii: float = 10.0, lat: float = 40.0) -> Cost:
    return Cost(lut=100.0, ff=100.0, dsp=dsp, bram18=1.0, latency_cycles=lat, ii_cycles=ii)


def test_unit_too_big_is_split_and_merge_stage_added() -> None:
    shell = _shell(TINY)
    big = _u(150)  # 150 DSP > 100: never fits alone
    shard = shell + _u(75, ii=5, lat=20)
    opt_in = SplitOption("input", (shard, shard), (8.0, 8.0), tail=_u(0, ii=1, lat=2))
    units = [_u(10), big]
    res = partition_chain(units, 8.0, [8.0, 8.0], TINY, 1.0, options=[[], [opt_in]], shell=shell)
    assert res.ranges == ((0, 1), (1, 2), (2, 2))
    assert res.splits == (None, 0, None) and res.tails == (False, False, True)
    assert res.n_stages == 3 and res.n_boards == 4
    assert res.board_costs[1] == (shard, shard)
    # A neuron split without a tail needs no merge stage; the stage before sends 2 copies.
    opt_n = SplitOption("neuron", (shard, shard), (4.0, 4.0))
    res = partition_chain(units, 8.0, [8.0, 8.0], TINY, 1.0, options=[[], [opt_n]], shell=shell)
    assert res.ranges == ((0, 1), (1, 2)) and res.n_boards == 3
    link = TINY.link  # stage 0 sends its 8 bytes twice, in two frames per batch
    send = (2 * 8.0 + 2 * 84 / BATCH) * 8 / link.bandwidth_mbps
    assert res.metrics.stage_interval_us[0] == pytest.approx(max(
        res.stage_costs[0].latency_cycles / 100, (8.0 + 84 / BATCH) * 8 / link.bandwidth_mbps, send,
        link.latency_us / BATCH))
    assert res.metrics.stage_interval_us[0] >= send


def test_unit_that_fits_nowhere_is_named() -> None:
    shell = _shell(TINY)
    too_big_shard = shell + _u(120)
    opt = SplitOption("neuron", (too_big_shard, too_big_shard), (4.0, 4.0))
    with pytest.raises(InfeasibleError) as err:
        partition_chain([_u(10), _u(300)], 8.0, [8.0, 8.0], TINY, 1.0, options=[[], [opt]], shell=shell,
                        unit_names=["fc1", "fc2"])
    msg = str(err.value)
    assert "'fc2'" in msg and "'fc1'" not in msg and "k=2" in msg


def test_board_limit_counts_shards() -> None:
    shell = _shell(TINY)
    shard = shell + _u(60, ii=5)
    opt = SplitOption("neuron", (shard,) * 3, (4.0,) * 3)
    units = [_u(10), _u(150), _u(10)]
    res = partition_chain(units, 8.0, [8.0] * 3, TINY, 1.0, options=[[], [opt], []], shell=shell, objective="boards")
    assert res.n_boards == 5 and res.n_stages == 3
    with pytest.raises(InfeasibleError, match="at least 5"):
        partition_chain(units, 8.0, [8.0] * 3, TINY, 1.0, options=[[], [opt], []], shell=shell, max_boards=4)


def test_throughput_uses_a_split_when_it_lowers_the_bottleneck() -> None:
    shell = _shell(TINY)
    slow = _u(40, ii=1000, lat=1000)
    shard = shell + _u(20, ii=250, lat=250)
    opt = SplitOption("neuron", (shard,) * 4, (2.0,) * 4)
    units = [_u(10), slow, _u(10)]
    fast_link = replace(TINY, link=Link(bandwidth_mbps=8000.0, latency_us=1.0))
    res = partition_chain(units, 8.0, [8.0] * 3, fast_link, 1.0, options=[[], [opt], []], shell=shell)
    assert res.splits[1] == 0 and res.n_boards == 6
    assert res.metrics.bottleneck_us < 10.0
    # the boards objective never splits a unit that fits
    res = partition_chain(units, 8.0, [8.0] * 3, fast_link, 1.0, options=[[], [opt], []], shell=shell,
                          objective="boards")
    assert res.n_boards == 1 and res.splits == (None,)
    # with at most 3 boards, no split
    res = partition_chain(units, 8.0, [8.0] * 3, fast_link, 1.0, options=[[], [opt], []], shell=shell, max_boards=3)
    assert all(s is None for s in res.splits)


def test_options_on_few_units_of_a_long_chain_stay_fast() -> None:
    rng = np.random.default_rng(11)
    board = get_board("pynq-z2")
    shell = _shell(board)
    n = 500
    units = [Cost(lut=float(rng.integers(200, 4000)), ff=float(rng.integers(200, 5000)),
                  dsp=float(rng.integers(0, 30)), bram18=float(rng.integers(0, 12)),
                  latency_cycles=float(rng.integers(5, 200)), ii_cycles=float(rng.integers(1, 32)))
             for _ in range(n)]
    options: list[list[SplitOption]] = [[] for _ in range(n)]
    for u in (10, 250, 499):
        units[u] = Cost(lut=9000.0, ff=9000.0, dsp=400.0, bram18=20.0, latency_cycles=3000.0, ii_cycles=3000.0)
        for k in range(2, 9):
            shard = shell + Cost(lut=9000.0 / k, ff=9000.0 / k, dsp=400.0 / k, bram18=20.0 / k,
                                 latency_cycles=3000.0 / k, ii_cycles=3000.0 / k)
            options[u].append(SplitOption("neuron", (shard,) * k, (64.0 / k,) * k))
            options[u].append(SplitOption("input", (shard,) * k, (128.0,) * k, tail=Cost(lut=500.0, ii_cycles=4.0)))
    bytes_out = [float(rng.integers(16, 4000)) for _ in range(n)]
    t0 = time.perf_counter()
    for objective in OBJECTIVES:
        res = partition_chain(units, 64.0, bytes_out, board, 0.85, objective=objective, max_boards=64, shell=shell,
                              options=options)
        assert res.n_boards <= 64
        assert all(res.splits[s] is not None for s, (i, j) in enumerate(res.ranges) if i in (10, 250, 499) and j == i + 1)
    assert time.perf_counter() - t0 < 30.0


def test_impossible_step_count_says_the_possible_range() -> None:
    shell = _shell(TINY)
    shard = shell + _u(75)
    opt = SplitOption("neuron", (shard, shard), (4.0, 4.0))
    units = [_u(10), _u(150)]
    for k in (1, 3):
        with pytest.raises(InfeasibleError, match="make 2 on tiny boards"):
            partition_chain(units, 8.0, [8.0, 8.0], TINY, 1.0, options=[[], [opt]], shell=shell, n_stages=k)
    tailed = SplitOption("input", (shard, shard), (4.0, 4.0), tail=_u(1))
    with pytest.raises(InfeasibleError, match="make 2 to 3 on tiny boards"):
        partition_chain(units, 8.0, [8.0, 8.0], TINY, 1.0, options=[[], [opt, tailed]], shell=shell, n_stages=4)
