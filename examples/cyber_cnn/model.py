"""The convolutional phishing classifier of the cyber_cnn example (72,650 parameters).

    Input    x        (9, 1)      the 9 page features as a 1-channel sequence
    Conv1D   conv1    (7, 32)     kernel 3, ReLU                       128 parameters
    Conv1D   conv2    (5, 64)     kernel 3, ReLU                     6,208
    Flatten  flatten  (320,)
    Dense    fc1      (192,)      ReLU                              61,632
    Dense    fc2      (24,)       ReLU                               4,632
    Dense    fc3      (2,)                                              50
    Softmax  softmax  (2,)        legitimate / phishing

The original work's cybersecurity CNN had about 73k parameters; this one has the same size and
only layers that split4ml and hls4ml support. Every initialiser is seeded, so the same seed gives
the same weights in any process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def cyber_cnn(seed: int = 0) -> Any:
    """The untrained Keras model (seeded initialisers)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    layers = keras.layers

    def init(i: int) -> dict[str, Any]:
        return {"kernel_initializer": keras.initializers.GlorotUniform(seed=1000 * seed + 2 * i),
                "bias_initializer": keras.initializers.Zeros()}

    return keras.Sequential(
        [
            keras.Input(shape=(9, 1), name="x"),
            layers.Conv1D(32, 3, activation="relu", name="conv1", **init(1)),
            layers.Conv1D(64, 3, activation="relu", name="conv2", **init(2)),
            layers.Flatten(name="flatten"),
            layers.Dense(192, activation="relu", name="fc1", **init(3)),
            layers.Dense(24, activation="relu", name="fc2", **init(4)),
            layers.Dense(2, name="fc3", **init(5)),
            layers.Activation("softmax", name="softmax"),
        ],
        name="cyber_cnn",
    )


def train_cyber_cnn(path: Path, x: np.ndarray, y: np.ndarray, epochs: int = 30, seed: int = 0) -> Any:
    """Train (seeded: Adam 1e-3, batch 32) and save to ``path``; returns the Keras model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(seed)
    model = cyber_cnn(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model
