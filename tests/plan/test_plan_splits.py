"""make_plan with intra-layer splits: layers too big for a board are split on their own, and a
board budget buys throughput with splits. Planning side only (the bit-exact checks build and
simulate the plans elsewhere)."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest

from split4ml.boards import RESOURCES, Board, get_board
from split4ml.errors import InfeasibleError, PlanError
from split4ml.estimate.analytic import AnalyticEstimator
from split4ml.ir import Graph, Layer
from split4ml.plan.api import _split_policy, _split_stages, _unit_splits, make_plan
from split4ml.plan.chain import Partition
from split4ml.plan.partition import partition_chain
from split4ml.plan.planfile import Plan
from split4ml.plan.reuse import choose_settings
from split4ml.plan.split_options import split_options
from split4ml.settings import BuildSettings

PYNQ = get_board("pynq-z2")


def _dense(name: str, prev: str, n_in: int, n_out: int, rng: np.random.Generator, act: str | None = "relu") -> Layer:
    lim = math.sqrt(6.0 / (n_in + n_out))
    return Layer(name, "Dense", (n_in,), (n_out,), inputs=(prev,), activation=act,
                 params={"units": n_out, "use_bias": True},
                 weights={"kernel": rng.uniform(-lim, lim, size=(n_in, n_out)),
                          "bias": rng.uniform(-0.05, 0.05, size=n_out)})


def mlp(widths: list[int], seed: int = 0, name: str = "mlp") -> Graph:
    """Input (widths[0]) -> Dense relu ... -> Dense linear (widths[-1]) -> softmax."""
    rng = np.random.default_rng(seed)
    layers = [Layer("x", "Input", (widths[0],), (widths[0],))]
    prev = "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True), start=1):
        last = i == len(widths) - 1
        layers.append(_dense(f"fc{i}", prev, a, b, rng, act=None if last else "relu"))
        prev = f"fc{i}"
    layers.append(Layer("softmax", "Activation", (widths[-1],), (widths[-1],), inputs=(prev,), activation="softmax"))
    return Graph(name, tuple(layers), ("softmax",))


def _check_boards(plan: Plan, cap: float) -> None:
    """Every physical board of the plan, shard or not, fits under the cap."""
    for st in plan.stages:
        costs = [sh.cost for sh in st.shards] if st.split else [st.cost]
        for c in costs:
            for r in RESOURCES:
                assert getattr(c, r) <= st.board.capacity(r) * cap + 1e-6, (st.index, r)
    assert plan.n_boards == sum(len(st.shards) if st.split else 1 for st in plan.stages)


@pytest.fixture(scope="module")
def wide() -> Graph:
    return mlp([1024, 600, 10], seed=1, name="wide")


def test_wide_layer_does_not_fit_alone(wide: Graph) -> None:
    est = AnalyticEstimator()
    sets = choose_settings(wide, PYNQ, 0.85, est, BuildSettings())
    unit = wide.units()[0]
    assert unit[0].name == "fc1"
    assert not est.segment_cost(unit, sets, "io_parallel", PYNQ).fits(PYNQ, 0.85)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
def test_wide_layer_is_split_under_every_objective(wide: Graph, objective: str) -> None:
    plan = make_plan(wide, model="wide.keras", board=PYNQ, objective=objective)
    split = [st for st in plan.stages if st.split is not None]
    assert [st.split.layer for st in split] == ["fc1"]
    assert 2 <= split[0].split.parts <= 32 and len(split[0].shards) == split[0].split.parts
    _check_boards(plan, 0.85)
    assert [n for st in plan.stages for n in st.layers] == ["fc1", "fc2", "softmax"]
    if objective == "boards":  # the fewest boards: the smallest k that fits, plus one board for the rest
        assert plan.n_boards == split[0].split.parts + 1
        opts, _ = split_options(wide.units()[0], choose_settings(wide, PYNQ, 0.85, AnalyticEstimator(),
                                                                BuildSettings()), PYNQ, 0.85, AnalyticEstimator(),
                                "io_parallel")
        assert split[0].split.parts == min(o.k for o in opts)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
def test_planner_pricing_equals_the_plan(wide: Graph, objective: str) -> None:
    """The partitioner's figures for the chosen splits are the plan's (assemble prices it anew)."""
    est = AnalyticEstimator()
    build = BuildSettings()
    sets = choose_settings(wide, PYNQ, 0.85, est, build)
    units = wide.units()
    kw = dict(max_boards=None, reuse_factor=None, strategy=None, overrides={})
    policy = [_split_policy(u, sets, PYNQ, 0.85, est, "io_parallel", objective=objective, **kw) for u in units]
    assert policy == ["required", "none"]
    options = [_unit_splits(u, sets, PYNQ, 0.85, est, "io_parallel", required=True, n_units=2, **kw)
               if p == "required" else [] for u, p in zip(units, policy, strict=True)]
    costs = [est.segment_cost(u, sets, "io_parallel", PYNQ) for u in units]
    shell = est.shell_cost(PYNQ)
    unit_costs = [replace(c, lut=c.lut - shell.lut, ff=c.ff - shell.ff, dsp=c.dsp - shell.dsp,
                          bram18=c.bram18 - shell.bram18) for c in costs]
    out = [math.prod(u[-1].output_shape) * sets[u[-1].name].precision.result.storage_bytes for u in units]
    plan = make_plan(wide, model="wide.keras", board=PYNQ, objective=objective)
    part = partition_chain(unit_costs, 1024 * build.input_precision.storage_bytes, out, PYNQ, 0.85,
                           objective=objective, shell=shell, options=options, values_in=1024,
                           values_out=[math.prod(u[-1].output_shape) for u in units], batch=plan.batch)
    assert part.n_boards == plan.n_boards and part.n_stages == plan.n_stages
    assert part.metrics.bottleneck_us == pytest.approx(plan.metrics.bottleneck_us, rel=1e-6)
    # the source sends the model input to each shard of a first-layer neuron split: both count every copy
    assert part.metrics.latency_us == pytest.approx(plan.metrics.latency_us, rel=1e-6)


def test_the_source_link_bounds_every_plan_of_a_wide_input(wide: Graph) -> None:
    """1,024 inputs of 2 bytes take 16 us per sample on the host's 1 GbE link (plus the frame header):
    more shards cannot beat it, so the throughput plan is no faster than the fewest boards and uses no
    more of them."""
    thr = make_plan(wide, model="wide.keras", board=PYNQ, objective="throughput")
    few = make_plan(wide, model="wide.keras", board=PYNQ, objective="boards")
    assert thr.metrics.bottleneck == "source"
    assert thr.metrics.bottleneck_us == pytest.approx(thr.metrics.source_us)
    assert thr.metrics.bottleneck_us <= few.metrics.bottleneck_us * (1 + 1e-9)
    assert thr.n_boards <= few.n_boards
    capped = make_plan(wide, model="wide.keras", board=PYNQ, objective="throughput", max_boards=6)
    assert capped.n_boards <= 6
    assert few.metrics.bottleneck_us >= capped.metrics.bottleneck_us >= thr.metrics.bottleneck_us * (1 - 1e-9)


def test_no_budget_no_optional_splits() -> None:
    """Layers that fit are split only when a board budget is given (then throughput improves)."""
    g = mlp([64, 256, 10], seed=0)  # a small input: the fabric, not the source's link, is the bottleneck
    free = make_plan(g, model="m.keras", board=PYNQ)
    assert all(st.split is None for st in free.stages) and free.n_boards == free.n_stages
    budget = make_plan(g, model="m.keras", board=PYNQ, max_boards=8)
    assert budget.n_boards <= 8 and any(st.split is not None for st in budget.stages)
    assert budget.metrics.bottleneck_us < free.metrics.bottleneck_us
    _check_boards(budget, 0.85)
    # the boards objective never splits a layer that fits
    few = make_plan(g, model="m.keras", board=PYNQ, objective="boards", max_boards=8)
    assert all(st.split is None for st in few.stages)


def test_big_mlp_on_25_boards() -> None:
    """16-500-500-500-500-500-5, Resource strategy, at most 25 PYNQ-Z2 boards, throughput."""
    g = mlp([16, 500, 500, 500, 500, 500, 5], seed=0, name="big_mlp")
    est = AnalyticEstimator()
    sets = choose_settings(g, PYNQ, 0.85, est, BuildSettings(), strategy="Resource")
    too_big = [u[0].name for u in g.units() if not est.segment_cost(u, sets, "io_parallel", PYNQ).fits(PYNQ, 0.85)]
    t0 = time.perf_counter()
    plan = make_plan(g, model="big.keras", board=PYNQ, objective="throughput", max_boards=25, strategy="Resource")
    elapsed = time.perf_counter() - t0
    assert plan.n_boards <= 25
    _check_boards(plan, 0.85)
    split = {st.split.layer for st in plan.stages if st.split is not None}
    assert set(too_big) <= split and len(split) >= 4
    for st in plan.stages:
        for sh in st.shards:
            assert sh.settings[sh.layers[0]].strategy == "Resource"
    fewest = make_plan(g, model="big.keras", board=PYNQ, objective="boards", strategy="Resource")
    assert fewest.n_boards < plan.n_boards
    assert plan.metrics.bottleneck_us < fewest.metrics.bottleneck_us
    assert elapsed < 60.0


def test_layer_that_fits_no_split_is_named() -> None:
    tiny = Board(name="micro", part="xc-test", lut=6000, ff=12000, dsp=4, bram18=2, uram=0, clock_mhz=100.0,
                 backend="Vitis", link=PYNQ.link, shell_lut=2600.0, shell_ff=3600.0, shell_bram18=1.0)
    g = mlp([256, 256, 4], seed=2)
    with pytest.raises(InfeasibleError) as err:
        make_plan(g, model="m.keras", board=tiny)
    msg = str(err.value)
    assert "'fc1'" in msg and "split" in msg and "2..32" in msg and "bigger board" in msg


def test_board_budget_too_small_for_a_needed_split(wide: Graph) -> None:
    with pytest.raises(InfeasibleError) as err:
        make_plan(wide, model="wide.keras", board=PYNQ, max_boards=2)
    msg = str(err.value)
    assert "'fc1'" in msg and "--boards" in msg


def test_split_stages_keeps_a_merge_stage_only_where_assemble_cannot_derive_it() -> None:
    g = mlp([8, 6, 4, 3], seed=0)
    units = g.units()
    label = type("L", (), {})

    def opt(kind: str) -> object:
        o = label()
        o.label = type("C", (), {"spec": (kind,), "shard_settings": {"s": 1}, "tail_settings": {"t": 2}})()
        return o

    options = [[opt("input")], [opt("input")], [opt("input")]]
    metrics = make_plan(g, model="m.keras", board=PYNQ).metrics
    # group fc1, merge stage, plain fc2, group fc3, merge stage at the end
    part = Partition(bounds=(0, 1, 1, 2, 3, 3), stage_costs=(None,) * 5, metrics=metrics,
                     splits=(0, None, None, 0, None), tails=(False, True, False, False, True))
    stages, tails = _split_stages(part, units, options, PYNQ)
    assert [c.layers for c in stages] == [("fc1",), (), ("fc2",), ("fc3", "softmax")]
    splits = [c.split for c in stages]
    assert splits[0] == ("input",) and splits[1:3] == [None, None] and splits[3] == ("input",)
    assert stages[0].shard_settings == {"s": 1} and tails == {"t": 2} and all(c.board is PYNQ for c in stages)
    # merge stage before a split, and at the end: left to assemble
    part = Partition(bounds=(0, 1, 1, 2, 2), stage_costs=(None,) * 4, metrics=metrics,
                     splits=(0, None, 0, None), tails=(False, True, False, True))
    stages, _ = _split_stages(part, units[:2], options, PYNQ)
    assert [c.layers for c in stages] == [("fc1",), ("fc2",)] and [c.split for c in stages] == [("input",), ("input",)]


@pytest.mark.parametrize("widths", [[784, 16, 32, 10], [64, 256, 10]])
def test_the_planner_chooses_the_batch(widths: list[int]) -> None:
    """Without --batch: frames of 1 for latency; otherwise the smallest batch at which the plan made at
    256 samples a frame stays within 2 % of its bottleneck, planned again (optimally) at that batch."""
    from split4ml.plan.api import BATCH_SLACK, MAX_AUTO_BATCH
    from split4ml.plan.planfile import price_stages

    g = mlp(widths, seed=0)
    assert make_plan(g, model="m.keras", board=PYNQ, objective="latency").batch == 1
    assert make_plan(g, model="m.keras", board=PYNQ, batch=5).batch == 5
    widest = make_plan(g, model="m.keras", board=PYNQ, batch=MAX_AUTO_BATCH)
    plan = make_plan(g, model="m.keras", board=PYNQ)
    b = plan.batch
    assert 1 < b < MAX_AUTO_BATCH and plan.optimality.optimal

    def repriced(batch: int) -> float:
        return price_stages(widest.stages, batch, "io_parallel").bottleneck_us

    best = widest.metrics.bottleneck_us
    assert repriced(b) <= best * (1 + BATCH_SLACK) < repriced(b - 1)
    # a plan at a smaller batch is never faster; the one chosen is optimal at its batch
    assert best <= plan.metrics.bottleneck_us * (1 + 1e-9) <= repriced(b) * (1 + 1e-9)
    with pytest.raises(PlanError, match="--batch"):
        make_plan(g, model="m.keras", board=PYNQ, batch=0)


def test_throughput_offers_no_split_once_the_bottleneck_is_the_floor_no_split_can_lower(monkeypatch) -> None:
    """Every board pays its per-frame cost: when that is the bottleneck, the planner prices no optional
    split (the slow part of planning a short chain on many boards), and finds the plan that offering
    every bottleneck unit its splits finds."""
    import split4ml.plan.api as api
    import split4ml.plan.split_options as so

    g = mlp([16, 64, 64, 64, 10], seed=3)
    calls: list[str] = []
    real = so.split_options

    def counting(unit, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls.append(unit[0].name)
        return real(unit, *args, **kwargs)

    monkeypatch.setattr(so, "split_options", counting)
    plan = make_plan(g, model="m.keras", board=PYNQ, max_boards=16, batch=8)  # 200 us a frame: 25 us a sample
    m = plan.metrics
    assert m.bottleneck_us == pytest.approx(m.frame_bound_us) and calls == []
    monkeypatch.setattr(api, "_interval_floor", lambda part, board: 0.0)  # offer as before
    offered = make_plan(g, model="m.keras", board=PYNQ, max_boards=16, batch=8)
    assert calls  # the splits were priced ...
    assert (offered.n_boards, offered.metrics.bottleneck_us, offered.metrics.latency_us) == pytest.approx(
        (plan.n_boards, m.bottleneck_us, m.latency_us))  # ... and bought nothing


def test_throughput_still_offers_splits_where_the_fabric_is_the_bottleneck() -> None:
    g = mlp([64, 256, 10], seed=0)
    plan = make_plan(g, model="m.keras", board=PYNQ, max_boards=8, batch=256)
    assert plan.metrics.bottleneck_us > plan.metrics.frame_bound_us * 1.01
    assert any(st.split is not None for st in plan.stages)
