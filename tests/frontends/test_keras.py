"""Keras models read through hls4ml's parsers: Keras 3 in memory and on disk, Keras 2 JSON/H5 files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

from model_makers import keras2_cnn, keras2_mlp  # noqa: E402

from split4ml.errors import ModelLoadError, UnsupportedLayerError  # noqa: E402
from split4ml.frontends import framework_of, load_model, read_model  # noqa: E402
from split4ml.frontends.keras import graph_from_keras  # noqa: E402
from split4ml.frontends.source import name_config  # noqa: E402
from split4ml.ir import Graph  # noqa: E402
from split4ml.networks import mnist_fcnn, small_cnn  # noqa: E402


def _check_chain(g: Graph) -> None:
    assert g.layers[0].kind == "Input"
    for prev, cur in zip(g.layers, g.layers[1:], strict=False):
        assert cur.inputs == (prev.name,), cur.name
        assert cur.input_shape == prev.output_shape, cur.name
    assert g.outputs == (g.layers[-1].name,) and g.is_chain


def test_mnist_fcnn_is_hls4mls_conversion() -> None:
    model = mnist_fcnn(seed=1)
    g = graph_from_keras(model)
    _check_chain(g)
    assert g.source is not None and g.source.reader == "keras-v3" and not g.quantized
    assert [(lyr.name, lyr.kind, lyr.activation) for lyr in g.body] == [
        ("fc1", "Dense", "relu"), ("fc2", "Dense", "relu"), ("fc3", "Dense", None), ("softmax", "Activation", "softmax")]
    # hls4ml runs a Dense's own activation as a node <name>_<activation>: the Graph folds it back
    assert g.layer("fc1").hls_nodes == ("fc1", "fc1_relu") and g.layer("fc3").hls_nodes == ("fc3",)
    assert g.input.output_shape == (784,) and g.layer("fc1").output_shape == (16,)
    kernel, bias = model.get_layer("fc1").get_weights()
    np.testing.assert_array_equal(g.layer("fc1").weights["kernel"], kernel)
    np.testing.assert_array_equal(g.layer("fc1").weights["bias"], bias)
    assert not g.layer("fc1").weights["kernel"].flags.writeable
    assert g.n_params == model.count_params()


def test_small_cnn_layers_and_units() -> None:
    g = graph_from_keras(small_cnn())
    _check_chain(g)
    kinds = [lyr.kind for lyr in g.body]
    assert kinds[:3] == ["Conv2D", "MaxPooling2D", "Flatten"] and "Dense" in kinds
    conv = g.layer("conv1")
    assert conv.params["filters"] == conv.output_shape[-1] and conv.params["kernel_size"] == (3, 3)
    assert conv.weights["kernel"].shape[:2] == (3, 3)
    # a unit is a layer and the element-wise layers after it: the softmax stays with its producer
    units = [[lyr.name for lyr in u] for u in g.units()]
    assert units[-1][-1] == "softmax" and len(units[-1]) == 2


def test_unsupported_layer_is_named_in_one_line() -> None:
    inp = keras.Input((6,), name="x")
    h = keras.layers.UnitNormalization(name="unorm")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(h))
    with pytest.raises(UnsupportedLayerError, match="layer 'unorm' \\(UnitNormalization\\).*no converter") as info:
        graph_from_keras(model)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_several_inputs_are_refused() -> None:
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2, name="d")(keras.layers.Concatenate(name="c")([a, b])))
    with pytest.raises(UnsupportedLayerError, match="2 inputs .*one input tensor"):
        graph_from_keras(model)


@pytest.mark.parametrize("name", ['fc"; system("id"); int z', "fc\nrm", "fc $(id)"])
def test_a_layer_name_that_could_read_as_code_is_refused(monkeypatch, capsys, tmp_path: Path, name: str) -> None:
    """Layer names go into every board's hls4ml project (C++, Tcl) and the plan file: one holding anything but
    letters, digits, '.', '_' and '-' is refused when the model is read, naming it (issue #15)."""
    from cli_helpers import run_cli

    inp = keras.Input((6,), name="x")
    model = keras.Model(inp, keras.layers.Dense(2, name=name)(inp), name="m")
    with pytest.raises(UnsupportedLayerError, match="its name holds characters other than letters") as info:
        graph_from_keras(model)
    assert repr(name) in str(info.value) and "rename the layer" in str(info.value)
    model.save(tmp_path / "m.keras")
    rc, _, err = run_cli(monkeypatch, capsys, "plan", str(tmp_path / "m.keras"), "-o", str(tmp_path / "p.yaml"))
    assert rc == 2 and "rename the layer" in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "p.yaml").exists()


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    return small_cnn(seed=3)


def test_keras3_files_round_trip(tmp_path: Path, cnn: keras.Model) -> None:
    want = graph_from_keras(cnn)
    cnn.save(tmp_path / "m.keras")
    cnn.save(tmp_path / "m.h5")
    (tmp_path / "arch.json").write_text(cnn.to_json())
    cnn.save_weights(tmp_path / "arch.weights.h5")
    for path in ("m.keras", "m.h5", "arch.json"):
        g = load_model(tmp_path / path)
        assert [(lyr.name, lyr.kind, lyr.output_shape) for lyr in g.layers] == \
            [(lyr.name, lyr.kind, lyr.output_shape) for lyr in want.layers], path
        for a, b in zip(g.layers, want.layers, strict=True):
            for k in a.weights:
                np.testing.assert_array_equal(a.weights[k], b.weights[k])
        assert g.source.files[0] == tmp_path / path


def test_keras2_json_and_h5_are_read_without_tensorflow(tmp_path: Path) -> None:
    arch, weights, full = keras2_mlp(tmp_path)
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from split4ml.frontends import load_model\n"
            f"g = load_model({str(arch)!r}); print(g.source.reader, len(g.layers))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["keras-v2", "5"]
    g = load_model(arch)
    assert g.source.files == (arch, weights)  # the weights found next to the JSON, as hls4ml's tutorials name them
    assert [(lyr.name, lyr.kind, lyr.activation) for lyr in g.body] == [
        ("fc1", "Dense", "relu"), ("bn1", "BatchNormalization", None), ("fc2", "Dense", "relu"),
        ("output", "Dense", "softmax")]
    h = load_model(full)
    assert h.source.reader == "keras-v2" and [lyr.name for lyr in h.layers] == [lyr.name for lyr in g.layers]
    import h5py

    with h5py.File(weights, "r") as f:
        kernel = f["fc1"]["fc1"]["kernel:0"][()]
    np.testing.assert_array_equal(g.layer("fc1").weights["kernel"], kernel)
    assert g.source.reference_name() == "hls4ml.converters.keras_v2_to_hls"


def test_keras2_cnn_full_h5(tmp_path: Path) -> None:
    g = load_model(keras2_cnn(tmp_path))
    assert [lyr.kind for lyr in g.body] == ["Conv2D", "MaxPooling2D", "Flatten", "Dense"]
    assert g.input.output_shape == (8, 8, 1) and g.layer("fc").activation == "softmax"


@pytest.mark.parametrize("naming", ["{}_weights.h5", "{}.weights.h5", "{}.h5"])
def test_json_weights_found_next_to_it(tmp_path: Path, naming: str) -> None:
    arch, weights, _ = keras2_mlp(tmp_path / "src")
    dst = tmp_path / "model.json"
    dst.write_text(arch.read_text())
    (tmp_path / naming.format("model")).write_bytes(weights.read_bytes())
    assert len(load_model(dst).layers) == 5


def test_json_with_explicit_weights_and_without_any(tmp_path: Path) -> None:
    arch, weights, _ = keras2_mlp(tmp_path / "src")
    lone = tmp_path / "lone.json"
    lone.write_text(arch.read_text())
    with pytest.raises(ModelLoadError, match="holds no weights.*--weights"):
        load_model(lone)
    assert len(load_model(lone, weights=weights).layers) == 5
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(lone, weights=tmp_path / "nope.h5")


def test_keras2_unknown_layer_is_named(tmp_path: Path) -> None:
    arch, _, _ = keras2_mlp(tmp_path)
    arch.write_text(arch.read_text().replace('"class_name": "BatchNormalization"', '"class_name": "FancyNorm"'))
    with pytest.raises(UnsupportedLayerError, match="layer 'bn1' \\(FancyNorm\\) is not a layer hls4ml converts"):
        load_model(arch)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.keras")
    (tmp_path / "bad.keras").write_text("not a zip")
    with pytest.raises(ModelLoadError, match="cannot load Keras model") as info:
        load_model(tmp_path / "bad.keras")
    assert "\n" not in str(info.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read Keras architecture"):
        load_model(tmp_path / "bad.json")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelLoadError, match="directory"):
        load_model(tmp_path / "folder", framework="keras")


def test_unknown_custom_layer_error_is_one_line(tmp_path: Path) -> None:
    """A .keras file with a layer class nobody registered: Keras' message (a whole config) is cut to one line."""

    @keras.saving.register_keras_serializable(package="tmp_test")
    class Twice(keras.layers.Layer):
        def call(self, x):  # type: ignore[override]
            return 2 * x

    inp = keras.Input((3,))
    keras.Model(inp, keras.layers.Dense(2)(Twice(name="twice")(inp))).save(tmp_path / "custom.keras")
    code = ("from split4ml.frontends import load_model\n"
            "from split4ml.errors import Split4mlError\n"
            f"try:\n    load_model({str(tmp_path / 'custom.keras')!r})\n"
            "except Split4mlError as e:\n    print(repr(str(e)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    msg = res.stdout.strip()
    assert "Twice" in msg and "\\n" not in msg and len(msg) < 500


def test_framework_dispatch(tmp_path: Path) -> None:
    assert framework_of("a.keras") == "keras" and framework_of("a.json") == "keras"
    assert framework_of("a.onnx") == "onnx" and framework_of("a.pt2") == "pytorch"
    assert framework_of("a.bin", "tf") == "keras"
    with pytest.raises(ModelLoadError, match="extension"):
        framework_of("a.bin")
    mnist_fcnn().save(tmp_path / "m.keras")
    assert read_model(tmp_path / "m.keras", framework="tf").reader == "keras-v3"
    with pytest.raises(ModelLoadError, match="only apply to PyTorch"):
        load_model(tmp_path / "m.keras", entry="X")


def test_name_config_is_hls4mls_own(tmp_path: Path) -> None:
    """The configuration split4ml converts quantized models with is what hls4ml's config_from_keras_model
    (granularity='name') writes."""
    import hls4ml

    model = small_cnn()
    src = graph_from_keras(model).source
    ours = name_config(src.layers, "Vivado", "fixed<16,6>", quantizers=True)
    theirs = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vivado")
    assert ours["LayerName"] == theirs["LayerName"]
    assert ours["Model"]["Precision"] == theirs["Model"]["Precision"]


def test_import_is_lazy() -> None:
    code = "import sys, split4ml.frontends; print('keras' in sys.modules, 'hls4ml' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]
