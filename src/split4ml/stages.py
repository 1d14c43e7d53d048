"""Stages and pipelines: one sub-graph per board, with an explicit type on every crossing edge.

The words of the pipeline: a *stage* is one step of it, a *board* runs one stage (or one shard of a
split stage), a :class:`Pipeline` joins the boards. :mod:`split4ml.lower` lowers a plan's stages to
them; cutting one layer into shards is :mod:`split4ml.shard`.

A :class:`Stage` is everything a board needs to know to build or emulate its piece: the sub-graph
(whose first layer is an ``Input`` of the wire shape), the hls4ml settings of every layer, and the
fixed-point types of the wires in and out. The type of a stage's input is the result type of the
last layer of the stage before it (the first stage takes the model input type), so values cross
boards unchanged: this is what makes the chained C-simulation bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .boards import Board
from .errors import PlanError
from .fixed import FixedType
from .ir import Graph, Layer
from .settings import BuildSettings, LayerPrecision, LayerSettings


@dataclass(frozen=True, eq=False)
class Stage:
    """One board's piece of the model.

    Attributes:
        index: position in the pipeline (``-1`` for the whole model used as reference).
        board: the board that runs it.
        graph: sub-graph; ``graph.layers[0]`` is an ``Input`` layer of the incoming wire's shape.
        settings: hls4ml settings of every non-Input layer of ``graph``, by layer name.
        input_type: fixed-point type of the incoming wire.
        output_type: fixed-point type of the outgoing wire (result type of the last layer).
        build: io type and default precisions shared by the plan.
        part: shard number when the stage is one of several boards running the shards of a split
            layer in parallel (``None`` otherwise); it makes the name ``stage_<index>.<part>``.
    """

    index: int
    board: Board
    graph: Graph
    settings: Mapping[str, LayerSettings]
    input_type: FixedType
    output_type: FixedType
    build: BuildSettings
    part: int | None = None

    @property
    def name(self) -> str:
        if self.index < 0:
            return "whole"
        return f"stage_{self.index}" if self.part is None else f"stage_{self.index}.{self.part}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.input.output_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.graph.layer(self.graph.outputs[0]).output_shape

    @property
    def input_bytes_per_sample(self) -> int:
        return int(np.prod(self.input_shape)) * self.input_type.storage_bytes

    @property
    def output_bytes_per_sample(self) -> int:
        return int(np.prod(self.output_shape)) * self.output_type.storage_bytes


def input_layer_name(index: int) -> str:
    """Name of the Input layer of stage ``index`` (hls4ml reserves the name ``input``)."""
    return "whole_input" if index < 0 else f"stage{index}_input"


def subgraph(graph: Graph, layer_names: tuple[str, ...] | list[str], index: int) -> Graph:
    """The contiguous run ``layer_names`` of a chain graph, behind a fresh Input layer."""
    if not layer_names:
        raise PlanError(f"stage {index} has no layers")
    body = [graph.layer(n) for n in layer_names]
    first = body[0]
    inp = Layer(name=input_layer_name(index), kind="Input", input_shape=first.input_shape,
                output_shape=first.input_shape)
    layers: list[Layer] = [inp]
    prev = inp.name
    for lyr in body:
        layers.append(lyr.with_(inputs=(prev,)))
        prev = lyr.name
    return Graph(name=f"{graph.name}_{'whole' if index < 0 else f'stage{index}'}", layers=tuple(layers),
                 outputs=(prev,), source=graph.source)


def chain_graph(name: str, input_name: str, layers: Sequence[Layer],
                input_shape: tuple[int, ...] | None = None, source: object = None) -> Graph:
    """``layers`` (from any graphs, e.g. a split's tail followed by ordinary layers) as one chain behind
    a fresh Input layer called ``input_name`` of ``input_shape`` (default: the first layer's input shape).

    Each layer's ``inputs`` is rewired to the layer before it; shapes must chain.
    """
    if not layers:
        raise PlanError(f"{name}: a stage needs at least one layer")
    shape = tuple(input_shape) if input_shape is not None else layers[0].input_shape
    inp = Layer(name=input_name, kind="Input", input_shape=shape, output_shape=shape)
    out: list[Layer] = [inp]
    prev = inp
    for lyr in layers:
        if lyr.input_shape != prev.output_shape:
            raise PlanError(f"{name}: layer {lyr.name!r} takes shape {lyr.input_shape} but {prev.name!r} gives "
                            f"{prev.output_shape}; the layers do not chain")
        nxt = lyr.with_(inputs=(prev.name,))
        out.append(nxt)
        prev = nxt
    return Graph(name=name, layers=tuple(out), outputs=(prev.name,), source=source)


def chain_stage(index: int, board: Board, layers: Sequence[Layer], settings: Mapping[str, LayerSettings],
                input_type: FixedType, build: BuildSettings, *, model_name: str = "model", part: int | None = None,
                input_shape: tuple[int, ...] | None = None, source: object = None) -> Stage:
    """A :class:`Stage` running ``layers`` in a chain (e.g. one shard of a split layer, or a split's tail
    followed by the next layers), fed by a wire of ``input_type`` and ``input_shape``.

    ``settings`` must hold every layer of ``layers`` (extra entries are ignored); the output type is
    the last layer's result type.
    """
    tag = f"stage{index}" if part is None else f"stage{index}_{part}"
    graph = chain_graph(f"{model_name}_{tag}", f"{tag}_input", layers, input_shape, source=source)
    missing = [lyr.name for lyr in layers if lyr.name not in settings]
    if missing:
        raise PlanError(f"stage {index}{'' if part is None else f' part {part}'}: no settings for layer(s) {missing}")
    st_settings = {lyr.name: settings[lyr.name] for lyr in layers}
    return Stage(index=index, board=board, graph=graph, settings=st_settings, input_type=input_type,
                 output_type=result_type(settings, layers[-1].name), build=build, part=part)


def result_type(settings: Mapping[str, LayerSettings], layer_name: str) -> FixedType:
    return settings[layer_name].precision.result


def make_stages(graph: Graph, stage_layers: list[tuple[str, ...]], boards: list[Board],
                settings: Mapping[str, LayerSettings], build: BuildSettings) -> list[Stage]:
    """Cut ``graph`` into stages given each stage's layer names and board."""
    if len(stage_layers) != len(boards):
        raise PlanError(f"{len(stage_layers)} stages but {len(boards)} boards")
    stages: list[Stage] = []
    in_type = build.input_precision
    for i, (names, board) in enumerate(zip(stage_layers, boards, strict=True)):
        sub = subgraph(graph, names, i)
        st_settings = {n: settings[n] for n in names}
        out_type = result_type(settings, names[-1])
        stages.append(Stage(index=i, board=board, graph=sub, settings=st_settings, input_type=in_type,
                            output_type=out_type, build=build))
        in_type = out_type
    return stages


def whole_model_stage(graph: Graph, board: Board, settings: Mapping[str, LayerSettings],
                      build: BuildSettings) -> Stage:
    """The whole model as one stage, compiled with the same per-layer settings (the reference).

    A model with skip connections (not a chain) gives :func:`whole_dag_stage`.
    """
    if not graph.is_chain:
        return whole_dag_stage(graph, board, settings, build)
    names = tuple(lyr.name for lyr in graph.body)
    sub = subgraph(graph, names, -1)
    return Stage(index=-1, board=board, graph=sub, settings={n: settings[n] for n in names},
                 input_type=build.input_precision, output_type=result_type(settings, names[-1]), build=build)


# ----------------------------------------------------------------------------------- topology
@dataclass(frozen=True)
class Source:
    """Where part of a node's input comes from: a slice of another node's output.

    ``node`` is the producer's id (``None`` = the pipeline input). ``start``/``stop`` slice the
    producer's **last axis** (features of a vector, channels of a feature map); ``stop=None`` means
    to the end. A node's input is the concatenation, along the last axis and in order, of its
    sources: that expresses a plain chain (one whole source), the fan-out of an input split (each
    shard takes a slice), and the fan-in of a neuron split (the consumer concatenates the shards).
    Concatenating and slicing raw fixed-point values is exact, so the host or a board's processor
    may do it.
    """

    node: str | None
    start: int = 0
    stop: int | None = None

    def take(self, values: np.ndarray) -> np.ndarray:
        return values[..., self.start:self.stop]


@dataclass(frozen=True, eq=False)
class Node:
    """One board of a pipeline: its :class:`Stage` and where its input comes from."""

    id: str
    stage: Stage
    sources: tuple[Source, ...]


@dataclass(frozen=True, eq=False)
class Pipeline:
    """The boards of a plan as a DAG: nodes in topological order, and the pipeline output.

    ``step`` groups nodes that run in parallel (the shards of one split layer share a step); a
    plain chain has one node per step.
    """

    nodes: tuple[Node, ...]
    outputs: tuple[Source, ...]
    steps: tuple[tuple[str, ...], ...] = ()

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise PlanError(f"pipeline has no node {node_id!r}; nodes: {[n.id for n in self.nodes]}")

    def consumers(self, node_id: str | None) -> list[Node]:
        """Nodes that read (part of) ``node_id``'s output (``None``: the pipeline input)."""
        return [n for n in self.nodes if any(s.node == node_id for s in n.sources)]

    @staticmethod
    def gather(sources: tuple[Source, ...], values: Mapping[str | None, np.ndarray]) -> np.ndarray:
        """A node's input from its producers' outputs (``values[None]`` is the pipeline input)."""
        parts = [s.take(values[s.node]) for s in sources]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def run(self, x: np.ndarray, predict: Mapping[str, Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
        """Evaluate the DAG on a batch: ``predict[node_id]`` maps a node's input to its output."""
        values: dict[str | None, np.ndarray] = {None: x}
        for n in self.nodes:
            values[n.id] = predict[n.id](self.gather(n.sources, values))
        return self.gather(self.outputs, values)


def linear_pipeline(stages: list[Stage]) -> Pipeline:
    """The pipeline of a plain chain of stages: each node reads all of the previous one."""
    nodes = []
    prev: str | None = None
    for st in stages:
        nodes.append(Node(id=st.name, stage=st, sources=(Source(prev),)))
        prev = st.name
    return Pipeline(nodes=tuple(nodes), outputs=(Source(prev),), steps=tuple((n.id,) for n in nodes))


# ----------------------------------------------------------------------------------- DAG stages
# A DAG (a model with skip connections) is cut into stages by listing each stage's layers; every
# edge must go from a stage to the same or a later stage. A tensor produced on stage a (the model
# input: on the host, before stage 0) and last read on stage b crosses every link a..b-1: the
# boards between forward it. Each board receives ONE wire and sends ONE wire (what the PYNQ AXI
# stream wrapper of hls4ml accepts): when several tensors cross a link they are flattened and
# concatenated in graph order ("packed"); the receiving board's hls4ml project unpacks them with
# Cropping1D + Reshape (no arithmetic) and packs what it sends with Reshape + Concatenate. A
# forwarded tensor goes from the unpacking to the packing inside the firmware, so the chain of
# boards is a linear pipeline and every value crosses unchanged.


def dag_stage_of(graph: Graph, stage_layers: Sequence[Sequence[str]]) -> dict[str, int]:
    """The stage of every body layer; checks that ``stage_layers`` is a valid DAG assignment.

    Valid: every body layer is in exactly one stage, no stage is empty, every edge goes from a stage
    to the same or a later one, and an ``Activation`` is on the board of its producer.

    Raises:
        PlanError: naming the stage (``stages[i]``) and layer, and how to fix it.
    """
    body = [lyr.name for lyr in graph.body]
    stage_of: dict[str, int] = {}
    for i, names in enumerate(stage_layers):
        if not names:
            raise PlanError(f"stages[{i}]: a stage of a model with skip connections needs at least one layer")
        for j, n in enumerate(names):
            if n not in graph or graph.layer(n).kind == "Input":
                raise PlanError(f"stages[{i}].layers[{j}]: layer {n!r} is not in the model; its layers are {body}")
            if n in stage_of:
                raise PlanError(f"stages[{i}].layers[{j}]: layer {n!r} is listed twice (also in "
                                f"stages[{stage_of[n]}]); each layer runs on one board")
            stage_of[n] = i
    missing = [n for n in body if n not in stage_of]
    if missing:
        raise PlanError(f"stages: layers {missing} are on no board; add each to a stage")
    for lyr in graph.body:
        for src in lyr.inputs:
            if src in stage_of and stage_of[src] > stage_of[lyr.name]:
                raise PlanError(
                    f"stages[{stage_of[lyr.name]}]: layer {lyr.name!r} reads {src!r}, which runs later on "
                    f"stages[{stage_of[src]}]; every layer must be on the same board as its producers or after "
                    "them (move one of the two)")
        if lyr.is_attached and lyr.inputs[0] in stage_of and stage_of[lyr.inputs[0]] != stage_of[lyr.name]:
            what = "activation" if lyr.is_activation else f"{lyr.kind} layer"
            raise PlanError(f"stages[{stage_of[lyr.name]}]: {what} {lyr.name!r} must stay on the same board as "
                            f"{lyr.inputs[0]!r}, which produces its input; move it to stages[{stage_of[lyr.inputs[0]]}]")
    return stage_of


def crossing_tensors(graph: Graph, stage_layers: Sequence[Sequence[str]]) -> list[list[str]]:
    """The tensors crossing each link: entry ``k`` lists what goes from stage ``k`` to stage ``k + 1``.

    A tensor is named by the layer producing it (the model input by the Input layer's name). It
    crosses links ``a..b-1`` when produced on stage ``a`` (the model input: before stage 0, so it
    enters stage 0 and is forwarded) and last read on stage ``b``; a model output is read by the last
    stage's sender, so it is forwarded to the last stage. Each list is in graph order (the packing
    order of the wire). There are ``len(stage_layers) - 1`` links.
    """
    stage_of = dag_stage_of(graph, stage_layers)
    n = len(stage_layers)
    last = n - 1
    produced = {graph.input.name: 0, **stage_of}
    links: list[list[str]] = [[] for _ in range(max(0, n - 1))]
    for lyr in graph.layers:
        readers = [stage_of[c.name] for c in graph.consumers(lyr.name) if c.name in stage_of]
        if lyr.name in graph.outputs:
            readers.append(last)
        if not readers:
            continue
        a, b = produced[lyr.name], max(readers)
        for k in range(a, b):
            links[k].append(lyr.name)
    return links


def stage_tensors(graph: Graph, stage_layers: Sequence[Sequence[str]]) -> list[tuple[list[str], list[str]]]:
    """``(received, sent)`` tensor names of every stage, in packing order: stage 0 receives the model
    input, the last stage sends the model output(s), and stage ``k`` sends what crosses link ``k``."""
    links = crossing_tensors(graph, stage_layers)
    ins = [[graph.input.name], *links]
    outs = [*links, list(graph.outputs)]
    return list(zip(ins, outs, strict=True))


def tensor_type(graph: Graph, name: str, settings: Mapping[str, LayerSettings], build: BuildSettings) -> FixedType:
    """The fixed-point type of tensor ``name`` on a wire: its producer's result type (the model input's:
    ``build.input_precision``)."""
    if name == graph.input.name:
        return build.input_precision
    return result_type(settings, name)


def link_wire(graph: Graph, tensors: Sequence[str], settings: Mapping[str, LayerSettings], build: BuildSettings,
              where: str) -> tuple[FixedType, tuple[int, ...]]:
    """The type and shape of the wire carrying ``tensors``: the tensor's own when there is one; else the
    flat concatenation ``(n_total,)`` of them all, which must share one type.

    Raises:
        PlanError: the tensors have different types (``where`` names the link).
    """
    if not tensors:
        raise PlanError(f"{where}: nothing crosses it; every board must pass something on")
    types = {t: tensor_type(graph, t, settings, build) for t in tensors}
    if len(tensors) == 1:
        return types[tensors[0]], graph.layer(tensors[0]).output_shape
    if len(set(types.values())) != 1:
        shown = ", ".join(f"{t}: {ty}" for t, ty in types.items())
        raise PlanError(f"{where}: tensors {list(tensors)} cross it packed in one wire but have different types "
                        f"({shown}); give their layers the same result precision in the plan")
    return types[tensors[0]], (sum(graph.layer(t).n_out for t in tensors),)


def link_bytes(graph: Graph, stage_layers: Sequence[Sequence[str]], settings: Mapping[str, LayerSettings],
               build: BuildSettings) -> list[int]:
    """Bytes per sample on each link ``k`` (stage ``k`` -> ``k + 1``): the sum over its
    :func:`crossing_tensors` of ``elements * storage_bytes`` of the tensor's type (the producer's result
    type, as :class:`~split4ml.plan.planfile.Wire` prices a wire)."""
    return [sum(graph.layer(t).n_out * tensor_type(graph, t, settings, build).storage_bytes for t in link)
            for link in crossing_tensors(graph, stage_layers)]


def _fresh(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def dag_stage(index: int, board: Board, graph: Graph, layer_names: Sequence[str], received: Sequence[str],
              sent: Sequence[str], settings: Mapping[str, LayerSettings], build: BuildSettings) -> Stage:
    """One board of a DAG plan: ``layer_names`` (in any order; run in graph order) behind one packed
    input wire of the ``received`` tensors, sending one packed wire of the ``sent`` tensors.

    The sub-graph has one Input (``stage<index>_input``; ``whole_input`` for ``index < 0``); when
    several tensors arrive it is ``(n_total, 1)`` and each tensor is cut out by a ``Slice`` and given
    back its shape by a ``Reshape``. Several tensors to send are flattened (``Reshape``) and joined by
    ``Concatenate`` layers (two at a time). These wire layers get the wire's type as result type, so
    they move values without changing them. Settings of the model layers come from ``settings``.
    """
    where = f"stage {index}" if index >= 0 else "the whole model"
    wanted = set(layer_names)
    names = [lyr.name for lyr in graph.body if lyr.name in wanted]
    if len(names) != len(wanted):
        unknown = sorted(wanted - set(names))
        raise PlanError(f"{where}: layer(s) {unknown} are not in the model")
    if not names:
        raise PlanError(f"{where}: a stage needs at least one layer")
    missing = [n for n in names if n not in settings]
    if missing:
        raise PlanError(f"{where}: no settings for layer(s) {missing}")
    in_type, in_shape = link_wire(graph, received, settings, build, f"the wire into {where}")
    out_type, _ = link_wire(graph, sent, settings, build, f"the wire out of {where}")
    taken = {lyr.name for lyr in graph.layers}
    in_name = _fresh(input_layer_name(index), taken)
    tag = "whole" if index < 0 else f"stage{index}"
    wire_in = LayerSettings(precision=LayerPrecision(result=in_type))
    wire_out = LayerSettings(precision=LayerPrecision(result=out_type))
    st_settings: dict[str, LayerSettings] = {}
    layers: list[Layer] = []
    local: dict[str, str] = {}  # tensor name -> name of the layer holding it in this sub-graph
    if len(received) == 1:
        layers.append(Layer(name=in_name, kind="Input", input_shape=in_shape, output_shape=in_shape))
        local[received[0]] = in_name
    else:
        packed = (in_shape[0], 1)
        layers.append(Layer(name=in_name, kind="Input", input_shape=packed, output_shape=packed))
        off = 0
        for t in received:
            shape = graph.layer(t).output_shape
            size = graph.layer(t).n_out
            cut = _fresh(f"{tag}_cut_{t}", taken)
            layers.append(Layer(name=cut, kind="Slice", input_shape=packed, output_shape=(size, 1), inputs=(in_name,),
                                params={"start": off, "stop": off + size}))
            shaped = _fresh(f"{tag}_in_{t}", taken)
            layers.append(Layer(name=shaped, kind="Reshape", input_shape=(size, 1), output_shape=shape,
                                inputs=(cut,), params={"target_shape": shape}))
            st_settings[cut] = st_settings[shaped] = wire_in
            local[t] = shaped
            off += size
    for n in names:
        lyr = graph.layer(n)
        srcs = []
        for src in lyr.inputs:
            if src not in local:
                raise PlanError(f"{where}: layer {n!r} reads {src!r}, which is neither on this board nor received "
                                f"by it (received: {list(received)})")
            srcs.append(local[src])
        layers.append(lyr.with_(inputs=tuple(srcs)))
        st_settings[n] = settings[n]
        local[n] = n
    for t in sent:
        if t not in local:
            raise PlanError(f"{where}: it must send {t!r}, which it neither computes nor receives")
    if len(sent) == 1:
        if local[sent[0]] == in_name:
            raise PlanError(f"{where}: it only forwards its input {sent[0]!r}; give it a layer that feeds the next board")
        outputs: tuple[str, ...] = (local[sent[0]],)
    else:
        flat: list[str] = []
        for t in sent:
            lyr = next(x for x in layers if x.name == local[t])
            if len(lyr.output_shape) == 1:
                flat.append(lyr.name)
                continue
            r = _fresh(f"{tag}_out_{t}", taken)
            layers.append(Layer(name=r, kind="Reshape", input_shape=lyr.output_shape, output_shape=(lyr.n_out,),
                                inputs=(lyr.name,), params={"target_shape": (lyr.n_out,)}))
            st_settings[r] = wire_out
            flat.append(r)
        width = {x.name: x.n_out for x in layers}
        acc = flat[0]
        for k, nxt in enumerate(flat[1:], start=1):
            c = _fresh(f"{tag}_pack{k}", taken)
            n_out = width[acc] + width[nxt]
            layers.append(Layer(name=c, kind="Concatenate", input_shape=(width[acc],), output_shape=(n_out,),
                                inputs=(acc, nxt), input_shapes=((width[acc],), (width[nxt],)), params={"axis": -1}))
            st_settings[c] = wire_out
            width[c] = n_out
            acc = c
        outputs = (acc,)
    sub = Graph(name=f"{graph.name}_{tag}", layers=tuple(layers), outputs=outputs, source=graph.source)
    sub.check_dag()
    return Stage(index=index, board=board, graph=sub, settings=st_settings, input_type=in_type, output_type=out_type,
                 build=build)


def check_dag_io_type(graph: Graph, build: BuildSettings) -> None:
    """Raise :class:`PlanError` unless ``build.io_type`` is ``io_parallel``: the packed wires of a model
    with skip connections are unpacked with hls4ml layers that split4ml has checked bit-exact in
    io_parallel only (with io_stream, hls4ml 1.3's stream Add rejects the unpacked tensors)."""
    if build.io_type != "io_parallel":
        raise PlanError(f"hls.io_type: model {graph.name!r} has skip connections, which split4ml builds with "
                        f"io_parallel only, not {build.io_type}; set io_type: io_parallel")


def dag_stages(graph: Graph, stage_layers: Sequence[Sequence[str]], boards: Sequence[Board],
               settings: Mapping[str, LayerSettings], build: BuildSettings) -> list[Stage]:
    """Cut a DAG ``graph`` into one packed :class:`Stage` per board (see :func:`dag_stage`).

    Stage ``k`` receives what crosses link ``k - 1`` (stage 0: the model input) and sends what crosses
    link ``k`` (the last stage: the model output), so :func:`linear_pipeline` chains them.

    Raises:
        PlanError: an invalid assignment (:func:`dag_stage_of`), or tensors of different types packed
            on one link.
    """
    if len(stage_layers) != len(boards):
        raise PlanError(f"{len(stage_layers)} stages but {len(boards)} boards")
    check_dag_io_type(graph, build)
    io = stage_tensors(graph, stage_layers)
    return [dag_stage(i, b, graph, names, rec, sent, settings, build)
            for i, (names, b, (rec, sent)) in enumerate(zip(stage_layers, boards, io, strict=True))]


def whole_dag_stage(graph: Graph, board: Board, settings: Mapping[str, LayerSettings], build: BuildSettings) -> Stage:
    """The whole DAG model as one stage with the same per-layer settings (the bit-exactness reference)."""
    return dag_stage(-1, board, graph, [lyr.name for lyr in graph.body], [graph.input.name], list(graph.outputs),
                     settings, build)
