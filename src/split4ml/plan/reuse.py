"""Per-layer hls4ml settings: reuse factor, strategy and precision of every layer of a model.

Rules (:func:`choose_settings`):

* Every body layer gets ``build.layer_precision()`` unless an override gives its precision; a layer
  of a quantized model keeps the types of its quantizers (:attr:`split4ml.ir.Layer.precision`) and
  refuses another precision.
* A reuse factor (RF) the user sets (globally or per layer) is kept, but it must be one hls4ml
  keeps: if hls4ml would silently change it (:func:`hls_rules.hls4ml_would_change`, or the
  io_parallel Resource-convolution limit ``RF <= n_in``), a :class:`PlanError` names the layer, the
  RF and the nearest valid ones. A global RF applies to the compute layers (Dense, Conv1D, Conv2D).
* Where the user sets no RF, for each compute layer, with the layer's unit (the layer and its
  standalone activations) and the board shell on one board under ``cap``:
  the smallest valid RF with the Latency strategy that fits; else the smallest valid RF with the
  Resource strategy that fits; else the setting with the smallest largest utilisation (the
  partitioner then reports the layer as too big, with the numbers). If the user set only the
  strategy, the RF is chosen under that strategy alone.
* A user RF without a strategy: Latency if it fits, else Resource if the RF is valid there and
  fits, else whichever valid one uses the smaller largest fraction of the board.
* Layers without multiplications take RF 1 and the Latency strategy (overrides may say otherwise).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

from ..boards import Board
from ..errors import PlanError
from ..estimate import hls_rules
from ..estimate.base import Cost, Estimator
from ..ir import COMPUTE_KINDS, Graph, Layer
from ..settings import STRATEGIES, BuildSettings, LayerPrecision, LayerSettings, choice, parse_layer_precision

OVERRIDE_KEYS = ("reuse_factor", "strategy", "precision")
_PRECISION_FIELDS = ("weight", "bias", "result", "accum")


def _strategy(value: Any, where: str) -> str:
    return choice(value, STRATEGIES, f"{where}: strategy")


def _rf(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"{where}: reuse_factor must be an integer >= 1, got {value!r}")
    return int(value)


def _precision(value: Any, base: LayerPrecision, where: str) -> LayerPrecision:
    """An override precision: a LayerPrecision, one type for all four, or some of the four fields."""
    return base if value is None else parse_layer_precision(value, f"{where}.precision", base)


def _nearest(valid: Sequence[int], rf: int) -> list[int]:
    """The valid RFs just below and just above ``rf``."""
    pos = bisect_left(valid, rf)
    return [v for v in (valid[pos - 1] if pos > 0 else None, valid[pos] if pos < len(valid) else None)
            if v is not None]


def _rf_problem(layer: Layer, rf: int, strategy: str, io_type: str) -> str | None:
    """Why hls4ml would not keep ``rf`` for ``layer`` under ``strategy`` (None when it would)."""
    changed = hls_rules.hls4ml_would_change(layer, rf, strategy)
    valid = hls_rules.valid_reuse_factors(layer, strategy, io_type)
    if changed is None and (strategy != "Resource" or rf in valid):
        return None
    n_in, n_out = hls_rules.mult_size(layer)
    what = (f"hls4ml would silently change it to {changed}" if changed is not None
            else f"hls4ml's {io_type} Resource convolution needs reuse_factor <= {n_in}")
    near = " or ".join(str(v) for v in _nearest(valid, rf))
    return (f"layer {layer.name!r} ({layer.kind}, {n_in}x{n_out} multiplications): reuse_factor {rf} is not "
            f"valid with the {strategy} strategy ({what}); nearest valid: {near}")


def _bad_rf_error(problems: list[str], source: str) -> PlanError:
    return PlanError(f"{source}: " + "; ".join(problems) + ". Pick a valid reuse_factor (the valid ones divide "
                     "the layer's n_in, or are n_in times a divisor of n_out), or use the Latency strategy, "
                     "which keeps any reuse factor.")


def choose_settings(graph: Graph, board: Board, cap: float, estimator: Estimator, build: BuildSettings,
                    reuse_factor: int | None = None, strategy: str | None = None,
                    overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, LayerSettings]:
    """hls4ml settings of every body layer of ``graph`` (see the module docstring for the rules).

    Args:
        graph: the model.
        board: the board type every layer must fit on (with its shell), alone if need be.
        cap: fraction (0, 1] of each board resource a board may use.
        estimator: prices a layer's unit under candidate settings (``segment_cost``, shell included).
        build: io type and default precisions.
        reuse_factor: global RF of the compute layers, or None to choose per layer.
        strategy: global strategy (``Latency``/``Resource``), or None to choose per layer.
        overrides: per layer name, any of ``reuse_factor``, ``strategy``, ``precision`` (a
            :class:`LayerPrecision`, one type, or a mapping of ``weight``/``bias``/``result``/``accum``).

    Raises:
        PlanError: unknown layer names or fields in ``overrides``, an invalid strategy, or a reuse
            factor hls4ml would not keep (the message names the layers and the nearest valid RFs).
    """
    overrides = dict(overrides or {})
    body = {lyr.name: lyr for lyr in graph.body}
    unknown = [n for n in overrides if n not in body]
    if unknown:
        raise PlanError(f"settings given for layer(s) {unknown} that are not in model {graph.name!r}; "
                        f"its layers are {list(body)}")
    for name, o in overrides.items():
        extra = sorted(set(o) - set(OVERRIDE_KEYS))
        if extra:
            raise PlanError(f"layer {name!r}: unknown setting(s) {extra}; allowed: {', '.join(OVERRIDE_KEYS)}")
    g_strategy = _strategy(strategy, "strategy") if strategy is not None else None
    g_rf = _rf(reuse_factor, "reuse_factor") if reuse_factor is not None else None
    base = build.layer_precision()

    def user(name: str) -> tuple[int | None, str | None, LayerPrecision]:
        o = overrides.get(name, {})
        rf = _rf(o["reuse_factor"], f"layer {name!r}") if o.get("reuse_factor") is not None else None
        st = _strategy(o["strategy"], f"layer {name!r}") if o.get("strategy") is not None else None
        own = body[name].precision
        if own is not None:  # a quantized model's layer: its types are the model's
            if o.get("precision") is not None and _precision(o["precision"], own, f"layer {name!r}") != own:
                raise PlanError(
                    f"layer {name!r}: model {graph.name!r} is quantized, so the layer's types come from its "
                    f"quantizers ({own.as_dict()}); remove 'precision' from its settings")
            return rf, st, own
        return rf, st, _precision(o.get("precision"), base, f"layer {name!r}")

    # Check every user-set RF first, so that one error lists every offending layer.
    layer_problems, global_problems = [], []
    for lyr in graph.body:
        if lyr.kind not in COMPUTE_KINDS:
            continue
        rf, st, _ = user(lyr.name)
        st = st or g_strategy
        if st is None:  # the Latency strategy keeps any RF, so a free strategy can always take it
            continue
        if rf is not None:
            p = _rf_problem(lyr, rf, st, build.io_type)
            if p is not None:
                layer_problems.append(p)
        elif g_rf is not None:
            p = _rf_problem(lyr, g_rf, st, build.io_type)
            if p is not None:
                global_problems.append(p)
    if layer_problems:
        raise _bad_rf_error(layer_problems, "per-layer reuse_factor")
    if global_problems:
        raise _bad_rf_error(global_problems, f"global reuse_factor {g_rf}")

    settings: dict[str, LayerSettings] = {}
    for lyr in graph.body:  # layers without multiplications first: the units of compute layers need them
        if lyr.kind not in COMPUTE_KINDS:
            rf, st, prec = user(lyr.name)
            settings[lyr.name] = LayerSettings(reuse_factor=rf or 1, strategy=st or "Latency", precision=prec)
    for unit in graph.units():
        for lyr in unit:
            if lyr.kind in COMPUTE_KINDS:
                rf, st, prec = user(lyr.name)
                settings[lyr.name] = _choose(lyr, list(unit), rf if rf is not None else g_rf, st or g_strategy,
                                             prec, settings, board, cap, estimator, build.io_type)
    return {lyr.name: settings[lyr.name] for lyr in graph.body}


def _choose(layer: Layer, unit: list[Layer], rf: int | None, strategy: str | None, precision: LayerPrecision,
            settings: Mapping[str, LayerSettings], board: Board, cap: float, estimator: Estimator,
            io_type: str) -> LayerSettings:
    """Settings of one compute layer given what the user fixed (RF and/or strategy)."""

    def price(r: int, s: str) -> tuple[LayerSettings, Cost]:
        ls = LayerSettings(reuse_factor=r, strategy=s, precision=precision)
        return ls, estimator.segment_cost(unit, {**settings, layer.name: ls}, io_type, board)

    if rf is not None and strategy is not None:
        return LayerSettings(reuse_factor=rf, strategy=strategy, precision=precision)
    tried: list[tuple[LayerSettings, Cost]] = []
    if rf is not None:  # user RF, strategy free: the strategies that keep this RF
        options = [(rf, s) for s in STRATEGIES if _rf_problem(layer, rf, s, io_type) is None]
    else:
        strategies = [strategy] if strategy is not None else list(STRATEGIES)
        options = [(r, s) for s in strategies for r in hls_rules.valid_reuse_factors(layer, s, io_type)]
    for r, s in options:  # Latency first, then Resource; smallest RF first within each
        ls, cost = price(r, s)
        if cost.fits(board, cap):
            return ls
        tried.append((ls, cost))
    # Nothing fits: the setting that uses the smallest fraction of its most used resource.
    best = min(range(len(tried)), key=lambda k: (tried[k][1].max_utilization(board), k))
    return tried[best][0]


def fit_layer(layer: Layer, unit: Sequence[Layer], settings: Mapping[str, LayerSettings], board: Board, cap: float,
              estimator: Estimator, io_type: str, strategy: str | None = None,
              min_reuse_factor: int = 1) -> tuple[LayerSettings, Cost] | None:
    """The smallest hls4ml-valid reuse factor that lets ``unit`` (with ``layer``, a compute layer of it)
    fit one ``board`` with its shell under ``cap``, as :func:`choose_settings` picks it for a model layer.

    Tries the Latency strategy (smallest RF first), then Resource, or only ``strategy`` when given;
    only RFs of at least ``min_reuse_factor``. ``settings`` gives the other unit layers' settings and
    the precision of ``layer``. Returns the settings of ``layer`` and the cost of the unit on the
    board (shell included), or ``None`` when no setting fits.
    """
    base = settings[layer.name]
    strategies = [strategy] if strategy is not None else list(STRATEGIES)
    for s in strategies:
        for r in hls_rules.valid_reuse_factors(layer, s, io_type):
            if r < min_reuse_factor:
                continue
            ls = LayerSettings(reuse_factor=r, strategy=s, precision=base.precision)
            cost = estimator.segment_cost(unit, {**settings, layer.name: ls}, io_type, board)
            if cost.fits(board, cap):
                return ls, cost
    return None
