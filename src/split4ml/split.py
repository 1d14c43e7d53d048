"""Apply a plan to a graph: one sub-graph per board, with an explicit type on every crossing edge.

A :class:`Stage` is everything a board needs to know to build or emulate its piece: the sub-graph
(whose first layer is an ``Input`` of the wire shape), the hls4ml settings of every layer, and the
fixed-point types of the wires in and out. The type of a stage's input is the result type of the
last layer of the stage before it (the first stage takes the model input type), so values cross
boards unchanged: this is what makes the chained C-simulation bit-exact.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """

    index: int
    board: Board
    graph: Graph
    settings: Mapping[str, LayerSettings]
    input_type: FixedType
    output_type: FixedType
    build: BuildSettings

    @property
    def name(self) -> str:
        return "whole" if self.index < 0 else f"stage_{self.index}"

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
