"""Rebuild a Keras functional model from a :class:`~split4ml.ir.Graph`.

hls4ml converts Keras models, so every (sub-)graph goes back through Keras on its way to an
hls4ml project. Doing this from the IR (not from the user's original model) keeps the Graph the
single source of truth: a graph that came from PyTorch or ONNX, or whose weights were sliced for
an intra-layer split, converts the same way.

Layer names are preserved, so the hls4ml config written from the IR (:mod:`split4ml.hls.config`)
refers to the layers hls4ml creates. Weights are set exactly (as float32, Keras' storage type).
Keras is imported lazily: importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..ir import ACTIVATIONS, LAYER_KINDS, Graph, Layer

#: Order in which Keras' BatchNormalization stores its weights (for scale=center=True).
_BN_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")


def _tuple(value: Any) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    return tuple(int(v) for v in value)


def _activation(layer: Layer) -> str:
    act = layer.activation or "linear"
    if act not in ACTIVATIONS:
        raise UnsupportedLayerError(
            f"layer {layer.name!r} ({layer.kind}) has activation {act!r}; supported activations are "
            f"{', '.join(ACTIVATIONS)}"
        )
    return act


def _make_keras_layer(layer: Layer) -> Any:
    """The Keras layer object (not yet called) for one IR layer."""
    from keras import layers as kl

    p = layer.params
    kind = layer.kind
    if kind == "Dense":
        return kl.Dense(int(p["units"]), activation=_activation(layer), use_bias=bool(p.get("use_bias", True)),
                        name=layer.name)
    if kind in ("Conv1D", "Conv2D"):
        cls = kl.Conv1D if kind == "Conv1D" else kl.Conv2D
        return cls(int(p["filters"]), kernel_size=_tuple(p["kernel_size"]),
                   strides=_tuple(p.get("strides", 1)), padding=str(p.get("padding", "valid")),
                   use_bias=bool(p.get("use_bias", True)), activation=_activation(layer), name=layer.name)
    if kind in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
        cls = getattr(kl, kind)
        strides = p.get("strides")
        return cls(pool_size=_tuple(p["pool_size"]), strides=None if strides is None else _tuple(strides),
                   padding=str(p.get("padding", "valid")), name=layer.name)
    if kind == "Flatten":
        return kl.Flatten(name=layer.name)
    if kind == "BatchNormalization":
        return kl.BatchNormalization(epsilon=float(p.get("epsilon", 1e-3)), center="beta" in layer.weights,
                                     scale="gamma" in layer.weights, name=layer.name)
    if kind == "Activation":
        act = _activation(layer)
        return kl.Activation(act, name=layer.name)
    if kind == "Add":
        return kl.Add(name=layer.name)
    if kind == "Concatenate":
        return kl.Concatenate(axis=int(p.get("axis", -1)), name=layer.name)
    if kind == "Slice":
        n = int(layer.input_shape[0])
        start, stop = int(p["start"]), int(p["stop"])
        return kl.Cropping1D(cropping=(start, n - stop), name=layer.name)
    if kind == "Reshape":
        return kl.Reshape(_tuple(p["target_shape"]), name=layer.name)
    raise UnsupportedLayerError(
        f"layer {layer.name!r} has kind {kind!r}, which split4ml cannot rebuild in Keras; supported kinds are "
        f"{', '.join(k for k in LAYER_KINDS if k != 'Input')}"
    )


def _ordered_weights(layer: Layer) -> list[np.ndarray]:
    """The IR weights of ``layer`` in the order Keras' ``set_weights`` expects."""
    w = layer.weights
    if layer.kind in ("Dense", "Conv1D", "Conv2D"):
        names = ["kernel"] + (["bias"] if layer.params.get("use_bias", True) else [])
    elif layer.kind == "BatchNormalization":
        names = [n for n in _BN_ORDER if n in w]
    else:
        names = []
    missing = [n for n in names if n not in w]
    if missing:
        raise UnsupportedLayerError(
            f"layer {layer.name!r} ({layer.kind}) lacks weight(s) {missing}; the IR must carry "
            f"{names} in Keras layout"
        )
    return [np.asarray(w[n]) for n in names]


def _set_weights(keras_layer: Any, layer: Layer) -> None:
    arrays = _ordered_weights(layer)
    if not arrays:
        return
    current = keras_layer.get_weights()
    if len(current) != len(arrays):
        raise UnsupportedLayerError(
            f"layer {layer.name!r} ({layer.kind}): Keras expects {len(current)} weight arrays, the IR has "
            f"{len(arrays)}"
        )
    cast = []
    for cur, new in zip(current, arrays, strict=True):
        if tuple(cur.shape) != tuple(new.shape):
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({layer.kind}): weight shape {tuple(new.shape)} does not match the "
                f"Keras layer's {tuple(cur.shape)}; check kernel layout (Keras: (n_in, n_out) / (*k, c_in, c_out))"
            )
        cast.append(new.astype(cur.dtype))
    keras_layer.set_weights(cast)


def keras_model_from_graph(graph: Graph) -> Any:
    """A Keras functional model computing ``graph``, with the same layer names and weights.

    The Input layer is named ``graph.input.name`` (hls4ml reserves the name ``input``, so split4ml
    names stage inputs ``stage<i>_input``). Merge layers (``Add``, ``Concatenate``) take their inputs
    in the order of ``Layer.inputs``; the wire layers of a board's packed sub-graph become Keras
    ``Cropping1D`` (``Slice``) and ``Reshape``. A graph with several Input layers or outputs gives a
    model with several inputs or outputs. Returns a ``keras.Model``.

    Raises:
        UnsupportedLayerError: a layer kind or activation that cannot be rebuilt, or weights that
            do not fit the layer.
    """
    import keras

    inp_layer = graph.input
    if inp_layer.kind != "Input":
        raise UnsupportedLayerError(
            f"graph {graph.name!r} must start with an Input layer, found {inp_layer.name!r} ({inp_layer.kind})"
        )
    inputs = []
    tensors: dict[str, Any] = {}
    for layer in graph.layers:
        if layer.kind == "Input":
            tensors[layer.name] = keras.Input(shape=layer.output_shape, name=layer.name)
            inputs.append(tensors[layer.name])
            continue
        if len(layer.inputs) != 1 and not layer.is_merge:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({layer.kind}) has {len(layer.inputs)} inputs; only Add and Concatenate "
                "take several"
            )
        if layer.is_merge and len(layer.inputs) != 2:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({layer.kind}) has {len(layer.inputs)} input(s); hls4ml merges exactly two "
                "tensors"
            )
        missing = [src for src in layer.inputs if src not in tensors]
        if missing:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} consumes {missing}, which are not defined before it in graph {graph.name!r}"
            )
        klayer = _make_keras_layer(layer)
        args = [tensors[src] for src in layer.inputs]
        out = klayer(args if layer.is_merge else args[0])
        _set_weights(klayer, layer)
        got = tuple(int(d) for d in out.shape[1:])
        if got != layer.output_shape:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({layer.kind}): Keras computes output shape {got}, the IR says "
                f"{layer.output_shape}; check its params {dict(layer.params)}"
            )
        tensors[layer.name] = out
    outputs = [tensors[n] for n in graph.outputs]
    return keras.Model(inputs=inputs[0] if len(inputs) == 1 else inputs,
                       outputs=outputs[0] if len(outputs) == 1 else outputs, name=_model_name(graph))


def _model_name(graph: Graph) -> str:
    """A Keras-safe model name."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in graph.name) or "model"
