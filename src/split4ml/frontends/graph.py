"""hls4ml's conversion of a model as a :class:`~split4ml.ir.Graph`.

The model is converted once by hls4ml (io_parallel, the Vivado backend's passes, which
VivadoAccelerator shares) and every node of the result becomes a Graph layer that names it in
:attr:`~split4ml.ir.Layer.hls_nodes`. So the Graph has the layers hls4ml builds, after its own
optimisations (a BatchNormalization fused into a binary net's sign, an ONNX ``MatMul`` turned into a
Dense, HGQ's quantizers fused into their producers), and the planner cuts where hls4ml's model can
be cut.

==================================================  ==================================================
hls4ml node                                         Graph layer
==================================================  ==================================================
``Input``                                           ``Input``
``Dense``                                           ``Dense`` (kernel ``(n_in, n_out)``, bias)
``Conv1D``/``Conv2D``, ``PointwiseConv1D/2D``       ``Conv1D``/``Conv2D`` (kernel ``(*k, c_in, c_out)``)
``Pooling1D``/``Pooling2D``                         ``MaxPooling1D/2D``, ``AveragePooling1D/2D``
``Reshape`` (to one axis: a Flatten)                ``Flatten`` (else ``Reshape``)
``BatchNormalization``                              ``BatchNormalization`` (weights ``scale``, ``bias``)
``ApplyAlpha``                                      ``ApplyAlpha``
``Activation``, ``Softmax``, ``ParametrizedActiv``  ``Activation`` (the function in ``activation``); a
``ation``, ``HardActivation``, ``PReLU``...         Dense/Conv's own activation, which hls4ml runs as a
                                                    node ``<layer>_<activation>`` of the same type, is
                                                    folded back into the layer, as in Keras
``Merge`` (add) / ``Concatenate``                   ``Add`` / ``Concatenate``
``FixedPointQuantizer``                             ``Quantizer``
anything else hls4ml converts                       ``Op`` (``params["hls_class"]``)
==================================================  ==================================================

A quantized model's layers carry the types hls4ml resolved (:attr:`~split4ml.ir.Layer.precision`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedLayerError
from ..fixed import FixedType
from ..ir import Graph, Layer
from ..settings import DEFAULT_PRECISION, LayerPrecision
from .source import READ_BACKEND, ModelSource

#: hls4ml classes read as an activation function.
_ACTIVATION_CLASSES = ("Activation", "Softmax", "ParametrizedActivation", "HardActivation", "PReLU", "TernaryTanh",
                       "ELU", "LeakyReLU", "ThresholdedReLU")
#: hls4ml classes that act value by value (element-wise Ops stay with their producer).
ELEMENTWISE_OPS = ("BatchNormalizationQuantizedTanh", "UnaryLUT", "Quant")
#: Reshape-like classes hls4ml computes in place (no logic).
_RESHAPES = ("Reshape",)


def hls_fixed(precision: Any) -> FixedType | None:
    """An hls4ml precision type as a :class:`FixedType`, or None when it is not a fixed-point or
    integer type (a power-of-two exponent type, say)."""
    text = str(precision)
    if "xnor" in type(precision).__name__.lower():
        return FixedType(1, 1, signed=False)
    try:
        return FixedType.parse(text)
    except Exception:  # noqa: BLE001 - PlanError for unparseable types
        return None


def _approx(precision: Any) -> FixedType:
    """A FixedType of the same width, for pricing types that are not fixed-point (an exponent type)."""
    t = hls_fixed(precision)
    if t is not None:
        return t
    width = int(getattr(precision, "width", 16) or 16)
    return FixedType(max(1, width), max(1, width), signed=bool(getattr(precision, "signed", True)))


def _type(node: Any, key: str) -> Any | None:
    t = node.types.get(key)
    return None if t is None else t.precision


def _activation_name(node: Any) -> str:
    if node.class_name == "Softmax":
        return "softmax"
    act = str(node.get_attr("activation") or node.class_name)
    return act.lower()


def _kind(node: Any) -> str:
    cls = node.class_name
    if cls == "Input":
        return "Input"
    if cls == "Dense":
        return "Dense"
    if cls in ("Conv1D", "PointwiseConv1D"):
        return "Conv1D"
    if cls in ("Conv2D", "PointwiseConv2D"):
        return "Conv2D"
    if cls in ("Pooling1D", "Pooling2D"):
        op = str(node.get_attr("pool_op", "Max")).lower()
        return f"{'Max' if op.startswith('max') else 'Average'}Pooling{cls[-2:]}"
    if cls in _RESHAPES:
        return "Reshape"
    if cls == "BatchNormalization":
        return "BatchNormalization"
    if cls == "ApplyAlpha":
        return "ApplyAlpha"
    if cls in _ACTIVATION_CLASSES:
        return "Activation"
    if cls == "Merge" and str(node.get_attr("op", "")).lower() == "add":
        return "Add"
    if cls == "Concatenate":
        return "Concatenate"
    if cls == "FixedPointQuantizer":
        return "Quantizer"
    return "Op"


def _shape(var: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in var.shape)


def _special_types(node: Any) -> bool:
    """True when a node computes with a type a fixed-point spelling cannot say (a binary net's XNOR
    encoding, a power-of-two exponent): split4ml cannot rebuild such a node's shards."""
    return any("xnor" in type(t.precision).__name__.lower() or "exponent" in type(t.precision).__name__.lower()
               for t in node.types.values())


def _params(node: Any, kind: str, out_shape: tuple[int, ...]) -> dict[str, Any]:
    out = _params_of(node, kind, out_shape)
    if kind in ("Dense", "Conv1D", "Conv2D") and _special_types(node):
        out["special_types"] = True
    return out


def _params_of(node: Any, kind: str, out_shape: tuple[int, ...]) -> dict[str, Any]:
    g = node.get_attr
    if kind == "Dense":
        return {"units": int(g("n_out")), "use_bias": bool(g("use_bias", True))}
    if kind == "Conv1D":
        pads = (int(g("pad_left", 0)), int(g("pad_right", 0)))
        return {"filters": int(g("n_filt")), "kernel_size": (int(g("filt_width", 1)),),
                "strides": (int(g("stride_width", 1)),), "padding": "valid" if not any(pads) else "same",
                "pads": pads, "use_bias": bool(g("use_bias", True))}
    if kind == "Conv2D":
        pads = tuple(int(g(k, 0)) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
        return {"filters": int(g("n_filt")), "kernel_size": (int(g("filt_height", 1)), int(g("filt_width", 1))),
                "strides": (int(g("stride_height", 1)), int(g("stride_width", 1))),
                "padding": "valid" if not any(pads) else "same", "pads": pads, "use_bias": bool(g("use_bias", True))}
    if kind.endswith("Pooling1D"):
        return {"pool_size": (int(g("pool_width")),), "strides": (int(g("stride_width")),),
                "padding": "valid" if not (g("pad_left", 0) or g("pad_right", 0)) else "same"}
    if kind.endswith("Pooling2D"):
        pads = [g(k, 0) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right")]
        return {"pool_size": (int(g("pool_height")), int(g("pool_width"))),
                "strides": (int(g("stride_height")), int(g("stride_width"))),
                "padding": "valid" if not any(pads) else "same"}
    if kind == "Reshape":
        return {"target_shape": out_shape}
    if kind == "BatchNormalization":
        return {"epsilon": float(g("epsilon", 1e-3) or 1e-3)}
    if kind == "Concatenate":
        return {"axis": int(g("axis", -1))}
    if kind == "Op":
        return {"hls_class": node.class_name, "elementwise": node.class_name in ELEMENTWISE_OPS}
    return {}


def _weights(node: Any, kind: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, var in node.weights.items():
        data = getattr(var, "data", None)
        if data is None:
            continue
        arr = np.array(data, copy=True)
        arr.setflags(write=False)
        name = "kernel" if key == "weight" and kind in ("Dense", "Conv1D", "Conv2D") else key
        out[name] = arr
    if kind == "BatchNormalization":  # the statistics too, so that split4ml can rebuild it (Keras, shards)
        for attr, name in (("gamma_data", "gamma"), ("beta_data", "beta"), ("mean_data", "moving_mean"),
                           ("variance_data", "moving_variance")):
            data = node.get_attr(attr)
            if isinstance(data, np.ndarray):
                arr = np.array(data, copy=True)
                arr.setflags(write=False)
                out[name] = arr
    return out


def _precision(first: Any, last: Any, in_var: Any | None) -> LayerPrecision:
    res = _approx(_type(last, "result_t"))
    fixed_res = hls_fixed(_type(last, "result_t"))
    if fixed_res is None:
        raise UnsupportedLayerError(f"layer {last.name!r} ({last.class_name}): hls4ml gives it result type "
                                    f"{_type(last, 'result_t')}, which is not a fixed-point type; split4ml sends only "
                                    "fixed-point values between boards")
    w, b, a = (_type(first, k) for k in ("weight_t", "bias_t", "accum_t"))
    if w is None:  # a batch normalization / ApplyAlpha: its scale is its weight
        w = _type(first, "scale_t")
    return LayerPrecision(weight=_approx(w) if w is not None else res, bias=_approx(b) if b is not None else res,
                          result=fixed_res, accum=_approx(a) if a is not None else res,
                          input=hls_fixed(in_var.type.precision) if in_var is not None else None)


def _foldable(node: Any, producer: Any, consumers: list[Any]) -> bool:
    """True when ``node`` is the Dense/Conv ``producer``'s own activation, run by hls4ml as a node
    ``<producer>_<activation>`` of the producer's result type and read by nothing else."""
    if producer is None or producer.class_name not in ("Dense", "Conv1D", "Conv2D"):
        return False
    if node.class_name not in ("Activation", "Softmax") or len(consumers) != 1:
        return False
    act = _activation_name(node)
    if node.name != f"{producer.name}_{act}" and not (act == "softmax" and node.name == f"{producer.name}_softmax"):
        return False
    return str(_type(node, "result_t")) == str(_type(producer, "result_t"))


def wiring(model: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """An hls4ml ``ModelGraph``'s wiring: the node producing each variable, and each node's consumers
    (by node name)."""
    nodes = list(model.graph.values())
    producer_of: dict[str, Any] = {}
    for node in nodes:
        for out in node.outputs:
            producer_of[out] = node
    consumers: dict[str, list[Any]] = {n.name: [] for n in nodes}
    for node in nodes:
        if node.class_name == "Input":
            continue
        for inp in node.inputs:
            if inp in producer_of:
                consumers[producer_of[inp].name].append(node)
    return producer_of, consumers


def graph_from_model_graph(model: Any, name: str, quantized: bool) -> Graph:
    """The Graph of an hls4ml ``ModelGraph`` (see the module docstring)."""
    nodes = list(model.graph.values())
    producer_of, consumers = wiring(model)
    ir_name: dict[str, str] = {}  # hls4ml node -> Graph layer
    layers: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    for node in nodes:
        kind = _kind(node)
        ins = [producer_of[i] for i in node.inputs if i in producer_of] if kind != "Input" else []
        out_var = node.get_output_variable()
        out_shape = _shape(out_var)
        if kind == "Input":
            entry = {"name": node.name, "kind": "Input", "input_shape": out_shape, "output_shape": out_shape,
                     "inputs": (), "nodes": [node], "in_var": None}
        elif len(ins) == 1 and _foldable(node, ins[0], consumers[ins[0].name]):
            entry = by_name[ir_name[ins[0].name]]
            entry["activation"] = _activation_name(node)
            entry["nodes"].append(node)
            entry["output_shape"] = out_shape
            ir_name[node.name] = entry["name"]
            continue
        else:
            in_vars = [model.get_layer_output_variable(i) for i in node.inputs if i in producer_of]
            in_shapes = tuple(_shape(v) for v in in_vars)
            entry = {"name": node.name, "kind": kind, "input_shape": in_shapes[0] if in_shapes else out_shape,
                     "output_shape": out_shape, "inputs": tuple(ir_name[p.name] for p in ins),
                     "input_shapes": in_shapes if len(in_shapes) > 1 else (), "nodes": [node],
                     "in_var": in_vars[0] if in_vars else None}
            if kind == "Activation":
                entry["activation"] = _activation_name(node)
            if kind == "Reshape" and len(out_shape) == 1 and len(entry["input_shape"]) > 1:
                entry["kind"] = "Flatten"
        ir_name[node.name] = entry["name"]
        by_name[entry["name"]] = entry
        layers.append(entry)
    out: list[Layer] = []
    for e in layers:
        first, last = e["nodes"][0], e["nodes"][-1]
        kind = e["kind"]
        prec = _precision(first, last, e["in_var"]) if quantized else None
        if kind == "Input" and quantized:
            t = hls_fixed(_type(first, "result_t"))
            prec = LayerPrecision(weight=DEFAULT_PRECISION, bias=DEFAULT_PRECISION, result=t, accum=t) if t else None
        out.append(Layer(name=e["name"], kind=kind, input_shape=e["input_shape"], output_shape=e["output_shape"],
                         inputs=e["inputs"], activation=e.get("activation"),
                         params=_params(first, "Reshape" if kind == "Flatten" else kind, e["output_shape"])
                         if kind != "Flatten" else {},
                         weights=_weights(first, kind), input_shapes=e.get("input_shapes", ()),
                         hls_nodes=tuple(n.name for n in e["nodes"]), precision=prec))
    outputs = tuple(ir_name[producer_of[o].name] for o in model.outputs)
    graph = Graph(name=name, layers=tuple(out), outputs=outputs)
    graph.check_dag()
    return graph


def read_config(source: ModelSource, default_precision: FixedType = DEFAULT_PRECISION) -> dict[str, Any]:
    """The hls4ml configuration a model is read with: a quantized model's :meth:`ModelSource.base_config`,
    else one default precision (the plan's precisions are applied when the boards are built)."""
    if source.quantized:
        return source.base_config(default_precision.hls4ml())
    return {"Model": {"Precision": default_precision.hls4ml(), "ReuseFactor": 1, "Strategy": "Latency",
                      "BramFactor": 1_000_000_000, "TraceOutput": False}}


def check_layer_names(graph: Graph) -> None:
    """Refuse a layer whose name holds anything but letters, digits, ``.``, ``_`` and ``-``
    (:data:`split4ml.boards.SAFE_NAME`): layer names are written into every board's hls4ml project (C++
    identifiers and type names, Tcl) and into plan files, so a name must never read as code. Every layer
    name of hls4ml's public example models passes.

    Raises:
        UnsupportedLayerError: naming the layer and how to fix it.
    """
    from ..boards import SAFE_NAME

    for lyr in graph.layers:
        if not SAFE_NAME.fullmatch(lyr.name):
            raise UnsupportedLayerError(
                f"layer {lyr.name!r} of model {graph.name!r}: its name holds characters other than letters, digits, "
                "'.', '_' and '-', and it is written into each board's hls4ml project (C++ and Tcl); rename the "
                "layer in the model (Keras: name=..., PyTorch: the module's attribute name) and export it again")


def graph_from_source(source: ModelSource, default_precision: FixedType = DEFAULT_PRECISION) -> Graph:
    """The Graph of a model read by hls4ml (see the module docstring); ``graph.source`` is ``source``.

    Raises:
        UnsupportedLayerError: hls4ml cannot convert the model (the message names the layer where hls4ml
            tells), or a layer's result type is not fixed-point.
    """
    from ..errors import BuildError

    try:
        model = source.convert(read_config(source, default_precision), READ_BACKEND, "split4ml-read",
                               io_type="io_parallel")
    except BuildError as exc:
        raise UnsupportedLayerError(str(exc)) from exc
    graph = graph_from_model_graph(model, source.name, source.quantized)
    check_layer_names(graph)
    source.info["hls_nodes"] = frozenset(model.graph)
    object.__setattr__(graph, "source", source)
    return graph
