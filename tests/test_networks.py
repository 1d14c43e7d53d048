"""Tests of the example Keras model builders."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

from split4ml.errors import Split4mlError  # noqa: E402
from split4ml.frontends.keras import graph_from_keras  # noqa: E402
from split4ml.networks import (  # noqa: E402
    deep_mlp,
    digits_split,
    mnist_fcnn,
    residual_mlp,
    small_cnn,
    train_residual_mlp,
)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


@pytest.mark.parametrize("builder", [mnist_fcnn, deep_mlp, small_cnn, residual_mlp])
def test_builders_are_deterministic_per_seed(builder) -> None:
    a, b, c = builder(seed=4), builder(seed=4), builder(seed=5)
    assert [lyr.name for lyr in a.layers] == [lyr.name for lyr in b.layers]
    for wa, wb in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(_weights(a), _weights(c), strict=True))
    # every weight tensor is random (non-constant), biases included
    assert all(np.ptp(w) > 0 for w in _weights(a))


def test_mnist_fcnn_structure() -> None:
    g = graph_from_keras(mnist_fcnn())
    assert g.input.name == "x" and g.input.output_shape == (784,)
    assert [(lyr.name, lyr.kind, lyr.activation, lyr.output_shape) for lyr in g.body] == [
        ("fc1", "Dense", "relu", (16,)),
        ("fc2", "Dense", "relu", (32,)),
        ("fc3", "Dense", None, (10,)),
        ("softmax", "Activation", "softmax", (10,)),
    ]
    expected = (784 * 16 + 16) + (16 * 32 + 32) + (32 * 10 + 10)
    assert g.n_params == expected
    assert 13_000 < g.n_params < 14_000


@pytest.mark.parametrize("widths,n_in,n_out", [((64, 64, 32, 32, 16, 16), 32, 10), ((5, 7), 3, 2)])
def test_deep_mlp_structure(widths: tuple[int, ...], n_in: int, n_out: int) -> None:
    g = graph_from_keras(deep_mlp(widths=widths, n_in=n_in, n_out=n_out))
    dense = [lyr for lyr in g.body if lyr.kind == "Dense"]
    assert [lyr.output_shape[0] for lyr in dense] == [*widths, n_out]
    assert [lyr.activation for lyr in dense] == ["relu"] * len(widths) + [None]
    assert g.input.output_shape == (n_in,)
    assert g.layers[-1].kind == "Activation" and g.layers[-1].activation == "softmax"


def test_deep_mlp_default_has_six_relu_dense_layers() -> None:
    g = graph_from_keras(deep_mlp())
    assert sum(1 for lyr in g.body if lyr.kind == "Dense" and lyr.activation == "relu") >= 6


@pytest.mark.parametrize("kwargs", [{"widths": ()}, {"widths": (4, 0)}, {"n_in": 0}, {"n_out": 0}])
def test_deep_mlp_rejects_bad_sizes(kwargs: dict) -> None:
    with pytest.raises(Split4mlError, match="deep_mlp"):
        deep_mlp(**kwargs)


def test_small_cnn_structure() -> None:
    model = small_cnn()
    g = graph_from_keras(model)
    assert [lyr.kind for lyr in g.layers] == [
        "Input", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Activation",
    ]  # fmt: skip
    assert g.input.output_shape == (8, 8, 1)
    assert g.layers[-1].output_shape == (10,)
    x = np.random.default_rng(0).uniform(0, 1, size=(3, 8, 8, 1)).astype(np.float32)
    y = model.predict(x, verbose=0)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_residual_mlp_blocks_and_errors() -> None:
    g = graph_from_keras(residual_mlp(blocks=3, width=8))
    adds = [lyr for lyr in g.body if lyr.kind == "Add"]
    assert [a.inputs for a in adds] == [("stem", "b1_fc2"), ("b1_relu", "b2_fc2"), ("b2_relu", "b3_fc2")]
    with pytest.raises(Split4mlError, match="blocks >= 1"):
        residual_mlp(blocks=0)


def test_residual_mlp_trains_on_digits_in_seconds() -> None:
    x_train, y_train, x_test, y_test = digits_split()
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64) and 0.0 <= x_train.min() <= x_train.max() <= 1.0
    model, info = train_residual_mlp(epochs=10)
    assert info["test_accuracy"] > 0.9
    np.testing.assert_array_equal(info["y_test"], y_test)
