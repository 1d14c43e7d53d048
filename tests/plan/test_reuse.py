"""Per-layer settings choice (reuse factor, strategy, precision) with a fake estimator."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from split4ml.boards import Board, Link, get_board
from split4ml.errors import PlanError
from split4ml.estimate.base import AdditiveEstimator, Cost
from split4ml.estimate.hls_rules import mult_size, valid_reuse_factors
from split4ml.fixed import FixedType
from split4ml.ir import COMPUTE_KINDS, Graph, Layer
from split4ml.plan.reuse import choose_settings
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings

BOARD = Board(name="small", part="xc-test", lut=100_000, ff=200_000, dsp=100, bram18=100, uram=0, clock_mhz=100.0,
              backend="Vitis", link=Link(bandwidth_mbps=1000.0, latency_us=10.0), shell_lut=1000.0)


def _graph() -> Graph:
    rng = np.random.default_rng(0)
    layers = (
        Layer("in", "Input", (8, 8), (8, 8)),
        Layer("flat", "Flatten", (8, 8), (64,), inputs=("in",)),
        Layer("fc1", "Dense", (64,), (32,), inputs=("flat",), params={"units": 32, "use_bias": True},
              weights={"kernel": rng.normal(size=(64, 32)), "bias": np.zeros(32)}),
        Layer("act1", "Activation", (32,), (32,), inputs=("fc1",), activation="relu"),
        Layer("fc2", "Dense", (32,), (10,), inputs=("act1",), params={"units": 10, "use_bias": True},
              weights={"kernel": rng.normal(size=(32, 10)), "bias": np.zeros(10)}),
    )
    return Graph("toy", layers, ("fc2",))


class FakeEstimator(AdditiveEstimator):
    """DSP = multipliers = ceil(n_in*n_out/RF). Latency keeps weights in LUTs (``latency_lut`` per
    weight); Resource keeps them in BRAM. ``rf_lut`` LUTs per unit of RF model mux growth."""

    name = "fake"

    def __init__(self, latency_lut: float = 1.0, resource_lut: float = 1.0, rf_lut: float = 0.0,
                 act_dsp: float = 0.0) -> None:
        self.latency_lut, self.resource_lut, self.rf_lut, self.act_dsp = latency_lut, resource_lut, rf_lut, act_dsp
        self.calls: list[tuple[tuple[str, ...], dict[str, LayerSettings]]] = []

    def layer_cost(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        if layer.kind in COMPUTE_KINDS:
            n_in, n_out = mult_size(layer)
            mults = math.ceil(n_in * n_out / settings.reuse_factor)
            per_w = self.latency_lut if settings.strategy == "Latency" else self.resource_lut
            bram = 0.0 if settings.strategy == "Latency" else math.ceil(n_in * n_out * 16 / 18432)
            return Cost(lut=per_w * n_in * n_out + self.rf_lut * settings.reuse_factor, ff=10.0 * mults,
                        dsp=float(mults), bram18=float(bram), latency_cycles=float(settings.reuse_factor + 5),
                        ii_cycles=float(settings.reuse_factor))
        if layer.kind == "Activation":
            return Cost(lut=5.0 * layer.n_out, dsp=self.act_dsp)
        return Cost()

    def segment_cost(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                     board: Board) -> Cost:
        self.calls.append((tuple(lyr.name for lyr in layers), dict(settings)))
        return super().segment_cost(layers, settings, io_type, board)


def test_smallest_valid_latency_rf_that_fits() -> None:
    g, est, build = _graph(), FakeEstimator(), BuildSettings()
    s = choose_settings(g, BOARD, 1.0, est, build)
    assert list(s) == ["flat", "fc1", "act1", "fc2"]
    # fc1: 2048 multipliers on 100 DSP needs RF >= 20.5; 24 and 28 are not valid for 64x32, 32 is.
    assert (s["fc1"].reuse_factor, s["fc1"].strategy) == (32, "Latency")
    # fc2: 320 multipliers needs RF >= 3.2; the valid RFs of 32x10 are 1, 2, 4, 8, 16, 32, 64, 160, 320.
    assert (s["fc2"].reuse_factor, s["fc2"].strategy) == (4, "Latency")
    for name in ("flat", "act1"):
        assert (s[name].reuse_factor, s[name].strategy) == (1, "Latency")
    assert all(v.precision == build.layer_precision() for v in s.values())
    # the unit of fc1 (fc1 + act1) was priced together
    assert any(names == ("fc1", "act1") for names, _ in est.calls)


def test_activation_of_the_unit_counts() -> None:
    # act1 takes 40 DSP, so fc1 may have only 60 multipliers: RF >= 34.1 -> 64 (next valid after 32).
    s = choose_settings(_graph(), BOARD, 1.0, FakeEstimator(act_dsp=40.0), BuildSettings())
    assert s["fc1"].reuse_factor == 64


def test_cap_is_respected() -> None:
    # cap 0.5: 50 DSP -> fc1 RF >= 40.96 -> 64; fc2 RF >= 6.4 -> 8
    s = choose_settings(_graph(), BOARD, 0.5, FakeEstimator(), BuildSettings())
    assert (s["fc1"].reuse_factor, s["fc2"].reuse_factor) == (64, 8)


def test_resource_strategy_when_latency_never_fits() -> None:
    # Latency keeps 60 LUT per weight: fc1 (2048 weights) never fits 100k LUT; fc2 (320) does.
    s = choose_settings(_graph(), BOARD, 1.0, FakeEstimator(latency_lut=60.0), BuildSettings())
    assert (s["fc1"].reuse_factor, s["fc1"].strategy) == (32, "Resource")
    assert (s["fc2"].reuse_factor, s["fc2"].strategy) == (4, "Latency")


def test_nothing_fits_gives_smallest_max_utilisation() -> None:
    # Both strategies need > 100k LUT for fc1, LUT grows with RF and DSP shrinks with it.
    est = FakeEstimator(latency_lut=60.0, resource_lut=50.0, rf_lut=20.0)
    g = _graph()
    s = choose_settings(g, BOARD, 1.0, est, BuildSettings())
    fc1, act1 = g.layer("fc1"), g.layer("act1")
    best = None
    for strategy in ("Latency", "Resource"):
        for rf in valid_reuse_factors(fc1, strategy, "io_parallel"):
            ls = LayerSettings(reuse_factor=rf, strategy=strategy)
            c = est.shell_cost(BOARD) + est.layer_cost(fc1, ls, "io_parallel", BOARD)
            c = c + est.layer_cost(act1, LayerSettings(), "io_parallel", BOARD)
            assert not c.fits(BOARD, 1.0)
            key = c.max_utilization(BOARD)
            if best is None or key < best[0]:
                best = (key, rf, strategy)
    assert (s["fc1"].reuse_factor, s["fc1"].strategy) == (best[1], best[2])
    assert best[2] == "Resource" and best[1] > 1


def test_user_strategy_only_chooses_rf_under_it() -> None:
    s = choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(), strategy="resource")
    assert (s["fc1"].reuse_factor, s["fc1"].strategy) == (32, "Resource")
    assert (s["fc2"].reuse_factor, s["fc2"].strategy) == (4, "Resource")
    assert s["act1"].strategy == "Latency"


def test_global_rf_invalid_for_resource_names_every_layer() -> None:
    with pytest.raises(PlanError) as err:
        choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(), reuse_factor=12, strategy="Resource")
    msg = str(err.value)
    assert "'fc1'" in msg and "'fc2'" in msg and "reuse_factor 12" in msg
    assert "nearest valid: 8 or 16" in msg
    assert "change it to" in msg


def test_global_rf_kept_when_valid_or_latency() -> None:
    s = choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(), reuse_factor=32, strategy="Resource")
    assert (s["fc1"].reuse_factor, s["fc2"].reuse_factor) == (32, 32)
    assert s["flat"].reuse_factor == 1
    # hls4ml's Latency strategy keeps any reuse factor, so 12 is accepted as given
    s = choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(), reuse_factor=12, strategy="Latency")
    assert (s["fc1"].reuse_factor, s["fc2"].reuse_factor) == (12, 12)


def test_per_layer_rf_invalid_names_the_layer() -> None:
    with pytest.raises(PlanError) as err:
        choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(),
                        overrides={"fc2": {"reuse_factor": 5, "strategy": "Resource"}})
    msg = str(err.value)
    assert "'fc2'" in msg and "'fc1'" not in msg and "reuse_factor 5" in msg and "4 or 8" in msg


def test_user_rf_without_strategy_prefers_latency_then_resource() -> None:
    # RF 64 fits under Latency for fc1 with the default fake.
    s = choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(), overrides={"fc1": {"reuse_factor": 64}})
    assert (s["fc1"].reuse_factor, s["fc1"].strategy) == (64, "Latency")
    assert s["fc2"].reuse_factor == 4  # chosen, not the override of fc1
    # With Latency too big in LUTs, the same RF goes to the Resource strategy.
    s = choose_settings(_graph(), BOARD, 1.0, FakeEstimator(latency_lut=60.0), BuildSettings(),
                        overrides={"fc1": {"reuse_factor": 64}})
    assert (s["fc1"].reuse_factor, s["fc1"].strategy) == (64, "Resource")


def test_unknown_override_layers_and_fields() -> None:
    with pytest.raises(PlanError, match="'fc9'"):
        choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(), overrides={"fc9": {"reuse_factor": 1}})
    with pytest.raises(PlanError, match="ReuseFactor"):
        choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(), overrides={"fc1": {"ReuseFactor": 1}})
    with pytest.raises(PlanError, match="strategy"):
        choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), BuildSettings(), strategy="Fast")


def test_precision_overrides() -> None:
    build = BuildSettings()
    lp = LayerPrecision(weight=FixedType(8, 3), bias=FixedType(8, 3), result=FixedType(10, 4), accum=FixedType(20, 8))
    s = choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), build, overrides={
        "fc1": {"precision": {"weight": "ap_fixed<8,2>"}},
        "fc2": {"precision": lp},
        "act1": {"precision": "ap_fixed<12,4>"},
    })
    assert s["fc1"].precision.weight == FixedType(8, 2)
    assert s["fc1"].precision.result == build.layer_precision().result
    assert s["fc2"].precision == lp
    assert s["act1"].precision.result == FixedType(12, 4)
    with pytest.raises(PlanError, match="fc1"):
        choose_settings(_graph(), BOARD, 1.0, FakeEstimator(), build, overrides={"fc1": {"precision": {"wieght": "x"}}})


def test_with_the_analytic_estimator() -> None:
    from split4ml.estimate.analytic import AnalyticEstimator

    rng = np.random.default_rng(1)
    g = Graph("mlp", (
        Layer("in", "Input", (256,), (256,)),
        Layer("fc1", "Dense", (256,), (128,), inputs=("in",), activation="relu", params={"units": 128, "use_bias": True},
              weights={"kernel": rng.normal(0, 0.3, size=(256, 128)), "bias": np.zeros(128)}),
        Layer("fc2", "Dense", (128,), (10,), inputs=("fc1",), params={"units": 10, "use_bias": True},
              weights={"kernel": rng.normal(0, 0.3, size=(128, 10)), "bias": np.zeros(10)}),
        Layer("sm", "Activation", (10,), (10,), inputs=("fc2",), activation="softmax"),
    ), ("sm",))
    board, est, build = get_board("pynq-z2"), AnalyticEstimator(), BuildSettings()
    s = choose_settings(g, board, 0.85, est, build)
    for unit in g.units():
        lyr = unit[0]
        ls = s[lyr.name]
        assert ls.reuse_factor in valid_reuse_factors(lyr, ls.strategy, build.io_type)
        assert est.segment_cost(list(unit), s, build.io_type, board).fits(board, 0.85)
    # the 32k-weight layer cannot run fully parallel on a Zynq-7020
    assert s["fc1"].reuse_factor > 1
