"""Models in the formats users bring, made by the tests themselves (nothing is downloaded).

- Keras 2 JSON architecture + H5 weights and Keras 2 full-model H5, written by ``tf-keras`` (the
  format of hls4ml's tutorials and example models);
- HGQ2 models (``hgq2``), quantization-aware, with heterogeneous per-layer bit widths;
- a Brevitas model exported to QONNX (``brevitas.export.export_qonnx``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def keras2_mlp(folder: Path, name: str = "jet", seed: int = 0) -> tuple[Path, Path, Path]:
    """A 16-64-32-5 jet-tagger-like MLP (with a BatchNormalization) saved by tf-keras as ``<name>.json``
    + ``<name>_weights.h5`` and as a full ``<name>_full.h5``; returns the three paths."""
    import tf_keras as k2

    k2.utils.set_random_seed(seed)
    model = k2.Sequential([
        k2.layers.InputLayer(input_shape=(16,), name="input_1"),
        k2.layers.Dense(64, activation="relu", name="fc1"),
        k2.layers.BatchNormalization(name="bn1"),
        k2.layers.Dense(32, activation="relu", name="fc2"),
        k2.layers.Dense(5, activation="softmax", name="output"),
    ])
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn1")
    bn.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in bn.get_weights()])
    folder.mkdir(parents=True, exist_ok=True)
    arch = folder / f"{name}.json"
    arch.write_text(model.to_json())
    weights = folder / f"{name}_weights.h5"
    model.save_weights(str(weights))
    full = folder / f"{name}_full.h5"
    model.save(str(full))
    return arch, weights, full


def keras2_cnn(folder: Path, name: str = "cnn", seed: int = 0) -> Path:
    """A small Conv2D + pooling + Dense model saved by tf-keras as a full Keras 2 ``.h5``."""
    import tf_keras as k2

    k2.utils.set_random_seed(seed)
    model = k2.Sequential([
        k2.layers.InputLayer(input_shape=(8, 8, 1), name="img"),
        k2.layers.Conv2D(4, 3, activation="relu", name="conv1"),
        k2.layers.MaxPooling2D(2, name="pool1"),
        k2.layers.Flatten(name="flatten"),
        k2.layers.Dense(10, activation="softmax", name="fc"),
    ])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.h5"
    model.save(str(path))
    return path


def hgq2_mlp(path: Path, seed: int = 0, widths: tuple[int, ...] = (24, 16), n_in: int = 32, n_out: int = 10) -> Path:
    """An HGQ2 MLP (``hgq.layers.QDense``, ReLU), trained one epoch on random data so that its
    per-layer bit widths differ; saved as ``.keras``."""
    import keras
    from hgq.config import LayerConfigScope, QuantizerConfigScope
    from hgq.layers import QDense

    keras.utils.set_random_seed(seed)
    with QuantizerConfigScope(place="all", default_q_type="kif", overflow_mode="SAT_SYM"), \
            QuantizerConfigScope(place="datalane", default_q_type="kif", overflow_mode="WRAP"), \
            LayerConfigScope(enable_ebops=True, beta0=1e-5):
        inp = keras.Input((n_in,), name="x")
        h = inp
        for i, w in enumerate(widths):
            h = QDense(w, activation="relu", name=f"d{i + 1}")(h)
        out = QDense(n_out, name="head")(h)
        model = keras.Model(inp, out, name=path.stem)
    model.compile("adam", "mse")
    rng = np.random.default_rng(seed)
    model.fit(rng.normal(size=(256, n_in)).astype("float32"), rng.normal(size=(256, n_out)).astype("float32"),
              epochs=1, verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path


def brevitas_mlp(path: Path, seed: int = 0) -> Path:
    """A Brevitas MLP (8-bit input, 6-bit weights and ReLUs) exported to QONNX; the weights are
    written beside the model (``<path>.data``)."""
    import brevitas.nn as qnn
    import torch
    from brevitas.export import export_qonnx
    from torch import nn

    torch.manual_seed(seed)

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
            self.fc1 = qnn.QuantLinear(32, 24, bias=True, weight_bit_width=6)
            self.r1 = qnn.QuantReLU(bit_width=6, return_quant_tensor=True)
            self.fc2 = qnn.QuantLinear(24, 16, bias=True, weight_bit_width=6)
            self.r2 = qnn.QuantReLU(bit_width=6, return_quant_tensor=True)
            self.fc3 = qnn.QuantLinear(16, 10, bias=True, weight_bit_width=6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc3(self.r2(self.fc2(self.r1(self.fc1(self.inp(x))))))

    model = Mlp().eval()
    with torch.no_grad():
        model(torch.randn(64, 32))  # calibrate the activation scales
    path.parent.mkdir(parents=True, exist_ok=True)
    export_qonnx(model, torch.randn(1, 32), export_path=str(path))
    return path


def keras2_binary_mlp(folder: Path, name: str = "bnn", seed: int = 0) -> Path:
    """A binary MLP in the Keras 2 format of hls4ml's binary-network examples (``BinaryDense`` layers, each
    followed by a BatchNormalization and a ``binary_tanh``): written by tf-keras as Dense/tanh, then
    renamed in the JSON. hls4ml runs the binary activations as XNOR-encoded 1-bit values."""
    import tf_keras as k2

    k2.utils.set_random_seed(seed)
    model = k2.Sequential([k2.layers.InputLayer(input_shape=(16,), name="input1")])
    for i, width in enumerate((32, 16), start=1):
        model.add(k2.layers.Dense(width, use_bias=False, name=f"fc{i}"))
        model.add(k2.layers.BatchNormalization(name=f"bn{i}"))
        model.add(k2.layers.Activation("tanh", name=f"act{i}"))
    model.add(k2.layers.Dense(5, use_bias=False, name="output"))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, k2.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    folder.mkdir(parents=True, exist_ok=True)
    arch = folder / f"{name}.json"
    text = model.to_json().replace('"class_name": "Dense"', '"class_name": "BinaryDense"')
    arch.write_text(text.replace('"activation": "tanh"', '"activation": "binary_tanh"'))
    model.save_weights(str(folder / f"{name}_weights.h5"))
    return arch
