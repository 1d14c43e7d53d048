"""Apply a plan to a graph: one sub-graph per board, with an explicit type on every crossing edge.

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
from .settings import BuildSettings, LayerSettings


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
        return self.graph.layers[-1].output_shape

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
                 outputs=(prev,))


def chain_graph(name: str, input_name: str, layers: Sequence[Layer],
                input_shape: tuple[int, ...] | None = None) -> Graph:
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
    return Graph(name=name, layers=tuple(out), outputs=(prev.name,))


def chain_stage(index: int, board: Board, layers: Sequence[Layer], settings: Mapping[str, LayerSettings],
                input_type: FixedType, build: BuildSettings, *, model_name: str = "model", part: int | None = None,
                input_shape: tuple[int, ...] | None = None) -> Stage:
    """A :class:`Stage` running ``layers`` in a chain (e.g. one shard of a split layer, or a split's tail
    followed by the next layers), fed by a wire of ``input_type`` and ``input_shape``.

    ``settings`` must hold every layer of ``layers`` (extra entries are ignored); the output type is
    the last layer's result type.
    """
    tag = f"stage{index}" if part is None else f"stage{index}_{part}"
    graph = chain_graph(f"{model_name}_{tag}", f"{tag}_input", layers, input_shape)
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
    """The whole model as one stage, compiled with the same per-layer settings (the reference)."""
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
