"""The intra-layer splits the planner may choose for a unit, priced for the partitioner.

For a unit (a compute layer and its standalone activation layers) and every kind (``neuron``,
``input``) and part count ``k`` from 2 up to a bound, :func:`split_options` cuts the unit with
:func:`split4ml.shard.shard_unit` and chooses each shard's settings the way
:func:`~split4ml.plan.reuse.choose_settings` chooses a model layer's: the smallest hls4ml-valid reuse
factor (Latency strategy first, then Resource; or the user's strategy) that lets the shard fit one
board with its shell (:func:`~split4ml.plan.reuse.fit_layer`). The compute layer of the split's
tail (the merge layer of an input split) is chosen alike, alone on a board. Each feasible ``(kind,
k)`` becomes a :class:`~split4ml.plan.chain.SplitOption` whose label is a :class:`ShardChoice`:
what ``assemble`` needs to put the split into the plan. A ``(kind, k)`` whose shards or tail fit no
board is left out, and the reason is kept for error messages.

Shards of one split have at most two shapes (:func:`split4ml.shard.split_bounds`), so the reuse
factor search runs once per shape; every shard is still priced on its own (its weights differ).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..boards import Board
from ..errors import PlanError
from ..estimate.base import Cost, Estimator
from ..ir import COMPUTE_KINDS, Layer
from ..settings import LayerSettings
from .chain import SPLIT_KINDS, SplitOption
from .planfile import SplitSpec
from .reuse import fit_layer

#: The largest number of parts the planner tries for one layer.
MAX_PARTS = 32


@dataclass(frozen=True, eq=False)
class ShardChoice:
    """What the planner chose for one split: the label of its :class:`SplitOption`.

    Attributes:
        spec: layer, kind and number of parts.
        shard_settings: settings of every shard layer, by shard layer name.
        tail_settings: settings of every tail layer (merge layer, softmax, ...), by tail layer name.
    """

    spec: SplitSpec
    shard_settings: dict[str, LayerSettings]
    tail_settings: dict[str, LayerSettings]


def split_axis(layer: Layer, kind: str) -> int:
    """Size of the axis a ``kind`` split cuts: output units/filters (neuron) or input features/channels."""
    return int(layer.output_shape[-1] if kind == "neuron" else layer.input_shape[-1])


def _fit(layer: Layer, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], board: Board, cap: float,
         est: Estimator, io_type: str, strategy: str | None, min_rf: int,
         hint: LayerSettings | None) -> tuple[LayerSettings, Cost] | None:
    """``fit_layer``, trying ``hint`` (the choice for a shard of the same shape) first."""
    if hint is not None:
        ls = replace(hint, precision=settings[layer.name].precision)
        cost = est.segment_cost(layers, {**settings, layer.name: ls}, io_type, board)
        if cost.fits(board, cap):
            return ls, cost
        min_rf = max(min_rf, hint.reuse_factor)
    return fit_layer(layer, layers, settings, board, cap, est, io_type, strategy=strategy, min_reuse_factor=min_rf)


def _overflow(layers: Sequence[Layer], settings: Mapping[str, LayerSettings], board: Board, cap: float,
              est: Estimator, io_type: str) -> str:
    cost = est.segment_cost(layers, settings, io_type, board)
    over = cost.overflow(board, cap)
    return ", ".join(f"{r.upper()} {getattr(cost, r):,.0f} ({v:.0%} of the allowed)" for r, v in
                     sorted(over.items(), key=lambda kv: -kv[1])) or "nothing"


def split_options(unit: Sequence[Layer], settings: Mapping[str, LayerSettings], board: Board, cap: float,
                  est: Estimator, io_type: str, *, max_parts: int = MAX_PARTS, strategy: str | None = None,
                  min_reuse_factor: int = 1, kinds: Sequence[str] = SPLIT_KINDS,
                  ) -> tuple[list[SplitOption], list[str]]:
    """Every feasible split of ``unit`` into 2..``max_parts`` shards, with its settings and costs.

    Args:
        unit: a compute layer (Dense, Conv1D, Conv2D) and its standalone activation layers.
        settings: settings of the unit's layers (their precisions are kept by the shards).
        board: the board of every shard and of the merge stage.
        cap: fraction of each board resource a board may use.
        est: the estimator.
        io_type: the build's io type.
        max_parts: the largest ``k`` (also bounded by the size of the split axis).
        strategy: the only strategy shards may use (the user's), or ``None`` for Latency then Resource.
        min_reuse_factor: the smallest reuse factor shards may use (the user's, if fixed).
        kinds: the split kinds to try.

    Returns:
        The options (label :class:`ShardChoice`), in order of kind then ``k``, and one line per kind
        or ``(kind, k)`` that was left out, saying why.
    """
    from ..shard import shard_unit

    layer = unit[0]
    if layer.kind not in COMPUTE_KINDS:
        return [], [f"{layer.name!r} is a {layer.kind} layer; only {', '.join(COMPUTE_KINDS)} layers can be split"]
    if layer.params.get("special_types"):
        return [], [f"{layer.name!r} computes with a binary (XNOR) or power-of-two type: its shards cannot be rebuilt"]
    options: list[SplitOption] = []
    problems: list[str] = []
    for kind in kinds:
        top = min(max_parts, split_axis(layer, kind))
        for k in range(2, top + 1):
            try:
                su = shard_unit(unit, layer.name, kind, k, settings, io_type=io_type)
            except PlanError as exc:
                problems.append(f"{kind} split: {exc}")
                break
            shard_sets: dict[str, LayerSettings] = {}
            costs: list[Cost] = []
            hints: dict[tuple[tuple[int, ...], tuple[int, ...]], LayerSettings] = {}
            failed = None
            for part, piece in enumerate(su.shards):
                shape = (piece.layer.input_shape, piece.layer.output_shape)
                got = _fit(piece.layer, piece.layers, piece.settings, board, cap, est, io_type, strategy,
                           min_reuse_factor, hints.get(shape))
                if got is None:
                    failed = (f"{kind} split k={k}: shard {part} fits no board at any reuse factor (at the largest: "
                              f"{_overflow(piece.layers, _largest(piece, strategy, io_type), board, cap, est, io_type)})")
                    break
                hints[shape] = got[0]
                shard_sets.update(piece.settings)
                shard_sets[piece.layer.name] = got[0]
                costs.append(got[1])
            if failed is not None:
                problems.append(failed)
                continue
            tail_sets = dict(su.tail_settings)
            tail_cost: Cost | None = None
            if su.tail:
                for lyr in su.tail:
                    if lyr.kind in COMPUTE_KINDS:
                        got = fit_layer(lyr, su.tail, tail_sets, board, cap, est, io_type)
                        if got is None:
                            failed = (f"{kind} split k={k}: its merge layer {lyr.name!r} fits no board at any reuse "
                                      "factor")
                            break
                        tail_sets[lyr.name] = got[0]
                if failed is not None:
                    problems.append(failed)
                    continue
                tail_cost = Cost()
                for lyr in su.tail:
                    tail_cost = tail_cost + est.layer_cost(lyr, tail_sets[lyr.name], io_type, board)
            sent = [math.prod(p.out_shape) * p.out_type.storage_bytes for p in su.shards]
            choice = ShardChoice(spec=SplitSpec(layer=layer.name, kind=kind, parts=k), shard_settings=shard_sets,
                                 tail_settings=tail_sets)
            options.append(SplitOption(kind=kind, shard_costs=tuple(costs), shard_bytes_out=tuple(float(b) for b in sent),
                                       shard_values_in=tuple(float(math.prod(p.input_shape)) for p in su.shards),
                                       shard_values_out=tuple(float(math.prod(p.out_shape)) for p in su.shards),
                                       tail=tail_cost, label=choice))
    return options, problems


def _largest(piece: object, strategy: str | None, io_type: str) -> dict[str, LayerSettings]:
    """The shard's settings at its largest valid reuse factor (for the message when nothing fits)."""
    from ..estimate import hls_rules

    lyr = piece.layer  # type: ignore[attr-defined]
    sets = dict(piece.settings)  # type: ignore[attr-defined]
    st = strategy or "Resource"
    rf = hls_rules.valid_reuse_factors(lyr, st, io_type)[-1]
    sets[lyr.name] = replace(sets[lyr.name], reuse_factor=rf, strategy=st)
    return sets
