"""The CLI: --json contracts, exit codes, and error messages without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli as run


@pytest.fixture(scope="session")
def mnist_file(tmp_path_factory) -> Path:
    from split4ml.networks import mnist_fcnn

    p = tmp_path_factory.mktemp("models") / "mnist_fcnn.keras"
    mnist_fcnn(seed=1).save(p)
    return p


@pytest.fixture(scope="session")
def lstm_file(tmp_path_factory) -> Path:
    import keras

    inp = keras.Input((5,), name="x")  # a layer hls4ml has no converter for
    h = keras.layers.UnitNormalization(name="unorm")(inp)
    out = keras.layers.Dense(2, name="head")(h)
    p = tmp_path_factory.mktemp("models") / "unit_norm.keras"
    keras.Model(inp, out).save(p)
    return p


def test_inspect_json(monkeypatch, capsys, mnist_file):
    rc, out, _ = run(monkeypatch, capsys, "inspect", str(mnist_file), "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["n_params"] == 13434
    assert [lyr["name"] for lyr in d["layers"]][1:] == ["fc1", "fc2", "fc3", "softmax"]
    assert d["units"][-1] == ["fc3", "softmax"]


def test_estimate_json_contract(monkeypatch, capsys, mnist_file):
    rc, out, _ = run(monkeypatch, capsys, "estimate", str(mnist_file), "--board", "pynq-z2", "--json")
    assert rc == 0
    d = json.loads(out)
    assert {"board", "layers", "total"} <= set(d)
    assert d["board"] == "pynq-z2"
    for row in d["layers"]:
        assert {"name", "type", "lut", "ff", "dsp", "bram18", "latency_cycles", "ii_cycles"} <= set(row)
    assert {"lut", "ff", "dsp", "bram18"} <= set(d["total"])


def test_plan_json_contract_and_file(monkeypatch, capsys, mnist_file, tmp_path):
    plan_file = tmp_path / "plan.yaml"
    rc, out, _ = run(monkeypatch, capsys, "plan", str(mnist_file), "--board", "pynq-z2", "--stages", "3",
                     "-o", str(plan_file), "--json")
    assert rc == 0
    d = json.loads(out)
    for key in ("objective", "board", "n_stages", "stages", "bottleneck_ii_cycles", "latency_cycles", "latency_us",
                "throughput_per_s"):
        assert key in d
    assert d["n_stages"] == 3 and len(d["stages"]) == 3
    for i, st in enumerate(d["stages"]):
        assert {"index", "board", "layers", "resources", "utilization", "ii_cycles", "latency_cycles"} <= set(st)
        assert st["index"] == i
        assert set(st["resources"]) == {"lut", "ff", "dsp", "bram18"}
        assert all(0 < v <= 0.85 + 1e-9 for v in st["utilization"].values() if v > 0)
    assert [n for st in d["stages"] for n in st["layers"]] == ["fc1", "fc2", "fc3", "softmax"]
    assert plan_file.is_file()
    # the plan file is read back by the same validation, and agrees
    from split4ml.plan.api import load_plan

    p, _ = load_plan(plan_file)
    assert p.n_stages == 3
    assert p.metrics.bottleneck_ii_cycles == pytest.approx(d["bottleneck_ii_cycles"])


def test_plan_table_output(monkeypatch, capsys, mnist_file, tmp_path):
    rc, out, _ = run(monkeypatch, capsys, "plan", str(mnist_file), "-o", str(tmp_path / "p.yaml"))
    assert rc == 0
    assert "bottleneck" in out and "fc1" in out


def assert_clean_error(rc: int, out: str, err: str, *needles: str) -> None:
    assert rc == 2
    assert out == ""
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_unsupported_layer_error(monkeypatch, capsys, lstm_file):
    rc, out, err = run(monkeypatch, capsys, "inspect", str(lstm_file))
    assert_clean_error(rc, out, err, "unorm", "UnitNormalization", "no converter")


def test_missing_model_error(monkeypatch, capsys, tmp_path):
    rc, out, err = run(monkeypatch, capsys, "inspect", str(tmp_path / "nope.keras"), "--json")
    assert_clean_error(rc, out, err, "nope.keras")


def test_board_error(monkeypatch, capsys, mnist_file):
    rc, out, err = run(monkeypatch, capsys, "plan", str(mnist_file), "--board", "pynq-z3")
    assert_clean_error(rc, out, err, "pynq-z3", "pynq-z2")


def test_infeasible_error_names_layer(monkeypatch, capsys, mnist_file, tmp_path):
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("name: tiny\npart: xc7z007s\nresources: {lut: 3000, ff: 6000, dsp: 4, bram18: 2}\n"
                    "clock_mhz: 100\nlink: {bandwidth_mbps: 100, latency_us: 100}\n")
    rc, out, err = run(monkeypatch, capsys, "plan", str(mnist_file), "--board", str(tiny), "-o",
                       str(tmp_path / "p.yaml"))
    assert_clean_error(rc, out, err, "fc1")


def test_stages_more_than_units(monkeypatch, capsys, mnist_file, tmp_path):
    rc, out, err = run(monkeypatch, capsys, "plan", str(mnist_file), "--stages", "5", "-o", str(tmp_path / "p.yaml"))
    assert_clean_error(rc, out, err, "3")


def test_plan_error_names_yaml_path(monkeypatch, capsys, mnist_file, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {mnist_file}\nboard: pynq-z2\nstages:\n  - layers: [fc1]\n  - layers: [fc2, fc9]\n")
    rc, out, err = run(monkeypatch, capsys, "verify", str(bad))
    assert_clean_error(rc, out, err, "stages[1].layers[1]", "fc9")
    split = tmp_path / "split.yaml"
    split.write_text(f"model: {mnist_file}\nstages:\n  - board: pynq-z2\n    layers: [fc1, fc2, fc3]\n"
                     "  - board: pynq-z2\n    layers: [softmax]\n")
    rc, out, err = run(monkeypatch, capsys, "build", str(split), "-o", str(tmp_path / "b"))
    assert_clean_error(rc, out, err, "stages[1].layers[0]", "softmax", "fc3")


def test_hand_written_plan_validates(mnist_file, tmp_path):
    from split4ml.plan.api import load_plan

    f = tmp_path / "hand.yaml"
    f.write_text(f"model: {mnist_file}\nboard: pynq-z2\nstages:\n  - layers: [fc1]\n"
                 "  - layers: [fc2, fc3, softmax]\n")
    p, _ = load_plan(f)
    assert [st.layers for st in p.stages] == [("fc1",), ("fc2", "fc3", "softmax")]
    assert p.stages[1].input.type == p.stages[0].settings["fc1"].precision.result
    # fc2 + fc3 at the RFs that fit each alone overflow one board's DSPs; the free RFs were raised
    # together until the stage fits
    from split4ml.frontends import load_model
    from split4ml.plan.api import get_estimator
    from split4ml.plan.reuse import choose_settings
    from split4ml.settings import BuildSettings

    alone = choose_settings(load_model(mnist_file), p.board, 0.85, get_estimator("analytic"), BuildSettings())
    assert p.stages[1].cost.fits(p.board, 0.85)
    assert any(p.settings[n].reuse_factor > alone[n].reuse_factor for n in ("fc2", "fc3"))


def test_data_error(monkeypatch, capsys, mnist_file, tmp_path):
    plan_file = tmp_path / "plan.yaml"
    assert run(monkeypatch, capsys, "plan", str(mnist_file), "-o", str(plan_file), "--json")[0] == 0
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 10)))
    rc, out, err = run(monkeypatch, capsys, "verify", str(plan_file), "--data", str(bad))
    assert_clean_error(rc, out, err, "(10,)", "(784,)")
    rc, out, err = run(monkeypatch, capsys, "verify", str(plan_file), "--data", str(tmp_path / "none.npz"))
    assert_clean_error(rc, out, err, "none.npz")


def test_verify_mismatch_exits_1(monkeypatch, capsys, mnist_file, tmp_path):
    """A mismatch is reported with exit code 1 (the check itself is tested in test_verify.py)."""
    from split4ml import verify as verify_mod

    plan_file = tmp_path / "plan.yaml"
    assert run(monkeypatch, capsys, "plan", str(mnist_file), "-o", str(plan_file), "--json")[0] == 0

    class Fake:
        bit_exact = False

        def as_dict(self):
            return {"bit_exact": False, "samples": 3, "mismatched_samples": 1, "max_abs_diff": 0.5, "n_stages": 2,
                    "fixed_accuracy": None, "float_accuracy": None}

    monkeypatch.setattr(verify_mod, "verify_pipeline", lambda *a, **k: Fake())
    rc, out, _ = run(monkeypatch, capsys, "verify", str(plan_file), "--samples", "3", "--json")
    assert rc == 1
    assert json.loads(out)["mismatched_samples"] == 1


def test_boards_json(monkeypatch, capsys):
    rc, out, _ = run(monkeypatch, capsys, "boards", "--json")
    assert rc == 0
    names = {b["name"] for b in json.loads(out)["boards"]}
    assert {"pynq-z2", "zcu102", "alveo-u200", "alveo-u250"} <= names


def test_flatten_takes_its_producers_type(tmp_path):
    """A hand-written precision on a Flatten cannot change the wire: hls4ml's Flatten is a no-op."""
    from split4ml.networks import small_cnn
    from split4ml.plan.api import load_plan

    m = tmp_path / "cnn.keras"
    small_cnn(seed=0).save(m)
    f = tmp_path / "p.yaml"
    f.write_text(f"model: {m}\nboard: pynq-z2\nstages:\n  - layers: [conv1, pool1, "
                 "{name: flatten, precision: {result: 'ap_fixed<12,4>'}}]\n  - layers: [fc1, softmax]\n")
    p, _ = load_plan(f)
    assert p.stages[0].output.type == p.settings["pool1"].precision.result
    assert p.stages[1].input.type == p.stages[0].output.type


def test_fewer_boards_than_per_layer_choice_raises_reuse_floor(monkeypatch, capsys, mnist_file, tmp_path):
    """Each layer alone would take a board; --boards 1 raises the free reuse factors until one board holds all."""
    rc, out, _ = run(monkeypatch, capsys, "plan", str(mnist_file), "--boards", "1", "-o", str(tmp_path / "p.yaml"),
                     "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["n_stages"] == 1
    assert all(v <= 0.85 + 1e-9 for v in d["stages"][0]["utilization"].values())
    rc, out, _ = run(monkeypatch, capsys, "plan", str(mnist_file), "-o", str(tmp_path / "q.yaml"), "--json")
    free = json.loads(out)
    # without the limit the planner is free to use more boards, so its bottleneck is no worse
    assert free["bottleneck_ii_cycles"] <= d["bottleneck_ii_cycles"] * (1 + 1e-9)
    assert all(st["board_type"] == "pynq-z2" for st in free["stages"])


def test_no_joint_is_the_two_step_planner_and_never_better(monkeypatch, capsys, mnist_file, tmp_path):
    """--no-joint gives each layer its smallest fitting reuse factor first, then cuts: one board per
    layer for the MNIST network; the default joint search is at least as fast (here: one board)."""
    rc, out, _ = run(monkeypatch, capsys, "plan", str(mnist_file), "--no-joint", "-o", str(tmp_path / "t.yaml"),
                     "--json")
    assert rc == 0
    two_step = json.loads(out)
    rc, out, _ = run(monkeypatch, capsys, "plan", str(mnist_file), "-o", str(tmp_path / "j.yaml"), "--json")
    joint = json.loads(out)
    assert two_step["n_stages"] == 3  # fc1 | fc2 | fc3+softmax, each at its smallest fitting reuse factor
    by_layer = {ls["name"]: ls["reuse_factor"] for st in joint["stages"] for ls in st["layer_settings"]}
    smallest = {ls["name"]: ls["reuse_factor"] for st in two_step["stages"] for ls in st["layer_settings"]}
    assert joint["bottleneck_ii_cycles"] <= two_step["bottleneck_ii_cycles"] * (1 + 1e-9)
    assert joint["n_boards"] < two_step["n_boards"]
    assert any(by_layer[n] > smallest[n] for n in smallest if n.startswith("fc"))


def test_usage_error_exits_2(monkeypatch, capsys):
    rc, out, err = run(monkeypatch, capsys, "plan", "--no-such-option")
    assert rc == 2 and out == "" and "Traceback" not in err


def test_check_prices_a_hand_written_plan_like_plan(monkeypatch, capsys, mnist_file, tmp_path):
    """`check` gives a hand-written plan the table and --json keys `plan` gives its own, and -o writes it
    out in full: read back, the complete file prices the same."""
    planned = tmp_path / "planned.yaml"
    rc, out, _ = run(monkeypatch, capsys, "plan", str(mnist_file), "--stages", "2", "-o", str(planned), "--json")
    assert rc == 0
    keys = set(json.loads(out))
    hand = tmp_path / "hand.yaml"
    hand.write_text(f"model: {mnist_file}\nboard: pynq-z2\nstages:\n  - layers: [fc1]\n"
                    "  - layers: [{name: fc2, strategy: resource}, fc3, softmax]\n")
    full = tmp_path / "full.yaml"
    rc, out, _ = run(monkeypatch, capsys, "check", str(hand), "--json", "-o", str(full))
    assert rc == 0
    d = json.loads(out)
    assert keys <= set(d)
    assert d["n_stages"] == 2 and [st["layers"] for st in d["stages"]] == [["fc1"], ["fc2", "fc3", "softmax"]]
    assert d["throughput_per_s"] > 0 and d["plan_file"] == str(full) and d["checked"] == str(hand)
    text = full.read_text()
    assert "reuse_factor" in text and "utilization" in text  # settings and estimates written out
    rc, again, _ = run(monkeypatch, capsys, "check", str(full), "--json")
    assert rc == 0
    d2 = json.loads(again)
    assert d2["throughput_per_s"] == pytest.approx(d["throughput_per_s"])
    assert d2["latency_us"] == pytest.approx(d["latency_us"])
    assert [st["layers"] for st in d2["stages"]] == [st["layers"] for st in d["stages"]]
    rc, table, _ = run(monkeypatch, capsys, "check", str(hand))
    assert rc == 0 and "bottleneck" in table and "samples/s" in table


def test_check_names_the_bad_field(monkeypatch, capsys, mnist_file, tmp_path):
    hand = tmp_path / "hand.yaml"
    hand.write_text(f"model: {mnist_file}\nboard: pynq-z2\nstages:\n  - layers: [fc1, nope]\n")
    rc, out, err = run(monkeypatch, capsys, "check", str(hand))
    assert rc == 2 and "nope" in err and "stages[0].layers[1]" in err and "Traceback" not in err


def test_enum_options_accept_any_case(monkeypatch, capsys, mnist_file, tmp_path):
    """--strategy resource, --objective LATENCY, --io-type IO_Parallel and --estimator Analytic are read as
    hls4ml reads its config: in any case."""
    plan_file = tmp_path / "plan.yaml"
    rc, out, err = run(monkeypatch, capsys, "plan", str(mnist_file), "--strategy", "resource", "--objective",
                       "LATENCY", "--io-type", "IO_Parallel", "--estimator", "Analytic", "-o", str(plan_file),
                       "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["objective"] == "latency" and d["estimator"] == "analytic"
    text = plan_file.read_text()
    assert "strategy: Resource" in text and "io_type: io_parallel" in text
    rc, _, err = run(monkeypatch, capsys, "plan", str(mnist_file), "--strategy", "fast", "-o", str(plan_file))
    assert rc == 2 and "--strategy 'fast' is not one of Latency, Resource" in err


def test_conv_too_big_for_io_parallel_points_to_io_stream(monkeypatch, capsys, tmp_path):
    """Issue #14's conv model: no number of PYNQ-Z2 boards holds its 384-filter convolution with io_parallel;
    the message says io_stream would, and io_stream plans it."""
    import keras

    x = keras.Input((12, 12, 3), name="x")
    h = keras.layers.Conv2D(128, 3, activation="relu", name="c1")(x)
    h = keras.layers.MaxPooling2D(2, name="p1")(h)
    h = keras.layers.Conv2D(384, 3, activation="relu", name="c2")(h)
    h = keras.layers.Dense(4, name="d2")(keras.layers.Dense(32, activation="relu", name="d1")(
        keras.layers.Flatten(name="f")(h)))
    model = tmp_path / "convnet.keras"
    keras.Model(x, h, name="convnet").save(model)
    rc, _, err = run(monkeypatch, capsys, "plan", str(model), "--io-type", "io_parallel", "-o",
                     str(tmp_path / "p.yaml"), "-q")
    flat = " ".join(err.split())  # the terminal folds long messages
    assert rc == 2 and "'c2'" in flat and "--io-type io_stream" in flat and "Traceback" not in err
    rc, out, err = run(monkeypatch, capsys, "plan", str(model), "--io-type", "io_stream", "-o",
                       str(tmp_path / "p.yaml"), "--json")
    assert rc == 0, err
    given = json.loads(out)
    assert given["n_boards"] >= 2 and given["io_type"] == "io_stream" and given["io_type_chosen"] is None
    # without --io-type the planner tries both and keeps the one that fits, saying why
    rc, out, err = run(monkeypatch, capsys, "plan", str(model), "-o", str(tmp_path / "auto.yaml"), "--json")
    assert rc == 0, err
    auto = json.loads(out)
    assert auto["io_type"] == "io_stream" and auto["n_boards"] == given["n_boards"]
    assert auto["io_type_chosen"].startswith("io_stream: with io_parallel the model fits no number of boards")
    assert "'c2'" in auto["io_type_chosen"]
    assert "io_type: io_stream" in (tmp_path / "auto.yaml").read_text()
    rc, out, _ = run(monkeypatch, capsys, "plan", str(model), "-o", str(tmp_path / "auto.yaml"))
    assert rc == 0 and "io type io_stream: with io_parallel" in " ".join(out.split())
