"""The hls4ml config of one stage, with every precision spelled out.

hls4ml's ``auto`` types are what make naive splits fail: with ``granularity='name'`` hls4ml 1.3
infers a very wide result type for, e.g., the layer feeding a softmax, and an independently
converted sub-model would infer different types at its edges. split4ml therefore writes every
type itself, from the stage's :class:`~split4ml.settings.LayerSettings` and wire types, and
refuses to build when anything is still unspecified (:func:`check_no_auto`).

The config starts from :func:`hls4ml.utils.config_from_keras_model` (``granularity='name'``), which
lists every layer name hls4ml will create, including the activation layers it splits off fused
Keras activations (``fc1`` -> ``fc1`` + ``fc1_relu``). Each entry is then filled:

- the Input layer: ``result`` = the stage's input wire type;
- a Dense/Conv layer: ``weight``, ``bias``, ``result``, ``accum``, ``ReuseFactor``, ``Strategy``;
- BatchNormalization: ``scale`` (= weight type), ``bias``, ``result``;
- pooling: ``result``, ``accum``; Flatten: ``result`` (with ``io_parallel`` hls4ml passes a Flatten
  through, so its output keeps its producer's type: give a Flatten the same result type as the
  layer before it, or a stage ending at a Flatten fails :func:`~split4ml.hls.project.check_wire_types`);
- a fused activation ``<layer>_<act>``: ``result`` = the layer's result type;
- Add / Concatenate (skip connections) and the wire layers of a packed board (``Slice`` as
  ``Cropping1D``, ``Reshape``): ``result`` from their settings (the wire layers get the wire's type,
  so they move values unchanged);
- an Activation layer: ``result`` from its settings; lookup-table types (``table``, ``exp_table``,
  ``inv_table``, ``inv_inp`` and softmax's internal ``accum``) keep hls4ml's concrete defaults,
  written explicitly.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping
from typing import Any

from ..errors import BuildError
from ..fixed import FixedType
from ..split import Stage

#: Precision keys of activation layers that are lookup-table internals, kept at hls4ml's defaults.
TABLE_KEYS = ("table", "exp_table", "inv_table", "inv_inp")
#: hls4ml's default table type, used if hls4ml leaves a table key as ``auto``.
DEFAULT_TABLE_TYPE = "fixed<18,8,RND,SAT>"
#: Kinds whose hls4ml layer has the full weight/bias/result/accum set.
_COMPUTE_KINDS = ("Dense", "Conv1D", "Conv2D")


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


def _precision_for_ir_layer(kind: str, key: str, stage: Stage, name: str) -> str | None:
    """The type for precision ``key`` of the IR layer ``name``, or None to keep hls4ml's value."""
    prec = stage.settings[name].precision
    if key == "result":
        return prec.result.hls4ml()
    if kind == "Activation":
        # softmax/sigmoid/tanh internals: tables and softmax's accumulator keep hls4ml's defaults
        return None
    if key in ("weight", "scale"):
        return prec.weight.hls4ml()
    if key == "bias":
        return prec.bias.hls4ml()
    if key == "accum":
        return prec.accum.hls4ml()
    return None


def _fused_owner(name: str, stage: Stage) -> str | None:
    """The IR layer whose fused activation hls4ml split off as ``name`` (``fc1_relu`` -> ``fc1``)."""
    for layer in stage.graph.body:
        act = layer.activation
        if layer.kind in _COMPUTE_KINDS and act and act != "linear" and name == f"{layer.name}_{act}":
            return layer.name
    return None


def fill_config(base: Mapping[str, Any], stage: Stage) -> dict[str, Any]:
    """Fill hls4ml's name-granularity config ``base`` with the stage's concrete settings.

    ``base`` is what :func:`hls4ml.utils.config_from_keras_model` returns for the stage's Keras
    model; it is not modified. Raises :class:`BuildError` when a type would stay ``auto``.
    """
    cfg: dict[str, Any] = copy.deepcopy(dict(base))
    build = stage.build
    model_cfg = cfg.setdefault("Model", {})
    model_cfg["Precision"] = {"default": build.default_precision.hls4ml()}
    model_cfg["ReuseFactor"] = 1
    model_cfg["Strategy"] = "Latency"
    model_cfg.setdefault("BramFactor", 1_000_000_000)
    model_cfg["TraceOutput"] = False

    layers_cfg: dict[str, Any] = cfg.setdefault("LayerName", {})
    input_name = stage.graph.input.name
    kinds = {lyr.name: lyr.kind for lyr in stage.graph.layers}
    last_result: FixedType = stage.input_type
    for name, entry in layers_cfg.items():
        precision: dict[str, Any] = entry.setdefault("Precision", {})
        if not isinstance(precision, dict):
            precision = {"result": precision}
            entry["Precision"] = precision
        if name == input_name:
            precision["result"] = stage.input_type.hls4ml()
            last_result = stage.input_type
        elif name in stage.settings:
            kind = kinds[name]
            ls = stage.settings[name]
            for key in list(precision):
                value = _precision_for_ir_layer(kind, key, stage, name)
                if value is not None:
                    precision[key] = value
            precision.setdefault("result", ls.precision.result.hls4ml())
            entry["ReuseFactor"] = int(ls.reuse_factor)
            if kind in _COMPUTE_KINDS:
                entry["Strategy"] = ls.strategy
            last_result = ls.precision.result
        elif (owner := _fused_owner(name, stage)) is not None:
            ls = stage.settings[owner]
            precision["result"] = ls.precision.result.hls4ml()
            entry["ReuseFactor"] = int(ls.reuse_factor)
            last_result = ls.precision.result
        else:
            # a layer hls4ml creates that the IR does not know: keep the type flowing into it
            for key, value in list(precision.items()):
                if _is_auto(value):
                    precision[key] = last_result.hls4ml()
        for key, value in list(precision.items()):
            if _is_auto(value) and key in (*TABLE_KEYS, "accum") and kinds.get(name) == "Activation":
                precision[key] = DEFAULT_TABLE_TYPE
    missing = [name for name in stage.settings if name not in layers_cfg]
    if missing:
        raise BuildError(
            f"{stage.name} on {stage.board.name}: hls4ml's config has no entry for layer(s) {missing}; "
            "the Keras model rebuilt from the IR does not match the stage graph"
        )
    assert_no_auto_config(cfg, where=f"{stage.name} on {stage.board.name}")
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


def hls_config(stage: Stage, keras_model: Any = None) -> dict[str, Any]:
    """The hls4ml config (``{"Model": ..., "LayerName": ...}``) of ``stage``, every type concrete.

    ``keras_model`` is the stage's Keras model if the caller already built it
    (:func:`split4ml.hls.keras_model.keras_model_from_graph`); otherwise it is rebuilt here.
    """
    import hls4ml

    from .keras_model import keras_model_from_graph
    from .project import backend_for

    model = keras_model if keras_model is not None else keras_model_from_graph(stage.graph)
    backend, _ = backend_for(stage.board)
    try:
        # hls4ml prints its layer handlers (stdout) and optional-package notes (stderr)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            base = hls4ml.utils.config_from_keras_model(model, granularity="name", backend=backend)
    except Exception as exc:  # hls4ml raises bare Exceptions
        raise BuildError(
            f"{stage.name} on {stage.board.name}: hls4ml cannot read the stage's Keras model: {exc}"
        ) from exc
    return fill_config(base, stage)


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
