"""The split options the planner offers for one unit, and the per-layer fit they rely on."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from test_reuse import BOARD, FakeEstimator, _graph

from split4ml.estimate.hls_rules import valid_reuse_factors
from split4ml.fixed import FixedType
from split4ml.ir import Layer
from split4ml.plan.reuse import choose_settings, fit_layer
from split4ml.plan.split_options import ShardChoice, split_options
from split4ml.settings import BuildSettings, LayerSettings
from split4ml.shard import shard_unit


def test_fit_layer_smallest_valid_rf_latency_then_resource() -> None:
    g = _graph()
    fc1 = g.layer("fc1")
    unit = [fc1, g.layer("act1")]
    sets = choose_settings(g, BOARD, 1.0, FakeEstimator(), BuildSettings())
    # 2048 multipliers on 100 DSP: RF >= 20.5, the next valid one is 32 (as choose_settings picks)
    got = fit_layer(fc1, unit, sets, BOARD, 1.0, FakeEstimator(), "io_parallel")
    assert got is not None and (got[0].reuse_factor, got[0].strategy) == (32, "Latency")
    assert got[1].fits(BOARD, 1.0) and got[1].dsp == 64
    # a floor above: the next valid RF at or above it
    got = fit_layer(fc1, unit, sets, BOARD, 1.0, FakeEstimator(), "io_parallel", min_reuse_factor=33)
    assert got is not None and got[0].reuse_factor == 64
    # Latency never fits (60 LUT per weight): Resource
    got = fit_layer(fc1, unit, sets, BOARD, 1.0, FakeEstimator(latency_lut=60.0), "io_parallel")
    assert got is not None and (got[0].reuse_factor, got[0].strategy) == (32, "Resource")
    # only the strategy asked for
    assert fit_layer(fc1, unit, sets, BOARD, 1.0, FakeEstimator(latency_lut=60.0), "io_parallel",
                     strategy="Latency") is None


def _unit(n_in: int, n_out: int, act: str | None = "relu", softmax: bool = False, seed: int = 0) -> list[Layer]:
    rng = np.random.default_rng(seed)
    fc = Layer("fc", "Dense", (n_in,), (n_out,), inputs=("x",), activation=act, params={"units": n_out},
               weights={"kernel": rng.normal(size=(n_in, n_out)), "bias": rng.normal(size=n_out)})
    unit = [fc]
    if softmax:
        unit.append(Layer("sm", "Activation", (n_out,), (n_out,), inputs=("fc",), activation="softmax"))
    return unit


def _sets(unit: list[Layer]) -> dict[str, LayerSettings]:
    return {lyr.name: LayerSettings() for lyr in unit}


def test_options_cover_kinds_and_parts_and_every_shard_fits() -> None:
    unit = _unit(64, 40)
    est = FakeEstimator()
    opts, problems = split_options(unit, _sets(unit), BOARD, 1.0, est, "io_parallel", max_parts=8)
    kinds = [(o.kind, o.k) for o in opts]
    assert kinds == [("neuron", k) for k in range(2, 9)] + [("input", k) for k in range(2, 9)]
    assert not problems
    for o in opts:
        choice = o.label
        assert isinstance(choice, ShardChoice) and choice.spec.parts == o.k and choice.spec.kind == o.kind
        su = shard_unit(unit, "fc", o.kind, o.k, _sets(unit), shard_settings=choice.shard_settings)
        assert set(choice.shard_settings) == set(su.shard_settings)
        for piece, cost in zip(su.shards, o.shard_costs, strict=True):
            assert cost.fits(BOARD, 1.0)
            ls = choice.shard_settings[piece.layer.name]
            assert ls.reuse_factor in valid_reuse_factors(piece.layer, ls.strategy, "io_parallel")
            # the smallest valid RF that fits: the one below it does not
            smaller = [r for r in valid_reuse_factors(piece.layer, ls.strategy, "io_parallel") if r < ls.reuse_factor]
            if smaller and ls.strategy == "Latency":
                trial = {**piece.settings, piece.layer.name: replace(ls, reuse_factor=smaller[-1])}
                assert not est.segment_cost(piece.layers, trial, "io_parallel", BOARD).fits(BOARD, 1.0)
        sent = [math.prod(p.out_shape) * p.out_type.storage_bytes for p in su.shards]
        assert list(o.shard_bytes_out) == sent
        if o.kind == "neuron":
            assert o.tail is None and sum(sent) == 40 * 2  # relu stays in the shards; 16-bit results
        else:
            assert o.tail is not None  # the merge layer
            assert su.shards[0].out_type.width == 16 + math.ceil(math.log2(o.k))


def test_softmax_is_a_neuron_tail_and_parts_are_bounded_by_the_axis() -> None:
    unit = _unit(6, 3, act=None, softmax=True)
    opts, _ = split_options(unit, _sets(unit), BOARD, 1.0, FakeEstimator(), "io_parallel")
    neuron = [o for o in opts if o.kind == "neuron"]
    assert [o.k for o in neuron] == [2, 3]  # 3 output units
    assert all(o.tail is not None for o in neuron)
    assert [o.k for o in opts if o.kind == "input"] == list(range(2, 7))  # 6 input features


def test_saturating_accumulator_has_no_input_split() -> None:
    unit = _unit(16, 8)
    sat = LayerSettings(precision=replace(LayerSettings().precision, accum=FixedType(16, 6, saturation="SAT")))
    opts, problems = split_options(unit, {"fc": sat}, BOARD, 1.0, FakeEstimator(), "io_parallel", max_parts=4)
    assert {o.kind for o in opts} == {"neuron"}
    assert any("input split" in p and "WRAP" in p for p in problems)


def test_shards_that_never_fit_are_left_out_with_a_reason() -> None:
    unit = _unit(64, 40)
    # Latency only, 60 LUT per weight: a shard needs 64*40/k*60 LUT <= 100k -> k >= 2 (76.8k LUT at k=2)
    # but the shell takes 1000 LUT, so k=2 fits (76.8k + 1k); make it tighter with 90 LUT per weight:
    est = FakeEstimator(latency_lut=90.0)
    opts, problems = split_options(unit, _sets(unit), BOARD, 1.0, est, "io_parallel", max_parts=4,
                                   strategy="Latency", kinds=("neuron",))
    # 64*40*90/k + 1000 <= 100000 -> k >= 2.33: k = 3, 4 fit, k = 2 does not
    assert [o.k for o in opts] == [3, 4]
    assert len(problems) == 1 and "k=2" in problems[0] and "fits no board" in problems[0]


def test_non_compute_unit_has_no_options() -> None:
    act = Layer("a", "Activation", (4,), (4,), inputs=("x",), activation="relu")
    opts, problems = split_options([act], {"a": LayerSettings()}, BOARD, 1.0, FakeEstimator(), "io_parallel")
    assert opts == [] and "only" in problems[0]


@pytest.mark.parametrize("min_rf", [1, 40])
def test_user_reuse_factor_is_a_floor_for_shards(min_rf: int) -> None:
    unit = _unit(64, 40)
    opts, _ = split_options(unit, _sets(unit), BOARD, 1.0, FakeEstimator(), "io_parallel", max_parts=3,
                            min_reuse_factor=min_rf, kinds=("neuron",))
    assert opts
    for o in opts:
        assert all(s.reuse_factor >= min_rf for s in o.label.shard_settings.values())  # fused relu: compute only
