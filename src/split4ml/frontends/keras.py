"""Keras models, read by hls4ml's Keras parsers.

==============================  =====================================================================
file                            how it is read
==============================  =====================================================================
Keras 2 ``.json`` + weights     hls4ml's Keras 2 parser (``parse_keras_model``) reads the architecture
                                and the H5 weights directly, without TensorFlow. The weights are
                                ``weights=`` (``--weights``), else ``<stem>_weights.h5``,
                                ``<stem>.weights.h5`` or ``<stem>.h5`` next to the JSON (the hls4ml
                                tutorials' naming first).
Keras 2 full-model ``.h5``      the same parser, from the file's ``model_config``
Keras 3 ``.keras`` (and a       ``keras.models.load_model``, then hls4ml's Keras 3 parser
Keras 3 ``.json``/``.h5``)      (``parse_keras_v3_model``). QKeras (``qkeras``) and HGQ2 (``hgq``) are
                                imported first when installed, so their layers load.
==============================  =====================================================================

QKeras layers need the ``qkeras`` package at conversion time (hls4ml asks it for the quantizers);
HGQ's proxy models (``FixedPointQuantizer`` layers) need nothing more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, UnsupportedLayerError
from .source import ModelSource, check_single_io, one_line, quiet

__all__ = ["graph_from_keras", "read_keras", "source_from_keras"]

#: Plugin packages imported before a Keras 3 model is loaded, so that their layers deserialize.
PLUGINS = ("hgq", "qkeras")


def _import_plugins() -> None:
    for name in PLUGINS:
        try:
            with quiet():
                __import__(name)
        except Exception:  # noqa: BLE001 - absent or broken plugin: its layers will not load
            continue


def _keras_major(version: Any) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def weights_next_to(json_path: str | Path) -> Path | None:
    """The weights file of a ``.json`` architecture found next to it: ``<stem>_weights.h5`` (hls4ml's
    tutorials), ``<stem>.weights.h5`` (Keras 3) or ``<stem>.h5``; None when there is none."""
    stem = Path(json_path).with_suffix("")
    for cand in (Path(f"{stem}_weights.h5"), Path(f"{stem}.weights.h5"), Path(f"{stem}.h5")):
        if cand.is_file():
            return cand
    return None


def _weights_for(json_path: Path, weights: str | Path | None) -> Path:
    if weights is not None:
        w = Path(weights)
        if not w.is_file():
            raise ModelLoadError(f"weights file {str(w)!r} does not exist; pass the H5 file saved with the architecture")
        return w
    found = weights_next_to(json_path)
    if found is not None:
        return found
    stem = json_path.with_suffix("")
    raise ModelLoadError(
        f"architecture {str(json_path)!r} holds no weights and none were found next to it ({stem.name}_weights.h5, "
        f"{stem.name}.weights.h5 or {stem.name}.h5); pass the weights file (weights=... / --weights)")


def _v2_unsupported(arch: dict[str, Any], what: str) -> None:
    """Name the first layer hls4ml's Keras 2 parser does not know, before it fails without a name."""
    from hls4ml.converters.keras_v2_to_hls import get_supported_keras_layers

    cfg = arch.get("config", {})
    layers = cfg.get("layers", cfg) if isinstance(cfg, dict) else cfg
    known = set(get_supported_keras_layers()) | {"Dropout"}
    for layer in layers if isinstance(layers, list) else []:
        cls = layer.get("class_name")
        if cls not in known:
            name = layer.get("config", {}).get("name", "?")
            raise UnsupportedLayerError(
                f"{what}: layer {name!r} ({cls}) is not a layer hls4ml converts; hls4ml 1.3 reads "
                f"{len(known)} Keras layer types (hls4ml.converters.get_supported_keras_layers())")


def _read_v2(config: dict[str, Any], arch: dict[str, Any], files: tuple[Path, ...], name: str) -> ModelSource:
    from hls4ml.converters.keras_v2_to_hls import KerasFileReader, parse_keras_model

    what = f"Keras 2 model {str(files[0])!r}"
    _v2_unsupported(arch, what)
    try:
        with quiet():
            reader = KerasFileReader(config)
            layers, inputs, outputs, _ = parse_keras_model(arch, reader)
    except UnsupportedLayerError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedLayerError(f"{what}: hls4ml cannot read it: {one_line(exc)}") from exc
    inputs = inputs or [layers[0]["name"]]
    outputs = outputs or [layers[-1]["name"]]
    src = ModelSource(framework="keras", reader="keras-v2", name=name, layers=tuple(layers), inputs=tuple(inputs),
                      outputs=tuple(outputs), files=files, handle=dict(config))
    check_single_io(src)
    return src


def source_from_keras(model: Any, name: str | None = None, files: tuple[Path, ...] = ()) -> ModelSource:
    """A built Keras 3 model (Sequential or functional) read by hls4ml's Keras 3 parser.

    Raises:
        UnsupportedLayerError: hls4ml cannot read one of its layers (the message names it), or the
            model has several inputs or outputs.
    """
    import keras
    from hls4ml.converters.keras_v3_to_hls import parse_keras_v3_model

    if not isinstance(model, keras.Model):
        raise UnsupportedLayerError(f"expected a keras.Model, got {type(model).__name__}; load a model file with "
                                    "split4ml.frontends.load_model(path)")
    label = name or model.name
    if not model.built:
        raise ModelLoadError(f"Keras model {label!r} is not built (unknown input shape); call it on an input or give "
                             "it an Input layer")
    try:
        with quiet():
            layers, inputs, outputs, _ = parse_keras_v3_model(model, allow_da_fallback=False, allow_v2_fallback=True)
    except Exception as exc:  # noqa: BLE001
        msg = one_line(exc)
        culprit = next((lyr for lyr in model.layers if f".{type(lyr).__name__}'" in msg or f"layer {lyr.name} " in msg
                        or f"layer {lyr.name!r}" in msg), None)
        where = f"layer {culprit.name!r} ({type(culprit).__name__})" if culprit is not None else "a layer"
        if "not found in registry" in msg:
            msg = "hls4ml 1.3 has no converter for this layer type; replace it, or remove it before splitting"
        raise UnsupportedLayerError(f"Keras model {label!r}: hls4ml cannot convert {where}: {msg}") from exc
    src = ModelSource(framework="keras", reader="keras-v3", name=label, layers=tuple(layers), inputs=tuple(inputs),
                      outputs=tuple(outputs), files=files, handle=model)
    check_single_io(src)
    return src


def graph_from_keras(model: Any, name: str | None = None) -> Any:
    """The :class:`~split4ml.ir.Graph` of an in-memory Keras 3 model, as hls4ml converts it."""
    from .graph import graph_from_source

    return graph_from_source(source_from_keras(model, name))


def _load_v3(path: Path, weights: Path | None) -> Any:
    import keras

    _import_plugins()
    try:
        with quiet():
            if path.suffix.lower() == ".json":
                model = keras.models.model_from_json(path.read_text())
            else:
                model = keras.models.load_model(str(path), compile=False)
            if weights is not None:
                model.load_weights(str(weights))
    except Exception as exc:  # noqa: BLE001 - Keras prints whole configs in its messages
        import re

        missing = re.search(r"Could not locate (?:class|function) '([^']+)'", str(exc))
        if missing:
            raise ModelLoadError(
                f"cannot load Keras model {str(path)!r}: Keras cannot find the class {missing.group(1)!r}, a custom or "
                "plugin layer; import the module that defines it first (QKeras layers need qkeras-v3, HGQ layers "
                "hgq2)") from exc
        raise ModelLoadError(f"cannot load Keras model {str(path)!r}: {one_line(exc)}") from exc
    return model


def read_keras(path: str | Path, weights: str | Path | None = None) -> ModelSource:
    """Read a Keras model file (see the module docstring).

    Raises:
        ModelLoadError: missing or unreadable file, or missing weights.
        UnsupportedLayerError: a layer hls4ml does not convert, or several inputs/outputs.
    """
    import h5py

    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file {str(p)!r} does not exist; pass the path of a .keras, .h5 or .json file")
    if p.is_dir():
        raise ModelLoadError(f"{str(p)!r} is a directory (a TensorFlow SavedModel?); save the model as .keras or .h5")
    suffix = p.suffix.lower()
    name = p.stem.replace(".", "_")
    if suffix == ".json":
        try:
            arch = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read Keras architecture {str(p)!r}: {one_line(exc)}") from exc
        w = _weights_for(p, weights)
        v3 = _keras_major(arch.get("keras_version")) >= 3 or "module" in arch
        if v3:
            return source_from_keras(_load_v3(p, w), name, (p, w))
        return _read_v2({"KerasJson": str(p), "KerasH5": str(w)}, arch, (p, w), name)
    if suffix in (".h5", ".hdf5"):
        if weights is not None:
            raise ModelLoadError(f"{str(p)!r} is a full model with its weights; drop weights (--weights)")
        try:
            with h5py.File(p, "r") as fh:
                raw = fh.attrs.get("model_config")
                version = fh.attrs.get("keras_version")
        except OSError as exc:
            raise ModelLoadError(f"cannot read {str(p)!r} as an H5 model: {one_line(exc)}") from exc
        if raw is None:
            raise ModelLoadError(f"{str(p)!r} holds weights but no architecture; pass the model's .json as the model "
                                 "and this file as its weights (--weights)")
        arch = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        if _keras_major(version.decode() if isinstance(version, bytes) else version) >= 3:
            return source_from_keras(_load_v3(p, None), name, (p,))
        return _read_v2({"KerasH5": str(p)}, arch, (p,), name)
    if weights is not None and suffix == ".keras":
        return source_from_keras(_load_v3(p, Path(weights)), name, (p, Path(weights)))
    return source_from_keras(_load_v3(p, None), name, (p,))
