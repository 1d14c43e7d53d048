"""The rule4ml estimator: range checks and fallback, request keys, the disk cache, planning with it.

Most tests use a stand-in predictor (a deterministic function of the request, counting its calls),
so they run without loading rule4ml; the tests marked slow call the real rule4ml.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import run_cli as _cli
from split4ml.boards import get_board
from split4ml.estimate.analytic import AnalyticEstimator
from split4ml.estimate.base import Cost
from split4ml.estimate.rule4ml import (
    EstimatorFallbackWarning,
    Rule4mlEstimator,
    Rule4mlRequest,
    rule4ml_board,
)
from split4ml.fixed import FixedType
from split4ml.ir import Graph, Layer
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings

PYNQ = get_board("pynq-z2")


class FakePredictor:
    """Stands in for rule4ml: figures from the request's shapes and reuse factors; counts calls.

    Deliberately not additive: a segment's LUTs grow with the square of its layer count.
    """

    def __init__(self) -> None:
        self.calls: list[Rule4mlRequest] = []

    def __call__(self, req: Rule4mlRequest) -> dict[str, float]:
        self.calls.append(req)
        n = len(req.layers)
        macs = sum(lyr.n_in * lyr.n_out for lyr in req.layers if lyr.kind == "Dense")
        rfs = [v["reuse_factor"] for v in req.hls_config["layer_name"].values()] or [1]
        return {"lut": 100.0 * n * n + macs / max(rfs), "ff": 50.0 * n, "dsp": macs / (64 * max(rfs)),
                "bram18": 1.0, "latency_cycles": 5.0 * n, "ii_cycles": float(max(rfs))}


def dense(name: str, n_in: int, n_out: int, act: str | None = "relu") -> Layer:
    return Layer(name, "Dense", (n_in,), (n_out,), params={"units": n_out, "use_bias": True}, activation=act)


def chain(widths: tuple[int, ...] = (16, 32, 32, 8)) -> list[Layer]:
    return [dense(f"fc{i}", a, b) for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False))]


def settings_for(layers: list[Layer], **kw) -> dict[str, LayerSettings]:
    return {lyr.name: LayerSettings(**kw) for lyr in layers}


@pytest.fixture
def fake() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def est(fake: FakePredictor, tmp_path: Path) -> Rule4mlEstimator:
    return Rule4mlEstimator(predictor=fake, cache_dir=tmp_path / "r4")


def test_board_mapping_by_name_and_part():
    assert rule4ml_board(PYNQ) == "pynq-z2"
    renamed = replace(get_board("zcu102"), name="my-zcu")
    assert rule4ml_board(renamed) == "zcu102"
    other = replace(PYNQ, name="custom", part="xc7a35tcpg236-1")
    assert rule4ml_board(other) is None


def test_segment_is_shell_plus_rule4ml_figures(est, fake):
    layers = chain()
    c = est.segment_cost(layers, settings_for(layers), "io_parallel", PYNQ)
    assert len(fake.calls) == 1
    shell = est.shell_cost(PYNQ)
    assert c.lut == pytest.approx(shell.lut + fake(fake.calls[0])["lut"])
    assert c.bram18 == pytest.approx(shell.bram18 + 1.0)
    assert est.segment_source(layers, settings_for(layers), "io_parallel", PYNQ) == "rule4ml"
    # one request per segment, layers renamed, RFs per layer, one model precision
    req = fake.calls[0]
    assert [lyr.name for lyr in req.layers] == ["l0", "l1", "l2"]
    assert req.hls_config["board"] == "pynq-z2"
    assert req.hls_config["model"]["precision"] == "ap_fixed<16,6>"
    assert req.hls_config["layer_name"] == {f"l{i}": {"reuse_factor": 1} for i in range(3)}


def test_cache_hit_in_memory_then_on_disk(est, fake, tmp_path):
    layers = chain()
    sets = settings_for(layers)
    first = est.segment_cost(layers, sets, "io_parallel", PYNQ)
    again = est.segment_cost(layers, sets, "io_parallel", PYNQ)
    assert again == first
    assert len(fake.calls) == 1 and est.calls == 1 and est.memory_hits == 1
    # a new estimator (a new process) with the same cache directory makes no rule4ml call
    other_fake = FakePredictor()
    other = Rule4mlEstimator(predictor=other_fake, cache_dir=tmp_path / "r4")
    assert other.segment_cost(layers, sets, "io_parallel", PYNQ) == first
    assert other_fake.calls == [] and other.disk_hits == 1
    assert len(list((tmp_path / "r4").rglob("*.json"))) == 1


def test_cache_key_is_content_not_names(est, fake):
    layers = chain()
    renamed = [lyr.with_(name=f"other_{i}") for i, lyr in enumerate(layers)]
    est.segment_cost(layers, settings_for(layers), "io_parallel", PYNQ)
    est.segment_cost(renamed, settings_for(renamed), "io_parallel", PYNQ)
    assert len(fake.calls) == 1
    # another reuse factor, another precision width or another board is another request
    sets = settings_for(layers)
    sets["fc1"] = LayerSettings(reuse_factor=2)
    est.segment_cost(layers, sets, "io_parallel", PYNQ)
    narrow = LayerPrecision(*(FixedType(8, 3),) * 4)
    est.segment_cost(layers, settings_for(layers, precision=narrow), "io_parallel", PYNQ)
    est.segment_cost(layers, settings_for(layers), "io_parallel", get_board("zcu102"))
    assert len(fake.calls) == 4
    assert len({r.key for r in fake.calls}) == 4


def test_segments_are_not_sums_of_layers(est):
    layers = chain()
    sets = settings_for(layers)
    whole = est.ip_cost(layers, sets, "io_parallel", PYNQ)
    parts = Cost()
    for lyr in layers:
        parts = parts + est.layer_cost(lyr, sets[lyr.name], "io_parallel", PYNQ)
    assert whole.lut != pytest.approx(parts.lut)
    assert est.additive is False


def _wide(layers: list[Layer]) -> dict[str, LayerSettings]:
    sets = settings_for(layers)
    wide = FixedType(24, 8)
    sets["fc1"] = LayerSettings(precision=LayerPrecision(weight=wide, bias=wide, result=wide, accum=wide))
    return sets


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("io_stream", "io_parallel"),
        ("reuse", "reuse factor 128"),
        ("mixed_width", "mixes bit widths"),
        ("too_wide", "24 bits"),
        ("mixed_strategy", "mixes the Latency and Resource"),
        ("clock", "300 MHz"),
        ("board", "no rule4ml predictor"),
    ],
)
def test_out_of_range_falls_back_to_analytic_with_a_warning(est, fake, case, needle):
    layers = chain()
    sets = settings_for(layers)
    io_type, board = "io_parallel", PYNQ
    if case == "io_stream":
        io_type = "io_stream"
    elif case == "reuse":
        sets["fc1"] = LayerSettings(reuse_factor=128, strategy="Latency")
    elif case == "mixed_width":
        sets = _wide(layers)
    elif case == "too_wide":
        wide = FixedType(24, 8)
        sets = settings_for(layers, precision=LayerPrecision(weight=wide, bias=wide, result=wide, accum=wide))
    elif case == "mixed_strategy":
        sets["fc1"] = LayerSettings(reuse_factor=4, strategy="Resource")
    elif case == "clock":
        board = get_board("alveo-u200")
    elif case == "board":
        board = replace(PYNQ, name="custom", part="xc7a35tcpg236-1")
    with pytest.warns(EstimatorFallbackWarning, match=needle):
        c = est.segment_cost(layers, sets, io_type, board)
    assert fake.calls == []
    assert c == AnalyticEstimator().segment_cost(layers, sets, io_type, board)
    assert est.segment_source(layers, sets, io_type, board) == "analytic"
    assert sum(est.fallbacks.values()) == 1
    # the same reason warns once per estimator, however many segments it covers
    with warnings.catch_warnings():
        warnings.simplefilter("error", EstimatorFallbackWarning)
        est.segment_cost(layers[:2], sets, io_type, board)
    assert sum(est.fallbacks.values()) == 2


def test_clock_check_can_be_relaxed(fake, tmp_path):
    relaxed = Rule4mlEstimator(predictor=fake, cache_dir=tmp_path, strict_clock=False)
    layers = chain()
    assert relaxed.unsupported_reason(layers, settings_for(layers), "io_parallel", get_board("alveo-u250")) is None


def _graph(layers: list[Layer]) -> Graph:
    inp = Layer("x", "Input", layers[0].input_shape, layers[0].input_shape)
    prev, out = inp.name, [inp]
    for lyr in layers:
        out.append(lyr.with_(inputs=(prev,)))
        prev = lyr.name
    return Graph("g", tuple(out), (prev,))


def test_plan_prices_segments_and_records_the_source(est, fake, tmp_path):
    from split4ml.plan.api import make_plan

    g = _graph(chain((16, 64, 64, 64, 64, 10)))
    plan = make_plan(g, model="g.keras", board=PYNQ, estimator=est, reuse_factor=1, strategy="Latency")
    assert plan.estimator == "rule4ml"
    assert fake.calls, "the planner priced segments with rule4ml"
    for st in plan.stages:
        assert st.estimate_source == "rule4ml"
        layers = [g.layer(n) for n in st.layers]
        assert st.cost == est.segment_cost(layers, st.settings, "io_parallel", PYNQ)
    d = plan.to_dict()
    assert d["estimator"] == "rule4ml"
    assert all(s["estimate_source"] == "rule4ml" for s in d["stages"])
    assert all(s["estimate_source"] == "rule4ml" for s in plan.to_json()["stages"])


def test_plan_outside_the_range_is_recorded_as_analytic(est, fake):
    from split4ml.plan.api import make_plan

    g = _graph(chain((16, 32, 10)))
    with pytest.warns(EstimatorFallbackWarning, match="io_stream"):
        plan = make_plan(g, model="g.keras", board=PYNQ, estimator=est, build=BuildSettings(io_type="io_stream"))
    assert fake.calls == []
    assert plan.estimator == "rule4ml"
    assert {st.estimate_source for st in plan.stages} == {"analytic"}


def test_get_estimator_names():
    from split4ml.errors import PlanError
    from split4ml.plan.api import get_estimator

    assert get_estimator("analytic").name == "analytic"
    assert get_estimator("rule4ml").name == "rule4ml"
    with pytest.raises(PlanError, match="available"):
        get_estimator("nope")
    with pytest.raises(PlanError, match="--calibration"):
        get_estimator("calibrated")


# ------------------------------------------------------------------------------------ the real rule4ml
@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    from split4ml.networks import deep_mlp

    p = tmp_path_factory.mktemp("r4models") / "mlp.keras"
    deep_mlp(widths=(16, 16), n_in=8, n_out=4).save(p)
    return p




@pytest.mark.slow
def test_cli_estimate_and_plan_with_real_rule4ml(monkeypatch, capsys, small_model, tmp_path):
    rc, out, err = _cli(monkeypatch, capsys, "estimate", str(small_model), "--estimator", "rule4ml", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["estimator"] == "rule4ml"
    assert d["total"]["source"] == "rule4ml"
    assert {row["source"] for row in d["layers"]} == {"rule4ml"}
    shell = d["total"]["shell"]
    for r in ("lut", "ff", "dsp", "bram18"):
        assert d["total"][r] >= shell[r]
    assert d["total"]["lut"] > shell["lut"]

    plan_file = tmp_path / "plan.yaml"
    rc, out, err = _cli(monkeypatch, capsys, "plan", str(small_model), "--estimator", "rule4ml", "-o",
                        str(plan_file), "--json")
    assert rc == 0, err
    p = json.loads(out)
    assert p["estimator"] == "rule4ml"
    assert {st["estimate_source"] for st in p["stages"]} == {"rule4ml"}
    text = plan_file.read_text()
    assert "estimator: rule4ml" in text and "estimate_source: rule4ml" in text

    # the plan file reads back (build/verify path) with the same estimator and the same estimates
    from split4ml.plan.api import load_plan

    again, _ = load_plan(plan_file)
    assert again.estimator == "rule4ml"
    assert [st.cost.resources() for st in again.stages] == [
        {k: pytest.approx(v) for k, v in st["resources"].items()} for st in p["stages"]]


@pytest.mark.slow
def test_real_predictor_is_reproducible_and_cached(tmp_path):
    layers = chain((16, 32, 8))
    sets = settings_for(layers)
    est = Rule4mlEstimator(cache_dir=tmp_path)
    a = est.segment_cost(layers, sets, "io_parallel", PYNQ)
    other = Rule4mlEstimator(cache_dir=tmp_path / "elsewhere")
    other.predictor = est.predictor  # same loaded models, no cache shared
    b = other.segment_cost(layers, sets, "io_parallel", PYNQ)
    assert a == b and est.calls == 1 and other.calls == 1
    assert a.lut > est.shell_cost(PYNQ).lut and a.latency_cycles > 0


@pytest.mark.slow
def test_fast_reuse_factor_rule_matches_rule4ml():
    from rule4ml.parsers.utils import get_closest_reuse_factor

    from split4ml.estimate.rule4ml import _closest_reuse_factor

    for n_in, n_out, rf in [(16, 8, 3), (36, 10, 7), (64, 64, 100), (12, 5, 61), (7, 3, 1), (100, 6, 250)]:
        assert _closest_reuse_factor(n_in, n_out, rf) == get_closest_reuse_factor(n_in, n_out, rf)


def test_every_priced_segment_reports_progress(est, fake):
    """The CLI's rule4ml progress bar is driven by on_request: calls and cache hits, as they happen."""
    seen: list[tuple[int, int]] = []
    est.on_request = lambda calls, hits: seen.append((calls, hits))
    layers = chain()
    sets = settings_for(layers)
    est.segment_cost(layers, sets, "io_parallel", PYNQ)
    est.segment_cost(layers, sets, "io_parallel", PYNQ)  # memory hit
    est.segment_cost(layers[:2], settings_for(layers[:2]), "io_parallel", PYNQ)
    assert seen == [(1, 0), (1, 1), (2, 1)]
