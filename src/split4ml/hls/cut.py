"""One board's hls4ml model, cut from hls4ml's conversion of the whole model.

For a stage of a plan, hls4ml converts the whole model (with the plan's settings, for the board's
backend) and the nodes of the stage's layers are moved into a model of their own behind a fresh
input of the stage's wire type, as hls4ml's ``MultiModelGraph`` cuts a model. Every node keeps what
hls4ml's optimisations gave it in the whole model (fused quantizers, inferred types, folded
scales), so a board runs exactly what hls4ml would have generated for those layers.

The layers split4ml makes itself (shards, merges, wire packing: :mod:`.synthetic`) are converted in
a small model of their own and joined to the cut nodes by their tensors. Both sets of nodes then get
the backend's type and template passes again, and the project is written as the board's backend
writes it (VivadoAccelerator's AXI stream wrapper for PYNQ boards).

Flatten/Reshape nodes that hls4ml computes in place are dropped at a stage's ends: a wire carries the
values flat, so such a reshape costs nothing on either side.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import BuildError, Split4mlError
from ..fixed import FixedType
from ..ir import Graph, Layer
from ..settings import BuildSettings, LayerSettings
from .config import model_block, model_config, with_tables
from .synthetic import input_dict, layer_dicts, synthetic_config


def _flows(backend: str) -> tuple[str, ...]:
    """The passes hls4ml's ``MultiModelGraph`` re-applies to a cut: types, then templates."""
    if backend == "Vitis":
        return ("vivado:specific_types", "vitis:apply_templates", "vivado:apply_templates")
    return ("vivado:specific_types", "vivado:apply_templates")


def _is_inplace_reshape(node: Any) -> bool:
    from hls4ml.model.types import InplaceTensorVariable

    return node.class_name == "Reshape" and isinstance(node.get_output_variable(), InplaceTensorVariable)


def _precision(backend_obj: Any, t: FixedType) -> Any:
    return backend_obj.convert_precision_string(t.hls4ml())


class _Parts:
    """The nodes of one stage and how its tensors are named (IR layer -> hls4ml variable)."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.var_of: dict[str, str] = {}
        self.output_vars: dict[str, Any] = {}


def _known_nodes(graph: Graph) -> frozenset[str]:
    info = getattr(graph.source, "info", None)
    known = info.get("hls_nodes") if isinstance(info, dict) else None
    if known is None:
        known = frozenset(n for lyr in graph.layers for n in lyr.hls_nodes)
    return known


def _model_nodes(whole: Any, graph: Graph, model_layers: Sequence[Layer], where: str) -> dict[str, list[Any]]:
    """The nodes of ``whole`` (hls4ml's conversion) that belong to each model layer of the stage, in
    model order; nodes hls4ml adds for the build's io type (padding, stream clones) go with the layer
    they feed (a clone: the layer producing its input)."""
    nodes = list(whole.graph.values())
    owner: dict[str, str] = {}
    for lyr in model_layers:
        for n in lyr.hls_nodes:
            owner[n] = lyr.name
    names = {n.name for n in nodes}
    missing = sorted(n for n in owner if n not in names)
    if missing:
        raise BuildError(f"{where}: hls4ml's conversion of the model has no node(s) {missing}; with this plan's "
                         "settings hls4ml builds the model differently from the conversion it was planned on")
    from ..frontends.graph import wiring

    known = _known_nodes(graph)
    producer, consumers = wiring(whole)
    # extra nodes: forwards to the layer of their single consumer, backwards to their producer's
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.name in owner or n.name in known or n.class_name == "Input":
                continue
            cons = consumers[n.name]
            if len(cons) == 1 and cons[0].name in owner:
                owner[n.name] = owner[cons[0].name]
                changed = True
            elif len(cons) != 1:
                prods = [producer[i] for i in n.inputs if i in producer]
                if prods and prods[0].name in owner:
                    owner[n.name] = owner[prods[0].name]
                    changed = True
    out: dict[str, list[Any]] = {lyr.name: [] for lyr in model_layers}
    for n in nodes:
        if n.name in owner:
            out[owner[n.name]].append(n)
    return out


def _aux_model(stage_name: str, graph: Graph, synth: Sequence[Layer], settings: Mapping[str, LayerSettings],
               external: Mapping[str, tuple[tuple[int, ...], FixedType]], outputs: Sequence[str],
               build: BuildSettings, backend: str, backend_kwargs: Mapping[str, Any], out_dir: str,
               project_name: str, first_index: int) -> tuple[Any, dict[str, str]]:
    """hls4ml's model of the stage's own layers; ``external`` gives the tensors they read from outside
    (IR name -> shape, type), each an input of that model. Returns (model, IR layer -> node name of its
    output)."""
    from hls4ml.model.graph import ModelGraph
    from hls4ml.utils.config import create_config

    from ..frontends.source import one_line, quiet

    dicts: list[dict[str, Any]] = [input_dict(name, shape) for name, (shape, _) in external.items()]
    last: dict[str, str] = {name: name for name in external}
    shape_of: dict[str, tuple[int, ...]] = {name: shape for name, (shape, _) in external.items()}
    for lyr in synth:
        ins = [last[s] for s in lyr.inputs]
        made = layer_dicts(lyr, ins, [shape_of[s] for s in lyr.inputs])
        dicts.extend(made)
        last[lyr.name] = made[-1]["name"]
        shape_of[lyr.name] = lyr.output_shape
    cfg = create_config(output_dir=out_dir, project_name=project_name, backend=backend, **backend_kwargs)
    cfg["HLSConfig"] = with_tables({"Model": model_block(build),
                                    "LayerName": synthetic_config(synth, settings,
                                                                  {n: t for n, (_, t) in external.items()})})
    try:
        with quiet():
            model = ModelGraph.from_layer_list(cfg, dicts, list(external), [last[o] for o in outputs],
                                               initial_index=first_index)
    except Split4mlError:
        raise
    except Exception as exc:  # noqa: BLE001 - hls4ml raises bare Exceptions
        raise BuildError(f"{stage_name}: hls4ml cannot convert split4ml's layers "
                         f"{[lyr.name for lyr in synth]}: {one_line(exc)}") from exc
    return model, last


def stage_model(graph: Graph, settings: Mapping[str, LayerSettings], build: BuildSettings, input_type: FixedType,
                backend: str, backend_kwargs: Mapping[str, Any], out_dir: str, project_name: str,
                where: str) -> Any:
    """The hls4ml ``ModelGraph`` of one stage (``graph``: its sub-graph behind one Input layer), every
    node converted for ``backend`` with ``backend_kwargs`` (part, clock, io type). Not written.

    Raises:
        BuildError: hls4ml cannot convert the model or split4ml's layers, naming the stage.
    """
    from hls4ml.model.graph import ModelGraph

    from ..frontends.source import quiet

    inp = graph.input
    body = list(graph.body)
    source = graph.source
    model_layers = [lyr for lyr in body if lyr.hls_nodes and source is not None]
    model_names = {lyr.name for lyr in model_layers}
    # A wire-unpacking Reshape that feeds only model nodes is not built: in io_parallel an array is flat,
    # so a model node reads the unpacked slice directly (and hls4ml would drop a reshape at the end of
    # the synthetic layers' own model anyway).
    alias: dict[str, str] = {}
    if backend_kwargs.get("io_type", "io_parallel") == "io_parallel":
        for lyr in body:
            if lyr.kind == "Reshape" and lyr.name not in model_names and lyr.name not in graph.outputs:
                readers = [c for c in body if lyr.name in c.inputs]
                if readers and all(c.name in model_names for c in readers):
                    alias[lyr.name] = lyr.inputs[0]

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    if alias:
        model_layers = [lyr.with_(inputs=tuple(resolve(s) for s in lyr.inputs)) for lyr in model_layers]
    synth = [lyr for lyr in body if lyr.name not in model_names and lyr.name not in alias]
    if not body:
        raise BuildError(f"{where}: the stage has no layers")
    whole = None
    if model_layers:
        cfg = model_config(graph, settings, build)
        whole = source.convert(cfg, backend, out_dir, project_name, **backend_kwargs)
        per_layer = _model_nodes(whole, graph, model_layers, where)
    parts = _Parts()
    backend_obj = (whole.config.backend if whole is not None else None)
    index = max((n.index for n in whole.graph.values()), default=0) + 1 if whole is not None else 1

    # the synthetic layers: a model of their own, reading the stage input and model layers' tensors
    aux = None
    aux_last: dict[str, str] = {}
    if synth:
        external: dict[str, tuple[tuple[int, ...], FixedType]] = {}
        renamed = []
        for lyr in synth:
            ins = []
            for s in lyr.inputs:
                if s in model_names:
                    node = per_layer[s][-1]
                    t = _fixed_of(node.get_output_variable().type.precision, f"{where}: layer {s!r}")
                    external[_from_model(s)] = (graph.layer(s).output_shape, t)
                    ins.append(_from_model(s))
                else:
                    if s == inp.name:
                        external[s] = (inp.output_shape, input_type)
                    ins.append(s)
            renamed.append(lyr.with_(inputs=tuple(ins)))
        needed = [lyr.name for lyr in synth if lyr.name in graph.outputs
                  or any(lyr.name in m.inputs for m in model_layers)]
        aux, aux_last = _aux_model(where, graph, renamed, settings, external, needed, build,
                                   backend if whole is None else whole.config.backend.name, backend_kwargs,
                                   out_dir, project_name, index + 100)
        if backend_obj is None:
            backend_obj = aux.config.backend

    base = whole if whole is not None else aux
    cfg_obj = copy.copy(base.config)
    cfg_obj.config = copy.copy(base.config.config)
    sub = ModelGraph(cfg_obj, inputs=[], outputs=[])
    sub._applied_flows = base._applied_flows

    # the stage input
    in_var_name = inp.name
    lead_shape = inp.output_shape
    if aux is not None and inp.name in aux.graph:
        in_node = aux.graph[inp.name]
    else:
        first_nodes = []
        for lyr in model_layers:
            if inp.name in lyr.inputs:
                first_nodes.append(per_layer[lyr.name])
        in_node = None
        # io_stream packs a tensor's last axis into each stream word, so the input must have the shape
        # its first node reads in the whole model (an ONNX/PyTorch model's channels-first input before
        # hls4ml's Transpose), not the plan's channels-last one: the wire's values are the same, flat
        if whole is not None and backend_kwargs.get("io_type") == "io_stream" and first_nodes and first_nodes[0]:
            read = whole.output_vars.get(first_nodes[0][0].inputs[0]) if first_nodes[0][0].inputs else None
            shape = tuple(int(d) for d in read.shape) if read is not None else lead_shape
            if shape != tuple(lead_shape) and math.prod(shape) == math.prod(lead_shape):
                lead_shape = shape
        # a stage starting with an in-place reshape of its input reads the reshaped values directly
        if len(first_nodes) == 1 and len(first_nodes[0]) == 1 and _is_inplace_reshape(first_nodes[0][0]) \
                and len(model_layers) > 1 and sum(inp.name in m.inputs for m in model_layers) == 1:
            dropped = first_nodes[0][0]
            lead_shape = tuple(int(d) for d in dropped.get_output_variable().shape)
            owner = next(lyr for lyr in model_layers if per_layer[lyr.name] == [dropped])
            per_layer[owner.name] = []
            parts.var_of[owner.name] = in_var_name
        sub.index = index
        attrs = {"name": in_var_name, "class_name": "InputLayer", "data_format": "channels_last",
                 "input_shape": list(lead_shape)}
        with quiet():
            in_node = sub.make_node("InputLayer", in_var_name, attrs, [in_var_name], [in_var_name], initialize=True)
        sub.output_vars[in_var_name].type.precision = _wire_precision(first_nodes, input_type, backend_obj)
    parts.var_of.setdefault(inp.name, in_var_name)
    parts.nodes.append(in_node)

    # model layers: their nodes, first nodes re-wired to the stage's tensors
    if whole is not None:
        for lyr in model_layers:
            nodes = per_layer[lyr.name]
            if not nodes:
                continue
            own = {o for n in nodes for o in n.outputs}
            ext = [i for n in nodes for i in n.inputs if i not in own]
            remap: dict[str, str] = {}
            for pos, w_in in enumerate(dict.fromkeys(ext)):
                if pos >= len(lyr.inputs):
                    raise BuildError(f"{where}: layer {lyr.name!r} reads more tensors in hls4ml's model than in the plan")
                src = lyr.inputs[pos]
                if src in parts.var_of:
                    remap[w_in] = parts.var_of[src]
                elif src in model_names:
                    remap[w_in] = per_layer[src][-1].outputs[0] if per_layer[src] else parts.var_of[src]
                else:
                    remap[w_in] = aux_last[src] if src in aux_last else src
            for n in nodes:
                n.inputs = [remap.get(i, i) for i in n.inputs]
                n.model = sub
                for o in n.outputs:
                    sub.output_vars[o] = whole.output_vars[o]
                parts.nodes.append(n)
            parts.var_of[lyr.name] = nodes[-1].outputs[0]

    # split4ml's layers
    if aux is not None:
        for n in aux.graph.values():
            if n.class_name == "Input":
                continue
            n.inputs = [_aux_input(i, parts.var_of) for i in n.inputs]
            n.model = sub
            for o in n.outputs:
                sub.output_vars[o] = aux.output_vars[o]
            parts.nodes.append(n)
        for lyr in synth:
            parts.var_of[lyr.name] = aux.graph[aux_last[lyr.name]].outputs[0]
    sub.output_vars[in_var_name] = in_node.get_output_variable()
    in_node.model = sub

    out_layer = graph.outputs[0]
    out_var = parts.var_of[out_layer]
    ordered = _toposort(parts.nodes, in_var_name)
    for n in ordered:  # an in-place reshape aliases its input variable: point it at the stage's own
        out = n.get_output_variable() if n.class_name != "Input" else None
        if out is not None and hasattr(out, "input_var") and n.inputs and n.inputs[0] in sub.output_vars:
            new_in = sub.output_vars[n.inputs[0]]
            if out.input_var is not new_in:
                out.input_var = new_in
                out.type = new_in.type
    if backend_kwargs.get("io_type") == "io_stream" and len(ordered) > 1 \
            and all(_is_inplace_reshape(n) for n in ordered[1:]):
        names = [n.name for n in ordered[1:]]
        raise BuildError(f"{where}: the stage holds only {names}, which with io_stream is a re-labelling of its "
                         "input stream, not a computation hls4ml can build alone; put those layers on the stage "
                         "before or after it")
    # an in-place reshape at the end only re-labels the values a wire carries flat
    while len(ordered) > 2 and _is_inplace_reshape(ordered[-1]) and ordered[-1].outputs[0] == out_var:
        dropped = ordered.pop()
        out_var = dropped.inputs[0]
    sub.graph = OrderedDict((n.name, n) for n in ordered)
    sub.inputs = [in_var_name]
    sub.outputs = [out_var]
    for name, var in sub.output_vars.items():
        if name != out_var and getattr(var.type, "name", None) == "result_t":
            var.type.name = f"{name}_t"
    sub.output_vars[out_var].type.name = "result_t"
    # hls4ml's writers (the io_stream AXI wrapper) name the input type input_t
    sub.output_vars[in_var_name].type.name = "input_t"
    with quiet():
        for flow in _flows(sub.config.backend.name if hasattr(sub.config.backend, "name") else backend):
            sub.apply_flow(flow)
    iv = sub.output_vars[in_var_name]
    if getattr(iv, "pragma", None) == "reshape":
        iv.pragma = "partition"
    return sub


_FROM_MODEL = "__from_model"


def _from_model(layer: str) -> str:
    """The name of the input standing for model layer ``layer``'s tensor in the synthetic layers' model."""
    return f"{layer}{_FROM_MODEL}"


def _wire_precision(first_nodes: Sequence[Sequence[Any]], input_type: FixedType, backend_obj: Any) -> Any:
    """The precision of a stage's input: the very type hls4ml gives the tensor in the whole model (as
    ``MultiModelGraph`` does), when it is the wire's type; it keeps what a fixed-point spelling cannot
    say, such as a binary net's XNOR encoding (0 stands for -1). Else ``input_type`` itself."""
    from ..frontends.graph import hls_fixed

    for nodes in first_nodes:
        if nodes:
            prec = nodes[0].get_input_variable().type.precision
            t = hls_fixed(prec)
            if t is not None and (t.width, t.integer, t.signed) == (input_type.width, input_type.integer,
                                                                    input_type.signed):
                return copy.deepcopy(prec)
    return _precision(backend_obj, input_type)


def _aux_input(var: str, var_of: Mapping[str, str]) -> str:
    """A synthetic node's input: the input standing for a model layer's tensor becomes that tensor."""
    if var.endswith(_FROM_MODEL):
        return var_of[var[: -len(_FROM_MODEL)]]
    return var


def _toposort(nodes: Sequence[Any], input_var: str) -> list[Any]:
    """``nodes`` in an order where every node comes after the producers of its inputs (stable)."""
    produced: dict[str, Any] = {}
    for n in nodes:
        for o in n.outputs:
            produced[o] = n
    done: set[int] = set()
    out: list[Any] = []
    pending = list(nodes)
    while pending:
        progressed = False
        for n in list(pending):
            deps = [produced[i] for i in n.inputs if i in produced and produced[i] is not n]
            if all(id(d) in done for d in deps) or n.class_name == "Input":
                out.append(n)
                done.add(id(n))
                pending.remove(n)
                progressed = True
        if not progressed:
            raise BuildError(f"cannot order the stage's nodes {[n.name for n in pending]}: a cycle or a missing input")
    return out


def _fixed_of(precision: Any, where: str) -> FixedType:
    from ..frontends.graph import hls_fixed

    t = hls_fixed(precision)
    if t is None:
        raise BuildError(f"{where}: hls4ml's type {precision} is not a fixed-point type")
    return t


def as_accelerator(model: Any, board: str, part: str, clock_period: float | int, io_type: str, input_type: str,
                   output_type: str) -> None:
    """Make ``model`` (converted with the Vivado backend, whose passes VivadoAccelerator runs) a
    VivadoAccelerator project: the board's AXI stream wrapper with ``input_type``/``output_type``."""
    from hls4ml.backends import get_backend
    from hls4ml.utils.config import create_config

    va = create_config(output_dir=model.config.get_output_dir(), project_name=model.config.get_project_name(),
                       backend="VivadoAccelerator", board=board, part=part, clock_period=clock_period,
                       io_type=io_type, input_type=input_type, output_type=output_type)
    for key in ("Backend", "AcceleratorConfig", "Part", "ClockPeriod"):
        if key in va:
            model.config.config[key] = va[key]
    model.config.backend = get_backend("VivadoAccelerator")
