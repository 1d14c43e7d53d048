"""The io type chosen per plan (``make_plan(choose_io_type=True)``, ``split4ml plan`` without ``--io-type``):
a model with convolutions is planned both ways and the better plan for the objective is kept (a tie keeps
io_parallel, hls4ml's default)."""

from __future__ import annotations

import json

import pytest

from split4ml.boards import get_board
from split4ml.plan.api import make_plan
from split4ml.settings import BuildSettings

keras = pytest.importorskip("keras")

PYNQ = get_board("pynq-z2")


def _conv(hw: int, name: str = "conv"):
    """Conv2D 8 3x3 on an hw x hw x 2 input, MaxPooling 4, Dense 3: with hw = 24 the convolution's
    22x22x8 map fits a PYNQ-Z2 only in io_stream."""
    x = keras.Input((hw, hw, 2), name="x")
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(x)
    h = keras.layers.MaxPooling2D(4, name="p1")(h)
    h = keras.layers.Dense(3, name="d")(keras.layers.Flatten(name="f")(h))
    return keras.Model(x, h, name=name)


def _tiny(hw: int = 4):
    """Conv2D 2 3x3 on an hw x hw x 1 input, Dense 2: both io types reach the same interval (the link's)."""
    x = keras.Input((hw, hw, 1), name="x")
    h = keras.layers.Conv2D(2, 3, activation="relu", name="c1")(x)
    return keras.Model(x, keras.layers.Dense(2, name="d")(keras.layers.Flatten(name="f")(h)), name="tiny")


def test_the_better_io_type_is_kept_and_says_why():
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.plan.design import better, objective_key

    small = graph_from_keras(_conv(16))
    for objective in ("throughput", "latency", "boards"):
        auto = make_plan(small, model="s.keras", board=PYNQ, choose_io_type=True, objective=objective)
        plans = {io: make_plan(small, model="s.keras", board=PYNQ, objective=objective,
                               build=BuildSettings(io_type=io)) for io in ("io_parallel", "io_stream")}
        keys = {io: objective_key(p.metrics, p.n_boards, objective) for io, p in plans.items()}
        want = "io_stream" if better(keys["io_stream"], keys["io_parallel"]) else "io_parallel"
        assert auto.build.io_type == want
        assert objective_key(auto.metrics, auto.n_boards, objective) == pytest.approx(keys[want])
        if want == "io_stream":
            assert auto.io_type_chosen.startswith("io_stream: ") and "than io_parallel" in auto.io_type_chosen
            assert f"{plans['io_parallel'].n_boards} board(s)" in auto.io_type_chosen.split("io_parallel: ")[1]
        else:
            assert auto.io_type_chosen is None
    # 16x16: the convolution's map in registers takes 2 boards; streamed, one board at a shorter interval
    chosen = make_plan(small, model="s.keras", board=PYNQ, choose_io_type=True)
    assert chosen.build.io_type == "io_stream" and chosen.io_type_chosen.startswith("io_stream: a shorter interval")
    # a tie on the first key is decided by the next: the same interval, a lower latency with io_stream...
    tiny = graph_from_keras(_tiny())
    t = make_plan(tiny, model="t.keras", board=PYNQ, choose_io_type=True)
    assert t.build.io_type == "io_stream"
    assert t.io_type_chosen.startswith("io_stream: a lower latency than io_parallel at the same interval")
    # ... and for the latency objective io_parallel is lower: it is kept, and nothing is said
    t = make_plan(tiny, model="t.keras", board=PYNQ, choose_io_type=True, objective="latency")
    assert t.build.io_type == "io_parallel" and t.io_type_chosen is None


def test_io_stream_is_taken_where_io_parallel_fits_no_boards():
    from split4ml.frontends.keras import graph_from_keras

    big = graph_from_keras(_conv(24))
    chosen = make_plan(big, model="b.keras", board=PYNQ, choose_io_type=True)
    assert chosen.build.io_type == "io_stream"
    assert chosen.io_type_chosen.startswith("io_stream: with io_parallel the model fits no number of boards")
    assert "'c1'" in chosen.io_type_chosen
    assert chosen.to_json()["io_type"] == "io_stream" and chosen.to_json()["io_type_chosen"] == chosen.io_type_chosen
    # an io type in --config is the user's: nothing is chosen
    from split4ml.errors import InfeasibleError

    with pytest.raises(InfeasibleError, match="io_stream"):
        make_plan(big, model="b.keras", board=PYNQ, choose_io_type=True, hls_config={"IOType": "io_parallel"})


def test_dense_models_are_planned_once_as_given():
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.networks import mnist_fcnn

    dense = make_plan(graph_from_keras(mnist_fcnn(seed=1)), model="m.keras", board=PYNQ, choose_io_type=True)
    assert dense.io_type_chosen is None and dense.build.io_type == "io_parallel"


@pytest.mark.slow
def test_a_chosen_io_stream_plan_verifies_and_runs_bit_exact(monkeypatch, capsys, tmp_path):
    """The io_stream plan the planner chose for a convolution too big for io_parallel (2 boards): hls4ml's
    io_stream C-simulation of each board, chained, equals hls4ml's io_stream conversion of the whole file
    bit for bit, and the emulated cluster streams it bit-exact too (3 hls4ml compiles)."""
    from cli_helpers import run_cli, verify_and_run

    _conv(24).save(tmp_path / "conv.keras")
    plan = tmp_path / "plan.yaml"
    rc, out, err = run_cli(monkeypatch, capsys, "plan", str(tmp_path / "conv.keras"), "--stages", "2", "-o", str(plan),
                           "--json")
    assert rc == 0, err
    p = json.loads(out)
    assert p["io_type"] == "io_stream" and p["io_type_chosen"].startswith("io_stream: with io_parallel")
    verify_and_run(monkeypatch, capsys, plan, n_boards=2, verify_samples=40)


def test_the_reason_names_the_unit_that_fits_no_board():
    """A batch normalization of a 30x16 map needs 480 multipliers in io_parallel (it takes no reuse factor
    and cannot be split alone), so io_parallel fits no boards: the reason names it."""
    from split4ml.frontends.keras import graph_from_keras

    x = keras.Input((32, 4), name="x")
    h = keras.layers.Conv1D(16, 3, activation="relu", name="c1")(x)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.MaxPooling1D(2, name="p1")(h)
    model = keras.Model(x, keras.layers.Dense(5, name="d")(keras.layers.Flatten(name="f")(h)), name="bn")
    chosen = make_plan(graph_from_keras(model), model="bn.keras", board=PYNQ, choose_io_type=True)
    assert chosen.build.io_type == "io_stream"
    assert chosen.io_type_chosen == ("io_stream: with io_parallel the model fits no number of boards "
                                     "(no partition fits: 'bn1' fits no board alone)")
