"""Helpers of the report tests: small models and plans built in memory (no Keras, no compiler)."""

from __future__ import annotations

import math

import numpy as np

from split4ml.ir import Graph, Layer
from split4ml.plan.api import resolve_plan
from split4ml.plan.planfile import Plan, spec_from_dict


def mlp(widths: list[int], seed: int = 0, name: str = "mlp") -> Graph:
    """Input -> Dense relu ... -> Dense linear -> softmax, with seeded weights."""
    rng = np.random.default_rng(seed)
    layers = [Layer("x", "Input", (widths[0],), (widths[0],))]
    prev = "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True), start=1):
        lim = math.sqrt(6.0 / (a + b))
        layers.append(Layer(f"fc{i}", "Dense", (a,), (b,), inputs=(prev,),
                            activation=None if i == len(widths) - 1 else "relu",
                            params={"units": b, "use_bias": True},
                            weights={"kernel": rng.uniform(-lim, lim, size=(a, b)),
                                     "bias": rng.uniform(-0.05, 0.05, size=b)}))
        prev = f"fc{i}"
    layers.append(Layer("softmax", "Activation", (widths[-1],), (widths[-1],), inputs=(prev,), activation="softmax"))
    return Graph(name, tuple(layers), ("softmax",))


def plan_of(graph: Graph, stages: list, **top: object) -> Plan:
    """The plan file's plan; 256 samples per frame unless ``batch`` is given, so that the boards'
    200 us per-frame cost (0.8 us a sample) does not hide their work."""
    return resolve_plan(spec_from_dict({"model": "model.keras", "board": "pynq-z2", "batch": 256, **top,
                                        "stages": stages}), graph)
