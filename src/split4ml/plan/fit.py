"""Fit the free settings of one stage to its board.

The planner chooses each layer's reuse factor so that the layer fits a board alone. A
hand-written plan may put several layers on one board; when those layers' settings are not fixed by
the user, :func:`fit_stage` raises their reuse factors together, to the smallest common target
that makes the whole stage fit: the stage's interval grows only as much as the board requires.
:func:`check_stage_fit` says, with the ways out, when a stage does not fit.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence

from ..boards import Board
from ..errors import InfeasibleError
from ..estimate import hls_rules
from ..estimate.base import Cost, Estimator
from ..ir import COMPUTE_KINDS, Layer
from ..settings import LayerSettings


def _at_least(valid: Sequence[int], target: int) -> int:
    i = bisect_left(valid, target)
    return valid[i] if i < len(valid) else valid[-1]


def fit_stage(layers: Sequence[Layer], settings: Mapping[str, LayerSettings], free: Collection[str], board: Board,
              cap: float, estimator: Estimator, io_type: str) -> dict[str, LayerSettings]:
    """Settings for ``layers`` that fit ``board`` under ``cap``, changing only layers in ``free``.

    Tries reuse-factor targets in increasing order, first with each layer's current strategy,
    then with the Resource strategy; each free compute layer takes the smallest valid reuse factor
    at or above the target (never below its current one). Returns the input settings unchanged if
    they already fit or if nothing fits (the caller reports the overflow).
    """
    current = {lyr.name: settings[lyr.name] for lyr in layers}
    if estimator.segment_cost(layers, current, io_type, board).fits(board, cap):
        return current
    movable = [lyr for lyr in layers if lyr.name in free and lyr.kind in COMPUTE_KINDS]
    if not movable:
        return current
    for strategy in (None, "Resource"):
        valid = {lyr.name: hls_rules.valid_reuse_factors(lyr, strategy or current[lyr.name].strategy, io_type)
                 for lyr in movable}
        targets = sorted({rf for v in valid.values() for rf in v})
        for target in targets:
            trial = dict(current)
            for lyr in movable:
                s = current[lyr.name]
                rf = max(s.reuse_factor, _at_least(valid[lyr.name], target))
                if rf not in valid[lyr.name]:
                    rf = _at_least(valid[lyr.name], rf)
                trial[lyr.name] = LayerSettings(reuse_factor=rf, strategy=strategy or s.strategy,
                                                precision=s.precision)
            if estimator.segment_cost(layers, trial, io_type, board).fits(board, cap):
                return trial
    return current


def check_stage_fit(cost: Cost, board: Board, cap: float, what: str, names: Sequence[str],
                    can_split: bool = True) -> None:
    """Raise :class:`InfeasibleError` naming the stage (``what``), board, layers and overflowing
    resources when ``cost`` does not fit ``board`` under ``cap``, with the ways out."""
    over = cost.overflow(board, cap)
    if over:
        detail = ", ".join(f"{r.upper()} {v * 100:.0f}% of the cap" for r, v in over.items())
        split = "split the layer into more parts, " if can_split else ""
        raise InfeasibleError(
            f"{what} (board {board.name}, layers {list(names)}) does not fit: {detail} "
            f"(cap {cap:.0%}). Move layers to another stage, raise their reuse_factor, use the Resource "
            f"strategy, {split}lower the precision, or use a bigger board.")
