"""The io type chosen per plan (``make_plan(choose_io_type=True)``, ``split4ml plan`` without ``--io-type``)."""

from __future__ import annotations

import pytest

from split4ml.boards import get_board
from split4ml.plan.api import make_plan
from split4ml.plan.design import better, objective_key
from split4ml.settings import BuildSettings

keras = pytest.importorskip("keras")

PYNQ = get_board("pynq-z2")


def _conv_chain():
    from split4ml.frontends.keras import graph_from_keras

    x = keras.Input((32, 4), name="x")
    h = keras.layers.Conv1D(16, 3, activation="relu", name="c1")(x)
    h = keras.layers.MaxPooling1D(2, name="p1")(h)
    h = keras.layers.Conv1D(16, 3, activation="relu", name="c2")(h)
    h = keras.layers.Dense(5, name="d")(keras.layers.Flatten(name="f")(h))
    return graph_from_keras(keras.Model(x, h, name="conv1d"))


@pytest.mark.parametrize("objective", ["throughput", "latency", "boards"])
def test_a_conv_chain_keeps_the_better_io_type(objective: str):
    g = _conv_chain()
    kw = dict(model="c.keras", board=PYNQ, objective=objective, max_boards=4)
    auto = make_plan(g, choose_io_type=True, **kw)
    par = make_plan(g, build=BuildSettings(io_type="io_parallel"), **kw)
    stream = make_plan(g, build=BuildSettings(io_type="io_stream"), **kw)
    assert auto.io_type_chosen is not None and auto.io_type_chosen.startswith(auto.build.io_type + ":")
    key = {p.build.io_type: objective_key(p.metrics, p.n_boards, objective) for p in (par, stream)}
    want = "io_stream" if better(key["io_stream"], key["io_parallel"]) else "io_parallel"
    assert auto.build.io_type == want
    assert objective_key(auto.metrics, auto.n_boards, objective) == pytest.approx(key[want])
    assert auto.to_json()["io_type"] == want and auto.to_json()["io_type_chosen"] == auto.io_type_chosen


def test_dense_models_and_a_given_io_type_are_not_chosen_for():
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.models import mnist_fcnn

    dense = make_plan(graph_from_keras(mnist_fcnn(seed=1)), model="m.keras", board=PYNQ, choose_io_type=True)
    assert dense.io_type_chosen is None and dense.build.io_type == "io_parallel"
    g = _conv_chain()
    given = make_plan(g, model="c.keras", board=PYNQ, choose_io_type=True, hls_config={"IOType": "io_parallel"})
    assert given.io_type_chosen is None and given.build.io_type == "io_parallel"


@pytest.mark.slow
def test_a_chosen_io_stream_plan_verifies_and_runs_bit_exact(monkeypatch, capsys, tmp_path):
    """The io_stream plan the planner chose for a convolutional chain (2 boards): hls4ml's io_stream C-simulation
    of each board, chained, equals hls4ml's io_stream conversion of the whole file bit for bit, and the
    emulated cluster streams it bit-exact too (3 hls4ml compiles)."""
    import json

    from cli_helpers import run_cli

    x = keras.Input((32, 4), name="x")
    h = keras.layers.Conv1D(16, 3, activation="relu", name="c1")(x)
    h = keras.layers.MaxPooling1D(2, name="p1")(h)
    h = keras.layers.Conv1D(16, 3, activation="relu", name="c2")(h)
    h = keras.layers.Dense(5, name="d")(keras.layers.Flatten(name="f")(h))
    keras.Model(x, h, name="conv1d").save(tmp_path / "conv1d.keras")
    plan = tmp_path / "plan.yaml"
    rc, out, err = run_cli(monkeypatch, capsys, "plan", str(tmp_path / "conv1d.keras"), "--stages", "2", "-o", str(plan),
                           "--json")
    assert rc == 0, err
    p = json.loads(out)
    assert p["io_type"] == "io_stream" and p["io_type_chosen"].startswith("io_stream: better for throughput")
    rc, out, _ = run_cli(monkeypatch, capsys, "verify", str(plan), "-n", "40", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["samples"] == 40 and v["n_boards"] == 2
    rc, out, _ = run_cli(monkeypatch, capsys, "run", str(plan), "--emulate", "-n", "24", "--json")
    r = json.loads(out)
    assert rc == 0 and r["bit_exact"] and r["completed"] and r["delivered"] == 24
