"""Keras functional models with skip connections (Add, Concatenate) to a DAG Graph."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
layers = keras.layers

from split4ml.errors import UnsupportedLayerError  # noqa: E402
from split4ml.frontends import load_model  # noqa: E402
from split4ml.frontends.keras import graph_from_keras  # noqa: E402
from split4ml.networks import residual_mlp  # noqa: E402


def _forward(g, x: np.ndarray) -> np.ndarray:
    """Float64 numpy evaluation of Dense/Activation/Add/Concatenate/Flatten graphs."""
    vals = {g.input.name: x.astype(np.float64)}
    for lyr in g.body:
        a = [vals[s] for s in lyr.inputs]
        if lyr.kind == "Dense":
            y = a[0] @ lyr.weights["kernel"].astype(np.float64) + lyr.weights["bias"].astype(np.float64)
        elif lyr.kind == "Add":
            y = a[0] + a[1]
        elif lyr.kind == "Concatenate":
            y = np.concatenate(a, axis=-1)
        elif lyr.kind in ("Activation", "Flatten"):
            y = a[0].reshape((a[0].shape[0], -1))
        else:  # pragma: no cover
            raise AssertionError(lyr.kind)
        act = lyr.activation
        if act == "relu":
            y = np.maximum(y, 0)
        elif act == "softmax":
            e = np.exp(y - y.max(-1, keepdims=True))
            y = e / e.sum(-1, keepdims=True)
        vals[lyr.name] = y
    return vals[g.outputs[0]]


def test_residual_mlp_becomes_a_dag() -> None:
    model = residual_mlp(seed=1)
    g = graph_from_keras(model)
    assert not g.is_chain
    assert [(lyr.name, lyr.kind, lyr.inputs) for lyr in g.body] == [
        ("stem", "Dense", ("x",)),
        ("b1_fc1", "Dense", ("stem",)), ("b1_fc2", "Dense", ("b1_fc1",)), ("b1_add", "Add", ("stem", "b1_fc2")),
        ("b1_relu", "Activation", ("b1_add",)),
        ("b2_fc1", "Dense", ("b1_relu",)), ("b2_fc2", "Dense", ("b2_fc1",)), ("b2_add", "Add", ("b1_relu", "b2_fc2")),
        ("b2_relu", "Activation", ("b2_add",)),
        ("head", "Dense", ("b2_relu",)), ("softmax", "Activation", ("head",)),
    ]
    assert g.layer("b1_add").in_shapes == ((16,), (16,))
    assert g.outputs == ("softmax",) and g.n_params == 2298
    x = np.random.default_rng(0).uniform(size=(16, 64)).astype(np.float32)
    np.testing.assert_allclose(_forward(g, x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


def test_concatenate_branches_dropout_and_merge_order() -> None:
    x = keras.Input((5,), name="x")
    left = layers.Dense(3, activation="relu", name="left")(x)
    right = layers.Dropout(0.5, name="drop")(layers.Dense(2, name="right")(x))
    cat = layers.Concatenate(name="cat")([right, left])  # argument order is kept
    skip = layers.Concatenate(name="skip")([cat, x])
    model = keras.Model(x, layers.Dense(4, name="out")(skip), name="fork")
    g = graph_from_keras(model)
    assert "drop" not in g
    assert g.layer("cat").inputs == ("right", "left") and g.layer("cat").input_shapes == ((2,), (3,))
    assert g.layer("cat").params["axis"] == -1 and g.layer("cat").output_shape == (5,)
    assert g.layer("skip").inputs == ("cat", "x")
    names = [lyr.name for lyr in g.layers]
    assert names.index("right") < names.index("cat") and names.index("left") < names.index("cat")
    xs = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
    np.testing.assert_allclose(_forward(g, xs), model.predict(xs, verbose=0), rtol=1e-4, atol=1e-5)


def test_dag_survives_a_keras_file(tmp_path) -> None:
    path = tmp_path / "res.keras"
    residual_mlp(seed=2).save(path)
    g = load_model(path)
    assert [lyr.kind for lyr in g.body].count("Add") == 2


def test_three_input_add_is_refused_by_hls4ml_in_one_line() -> None:
    x = keras.Input((4,), name="x")
    m = layers.Add(name="m")([x, layers.Dense(4, name="d")(x), layers.Dense(4, name="e")(x)])
    with pytest.raises(UnsupportedLayerError, match="hls4ml cannot convert layer 'm'") as info:
        graph_from_keras(keras.Model(x, m, name="bad"))
    assert "\n" not in str(info.value)


def test_other_merges_and_axes_are_hls4mls_layers() -> None:
    """What hls4ml converts is planned: a Subtract is an Op of two inputs, a Concatenate on another axis
    keeps its axis (both run on one board inside hls4ml's own nodes)."""
    x = keras.Input((3, 4), name="x")
    y = layers.Conv1D(4, 1, name="c")(x)
    sub = layers.Subtract(name="s")([x, y])
    cat = layers.Concatenate(axis=1, name="m")([sub, y])
    g = graph_from_keras(keras.Model(x, layers.Flatten(name="f")(cat), name="ok"))
    assert g.layer("s").kind == "Op" and g.layer("s").params["hls_class"] == "Merge"
    assert g.layer("s").inputs == ("x", "c")
    assert g.layer("m").kind == "Concatenate" and g.layer("m").output_shape == (6, 4)
