"""Issue 2 end to end, through the CLI: plan -> build -> verify, bit-exact through hls4ml C-sim."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import run_cli as run


@pytest.mark.slow
def test_six_layer_relu_mlp_three_stages_bit_exact(monkeypatch, capsys, tmp_path):
    from split4ml.networks import deep_mlp

    model = tmp_path / "deep.keras"
    keras_model = deep_mlp(seed=3)
    keras_model.save(model)
    plan = tmp_path / "plan.yaml"
    rc, out, _ = run(monkeypatch, capsys, "plan", str(model), "--board", "pynq-z2", "--stages", "3", "-o", str(plan),
                  "--json")
    assert rc == 0
    p = json.loads(out)
    assert p["n_stages"] == 3
    assert sum(1 for st in p["stages"] for n in st["layers"] if n.startswith("fc")) >= 6

    rc, out, _ = run(monkeypatch, capsys, "build", str(plan), "-o", str(tmp_path / "build"), "--json")
    assert rc == 0
    b = json.loads(out)
    for st in b["stages"]:
        assert (tmp_path / "build" / f"stage_{st['index']}" / "build_prj.tcl").is_file()
        assert st["backend"] == "VivadoAccelerator"
    assert (tmp_path / "build" / "build_all.sh").is_file()

    # labelled data: verify also reports float and fixed accuracy
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(200, 32)).astype(np.float32)
    y = keras_model.predict(x, verbose=0).argmax(1)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    rc, out, _ = run(monkeypatch, capsys, "verify", str(plan), "--data", str(data), "--json")
    v = json.loads(out)
    assert rc == 0, v
    assert v == {**v, "bit_exact": True, "samples": 200, "mismatched_samples": 0, "max_abs_diff": 0.0, "n_stages": 3}
    assert v["float_accuracy"] == 1.0  # labels are the float model's own predictions
    assert 0.5 < v["fixed_accuracy"] <= 1.0

    # and on random inputs spread over the input type's range (no --data)
    rc, out, _ = run(monkeypatch, capsys, "verify", str(plan), "--samples", "300", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["samples"] == 300 and v["fixed_accuracy"] is None


def _two_layer(n_in: int, n_hidden: int, path, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_in,), name="x")
    h = keras.layers.Dense(n_hidden, activation="relu", name="fc1")(inp)
    h = keras.layers.Dense(10, name="output")(h)
    out = keras.layers.Activation("softmax", name="softmax")(h)
    keras.Model(inp, out).save(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "n_in,n_hidden,kind,expect_shard_shape",
    [
        (256, 46, "neuron", [[256], [256]]),  # the original work's Neuron-Split notebook, 23/23, with ReLU
        (784, 16, "input", [[392], [392]]),  # the original work's Input-Split notebook, 392/392, with ReLU
    ],
)
def test_original_manual_splits_from_plan_files(monkeypatch, capsys, tmp_path, n_in, n_hidden, kind,
                                                expect_shard_shape):
    model = tmp_path / "m.keras"
    _two_layer(n_in, n_hidden, model)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"model: {model}\nboard: pynq-z2\nstages:\n"
                    f"  - layers: [fc1]\n    split: {{layer: fc1, kind: {kind}, parts: 2}}\n"
                    "  - layers: [output, softmax]\n")
    from split4ml.plan.api import load_plan

    p, _ = load_plan(plan)
    assert (p.n_stages, p.n_boards) == (2, 3)
    assert [list(sh.input.shape) for sh in p.stages[0].shards] == expect_shard_shape
    if kind == "neuron":
        assert [list(sh.output.shape) for sh in p.stages[0].shards] == [[23], [23]]
        assert p.stages[1].merge is None  # concatenation needs no adder
    else:
        assert p.stages[1].merge == "fc1" and p.stages[1].tail == ("fc1__merge",)
        assert p.stages[0].shards[0].output.type.width == p.settings["fc1"].precision.accum.width + 1  # guard bit
    # a generated file of this plan reads back identically
    p.write(tmp_path / "again.yaml")
    assert load_plan(tmp_path / "again.yaml")[0].to_json() == p.to_json()

    rc, out, _ = run(monkeypatch, capsys, "verify", str(plan), "--samples", "300", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["mismatched_samples"] == 0 and v["n_boards"] == 3
    rc, out, _ = run(monkeypatch, capsys, "build", str(plan), "-o", str(tmp_path / "b"), "--json")
    b = json.loads(out)
    assert rc == 0 and b["n_boards"] == 3
    assert sorted(s["node"] for s in b["stages"]) == ["stage_0.0", "stage_0.1", "stage_1"]
    for s in b["stages"]:
        assert (tmp_path / "b" / s["node"] / "build_prj.tcl").is_file()


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """784-style input into a Dense 1024->600 layer: 614k weights, ~9.8 Mbit at 16 bits, over a PYNQ-Z2's BRAM."""
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((1024,), name="x")
    h = keras.layers.Dense(600, activation="relu", name="fc1")(inp)
    h = keras.layers.Dense(10, name="fc2")(h)
    out = keras.layers.Activation("softmax", name="softmax")(h)
    p = tmp_path_factory.mktemp("wide") / "wide.keras"
    keras.Model(inp, out).save(p)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["boards", "latency", "throughput"])
def test_layer_bigger_than_a_board_is_split_and_bit_exact(monkeypatch, capsys, tmp_path, wide_model, objective):
    plan = tmp_path / "plan.yaml"
    rc, out, _ = run(monkeypatch, capsys, "plan", str(wide_model), "--objective", objective, "-o", str(plan), "--json")
    assert rc == 0
    p = json.loads(out)
    split = [st for st in p["stages"] if st["shards"]]
    assert split and split[0]["layers"][0] == "fc1"
    assert p["n_boards"] == sum(max(1, len(st["shards"])) for st in p["stages"]) > p["n_stages"]
    for st in p["stages"]:
        boards = st["shards"] or [st]
        for b in boards:
            assert all(v <= 0.85 + 1e-9 for v in b["utilization"].values())
        for sh in st["shards"]:
            assert {"board", "layer", "kind", "part", "parts"} <= set(sh) and sh["parts"] == len(st["shards"])
    rc, out, _ = run(monkeypatch, capsys, "verify", str(plan), "--samples", "200", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["samples"] == 200 and v["n_boards"] == p["n_boards"]


@pytest.mark.slow
def test_million_parameter_mlp_on_at_most_25_pynq_boards_bit_exact(monkeypatch, capsys, tmp_path):
    """16-500-500-500-500-500-5, ap_fixed<16,6>, Resource strategy, throughput objective (issue 3)."""
    from split4ml.networks import deep_mlp

    model = tmp_path / "big.keras"
    deep_mlp(widths=(500,) * 5, n_in=16, n_out=5, seed=0).save(model)
    plan = tmp_path / "plan.yaml"
    rc, out, _ = run(monkeypatch, capsys, "plan", str(model), "--boards", "25", "--strategy", "Resource",
                  "--objective", "throughput", "-o", str(plan), "--json")
    assert rc == 0
    p = json.loads(out)
    assert p["n_boards"] <= 25
    for st in p["stages"]:
        for b in st["shards"] or [st]:
            assert all(v <= 0.85 + 1e-9 for v in b["utilization"].values())
    rc, out, _ = run(monkeypatch, capsys, "verify", str(plan), "--samples", "200", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["samples"] == 200 and v["n_boards"] == p["n_boards"]
