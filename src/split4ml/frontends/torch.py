"""PyTorch frontend: an ``nn.Module``, a ``torch.export`` file, a TorchScript file, or a Python file
plus a state_dict, to a :class:`~split4ml.ir.Graph`.

How a model is read
-------------------
Every input is brought to one form, an ``ExportedProgram`` (torch's ATen-level graph), and that
graph is converted node by node:

==========================  =================================================================
input                       how it becomes an ExportedProgram
==========================  =================================================================
``nn.Module`` (in memory)   ``torch.export.export(module.eval(), (example,))``
``.pt2``                    ``torch.export.load`` (a file written by ``torch.export.save``)
``.pt`` / ``.pth``          ``torch.jit.load`` (TorchScript, traced or scripted), then torch's
                            TorchScript-to-export converter
``.py`` + state_dict        the file is imported, ``entry`` (a class or factory function; by
                            default ``make_model``, else the one ``nn.Module`` class defined in
                            the file) builds the module, ``load_state_dict(torch.load(weights,
                            weights_only=True))`` fills it, then as an ``nn.Module``
other extension             (``framework="pytorch"``) read by content: a ``torch.export``
                            archive, else TorchScript
==========================  =================================================================

The example input has batch 1 and the shape ``input_shape`` (channels-first, as torch takes it,
without batch). It is needed only where the file does not fix it: a ``.pt2`` carries it; for the
others it is the ``input_shape`` argument, else the module's ``input_shape`` attribute, else, when
the first layer with weights is a ``Linear``, ``(in_features,)``.

What is converted
-----------------
The model has one input and one output; it may branch, the branches meeting again in a sum or a
concatenation (residual blocks, skip connections), which gives a DAG Graph (:mod:`split4ml.ir`):

===================================================  ==============================================
torch module / ATen op                               Graph layer
===================================================  ==============================================
``nn.Linear`` (``aten.linear``), on a 1-D input      ``Dense``; kernel = ``weight.T``
``nn.Conv1d``/``nn.Conv2d`` (``aten.conv1d/2d``,     ``Conv1D``/``Conv2D``; kernel ``(*k, c_in, c_out)``;
``aten.convolution``)                                dilation 1, groups 1, padding 0 (``valid``) or,
                                                     at stride 1 and odd kernel, ``'same'``/``(k-1)/2``
``nn.MaxPool1d/2d``, ``nn.AvgPool1d/2d``             ``MaxPooling1D/2D``, ``AveragePooling1D/2D``
                                                     (padding 0, dilation 1, ``ceil_mode=False``)
``nn.BatchNorm1d/2d`` (eval, running statistics)     ``BatchNormalization`` over the channel axis
``nn.Flatten``, ``torch.flatten(x, 1)``,             ``Flatten``
``x.view(n, -1)``/``reshape`` to one feature axis
``nn.ReLU``, ``nn.Sigmoid``, ``nn.Tanh`` (and the    fused into the ``Linear``/``Conv`` right before
functional forms)                                    them (as Keras ``Dense(..., activation="relu")``);
                                                     elsewhere an ``Activation`` layer
``nn.Softmax(dim=-1)`` on a 1-D feature vector       ``Activation`` ``softmax`` (never fused)
``nn.Dropout``, ``nn.Identity``, ``clone``,          dropped (identities at inference)
``contiguous``, ``detach``, ``alias``
``a + b``, ``torch.add(a, b)``, ``operator.add``     ``Add`` of two tensors of one shape (no
(``aten.add.Tensor``)                                broadcasting, ``alpha`` 1, no constants)
``torch.cat([a, b], dim=1)`` (``aten.cat``)          ``Concatenate`` (``axis=-1``): two tensors along
                                                     the channels/features, which is the last axis
                                                     channels-last
===================================================  ==============================================

Any other op raises :class:`~split4ml.errors.UnsupportedLayerError` naming the node, its ATen op
(e.g. ``aten.mul.Tensor``) and the torch module that called it (e.g. ``lstm: torch.nn.LSTM``); so do a
``torch.cat`` along another dim or of more than two tensors (hls4ml merges two: nest them), a sum that
broadcasts or adds a stored parameter, and a merge of a flattened multi-position map with a tensor in
another feature order.

An activation is fused into the Linear/Conv before it only when nothing else reads that layer's raw
output (``relu(h) + h`` keeps ``h`` and an ``Activation``).

Why ReLU/Sigmoid/Tanh are fused: a torch ``Linear`` + ``ReLU`` pair is what Keras writes as one
``Dense(activation="relu")`` layer, and hls4ml builds the same firmware for both (a dense layer
followed by its activation). Fusing gives the Graph, and so the plan, that the Keras twin gives;
a Softmax stays separate because the usual Keras models (``split4ml.models``) keep it as an
``Activation`` layer.

Layout: channels-first to channels-last
---------------------------------------
torch tensors are ``(C, L)`` / ``(C, H, W)``; the Graph is channels-last like hls4ml, ``(L, C)`` /
``(H, W, C)``. Shapes are transposed, conv kernels go from ``(c_out, c_in, *k)`` to
``(*k, c_in, c_out)``, and BatchNorm runs over the (last) channel axis. A Flatten of a
channels-last tensor lists features in ``(H, W, C)`` order where torch lists them in ``(C, H, W)``
order, so the rows of the next ``Linear``'s kernel are permuted to match (a BatchNorm1d between
them has its statistics permuted the same way; elementwise activations commute). A flattened
multi-position tensor that reaches the output without such a ``Linear`` is refused, since its
feature order would differ from torch's. With these rules the Graph computes exactly what the torch
module computes, given the input transposed to channels-last
(:func:`channels_last_input`).

Names are the torch module paths (``fc1``, ``features.0`` -> ``features_0``, ``0`` -> ``layer_0``), or the node name
for functional ops, made hls4ml-safe by the Keras frontend's rules (``input`` -> ``input_1``). A functional
merge (``+``, ``torch.cat``) inside a module is named ``<module path>_add`` / ``_cat`` (``b1_add``), at the top
level ``add`` / ``cat`` (then ``add_1`` ...), so a twin of a Keras model written with one submodule per block
(``b1.fc1``, ``b1.relu = nn.ReLU()``) gets the Keras layer names.
torch is imported lazily.
"""

from __future__ import annotations

import importlib.util
import inspect as pyinspect
import operator
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, UnsupportedLayerError
from ..ir import Graph, Layer
from .keras import _safe_names

__all__ = [
    "SUPPORTED_MODULES",
    "channels_last_input",
    "graph_from_exported",
    "graph_from_torch",
    "load_torch",
]

#: torch modules (or their functional forms) the frontend converts.
SUPPORTED_MODULES: tuple[str, ...] = (
    "Linear",
    "Conv1d",
    "Conv2d",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Flatten",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Dropout",
    "Identity",
)

_SEE_README = "see README: PyTorch models"
_FUSABLE = ("relu", "sigmoid", "tanh")

# ATen op names (``str(node.target)`` without the overload) by role.
_LINEAR_OPS = ("aten.linear",)
_CONV_OPS = ("aten.conv1d", "aten.conv2d", "aten.convolution")
_MAXPOOL_OPS = ("aten.max_pool1d", "aten.max_pool2d")
_AVGPOOL_OPS = ("aten.avg_pool1d", "aten.avg_pool2d")
_BN_OPS = ("aten.batch_norm", "aten._native_batch_norm_legit_no_training")
_ACT_OPS = {"aten.relu": "relu", "aten.relu_": "relu", "aten.sigmoid": "sigmoid", "aten.sigmoid_": "sigmoid",
            "aten.tanh": "tanh", "aten.tanh_": "tanh"}
_SOFTMAX_OPS = ("aten.softmax", "aten._softmax")
_FLATTEN_OPS = ("aten.flatten", "aten.view", "aten.reshape", "aten._unsafe_view")
_ADD_OPS = ("aten.add", "aten.add_")
_CAT_OPS = ("aten.cat", "aten.concat", "aten.concatenate")
_IDENTITY_OPS = ("aten.dropout", "aten.dropout_", "aten.feature_dropout", "aten.clone", "aten.contiguous",
                 "aten.detach", "aten.alias", "aten.lift_fresh_copy")

_KNOWN_OPS = frozenset((*_LINEAR_OPS, *_CONV_OPS, *_MAXPOOL_OPS, *_AVGPOOL_OPS, *_BN_OPS, *_ACT_OPS, *_SOFTMAX_OPS,
                        *_FLATTEN_OPS, *_IDENTITY_OPS, *_ADD_OPS, *_CAT_OPS))


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is an extra
        raise ModelLoadError(
            f"cannot import torch ({exc}); install the PyTorch extra: pip install 'split4ml[torch]'"
        ) from exc
    return torch


# --------------------------------------------------------------------------- layout helpers
def _to_channels_last(shape: Sequence[int]) -> tuple[int, ...]:
    """``(C, *spatial)`` -> ``(*spatial, C)``; a 1-D shape is unchanged."""
    s = tuple(int(d) for d in shape)
    return s if len(s) <= 1 else (*s[1:], s[0])


def channels_last_input(x: np.ndarray) -> np.ndarray:
    """A batch of torch (channels-first) inputs in the Graph's channels-last layout.

    ``(N, C, H, W)`` -> ``(N, H, W, C)``, ``(N, C, L)`` -> ``(N, L, C)``; ``(N, F)`` is unchanged.
    """
    a = np.asarray(x)
    if a.ndim <= 2:
        return a
    return np.moveaxis(a, 1, -1)


def _flatten_permutation(shape_cf: Sequence[int]) -> np.ndarray:
    """For each channels-last flat index, the channels-first (torch) flat index of the same element."""
    n = int(np.prod(shape_cf))
    return np.arange(n).reshape(tuple(shape_cf)).transpose((*range(1, len(shape_cf)), 0)).ravel()


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def _numpy(t: Any) -> np.ndarray:
    arr = t.detach().cpu().numpy()
    return np.array(arr, dtype=np.float64 if arr.dtype == np.float64 else np.float32, copy=True)


# --------------------------------------------------------------------------- node helpers
def _op_name(node: Any) -> str:
    """``aten.linear`` for ``aten.linear.default`` (the op without its overload)."""
    text = str(node.target)
    parts = text.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and parts[0] == "aten" else text


def _module_of(node: Any) -> tuple[str, str] | None:
    """``(qualified name, class)`` of the innermost torch module that called ``node``, if any."""
    stack = node.meta.get("nn_module_stack") or {}
    entries = [v for v in stack.values() if isinstance(v, tuple) and len(v) == 2 and v[0]]
    if not entries:
        return None
    path, cls = entries[-1]
    cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    return str(path), str(cls_name)


def _is_bookkeeping(node: Any) -> bool:
    """Nodes that export adds around the computation (input guards, shape asserts, the output)."""
    if node.op == "output":
        return True
    if node.op == "call_module" and str(node.target).startswith("_guards"):
        return True
    op = _op_name(node)
    return op.startswith("aten._assert") or op.startswith("aten.sym_")


def _describe(node: Any) -> str:
    mod = _module_of(node)
    where = f", module {mod[0]!r}: {mod[1]}" if mod else ""
    return f"node {node.name!r} ({node.target}{where})"


def _unsupported(node: Any, what: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"{_describe(node)}: {what}; supported torch modules: {', '.join(SUPPORTED_MODULES)}; {_SEE_README}"
    )


def _shape_of(node: Any) -> tuple[int, ...]:
    """The shape of a node's output with the batch dimension (from export's fake-tensor metadata)."""
    val = node.meta.get("val")
    if val is None:
        tm = node.meta.get("tensor_meta")
        shape = getattr(tm, "shape", None)
    else:
        shape = getattr(val, "shape", None)
    if shape is None:
        raise _unsupported(node, "its output is not a single tensor")
    return tuple(int(d) for d in shape)


def _arg(node: Any, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _ints(value: Any, n: int) -> tuple[int, ...]:
    """A torch int-or-list argument as an ``n``-tuple."""
    if isinstance(value, int):
        return (int(value),) * n
    vals = tuple(int(v) for v in value)
    if len(vals) == 1 and n > 1:
        return vals * n
    return vals


# --------------------------------------------------------------------------- the converter
@dataclass
class _Pending:
    """A Graph layer being built, in channels-last terms."""

    torch_name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    activation: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: tuple[int, ...] = ()  # indices of the producers in _Converter.layers (0: the model input)
    in_shapes: tuple[tuple[int, ...], ...] = ()  # channels-last input shapes of a merge layer


class _Converter:
    """Walks one ExportedProgram's module graph and collects :class:`_Pending` layers."""

    def __init__(self, gm: Any) -> None:
        self.gm = gm
        self.layers: list[_Pending] = []  # layers[0] is the model input
        # per layer index: the channels-first shape of the map that was flattened into that layer's output,
        # while the output's feature order is channels-last (torch's is channels-first)
        self.flat: dict[int, tuple[int, ...]] = {}
        self.value: dict[Any, int] = {}  # fx node -> index of the layer whose output it is
        self.uses: dict[Any, int] = {}  # fx node (not an alias) -> how many ops (and the output) read it
        self.src = 0  # the layer index the op being converted reads
        self.src_node: Any = None  # the fx node that op reads

    @property
    def flat_from(self) -> tuple[int, ...] | None:
        """The flatten order pending on the tensor the current op reads (see :attr:`flat`)."""
        return self.flat.get(self.src)

    def emit(self, pending: _Pending, flat: tuple[int, ...] | None = None) -> int:
        """Append a single-input layer reading :attr:`src`; returns its index."""
        if not pending.inputs:
            pending.inputs = (self.src,)
        self.layers.append(pending)
        index = len(self.layers) - 1
        if flat is not None:
            self.flat[index] = flat
        return index

    # -- attributes and weights
    def tensor(self, node: Any, arg: Any) -> np.ndarray | None:
        if arg is None:
            return None
        if getattr(arg, "op", None) != "get_attr":
            raise _unsupported(node, f"its weight {arg!s} is computed, not a stored parameter or buffer")
        return _numpy(operator.attrgetter(str(arg.target))(self.gm))

    def name_for(self, node: Any) -> str:
        """The torch module path of ``node``; else the owner of its weights (TorchScript); else the node name."""
        mod = _module_of(node)
        if mod is not None:
            return mod[0]
        for a in node.args:
            target = str(getattr(a, "target", "")) if getattr(a, "op", None) == "get_attr" else ""
            if "." in target:
                return target.rsplit(".", 1)[0]
        return str(node.name)

    # -- ops
    def linear(self, node: Any, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> int:
        if len(x_shape) != 1:
            raise _unsupported(node, f"Linear on an input of shape {x_shape} (without batch) is not supported; "
                                     "flatten to one feature axis first")
        w = self.tensor(node, node.args[1])
        b = self.tensor(node, _arg(node, 2, "bias", None))
        kernel = w.T
        if self.flat_from is not None:
            kernel = kernel[_flatten_permutation(self.flat_from)]
        weights = {"kernel": _readonly(kernel)}
        if b is not None:
            weights["bias"] = _readonly(b)
        return self.emit(_Pending(self.name_for(node), "Dense", x_shape, y_shape, None,
                                    {"units": int(y_shape[0]), "use_bias": b is not None}, weights))

    def conv(self, node: Any, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> int:
        op = _op_name(node)
        rank = len(x_shape) - 1
        if rank not in (1, 2):
            raise _unsupported(node, f"a {rank}-D convolution is not supported (only Conv1d and Conv2d)")
        w = self.tensor(node, node.args[1])
        b = self.tensor(node, _arg(node, 2, "bias", None))
        stride = _ints(_arg(node, 3, "stride", 1), rank)
        padding = _arg(node, 4, "padding", 0)
        dilation = _ints(_arg(node, 5, "dilation", 1), rank)
        groups = int(_arg(node, 6, "groups", 1))
        if op == "aten.convolution":
            if bool(_arg(node, 6, "transposed", False)):
                raise _unsupported(node, "transposed convolution is not supported")
            groups = int(_arg(node, 8, "groups", 1))
        if any(d != 1 for d in dilation):
            raise _unsupported(node, f"dilation {dilation} is not supported (only 1)")
        if groups != 1:
            raise _unsupported(node, f"groups={groups} is not supported (only 1)")
        kernel_size = tuple(int(k) for k in w.shape[2:])
        if isinstance(padding, str):
            pad_mode = padding
        else:
            pads = _ints(padding, rank)
            if all(p == 0 for p in pads):
                pad_mode = "valid"
            elif all(s == 1 for s in stride) and all(k % 2 == 1 and p == (k - 1) // 2
                                                     for k, p in zip(kernel_size, pads, strict=True)):
                pad_mode = "same"
            else:
                raise _unsupported(node, f"padding {pads} with kernel {kernel_size} and stride {stride} is not "
                                         "supported (only 0, or (k-1)/2 at stride 1 with an odd kernel, or 'same')")
        if pad_mode == "same" and any(s != 1 for s in stride):
            raise _unsupported(node, f"padding 'same' with stride {stride} is not supported (only stride 1)")
        if pad_mode not in ("valid", "same"):
            raise _unsupported(node, f"padding {pad_mode!r} is not supported")
        kernel = np.transpose(w, (*range(2, 2 + rank), 1, 0))
        weights = {"kernel": _readonly(kernel)}
        if b is not None:
            weights["bias"] = _readonly(b)
        params = {"filters": int(w.shape[0]), "kernel_size": kernel_size, "strides": stride, "padding": pad_mode,
                  "use_bias": b is not None}
        return self.emit(_Pending(self.name_for(node), f"Conv{rank}D", _to_channels_last(x_shape),
                                    _to_channels_last(y_shape), None, params, weights))

    def pool(self, node: Any, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> int:
        op = _op_name(node)
        rank = len(x_shape) - 1
        is_max = op in _MAXPOOL_OPS
        pool = _ints(node.args[1], rank)
        stride_arg = _arg(node, 2, "stride", [])
        stride = _ints(stride_arg, rank) if (isinstance(stride_arg, int) or len(stride_arg)) else pool
        pads = _ints(_arg(node, 3, "padding", 0), rank)
        if any(p != 0 for p in pads):
            raise _unsupported(node, f"pooling padding {pads} is not supported (only 0)")
        if is_max:
            dilation = _ints(_arg(node, 4, "dilation", 1), rank)
            ceil_mode = bool(_arg(node, 5, "ceil_mode", False))
            if any(d != 1 for d in dilation):
                raise _unsupported(node, f"pooling dilation {dilation} is not supported (only 1)")
        else:
            ceil_mode = bool(_arg(node, 4, "ceil_mode", False))
            if rank == 2 and _arg(node, 6, "divisor_override", None) is not None:
                raise _unsupported(node, "divisor_override is not supported")
        if ceil_mode:
            raise _unsupported(node, "ceil_mode=True is not supported")
        kind = f"{'Max' if is_max else 'Average'}Pooling{rank}D"
        params = {"pool_size": pool, "strides": stride, "padding": "valid"}
        return self.emit(_Pending(self.name_for(node), kind, _to_channels_last(x_shape),
                                    _to_channels_last(y_shape), None, params, {}))

    def batchnorm(self, node: Any, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> int:
        op = _op_name(node)
        if op == "aten.batch_norm":
            if bool(_arg(node, 5, "training", False)):
                raise _unsupported(node, "BatchNorm in training mode is not supported; call model.eval() first")
            eps = float(_arg(node, 7, "eps", 1e-5))
        else:
            eps = float(_arg(node, 6, "eps", 1e-5))
        mean = self.tensor(node, node.args[3])
        var = self.tensor(node, node.args[4])
        if mean is None or var is None:
            raise _unsupported(node, "BatchNorm without running statistics (track_running_stats=False) "
                                     "is not supported")
        n = mean.shape[0]
        gamma = self.tensor(node, node.args[1])
        beta = self.tensor(node, node.args[2])
        gamma = gamma if gamma is not None else np.ones(n, dtype=mean.dtype)
        beta = beta if beta is not None else np.zeros(n, dtype=mean.dtype)
        arrays = {"gamma": gamma, "beta": beta, "moving_mean": mean, "moving_variance": var}
        if self.flat_from is not None and len(x_shape) == 1:
            perm = _flatten_permutation(self.flat_from)
            arrays = {k: v[perm] for k, v in arrays.items()}
        return self.emit(_Pending(self.name_for(node), "BatchNormalization", _to_channels_last(x_shape),
                                  _to_channels_last(y_shape), None, {"epsilon": eps},
                                  {k: _readonly(v) for k, v in arrays.items()}),
                         self.flat_from if len(x_shape) == 1 else None)

    def activation(self, node: Any, func: str, x_shape: tuple[int, ...]) -> int:
        prev = self.layers[self.src]
        if (func in _FUSABLE and prev.kind in ("Dense", "Conv1D", "Conv2D") and prev.activation is None
                and self.uses.get(self.src_node, 0) == 1):  # fused only where nothing else reads the raw output
            prev.activation = func
            return self.src
        shape = _to_channels_last(x_shape)
        return self.emit(_Pending(self.name_for(node), "Activation", shape, shape, func, {}, {}), self.flat_from)

    def softmax(self, node: Any, x_shape: tuple[int, ...]) -> int:
        dim = int(_arg(node, 1, "dim", -1))
        if len(x_shape) != 1 or dim not in (-1, 1):
            raise _unsupported(node, f"Softmax over dim={dim} of a tensor of shape {x_shape} (without batch) is "
                                     "not supported (only dim=-1 on a flat feature vector)")
        return self.activation(node, "softmax", x_shape)

    def flatten(self, node: Any, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> int:
        op = _op_name(node)
        if len(y_shape) != 1:
            raise _unsupported(node, f"{op} to shape {y_shape} (without batch) is not supported; only a flatten "
                                     "to (batch, features) is")
        if op == "aten.flatten" and int(_arg(node, 1, "start_dim", 0)) % (len(x_shape) + 1) != 1:
            raise _unsupported(node, "torch.flatten must keep the batch dimension (start_dim=1)")
        if len(x_shape) == 1:
            return self.src  # already flat: an identity
        flat = tuple(x_shape) if int(np.prod(x_shape[1:])) != 1 else None  # several positions: order changes
        return self.emit(_Pending(self.name_for(node), "Flatten", _to_channels_last(x_shape), y_shape, None, {}, {}),
                         flat)

    # -- merges
    def merge_name(self, node: Any, word: str) -> str:
        """``<module path>_<word>`` of a functional merge inside a module (``b1_add``), else ``word``."""
        mod = _module_of(node)
        return f"{mod[0]}_{word}" if mod is not None else word

    def operand(self, node: Any, arg: Any, what: str) -> int:
        """The layer index of a merge operand, which must be a tensor computed from the model input."""
        if getattr(arg, "op", None) is None:
            raise _unsupported(node, f"{what} with the constant {arg!r} is not supported; a merge takes tensors "
                                     "computed from the model input (a constant bias belongs in the layer before)")
        if arg not in self.value:
            kind = "a stored parameter or buffer" if arg.op == "get_attr" else "not computed from the model input"
            raise _unsupported(node, f"{what} of {arg.name!r} ({kind}) is not supported; a merge takes tensors "
                                     "computed from the model input (a constant bias belongs in the layer before)")
        return self.value[arg]

    def add(self, node: Any) -> int:
        if len(node.args) != 2:
            raise _unsupported(node, f"an add of {len(node.args)} operands is not supported")
        alpha = node.kwargs.get("alpha", 1)
        if alpha != 1:
            raise _unsupported(node, f"torch.add with alpha={alpha} is not supported (only a plain sum a + b)")
        a, b = (self.operand(node, arg, "an Add") for arg in node.args)
        shapes = [_shape_of(arg)[1:] for arg in node.args]
        y_shape = _shape_of(node)[1:]
        if shapes[0] != shapes[1] or y_shape != shapes[0]:
            raise _unsupported(node, f"an Add of shapes {shapes[0]} and {shapes[1]} (without batch) broadcasts; "
                                     "only the sum of two tensors of one shape is supported")
        if self.flat.get(a) != self.flat.get(b):
            raise _unsupported(node, "it adds a flattened multi-position feature map to a tensor in another feature "
                                     "order; add the maps before the Flatten")
        shape = _to_channels_last(y_shape)
        return self.emit(_Pending(self.merge_name(node, "add"), "Add", shape, shape, None, {}, {}, (a, b),
                                  (shape, shape)), self.flat.get(a))

    def cat(self, node: Any) -> int:
        parts = _arg(node, 0, "tensors", [])
        full = _shape_of(node)
        dim = int(_arg(node, 1, "dim", 0))
        dim = dim + len(full) if dim < 0 else dim
        if dim != 1:
            raise _unsupported(node, f"torch.cat along dim {dim} of {len(full)}-D tensors (with batch) is not "
                                     "supported; only along the channels/features (dim=1), which is the last axis "
                                     "channels-last")
        if len(parts) != 2:
            raise _unsupported(node, f"torch.cat of {len(parts)} tensors is not supported (hls4ml concatenates "
                                     "exactly two); nest them: torch.cat([torch.cat([a, b], 1), c], 1)")
        idx = tuple(self.operand(node, arg, "a torch.cat") for arg in parts)
        if any(i in self.flat for i in idx):
            raise _unsupported(node, "it concatenates a flattened multi-position feature map, whose feature order "
                                     "differs from torch's; concatenate the maps (dim=1) before the Flatten")
        shapes = tuple(_to_channels_last(_shape_of(arg)[1:]) for arg in parts)
        return self.emit(_Pending(self.merge_name(node, "cat"), "Concatenate", shapes[0],
                                  _to_channels_last(full[1:]), None, {"axis": -1}, {}, idx, shapes))

    # -- walk
    def _alias_of(self, node: Any) -> Any | None:
        """The node whose value ``node`` passes on unchanged (identities, ``getitem`` 0, a flatten of a flat
        tensor), else None."""
        if node.target is operator.getitem:
            return node.args[0] if int(node.args[1]) == 0 else None
        op = _op_name(node)
        data = node.args[0] if node.args else None
        if op in _IDENTITY_OPS:
            return data
        if op in _FLATTEN_OPS and getattr(data, "op", None) is not None:
            try:
                x, y = _shape_of(data), _shape_of(node)
            except UnsupportedLayerError:
                return None
            return data if len(x) == 2 and x == y else None
        return None

    def _count_uses(self, nodes: list[Any]) -> None:
        """How many ops (and the model output) read each value, looking through aliases (for fusing)."""
        root: dict[Any, Any] = {}

        def base(n: Any) -> Any:
            return root.get(n, n)

        for node in nodes:
            if node.op == "output":
                reads = node.args[0] if isinstance(node.args[0], list | tuple) else [node.args[0]]
            elif node.op == "call_function" and not _is_bookkeeping(node):
                alias = self._alias_of(node)
                if alias is not None:
                    root[node] = base(alias)
                    continue
                reads = [a for a in node.args if not isinstance(a, list | tuple)]
                reads += [x for a in node.args if isinstance(a, list | tuple) for x in a]
            else:
                continue
            for a in reads:
                if getattr(a, "op", None) not in (None, "get_attr"):
                    self.uses[base(a)] = self.uses.get(base(a), 0) + 1
        self._root = root

    def run(self) -> tuple[str, tuple[int, ...]]:
        """Convert every node; returns the input name and its channels-first shape (no batch)."""
        graph = self.gm.graph
        inputs = [n for n in graph.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise UnsupportedLayerError(
                f"the model has {len(inputs)} tensor inputs {[n.name for n in inputs]}; only single-input models "
                f"are supported; {_SEE_README}"
            )
        x_node = inputs[0]
        x_shape_b = _shape_of(x_node)
        if len(x_shape_b) < 2:
            raise UnsupportedLayerError(
                f"the model input {x_node.name!r} has shape {x_shape_b}; expected (batch, features) or "
                "(batch, channels, ...)"
            )
        for node in graph.nodes:  # op types first: an unsupported op is named before any structure problem
            if node.op == "call_function" and not _is_bookkeeping(node) \
                    and node.target not in (operator.getitem, operator.add) and _op_name(node) not in _KNOWN_OPS:
                raise _unsupported(node, f"op type {_op_name(node)} is not supported")
        nodes = list(graph.nodes)
        self._count_uses(nodes)
        in_shape = _to_channels_last(x_shape_b[1:])
        self.layers.append(_Pending(str(x_node.name), "Input", in_shape, in_shape))
        self.value[x_node] = 0
        batch = x_shape_b[0]
        for node in nodes:
            if node.op in ("placeholder", "get_attr", "output"):
                continue
            if _is_bookkeeping(node):
                continue
            if node.op == "call_module":
                raise _unsupported(node, "a call to a submodule that export did not inline is not supported")
            op = _op_name(node)
            if node.target is operator.getitem:
                if node.args[0] in self.value and int(node.args[1]) == 0:
                    self.value[node] = self.value[node.args[0]]
                    continue
                raise _unsupported(node, "indexing an op's outputs other than the first is not supported")
            if op in _ADD_OPS or node.target is operator.add:
                self.value[node] = self.add(node)
                continue
            if op in _CAT_OPS:
                self.value[node] = self.cat(node)
                continue
            data = node.args[0] if node.args else None
            if data not in self.value:
                what = (f"a stored tensor ({data.name!r})" if getattr(data, "op", None) == "get_attr"
                        else f"{data!r}, which is not computed from the model input")
                raise _unsupported(node, f"it reads {what}; every layer must read the model input or a layer")
            self.src, self.src_node = self.value[data], self._root.get(data, data)
            x_shape = _shape_of(data)[1:]
            y_full = _shape_of(node) if op not in _BN_OPS[1:] else _shape_of(data)
            if y_full[:1] != (batch,):
                raise _unsupported(node, f"its output {y_full} does not keep the batch dimension {batch}")
            self.value[node] = self.dispatch(node, op, x_shape, y_full[1:])
        outputs = [n for n in graph.nodes if n.op == "output"]
        out_args = outputs[0].args[0] if outputs else None
        out_nodes = list(out_args) if isinstance(out_args, list | tuple) else [out_args]
        if len(out_nodes) != 1 or out_nodes[0] not in self.value:
            raise UnsupportedLayerError(
                f"the model returns the outputs of {[self.name_for(n) if hasattr(n, 'op') else n for n in out_nodes]}; "
                f"only a single output, computed from the input, is supported; {_SEE_README}"
            )
        self.output = self.value[out_nodes[0]]
        flat = self.flat.get(self.output)
        if flat is not None:
            raise UnsupportedLayerError(
                f"the flattened output of a {len(flat) - 1}-D feature map {flat} reaches the "
                "model output without a Linear layer; its feature order would differ from torch's (channels-first) "
                f"order; end the model with a Linear, or flatten a 1x1 map; {_SEE_README}"
            )
        return str(x_node.name), x_shape_b[1:]

    def dispatch(self, node: Any, op: str, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> int:
        """Convert one single-input op reading :attr:`src`; returns the index of the layer giving its value."""
        if op in _LINEAR_OPS:
            return self.linear(node, x_shape, y_shape)
        if op in _CONV_OPS:
            return self.conv(node, x_shape, y_shape)
        if op in _MAXPOOL_OPS or op in _AVGPOOL_OPS:
            if len(x_shape) - 1 not in (1, 2):
                raise _unsupported(node, f"pooling a tensor of shape {x_shape} is not supported (only 1-D/2-D)")
            return self.pool(node, x_shape, y_shape)
        if op in _BN_OPS:
            return self.batchnorm(node, x_shape, y_shape)
        if op in _ACT_OPS:
            return self.activation(node, _ACT_OPS[op], x_shape)
        if op in _SOFTMAX_OPS:
            return self.softmax(node, x_shape)
        if op in _FLATTEN_OPS:
            return self.flatten(node, x_shape, y_shape)
        if op in _IDENTITY_OPS:
            if op.startswith("aten.dropout") and bool(_arg(node, 2, "train", False)):
                raise _unsupported(node, "dropout in training mode; call model.eval() first")
            return self.src
        raise _unsupported(node, f"op type {op} is not supported")


def graph_from_exported(program: Any, name: str = "torch_model") -> Graph:
    """Convert a ``torch.export.ExportedProgram`` to a :class:`Graph` (a chain, or a DAG whose branches meet
    in ``Add``/``Concatenate`` layers).

    Raises:
        UnsupportedLayerError: an op, option or structure the Graph cannot express (the message names
            the node, its ATen op and the torch module that called it).
    """
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(name)).lstrip("_") or "torch_model"  # a Keras/hls4ml-safe name
    gm = program.module()
    conv = _Converter(gm)
    conv.run()
    # keep the layers the output depends on (export drops unused ops; this is a safety net), in order
    needed = {conv.output}
    for i in range(len(conv.layers) - 1, -1, -1):
        if i in needed:
            needed.update(conv.layers[i].inputs)
    kept = [i for i in range(len(conv.layers)) if i in needed]
    if len(kept) == 1:
        raise UnsupportedLayerError(f"model {name!r} has no layers (an identity); {_SEE_README}")
    names = _safe_names([_identifier(conv.layers[i].torch_name) for i in kept])
    name_of = dict(zip(kept, names, strict=True))
    layers = []
    for i in kept:
        p = conv.layers[i]
        layers.append(Layer(name=name_of[i], kind=p.kind, input_shape=p.in_shape, output_shape=p.out_shape,
                            inputs=() if i == 0 else tuple(name_of[j] for j in p.inputs), activation=p.activation,
                            params=p.params, weights=p.weights, input_shapes=p.in_shapes))
    return Graph(name=name, layers=tuple(layers), outputs=(name_of[conv.output],))


def _identifier(path: str) -> str:
    """A torch module path as an identifier: ``features.0`` -> ``features_0``, ``0.1`` -> ``layer_0_1``."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", path)
    return f"layer_{text}" if text[:1].isdigit() else text


def _first_linear_in_features(module: Any) -> int | None:
    """``in_features`` of the module's first weighted layer when it is a Linear (None otherwise)."""
    for _, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        if not own:
            continue
        kind = getattr(sub, "original_name", type(sub).__name__)
        if kind == "Linear":
            weight = dict(own).get("weight")
            return int(weight.shape[1]) if weight is not None else None
        return None
    return None


def _example_shape(module: Any, input_shape: Sequence[int] | None, what: str) -> tuple[int, ...]:
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if not shape or min(shape) < 1:
            raise ModelLoadError(f"input_shape {tuple(input_shape)} of {what}: expected positive dimensions")
        return shape
    attr = getattr(module, "input_shape", None)
    if isinstance(attr, list | tuple) and attr and all(isinstance(d, int) for d in attr):
        return tuple(int(d) for d in attr)
    n = _first_linear_in_features(module)
    if n is not None:
        return (n,)
    raise ModelLoadError(
        f"cannot tell the input shape of {what}: pass it without the batch dimension, channels-first as torch "
        "takes it (input_shape=(1, 8, 8) / --input-shape 1,8,8), or give the module an 'input_shape' attribute"
    )


def graph_from_torch(module: Any, input_shape: Sequence[int] | None = None, name: str | None = None) -> Graph:
    """Convert an ``nn.Module`` (put in eval mode) or an ``ExportedProgram`` to a :class:`Graph`.

    Args:
        module: the model; it is exported with ``torch.export.export`` on a batch-1 example.
        input_shape: the input shape without batch, channels-first (e.g. ``(1, 8, 8)``); defaults to
            ``module.input_shape``, else ``(in_features,)`` when the first weighted layer is a Linear.
        name: the Graph name; defaults to the module's class name.

    Raises:
        UnsupportedLayerError: see :func:`graph_from_exported`.
        ModelLoadError: the input shape is unknown, or torch cannot export the module.
    """
    torch = _import_torch()
    if isinstance(module, torch.export.ExportedProgram):
        return graph_from_exported(module, name or "torch_model")
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"expected a torch.nn.Module or ExportedProgram, got {type(module).__name__}")
    label = name or type(module).__name__
    shape = _example_shape(module, input_shape, f"model {label!r}")
    module = module.eval()
    example = torch.zeros((1, *shape), dtype=_param_dtype(module, torch))
    try:
        with torch.no_grad():
            program = torch.export.export(module, (example,))
    except Exception as exc:  # noqa: BLE001 - export raises many types
        raise ModelLoadError(
            f"torch.export cannot trace model {label!r} on an input of shape (1, {', '.join(map(str, shape))}): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; check input_shape (channels-first, "
            "no batch) and that forward() has no data-dependent control flow"
        ) from exc
    return graph_from_exported(program, label)


def _param_dtype(module: Any, torch: Any) -> Any:
    for p in module.parameters():
        return p.dtype
    return torch.float32


# --------------------------------------------------------------------------- files
def _load_python(path: Path, entry: str | None, torch: Any) -> Any:
    """Import ``path`` and build the module with ``entry`` (a class or a function without arguments)."""
    mod_name = f"split4ml_user_model_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - any .py file gives a spec
        raise ModelLoadError(f"cannot import {str(path)!r} as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelLoadError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}; fix the file") from exc
    finally:
        sys.modules.pop(mod_name, None)
    classes = [v for v in vars(mod).values()
               if pyinspect.isclass(v) and issubclass(v, torch.nn.Module) and v.__module__ == mod_name]
    if entry is None:
        if callable(getattr(mod, "make_model", None)):
            entry = "make_model"
        elif len(classes) == 1:
            entry = classes[0].__name__
        else:
            found = sorted(c.__name__ for c in classes)
            raise ModelLoadError(
                f"{str(path)!r} defines {len(classes)} nn.Module classes {found} and no make_model(); name the "
                "class or factory function that builds the model (entry=... / --entry NAME)"
            )
    factory: Callable[[], Any] | None = getattr(mod, entry, None)
    if factory is None or not callable(factory):
        found = sorted([c.__name__ for c in classes] + [n for n, v in vars(mod).items()
                                                        if pyinspect.isfunction(v) and v.__module__ == mod_name])
        raise ModelLoadError(f"{str(path)!r} has no class or function {entry!r}; pass one of {found} (--entry)")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelLoadError(
            f"{entry}() in {str(path)!r} failed: {type(exc).__name__}: {exc}; --entry must name a class or "
            "function that builds the model without arguments"
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{entry}() in {str(path)!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_state_dict(model: Any, weights: Path, torch: Any) -> None:
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot read state_dict {str(weights)!r}: {str(exc).splitlines()[0]}; save it with "
            "torch.save(model.state_dict(), path) (a whole pickled model is not read, for safety)"
        ) from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{str(weights)!r} holds a {type(state).__name__}, not a state_dict; save it with "
                             "torch.save(model.state_dict(), path)")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"state_dict {str(weights)!r} does not match the model: {str(exc).splitlines()[0]}; pass the weights "
            "saved from this very architecture"
        ) from exc


def _load_torchscript(path: Path, input_shape: Sequence[int] | None, torch: Any) -> Any:
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot load {str(path)!r} as TorchScript: {str(exc).splitlines()[0] if str(exc) else exc!r}; a .pt/.pth "
            "model must be written by torch.jit.save (torch.jit.trace/script); for a state_dict pass the model's .py "
            "file as the model and this file as weights (--weights)"
        ) from exc
    scripted.eval()
    shape = _example_shape(scripted, input_shape, f"TorchScript model {str(path)!r}")
    try:
        import logging
        import warnings

        from torch._export.converter import TS2EPConverter

        log = logging.getLogger("torch._export")
        level = log.level
        log.setLevel(logging.ERROR)  # export's notes on specialised dimensions are noise here
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return TS2EPConverter(scripted, (torch.zeros((1, *shape)),)).convert()
        finally:
            log.setLevel(level)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot convert TorchScript {str(path)!r} (input shape (1, {', '.join(map(str, shape))})): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; save the model with "
            "torch.export.save(torch.export.export(model, (x,)), 'model.pt2') instead"
        ) from exc


def load_torch(path: str | Path, weights: str | Path | None = None, entry: str | None = None,
               input_shape: Sequence[int] | None = None) -> Graph:
    """Load a PyTorch model file and convert it to a :class:`Graph`.

    Args:
        path: ``.pt2`` (``torch.export.save``), ``.pt``/``.pth`` (TorchScript, ``torch.jit.save``) or
            ``.py`` (a Python file that builds the module).
        weights: the state_dict of a ``.py`` model (``torch.save(model.state_dict(), path)``); required
            for ``.py``, refused for the others (their weights are inside).
        entry: ``.py`` only: the class or function (no arguments) that builds the module; defaults to
            ``make_model``, else the file's only ``nn.Module`` class.
        input_shape: input shape without batch, channels-first; ``.pt2`` files carry it (when given, it
            must agree), see :func:`graph_from_torch` for the others.

    Raises:
        ModelLoadError: missing/unreadable file, bad options, or a model torch cannot export.
        UnsupportedLayerError: see :func:`graph_from_exported`.
    """
    torch = _import_torch()
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file {str(p)!r} does not exist; pass a .pt2, .pt/.pth or .py file")
    if p.is_dir():
        raise ModelLoadError(f"{str(p)!r} is a directory; pass a .pt2, .pt/.pth or .py file")
    suffix = p.suffix.lower()
    name = p.stem.replace(".", "_") or "torch_model"
    if suffix not in (".pt2", ".pt", ".pth", ".py") and (entry is not None or weights is not None):
        raise ModelLoadError(f"{str(p)!r} is read as a .pt2 or TorchScript file, which hold their own weights; "
                             "entry/weights (--entry/--weights) apply only to a .py model")
    if entry is not None and suffix != ".py":
        raise ModelLoadError(f"entry={entry!r} (--entry) applies only to a .py model, not {str(p)!r}")
    if weights is not None and suffix != ".py":
        raise ModelLoadError(
            f"weights (--weights) apply only to a .py model; {str(p)!r} holds its own weights "
            "(to use a state_dict, pass the model's .py file as the model)"
        )
    if suffix not in (".pt2", ".pt", ".pth", ".py"):  # --framework pytorch on another extension: by content
        try:
            with open(p, "rb") as fh:  # a file object: export.load checks the extension of a path
                program = torch.export.load(fh)
        except Exception:  # noqa: BLE001 - not an export archive: try TorchScript
            return graph_from_exported(_load_torchscript(p, input_shape, torch), name)
        return _from_program(program, p, input_shape, name)
    if suffix == ".pt2":
        try:
            program = torch.export.load(str(p))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"cannot load {str(p)!r} as a torch.export program: {str(exc).splitlines()[0] if str(exc) else exc!r}; "
                "write it with torch.export.save(torch.export.export(model.eval(), (x,)), path)"
            ) from exc
        return _from_program(program, p, input_shape, name)
    if suffix in (".pt", ".pth"):
        return graph_from_exported(_load_torchscript(p, input_shape, torch), name)
    if weights is None:
        raise ModelLoadError(
            f"{str(p)!r} is Python code; pass its state_dict too (weights=... / --weights state_dict.pt), "
            "saved with torch.save(model.state_dict(), path)"
        )
    if not Path(weights).is_file():
        raise ModelLoadError(f"weights file {str(weights)!r} does not exist; pass a file saved with "
                             "torch.save(model.state_dict(), path)")
    model = _load_python(p, entry, torch)
    _load_state_dict(model, Path(weights), torch)
    return graph_from_torch(model, input_shape=input_shape, name=name)


def _from_program(program: Any, p: Path, input_shape: Sequence[int] | None, name: str) -> Graph:
    """The Graph of a loaded ``.pt2`` program, checking a given ``input_shape`` against the stored one."""
    if input_shape is not None:
        placeholders = [n for n in program.module().graph.nodes if n.op == "placeholder"]
        stored = _shape_of(placeholders[0])[1:] if len(placeholders) == 1 else None
        if stored is not None and tuple(int(d) for d in input_shape) != stored:
            raise ModelLoadError(f"input_shape {tuple(input_shape)} (--input-shape) differs from the shape "
                                 f"{stored} stored in {str(p)!r}; drop the option")
    return graph_from_exported(program, name)
