"""Channel-wise layers that follow a neuron split run on the shards (issue #14).

Max and average pooling act on every channel alone, so pooling a slice of a split layer's filters is that
slice of the pooled map. The shards then send pooled slices, and the board after them no longer receives
every shard's whole unpooled map. A batch normalization (or hls4ml's ``ApplyAlpha``: an ONNX bias, a
quantizer's scale) scales and shifts each channel by its own factors, so a shard runs it with its channels'
factors.
"""

from __future__ import annotations

import json

import pytest

from split4ml.errors import PlanError

keras = pytest.importorskip("keras")


def _conv1d_model(path):
    x = keras.Input((32, 4), name="x")
    h = keras.layers.Conv1D(16, 3, activation="relu", name="c1")(x)
    h = keras.layers.MaxPooling1D(2, name="p1")(h)
    h = keras.layers.Conv1D(12, 3, name="c2")(h)
    h = keras.layers.Activation("relu", name="r2")(h)
    h = keras.layers.AveragePooling1D(2, name="p2")(h)
    h = keras.layers.Dense(5, name="d")(keras.layers.Flatten(name="f")(h))
    keras.Model(x, h, name="pooled").save(path)


def _issue_convnet(path, batch_norm: bool = False):
    """The issue's conv model (12x12x3, Conv2D 128 3x3, MaxPooling2D 2, Conv2D 384 3x3, Dense 32, Dense 4)
    with a pooling after its 384-filter convolution, and optionally a batch normalization before that
    pooling (a ReLU sits between the convolution and it, so hls4ml keeps it a layer of its own)."""
    x = keras.Input((12, 12, 3), name="x")
    h = keras.layers.Conv2D(128, 3, activation="relu", name="c1")(x)
    h = keras.layers.MaxPooling2D(2, name="p1")(h)
    h = keras.layers.Conv2D(384, 3, activation="relu", name="c2")(h)
    if batch_norm:
        h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.MaxPooling2D(2, name="p2")(h)
    h = keras.layers.Dense(4, name="d2")(keras.layers.Dense(32, activation="relu", name="d1")(
        keras.layers.Flatten(name="f")(h)))
    keras.Model(x, h, name="convbn" if batch_norm else "convpool").save(path)


def test_shards_carry_the_pooling_on_their_slice(tmp_path):
    from split4ml.boards import get_board
    from split4ml.estimate.analytic import AnalyticEstimator
    from split4ml.frontends import load_model
    from split4ml.plan.reuse import choose_settings
    from split4ml.settings import BuildSettings
    from split4ml.shard import shard_unit

    _conv1d_model(tmp_path / "m.keras")
    g = load_model(tmp_path / "m.keras")

    settings = choose_settings(g, get_board("pynq-z2"), 0.85, AnalyticEstimator(), BuildSettings())
    unit = [g.layer(n) for n in ("c2", "r2", "p2")]
    su = shard_unit(unit, "c2", "neuron", 3, settings)
    assert [[lyr.name for lyr in s.layers] for s in su.shards] == [
        [f"c2__n{i}", f"r2__n{i}", f"p2__n{i}"] for i in range(3)]
    assert [s.out_shape for s in su.shards] == [(6, 4)] * 3 and su.concat_shape == g.layer("p2").output_shape
    assert su.tail == ()
    with pytest.raises(PlanError, match="only element-wise layers after it"):
        shard_unit(unit, "c2", "input", 3, settings)


def test_the_planner_puts_the_pooling_on_the_shards(tmp_path):
    """The issue's conv model with a pooling layer after its 384-filter convolution: the convolution is split
    by filters, and its pooling runs on the shards, which send 4x fewer bytes."""
    from split4ml.boards import get_board
    from split4ml.frontends import load_model
    from split4ml.plan.api import make_plan
    from split4ml.settings import BuildSettings

    _issue_convnet(tmp_path / "m.keras")
    g = load_model(tmp_path / "m.keras")
    plan = make_plan(g, model=tmp_path / "m.keras", board=get_board("pynq-z2"),
                     build=BuildSettings(io_type="io_stream"))
    split = next(st for st in plan.stages if st.split is not None and st.split.layer == "c2")
    assert split.layers == ("c2", "p2") and split.split.kind == "neuron"
    assert split.output.shape == g.layer("p2").output_shape  # the pooled map travels, not the 3x3x384 one
    assert all(sh.layers[-1].startswith("p2__n") for sh in split.shards)
    after = plan.stages[split.index + 1]
    assert "p2" not in after.layers and after.input.shape == (1, 1, 384)


def _bn_model(path, seed: int = 0):
    """Conv1D 8 -> ReLU -> BatchNormalization (trained-looking statistics) -> ReLU -> AveragePooling1D ->
    Dense: hls4ml cannot fuse this batch normalization into the convolution (a ReLU sits between)."""
    import numpy as np

    x = keras.Input((10, 3), name="x")
    h = keras.layers.Conv1D(8, 3, name="c1")(x)
    h = keras.layers.Activation("relu", name="r1")(h)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.Activation("relu", name="r2")(h)
    h = keras.layers.AveragePooling1D(2, name="p1")(h)
    m = keras.Model(x, keras.layers.Dense(5, name="d")(keras.layers.Flatten(name="f")(h)), name="bnp")
    rng = np.random.default_rng(seed)
    m.get_layer("bn1").set_weights([rng.uniform(0.5, 2, 8), rng.uniform(-1, 1, 8), rng.uniform(-1, 1, 8),
                                    rng.uniform(0.5, 2, 8)])
    m.save(path)


def test_shards_carry_the_batch_normalization_with_their_channels_factors(tmp_path):
    import numpy as np

    from split4ml.boards import get_board
    from split4ml.estimate.analytic import AnalyticEstimator
    from split4ml.frontends import load_model
    from split4ml.plan.reuse import choose_settings
    from split4ml.settings import BuildSettings
    from split4ml.shard import channel_wise, channel_wise_after, shard_unit

    _bn_model(tmp_path / "m.keras")
    g = load_model(tmp_path / "m.keras")
    bn = g.layer("bn1")
    assert bn.kind == "BatchNormalization" and channel_wise(bn)
    units = g.units()
    assert [[lyr.name for lyr in u] for u in channel_wise_after(units, 0)] == [["bn1", "r2"], ["p1"]]
    settings = choose_settings(g, get_board("pynq-z2"), 0.85, AnalyticEstimator(), BuildSettings())
    unit = [g.layer(n) for n in ("c1", "r1", "bn1", "r2", "p1")]
    su = shard_unit(unit, "c1", "neuron", 3, settings)
    assert su.tail == () and su.slices == ((0, 3), (3, 6), (6, 8))
    for (a, b), sh in zip(su.slices, su.shards, strict=True):
        copy = sh.layers[2]
        assert copy.name.startswith("bn1__n") and copy.output_shape == (8, b - a) and not copy.hls_nodes
        for key in ("scale", "bias", "gamma", "beta", "moving_mean", "moving_variance"):
            assert np.array_equal(copy.weights[key], np.asarray(bn.weights[key])[a:b]), key
        assert sh.settings[copy.name].precision == settings["bn1"].precision
    # a layer with factors in no per-channel layout is not channel-wise: it would stay whole
    odd = bn.with_(weights={**bn.weights, "scale": np.ones(3)})
    assert not channel_wise(odd)


def test_the_planner_puts_the_batch_normalization_on_the_shards(tmp_path):
    """The issue's conv model with a batch normalization and a pooling after its 384-filter convolution (and
    a ReLU between, so hls4ml keeps the normalization a layer of its own): both run on the shards."""
    from split4ml.boards import get_board
    from split4ml.frontends import load_model
    from split4ml.plan.api import make_plan
    from split4ml.settings import BuildSettings

    _issue_convnet(tmp_path / "m.keras", batch_norm=True)
    g = load_model(tmp_path / "m.keras")
    plan = make_plan(g, model=tmp_path / "m.keras", board=get_board("pynq-z2"),
                     build=BuildSettings(io_type="io_stream"))
    split = next(st for st in plan.stages if st.split is not None and st.split.layer == "c2")
    assert split.layers[0] == "c2" and "bn2" in split.layers and split.split.kind == "neuron"
    assert all(any(n.startswith("bn2__n") for n in sh.layers) for sh in split.shards)
    assert all("bn2" not in st.layers for st in plan.stages if st is not split)


@pytest.mark.slow
def test_a_hand_written_plan_with_normalized_shards_is_bit_exact(monkeypatch, capsys, tmp_path):
    """A Conv1D split 3 ways (8 filters: 3, 3, 2) whose shards also run the ReLU, the batch normalization
    (each with its channels' factors), a ReLU and the average pooling: the chained C-simulations equal
    hls4ml's conversion of the whole model bit for bit (3 hls4ml compiles, io_parallel)."""
    from cli_helpers import run_cli

    _bn_model(tmp_path / "m.keras")
    plan = tmp_path / "plan.yaml"
    plan.write_text("split4ml_plan: 1\nmodel: m.keras\nboard: pynq-z2\nstages:\n"
                    "  - layers: [c1, r1, bn1, r2, p1]\n    split: {layer: c1, kind: neuron, parts: 3}\n"
                    "  - layers: [f, d]\n")
    rc, out, err = run_cli(monkeypatch, capsys, "check", str(plan), "--json")
    assert rc == 0, err
    c = json.loads(out)
    assert c["n_boards"] == 4 and c["stages"][0]["output"]["shape"] == [4, 8]
    assert [sh["layers"][2] for sh in c["stages"][0]["shards"]] == [f"bn1__n{i}" for i in range(3)]
    rc, out, err = run_cli(monkeypatch, capsys, "verify", str(plan), "--samples", "50", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["mismatched_samples"] == 0, out + err


@pytest.mark.slow
def test_a_hand_written_plan_with_pooled_shards_is_bit_exact(monkeypatch, capsys, tmp_path):
    """Two neuron splits, one carrying a MaxPooling1D and one a ReLU and an AveragePooling1D, in a plan file:
    the chained C-simulations equal hls4ml's conversion of the whole model bit for bit, and so does the
    emulated cluster (8 hls4ml compiles)."""
    from cli_helpers import run_cli, verify_and_run

    _conv1d_model(tmp_path / "m.keras")
    plan = tmp_path / "plan.yaml"
    plan.write_text("split4ml_plan: 1\nmodel: m.keras\nboard: pynq-z2\nstages:\n"
                    "  - layers: [c1, p1]\n    split: {layer: c1, kind: neuron, parts: 2}\n"
                    "  - layers: [c2, r2, p2]\n    split: {layer: c2, kind: neuron, parts: 3}\n"
                    "  - layers: [f, d]\n")
    rc, out, err = run_cli(monkeypatch, capsys, "check", str(plan), "--json")
    assert rc == 0, err
    c = json.loads(out)
    assert c["n_boards"] == 6 and c["stages"][0]["output"]["shape"] == [15, 16]
    verify_and_run(monkeypatch, capsys, plan, n_boards=6, verify_samples=50)
    # a pooling layer cannot follow an input split on its shards: the file is refused, naming the field
    plan.write_text(plan.read_text().replace("{layer: c1, kind: neuron, parts: 2}", "{layer: c1, kind: input, parts: 2}"))
    rc, _, err = run_cli(monkeypatch, capsys, "check", str(plan))
    assert rc == 2 and "stages[0]" in err and "Traceback" not in err


def test_a_flatten_after_a_merge_is_a_computing_stage_with_io_stream(monkeypatch, capsys, tmp_path):
    """With io_stream a board holding only a Flatten is refused, but a stage that first runs the merge of
    the split before it (its tail) computes something, and may hold just the Flatten after it."""
    from cli_helpers import run_cli

    x = keras.Input((10, 4), name="x")
    h = keras.layers.Conv1D(6, 3, activation="relu", name="c1")(x)
    keras.Model(x, keras.layers.Dense(3, name="d")(keras.layers.Flatten(name="f")(h)), name="m").save(
        tmp_path / "m.keras")
    head = "split4ml_plan: 1\nmodel: m.keras\nboard: pynq-z2\nhls: {io_type: io_stream}\nstages:\n"
    plan = tmp_path / "plan.yaml"
    plan.write_text(head + "  - layers: [c1]\n    split: {layer: c1, kind: input, parts: 2}\n"
                    "  - layers: [f]\n    merge: c1\n  - layers: [d]\n")
    rc, out, err = run_cli(monkeypatch, capsys, "check", str(plan), "--json")
    assert rc == 0, err
    assert json.loads(out)["stages"][1]["merge"] == "c1"
    plan.write_text(head + "  - layers: [c1]\n  - layers: [f]\n  - layers: [d]\n")
    rc, _, err = run_cli(monkeypatch, capsys, "check", str(plan))
    flat = " ".join(err.split())
    assert rc == 2 and "stages[1]: the stage holds only ['f']" in flat and "Traceback" not in err
