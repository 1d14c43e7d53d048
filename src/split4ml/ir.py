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
``Add``                ``{}``; two inputs of one shape, summed element-wise
``Concatenate``        ``axis`` (``-1``: only the last axis); inputs agree on all other axes
``Slice``              ``start``, ``stop``: rows ``start:stop`` of an ``(n, 1)`` tensor (internal: unpacks
                       a board's packed input; hls4ml ``Cropping1D``)
``Reshape``            ``target_shape`` (packs/unpacks board wires, or a model's reshape; no computation)
``Quantizer``          ``{}``: an element-wise requantisation (HGQ's ``FixedPointQuantizer``)
``ApplyAlpha``         ``{}``: an element-wise scale and bias (weights ``scale``, ``bias``; QKeras/QONNX
                       scales and ONNX bias adds)
``Op``                 ``hls_class`` (the hls4ml layer class), ``elementwise`` (bool): any other layer
                       hls4ml converts (a binary net's ``BatchNormalizationQuantizedTanh``, a
                       ``Transpose``...); it is planned and built but never split inside
=====================  ==============================================================

A model read from a file (:mod:`split4ml.frontends`) is hls4ml's own conversion of it: each layer
names the hls4ml nodes it stands for (:attr:`Layer.hls_nodes`), and :attr:`Graph.source` keeps the
model so that each board's project is cut from hls4ml's conversion of the whole model. A layer of a
quantized model carries the types its quantizers give (:attr:`Layer.precision`); they are never
replaced by split4ml's defaults.

Merge layers (``Add``, ``Concatenate``) have several names in :attr:`Layer.inputs` and their
input shapes in :attr:`Layer.input_shapes`; every other layer has one input. A graph is a DAG in
topological order with one ``Input`` layer first (the model input) and, for a model, one output.

Dense and Conv layers may carry a fused activation in :attr:`Layer.activation` (Keras
``Dense(..., activation="relu")``). Activation functions: ``linear``, ``relu``, ``sigmoid``, ``tanh``,
``softmax``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import Split4mlError
from .settings import LayerPrecision

#: Activation functions split4ml can also rebuild itself (a shard's copy, a hand-made graph); a model
#: read through hls4ml may use any function hls4ml supports.
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
COMPUTE_KINDS = ("Dense", "Conv1D", "Conv2D")
POOL_KINDS = ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
MERGE_KINDS = ("Add", "Concatenate")
#: Kinds split4ml creates inside a board's sub-graph to pack/unpack its wires.
WIRE_KINDS = ("Slice", "Reshape")
#: Element-wise kinds that stay on the board of the layer producing their input (see :meth:`Graph.units`).
ATTACHED_KINDS = ("Activation", "Quantizer", "ApplyAlpha")
LAYER_KINDS = ("Input", *COMPUTE_KINDS, *POOL_KINDS, "Flatten", "BatchNormalization", "Activation", *MERGE_KINDS,
               *WIRE_KINDS, "Quantizer", "ApplyAlpha", "Op")


class LazyArrays(Mapping[str, np.ndarray]):
    """Read-only layer weights whose arrays are made on first read, then kept.

    For weights that follow from a layer's shape and are large, such as the stacked identities of an
    input split's merge: the planner builds such layers for every split option it prices, and reads
    only their shapes.
    """

    def __init__(self, makers: Mapping[str, Callable[[], np.ndarray]]) -> None:
        self._makers = dict(makers)
        self._made: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._made:
            arr = np.asarray(self._makers[key]())
            arr.setflags(write=False)
            self._made[key] = arr
        return self._made[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as the plain arrays
        return (dict, (dict(self.items()),))


def _frozen(m: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if isinstance(m, LazyArrays):
        return m
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of a :class:`Graph`.

    Attributes:
        name: unique name (used in plans, hls4ml configs and error messages).
        kind: one of :data:`LAYER_KINDS`.
        input_shape: shape of the input tensor, without batch, channels-last.
        output_shape: shape of the output tensor, without batch, channels-last.
        inputs: names of the producer layers (empty for ``Input``; several for merge layers).
        activation: fused activation (Dense/Conv) or the function of an ``Activation`` layer.
        params: kind-specific parameters (see module docstring).
        weights: name -> numpy array (``kernel``, ``bias``, BatchNorm statistics).
        input_shapes: the shape of every input, in the order of ``inputs``; empty for single-input
            layers (then :attr:`in_shapes` is ``(input_shape,)``). ``input_shape`` of a merge layer is
            its first input's shape.
        hls_nodes: the hls4ml nodes (in the conversion of the whole model) this layer stands for, in
            order: ``("fc1", "fc1_relu")`` for a Dense whose fused activation hls4ml runs as a node of
            its own. Empty for layers split4ml makes (shards, merges, wire packing) and for graphs
            built by hand; those are rebuilt from this layer's own fields.
        precision: the types the model itself gives the layer (a quantized model: from its
            quantizers, as hls4ml resolves them); ``None`` when the plan chooses them (a float model).
            ``precision.input`` is the type of the values the layer reads.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    inputs: tuple[str, ...] = ()
    activation: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)
    input_shapes: tuple[tuple[int, ...], ...] = ()
    hls_nodes: tuple[str, ...] = ()
    precision: LayerPrecision | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hls_nodes", tuple(self.hls_nodes))
        object.__setattr__(self, "input_shapes", tuple(tuple(int(d) for d in sh) for sh in self.input_shapes))
        object.__setattr__(self, "params", _frozen(self.params))
        object.__setattr__(self, "weights", _frozen(self.weights))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "output_shape", tuple(int(d) for d in self.output_shape))
        object.__setattr__(self, "inputs", tuple(self.inputs))

    @property
    def is_activation(self) -> bool:
        """True for a standalone activation layer."""
        return self.kind == "Activation"

    @property
    def is_attached(self) -> bool:
        """True for an element-wise layer that must stay on the board of its producer: an activation, a
        requantisation (``Quantizer``), a scale (``ApplyAlpha``) or an element-wise ``Op``."""
        return self.kind in ATTACHED_KINDS or (self.kind == "Op" and bool(self.params.get("elementwise")))

    @property
    def synthetic(self) -> bool:
        """True for a layer split4ml builds from its own fields (no hls4ml node of the model)."""
        return not self.hls_nodes

    @property
    def is_merge(self) -> bool:
        """True for a layer that combines several tensors (``Add``, ``Concatenate``)."""
        return self.kind in MERGE_KINDS

    @property
    def in_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of every input, in the order of :attr:`inputs`."""
        return self.input_shapes or (self.input_shape,)

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
    """A model as a topologically ordered tuple of layers (a DAG; a chain is the common case).

    ``layers[0]`` is the model's single ``Input`` layer; every layer comes after its producers.
    A sub-graph built for one board (:func:`split4ml.stages.dag_stages`) may have several ``Input``
    layers (one per tensor it receives) and several outputs.
    """

    name: str
    layers: tuple[Layer, ...]
    outputs: tuple[str, ...]
    #: the model this graph was read from (:class:`split4ml.frontends.source.ModelSource`); sub-graphs
    #: cut from it keep it. ``None`` for graphs built by hand.
    source: Any = field(default=None, compare=False, repr=False)

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
    def quantized(self) -> bool:
        """True when the model's own quantizers give its layers' types (see :attr:`Layer.precision`)."""
        return any(lyr.precision is not None for lyr in self.layers)

    @property
    def is_chain(self) -> bool:
        """True when every layer consumes exactly the layer before it."""
        for prev, cur in zip(self.layers, self.layers[1:], strict=False):
            if cur.inputs != (prev.name,):
                return False
        return len(self.outputs) == 1 and self.outputs[0] == self.layers[-1].name

    def consumers(self, name: str) -> list[Layer]:
        """The layers that read the output of layer ``name``, in graph order."""
        return [lyr for lyr in self.layers if name in lyr.inputs]

    def check_dag(self) -> None:
        """Raise :class:`Split4mlError` unless every layer's producers exist and come before it, and the
        outputs name layers of the graph."""
        seen: set[str] = set()
        for lyr in self.layers:
            for src in lyr.inputs:
                if src not in seen:
                    where = "is not in the graph" if src not in self else "comes after it"
                    raise Split4mlError(f"graph {self.name!r}: layer {lyr.name!r} reads {src!r}, which {where}; "
                                        "layers must be in topological order")
            if lyr.kind == "Input" and lyr.inputs:
                raise Split4mlError(f"graph {self.name!r}: Input layer {lyr.name!r} cannot have inputs")
            if lyr.kind != "Input" and not lyr.inputs:
                raise Split4mlError(f"graph {self.name!r}: layer {lyr.name!r} ({lyr.kind}) has no inputs")
            if lyr.input_shapes and len(lyr.input_shapes) != len(lyr.inputs):
                raise Split4mlError(f"graph {self.name!r}: layer {lyr.name!r} has {len(lyr.inputs)} inputs but "
                                    f"{len(lyr.input_shapes)} input shapes")
            seen.add(lyr.name)
        missing = [o for o in self.outputs if o not in seen]
        if missing:
            raise Split4mlError(f"graph {self.name!r}: outputs {missing} are not layers of the graph")

    def units(self) -> list[tuple[Layer, ...]]:
        """Group the body into indivisible units: a layer plus the element-wise layers it feeds.

        A pipeline may be cut only between units, so an activation (or a requantisation, a scale:
        :attr:`Layer.is_attached`) always stays on the board of the layer that produces its input (in
        a DAG: it joins its producer's unit; one reading the model input starts a unit of its own).
        Units are in graph order of their first layer.
        """
        groups: list[list[Layer]] = []
        unit_of: dict[str, int] = {}
        for lyr in self.body:
            src = lyr.inputs[0] if len(lyr.inputs) == 1 else None
            if lyr.is_attached and src in unit_of:
                k = unit_of[src]
                groups[k].append(lyr)
            elif lyr.is_attached and not lyr.inputs and groups:  # producer not recorded: the layer before
                k = len(groups) - 1
                groups[k].append(lyr)
            else:
                k = len(groups)
                groups.append([lyr])
            unit_of[lyr.name] = k
        return [tuple(g) for g in groups]
