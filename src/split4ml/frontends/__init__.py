"""Frontends: model files and in-memory models to a :class:`~split4ml.ir.Graph`, through hls4ml.

What hls4ml converts, split4ml plans: every model is read by one of hls4ml's own parsers
(:mod:`.source`), converted once by hls4ml, and that conversion becomes the Graph (:mod:`.graph`).

- Keras (:mod:`.keras`): Keras 2 JSON + H5 weights and Keras 2 full-model ``.h5`` (read without
  TensorFlow), Keras 3 ``.keras``; QKeras, HGQ/HGQ2 and binary/ternary layers with their quantizers.
- PyTorch (:mod:`.torch`): a ``.py`` file plus a state_dict, a pickled module, a TorchScript file or
  a ``torch.export`` ``.pt2`` (the last two through ONNX).
- ONNX and QONNX (:mod:`.onnx`): an ``.onnx`` file, cleaned with qonnx as hls4ml's documentation says.

Framework libraries are imported lazily, so importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError
from ..ir import Graph

if TYPE_CHECKING:
    from .source import ModelSource

__all__ = ["FRAMEWORK_BY_EXTENSION", "FRAMEWORKS", "framework_of", "load_model", "read_model"]

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


def read_model(path: str | Path, framework: str | None = None, weights: str | Path | None = None, *,
               entry: str | None = None, input_shape: tuple[int, ...] | list[int] | None = None) -> ModelSource:
    """Read a model file with hls4ml's parser for its framework (see :func:`load_model`)."""
    fw = framework_of(path, framework)
    if fw == "keras":
        from .keras import read_keras

        _no_torch_options(path, fw, entry, input_shape)
        return read_keras(path, weights=weights)
    if fw == "pytorch":
        from .torch import read_torch

        return read_torch(path, weights=weights, entry=entry, input_shape=input_shape)
    if fw == "onnx":
        from .onnx import read_onnx

        _no_torch_options(path, fw, entry, input_shape)
        if weights is not None:
            raise ModelLoadError(
                f"weights (--weights) do not apply to ONNX models: {str(path)!r} holds its weights; drop the option"
            )
        return read_onnx(path)
    raise ModelLoadError(f"cannot load {str(path)!r}: unknown framework {fw!r}")  # pragma: no cover


def load_model(path: str | Path, framework: str | None = None, weights: str | Path | None = None, *,
               entry: str | None = None, input_shape: tuple[int, ...] | list[int] | None = None) -> Graph:
    """Load a model file as a :class:`Graph`: hls4ml's conversion of it (see the package docstring).

    Args:
        path: model file (``.keras``, ``.h5``, ``.json`` for Keras; ``.pt2``, ``.pt``/``.pth``,
            ``.py`` for PyTorch; ``.onnx`` for ONNX/QONNX).
        framework: ``keras``/``pytorch``/``onnx`` (aliases ``tf``, ``tensorflow``, ``torch``);
            defaults to the file extension's framework.
        weights: the H5 weights of a Keras ``.json`` architecture (by default found next to it), or
            the state_dict of a PyTorch ``.py`` model.
        entry: PyTorch ``.py`` model only: the ``nn.Module`` class or factory function in the file.
        input_shape: PyTorch only: the input shape without batch, channels-first as torch takes it
            (e.g. ``(1, 8, 8)``), for models whose file does not fix it.

    Raises:
        ModelLoadError: unknown extension/framework, missing or unreadable file.
        UnsupportedLayerError: a layer hls4ml does not convert (named), or several inputs/outputs.
    """
    from .graph import graph_from_source

    return graph_from_source(read_model(path, framework, weights, entry=entry, input_shape=input_shape))


def _no_torch_options(path: str | Path, fw: str, entry: str | None, input_shape: object) -> None:
    """Refuse the PyTorch-only options for a model of another framework."""
    given = [n for n, v in (("entry", entry), ("input_shape", input_shape)) if v is not None]
    if given:
        raise ModelLoadError(
            f"{', '.join(given)} (--{' / --'.join(g.replace('_', '-') for g in given)}) only apply to PyTorch "
            f"models, but {str(path)!r} is a {fw} model; drop the option(s) or pass --framework pytorch"
        )
