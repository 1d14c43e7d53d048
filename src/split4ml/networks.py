"""Example networks (Keras models) used by the tests, the benchmarks and the demo.

Every builder names all its layers explicitly (Keras' automatic names depend on how many layers
the process created before) and seeds every initializer, so the same ``seed`` gives the same
layer names and the same weights in any process, with no global random state touched.
Keras is imported lazily inside the builders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import Split4mlError

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["deep_mlp", "digits_split", "mnist_fcnn", "residual_mlp", "small_cnn", "train_residual_mlp"]


def _keras() -> ModuleType:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def _init(keras: ModuleType, seed: int, index: int) -> dict[str, Any]:
    """Seeded Glorot kernel and small uniform bias for layer number ``index`` (1-based).

    Biases are non-zero on purpose so that fixed-point tests exercise the bias path.
    """
    base = 1000 * int(seed) + 2 * index
    return {
        "kernel_initializer": keras.initializers.GlorotUniform(seed=base),
        "bias_initializer": keras.initializers.RandomUniform(-0.05, 0.05, seed=base + 1),
    }


def mnist_fcnn(seed: int = 0) -> keras.Model:
    """The fully connected MNIST network: 784 -> 16 relu -> 32 relu -> 10 -> softmax.

    Layers: Input ``x`` (784,), Dense ``fc1`` (16, relu), Dense ``fc2`` (32, relu), Dense ``fc3``
    (10, linear), Activation ``softmax``. 13,434 parameters. Untrained, seeded weights.
    """
    keras = _keras()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(784,), name="x"),
            layers.Dense(16, activation="relu", name="fc1", **_init(keras, seed, 1)),
            layers.Dense(32, activation="relu", name="fc2", **_init(keras, seed, 2)),
            layers.Dense(10, name="fc3", **_init(keras, seed, 3)),
            layers.Activation("softmax", name="softmax"),
        ],
        name="mnist_fcnn",
    )


def deep_mlp(
    widths: Sequence[int] = (64, 64, 32, 32, 16, 16), n_in: int = 32, n_out: int = 10, seed: int = 0
) -> keras.Model:
    """A deeper MLP: Input ``x`` (n_in,), Dense ``fc1``..``fcK`` (``widths``, relu), Dense ``fc{K+1}``
    (n_out, linear), Activation ``softmax``. Untrained, seeded weights.

    Raises:
        Split4mlError: empty ``widths`` or a non-positive size.
    """
    sizes = [int(w) for w in widths]
    if not sizes or min(sizes) < 1 or n_in < 1 or n_out < 1:
        raise Split4mlError(
            f"deep_mlp needs at least one hidden width and positive sizes, got widths={tuple(widths)}, "
            f"n_in={n_in}, n_out={n_out}"
        )
    keras = _keras()
    layers = keras.layers
    body: list[Any] = [keras.Input(shape=(int(n_in),), name="x")]
    for i, width in enumerate(sizes, start=1):
        body.append(layers.Dense(width, activation="relu", name=f"fc{i}", **_init(keras, seed, i)))
    k = len(sizes) + 1
    body.append(layers.Dense(int(n_out), name=f"fc{k}", **_init(keras, seed, k)))
    body.append(layers.Activation("softmax", name="softmax"))
    return keras.Sequential(body, name="deep_mlp")


def small_cnn(seed: int = 0) -> keras.Model:
    """A small CNN for 8x8 grey images (scikit-learn ``load_digits``).

    Layers: Input ``x`` (8, 8, 1), Conv2D ``conv1`` (4 filters, 3x3, relu) -> (6, 6, 4),
    MaxPooling2D ``pool1`` (2) -> (3, 3, 4), Flatten ``flatten`` -> (36,), Dense ``fc1`` (10),
    Activation ``softmax``. 410 parameters. Untrained, seeded weights.
    """
    keras = _keras()
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1), name="x"),
            layers.Conv2D(4, 3, activation="relu", name="conv1", **_init(keras, seed, 1)),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, name="fc1", **_init(keras, seed, 2)),
            layers.Activation("softmax", name="softmax"),
        ],
        name="small_cnn",
    )


def residual_mlp(n_in: int = 64, width: int = 16, blocks: int = 2, n_out: int = 10, seed: int = 0) -> keras.Model:
    """A ResNet-style MLP: a stem, ``blocks`` residual blocks, a classifier (for 8x8 digits, 64 inputs).

    Layers: Input ``x`` (n_in,), Dense ``stem`` (width, relu); per block ``b`` (1-based): Dense
    ``b<b>_fc1`` (width, relu), Dense ``b<b>_fc2`` (width, linear), Add ``b<b>_add`` of the block's
    input and ``b<b>_fc2`` (the skip connection), Activation ``b<b>_relu``; then Dense ``head``
    (n_out, linear) and Activation ``softmax``. With the defaults: 2,298 parameters. Untrained,
    seeded weights.

    Raises:
        Split4mlError: fewer than one block or a non-positive size.
    """
    if blocks < 1 or min(n_in, width, n_out) < 1:
        raise Split4mlError(f"residual_mlp needs blocks >= 1 and positive sizes, got n_in={n_in}, width={width}, "
                            f"blocks={blocks}, n_out={n_out}")
    keras = _keras()
    layers = keras.layers
    x = keras.Input(shape=(int(n_in),), name="x")
    h = layers.Dense(int(width), activation="relu", name="stem", **_init(keras, seed, 1))(x)
    index = 2
    for b in range(1, int(blocks) + 1):
        y = layers.Dense(int(width), activation="relu", name=f"b{b}_fc1", **_init(keras, seed, index))(h)
        y = layers.Dense(int(width), name=f"b{b}_fc2", **_init(keras, seed, index + 1))(y)
        h = layers.Activation("relu", name=f"b{b}_relu")(layers.Add(name=f"b{b}_add")([h, y]))
        index += 2
    out = layers.Dense(int(n_out), name="head", **_init(keras, seed, index))(h)
    out = layers.Activation("softmax", name="softmax")(out)
    return keras.Model(x, out, name="residual_mlp")


def digits_split(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """scikit-learn's 1,797 8x8 digits (shipped with the package), flattened to 64 features scaled to
    [0, 1], shuffled (seeded) and split 1,438 / 359: ``x_train, y_train, x_test, y_test``."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(round(0.8 * len(x)))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def train_residual_mlp(epochs: int = 30, seed: int = 0, blocks: int = 2) -> tuple[keras.Model, dict[str, Any]]:
    """:func:`residual_mlp` trained on :func:`digits_split` (a few seconds on a CPU).

    Adam (learning rate 0.005), batch 64, cross-entropy with label smoothing 0.1: smoothing keeps
    the logits small (about 6 instead of 40), inside the range of the default ``ap_fixed<16,6>``
    results, so the fixed-point model keeps the float accuracy.

    Returns the model and ``{"x_test", "y_test", "test_accuracy"}`` (float accuracy on the 359
    held-out digits).
    """
    import numpy as np

    keras = _keras()
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = digits_split(seed)
    model = residual_mlp(blocks=blocks, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(0.005),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
    model.fit(x_train, keras.utils.to_categorical(y_train, 10), epochs=int(epochs), batch_size=64, verbose=0,
              shuffle=True)
    acc = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
    return model, {"x_test": x_test, "y_test": y_test, "test_accuracy": acc}
