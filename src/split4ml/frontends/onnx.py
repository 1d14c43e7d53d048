"""ONNX / QONNX frontend: an ``.onnx`` model (or an in-memory ``onnx.ModelProto``) to a :class:`~split4ml.ir.Graph`.

The model is first cleaned with qonnx, as hls4ml does for ONNX input: ``ModelWrapper`` then
``qonnx.util.cleanup.cleanup_model`` (shape inference, constant folding, unused-tensor removal,
unique node names, readable tensor names). A dynamic batch dimension is fixed to 1 first
(``cleanup_model(..., override_inpsize=1)``). Then the nodes are converted in topological order. The
model has one input and one output; it may branch, the branches meeting again in an ``Add`` or a
``Concat`` (residual blocks, skip connections), which gives a DAG Graph (:mod:`split4ml.ir`); every
node must contribute to the output.

What is converted
-----------------
==========================================  =====================================================
ONNX node                                   Graph layer
==========================================  =====================================================
``Gemm`` (on a rank-2 ``(N, n)`` tensor;     ``Dense``; kernel ``B`` (``B.T`` when ``transB``) times
transA 0)                                   ``alpha``, bias ``C`` times ``beta``
``MatMul`` with a constant right operand,   ``Dense``; the ``Add`` of a constant vector becomes the
optionally followed by ``Add`` (bias)       bias
``Conv`` (1-D or 2-D, group 1, dilation 1)  ``Conv1D``/``Conv2D``; an ``Add`` of a per-channel
                                            constant right after a bias-free Conv becomes its bias
``MaxPool``, ``AveragePool`` (1-D, 2-D)     ``MaxPooling1D/2D``, ``AveragePooling1D/2D``
``BatchNormalization`` (inference mode)     ``BatchNormalization``
``Relu``, ``Sigmoid``, ``Tanh``             fused into the ``Dense``/``Conv`` right before it (its
                                            ``activation``), else an ``Activation`` layer
``Softmax`` (over the channel/last axis)    ``Activation`` with activation ``softmax`` (never fused)
``Flatten`` (axis 1), ``Reshape`` to         ``Flatten`` (dropped when the input is already flat)
``(N, -1)``
``Dropout``, ``Identity``                   dropped (identities at inference)
``Add`` of two computed tensors of one      ``Add`` (no broadcasting; an ``Add`` of a constant is
shape                                       only a bias, above)
``Concat`` of two tensors along axis 1      ``Concatenate`` (``axis=-1``): channels/features are
                                            the last axis channels-last
==========================================  =====================================================

An activation is fused into the Dense/Conv before it only when nothing else reads that layer's raw
output. A ``Concat`` on another axis or of more than two tensors (hls4ml merges two: nest them), an
``Add`` that broadcasts, and a merge of a flattened multi-position map with a tensor in another feature
order are refused with :class:`~split4ml.errors.UnsupportedLayerError` naming the node and its op.

Padding must be all zero (``valid``) or exactly what Keras ``same`` pads (``auto_pad`` ``VALID``,
``SAME_UPPER``, or explicit pads equal to Keras' ``same``: the extra pixel at the end); an
``AveragePool`` with padding must have ``count_include_pad=0`` (Keras excludes padding).

Anything else raises :class:`~split4ml.errors.UnsupportedLayerError` naming the node (its name in
the original file) and its op type. QONNX quantisation nodes (``Quant``, ``BipolarQuant``,
``Trunc``) and ONNX ``QuantizeLinear``/``DequantizeLinear`` are detected and refused with that
error: split4ml plans float models and chooses fixed-point precisions per layer itself (plan
``precision``, ``--precision``, ``--config``); it does not yet take them from a quantised graph.

Layout
------
ONNX tensors are channels-first (``NCW``/``NCHW``); the Graph is channels-last, as the Keras
frontend and hls4ml use it. Shapes are converted (``(C, H, W)`` -> ``(H, W, C)``), Conv kernels
``(c_out, c_in, *k)`` become Keras' ``(*k, c_in, c_out)``, Gemm/MatMul weights become ``(n_in,
n_out)``. A ``Flatten`` of a channels-first feature map orders features ``(C, H, W)`` where the
Graph orders them ``(H, W, C)``: the rows of the next ``Dense`` kernel (and the statistics of a
``BatchNormalization`` in between) are permuted to match, so the Graph computes exactly what the
ONNX model computes on the transposed input. Outputs of rank > 1 come out channels-last; a
flattened multi-position feature map that reaches the output without a Gemm/MatMul is refused (its
order would differ from the ONNX model's), as the PyTorch frontend does.

Names
-----
Each layer takes the name of the module that produced the node when the exporter recorded it:
the ``torch.onnx.export(..., dynamo=True)`` name scopes (``conv1``), the TorchScript exporter's
node path (``/conv1/Conv`` -> ``conv1``, ``/b1/relu/Relu`` -> ``b1.relu``), or the weight initializer (``fc1.weight`` -> ``fc1``),
written as the PyTorch frontend writes module paths (``features.0`` -> ``features_0``, ``0`` ->
``layer_0``); otherwise the node name. A fused activation's layer is named after its Dense/Conv. An op
outside any module takes its torch.export node name where the dynamo exporter recorded it (``relu_1``).
An ``Add``/``Concat`` merge from a torch export is named as the PyTorch frontend names a functional
``+``/``torch.cat``: ``<module path>_add``/``_cat`` (``b1_add``), ``add``/``cat`` outside modules.
The Input layer takes the graph input's name. Names are then made hls4ml-safe exactly as the Keras
frontend does (``input`` -> ``input_1``). So a torch model gives the same Graph through
:mod:`split4ml.frontends.torch` and through its ONNX export (the TorchScript exporter names the
input ``input.1`` unless ``input_names`` says otherwise). The Graph name is the file stem for
:func:`load_onnx`, else the ONNX graph name.

onnx and qonnx are imported lazily.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelLoadError, UnsupportedLayerError
from ..ir import Graph, Layer
from .keras import _safe_names
from .torch import _identifier

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["SUPPORTED_OPS", "DROPPED_OPS", "QUANT_OPS", "graph_from_onnx", "load_onnx"]

#: ONNX op types converted to Graph layers (``Add``: a bias of a MatMul/Conv, or the sum of two tensors).
SUPPORTED_OPS: tuple[str, ...] = (
    "Gemm",
    "MatMul",
    "Add",
    "Conv",
    "MaxPool",
    "AveragePool",
    "BatchNormalization",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Flatten",
    "Reshape",
    "Concat",
)

#: ONNX op types that are identities at inference and are removed from the chain.
DROPPED_OPS: tuple[str, ...] = ("Dropout", "Identity")

#: Quantisation op types (QONNX and ONNX) that are detected and refused.
QUANT_OPS: tuple[str, ...] = ("Quant", "BipolarQuant", "Trunc", "QuantizeLinear", "DequantizeLinear")

_ACTIVATION_OPS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
_NAME_KEY = "split4ml.layer"  # metadata key: the layer name a node gives (cleanup renames nodes)
_NODE_KEY = "split4ml.node"  # metadata key: the node's name in the original file (for messages)
_SCOPE_KEY = "split4ml.scope"  # metadata key: the torch module path around the node ('' at top level)
_MERGE_WORDS = {"Add": "add", "Concat": "cat"}  # as the torch frontend names functional merges
_SEE_README = "see README: supported layers"


# --------------------------------------------------------------------------- imports
def _import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(f"cannot import onnx ({exc}); install the extra: pip install 'split4ml[onnx]'") from exc
    return onnx


def _cleanup(model: onnx.ModelProto) -> Any:
    """qonnx ``cleanup_model`` of ``model`` (a copy), batch fixed to 1 when it is not already."""
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.cleanup import cleanup_model
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(
            f"cannot import qonnx ({exc}); install the extra: pip install 'split4ml[onnx]'"
        ) from exc
    onnx = _import_onnx()
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    wrapper = ModelWrapper(proto)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    batch_is_one = len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == 1
    try:
        return cleanup_model(wrapper, override_inpsize=None if batch_is_one else 1)
    except Exception as exc:  # noqa: BLE001 - qonnx/onnx raise many types
        raise ModelLoadError(
            f"qonnx cleanup of ONNX graph {proto.graph.name!r} failed: {type(exc).__name__}: {exc}; "
            "check the file with onnx.checker.check_model and export it with a fixed input shape"
        ) from exc


# --------------------------------------------------------------------------- names
def _name_scopes(node: Any) -> list[Any] | None:
    """The scopes the dynamo exporter recorded for a node (``pkg.torch.onnx.name_scopes``: ``['',
    'features', 'features.0', 'conv1d']``); ``[]`` when that metadata is there but unreadable, None
    when it is missing (another exporter, or a hand-built graph)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return scopes if isinstance(scopes, list) else []
    return None


def _scope_name(node: Any) -> str | None:
    """The module path the dynamo exporter recorded, if any."""
    scopes = _name_scopes(node)
    # ['', 'features', 'features.0', 'conv1d']: each module scope is its full path; the last is the op
    if scopes is not None and len(scopes) > 2 and str(scopes[-2]):
        return str(scopes[-2])
    # ['', 'relu_1']: an op outside modules; its torch.export node name, as the PyTorch frontend names it
    if scopes is not None and len(scopes) == 2 and str(scopes[0]) == "" and str(scopes[1]):
        return str(scopes[1])
    return None


def _original_name(node: Any, initializers: set[str]) -> str:
    """The name a node's layer gets, before sanitising: the torch module path as the PyTorch frontend
    writes it (``features.0`` -> ``features_0``) when the exporter recorded one, else the node name."""
    scope = _scope_name(node)
    if scope:
        return _identifier(scope)
    for inp in node.input[1:]:
        if inp in initializers and inp.endswith(".weight") and len(inp) > len(".weight"):
            return _identifier(inp[: -len(".weight")])
    path = _torchscript_path(node)
    if path:
        return _identifier(path)
    name = str(node.name)
    if path == "":  # a TorchScript-exported node outside any module: /OpType
        return next((p for p in name.split("/") if p), name)
    return name or str(node.op_type)


def _torchscript_path(node: Any) -> str | None:
    """The full torch module path of a node the TorchScript exporter named ``/scope/.../OpType`` (``''``
    outside modules), else None.

    Each scope is a module's name relative to the scope before it, and a child of a container is written
    ``<container>.<child>``: ``/blocks.0/seq/seq.2/Gemm`` is module ``blocks.0.seq.2``.
    """
    name = str(node.name)
    if not name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p][:-1]
    path: list[str] = []
    prev = ""
    for part in parts:
        path.append(part[len(prev) + 1:] if prev and part.startswith(prev + ".") else part)
        prev = part
    return ".".join(path)


def _torch_scope(node: Any) -> str | None:
    """The torch module path a torch-exported node ran in (``b1``; ``''`` at the top level), or None when the
    node does not come from a torch exporter (a hand-built graph)."""
    scopes = _name_scopes(node)
    if scopes is None:
        return _torchscript_path(node)
    return str(scopes[-2]) if len(scopes) >= 2 else None


def _merge_name(node: Any, word: str) -> str:
    """The name of an Add/Concat merge layer, as the PyTorch frontend gives a functional ``+``/``torch.cat``:
    ``<module path>_add`` inside a module (``b1_add``), ``add`` at the top level; a node that does not come
    from torch keeps its own name."""
    scope = _meta(node, _SCOPE_KEY) if any(p.key == _SCOPE_KEY for p in node.metadata_props) else None
    if scope is None:
        return _name(node)
    return f"{_identifier(scope)}_{word}" if scope else word


def _stamp_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose nodes carry their layer name and original node name in metadata
    (qonnx cleanup renames the nodes)."""
    onnx = _import_onnx()
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    inits = {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        for prop in list(node.metadata_props):
            if prop.key in (_NAME_KEY, _NODE_KEY, _SCOPE_KEY):
                node.metadata_props.remove(prop)
        stamps = [(_NAME_KEY, _original_name(node, inits)), (_NODE_KEY, node.name or node.op_type)]
        scope = _torch_scope(node) if node.op_type in _MERGE_WORDS else None
        if scope is not None:
            stamps.append((_SCOPE_KEY, scope))
        for key, value in stamps:
            entry = node.metadata_props.add()
            entry.key = key
            entry.value = value
    _split_repeated_inputs(proto, inits)
    return proto


def _split_repeated_inputs(proto: onnx.ModelProto, inits: set[str]) -> None:
    """Give each repeated computed input of a node (``Add(h, h)``) its own ``Identity`` copy, in place.

    qonnx's tensor renaming (``GiveReadableTensorNames``) renames only the first occurrence of a tensor
    among a node's inputs, which would leave the node reading a tensor nobody produces. The copies are
    identities, dropped again by the conversion.
    """
    onnx = _import_onnx()
    nodes: list[Any] = []
    for node in proto.graph.node:
        seen: set[str] = set()
        for k, t in enumerate(node.input):
            if t and t not in inits and t in seen:
                copy = f"{t}__split4ml_copy{len(nodes)}_{k}"
                ident = onnx.helper.make_node("Identity", [t], [copy], name=f"{node.name or node.op_type}_copy{k}")
                for key, value in ((_NAME_KEY, ident.name), (_NODE_KEY, node.name or node.op_type)):
                    entry = ident.metadata_props.add()
                    entry.key, entry.value = key, value
                nodes.append(ident)
                node.input[k] = copy
            seen.add(t)
        nodes.append(node)
    if len(nodes) != len(proto.graph.node):
        copies = [onnx.NodeProto() for _ in nodes]
        for dst, src in zip(copies, nodes, strict=True):
            dst.CopyFrom(src)
        del proto.graph.node[:]
        proto.graph.node.extend(copies)


def _meta(node: Any, key: str) -> str:
    for prop in node.metadata_props:
        if prop.key == key:
            return str(prop.value)
    return str(node.name) or str(node.op_type)


def _name(node: Any) -> str:
    """The (unsanitised) name of the layer ``node`` becomes."""
    return _meta(node, _NAME_KEY)


def _where(node: Any) -> str:
    """``node 'original/name' (OpType)`` for messages: the node as the user's file names it."""
    return f"node {_meta(node, _NODE_KEY)!r} ({node.op_type})"


def _supported_list() -> str:
    return (
        f"supported ONNX ops: {', '.join(SUPPORTED_OPS)} (dropped at inference: {', '.join(DROPPED_OPS)}); "
        f"{_SEE_README}"
    )


def _unsupported(node: Any, what: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"{_where(node)}: {what}; {_supported_list()}")


# --------------------------------------------------------------------------- attributes
def _attrs(node: Any) -> dict[str, Any]:
    onnx = _import_onnx()
    out: dict[str, Any] = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _pads(
    node: Any, attrs: dict[str, Any], in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int]
) -> str:
    """``valid`` or ``same`` (Keras meaning) for a Conv/Pool node; raises for any other padding."""
    n = len(in_spatial)
    keras_same: list[tuple[int, int]] = []
    for size, k, s in zip(in_spatial, kernel, strides, strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        keras_same.append((total // 2, total - total // 2))
    auto = str(attrs.get("auto_pad", "NOTSET"))
    if auto == "VALID":
        return "valid"
    if auto == "SAME_UPPER":
        return "same"
    if auto == "SAME_LOWER":
        if all(b == e for b, e in keras_same):
            return "same"
        raise _unsupported(node, "auto_pad SAME_LOWER pads the extra pixel first, unlike Keras 'same'; use SAME_UPPER")
    if auto != "NOTSET":
        raise _unsupported(node, f"auto_pad {auto!r} is not supported")
    pads = [int(p) for p in attrs.get("pads", [0] * (2 * n))]
    pairs = list(zip(pads[:n], pads[n:], strict=True))
    if all(b == 0 and e == 0 for b, e in pairs):
        return "valid"
    if pairs == keras_same:
        return "same"
    raise _unsupported(
        node,
        f"explicit pads {pads} are neither 'valid' (all 0) nor Keras 'same' (begin/end {keras_same} for input "
        f"{tuple(in_spatial)}); pad so that the output is ceil(input/stride) with the extra pixel at the end",
    )


def _ints(attrs: dict[str, Any], key: str, default: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in attrs.get(key, default))


# --------------------------------------------------------------------------- conversion state
@dataclass
class _Entry:
    """A Graph layer in the making (name not yet sanitised)."""

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    activation: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: tuple[int, ...] = ()  # indices of the producer entries (0: the model input)
    in_shapes: tuple[tuple[int, ...], ...] = ()  # channels-last input shapes of a merge layer


def _channels_last(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A channels-first non-batch shape ``(C, *spatial)`` as channels-last ``(*spatial, C)``."""
    return shape if len(shape) < 2 else (*shape[1:], shape[0])


def _frozen(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, copy=True)
    if out.dtype != np.float64:
        out = out.astype(np.float32)
    out.setflags(write=False)
    return out


class _Converter:
    """Walks the cleaned graph in topological order and builds the Graph entries."""

    def __init__(self, wrapper: Any, opset: int) -> None:
        self.m = wrapper
        self.opset = opset
        self.entries: list[_Entry] = []  # entries[0] is the model input
        # per entry index: the pending (C, *S) -> (*S, C) order of a flattened map in that entry's output,
        # and the Flatten/Reshape node that made it
        self.perms: dict[int, tuple[np.ndarray, Any]] = {}
        self.src = 0  # the entry the node being converted reads
        self.src_uses = 0  # how many nodes (and the graph output) read that tensor

    @property
    def perm(self) -> np.ndarray | None:
        """The flatten order pending on the tensor the current node reads (see :attr:`perms`)."""
        found = self.perms.get(self.src)
        return None if found is None else found[0]

    # ---- helpers
    def shape(self, tensor: str, node: Any) -> tuple[int, ...]:
        dims = self.m.get_tensor_shape(tensor)
        if dims is None or len(dims) < 2 or any(int(d) <= 0 for d in dims[1:]):
            raise _unsupported(
                node,
                f"tensor {tensor!r} has shape {dims} (with batch); every dimension but the batch must be known "
                "and the tensor must have a batch axis; export the model with a fixed input shape",
            )
        return tuple(int(d) for d in dims[1:])

    def init(self, node: Any, index: int, what: str) -> np.ndarray | None:
        """Constant input ``index`` of ``node`` (None when absent); raises when it is not constant."""
        if index >= len(node.input) or not node.input[index]:
            return None
        arr = self.m.get_initializer(node.input[index])
        if arr is None:
            raise _unsupported(
                node, f"its {what} (input {index}, {node.input[index]!r}) is computed, not a constant initializer"
            )
        return np.asarray(arr)

    def add(self, entry: _Entry, perm: tuple[np.ndarray, Any] | None = None) -> int:
        """Append an entry (reading :attr:`src` unless it names its inputs); returns its index."""
        if not entry.inputs:
            entry.inputs = (self.src,)
        self.entries.append(entry)
        index = len(self.entries) - 1
        if perm is not None:
            self.perms[index] = perm
        return index

    # ---- op converters; each returns how many following chain nodes it consumed
    def dense(self, node: Any, nxt: Any | None, x: tuple[int, ...], y: tuple[int, ...]) -> int:
        if len(x) != 1:
            raise _unsupported(
                node, f"{node.op_type} on a rank-{len(x) + 1} tensor (shape {('N', *x)}) is not supported; "
                "add a Flatten before it",
            )
        a = _attrs(node)
        if node.op_type == "Gemm":
            if int(a.get("transA", 0)):
                raise _unsupported(node, "transA=1 is not supported (the input must be (N, n_in))")
            b = self.init(node, 1, "weight B")
            assert b is not None
            w = b.T if int(a.get("transB", 0)) else b
            alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
            if alpha != 1.0:
                w = w * np.asarray(alpha, dtype=w.dtype)
            c = self.init(node, 2, "bias C")
            bias = None
            if c is not None:
                bias = np.broadcast_to(c, (1, y[0])).reshape(-1) * np.asarray(beta, dtype=c.dtype)
        else:
            if self.m.get_initializer(node.input[0]) is not None:
                raise _unsupported(node, "a constant left operand is not supported (only x @ W)")
            w = self.init(node, 1, "weight")
            assert w is not None
            bias = None
        if w.ndim != 2 or w.shape[0] != x[0]:
            raise _unsupported(node, f"weight of shape {w.shape} does not map {x[0]} inputs to features")
        used = 0
        if bias is None:
            bias = self._bias_from_add(nxt, y)
            used = 0 if bias is None else 1
        if self.perm is not None:
            w = w[self.perm]
        weights = {"kernel": _frozen(w)}
        if bias is not None:
            weights["bias"] = _frozen(bias)
        units = int(w.shape[1])
        self.add(
            _Entry(_name(node), "Dense", x, (units,), None, {"units": units, "use_bias": bias is not None}, weights)
        )
        return used

    def _bias_from_add(self, nxt: Any | None, y: tuple[int, ...]) -> np.ndarray | None:
        """The bias an ``Add`` of a constant right after a Dense/Conv adds, or None."""
        if nxt is None or nxt.op_type != "Add":
            return None
        consts = [self.m.get_initializer(t) for t in nxt.input]
        const = [c for c in consts if c is not None]
        if len(const) != 1:
            return None
        try:
            full = np.broadcast_to(np.asarray(const[0]), (1, *y))[0]
        except ValueError:
            return None
        per_channel = full.reshape(y[0], -1)
        if not np.array_equal(per_channel, np.broadcast_to(per_channel[:, :1], per_channel.shape)):
            return None  # not constant over the spatial axes: not a bias
        return per_channel[:, 0].copy()

    def conv(self, node: Any, nxt: Any | None, x: tuple[int, ...], y: tuple[int, ...]) -> int:
        w = self.init(node, 1, "weight")
        assert w is not None
        rank = w.ndim - 2
        if rank not in (1, 2) or len(x) != rank + 1:
            raise _unsupported(node, f"a {rank}-D convolution on input {('N', *x)} is not supported (only 1-D, 2-D)")
        a = _attrs(node)
        if int(a.get("group", 1)) != 1:
            raise _unsupported(node, f"group={a['group']} is not supported (only 1)")
        dil = _ints(a, "dilations", [1] * rank)
        if any(d != 1 for d in dil):
            raise _unsupported(node, f"dilations {dil} are not supported (only 1)")
        kernel = tuple(int(k) for k in w.shape[2:])
        strides = _ints(a, "strides", [1] * rank)
        padding = _pads(node, a, x[1:], kernel, strides)
        b = self.init(node, 2, "bias")
        used = 0
        if b is None:
            b = self._bias_from_add(nxt, y)
            used = 0 if b is None else 1
        kern = np.transpose(w, (*range(2, 2 + rank), 1, 0))
        weights = {"kernel": _frozen(kern)}
        if b is not None:
            weights["bias"] = _frozen(np.asarray(b).reshape(-1))
        params = {
            "filters": int(w.shape[0]),
            "kernel_size": kernel,
            "strides": strides,
            "padding": padding,
            "use_bias": b is not None,
        }
        kind = f"Conv{rank}D"
        self.add(_Entry(_name(node), kind, _channels_last(x), _channels_last(y), None, params, weights))
        return used

    def pool(self, node: Any, x: tuple[int, ...], y: tuple[int, ...]) -> int:
        rank = len(x) - 1
        if rank not in (1, 2):
            raise _unsupported(node, f"pooling on input {('N', *x)} is not supported (only 1-D, 2-D)")
        a = _attrs(node)
        if len(node.output) > 1 and node.output[1]:
            raise _unsupported(node, "the indices output of MaxPool is not supported")
        kernel = _ints(a, "kernel_shape", [])
        strides = _ints(a, "strides", [1] * rank)
        if any(d != 1 for d in _ints(a, "dilations", [1] * rank)):
            raise _unsupported(node, f"dilations {a.get('dilations')} are not supported (only 1)")
        padding = _pads(node, a, x[1:], kernel, strides)
        if int(a.get("ceil_mode", 0)):
            floor_out = (
                tuple(math.ceil(s / st) for s, st in zip(x[1:], strides, strict=True))
                if padding == "same"
                else tuple((s - k) // st + 1 for s, k, st in zip(x[1:], kernel, strides, strict=True))
            )
            if floor_out != y[1:]:
                raise _unsupported(node, f"ceil_mode=1 changes the output to {y[1:]} (Keras gives {floor_out})")
        if node.op_type == "AveragePool" and padding == "same" and int(a.get("count_include_pad", 0)):
            pads = _ints(a, "pads", [])
            if any(pads) or a.get("auto_pad", "NOTSET") != "NOTSET":
                raise _unsupported(
                    node, "count_include_pad=1 with padding is not supported (Keras averages over the window "
                    "inside the input); use count_include_pad=False",
                )
        kind = ("MaxPooling" if node.op_type == "MaxPool" else "AveragePooling") + f"{rank}D"
        params = {"pool_size": kernel, "strides": strides, "padding": padding}
        return self.add(_Entry(_name(node), kind, _channels_last(x), _channels_last(y), None, params, {}))

    def batchnorm(self, node: Any, x: tuple[int, ...], y: tuple[int, ...]) -> int:
        a = _attrs(node)
        if int(a.get("training_mode", 0)):
            raise _unsupported(node, "training_mode=1 is not supported (export the model in eval mode)")
        if len([o for o in node.output if o]) > 1:
            raise _unsupported(node, "running mean/variance outputs are not supported (export in eval mode)")
        arrays = {}
        for i, key in enumerate(("gamma", "beta", "moving_mean", "moving_variance"), start=1):
            arr = self.init(node, i, key)
            assert arr is not None
            if arr.shape != (x[0],):
                raise _unsupported(node, f"{key} of shape {arr.shape} is not per-channel ({x[0]},)")
            arrays[key] = arr[self.perm] if self.perm is not None else arr
        eps = float(str(np.float32(a.get("epsilon", 1e-5))))  # shortest decimal of the float32 attribute
        weights = {k: _frozen(v) for k, v in arrays.items()}
        return self.add(_Entry(_name(node), "BatchNormalization", _channels_last(x), _channels_last(y), None,
                               {"epsilon": eps}, weights), self.perms.get(self.src))

    def activation(self, node: Any, fn: str, x: tuple[int, ...]) -> int:
        prev = self.entries[self.src]
        if (fn != "softmax" and prev.kind in ("Dense", "Conv1D", "Conv2D") and prev.activation is None
                and self.src_uses == 1):  # fused only where nothing else reads the raw output
            prev.activation = fn
            return self.src
        shape = _channels_last(x)
        return self.add(_Entry(_name(node), "Activation", shape, shape, fn), self.perms.get(self.src))

    def softmax(self, node: Any, x: tuple[int, ...]) -> int:
        rank = len(x) + 1
        a = _attrs(node)
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        axis = axis + rank if axis < 0 else axis
        if rank == 2 and axis == 1:
            return self.activation(node, "softmax", x)
        if rank > 2 and axis == 1 and self.opset >= 13:
            return self.activation(node, "softmax", x)  # over channels: the last axis channels-last
        raise _unsupported(
            node, f"softmax over axis {a.get('axis')} of a rank-{rank} tensor (opset {self.opset}) is not supported; "
            "only over the features (N, n) or the channels (axis 1, opset >= 13)",
        )

    def flatten(self, node: Any, x: tuple[int, ...], y: tuple[int, ...]) -> int:
        if node.op_type == "Flatten" and int(_attrs(node).get("axis", 1)) != 1:
            raise _unsupported(node, f"axis={_attrs(node)['axis']} is not supported (only 1: keep the batch)")
        if len(y) != 1 or y[0] != math.prod(x):
            raise _unsupported(
                node, f"reshaping {('N', *x)} to {('N', *y)} is not supported; only flattening to (N, -1)"
            )
        if len(x) == 1:
            return self.src  # already flat: an identity
        c, rest = x[0], math.prod(x[1:])
        perm = np.arange(c * rest).reshape(c, rest).T.reshape(-1)
        return self.add(_Entry(_name(node), "Flatten", _channels_last(x), y), (perm, node) if rest > 1 else None)


    # ---- merges
    def operands(self, node: Any, value: dict[str, int]) -> list[str]:
        """The computed input tensors of a merge node (constants refused)."""
        names = [t for t in node.input if t]
        consts = [t for t in names if self.m.get_initializer(t) is not None]
        if consts:
            raise _unsupported(
                node, f"an {node.op_type} with the constant {consts[0]!r} is supported only as the bias right after "
                "a bias-free MatMul, Gemm or Conv; otherwise it must merge tensors computed from the model input",
            )
        missing = [t for t in names if t not in value]
        if missing:
            raise _unsupported(node, f"its input {missing[0]!r} is not computed from the model input")
        return names

    def merge_add(self, node: Any, value: dict[str, int]) -> int:
        a, b = self.operands(node, value)
        sa, sb = self.shape(a, node), self.shape(b, node)
        y = self.shape(node.output[0], node)
        if sa != sb or y != sa:
            raise _unsupported(node, f"an Add of shapes {('N', *sa)} and {('N', *sb)} broadcasts; only the sum of two "
                                     "tensors of one shape is supported")
        ia, ib = value[a], value[b]
        pa, pb = self.perms.get(ia), self.perms.get(ib)
        if (pa is None) != (pb is None) or (pa is not None and pb is not None and not np.array_equal(pa[0], pb[0])):
            raise _unsupported(node, "it adds a flattened multi-position feature map to a tensor in another feature "
                                     "order; add the maps before the Flatten")
        shape = _channels_last(y)
        return self.add(_Entry(_merge_name(node, "add"), "Add", shape, shape, None, {}, {}, (ia, ib), (shape, shape)),
                        pa)

    def concat(self, node: Any, value: dict[str, int]) -> int:
        y = self.shape(node.output[0], node)
        rank = len(y) + 1
        axis = int(_attrs(node).get("axis", 1))
        axis = axis + rank if axis < 0 else axis
        if axis != 1:
            raise _unsupported(node, f"Concat along axis {axis} of a rank-{rank} tensor is not supported; only along "
                                     "the channels/features (axis 1), which is the last axis channels-last")
        names = self.operands(node, value)
        if len(names) != 2:
            raise _unsupported(node, f"a Concat of {len(names)} tensors is not supported (hls4ml concatenates exactly "
                                     "two); nest two-input Concats")
        idx = tuple(value[t] for t in names)
        if any(i in self.perms for i in idx):
            raise _unsupported(node, "it concatenates a flattened multi-position feature map, whose feature order "
                                     "differs from the ONNX model's; concatenate the maps (axis 1) before the Flatten")
        shapes = tuple(_channels_last(self.shape(t, node)) for t in names)
        return self.add(_Entry(_merge_name(node, "cat"), "Concatenate", shapes[0], _channels_last(y), None,
                               {"axis": -1}, {}, idx, shapes))

def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def _check_ops(graph: Any, quant_only: bool = False) -> None:
    """Refuse quantisation op types and (unless ``quant_only``) unsupported ones, naming the first such node."""
    for node in graph.node:
        op = node.op_type
        if op in QUANT_OPS:
            raise UnsupportedLayerError(
                f"{_where(node)}: quantised (QONNX/QDQ) graphs are not supported yet; split4ml plans a float "
                "model and chooses the fixed-point precision per layer itself (--precision, --config, or "
                "'precision' in the plan); export the float model (e.g. the plain torch model, not Brevitas); "
                f"{_SEE_README}"
            )
        if not quant_only and op not in SUPPORTED_OPS and op not in DROPPED_OPS:
            raise _unsupported(node, "this op type is not supported")


def _dag(wrapper: Any) -> tuple[str, str, list[Any], dict[str, list[Any]]]:
    """The graph input, its output, the nodes in a topological order (the file's order where it is one)
    and the consumers of every tensor; raises for several inputs/outputs or nodes the output does not need."""
    g = wrapper.graph
    inits = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedLayerError(
            f"ONNX graph {g.name!r} has {len(inputs)} inputs {inputs}; only single-input models are supported; "
            f"{_SEE_README}"
        )
    outputs = [o.name for o in g.output]
    if len(outputs) != 1:
        raise UnsupportedLayerError(
            f"ONNX graph {g.name!r} has {len(outputs)} outputs; only single-output models are supported; {_SEE_README}"
        )
    consumers: dict[str, list[Any]] = {}
    producer: dict[str, int] = {}
    for k, node in enumerate(g.node):
        for t in node.input:
            if t:
                consumers.setdefault(t, []).append(node)
        for t in node.output:
            if t:
                producer[t] = k
    # Kahn's algorithm, always taking the earliest ready node of the file
    pending = [len({producer[t] for t in node.input if t in producer}) for node in g.node]
    deps_of = [{producer[t] for t in node.input if t in producer} for node in g.node]
    users: dict[int, list[int]] = {}
    for k, deps in enumerate(deps_of):
        for d in deps:
            users.setdefault(d, []).append(k)
    ready = sorted(k for k, n in enumerate(pending) if n == 0)
    order: list[int] = []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for u in users.get(k, []):
            pending[u] -= 1
            if pending[u] == 0:
                ready.append(u)
                ready.sort()
    if len(order) != len(g.node):  # pragma: no cover - ONNX graphs are acyclic
        raise UnsupportedLayerError(f"ONNX graph {g.name!r} has a cycle; export the model again")
    # every node must lead to the output, and read the input (directly or not)
    needed = {outputs[0]}
    for k in reversed(order):
        if any(t in needed for t in g.node[k].output):
            needed.update(t for t in g.node[k].input if t)
    off = [g.node[k] for k in order if not any(t in needed for t in g.node[k].output)]
    if off:
        raise UnsupportedLayerError(
            f"ONNX graph {g.name!r}: {', '.join(_where(n) for n in off)} compute tensors the output does not use; "
            f"remove them from the model; {_SEE_README}"
        )
    if inputs[0] not in needed:
        raise UnsupportedLayerError(f"ONNX graph {g.name!r}: the output does not depend on the input {inputs[0]!r}")
    return inputs[0], outputs[0], [g.node[k] for k in order], consumers


def _root(tensor: str, aliases: dict[str, str]) -> str:
    """The tensor that ``tensor`` passes on unchanged through identity-like nodes (``aliases``: output -> input)."""
    while tensor in aliases:
        tensor = aliases[tensor]
    return tensor


def _count_uses(wrapper: Any, nodes: list[Any], out_tensor: str) -> tuple[dict[str, int], dict[str, str]]:
    """How many nodes (and the graph output) read each tensor, looking through identities (Dropout,
    Identity, a Flatten of a flat tensor), and those identities (output -> input); decides whether an
    activation may be fused into the layer before it."""
    uses: dict[str, int] = {}
    aliases: dict[str, str] = {}
    for node in nodes:  # topological order
        computed = [t for t in node.input if t and wrapper.get_initializer(t) is None]
        out = next((o for o in node.output if o), None)
        alias = node.op_type in DROPPED_OPS
        if node.op_type in ("Flatten", "Reshape") and computed and out is not None:
            x, y = wrapper.get_tensor_shape(computed[0]), wrapper.get_tensor_shape(out)
            alias = x is not None and len(x) == 2 and list(x) == list(y or [])
        if alias and computed and out is not None:
            aliases[out] = computed[0]
            continue
        for t in computed:
            r = _root(t, aliases)
            uses[r] = uses.get(r, 0) + 1
    r = _root(out_tensor, aliases)
    uses[r] = uses.get(r, 0) + 1
    return uses, aliases


# --------------------------------------------------------------------------- public API
def graph_from_onnx(model: onnx.ModelProto, name: str | None = None) -> Graph:
    """Convert an ONNX (or QONNX float) model (a chain, or a DAG merging in Add/Concat) to a :class:`Graph`.

    Args:
        model: an ``onnx.ModelProto`` (or a qonnx ``ModelWrapper``); it is not modified.
        name: the Graph name; defaults to the ONNX graph name.

    Raises:
        UnsupportedLayerError: an unsupported op or option, a quantisation node, or a branch (the
            message names the node, by its original name, and its op type).
        ModelLoadError: qonnx cannot clean the model (e.g. shapes cannot be inferred).
    """
    onnx = _import_onnx()
    proto = getattr(model, "model", model)
    if not isinstance(proto, onnx.ModelProto):
        raise UnsupportedLayerError(
            f"expected an onnx.ModelProto, got {type(model).__name__}; load a file with load_onnx(path)"
        )
    stamped = _stamp_names(proto)
    _check_ops(stamped.graph, quant_only=True)  # before qonnx sees them; other ops may still fold away
    input_name = next(
        (i.name for i in stamped.graph.input if i.name not in {t.name for t in stamped.graph.initializer}), "x"
    )
    wrapper = _cleanup(stamped)
    _check_ops(wrapper.graph)
    in_tensor, out_tensor, nodes, consumers = _dag(wrapper)
    conv = _Converter(wrapper, _opset(wrapper.model))
    first = nodes[0] if nodes else None
    x = conv.shape(in_tensor, first) if first is not None else ()
    if first is None or not 1 <= len(x) <= 3:
        raise UnsupportedLayerError(
            f"ONNX graph {proto.graph.name!r}: input {input_name!r} of shape {('N', *x)} is not supported; "
            "give (N, features), (N, C, L) or (N, C, H, W) and at least one node"
        )
    in_shape = _channels_last(x)
    conv.entries.append(_Entry(input_name, "Input", in_shape, in_shape))
    uses, aliases = _count_uses(wrapper, nodes, out_tensor)
    value: dict[str, int] = {in_tensor: 0}  # tensor -> index of the entry whose output it is
    folded: set[int] = set()  # ids of bias Adds folded into the Dense/Conv before them
    for node in nodes:
        if id(node) in folded:
            continue
        op = node.op_type
        out = next(o for o in node.output if o)
        computed = [t for t in node.input if t and wrapper.get_initializer(t) is None]
        if op == "Concat" or (op == "Add" and len(computed) == 2):
            value[out] = conv.merge_add(node, value) if op == "Add" else conv.concat(node, value)
            continue
        if not computed or computed[0] not in value:
            raise _unsupported(node, f"its input {computed[0] if computed else None!r} is not computed from the "
                                     "model input")
        if len(computed) > 1:
            raise _unsupported(node, f"it reads several computed tensors {computed}; only Add and Concat merge tensors")
        conv.src, conv.src_uses = value[computed[0]], uses.get(_root(computed[0], aliases), 0)
        x = conv.shape(computed[0], node)
        y = conv.shape(out, node)
        if op in ("Gemm", "MatMul", "Conv"):
            users = consumers.get(out, [])
            nxt = users[0] if len(users) == 1 and out != out_tensor else None
            used = conv.dense(node, nxt, x, y) if op != "Conv" else conv.conv(node, nxt, x, y)
            value[out] = len(conv.entries) - 1
            if used and nxt is not None:
                folded.add(id(nxt))
                value[next(o for o in nxt.output if o)] = value[out]
        elif op in ("MaxPool", "AveragePool"):
            value[out] = conv.pool(node, x, y)
        elif op == "BatchNormalization":
            value[out] = conv.batchnorm(node, x, y)
        elif op in _ACTIVATION_OPS:
            value[out] = conv.activation(node, _ACTIVATION_OPS[op], x)
        elif op == "Softmax":
            value[out] = conv.softmax(node, x)
        elif op in ("Flatten", "Reshape"):
            value[out] = conv.flatten(node, x, y)
        elif op in DROPPED_OPS:
            value[out] = conv.src  # an identity at inference (its mask output, if used, is refused above)
        elif op == "Add":
            raise _unsupported(
                node, "an Add of a constant is supported only as the bias right after a bias-free MatMul, Gemm or "
                "Conv (an Add of two computed tensors of one shape is a merge)"
            )
        else:  # pragma: no cover - _check_ops refused it
            raise _unsupported(node, "this op type is not supported")
    if out_tensor not in value:  # pragma: no cover - _dag checked the output depends on the input
        raise UnsupportedLayerError(f"ONNX graph {proto.graph.name!r}: output {out_tensor!r} was not converted")
    output = value[out_tensor]
    if output in conv.perms:
        raise _unsupported(
            conv.perms[output][1],
            "it flattens a multi-position feature map that reaches the model output without a Gemm/MatMul; "
            "the Graph orders it (position, channel), ONNX (channel, position), so the outputs would differ; "
            "end the model with a Gemm/MatMul or drop the Flatten",
        )
    if len(conv.entries) < 2:
        raise UnsupportedLayerError(
            f"ONNX graph {proto.graph.name!r} has no layer besides its input (only identities); nothing to plan"
        )
    names = _safe_names([e.name for e in conv.entries])
    layers = [
        Layer(
            name=n,
            kind=e.kind,
            input_shape=e.input_shape,
            output_shape=e.output_shape,
            inputs=() if k == 0 else tuple(names[j] for j in e.inputs),
            activation=e.activation,
            params=e.params,
            weights=e.weights,
            input_shapes=e.in_shapes,
        )
        for k, (n, e) in enumerate(zip(names, conv.entries, strict=True))
    ]
    return Graph(name=name or proto.graph.name or "onnx_model", layers=tuple(layers), outputs=(names[output],))

def load_onnx(path: str | Path) -> Graph:
    """Load an ``.onnx`` file and convert it to a :class:`Graph` named after the file stem.

    Raises:
        ModelLoadError: the file is missing or not a readable ONNX model.
        UnsupportedLayerError: see :func:`graph_from_onnx`.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file {str(p)!r} does not exist; pass the path of an .onnx file")
    onnx = _import_onnx()
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # noqa: BLE001 - protobuf raises many types
        raise ModelLoadError(
            f"cannot read ONNX model {str(p)!r}: {exc}; pass a file written by torch.onnx.export or onnx.save"
        ) from exc
    if not model.graph.node:
        raise ModelLoadError(f"{str(p)!r} holds no ONNX graph nodes; pass a file written by torch.onnx.export")
    return graph_from_onnx(model, name=p.stem)
