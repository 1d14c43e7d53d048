"""Frontends: model files and in-memory models to a :class:`~split4ml.ir.Graph`.

Only the Keras 3 frontend exists so far (:mod:`split4ml.frontends.keras`); PyTorch and ONNX files
are recognised and refused with a clear message. Framework libraries are imported lazily, so
importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError
from ..ir import Graph

__all__ = ["FRAMEWORK_BY_EXTENSION", "FRAMEWORKS", "framework_of", "load_model"]

#: Framework of each recognised model-file extension (lower case, with the dot).
FRAMEWORK_BY_EXTENSION: dict[str, str] = {
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
    ".json": "keras",
    ".pt": "pytorch",
    ".pt2": "pytorch",
    ".pth": "pytorch",
    ".onnx": "onnx",
}

#: Accepted values of ``framework`` (aliases map to the canonical name).
FRAMEWORKS: dict[str, str] = {
    "keras": "keras",
    "tensorflow": "keras",
    "tf": "keras",
    "pytorch": "pytorch",
    "torch": "pytorch",
    "onnx": "onnx",
}


def framework_of(path: str | Path, framework: str | None = None) -> str:
    """The canonical framework (``keras``, ``pytorch``, ``onnx``) of a model file.

    ``framework`` wins when given; otherwise the file extension decides.

    Raises:
        ModelLoadError: unknown framework name or extension.
    """
    if framework is not None:
        key = framework.strip().lower()
        if key not in FRAMEWORKS:
            raise ModelLoadError(
                f"unknown framework {framework!r}; pass one of {sorted(set(FRAMEWORKS.values()))}"
            )
        return FRAMEWORKS[key]
    suffix = Path(path).suffix.lower()
    if suffix not in FRAMEWORK_BY_EXTENSION:
        raise ModelLoadError(
            f"cannot tell the framework of {str(path)!r} from its extension {suffix or '(none)'!r}; use one of "
            f"{', '.join(FRAMEWORK_BY_EXTENSION)} or pass framework='keras' (--framework)"
        )
    return FRAMEWORK_BY_EXTENSION[suffix]


def load_model(path: str | Path, framework: str | None = None, weights: str | Path | None = None) -> Graph:
    """Load a model file as a :class:`Graph`, choosing the frontend by ``framework`` or extension.

    Args:
        path: model file (``.keras``, ``.h5``, ``.json`` for Keras).
        framework: ``keras``/``pytorch``/``onnx`` (aliases ``tf``, ``tensorflow``, ``torch``);
            defaults to the file extension's framework.
        weights: weights file for a Keras ``.json`` architecture (see
            :func:`split4ml.frontends.keras.load_keras`).

    Raises:
        ModelLoadError: unknown extension/framework, missing or unreadable file, or a framework
            whose frontend does not exist yet.
        UnsupportedLayerError: the model has a layer or structure split4ml cannot convert.
    """
    fw = framework_of(path, framework)
    if fw == "keras":
        from .keras import load_keras

        return load_keras(path, weights=weights)
    raise ModelLoadError(
        f"cannot load {str(path)!r}: PyTorch/ONNX frontends are not available yet ({fw}); "
        "export the model to Keras (.keras) or rebuild it in Keras 3"
    )
