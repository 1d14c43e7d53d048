"""Tests of the Keras 3 frontend (no hls4ml compile: fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
layers = keras.layers

from split4ml.errors import ModelLoadError, UnsupportedLayerError  # noqa: E402
from split4ml.frontends import framework_of, load_model  # noqa: E402
from split4ml.frontends.keras import graph_from_keras, load_keras  # noqa: E402
from split4ml.ir import Graph  # noqa: E402
from split4ml.models import mnist_fcnn, small_cnn  # noqa: E402


# --------------------------------------------------------------------------- helpers
def _check_chain(g: Graph) -> None:
    """Every layer consumes the previous one and its input shape is the previous output shape."""
    assert g.layers[0].kind == "Input"
    assert g.layers[0].input_shape == g.layers[0].output_shape
    for prev, cur in zip(g.layers, g.layers[1:], strict=False):
        assert cur.inputs == (prev.name,), cur.name
        assert cur.input_shape == prev.output_shape, cur.name
    assert g.outputs == (g.layers[-1].name,)
    assert g.is_chain


def _keras_layer_by_name(model: keras.Model, name: str) -> keras.layers.Layer:
    return model.get_layer(name)


def _np_forward(g: Graph, x: np.ndarray) -> np.ndarray:
    """A float64 numpy reference of the Dense/BatchNorm/Activation subset of the Graph."""
    acts = {
        None: lambda v: v,
        "linear": lambda v: v,
        "relu": lambda v: np.maximum(v, 0.0),
        "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
        "tanh": np.tanh,
        "softmax": lambda v: (
            np.exp(v - v.max(-1, keepdims=True)) / np.exp(v - v.max(-1, keepdims=True)).sum(-1, keepdims=True)
        ),
    }
    y = x.astype(np.float64)
    for lyr in g.body:
        w = {k: np.asarray(v, dtype=np.float64) for k, v in lyr.weights.items()}
        if lyr.kind == "Dense":
            y = y @ w["kernel"] + (w["bias"] if "bias" in w else 0.0)
            y = acts[lyr.activation](y)
        elif lyr.kind == "BatchNormalization":
            y = (y - w["moving_mean"]) / np.sqrt(w["moving_variance"] + lyr.params["epsilon"]) * w[
                "gamma"
            ] + w["beta"]
        elif lyr.kind == "Activation":
            y = acts[lyr.activation](y)
        else:  # pragma: no cover - test helper
            raise AssertionError(f"no numpy reference for {lyr.kind}")
    return y


def _randomize_bn(model: keras.Model, seed: int) -> None:
    """Give BatchNorm layers non-trivial statistics (fresh ones are mean 0, variance 1)."""
    rng = np.random.default_rng(seed)
    for lyr in model.layers:
        if isinstance(lyr, layers.BatchNormalization):
            lyr.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in lyr.get_weights()])


# --------------------------------------------------------------------------- chains
def test_sequential_mnist_fcnn() -> None:
    model = mnist_fcnn(seed=1)
    g = graph_from_keras(model)
    _check_chain(g)
    assert g.name == model.name
    assert [(lyr.name, lyr.kind) for lyr in g.layers] == [
        ("x", "Input"),
        ("fc1", "Dense"),
        ("fc2", "Dense"),
        ("fc3", "Dense"),
        ("softmax", "Activation"),
    ]
    assert [lyr.activation for lyr in g.layers] == [None, "relu", "relu", None, "softmax"]
    assert g.input.output_shape == (784,)
    assert g.layers[-1].output_shape == (10,)
    assert g.n_params == model.count_params()
    for name in ("fc1", "fc2", "fc3"):
        kernel, bias = _keras_layer_by_name(model, name).get_weights()
        lyr = g.layer(name)
        assert lyr.params["units"] == kernel.shape[1]
        assert lyr.params["use_bias"] is True
        assert lyr.weights["kernel"].dtype == np.float32
        np.testing.assert_array_equal(lyr.weights["kernel"], kernel)
        np.testing.assert_array_equal(lyr.weights["bias"], bias)
        assert not lyr.weights["kernel"].flags.writeable  # the Graph is a value


def test_weights_are_copies() -> None:
    model = mnist_fcnn(seed=0)
    g = graph_from_keras(model)
    before = g.layer("fc1").weights["kernel"].copy()
    k, b = model.get_layer("fc1").get_weights()
    model.get_layer("fc1").set_weights([k + 1.0, b])
    np.testing.assert_array_equal(g.layer("fc1").weights["kernel"], before)


def test_functional_chain_matches_sequential() -> None:
    seq = mnist_fcnn(seed=2)
    x = keras.Input((784,), name="x")
    h = x
    for lyr in seq.layers:
        h = lyr(h)
    func = keras.Model(x, h, name="func_chain")
    gs, gf = graph_from_keras(seq), graph_from_keras(func)
    _check_chain(gf)
    assert gf.name == "func_chain"
    assert [(a.name, a.kind, a.input_shape, a.output_shape, a.activation) for a in gf.layers] == [
        (a.name, a.kind, a.input_shape, a.output_shape, a.activation) for a in gs.layers
    ]
    for a, b in zip(gs.layers, gf.layers, strict=True):
        assert a.weights.keys() == b.weights.keys()
        for key in a.weights:
            np.testing.assert_array_equal(a.weights[key], b.weights[key])


def test_name_override() -> None:
    assert graph_from_keras(mnist_fcnn(), name="other").name == "other"


def test_small_cnn_layers() -> None:
    model = small_cnn(seed=0)
    g = graph_from_keras(model)
    _check_chain(g)
    conv = g.layer("conv1")
    assert conv.kind == "Conv2D" and conv.activation == "relu"
    assert conv.input_shape == (8, 8, 1) and conv.output_shape == (6, 6, 4)
    assert dict(conv.params) == {
        "filters": 4,
        "kernel_size": (3, 3),
        "strides": (1, 1),
        "padding": "valid",
        "use_bias": True,
    }
    np.testing.assert_array_equal(conv.weights["kernel"], model.get_layer("conv1").get_weights()[0])
    pool = g.layer("pool1")
    assert pool.kind == "MaxPooling2D" and dict(pool.params) == {
        "pool_size": (2, 2),
        "strides": (2, 2),
        "padding": "valid",
    }
    assert g.layer("flatten").output_shape == (36,)


def test_every_1d_layer_type() -> None:
    x = keras.Input((16, 3), name="seq_in")
    h = layers.Conv1D(4, 3, padding="same", activation="relu", name="c1")(x)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.MaxPooling1D(2, name="mp")(h)
    h = layers.AveragePooling1D(3, strides=2, padding="same", name="ap")(h)
    h = layers.Conv1D(2, 2, strides=2, use_bias=False, name="c2")(h)
    h = layers.Flatten(name="fl")(h)
    h = layers.Dropout(0.5, name="drop")(h)
    h = layers.Dense(8, name="d1")(h)
    h = layers.ReLU(name="r")(h)
    h = layers.Dense(5, activation="linear", name="d2")(h)
    h = layers.Softmax(name="sm")(h)
    model = keras.Model(x, h, name="one_d")
    g = graph_from_keras(model)
    _check_chain(g)
    assert [(lyr.name, lyr.kind, lyr.activation) for lyr in g.layers] == [
        ("seq_in", "Input", None),
        ("c1", "Conv1D", "relu"),
        ("bn", "BatchNormalization", None),
        ("mp", "MaxPooling1D", None),
        ("ap", "AveragePooling1D", None),
        ("c2", "Conv1D", None),
        ("fl", "Flatten", None),
        ("d1", "Dense", None),
        ("r", "Activation", "relu"),
        ("d2", "Dense", None),
        ("sm", "Activation", "softmax"),
    ]
    assert g.layer("d1").inputs == ("fl",)  # the Dropout is gone and its consumer rewired
    assert g.layer("c1").params["kernel_size"] == (3,)
    assert g.layer("c1").params["padding"] == "same"
    assert g.layer("c2").params["strides"] == (2,)
    assert g.layer("c2").params["use_bias"] is False
    assert set(g.layer("c2").weights) == {"kernel"}
    assert dict(g.layer("ap").params) == {"pool_size": (3,), "strides": (2,), "padding": "same"}
    assert set(g.layer("bn").weights) == {"gamma", "beta", "moving_mean", "moving_variance"}
    assert g.layer("bn").params["epsilon"] == pytest.approx(model.get_layer("bn").epsilon)
    # shapes come from Keras itself
    for lyr in g.body:
        assert (None, *lyr.output_shape) == tuple(model.get_layer(lyr.name).output.shape)
    assert [[lyr.name for lyr in unit] for unit in g.units()] == [
        ["c1"],
        ["bn"],
        ["mp"],
        ["ap"],
        ["c2"],
        ["fl"],
        ["d1", "r"],
        ["d2", "sm"],
    ]


def test_every_2d_layer_type() -> None:
    model = keras.Sequential(
        [
            keras.Input((9, 8, 2), name="img"),
            layers.Conv2D(3, (3, 2), strides=(1, 2), padding="same", use_bias=False, name="c"),
            layers.BatchNormalization(center=False, scale=False, name="bn"),
            layers.AveragePooling2D((3, 2), name="ap"),
            layers.MaxPooling2D((1, 2), strides=1, padding="same", name="mp"),
            layers.Flatten(name="fl"),
            layers.Dense(4, activation="tanh", name="d"),
            layers.Activation("sigmoid", name="sig"),
        ],
        name="two_d",
    )
    g = graph_from_keras(model)
    _check_chain(g)
    assert [lyr.kind for lyr in g.body] == [
        "Conv2D",
        "BatchNormalization",
        "AveragePooling2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Activation",
    ]
    c = g.layer("c")
    assert c.params["kernel_size"] == (3, 2) and c.params["strides"] == (1, 2)
    assert c.weights["kernel"].shape == (3, 2, 2, 3)
    assert c.output_shape == (9, 4, 3)
    bn = g.layer("bn")
    np.testing.assert_array_equal(bn.weights["gamma"], np.ones(3))
    np.testing.assert_array_equal(bn.weights["beta"], np.zeros(3))
    assert bn.weights["gamma"].dtype == bn.weights["moving_mean"].dtype
    assert g.layer("mp").params["strides"] == (1, 1)
    assert g.layer("d").activation == "tanh"
    assert g.layer("sig").activation == "sigmoid"
    for lyr in g.body:
        assert (None, *lyr.output_shape) == tuple(model.get_layer(lyr.name).output.shape)


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_graph_computes_what_keras_computes(center: bool, scale: bool) -> None:
    """A numpy forward pass over the Graph matches Keras (weights, BN fill, dropout removal)."""
    model = keras.Sequential(
        [
            keras.Input((6,), name="x"),
            layers.Dense(7, activation="relu", name="d1"),
            layers.Dropout(0.3, name="drop"),
            layers.BatchNormalization(center=center, scale=scale, epsilon=0.01, name="bn"),
            layers.Dense(5, activation="sigmoid", name="d2"),
            layers.GaussianNoise(0.5, name="noise"),
            layers.Dense(4, name="d3"),
            layers.Activation("linear", name="lin"),
            layers.Softmax(name="sm"),
        ],
        name="mlp_bn",
    )
    _randomize_bn(model, seed=3)
    g = graph_from_keras(model)
    _check_chain(g)
    assert "drop" not in g and "noise" not in g and "lin" not in g
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(_np_forward(g, x), expected, rtol=1e-4, atol=1e-5)


def test_trailing_dropout_is_removed() -> None:
    model = keras.Sequential(
        [keras.Input((4,), name="x"), layers.Dense(3, name="d"), layers.Dropout(0.2, name="drop")], name="m"
    )
    g = graph_from_keras(model)
    assert [lyr.name for lyr in g.layers] == ["x", "d"]
    assert g.outputs == ("d",)
    _check_chain(g)


def test_units_keep_activations_with_producer() -> None:
    model = keras.Sequential(
        [
            keras.Input((5,), name="x"),
            layers.Dense(6, activation="relu", name="d1"),
            layers.Dense(4, name="d2"),
            layers.ReLU(name="r"),
            layers.Dense(3, activation="relu", name="d3"),
            layers.Activation("softmax", name="sm"),
        ],
        name="u",
    )
    g = graph_from_keras(model)
    assert [[lyr.name for lyr in unit] for unit in g.units()] == [["d1"], ["d2", "r"], ["d3", "sm"]]


# --------------------------------------------------------------------------- names
def test_reserved_input_name_is_renamed() -> None:
    model = keras.Sequential(
        [keras.Input((3,), name="input"), layers.Dense(2, name="input_1"), layers.Dense(2, name="d")],
        name="m",
    )
    g = graph_from_keras(model)
    assert [lyr.name for lyr in g.layers] == ["input_2", "input_1", "d"]
    assert g.layer("input_1").inputs == ("input_2",)
    assert graph_from_keras(model).input.name == "input_2"  # deterministic
    _check_chain(g)


def test_non_identifier_names_are_sanitized() -> None:
    model = keras.Sequential(
        [
            keras.Input((3,), name="in-put"),
            layers.Dense(2, name="3dense"),
            layers.Dense(2, name="int"),
            layers.Dense(2, name="ok_name"),
        ],
        name="m",
    )
    g = graph_from_keras(model)
    names = [lyr.name for lyr in g.layers]
    assert names == ["in_put_1", "l_3dense_1", "int_1", "ok_name"]
    assert all(n.isidentifier() for n in names)
    _check_chain(g)


# --------------------------------------------------------------------------- unsupported
def _assert_unsupported(model: keras.Model, layer_name: str, class_name: str, *words: str) -> str:
    with pytest.raises(UnsupportedLayerError) as info:
        graph_from_keras(model)
    msg = str(info.value)
    assert repr(layer_name) in msg
    assert class_name in msg
    for w in words:
        assert w in msg
    return msg


def test_multiply_merge_raises() -> None:
    x = keras.Input((8,), name="x")
    a = layers.Dense(8, name="d1")(x)
    b = layers.Dense(8, name="d2")(a)
    s = layers.Multiply(name="gate")([a, b])
    model = keras.Model(x, layers.Dense(2, name="out")(s), name="gated")
    _assert_unsupported(model, "gate", "Multiply", "this layer type is not supported")


def test_three_input_concatenate_raises() -> None:
    x = keras.Input((8,), name="x")
    a = layers.Dense(4, name="left")(x)
    b = layers.Dense(4, name="right")(x)
    c = layers.Dense(4, name="mid")(x)
    model = keras.Model(x, layers.Concatenate(name="cat")([a, b, c]), name="fork")
    _assert_unsupported(model, "cat", "Concatenate", "3 inputs are not supported")


def test_several_inputs_or_outputs_raise() -> None:
    x1, x2 = keras.Input((3,), name="x1"), keras.Input((3,), name="x2")
    two_in = keras.Model([x1, x2], layers.Add(name="add")([x1, x2]), name="two_in")
    with pytest.raises(UnsupportedLayerError, match="2 inputs"):
        graph_from_keras(two_in)
    x = keras.Input((3,), name="x")
    h = layers.Dense(3, name="h")(x)
    two_out = keras.Model(x, [layers.Dense(1, name="o1")(h), layers.Dense(1, name="o2")(h)], name="two_out")
    with pytest.raises(UnsupportedLayerError, match="2 outputs"):
        graph_from_keras(two_out)


def _seq(*body: keras.layers.Layer, shape: tuple[int, ...] = (6,)) -> keras.Model:
    return keras.Sequential([keras.Input(shape, name="x"), *body], name="m")


@pytest.mark.parametrize(
    "model_fn,layer_name,class_name,words",
    [
        (
            lambda: _seq(layers.LSTM(3, name="rnn"), shape=(5, 2)),
            "rnn",
            "LSTM",
            ("Dense", "Conv2D", "README"),
        ),
        (lambda: _seq(layers.LeakyReLU(name="leaky")), "leaky", "LeakyReLU", ("supported layers",)),
        (lambda: _seq(layers.ReLU(max_value=6.0, name="relu6")), "relu6", "ReLU", ("max_value",)),
        (lambda: _seq(layers.ReLU(negative_slope=0.1, name="lr")), "lr", "ReLU", ("negative_slope",)),
        (lambda: _seq(layers.ReLU(threshold=0.5, name="th")), "th", "ReLU", ("threshold",)),
        (lambda: _seq(layers.Activation("gelu", name="g")), "g", "Activation", ("gelu",)),
        (lambda: _seq(layers.Dense(3, activation="elu", name="de")), "de", "Dense", ("elu",)),
        (lambda: _seq(layers.Dense(3, name="d3"), shape=(4, 6)), "d3", "Dense", ("rank-2", "Flatten")),
        (lambda: _seq(layers.Softmax(axis=1, name="sm"), shape=(4, 6)), "sm", "Softmax", ("axis",)),
        (
            lambda: _seq(layers.BatchNormalization(axis=1, name="bn"), shape=(4, 6)),
            "bn",
            "BatchNormalization",
            ("axis",),
        ),
        (
            lambda: _seq(layers.Conv1D(2, 2, dilation_rate=2, name="dil"), shape=(9, 2)),
            "dil",
            "Conv1D",
            ("dilation",),
        ),
        (
            lambda: _seq(layers.Conv1D(2, 2, padding="causal", name="cau"), shape=(9, 2)),
            "cau",
            "Conv1D",
            ("causal",),
        ),
        (
            lambda: _seq(layers.Conv2D(4, 2, groups=2, name="grp"), shape=(5, 5, 2)),
            "grp",
            "Conv2D",
            ("groups",),
        ),
        (
            lambda: _seq(layers.Conv2D(2, 2, data_format="channels_first", name="cf"), shape=(2, 5, 5)),
            "cf",
            "Conv2D",
            ("channels_first",),
        ),
        (lambda: _seq(layers.Reshape((3, 2), name="rs")), "rs", "Reshape", ("supported layers",)),
    ],
)
def test_unsupported_layers_raise(model_fn, layer_name: str, class_name: str, words: tuple[str, ...]) -> None:
    _assert_unsupported(model_fn(), layer_name, class_name, *words)


def test_subclassed_dense_is_not_accepted() -> None:
    class MyDense(layers.Dense):
        pass

    _assert_unsupported(_seq(MyDense(3, name="mine")), "mine", "MyDense", "supported layers")


def test_nested_model_raises() -> None:
    inner = keras.Sequential([keras.Input((6,)), layers.Dense(3, name="i1")], name="inner")
    _assert_unsupported(_seq(inner), "inner", "Sequential", "nested")


def test_subclassed_model_raises() -> None:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="net")
            self.d = layers.Dense(2)

        def call(self, x):  # type: ignore[override]
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(UnsupportedLayerError, match="subclassed"):
        graph_from_keras(net)


def test_unbuilt_sequential_raises_load_error() -> None:
    model = keras.Sequential([layers.Dense(2, name="d")], name="unbuilt")
    with pytest.raises(ModelLoadError, match="not built"):
        graph_from_keras(model)


# --------------------------------------------------------------------------- files
def _assert_same_graph(a: Graph, b: Graph) -> None:
    assert a.name == b.name
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert (la.name, la.kind, la.input_shape, la.output_shape, la.inputs, la.activation) == (
            lb.name,
            lb.kind,
            lb.input_shape,
            lb.output_shape,
            lb.inputs,
            lb.activation,
        )
        assert dict(la.params) == dict(lb.params)
        assert la.weights.keys() == lb.weights.keys()
        for key in la.weights:
            np.testing.assert_array_equal(la.weights[key], lb.weights[key])


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    return small_cnn(seed=5)


def test_keras_file_round_trip(tmp_path: Path, cnn: keras.Model) -> None:
    path = tmp_path / "cnn.keras"
    cnn.save(path)
    g = load_keras(path)
    _assert_same_graph(g, graph_from_keras(cnn))
    _assert_same_graph(load_model(str(path)), g)


def test_h5_file_round_trip(tmp_path: Path, cnn: keras.Model) -> None:
    path = tmp_path / "cnn.h5"
    cnn.save(path)
    _assert_same_graph(load_keras(path), graph_from_keras(cnn))
    _assert_same_graph(load_model(path), graph_from_keras(cnn))


@pytest.mark.parametrize("how", ["keras3_weights", "keras3_weights_renamed_h5", "legacy_full_h5"])
def test_json_with_weights_next_to_it(tmp_path: Path, cnn: keras.Model, how: str) -> None:
    (tmp_path / "cnn.json").write_text(cnn.to_json())
    if how == "legacy_full_h5":  # legacy HDF5 layout, as Keras 2 wrote it
        cnn.save(tmp_path / "cnn.h5")
    else:
        cnn.save_weights(tmp_path / "cnn.weights.h5")
        if how == "keras3_weights_renamed_h5":
            (tmp_path / "cnn.weights.h5").rename(tmp_path / "cnn.h5")
    _assert_same_graph(load_keras(tmp_path / "cnn.json"), graph_from_keras(cnn))


def test_json_with_explicit_weights(tmp_path: Path, cnn: keras.Model) -> None:
    (tmp_path / "arch.json").write_text(cnn.to_json())
    cnn.save_weights(tmp_path / "trained.weights.h5")
    g = load_model(tmp_path / "arch.json", weights=tmp_path / "trained.weights.h5")
    _assert_same_graph(g, graph_from_keras(cnn))


def test_explicit_weights_replace_stored_ones(tmp_path: Path) -> None:
    a, b = small_cnn(seed=1), small_cnn(seed=2)
    a.save(tmp_path / "a.keras")
    b.save_weights(tmp_path / "b.weights.h5")
    g = load_keras(tmp_path / "a.keras", weights=tmp_path / "b.weights.h5")
    _assert_same_graph(g, graph_from_keras(b))


def test_json_without_weights_raises(tmp_path: Path, cnn: keras.Model) -> None:
    (tmp_path / "lonely.json").write_text(cnn.to_json())
    with pytest.raises(ModelLoadError) as info:
        load_keras(tmp_path / "lonely.json")
    assert "weights" in str(info.value) and "lonely.weights.h5" in str(info.value)


def test_missing_files_raise(tmp_path: Path, cnn: keras.Model) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_keras(tmp_path / "nope.keras")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.h5")
    (tmp_path / "arch.json").write_text(cnn.to_json())
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_keras(tmp_path / "arch.json", weights=tmp_path / "missing.weights.h5")


def test_unreadable_files_raise(tmp_path: Path, cnn: keras.Model) -> None:
    bad = tmp_path / "garbage.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match="cannot load Keras model"):
        load_keras(bad)
    cnn.save_weights(tmp_path / "only.weights.h5")
    with pytest.raises(ModelLoadError, match="weights only"):
        load_keras(tmp_path / "only.weights.h5")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="to_json"):
        load_keras(tmp_path / "bad.json", weights=tmp_path / "only.weights.h5")
    other = keras.Sequential([keras.Input((3,)), layers.Dense(2, name="z")], name="other")
    other.save_weights(tmp_path / "other.weights.h5")
    (tmp_path / "arch.json").write_text(cnn.to_json())
    with pytest.raises(ModelLoadError, match="cannot load weights"):
        load_keras(tmp_path / "arch.json", weights=tmp_path / "other.weights.h5")


def test_load_model_dispatch(tmp_path: Path) -> None:
    for ext, needle in ((".pt", "as TorchScript"), (".pt2", "as a torch.export program")):
        f = tmp_path / f"m{ext}"
        f.write_bytes(b"")  # reaches the PyTorch frontend (tests/frontends/test_torch.py)
        with pytest.raises(ModelLoadError, match=needle):
            load_model(f)
    (tmp_path / "m.onnx").write_bytes(b"")  # reaches the ONNX frontend (tests/frontends/test_onnx.py)
    with pytest.raises(ModelLoadError, match="no ONNX graph nodes"):
        load_model(tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="extension"):
        load_model(tmp_path / "model.bin")
    with pytest.raises(ModelLoadError, match="unknown framework"):
        load_model(tmp_path / "m.keras", framework="caffe")
    assert framework_of("a/b.KERAS") == "keras"
    assert framework_of("a/b.json") == "keras"
    assert framework_of("a/b.bin", framework="TF") == "keras"
    assert framework_of("a/b.h5", framework="torch") == "pytorch"


def test_framework_override_loads_keras(tmp_path: Path, cnn: keras.Model) -> None:
    cnn.save(tmp_path / "cnn.keras")
    (tmp_path / "cnn.keras").rename(tmp_path / "cnn.model")
    with pytest.raises(ModelLoadError):
        load_model(tmp_path / "cnn.model")
    # keras itself needs a known extension; the override must reach the keras frontend
    with pytest.raises(ModelLoadError, match="not a Keras model file"):
        load_model(tmp_path / "cnn.model", framework="keras")


def test_import_is_lazy() -> None:
    code = (
        "import sys, split4ml, split4ml.frontends, split4ml.frontends.keras, split4ml.models; "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shared_layer_raises() -> None:
    x = keras.Input((4,), name="x")
    twice = layers.Dense(4, name="twice")
    model = keras.Model(x, twice(twice(x)), name="shared")
    with pytest.raises(UnsupportedLayerError, match="'twice'.*more than once"):
        graph_from_keras(model)
