"""Keras 3 frontend: a Sequential or functional Keras model (or a model file) to a :class:`~split4ml.ir.Graph`.

What is converted
-----------------
Sequential and functional models with one input and one output: chains, and DAGs whose branches
meet in ``Add`` or ``Concatenate`` layers (residual blocks, skip connections). Supported Keras
layers and what they become:

==========================================  =====================================================
Keras layer                                 Graph layer
==========================================  =====================================================
``InputLayer``                              ``Input`` (renamed when its name is reserved, below)
``Dense`` (on a 1-D input only)             ``Dense``; fused activation in ``Layer.activation``
``Conv1D``, ``Conv2D``                      same kind; channels_last, dilation 1, groups 1,
                                            padding ``valid``/``same``
``MaxPooling1D/2D``, ``AveragePooling1D/2D``  same kind; channels_last, padding ``valid``/``same``
``Flatten``                                 ``Flatten``
``BatchNormalization`` (last axis)          ``BatchNormalization``; absent gamma/beta filled with 1/0
``Activation``                              ``Activation`` (relu, sigmoid, tanh, softmax); a
                                            ``linear`` Activation is an identity and is dropped
``ReLU`` (plain: no max_value, slope 0,     ``Activation`` with activation ``relu``
threshold 0)
``Softmax`` (last axis)                     ``Activation`` with activation ``softmax``
``Add`` (two inputs of one shape)           ``Add``
``Concatenate`` (two inputs, last axis)     ``Concatenate`` (``axis=-1``)
``Dropout``, ``SpatialDropout1D/2D/3D``,     dropped (identities at inference)
``GaussianDropout``, ``GaussianNoise``,
``AlphaDropout``, ``ActivityRegularization``
==========================================  =====================================================

Anything else raises :class:`~split4ml.errors.UnsupportedLayerError` naming the layer, its Keras
class and the supported types.

Conventions
-----------
* ``Layer.activation`` of Dense/Conv layers is ``None`` when Keras says ``linear`` (no activation);
  it is one of ``relu``, ``sigmoid``, ``tanh``, ``softmax`` otherwise. ``Activation`` layers always
  carry their function name.
* Shapes exclude the batch dimension and are channels-last, as Keras gives them.
* Weights are read-only numpy copies in Keras layout and Keras dtype (``float32`` for the usual
  ``float32`` policy; ``float64`` stays ``float64``; any other float dtype becomes ``float32``), so
  the Graph computes exactly what Keras computes. Dense/Conv hold ``kernel`` and, when
  ``use_bias``, ``bias``; BatchNormalization holds ``gamma``, ``beta``, ``moving_mean``,
  ``moving_variance``.
* Layer names become hls4ml/C++ identifiers, so a name that is not ``[A-Za-z_][A-Za-z0-9_]*``, is a
  C++ keyword or is reserved by hls4ml (``input`` is the name of hls4ml's own graph input) is
  renamed deterministically: invalid characters become ``_`` and a suffix ``_1``, ``_2``, ... is
  added until the name is free (e.g. an Input named ``input`` becomes ``input_1``). Valid names
  are kept unchanged. The Graph name is the model name.

Keras is imported lazily (``import split4ml`` stays light) with ``TF_CPP_MIN_LOG_LEVEL=3`` unless
the caller set it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, UnsupportedLayerError
from ..ir import Graph, Layer

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["SUPPORTED_LAYERS", "DROPPED_LAYERS", "graph_from_keras", "load_keras"]

#: Keras layer classes converted to Graph layers.
SUPPORTED_LAYERS: tuple[str, ...] = (
    "InputLayer",
    "Dense",
    "Conv1D",
    "Conv2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "Flatten",
    "BatchNormalization",
    "Activation",
    "ReLU",
    "Softmax",
    "Add",
    "Concatenate",
)

#: Keras layer classes that are identities at inference and are removed from the chain.
DROPPED_LAYERS: tuple[str, ...] = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
)

#: Activation functions the Graph accepts for a standalone activation.
_ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax")
_LINEAR = "linear"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Names hls4ml reserves (``input`` is ModelGraph's own input node) plus names that would clash
#: with C++ keywords or the namespaces/types of the generated HLS code.
_RESERVED_NAMES = frozenset(
    {
        "input",
        "nnet",
        "hls",
        "std",
        "ap_fixed",
        "ap_ufixed",
        "ap_int",
        "ap_uint",
        # C++ keywords
        "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break",
        "case", "catch", "char", "char8_t", "char16_t", "char32_t", "class", "compl", "concept",
        "const", "consteval", "constexpr", "constinit", "const_cast", "continue", "co_await",
        "co_return", "co_yield", "decltype", "default", "delete", "do", "double", "dynamic_cast",
        "else", "enum", "explicit", "export", "extern", "false", "float", "for", "friend", "goto",
        "if", "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not", "not_eq",
        "nullptr", "operator", "or", "or_eq", "private", "protected", "public", "register",
        "reinterpret_cast", "requires", "return", "short", "signed", "sizeof", "static",
        "static_assert", "static_cast", "struct", "switch", "template", "this", "thread_local",
        "throw", "true", "try", "typedef", "typeid", "typename", "union", "unsigned", "using",
        "virtual", "void", "volatile", "wchar_t", "while", "xor", "xor_eq",
    }
)  # fmt: skip

_SEE_README = "see README: supported layers"


# --------------------------------------------------------------------------- keras import
@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what TensorFlow's C++ runtime prints on file descriptor 2 while it is imported.

    Its absl and CUDA-probe lines ("Could not find cuda drivers...") are printed before any log
    level applies. Python exceptions are unaffected: they propagate as usual. Set
    ``SPLIT4ML_TF_STDERR=1`` to see the native output.
    """
    if os.environ.get("SPLIT4ML_TF_STDERR") or "keras" in sys.modules:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import_keras() -> ModuleType:
    """Import Keras lazily, quieting TensorFlow's C++ logging unless the caller chose a level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        with _quiet_native_stderr():
            import keras
    except ImportError as exc:  # pragma: no cover - keras is a dependency
        raise ModelLoadError(
            f"cannot import keras ({exc}); install it with: pip install 'hls4ml[keras-v3]' tensorflow-cpu"
        ) from exc
    return keras


# --------------------------------------------------------------------------- helpers
def _supported_list() -> str:
    dropped = ", ".join(DROPPED_LAYERS)
    return f"supported layers: {', '.join(SUPPORTED_LAYERS)} (dropped at inference: {dropped}); {_SEE_README}"


def _unsupported(layer: Any, what: str) -> UnsupportedLayerError:
    """An error for Keras layer ``layer``; ``what`` says which option or structure is unsupported."""
    return UnsupportedLayerError(
        f"layer {layer.name!r} ({type(layer).__name__}): {what}; {_supported_list()}"
    )


def _shape(tensor: Any, layer: Any) -> tuple[int, ...]:
    """The shape of a symbolic tensor without its batch dimension; every dimension must be known."""
    dims = tuple(tensor.shape)[1:]
    if any(d is None for d in dims):
        raise _unsupported(
            layer,
            f"tensor shape {tuple(tensor.shape)} has unknown (None) dimensions besides the batch; "
            "give the model Input a fully known shape",
        )
    return tuple(int(d) for d in dims)


def _array(variable: Any) -> np.ndarray:
    """A read-only numpy copy of a Keras variable, float32 unless Keras keeps it in float64."""
    keras = _import_keras()
    arr = np.array(keras.ops.convert_to_numpy(variable), copy=True)
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    arr.setflags(write=False)
    return arr


def _fused_activation(layer: Any) -> str | None:
    """The fused activation of a Dense/Conv layer: ``None`` for linear, else a supported name."""
    act = layer.get_config().get("activation", _LINEAR)
    if act is None or act == _LINEAR:
        return None
    if isinstance(act, str) and act in _ACTIVATIONS:
        return act
    shown = act if isinstance(act, str) else "a custom function"
    raise _unsupported(
        layer,
        f"fused activation {shown!r} is not supported (use one of {', '.join((_LINEAR, *_ACTIVATIONS))})",
    )


def _check_not_quantized(layer: Any) -> None:
    mode = getattr(layer, "quantization_mode", None)
    if mode is not None:
        raise _unsupported(layer, f"Keras quantization mode {mode!r} is not supported (use a float model)")


def _check_channels_last(layer: Any) -> None:
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt != "channels_last":
        raise _unsupported(layer, f"data_format {fmt!r} is not supported (only channels_last)")


def _check_padding(layer: Any) -> str:
    padding = str(layer.padding).lower()
    if padding not in ("valid", "same"):
        raise _unsupported(layer, f"padding {padding!r} is not supported (only 'valid' or 'same')")
    return padding


def _is_last_axis(axis: Any, rank: int) -> bool:
    """True when ``axis`` (int or one-element list, counted with the batch dim) is the last of ``rank`` axes."""
    if isinstance(axis, list | tuple):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return int(axis) in (-1, rank - 1)


# --------------------------------------------------------------------------- layer converters
@dataclass(frozen=True)
class _Converted:
    """What a converter returns: the Graph layer's kind, activation, params and weights."""

    kind: str
    activation: str | None
    params: dict[str, Any]
    weights: dict[str, np.ndarray]


def _dense(layer: Any, in_shape: tuple[int, ...]) -> _Converted:
    _check_not_quantized(layer)
    if len(in_shape) != 1:
        raise _unsupported(
            layer,
            f"Dense on a rank-{len(in_shape)} input of shape {in_shape} is not supported "
            "(hls4ml treats it as a pointwise layer); add a Flatten before it",
        )
    weights = {"kernel": _array(layer.kernel)}
    if layer.use_bias:
        weights["bias"] = _array(layer.bias)
    return _Converted(
        "Dense",
        _fused_activation(layer),
        {"units": int(layer.units), "use_bias": bool(layer.use_bias)},
        weights,
    )


def _conv(layer: Any, in_shape: tuple[int, ...]) -> _Converted:
    _check_not_quantized(layer)
    kind = type(layer).__name__
    _check_channels_last(layer)
    if any(int(d) != 1 for d in layer.dilation_rate):
        raise _unsupported(layer, f"dilation_rate {tuple(layer.dilation_rate)} is not supported (only 1)")
    if int(layer.groups) != 1:
        raise _unsupported(layer, f"groups={layer.groups} is not supported (only 1)")
    padding = _check_padding(layer)
    weights = {"kernel": _array(layer.kernel)}
    if layer.use_bias:
        weights["bias"] = _array(layer.bias)
    params = {
        "filters": int(layer.filters),
        "kernel_size": tuple(int(k) for k in layer.kernel_size),
        "strides": tuple(int(s) for s in layer.strides),
        "padding": padding,
        "use_bias": bool(layer.use_bias),
    }
    return _Converted(kind, _fused_activation(layer), params, weights)


def _pool(layer: Any, in_shape: tuple[int, ...]) -> _Converted:
    _check_channels_last(layer)
    padding = _check_padding(layer)
    params = {
        "pool_size": tuple(int(p) for p in layer.pool_size),
        "strides": tuple(int(s) for s in layer.strides),
        "padding": padding,
    }
    return _Converted(type(layer).__name__, None, params, {})


def _flatten(layer: Any, in_shape: tuple[int, ...]) -> _Converted:
    _check_channels_last(layer)
    return _Converted("Flatten", None, {}, {})


def _batchnorm(layer: Any, in_shape: tuple[int, ...]) -> _Converted:
    if not _is_last_axis(layer.axis, len(in_shape) + 1):
        raise _unsupported(layer, f"axis={layer.axis!r} is not supported (only the last axis, -1)")
    mean = _array(layer.moving_mean)
    n = mean.shape[0]
    gamma = _array(layer.gamma) if layer.scale else _readonly(np.ones(n, dtype=mean.dtype))
    beta = _array(layer.beta) if layer.center else _readonly(np.zeros(n, dtype=mean.dtype))
    weights = {
        "gamma": gamma,
        "beta": beta,
        "moving_mean": mean,
        "moving_variance": _array(layer.moving_variance),
    }
    return _Converted("BatchNormalization", None, {"epsilon": float(layer.epsilon)}, weights)


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _activation(layer: Any, in_shape: tuple[int, ...]) -> _Converted | None:
    act = layer.get_config().get("activation")
    if act == _LINEAR:
        return None  # identity: dropped
    if isinstance(act, str) and act in _ACTIVATIONS:
        return _Converted("Activation", act, {}, {})
    shown = act if isinstance(act, str) else "a custom function"
    raise _unsupported(
        layer, f"activation {shown!r} is not supported (use one of {', '.join((_LINEAR, *_ACTIVATIONS))})"
    )


def _relu(layer: Any, in_shape: tuple[int, ...]) -> _Converted:
    cfg = layer.get_config()
    max_value, slope, threshold = (
        cfg.get("max_value"),
        cfg.get("negative_slope", 0.0),
        cfg.get("threshold", 0.0),
    )
    if max_value is not None or float(slope) != 0.0 or float(threshold) != 0.0:
        raise _unsupported(
            layer,
            f"ReLU with max_value={max_value}, negative_slope={slope}, threshold={threshold} is not supported "
            "(only plain relu: max_value=None, negative_slope=0, threshold=0)",
        )
    return _Converted("Activation", "relu", {}, {})


def _softmax(layer: Any, in_shape: tuple[int, ...]) -> _Converted:
    if not _is_last_axis(layer.axis, len(in_shape) + 1):
        raise _unsupported(
            layer, f"Softmax over axis={layer.axis!r} is not supported (only the last axis, -1)"
        )
    return _Converted("Activation", "softmax", {}, {})


def _check_two_inputs(layer: Any, in_shapes: list[tuple[int, ...]]) -> None:
    if len(in_shapes) != 2:
        raise _unsupported(layer, f"{len(in_shapes)} inputs are not supported (hls4ml merges exactly two tensors); "
                                  "nest two-input layers instead, e.g. Add()([Add()([a, b]), c])")


def _add(layer: Any, in_shape: tuple[int, ...], in_shapes: list[tuple[int, ...]] | None = None) -> _Converted:
    shapes = in_shapes or [in_shape]
    _check_two_inputs(layer, shapes)
    if shapes[0] != shapes[1]:
        raise _unsupported(layer, f"inputs of shapes {shapes} are not supported (no broadcasting: both inputs must "
                                  "have the same shape)")
    return _Converted("Add", None, {}, {})


def _concatenate(layer: Any, in_shape: tuple[int, ...],
                 in_shapes: list[tuple[int, ...]] | None = None) -> _Converted:
    shapes = in_shapes or [in_shape]
    _check_two_inputs(layer, shapes)
    if not _is_last_axis(layer.axis, len(shapes[0]) + 1):
        raise _unsupported(layer, f"axis={layer.axis!r} is not supported (only the last axis, -1)")
    if len({len(s) for s in shapes}) != 1 or len({s[:-1] for s in shapes}) != 1:
        raise _unsupported(layer, f"inputs of shapes {shapes} do not agree on all but the last axis")
    return _Converted("Concatenate", None, {"axis": -1}, {})


_Converter = Callable[..., "_Converted | None"]

_CONVERTERS: dict[str, _Converter] = {
    "Dense": _dense,
    "Conv1D": _conv,
    "Conv2D": _conv,
    "MaxPooling1D": _pool,
    "MaxPooling2D": _pool,
    "AveragePooling1D": _pool,
    "AveragePooling2D": _pool,
    "Flatten": _flatten,
    "BatchNormalization": _batchnorm,
    "Activation": _activation,
    "ReLU": _relu,
    "Softmax": _softmax,
    "Add": _add,
    "Concatenate": _concatenate,
}

#: Converters that take the shapes of all inputs (merge layers).
_MERGE_CONVERTERS = frozenset({"Add", "Concatenate"})


def _converter_for(keras: ModuleType, layer: Any) -> _Converter | None:
    """The converter of ``layer``; ``None`` for layers dropped at inference; raises when unsupported.

    Matching is on the exact Keras class (a user subclass of ``Dense`` may compute something else).
    """
    cls = type(layer)
    for name in DROPPED_LAYERS:
        if cls is getattr(keras.layers, name, None):
            return None
    for name, fn in _CONVERTERS.items():
        if cls is getattr(keras.layers, name):
            return fn
    if isinstance(layer, keras.Model):
        raise _unsupported(
            layer,
            "nested models are not supported yet; rebuild the model with the inner model's layers inline",
        )
    raise _unsupported(layer, "this layer type is not supported")


# --------------------------------------------------------------------------- structure
def _functional_view(keras: ModuleType, model: Any) -> Any:
    """The Functional graph behind ``model`` (a Sequential keeps one once it is built)."""
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise ModelLoadError(
                f"Sequential model {model.name!r} is not built, so its shapes are unknown; start it with "
                "keras.Input(shape=...) or call model.build((None, *input_shape)) before converting"
            )
        return fn
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth") and hasattr(model, "inputs"):
        return model
    raise UnsupportedLayerError(
        f"model {getattr(model, 'name', model)!r} ({type(model).__name__}) is neither a Sequential nor a "
        "functional Keras model; subclassed models cannot be traced, rebuild it as keras.Sequential or "
        f"with the functional API; {_SEE_README}"
    )


def _node_of(tensor: Any) -> Any:
    op, node_index, _ = tensor._keras_history
    return op._inbound_nodes[node_index]


def _dag_nodes(fn: Any, model_name: str) -> list[Any]:
    """The Keras nodes on the paths from the single input to the single output, producers first.

    The order is a depth-first post-order from the output (parents in argument order), so a chain
    comes out input first, layer by layer. Only ``Add`` and ``Concatenate`` may take several inputs
    (checked by their converters); a layer called more than once (shared weights) is refused.
    """
    inputs, outputs = list(fn.inputs), list(fn.outputs)
    if len(inputs) != 1:
        names = [t._keras_history.operation.name for t in inputs]
        raise UnsupportedLayerError(
            f"model {model_name!r} has {len(inputs)} inputs {names}; only single-input models are supported "
            f"(concatenate the inputs into one tensor before the model); {_SEE_README}"
        )
    if len(outputs) != 1:
        names = [t._keras_history.operation.name for t in outputs]
        raise UnsupportedLayerError(
            f"model {model_name!r} has {len(outputs)} outputs {names}; only single-output models are supported "
            f"(concatenate the outputs into one tensor); {_SEE_README}"
        )
    order: list[Any] = []
    state: dict[int, int] = {}  # id(node) -> 1 visiting, 2 done
    stack: list[tuple[Any, bool]] = [(_node_of(outputs[0]), False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            state[id(node)] = 2
            order.append(node)
            continue
        if state.get(id(node)) is not None:
            continue
        state[id(node)] = 1
        stack.append((node, True))
        if not node.is_input:
            for t in reversed(list(node.input_tensors)):
                parent = _node_of(t)
                if state.get(id(parent)) is None:
                    stack.append((parent, False))
    ops = [n.operation for n in order]
    if len({id(o) for o in ops}) != len(ops):
        shared = sorted({o.name for o in ops if sum(p is o for p in ops) > 1})
        raise UnsupportedLayerError(
            f"model {model_name!r} calls layer(s) {shared} more than once (shared weights); "
            f"this is not supported; {_SEE_README}"
        )
    starts = [n for n in order if n.is_input]
    if len(starts) != 1 or starts[0] is not order[0]:  # pragma: no cover - one model input, checked above
        raise UnsupportedLayerError(f"model {model_name!r}: the output does not depend on exactly one input")
    return order


def _safe_names(names: list[str]) -> list[str]:
    """Deterministic hls4ml-safe names: valid names are kept, the others renamed to a free name."""

    def ok(n: str) -> bool:
        return bool(_IDENTIFIER.match(n)) and n not in _RESERVED_NAMES

    taken = {n for n in names if ok(n)}
    out: list[str] = []
    for n in names:
        if ok(n) and n not in out:
            out.append(n)
            continue
        base = re.sub(r"[^A-Za-z0-9_]", "_", n) or "layer"
        if not re.match(r"[A-Za-z_]", base):
            base = f"l_{base}"
        i = 1
        while f"{base}_{i}" in taken or f"{base}_{i}" in _RESERVED_NAMES:
            i += 1
        new = f"{base}_{i}"
        taken.add(new)
        out.append(new)
    return out


# --------------------------------------------------------------------------- public API
def graph_from_keras(model: keras.Model, name: str | None = None) -> Graph:
    """Convert a Keras 3 Sequential or functional model (a chain, or a DAG merging in Add/Concatenate)
    to a :class:`Graph`.

    Args:
        model: a built Keras model with one input and one output.
        name: the Graph name; defaults to ``model.name``.

    Raises:
        UnsupportedLayerError: several model inputs/outputs, a branch merged by another layer than
            Add/Concatenate, a nested model, or a layer type/option that is not supported (the message names the layer and its Keras class).
        ModelLoadError: an unbuilt Sequential model (unknown input shape).
    """
    keras = _import_keras()
    if not isinstance(model, keras.Model):
        raise UnsupportedLayerError(
            f"expected a keras.Model, got {type(model).__name__}; load a model file with load_keras(path)"
        )
    fn = _functional_view(keras, model)
    nodes = _dag_nodes(fn, model.name)

    # (keras name, kind, in shapes, out shape, activation, params, weights, keras input tensors) per kept layer
    kept: list[tuple[str, str, list[tuple[int, ...]], tuple[int, ...], str | None, dict, dict, list[int]]] = []
    index_of_tensor: dict[int, int] = {}  # id(keras tensor) -> index in kept of the layer producing it
    input_node = nodes[0]
    in_layer = input_node.operation
    in_shape = _shape(input_node.outputs[0], in_layer)
    kept.append((in_layer.name, "Input", [in_shape], in_shape, None, {}, {}, []))
    index_of_tensor[id(input_node.outputs[0])] = 0
    for node in nodes[1:]:
        layer = node.operation
        parents = list(node.input_tensors)
        converter = _converter_for(keras, layer)
        if len(parents) != 1 and type(layer).__name__ not in _MERGE_CONVERTERS:
            producers = [t._keras_history.operation.name for t in parents]
            raise _unsupported(layer, f"it takes {len(parents)} inputs from {producers}; only Add and Concatenate "
                                      "may merge branches")
        srcs = [index_of_tensor[id(t)] for t in parents]
        if converter is None:  # dropped at inference: its output is its input
            index_of_tensor[id(node.outputs[0])] = srcs[0]
            continue
        x_shapes = [_shape(t, layer) for t in parents]
        y_shape = _shape(node.outputs[0], layer)
        if type(layer).__name__ in _MERGE_CONVERTERS:
            conv = converter(layer, x_shapes[0], x_shapes)
        else:
            conv = converter(layer, x_shapes[0])
        if conv is None:  # an identity (linear Activation): its output is its input
            index_of_tensor[id(node.outputs[0])] = srcs[0]
            continue
        index_of_tensor[id(node.outputs[0])] = len(kept)
        kept.append((layer.name, conv.kind, x_shapes, y_shape, conv.activation, conv.params, conv.weights, srcs))

    names = _safe_names([k[0] for k in kept])
    layers: list[Layer] = []
    for new_name, (_, kind, x_shapes, y_shape, act, params, weights, srcs) in zip(names, kept, strict=True):
        layers.append(
            Layer(
                name=new_name,
                kind=kind,
                input_shape=x_shapes[0],
                output_shape=y_shape,
                inputs=tuple(names[j] for j in srcs),
                activation=act,
                params=params,
                weights=weights,
                input_shapes=tuple(x_shapes) if len(x_shapes) > 1 else (),
            )
        )
    out = index_of_tensor[id(fn.outputs[0])]
    graph = Graph(name=name or model.name, layers=tuple(layers), outputs=(names[out],))
    graph.check_dag()
    return graph


def _weights_next_to(json_path: Path) -> Path | None:
    stem = json_path.with_suffix("")
    for candidate in (Path(f"{stem}.weights.h5"), Path(f"{stem}.h5")):
        if candidate.is_file():
            return candidate
    return None


def _load_weights(model: Any, weights: Path) -> None:
    if not weights.is_file():
        raise ModelLoadError(
            f"weights file {str(weights)!r} does not exist; pass the path of an existing .h5 file"
        )
    try:
        model.load_weights(str(weights))
        return
    except Exception as exc:  # noqa: BLE001 - Keras raises many types here
        first = exc
    # Keras picks the reader by file name: '.h5' means the legacy (Keras 2) layout. A Keras 3
    # save_weights file renamed to '.h5' needs the '.weights.h5' reader: retry under that name.
    name = weights.name.lower()
    if name.endswith((".h5", ".hdf5")) and not name.endswith(".weights.h5"):
        with tempfile.TemporaryDirectory() as tmp:
            alias = Path(tmp) / "alias.weights.h5"
            alias.symlink_to(weights.resolve())
            try:
                model.load_weights(str(alias))
                return
            except Exception:  # noqa: BLE001 - report the error of the reader Keras chose first
                pass
    raise ModelLoadError(
        f"cannot load weights {str(weights)!r} into model {model.name!r}: {first}; pass the weights saved "
        "from this very architecture (model.save_weights('name.weights.h5'))"
    ) from first


def load_keras(path: str | Path, weights: str | Path | None = None) -> Graph:
    """Load a Keras model file and convert it to a :class:`Graph`.

    Args:
        path: a ``.keras`` file, a full-model ``.h5`` file, or a ``.json`` architecture.
        weights: weights for a ``.json`` architecture (``.weights.h5`` or legacy ``.h5``); when
            omitted, ``<stem>.weights.h5`` then ``<stem>.h5`` next to the json are tried. For
            ``.keras``/``.h5`` files the weights, if given, replace the stored ones.

    Raises:
        ModelLoadError: the file is missing or unreadable, or a json has no weights.
        UnsupportedLayerError: see :func:`graph_from_keras`.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(
            f"model file {str(p)!r} does not exist; pass the path of a .keras, .h5 or .json file"
        )
    if p.is_dir():
        raise ModelLoadError(
            f"{str(p)!r} is a directory (a TensorFlow SavedModel?); Keras 3 reads .keras, .h5 or .json + weights: "
            "re-save the model with model.save('model.keras')"
        )
    suffix = p.suffix.lower()
    keras = _import_keras()
    w = Path(weights) if weights is not None else None
    if suffix == ".json":
        try:
            model = keras.models.model_from_json(p.read_text())
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"cannot read Keras architecture {str(p)!r}: {exc}; pass a file written by model.to_json()"
            ) from exc
        if w is None:
            w = _weights_next_to(p)
        if w is None:
            stem = p.with_suffix("")
            raise ModelLoadError(
                f"architecture {str(p)!r} holds no weights and none were found next to it "
                f"({stem}.weights.h5 or {stem}.h5); pass the weights file (weights=... / --weights)"
            )
        _load_weights(model, w)
    elif suffix in (".keras", ".h5", ".hdf5"):
        try:
            model = keras.saving.load_model(str(p), compile=False)
        except Exception as exc:  # noqa: BLE001
            hint = (
                "if it holds weights only, pass the architecture .json as the model and this file as weights"
                if suffix != ".keras"
                else "pass a file written by model.save('name.keras'); custom layers are not supported"
            )
            raise ModelLoadError(f"cannot load Keras model {str(p)!r}: {exc}; {hint}") from exc
        if w is not None:
            _load_weights(model, w)
    else:
        raise ModelLoadError(
            f"{str(p)!r} has extension {p.suffix!r}, not a Keras model file; pass a .keras, .h5 or .json file"
        )
    return graph_from_keras(model)
