"""The hls4ml configuration of a model's conversion and of split4ml's own layers.

hls4ml's ``auto`` types are what make naive splits fail: with ``granularity='name'`` hls4ml 1.3
infers a very wide result type for, e.g., the layer feeding a softmax. So for a **float model**
split4ml writes every type itself, from the plan's :class:`~split4ml.settings.LayerSettings`: the
configuration names every hls4ml node of the model (:attr:`split4ml.ir.Layer.hls_nodes`):

- a Dense/Conv node: ``weight``, ``bias``, ``result``, ``accum``, ``ReuseFactor``, ``Strategy``; its
  activation node (``fc1_relu``): ``result``;
- BatchNormalization / ApplyAlpha: ``scale`` (= weight type), ``bias``, ``result``;
- pooling: ``result``, ``accum``; every other node: ``result``. Lookup-table types of activations
  keep hls4ml's concrete defaults.

A **quantized model** keeps the types its quantizers give: its configuration is the one hls4ml's
``config_from_*_model(granularity='name')`` writes (:meth:`~split4ml.frontends.source.ModelSource.base_config`),
with the plan's reuse factor and strategy for each node, and hls4ml resolves its ``auto`` types.
Either way, :func:`check_no_auto` refuses a converted model that still has an unspecified type.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..errors import BuildError
from ..ir import COMPUTE_KINDS, Graph, Layer
from ..settings import BuildSettings, LayerSettings

#: Precision keys of activation layers that are lookup-table internals, kept at hls4ml's defaults.
TABLE_KEYS = ("table", "exp_table", "inv_table", "inv_inp")
#: hls4ml's default table type, used if hls4ml leaves a table key as ``auto``.
DEFAULT_TABLE_TYPE = "fixed<18,8,RND,SAT>"
#: hls4ml's "very large" BRAM factor: keep every weight array inside the design.
BRAM_FACTOR = 1_000_000_000


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


def model_block(build: BuildSettings) -> dict[str, Any]:
    """The ``Model`` section every configuration starts from."""
    return {"Precision": {"default": build.default_precision.hls4ml()}, "ReuseFactor": 1, "Strategy": "Latency",
            "BramFactor": BRAM_FACTOR, "TraceOutput": False}


def layer_entries(layer: Layer, settings: LayerSettings, node_names: tuple[str, ...] | None = None,
                  types: bool = True) -> dict[str, dict[str, Any]]:
    """The ``LayerName`` entries of ``layer``'s hls4ml nodes (``node_names``, by default its
    :attr:`~split4ml.ir.Layer.hls_nodes`, or ``(layer.name, <name>_<activation>)`` for a layer
    split4ml builds). Without ``types`` only the reuse factor and strategy are written."""
    names = node_names if node_names is not None else layer.hls_nodes
    if not names:
        act = layer.activation or "linear"
        names = (layer.name, f"{layer.name}_{act}") if layer.kind in COMPUTE_KINDS and act != "linear" else (layer.name,)
    p = settings.precision
    out: dict[str, dict[str, Any]] = {}
    first: dict[str, Any] = {"ReuseFactor": int(settings.reuse_factor)}
    if layer.kind in COMPUTE_KINDS:
        first["Strategy"] = settings.strategy
    if types:
        if layer.kind in COMPUTE_KINDS:
            prec = {"weight": p.weight.hls4ml(), "bias": p.bias.hls4ml(), "result": p.result.hls4ml(),
                    "accum": p.accum.hls4ml()}
        elif layer.kind in ("BatchNormalization", "ApplyAlpha"):
            prec = {"scale": p.weight.hls4ml(), "bias": p.bias.hls4ml(), "result": p.result.hls4ml()}
        elif "Pooling" in layer.kind:
            prec = {"result": p.result.hls4ml(), "accum": p.accum.hls4ml()}
        else:
            prec = {"result": p.result.hls4ml()}
        first["Precision"] = prec
    out[names[0]] = first
    for extra in names[1:]:
        entry: dict[str, Any] = {"ReuseFactor": int(settings.reuse_factor)}
        if types:
            entry["Precision"] = {"result": p.result.hls4ml()}
        out[extra] = entry
    return out


def model_config(graph: Graph, settings: Mapping[str, LayerSettings], build: BuildSettings) -> dict[str, Any]:
    """The hls4ml configuration (``{"Model": ..., "LayerName": ...}``) converting ``graph``'s model
    with ``settings`` (layers without settings keep reuse factor 1, Latency, and for a float model
    the build's precisions); see the module docstring.

    Raises:
        BuildError: ``graph`` was not read from a model file (it has no :attr:`~split4ml.ir.Graph.source`).
    """
    source = graph.source
    if source is None:
        raise BuildError(f"graph {graph.name!r} was not read from a model, so hls4ml has no conversion of it")
    if source.quantized:
        cfg = source.base_config(build.default_precision.hls4ml())
        # a node hls4ml creates from a parsed layer takes that layer's entry: without a reuse factor
        # there, the node keeps the one written under its own name below
        for entry in cfg["LayerName"].values():
            entry.pop("ReuseFactor", None)
            entry.pop("Strategy", None)
        names = cfg["LayerName"]
        for layer in graph.body:
            if layer.name in settings and layer.hls_nodes:
                for node, entry in layer_entries(layer, settings[layer.name], types=False).items():
                    names.setdefault(node, {}).update(entry)
        return cfg
    cfg = {"Model": model_block(build), "LayerName": {}}
    names = cfg["LayerName"]
    names[graph.input.name] = {"Precision": {"result": build.input_precision.hls4ml()}}
    default = LayerSettings(precision=build.layer_precision())
    for layer in graph.body:
        names.update(layer_entries(layer, settings.get(layer.name, default)))
    return cfg


def assert_no_auto_config(cfg: Mapping[str, Any], where: str = "config") -> None:
    """Raise :class:`BuildError` if any precision in an hls4ml config dict is ``auto``."""
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif _is_auto(node):
            found.append(path)

    walk(cfg, "")
    if found:
        raise BuildError(
            f"{where}: hls4ml config still has 'auto' types at {found}; give these layers concrete "
            "precisions in the plan (settings.precision) so that every board computes the same types"
        )


def with_tables(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with hls4ml's default table type where a table precision is ``auto``."""
    out = copy.deepcopy(dict(cfg))
    for entry in out.get("LayerName", {}).values():
        prec = entry.get("Precision")
        if isinstance(prec, dict):
            for key in TABLE_KEYS:
                if _is_auto(prec.get(key)):
                    prec[key] = DEFAULT_TABLE_TYPE
    return out


def check_no_auto(hls_model: Any, where: str = "model") -> None:
    """Raise :class:`BuildError` if a converted hls4ml model still has an unspecified type.

    Checks every type of every layer (``result_t``, ``weight_t``, ``accum_t``, tables...).
    """
    from hls4ml.model.types import UnspecifiedPrecisionType

    for layer in hls_model.get_layers():
        for type_name, named_type in layer.types.items():
            precision = getattr(named_type, "precision", None)
            if isinstance(precision, UnspecifiedPrecisionType) or _is_auto(str(precision)):
                raise BuildError(
                    f"{where}: layer {layer.name!r} has type {type_name} = {precision} (unspecified) after "
                    "hls4ml conversion; give it a concrete precision in the plan"
                )
