"""The Graph: split4ml's one shared vocabulary, independent of Keras, torch and hls4ml.

A :class:`Graph` is a topologically ordered tuple of :class:`Layer` values. Shapes exclude the
batch dimension and are channels-last (as hls4ml uses them). Weights are plain numpy arrays in
Keras layout (Dense kernel ``(n_in, n_out)``, Conv kernel ``(*kernel, c_in, c_out)``).

Layer kinds and their ``params``:

=====================  ==============================================================
kind                   params
=====================  ==============================================================
``Input``              ``{}``
``Dense``              ``units``, ``use_bias``
``Conv1D``/``Conv2D``  ``filters``, ``kernel_size`` (tuple), ``strides`` (tuple), ``padding``
                       (``valid``/``same``), ``use_bias``
``MaxPooling1D/2D``,   ``pool_size`` (tuple), ``strides`` (tuple), ``padding``
``AveragePooling1D/2D``
``Flatten``            ``{}``
``BatchNormalization`` ``epsilon`` (weights ``gamma``, ``beta``, ``moving_mean``,
                       ``moving_variance``)
``Activation``         ``{}``; the function is in :attr:`Layer.activation`
=====================  ==============================================================

Dense and Conv layers may carry a fused activation in :attr:`Layer.activation` (Keras
``Dense(..., activation="relu")``). Activation functions: ``linear``, ``relu``, ``sigmoid``, ``tanh``,
``softmax``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import Split4mlError

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
COMPUTE_KINDS = ("Dense", "Conv1D", "Conv2D")
POOL_KINDS = ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
LAYER_KINDS = ("Input", *COMPUTE_KINDS, *POOL_KINDS, "Flatten", "BatchNormalization", "Activation")


def _frozen(m: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of a :class:`Graph`.

    Attributes:
        name: unique name (used in plans, hls4ml configs and error messages).
        kind: one of :data:`LAYER_KINDS`.
        input_shape: shape of the input tensor, without batch, channels-last.
        output_shape: shape of the output tensor, without batch, channels-last.
        inputs: names of the producer layers (empty for ``Input``).
        activation: fused activation (Dense/Conv) or the function of an ``Activation`` layer.
        params: kind-specific parameters (see module docstring).
        weights: name -> numpy array (``kernel``, ``bias``, BatchNorm statistics).
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    inputs: tuple[str, ...] = ()
    activation: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))
        object.__setattr__(self, "weights", _frozen(self.weights))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "output_shape", tuple(int(d) for d in self.output_shape))
        object.__setattr__(self, "inputs", tuple(self.inputs))

    @property
    def is_activation(self) -> bool:
        """True for a standalone activation layer, which must stay with its producer."""
        return self.kind == "Activation"

    @property
    def n_params(self) -> int:
        return int(sum(int(np.asarray(w).size) for w in self.weights.values()))

    @property
    def n_in(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.output_shape))

    def with_(self, **changes: Any) -> Layer:
        """A copy with some fields changed (frozen dataclass helper)."""
        return replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Graph:
    """A model as a topologically ordered tuple of layers.

    ``layers[0]`` is the single ``Input`` layer for the chains that split4ml currently plans.
    """

    name: str
    layers: tuple[Layer, ...]
    outputs: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        names = [lyr.name for lyr in self.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise Split4mlError(f"graph {self.name!r} has duplicate layer names {sorted(dup)}; rename them")

    # ------------------------------------------------------------------ lookup
    def layer(self, name: str) -> Layer:
        for lyr in self.layers:
            if lyr.name == name:
                return lyr
        raise Split4mlError(
            f"layer {name!r} is not in model {self.name!r}; its layers are {[lyr.name for lyr in self.layers]}"
        )

    def __contains__(self, name: object) -> bool:
        return any(lyr.name == name for lyr in self.layers)

    @property
    def input(self) -> Layer:
        return self.layers[0]

    @property
    def body(self) -> tuple[Layer, ...]:
        """All layers but the Input layer, in order."""
        return tuple(lyr for lyr in self.layers if lyr.kind != "Input")

    @property
    def n_params(self) -> int:
        return sum(lyr.n_params for lyr in self.layers)

    @property
    def is_chain(self) -> bool:
        """True when every layer consumes exactly the layer before it."""
        for prev, cur in zip(self.layers, self.layers[1:], strict=False):
            if cur.inputs != (prev.name,):
                return False
        return len(self.outputs) == 1 and self.outputs[0] == self.layers[-1].name

    def units(self) -> list[tuple[Layer, ...]]:
        """Group the body into indivisible units: a layer plus the activation layers after it.

        A pipeline may be cut only between units, so an activation always stays on the board of
        the layer that produces its input.
        """
        groups: list[list[Layer]] = []
        for lyr in self.body:
            if lyr.is_activation and groups:
                groups[-1].append(lyr)
            else:
                groups.append([lyr])
        return [tuple(g) for g in groups]
