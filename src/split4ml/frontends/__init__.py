"""Frontends: model files and in-memory models to a :class:`~split4ml.ir.Graph`.

Keras 3 (:mod:`split4ml.frontends.keras`) and PyTorch (:mod:`split4ml.frontends.torch`: a
``torch.export`` ``.pt2``, a TorchScript ``.pt``/``.pth``, or a Python ``.py`` file plus a
state_dict), and ONNX/QONNX (:mod:`split4ml.frontends.onnx`: an ``.onnx`` file, cleaned with qonnx).
Framework libraries are imported lazily, so importing this package is cheap.
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
    ".py": "pytorch",
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


def load_model(path: str | Path, framework: str | None = None, weights: str | Path | None = None, *,
               entry: str | None = None, input_shape: tuple[int, ...] | list[int] | None = None) -> Graph:
    """Load a model file as a :class:`Graph`, choosing the frontend by ``framework`` or extension.

    Args:
        path: model file (``.keras``, ``.h5``, ``.json`` for Keras; ``.pt2``, ``.pt``/``.pth``,
            ``.py`` for PyTorch; ``.onnx`` for ONNX/QONNX, see :func:`split4ml.frontends.onnx.load_onnx`).
        framework: ``keras``/``pytorch``/``onnx`` (aliases ``tf``, ``tensorflow``, ``torch``);
            defaults to the file extension's framework.
        weights: weights file for a Keras ``.json`` architecture (see
            :func:`split4ml.frontends.keras.load_keras`), or the state_dict of a PyTorch ``.py``
            model (see :func:`split4ml.frontends.torch.load_torch`).
        entry: PyTorch ``.py`` model only: the ``nn.Module`` class or factory function in the file.
        input_shape: PyTorch only: the input shape without batch, channels-first as torch takes it
            (e.g. ``(1, 8, 8)``), for models whose file does not fix it (``.py``, TorchScript).

    Raises:
        ModelLoadError: unknown extension/framework, missing or unreadable file, or a framework
            whose frontend does not exist yet.
        UnsupportedLayerError: the model has a layer or structure split4ml cannot convert.
    """
    fw = framework_of(path, framework)
    if fw == "keras":
        from .keras import load_keras

        _no_torch_options(path, fw, entry, input_shape)
        return load_keras(path, weights=weights)
    if fw == "pytorch":
        from .torch import load_torch

        return load_torch(path, weights=weights, entry=entry, input_shape=input_shape)
    if fw == "onnx":
        from .onnx import load_onnx

        _no_torch_options(path, fw, entry, input_shape)
        if weights is not None:
            raise ModelLoadError(
                f"weights (--weights) do not apply to ONNX models: {str(path)!r} holds its weights; drop the option"
            )
        return load_onnx(path)
    raise ModelLoadError(f"cannot load {str(path)!r}: unknown framework {fw!r}")  # pragma: no cover


def _no_torch_options(path: str | Path, fw: str, entry: str | None, input_shape: object) -> None:
    """Refuse the PyTorch-only options for a model of another framework."""
    given = [n for n, v in (("entry", entry), ("input_shape", input_shape)) if v is not None]
    if given:
        raise ModelLoadError(
            f"{', '.join(given)} (--{' / --'.join(g.replace('_', '-') for g in given)}) only apply to PyTorch "
            f"models, but {str(path)!r} is a {fw} model; drop the option(s) or pass --framework pytorch"
        )
