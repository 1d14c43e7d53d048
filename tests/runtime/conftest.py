"""Fixtures of the runtime tests: the MLP pipeline of tests/test_verify.py and its 2-way neuron split."""

from __future__ import annotations

import dataclasses

import pytest
from runtime_helpers import neuron_shards

from split4ml.boards import get_board
from split4ml.ir import Graph, Layer
from split4ml.runtime.transport import PortReservation
from split4ml.settings import BuildSettings, LayerSettings
from split4ml.stages import Node, Pipeline, Source, Stage, input_layer_name, linear_pipeline, make_stages


@pytest.fixture(scope="session")
def mlp() -> tuple[Pipeline, list[Stage], Stage]:
    """32-64-64-32-32-16-16-10 + softmax cut into three boards (the same stages as tests/test_verify.py,
    so the session's C-simulation cache is shared)."""
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.networks import deep_mlp
    from split4ml.stages import whole_model_stage

    graph = graph_from_keras(deep_mlp(widths=(64, 64, 32, 32, 16, 16), n_in=32, n_out=10, seed=1))
    names = [lyr.name for lyr in graph.body]
    settings = {n: LayerSettings() for n in names}
    b = get_board("pynq-z2")
    build = BuildSettings()
    stages = make_stages(graph, [tuple(names[:3]), tuple(names[3:6]), tuple(names[6:])], [b, b, b], settings, build)
    return linear_pipeline(stages), stages, whole_model_stage(graph, b, settings, build)


@pytest.fixture(scope="session")
def split_pipeline(mlp) -> tuple[Pipeline, Stage]:
    """The MLP with fc4 split 2-way by output neurons: stage_0 (fc1-fc3) feeds two shards (fc4 neurons
    0-15 and 16-31, each taking stage_0's whole output), whose outputs stage_3 (fc5..softmax) concatenates."""
    _, stages, whole = mlp
    s0, s1, s2 = stages
    fc4 = s1.graph.layer("fc4")
    shards = []
    for k, lyr in enumerate(neuron_shards(fc4, [(0, 16), (16, 32)])):
        idx = 10 + k
        inp = Layer(name=input_layer_name(idx), kind="Input", input_shape=fc4.input_shape, output_shape=fc4.input_shape)
        g = Graph(name=f"shard{k}", layers=(inp, lyr.with_(inputs=(inp.name,))), outputs=(lyr.name,))
        shards.append(dataclasses.replace(s1, index=idx, graph=g, settings={lyr.name: s1.settings["fc4"]},
                                          output_type=s1.settings["fc4"].precision.result))
    # consumer: fc5, fc6 (rest of stage 1) then stage 2's layers, behind an Input of fc4's width
    rest = [lyr for lyr in s1.graph.body if lyr.name != "fc4"] + list(s2.graph.body)
    inp = Layer(name=input_layer_name(3), kind="Input", input_shape=fc4.output_shape, output_shape=fc4.output_shape)
    layers, prev = [inp], inp.name
    for lyr in rest:
        layers.append(lyr.with_(inputs=(prev,)))
        prev = lyr.name
    consumer = dataclasses.replace(s2, index=3, graph=Graph("consumer", tuple(layers), (prev,)),
                                   settings={lyr.name: {**s1.settings, **s2.settings}[lyr.name] for lyr in rest},
                                   input_type=shards[0].output_type)
    nodes = (Node("stage_0", s0, (Source(None),)), Node("shard_a", shards[0], (Source("stage_0"),)),
             Node("shard_b", shards[1], (Source("stage_0"),)),
             Node("stage_3", consumer, (Source("shard_a"), Source("shard_b"))))
    return Pipeline(nodes=nodes, outputs=(Source("stage_3"),),
                    steps=(("stage_0",), ("shard_a", "shard_b"), ("stage_3",))), whole


@pytest.fixture
def ports():
    """``ports(n)``: n TCP ports on 127.0.0.1, held for this test (see PortReservation)."""
    held: list[PortReservation] = []

    def reserve(n: int) -> list[int]:
        held.append(PortReservation(n))
        return held[-1].ports

    yield reserve
    for r in held:
        r.release()
