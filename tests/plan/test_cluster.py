"""Mixed clusters (--cluster) and the joint per-layer settings through make_plan."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from cli_helpers import run_cli as run
from split4ml.boards import get_board
from split4ml.errors import InfeasibleError, PlanError
from split4ml.estimate import hls_rules
from split4ml.estimate.analytic import AnalyticEstimator
from split4ml.frontends.keras import graph_from_keras
from split4ml.ir import COMPUTE_KINDS
from split4ml.plan.api import make_plan
from split4ml.plan.cluster import cluster_from_dict, homogeneous, read_cluster
from split4ml.plan.reuse import choose_settings
from split4ml.plan.versions import unit_versions
from split4ml.settings import BuildSettings

sys.path.insert(0, str(Path(__file__).parent))
from test_joint import brute_force  # noqa: E402

PYNQ = get_board("pynq-z2")
ZCU = get_board("zcu102")


@pytest.fixture(scope="module")
def deep():
    from split4ml.networks import deep_mlp

    return graph_from_keras(deep_mlp(seed=1))


@pytest.fixture(scope="module")
def mnist():
    from split4ml.networks import mnist_fcnn

    return graph_from_keras(mnist_fcnn(seed=0))


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


# ------------------------------------------------------------------ the cluster file
def test_cluster_file_reads_types_counts_order_links(tmp_path):
    p = _write(tmp_path, {"boards": [{"type": "pynq-z2", "count": 3}, {"type": "zcu102", "count": 1}],
                          "order": "fixed", "links": {"latency_us": 40}})
    cl = read_cluster(p)
    assert [b.name for b in cl.sequence] == ["pynq-z2"] * 3 + ["zcu102"]
    assert cl.n_boards == 4 and cl.order == "fixed"
    assert all(b.link.latency_us == 40 and b.link.bandwidth_mbps == PYNQ.link.bandwidth_mbps for b in cl.types)
    pool = cl.pool()
    assert pool.order == (0, 0, 0, 1)
    free = cluster_from_dict({"boards": [{"type": "pynq-z2", "count": 2}, {"type": "zcu102"}]})
    assert free.pool().counts == (2, 1) and free.order == "free"


@pytest.mark.parametrize(("data", "field"), [
    ({"boards": [{"type": "pynq-z3", "count": 2}]}, r"boards\[0\]\.type: unknown board 'pynq-z3'"),
    ({"boards": [{"type": "pynq-z2", "count": 0}]}, r"boards\[0\]\.count: 0 must be a whole number >= 1"),
    ({"boards": [{"type": "pynq-z2", "count": 2}], "order": "random"}, r"order 'random' is not one of free, fixed"),
    ({"boards": []}, r"boards: expected a non-empty list"),
    ({"boards": [{"type": "pynq-z2", "cnt": 2}]}, r"boards\[0\]: unknown field\(s\) \['cnt'\]"),
    ({"boards": [{"type": "pynq-z2", "link": {"bandwidth_mbps": 0}}]}, r"boards\[0\]\.link: bandwidth_mbps must be > 0"),
])
def test_cluster_file_errors_name_the_field(tmp_path, data, field):
    with pytest.raises(PlanError, match=field):
        read_cluster(_write(tmp_path, data))


def test_too_few_boards_names_the_boards_field(tmp_path, deep):
    cl = read_cluster(_write(tmp_path, {"boards": [{"type": "pynq-z2", "count": 1}]}))
    with pytest.raises(PlanError, match=r"cluster.yaml: boards \(1 x pynq-z2 \(free order\)\).*add boards"):
        make_plan(deep, model="deep", board=PYNQ, cluster=cl, n_stages=2)


def test_unit_fitting_no_cluster_board_is_named(mnist):
    tiny = cluster_from_dict({"boards": [{"type": "pynq-z2", "count": 8}]})
    with pytest.raises(InfeasibleError, match="fc1"):
        make_plan(mnist, model="m", board=PYNQ, cluster=tiny, cap=0.05)


# ------------------------------------------------------------------ mixed plans
def test_mixed_cluster_uses_the_big_board_for_the_big_stage(deep):
    cl = cluster_from_dict({"boards": [{"type": "pynq-z2", "count": 4}, {"type": "zcu102", "count": 1}]})
    p = make_plan(deep, model="deep", board=PYNQ, cluster=cl, objective="boards")
    # one ZCU102 holds what needs more than one PYNQ-Z2
    alone = make_plan(deep, model="deep", board=PYNQ, objective="boards", max_boards=4)
    assert p.n_boards <= alone.n_boards
    assert {st.board.name for st in p.stages} <= {"pynq-z2", "zcu102"}
    for st in p.stages:
        assert st.cost.fits(st.board, 0.85)
    j = p.to_json()
    assert all(s["board_type"] == s["board"] for s in j["stages"])
    for s in j["stages"]:
        for e in s["layer_settings"]:
            assert set(e) == {"name", "reuse_factor", "strategy", "precision"}
            assert set(e["precision"]) >= {"weight", "result"}


def test_fixed_order_respects_the_sequence(deep):
    cl = cluster_from_dict({"boards": [{"type": "zcu102", "count": 1}, {"type": "pynq-z2", "count": 3}],
                            "order": "fixed"})
    p = make_plan(deep, model="deep", board=PYNQ, cluster=cl, objective="throughput", n_stages=3)
    names = [st.board.name for st in p.stages]
    assert len(names) == 3
    seq = [b.name for b in cl.sequence]
    # the stage boards are a subsequence of the cluster's board sequence
    it = iter(seq)
    assert all(any(n == s for s in it) for n in names)


def test_mixed_plan_file_round_trips(tmp_path, deep):
    from split4ml.plan.api import resolve_plan
    from split4ml.plan.planfile import read_plan_spec

    cl = cluster_from_dict({"boards": [{"type": "pynq-z2", "count": 1}, {"type": "zcu102", "count": 1}],
                            "order": "fixed"})
    p = make_plan(deep, model="deep", board=PYNQ, cluster=cl, n_stages=2)
    assert [st.board.name for st in p.stages] == ["pynq-z2", "zcu102"]
    path = tmp_path / "plan.yaml"
    p.write(path)
    q = resolve_plan(read_plan_spec(path), deep)
    assert [st.board.name for st in q.stages] == ["pynq-z2", "zcu102"]
    assert q.settings == p.settings
    assert math.isclose(q.metrics.bottleneck_us, p.metrics.bottleneck_us, rel_tol=1e-9)


# ------------------------------------------------------------------ joint settings through make_plan
def _brute_force_plan(graph, boards, counts, objective, batch, cap=0.85):
    """Brute force over the same versions the planner sees (every assignment, every partition)."""
    from split4ml.plan.joint import BoardPool

    est = AnalyticEstimator()
    build = BuildSettings()
    settings = choose_settings(graph, boards[0], cap, est, build)
    costs = []
    for u in graph.units():
        vs = unit_versions(u, settings, boards, cap, est, build.io_type,
                           free=any(lyr.kind in COMPUTE_KINDS for lyr in u))
        costs.append([v.costs for v in vs])
    units = graph.units()
    bytes_out = [math.prod(u[-1].output_shape) * settings[u[-1].name].precision.result.storage_bytes for u in units]
    values_out = [math.prod(u[-1].output_shape) for u in units]
    bytes_in = math.prod(graph.input.output_shape) * build.input_precision.storage_bytes
    pool = BoardPool(types=tuple(boards), counts=tuple(counts), shells=tuple(est.shell_cost(b) for b in boards))
    return brute_force(costs, float(bytes_in), bytes_out, pool, cap, objective, values_in=math.prod(graph.input.output_shape),
                       values_out=values_out, batch=batch)


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
def test_make_plan_joint_matches_brute_force(mnist, objective):
    from test_joint import _keys, _tie

    p = make_plan(mnist, model="m", board=PYNQ, objective=objective, max_boards=3)
    got = _keys(objective, p.metrics, p.n_boards)
    want = _brute_force_plan(mnist, [PYNQ], [3], objective, p.batch)
    assert all(g <= _tie(w) and w <= _tie(g) for g, w in zip(got, want, strict=True)), (got, want)


@pytest.mark.parametrize("objective", ["throughput", "boards"])
def test_make_plan_mixed_matches_brute_force(mnist, objective):
    from test_joint import _keys, _tie

    cl = cluster_from_dict({"boards": [{"type": "pynq-z2", "count": 2}, {"type": "zcu102", "count": 1}]})
    p = make_plan(mnist, model="m", board=PYNQ, objective=objective, cluster=cl)
    got = _keys(objective, p.metrics, p.n_boards)
    want = _brute_force_plan(mnist, [PYNQ, ZCU], [2, 1], objective, p.batch)
    assert all(g <= _tie(w) and w <= _tie(g) for g, w in zip(got, want, strict=True)), (got, want)


def test_joint_never_worse_than_the_two_step_choice(deep):
    for objective in ("throughput", "latency", "boards"):
        a = make_plan(deep, model="d", board=PYNQ, objective=objective)
        b = make_plan(deep, model="d", board=PYNQ, objective=objective, joint=False)
        from split4ml.plan.design import better, objective_key

        assert not better(objective_key(b.metrics, b.n_boards, objective),
                          objective_key(a.metrics, a.n_boards, objective))


def test_joint_settings_are_valid_and_pinned_stay_pinned(deep):
    cfg = {"LayerName": {"fc2": {"ReuseFactor": 8, "Strategy": "Latency"}}}
    p = make_plan(deep, model="d", board=PYNQ, objective="boards", hls_config=cfg)
    s = p.settings
    assert s["fc2"].reuse_factor == 8 and s["fc2"].strategy == "Latency"
    for lyr in deep.body:
        if lyr.kind in COMPUTE_KINDS:
            st = s[lyr.name]
            assert st.reuse_factor in hls_rules.valid_reuse_factors(lyr, st.strategy, "io_parallel")
            assert hls_rules.hls4ml_would_change(lyr, st.reuse_factor, st.strategy) is None
    only_resource = make_plan(deep, model="d", board=PYNQ, objective="boards", strategy="Resource")
    assert {st.strategy for n, st in only_resource.settings.items() if deep.layer(n).kind in COMPUTE_KINDS} \
        == {"Resource"}


def test_versions_are_capped_and_pareto(deep):
    est = AnalyticEstimator()
    settings = choose_settings(deep, PYNQ, 0.85, est, BuildSettings())
    for u in deep.units():
        vs = unit_versions(u, settings, [PYNQ], 0.85, est, "io_parallel",
                           free=any(lyr.kind in COMPUTE_KINDS for lyr in u), max_versions=4)
        assert 1 <= len(vs) <= 4
        for a, b in itertools.permutations(vs, 2):  # no kept version dominates another
            fa = [getattr(a.costs[0], f) for f in ("lut", "ff", "dsp", "bram18", "ii_cycles", "latency_cycles")]
            fb = [getattr(b.costs[0], f) for f in ("lut", "ff", "dsp", "bram18", "ii_cycles", "latency_cycles")]
            assert not (all(x <= y for x, y in zip(fa, fb, strict=True)) and fa != fb)


def test_homogeneous_cluster_equals_board_option(deep):
    a = make_plan(deep, model="d", board=PYNQ, objective="boards", max_boards=5)
    b = make_plan(deep, model="d", board=PYNQ, objective="boards", cluster=homogeneous(PYNQ, 5))
    assert a.n_boards == b.n_boards and math.isclose(a.metrics.bottleneck_us, b.metrics.bottleneck_us)


# ------------------------------------------------------------------ CLI
def test_cli_plan_cluster_json(monkeypatch, capsys, tmp_path):
    from split4ml.networks import deep_mlp

    model = tmp_path / "deep.keras"
    deep_mlp(seed=1).save(model)
    cl = _write(tmp_path, {"boards": [{"type": "pynq-z2", "count": 2}, {"type": "zcu102", "count": 1}],
                           "order": "free"})
    rc, out, _ = run(monkeypatch, capsys, "plan", str(model), "--cluster", str(cl), "--objective", "boards",
                     "-o", str(tmp_path / "p.yaml"), "--json")
    assert rc == 0
    d = json.loads(out)
    assert all(s["board_type"] in ("pynq-z2", "zcu102") for s in d["stages"])
    assert all({"name", "reuse_factor", "strategy", "precision"} <= set(e) for s in d["stages"]
               for e in s["layer_settings"])
    bad = _write(tmp_path, {"boards": [{"type": "nope", "count": 1}]})
    rc, out, err = run(monkeypatch, capsys, "plan", str(model), "--cluster", str(bad), "-o", str(tmp_path / "q.yaml"))
    assert rc != 0 and "boards[0].type" in err and "Traceback" not in err


# ------------------------------------------------------------------ build + verify a mixed plan
@pytest.mark.slow
def test_mixed_plan_builds_and_verifies_bit_exact(monkeypatch, capsys, tmp_path):
    """A PYNQ-Z2 (VivadoAccelerator) then an Alveo U200 (Vitis): each board gets its backend, and the
    chained C-simulations equal the whole model's."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16,), name="x")
    h = keras.layers.Dense(12, activation="relu", name="fc1")(inp)
    out = keras.layers.Dense(6, name="fc2")(h)
    model = tmp_path / "tiny.keras"
    keras.Model(inp, out).save(model)
    cl = _write(tmp_path, {"boards": [{"type": "pynq-z2", "count": 1}, {"type": "alveo-u200", "count": 1}],
                           "order": "fixed"})
    plan = tmp_path / "plan.yaml"
    rc, out_s, _ = run(monkeypatch, capsys, "plan", str(model), "--cluster", str(cl), "--stages", "2",
                       "-o", str(plan), "--json")
    assert rc == 0, out_s
    assert [s["board_type"] for s in json.loads(out_s)["stages"]] == ["pynq-z2", "alveo-u200"]
    rc, out_s, _ = run(monkeypatch, capsys, "build", str(plan), "-o", str(tmp_path / "build"), "--json")
    assert rc == 0
    assert [s["backend"] for s in json.loads(out_s)["stages"]] == ["VivadoAccelerator", "Vitis"]
    rc, out_s, _ = run(monkeypatch, capsys, "verify", str(plan), "--samples", "200", "--json")
    v = json.loads(out_s)
    assert rc == 0 and v["bit_exact"] and v["mismatched_samples"] == 0 and v["n_stages"] == 2


def test_long_stages_on_a_big_board_round_their_fronts_and_say_so():
    """29 Dense layers on 4 PYNQ-Z2 + 1 ZCU102: the ZCU102's long stages have Pareto fronts too large to
    keep whole, so they are rounded (conservatively: every stage still fits). Feasibility and the
    final plan are read from the same rounded rows, and the plan says it is not proven optimal."""
    import numpy as np
    from test_plan_splits import mlp

    rng = np.random.default_rng(0)
    g = mlp([64, *(int(rng.choice((64, 96, 128))) for _ in range(28)), 10], seed=0)
    cl = cluster_from_dict({"boards": [{"type": "pynq-z2", "count": 4}, {"type": "zcu102", "count": 1}]})
    p = make_plan(g, model="chain.keras", board=PYNQ, cluster=cl, objective="boards", batch=8)
    assert 1 <= p.n_boards <= 5
    for st in p.stages:
        assert st.cost.fits(st.board, 0.85)
    assert p.optimality.optimal is False and p.optimality.bound is None
    assert p.optimality.solver.startswith("exact DP (fronts rounded")  # (and versions capped: 2 types, 29 units)
    assert p.to_json()["optimal"] is False
