"""Builders shared by the runtime tests: small stages without Keras, neuron shards of a Dense layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from split4ml.boards import get_board
from split4ml.fixed import FixedType
from split4ml.ir import Graph, Layer
from split4ml.settings import BuildSettings, LayerSettings
from split4ml.stages import Stage, input_layer_name

RESULT = FixedType(16, 6, rounding="RND_CONV", saturation="SAT")


def dense_stage(index: int, sizes: Sequence[int], seed: int = 0, activation: str = "relu",
                input_type: FixedType = RESULT) -> Stage:
    """A stage of Dense layers ``sizes[0] -> sizes[1] -> ...`` built directly as IR (no Keras)."""
    rng = np.random.default_rng(seed)
    inp = Layer(name=input_layer_name(index), kind="Input", input_shape=(sizes[0],), output_shape=(sizes[0],))
    layers = [inp]
    prev = inp.name
    for k, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        name = f"d{index}_{k}"
        layers.append(Layer(name=name, kind="Dense", input_shape=(a,), output_shape=(b,), inputs=(prev,),
                            activation=activation, params={"units": b, "use_bias": True},
                            weights={"kernel": rng.uniform(-0.6, 0.6, (a, b)), "bias": rng.uniform(-0.1, 0.1, b)}))
        prev = name
    graph = Graph(name=f"toy{index}", layers=tuple(layers), outputs=(prev,))
    settings = {lyr.name: LayerSettings() for lyr in layers[1:]}
    return Stage(index=index, board=get_board("pynq-z2"), graph=graph, settings=settings, input_type=input_type,
                 output_type=RESULT, build=BuildSettings())


def neuron_shards(stage_graph_layer: Layer, parts: Sequence[tuple[int, int]]) -> list[Layer]:
    """Copies of a Dense layer keeping only output neurons ``start:stop`` (kernel and bias columns)."""
    out = []
    for k, (a, b) in enumerate(parts):
        w = stage_graph_layer.weights
        out.append(stage_graph_layer.with_(
            name=f"{stage_graph_layer.name}_n{k}", output_shape=(b - a,),
            params={**stage_graph_layer.params, "units": b - a},
            weights={"kernel": np.array(w["kernel"])[:, a:b], "bias": np.array(w["bias"])[a:b]}))
    return out
