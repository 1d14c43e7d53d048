"""hls4ml layers for the Graph layers split4ml makes itself.

Shards of a split layer, the merge layer of an input split, the layers that pack and unpack a
board's wire, and every layer of a graph built by hand have no node in hls4ml's conversion of the
model. They are written as the Keras 2 layer configurations hls4ml's own Keras 2 parser reads
(``Dense``, ``Conv1D``/``Conv2D``, pooling, ``Flatten``/``Reshape``, ``BatchNormalization``,
``Activation``, ``Add``, ``Concatenate``, ``Cropping1D``), passed through hls4ml's handlers for those
classes, and converted with every type spelled out (:func:`split4ml.hls.config.layer_entries`).
Their weights are the Graph's: for a shard of a model layer, hls4ml's own weights of that layer,
sliced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import BuildError, UnsupportedLayerError
from ..fixed import FixedType
from ..ir import ACTIVATIONS, Layer
from ..settings import LayerSettings
from .config import layer_entries

#: Graph kinds :func:`layer_dicts` writes.
SYNTHETIC_KINDS = ("Dense", "Conv1D", "Conv2D", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D",
                   "AveragePooling2D", "Flatten", "Reshape", "BatchNormalization", "ApplyAlpha", "Activation", "Add",
                   "Concatenate", "Slice")
#: Order in which Keras' BatchNormalization names its weights.
_BN = ("gamma", "beta", "moving_mean", "moving_variance")


class _Reader:
    """hls4ml's weight reader interface over one Graph layer's weights."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    def get_weights_data(self, layer_name: str, var_name: str) -> np.ndarray | None:
        w = self.layer.weights
        if var_name in w:
            return np.array(w[var_name], dtype=np.float64)
        if var_name == "bias" and "kernel" in w and not self.layer.params.get("use_bias", True):
            return None
        return None


def _tuple(value: Any) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    return [int(v) for v in value]


def _keras_config(layer: Layer) -> tuple[str, dict[str, Any]]:
    """The Keras 2 class name and config of ``layer``."""
    p = layer.params
    kind = layer.kind
    cfg: dict[str, Any] = {"name": layer.name, "data_format": "channels_last"}
    if kind == "Dense":
        cfg.update(units=int(p["units"]), use_bias=bool(p.get("use_bias", True)), activation="linear")
        return "Dense", cfg
    if kind in ("Conv1D", "Conv2D"):
        cfg.update(filters=int(p["filters"]), kernel_size=_tuple(p["kernel_size"]), strides=_tuple(p.get("strides", 1)),
                   padding=str(p.get("padding", "valid")), use_bias=bool(p.get("use_bias", True)), activation="linear",
                   dilation_rate=[1] * len(_tuple(p["kernel_size"])))
        return kind, cfg
    if kind in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
        pool = _tuple(p["pool_size"])
        strides = p.get("strides")
        cfg.update(pool_size=pool, strides=pool if strides is None else _tuple(strides),
                   padding=str(p.get("padding", "valid")))
        return kind, cfg
    if kind == "Flatten":
        return "Flatten", cfg
    if kind == "Reshape":
        cfg.update(target_shape=_tuple(p["target_shape"]))
        return "Reshape", cfg
    if kind in ("BatchNormalization", "ApplyAlpha"):
        missing = [n for n in _BN if n not in layer.weights]
        if missing and not _has_scale(layer):
            raise UnsupportedLayerError(
                f"layer {layer.name!r} (BatchNormalization) has no {missing}; split4ml can rebuild a batch "
                "normalization only from its Keras weights (gamma, beta, moving_mean, moving_variance)")
        cfg.update(epsilon=float(p.get("epsilon", 1e-3)), scale=True, center=True)
        return "BatchNormalization", cfg
    if kind == "Activation":
        act = layer.activation or "linear"
        if act not in ACTIVATIONS:
            raise UnsupportedLayerError(f"layer {layer.name!r}: split4ml rebuilds only the activations "
                                        f"{', '.join(ACTIVATIONS)}, not {act!r}")
        cfg.update(activation=act, axis=-1)
        return "Activation", cfg
    if kind == "Add":
        return "Add", cfg
    if kind == "Concatenate":
        cfg.update(axis=int(p.get("axis", -1)))
        return "Concatenate", cfg
    if kind == "Slice":
        n = int(layer.input_shape[0])
        cfg.update(cropping=[int(p["start"]), n - int(p["stop"])])
        return "Cropping1D", cfg
    raise UnsupportedLayerError(
        f"layer {layer.name!r} ({kind}) has no hls4ml node of the model to cut and split4ml cannot rebuild it; "
        f"split4ml rebuilds {', '.join(SYNTHETIC_KINDS)}")


def _has_scale(layer: Layer) -> bool:
    return "scale" in layer.weights and "bias" in layer.weights


def _set_scale(d: dict[str, Any], layer: Layer) -> None:
    """A batch normalization or ``ApplyAlpha`` from the scale and bias hls4ml computed for it (hls4ml's
    ``BatchNormalization.initialize`` takes ``scale_data``/``bias_data`` as they are): the same
    weights the layer has in the model, bit for bit, whatever its statistics were. Weights with one
    value per tensor value (not per channel) are indexed by value (``n_filt = -1``)."""
    scale = np.asarray(layer.weights["scale"], dtype=np.float64).reshape(-1)
    d["scale_data"] = scale
    d["bias_data"] = np.asarray(layer.weights["bias"], dtype=np.float64).reshape(-1)
    d["n_in"] = d["n_out"] = int(np.prod(layer.output_shape))
    if scale.size != int(layer.output_shape[-1]) or len(layer.output_shape) == 1:
        d["n_filt"] = -1
    else:
        d["n_filt"] = int(layer.output_shape[-1])


def _fix_conv_padding(d: dict[str, Any], layer: Layer) -> None:
    """Apply a model layer's explicit (possibly asymmetric) paddings to a rebuilt convolution."""
    pads = layer.params.get("pads")
    if not pads:
        return
    if layer.kind == "Conv1D":
        d["pad_left"], d["pad_right"] = (int(x) for x in pads)
        d["out_width"] = (d["in_width"] + d["pad_left"] + d["pad_right"] - d["filt_width"]) // d["stride_width"] + 1
    else:
        d["pad_top"], d["pad_bottom"], d["pad_left"], d["pad_right"] = (int(x) for x in pads)
        d["out_height"] = ((d["in_height"] + d["pad_top"] + d["pad_bottom"] - d["filt_height"]) // d["stride_height"]
                           + 1)
        d["out_width"] = (d["in_width"] + d["pad_left"] + d["pad_right"] - d["filt_width"]) // d["stride_width"] + 1


def layer_dicts(layer: Layer, input_names: Sequence[str], input_shapes: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """hls4ml's layer dict(s) of ``layer``: one, plus an ``Activation`` ``<name>_<act>`` for a Dense/Conv
    with an activation (as hls4ml's Keras parser splits it)."""
    from hls4ml.converters.keras_v2_to_hls import get_layer_handlers

    cls, cfg = _keras_config(layer)
    handler = get_layer_handlers()[cls]
    shapes = [[None, *(int(d) for d in s)] for s in input_shapes]
    d, out_shape = handler({"class_name": cls, "config": cfg}, list(input_names), shapes, _Reader(layer))
    if layer.kind in ("Conv1D", "Conv2D"):
        _fix_conv_padding(d, layer)
    if layer.kind in ("BatchNormalization", "ApplyAlpha") and _has_scale(layer):
        _set_scale(d, layer)
    d["inputs"] = list(input_names)
    got = tuple(int(x) for x in (out_shape[1:] if out_shape else ()))
    if layer.kind in ("Conv1D", "Conv2D") and layer.params.get("pads"):
        got = ((d["out_width"], d["n_filt"]) if layer.kind == "Conv1D" else (d["out_height"], d["out_width"], d["n_filt"]))
    if got and int(np.prod(got)) != int(np.prod(layer.output_shape)):
        raise BuildError(f"layer {layer.name!r} ({layer.kind}): hls4ml computes output shape {got}, the plan says "
                         f"{layer.output_shape}")
    out = [d]
    act = layer.activation or "linear"
    if layer.kind in ("Dense", "Conv1D", "Conv2D") and act != "linear":
        if act not in ACTIVATIONS:
            raise UnsupportedLayerError(f"layer {layer.name!r}: split4ml rebuilds only the activations "
                                        f"{', '.join(ACTIVATIONS)}, not {act!r}")
        a_cfg = {"name": f"{layer.name}_{act}", "activation": act, "axis": -1}
        a, _ = get_layer_handlers()["Activation"]({"class_name": "Activation", "config": a_cfg}, [layer.name],
                                                  [[None, *layer.output_shape]], None)
        a["inputs"] = [layer.name]
        out.append(a)
    return out


def input_dict(name: str, shape: Sequence[int]) -> dict[str, Any]:
    """hls4ml's dict of an input layer of ``shape`` (no batch)."""
    return {"name": name, "class_name": "InputLayer", "input_shape": [int(d) for d in shape],
            "data_format": "channels_last"}


def synthetic_config(layers: Sequence[Layer], settings: Mapping[str, LayerSettings],
                     inputs: Mapping[str, FixedType]) -> dict[str, dict[str, Any]]:
    """``LayerName`` entries of split4ml's own layers and of the inputs feeding them (by input name)."""
    names: dict[str, dict[str, Any]] = {n: {"Precision": {"result": t.hls4ml()}} for n, t in inputs.items()}
    for layer in layers:
        if layer.name not in settings:
            raise BuildError(f"layer {layer.name!r}: no settings; every layer of a stage needs them")
        names.update(layer_entries(layer, settings[layer.name], node_names=()))
    return names
