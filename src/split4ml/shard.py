"""Intra-layer splits: one Dense/Conv unit cut into ``k`` shards that run on ``k`` boards in parallel.

Pure functions on the Graph IR (no hls4ml). Two kinds:

**Neuron split** (``kind="neuron"``): shard ``i`` computes output units / filters ``a_i:b_i`` of the
layer (kernel ``[..., a:b]``, bias ``[a:b]``, same types and fused activation). Every shard reads the
whole input; the merge is concatenation along the last axis, which is exact. Elementwise activations
(relu, sigmoid, tanh, linear) stay in each shard (standalone ones are copied, sliced), and so may the
channel-wise layers that follow the unit (:func:`channel_wise`): MaxPooling/AveragePooling act on
each channel alone (pooling a slice of the channels is that slice of the pooled map), and a batch
normalization or an ``ApplyAlpha`` scales and shifts each channel by its own factors (the copy on
a shard takes those channels' factors: hls4ml's own scale and bias, sliced); a softmax
(fused or standalone) and every activation layer after it need the whole vector, so they form the
split's **tail**, which runs after the concatenation on the consuming board.

**Input split** (``kind="input"``): shard ``i`` reads input features (Dense) / input channels (Conv)
``a_i:b_i`` and computes the layer's raw partial sums: kernel ``[..., a:b, :]``, no bias, linear,
with accumulator and result type :func:`partial_sum_type` (the layer's accumulator widened by
:func:`guard_bits` integer bits, same fractional bits and rounding, WRAP). The **tail** is a merge
layer over the concatenated partial vectors: a Dense (Conv: a 1x1 Conv) whose kernel is ``k`` stacked
identity matrices (values 0 and 1, weight type :data:`MERGE_WEIGHT_TYPE`), with the layer's bias,
accumulator, result type and fused activation, followed by the unit's standalone activation layers.

Why it is exact: hls4ml's Dense/Conv compute ``acc = (accum_t) bias; acc += (accum_t)(x * w)`` per
product, then ``res = (result_t) acc``. With a WRAP accumulator that is arithmetic modulo
``2**accum.width`` on the accumulator's grid. A shard casts each product to the same fractional grid
with the same rounding, so its partial sum is the layer's sum over its slice (in a wider type: no
rounding, no overflow); the merge adds the partial sums times 1 (exact) to the bias, modulo the
same ``2**width``. A SAT accumulator would saturate in an order-dependent way, so an input split
of such a layer is refused (:class:`~split4ml.errors.PlanError`).

Names (deterministic, used in plans and hls4ml configs): shard layers ``<layer>__n<i>`` (neuron) /
``<layer>__i<i>`` (input); shard copies of standalone activations ``<act>__n<i>``; the merge layer
``<layer>__merge``; a fused softmax moved to the tail ``<layer>__softmax`` (all made by the
``*_name`` functions below, the one place to change the scheme). hls4ml 1.3 and g++ accept double
underscores in layer names (checked by ``tests/hls/test_hls_shard.py`` and the bit-exact tests in
``tests/test_verify_pipeline.py``): hls4ml names variables and weight files by layer index
(``layer2_out``, ``w2``) but also derives type names from layer names (``fc1__merge_weight_t``).
C++ formally reserves identifiers containing ``__``; compilers accept them, but if a vendor HLS
front end ever refuses one, change the functions below (e.g. to ``fc1_s_n0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import PlanError
from .estimate import hls_rules
from .fixed import FixedType
from .ir import COMPUTE_KINDS, POOL_KINDS, Layer, LazyArrays
from .settings import LayerPrecision, LayerSettings

SPLIT_KINDS = ("neuron", "input")
#: Activations that act value by value, so they may run on each shard of a neuron split.
ELEMENTWISE_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")
#: Layers that scale and shift each value by its channel's factors (hls4ml's ``normalize``): batch
#: normalization, and ``ApplyAlpha`` (a quantized layer's scale, an ONNX bias).
SCALE_KINDS = ("BatchNormalization", "ApplyAlpha")
#: Per-channel weights of a scale layer (hls4ml's, then Keras' statistics).
_SCALE_WEIGHTS = ("scale", "bias", "gamma", "beta", "moving_mean", "moving_variance")
#: Weight type of the merge layer: the cheapest type that holds 0 and 1 exactly (1 bit, unsigned).
MERGE_WEIGHT_TYPE = FixedType(1, 1, signed=False)
#: Saturation mode an input-split layer's accumulator must have (see module docstring).
REQUIRED_ACCUM_SATURATION = "WRAP"


def shard_name(layer: str, kind: str, part: int) -> str:
    """Name of shard ``part`` of ``layer`` (``fc1__n0`` / ``fc1__i0``)."""
    return f"{layer}__{'n' if kind == 'neuron' else 'i'}{part}"


def shard_activation_name(activation_layer: str, part: int) -> str:
    """Name of shard ``part``'s copy of a standalone elementwise activation layer (``relu1__n0``)."""
    return f"{activation_layer}__n{part}"


def merge_name(layer: str) -> str:
    """Name of the merge layer of an input split of ``layer`` (``fc1__merge``)."""
    return f"{layer}__merge"


def tail_activation_name(layer: str, activation: str) -> str:
    """Name of the standalone layer that runs ``layer``'s fused ``activation`` after the merge."""
    return f"{layer}__{activation}"


def split_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` balanced contiguous slices ``[(a, b), ...]`` of ``range(n)``: sizes differ by at most 1,
    the larger ones first.

    Raises:
        PlanError: ``k < 1`` or ``k > n``.
    """
    if k < 1 or n < 1 or k > n:
        raise PlanError(f"cannot cut {n} items into {k} non-empty parts; choose 1 <= parts <= {n}")
    base, extra = divmod(n, k)
    bounds: list[tuple[int, int]] = []
    a = 0
    for i in range(k):
        b = a + base + (1 if i < extra else 0)
        bounds.append((a, b))
        a = b
    return bounds


def guard_bits(k: int) -> int:
    """Integer bits added to a partial sum so that ``k`` of them add without overflow:
    ``ceil(log2 k)`` (0 for ``k = 1``)."""
    if k < 1:
        raise PlanError(f"a split needs at least one part, got {k}")
    return (k - 1).bit_length()


def partial_sum_type(accum: FixedType, k: int) -> FixedType:
    """Accumulator and result type of an input-split shard: ``accum`` with :func:`guard_bits` more
    integer bits, the same fractional bits and rounding, WRAP."""
    g = guard_bits(k)
    return FixedType(width=accum.width + g, integer=accum.integer + g, signed=accum.signed,
                     rounding=accum.rounding, saturation="WRAP")


@dataclass(frozen=True, eq=False)
class ShardPiece:
    """One shard of a split unit: what one board runs.

    Attributes:
        layers: the shard's layers in order (the sliced compute layer, then for a neuron split the
            sliced copies of the unit's elementwise activation layers).
        settings: hls4ml settings of ``layers``, by shard layer name.
        source_slice: ``(a, b)`` of the producer's last axis that the shard reads (input split), or
            ``None`` when it reads the whole producer output (neuron split).
        out_type: fixed-point type of the shard's output wire.
        out_shape: per-sample shape of the shard's output.
    """

    layers: tuple[Layer, ...]
    settings: dict[str, LayerSettings]
    source_slice: tuple[int, int] | None
    out_type: FixedType
    out_shape: tuple[int, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.layers[0].input_shape

    @property
    def layer(self) -> Layer:
        """The shard's compute layer."""
        return self.layers[0]


@dataclass(frozen=True, eq=False)
class ShardedUnit:
    """A unit (compute layer + its standalone activations) split ``k`` ways.

    Attributes:
        kind: ``"neuron"`` or ``"input"``.
        k: number of shards.
        layer: name of the split compute layer.
        shards: the ``k`` shards, in order; their outputs concatenate (last axis) into the tail's input.
        tail: layers that run after the concatenation, on the consuming board (may be empty for a
            neuron split): the merge layer of an input split, softmax and what follows it.
        tail_settings: hls4ml settings of ``tail``, by layer name.
        slices: ``(a, b)`` per shard: output units/filters (neuron) or input features/channels (input).
    """

    kind: str
    k: int
    layer: str
    shards: tuple[ShardPiece, ...]
    tail: tuple[Layer, ...]
    tail_settings: dict[str, LayerSettings]
    slices: tuple[tuple[int, int], ...]

    @property
    def concat_shape(self) -> tuple[int, ...]:
        """Shape of the shards' outputs concatenated along the last axis (the tail's input)."""
        first = self.shards[0].out_shape
        return (*first[:-1], sum(s.out_shape[-1] for s in self.shards))

    @property
    def concat_type(self) -> FixedType:
        """Type of the concatenated shard outputs (all shards send the same type)."""
        return self.shards[0].out_type

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the unit's result (after the tail): the unsplit unit's output shape."""
        return self.tail[-1].output_shape if self.tail else self.concat_shape

    @property
    def output_type(self) -> FixedType:
        """Type of the unit's result (after the tail)."""
        return self.tail_settings[self.tail[-1].name].precision.result if self.tail else self.concat_type

    @property
    def shard_settings(self) -> dict[str, LayerSettings]:
        """Settings of every shard layer, by shard layer name."""
        out: dict[str, LayerSettings] = {}
        for s in self.shards:
            out.update(s.settings)
        return out


# ------------------------------------------------------------------------------- implementation
#: (id(base array), what was taken) -> (base, the derived array). The planner prices every split option
#: of a layer, for every version and batch, and each pricing cuts the same kernel the same ways: one
#: copy per cut serves them all (and lets the estimator's per-kernel statistics hit). The arrays are
#: read-only, so a shard cannot change another's weights.
_DERIVED: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
_DERIVED_MAX_BYTES = 256 * 2**20
_derived_bytes = 0


def _derived(base: Any, what: tuple[Any, ...], make: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``make(base)``, made once per base array and ``what``, read-only."""
    global _derived_bytes
    arr = np.asarray(base)
    key = (id(arr), *what)
    hit = _DERIVED.get(key)
    if hit is not None and hit[0] is arr:
        return hit[1]
    out = np.ascontiguousarray(make(arr))
    if np.may_share_memory(out, arr):  # a view of the model's weights: keep a copy of its own
        out = out.copy()
    out.setflags(write=False)
    if _derived_bytes + out.nbytes > _DERIVED_MAX_BYTES:
        _DERIVED.clear()
        _derived_bytes = 0
    _DERIVED[key] = (arr, out)
    _derived_bytes += out.nbytes
    return out


def _slice_shape(shape: tuple[int, ...], a: int, b: int) -> tuple[int, ...]:
    return (*shape[:-1], b - a)


def _channel_slice(arr: Any, shape: tuple[int, ...], a: int, b: int) -> np.ndarray | None:
    """Channels ``a:b`` (the last axis of ``shape``) of a scale layer's weight: one value per channel,
    or one per value of the tensor; None for any other layout."""
    w = np.asarray(arr)
    if w.size == shape[-1]:
        return _derived(w, ("flat", a, b), lambda x: x.reshape(-1)[a:b])
    if w.size == math.prod(shape):
        return _derived(w, ("channels", shape, a, b), lambda x: x.reshape(shape)[..., a:b].reshape(-1))
    return None


def channel_wise(layer: Layer) -> bool:
    """Whether ``layer`` acts on each channel (the last axis) alone, so that a shard of a neuron split
    may run it on its own slice of the channels: max/average pooling, and a batch normalization or
    ``ApplyAlpha`` whose scale and bias hold one value per channel (or per value)."""
    if layer.kind in POOL_KINDS:
        return True
    if layer.kind not in SCALE_KINDS:
        return False
    present = [layer.weights[k] for k in _SCALE_WEIGHTS if k in layer.weights]
    return bool(present) and all(_channel_slice(w, layer.output_shape, 0, 1) is not None for w in present)


def _slice_layer(layer: Layer, name: str, prev: str, a: int, b: int) -> Layer:
    """Shard copy of a channel-wise or element-wise layer on channels ``a:b``: sliced shapes, and for a
    scale layer its per-channel weights sliced too (hls4ml's own scale and bias, so the copy computes
    exactly what the layer computes on those channels)."""
    weights = dict(layer.weights)
    if layer.kind in SCALE_KINDS:
        for k in _SCALE_WEIGHTS:
            if k in weights:
                cut = _channel_slice(weights[k], layer.output_shape, a, b)
                if cut is None:  # pragma: no cover - channel_wise() said every weight slices
                    raise PlanError(f"layer {layer.name!r}: weight {k!r} has no per-channel layout")
                weights[k] = cut
    return layer.with_(name=name, inputs=(prev,), input_shape=_slice_shape(layer.input_shape, a, b),
                       output_shape=_slice_shape(layer.output_shape, a, b), weights=weights, hls_nodes=())


def _kernel(layer: Layer) -> np.ndarray:
    kernel = layer.weights.get("kernel")
    if kernel is None:
        raise PlanError(f"layer {layer.name!r} ({layer.kind}) has no kernel weights; it cannot be split")
    return np.asarray(kernel)


def _choose_rf(shard: Layer, base: LayerSettings, io_type: str | None) -> LayerSettings:
    """The original settings with the valid reuse factor closest to the original one."""
    valid = hls_rules.valid_reuse_factors(shard, base.strategy, io_type)
    return replace(base, reuse_factor=hls_rules.closest_reuse_factor(valid, int(base.reuse_factor)))


def _apply_override(name: str, derived: LayerSettings, override: LayerSettings | None, layer: Layer | None,
                    io_type: str | None) -> LayerSettings:
    """Take reuse factor and strategy from ``override``; its precision must equal the derived one."""
    if override is None:
        return derived
    if override.precision != derived.precision:
        raise PlanError(
            f"split layer {name!r}: precision {override.precision.as_dict()} differs from the one the split "
            f"needs to stay bit-exact, {derived.precision.as_dict()}; remove it from the plan (it is derived "
            "from the original layer)")
    out = replace(derived, reuse_factor=int(override.reuse_factor), strategy=override.strategy)
    if layer is not None and layer.kind in COMPUTE_KINDS:
        valid = hls_rules.valid_reuse_factors(layer, out.strategy, io_type)
        if out.reuse_factor not in valid:
            near = sorted(valid, key=lambda v: (abs(v - out.reuse_factor), v))[:2]
            raise PlanError(
                f"split layer {name!r} (mult size {hls_rules.mult_size(layer)}): reuse_factor {out.reuse_factor} "
                f"is not one hls4ml keeps with the {out.strategy} strategy; nearest valid: {sorted(near)}")
    return out


def _check(unit: Sequence[Layer], layer: str, kind: str, k: int,
           settings: Mapping[str, LayerSettings]) -> Layer:
    if not unit:
        raise PlanError(f"split of layer {layer!r}: the unit is empty")
    names = [lyr.name for lyr in unit]
    if layer not in names:
        raise PlanError(f"split: layer {layer!r} is not in the unit {names}")
    target = unit[0]
    if target.name != layer or target.kind not in COMPUTE_KINDS:
        what = next(lyr for lyr in unit if lyr.name == layer)
        raise PlanError(f"split: layer {layer!r} ({what.kind}) is not a compute layer; only {', '.join(COMPUTE_KINDS)} "
                        "layers can be split (by neurons or by inputs); split the compute layer that leads its unit")
    if kind not in SPLIT_KINDS:
        raise PlanError(f"split of layer {layer!r}: kind {kind!r} is not one of {', '.join(SPLIT_KINDS)}")
    # a neuron split may also carry the channel-wise layers that follow (each on its slice)
    rest = [lyr for lyr in unit[1:] if not lyr.is_attached and not (kind == "neuron" and channel_wise(lyr))]
    if rest:
        also = (" and, for a neuron split, the channel-wise layers that follow it (pooling, batch normalization)"
                if kind == "neuron" else "")
        raise PlanError(f"split of layer {layer!r}: its unit may hold only element-wise layers after it{also}, "
                        f"found {[lyr.name for lyr in rest]}")
    if target.params.get("special_types"):
        raise PlanError(f"split of layer {layer!r}: hls4ml computes it with a binary (XNOR) or power-of-two type, "
                        "which split4ml cannot rebuild for a shard; keep the layer whole (a bigger board, or a larger "
                        "reuse factor)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise PlanError(f"split of layer {layer!r}: parts must be an integer >= 2, got {k!r}")
    n = target.output_shape[-1] if kind == "neuron" else target.input_shape[-1]
    what = ("output units" if target.kind == "Dense" else "filters") if kind == "neuron" else \
        ("input features" if target.kind == "Dense" else "input channels")
    if k > n:
        raise PlanError(f"split of layer {layer!r}: {k} parts but the layer has only {n} {what}; use at most {n} "
                        "parts")
    missing = [n_ for n_ in names if n_ not in settings]
    if missing:
        raise PlanError(f"split of layer {layer!r}: no settings for layer(s) {missing}")
    if target.activation not in (None, *ELEMENTWISE_ACTIVATIONS, "softmax"):
        raise PlanError(f"split of layer {layer!r}: activation {target.activation!r} is not supported")
    _kernel(target)
    return target


def _neuron(unit: Sequence[Layer], target: Layer, k: int, settings: Mapping[str, LayerSettings],
            overrides: Mapping[str, LayerSettings], tail_overrides: Mapping[str, LayerSettings],
            io_type: str | None) -> ShardedUnit:
    n = target.output_shape[-1]
    slices = split_bounds(n, k)
    kernel = _kernel(target)
    bias = target.weights.get("bias")
    fused = target.activation or "linear"
    fused_tail = fused not in ELEMENTWISE_ACTIVATIONS
    # layers after the compute layer: elementwise activations and channel-wise layers (pooling, batch
    # normalization, scales) before the first other one stay in the shards (each on its slice of the
    # channels); the rest is the tail
    acts = list(unit[1:])
    cut = next((j for j, a in enumerate(acts)
                if not channel_wise(a)
                and (a.kind != "Activation" or (a.activation or "linear") not in ELEMENTWISE_ACTIVATIONS)), len(acts))
    if fused_tail:
        cut = 0
    late = [a.name for a in acts[cut:] if not a.is_attached and channel_wise(a)]
    if late:
        raise PlanError(f"split of layer {target.name!r}: {late} after a softmax or another layer that needs the "
                        "whole output cannot run on the shards; split without it")
    shard_acts, tail_acts = acts[:cut], acts[cut:]
    count = "units" if target.kind == "Dense" else "filters"
    shards: list[ShardPiece] = []
    for i, (a, b) in enumerate(slices):
        name = shard_name(target.name, "neuron", i)
        weights = {"kernel": _derived(kernel, ("out", a, b), lambda x, a=a, b=b: x[..., a:b])}
        if bias is not None and target.params.get("use_bias", True):
            weights["bias"] = _derived(bias, ("bias", a, b), lambda x, a=a, b=b: x[a:b])
        params = {**target.params, count: b - a}
        lyr = target.with_(name=name, output_shape=_slice_shape(target.output_shape, a, b), params=params,
                           weights=weights, activation="linear" if fused_tail else target.activation, hls_nodes=())
        st = _apply_override(name, _choose_rf(lyr, settings[target.name], io_type), overrides.get(name), lyr,
                             io_type)
        layers = [lyr]
        sets = {name: st}
        prev = name
        for act in shard_acts:
            aname = shard_activation_name(act.name, i)
            alyr = _slice_layer(act, aname, prev, a, b)
            sets[aname] = _apply_override(aname, settings[act.name], overrides.get(aname), None, io_type)
            layers.append(alyr)
            prev = aname
        out_type = sets[layers[-1].name].precision.result
        shards.append(ShardPiece(layers=tuple(layers), settings=sets, source_slice=None, out_type=out_type,
                                 out_shape=layers[-1].output_shape))
    tail: list[Layer] = []
    tail_settings: dict[str, LayerSettings] = {}
    inputs = tuple(s.layers[-1].name for s in shards)
    if fused_tail:
        tname = tail_activation_name(target.name, fused)
        base = settings[target.name]
        tail.append(Layer(name=tname, kind="Activation", input_shape=target.output_shape,
                          output_shape=target.output_shape, inputs=inputs, activation=fused))
        tail_settings[tname] = _apply_override(
            tname, LayerSettings(reuse_factor=1, strategy=base.strategy, precision=base.precision),
            tail_overrides.get(tname), None, io_type)
        inputs = (tname,)
    for act in tail_acts:
        tail.append(act.with_(inputs=inputs))
        tail_settings[act.name] = _apply_override(act.name, settings[act.name], tail_overrides.get(act.name), None,
                                                  io_type)
        inputs = (act.name,)
    return ShardedUnit(kind="neuron", k=k, layer=target.name, shards=tuple(shards), tail=tuple(tail),
                       tail_settings=tail_settings, slices=tuple(slices))


def _merge_layer(target: Layer, k: int, inputs: tuple[str, ...]) -> Layer:
    """The merge layer of an input split: k stacked identities, the layer's bias and activation.

    Its kernel is made only when read (building or verifying a board): the planner builds a merge
    for every input split it prices and needs only its shape.
    """
    n = target.output_shape[-1]
    dtype = np.asarray(_kernel(target)).dtype
    bias = target.weights.get("bias")
    use_bias = bool(target.params.get("use_bias", True)) and bias is not None
    in_shape = (*target.output_shape[:-1], k * n)
    ndim = 0 if target.kind == "Dense" else 1 if target.kind == "Conv1D" else 2

    def kernel() -> np.ndarray:
        eye = np.tile(np.eye(n, dtype=dtype), (k, 1))  # (k*n, n): row j*n + c -> column c
        return eye.reshape((1,) * ndim + eye.shape)

    if target.kind == "Dense":
        params = {"units": n, "use_bias": use_bias, "merge_parts": k}
    else:
        params = {"filters": n, "kernel_size": (1,) * ndim, "strides": (1,) * ndim, "padding": "valid",
                  "use_bias": use_bias, "merge_parts": k}
    makers: dict[str, Callable[[], np.ndarray]] = {"kernel": kernel}
    if use_bias:
        makers["bias"] = lambda: np.asarray(bias)
    return Layer(name=merge_name(target.name), kind=target.kind, input_shape=in_shape,
                 output_shape=target.output_shape, inputs=inputs, activation=target.activation, params=params,
                 weights=LazyArrays(makers))


def _input(unit: Sequence[Layer], target: Layer, k: int, settings: Mapping[str, LayerSettings],
           overrides: Mapping[str, LayerSettings], tail_overrides: Mapping[str, LayerSettings],
           io_type: str | None) -> ShardedUnit:
    base = settings[target.name]
    accum = base.precision.accum
    if accum.saturation != REQUIRED_ACCUM_SATURATION:
        raise PlanError(
            f"input split of layer {target.name!r}: its accumulator type {accum} saturates ({accum.saturation}); "
            "partial sums added on another board are exact only with a wrapping accumulator. Give the layer a "
            f"WRAP accumulator (e.g. accum: {replace(accum, saturation='WRAP')}) or use a neuron split")
    c_in = target.input_shape[-1]
    slices = split_bounds(c_in, k)
    kernel = _kernel(target)
    wide = partial_sum_type(accum, k)
    shard_prec = replace(base.precision, accum=wide, result=wide)
    shards: list[ShardPiece] = []
    for i, (a, b) in enumerate(slices):
        name = shard_name(target.name, "input", i)
        params = {**target.params, "use_bias": False}
        lyr = target.with_(name=name, input_shape=_slice_shape(target.input_shape, a, b), params=params,
                           weights={"kernel": _derived(kernel, ("in", a, b), lambda x, a=a, b=b: x[..., a:b, :])},
                           activation="linear",
                           hls_nodes=())
        derived = _choose_rf(lyr, replace(base, precision=shard_prec), io_type)
        st = _apply_override(name, derived, overrides.get(name), lyr, io_type)
        shards.append(ShardPiece(layers=(lyr,), settings={name: st}, source_slice=(a, b), out_type=wide,
                                 out_shape=lyr.output_shape))
    merge = _merge_layer(target, k, tuple(s.layers[-1].name for s in shards))
    merge_prec = LayerPrecision(weight=MERGE_WEIGHT_TYPE, bias=base.precision.bias, result=base.precision.result,
                                accum=accum)
    derived = LayerSettings(reuse_factor=1, strategy="Latency", precision=merge_prec)
    tail = [merge]
    tail_settings = {merge.name: _apply_override(merge.name, derived, tail_overrides.get(merge.name), merge, io_type)}
    prev = merge.name
    for act in unit[1:]:
        tail.append(act.with_(inputs=(prev,)))
        tail_settings[act.name] = _apply_override(act.name, settings[act.name], tail_overrides.get(act.name), None,
                                                  io_type)
        prev = act.name
    return ShardedUnit(kind="input", k=k, layer=target.name, shards=tuple(shards), tail=tuple(tail),
                       tail_settings=tail_settings, slices=tuple(slices))


def shard_unit(unit: Sequence[Layer], layer: str, kind: str, k: int, settings: Mapping[str, LayerSettings],
               shard_settings: Mapping[str, LayerSettings] | None = None,
               tail_settings: Mapping[str, LayerSettings] | None = None,
               io_type: str | None = None) -> ShardedUnit:
    """Split ``unit`` (a compute layer and its standalone activation layers, as from
    :meth:`Graph.units`; for a neuron split, optionally followed by channel-wise layers (pooling,
    batch normalization) and their activations, which then run on every shard) ``k`` ways by ``kind``.

    Args:
        unit: the unit's layers; ``unit[0]`` must be the compute layer called ``layer``.
        layer: the compute layer to split (Dense, Conv1D or Conv2D).
        kind: ``"neuron"`` (output units / filters) or ``"input"`` (input features / channels).
        k: number of shards, ``2 <= k <=`` size of the split axis.
        settings: settings of the unit's original layers, by name.
        shard_settings: optional overrides by shard layer name; their ``reuse_factor`` and ``strategy``
            are used (the reuse factor must be one hls4ml keeps for the shard's multiplication size);
            their precision must equal the derived one. By default each shard gets the original
            strategy and the valid reuse factor closest to the original.
        tail_settings: optional overrides of the tail's settings, by tail layer name, with the same
            rules. By default the merge layer gets reuse factor 1, Latency.
        io_type: the build's io type (restricts Resource-strategy Conv reuse factors for io_parallel).

    Raises:
        PlanError: naming the layer: a non-compute layer, an unknown kind, ``k < 2`` or ``k`` larger
            than the split axis, an input split of a layer whose accumulator saturates, or an
            override that would change the arithmetic or that hls4ml would not keep.
    """
    target = _check(unit, layer, kind, k, settings)
    over = dict(shard_settings or {})
    tail_over = dict(tail_settings or {})
    if kind == "neuron":
        out = _neuron(unit, target, int(k), settings, over, tail_over, io_type)
    else:
        out = _input(unit, target, int(k), settings, over, tail_over, io_type)
    unknown = sorted(set(over) - set(out.shard_settings))
    if unknown:
        raise PlanError(f"split of layer {layer!r}: shard settings for unknown layer(s) {unknown}; the shard layers "
                        f"are {sorted(out.shard_settings)}")
    return out


# ------------------------------------------------------------------------------- which units a split takes
def channel_wise_after(units: Sequence[Sequence[Layer]], u: int) -> list[Sequence[Layer]]:
    """The units (:meth:`~split4ml.ir.Graph.units`) right after unit ``u`` that a neuron split of it may
    run on its shards: each a channel-wise layer (:func:`channel_wise`: pooling, batch normalization)
    and its element-wise activation layers, up to the first other unit."""
    out = []
    for unit in units[u + 1:]:
        if not channel_wise(unit[0]) or any(
                not channel_wise(lyr) and (lyr.kind != "Activation"
                                           or (lyr.activation or "linear") not in ELEMENTWISE_ACTIVATIONS)
                for lyr in unit[1:]):
            break
        out.append(unit)
    return out


def split_stage_units(units: Sequence[Sequence[Layer]], names: tuple[str, ...], split: Any) -> bool:
    """Whether ``names`` are what a stage split by ``split`` (a layer and a kind, as a plan's
    ``split:``) may hold: the unit that starts with the split layer, or for a neuron split that unit and
    some of the channel-wise units right after it (:func:`channel_wise_after`)."""
    u = next((k for k, unit in enumerate(units) if unit[0].name == split.layer), None)
    if u is None or not names or names[0] != split.layer:
        return False
    covered = [lyr.name for lyr in units[u]]
    if tuple(covered) == names:
        return True
    for unit in channel_wise_after(units, u) if split.kind == "neuron" else ():
        covered += [lyr.name for lyr in unit]
        if tuple(covered) == names:
            return True
    return False
