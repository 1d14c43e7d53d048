"""PyTorch models, read the way hls4ml reads them.

==========================  ==========================================================================
input                       how it is read
==========================  ==========================================================================
``nn.Module`` (in memory)   hls4ml's PyTorch parser (``parse_pytorch_model``: a torch.fx trace), as
                            ``convert_from_pytorch_model`` does
``.py`` + state_dict        the file is imported; ``entry`` (a class or factory function; by default
                            ``make_model``, else the file's one ``nn.Module`` class) builds the module,
                            ``load_state_dict(torch.load(weights, weights_only=True))`` fills it; then
                            as an ``nn.Module``
``.pt`` / ``.pth``          TorchScript (``torch.jit.save``): exported to ONNX (torch's TorchScript
                            exporter), which hls4ml's ONNX parser reads. A whole pickled
                            module (``torch.save(model)``, like hls4ml's example models) is loaded
                            with ``torch.load(weights_only=False)`` (which runs the pickle's code: only
                            load files you trust) and read as an ``nn.Module``
``.pt2``                    ``torch.export`` program: exported to ONNX (``torch.onnx.export``), which
                            hls4ml's ONNX parser reads (hls4ml has no reader for export programs)
==========================  ==========================================================================

The input shape (without batch, channels-first as torch takes it) is needed for a module: it is
``input_shape``, else the module's ``input_shape`` attribute, else ``(in_features,)`` when the
first weighted layer is a ``Linear``. hls4ml converts channels-first inputs to channels-last
itself (``ChannelsLastConversion: full``), so the model takes its input as torch does.
"""

from __future__ import annotations

import importlib.util
import inspect as pyinspect
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, UnsupportedLayerError
from .source import ModelSource, check_single_io, one_line, quiet

__all__ = ["read_torch", "source_from_torch"]


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(f"cannot import torch ({exc}); install the extra: pip install 'split4ml[torch]'") from exc
    return torch


def _first_linear_in_features(module: Any) -> int | None:
    """``in_features`` of the module's first weighted layer when it is a Linear (None otherwise)."""
    for _, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        if not own:
            continue
        kind = getattr(sub, "original_name", type(sub).__name__)
        if kind == "Linear":
            weight = dict(own).get("weight")
            return int(weight.shape[1]) if weight is not None else None
        return None
    return None


def example_shape(module: Any, input_shape: Sequence[int] | None, what: str) -> tuple[int, ...]:
    """The input shape of ``module`` without batch (see the module docstring)."""
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if not shape or min(shape) < 1:
            raise ModelLoadError(f"input_shape {tuple(input_shape)} of {what}: expected positive dimensions")
        return shape
    attr = getattr(module, "input_shape", None)
    if isinstance(attr, list | tuple) and attr and all(isinstance(d, int) for d in attr):
        return tuple(int(d) for d in attr)
    n = _first_linear_in_features(module)
    if n is not None:
        return (n,)
    raise ModelLoadError(
        f"cannot tell the input shape of {what}: pass it without the batch dimension, channels-first as torch "
        "takes it (input_shape=(1, 8, 8) / --input-shape 1,8,8), or give the module an 'input_shape' attribute")


def source_from_torch(module: Any, input_shape: Sequence[int] | None = None, name: str | None = None,
                      files: tuple[Path, ...] = ()) -> ModelSource:
    """An ``nn.Module`` (put in eval mode) read by hls4ml's PyTorch parser.

    Raises:
        ModelLoadError: the input shape is unknown.
        UnsupportedLayerError: hls4ml cannot trace or convert a module of it (named in the message).
    """
    torch = _import_torch()
    from hls4ml.converters.pytorch_to_hls import parse_pytorch_model

    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"expected a torch.nn.Module, got {type(module).__name__}")
    label = name or type(module).__name__
    shape = example_shape(module, input_shape, f"model {label!r}")
    module = module.eval()
    config = {"PytorchModel": module, "InputShape": shape,
              "HLSConfig": {"Model": {"Precision": "fixed<16,6>", "ReuseFactor": 1, "ChannelsLastConversion": "full",
                                      "TransposeOutputs": False}}}
    try:
        with quiet():
            layers, inputs, outputs = parse_pytorch_model(config, verbose=False)
    except Exception as exc:  # noqa: BLE001 - torch.fx and hls4ml raise many types
        raise UnsupportedLayerError(f"PyTorch model {label!r}: hls4ml cannot read it: {one_line(exc)}") from exc
    inputs = inputs or [layers[0]["name"]]
    src = ModelSource(framework="pytorch", reader="pytorch", name=label, layers=tuple(layers), inputs=tuple(inputs),
                      outputs=tuple(outputs), files=files, handle=module, input_shape=shape)
    check_single_io(src)
    return src


def _program_to_onnx(program: Any, name: str, files: tuple[Path, ...], via: str) -> ModelSource:
    """A ``torch.export`` program exported to ONNX and read by hls4ml's ONNX parser."""
    torch = _import_torch()
    from .onnx import source_from_onnx

    placeholders = [n for n in program.graph_module.graph.nodes if n.op == "placeholder"
                    and n.name in program.graph_signature.user_inputs]
    if len(placeholders) != 1:
        raise UnsupportedLayerError(f"PyTorch program {name!r} has {len(placeholders)} inputs; split4ml pipelines take "
                                    "one input tensor")
    meta = placeholders[0].meta.get("val")
    shape = tuple(int(d) for d in meta.shape) if meta is not None else None
    if shape is None:
        raise ModelLoadError(f"PyTorch program {name!r}: its input has no static shape; export it with a fixed shape")
    try:
        with quiet():
            onnx_program = torch.onnx.export(program, (torch.zeros(shape, dtype=meta.dtype),), dynamo=True,
                                             verbose=False)
            proto = onnx_program.model_proto
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"PyTorch program {name!r}: torch.onnx.export failed: {one_line(exc)}") from exc
    return source_from_onnx(proto, name, files, via=via)


def _load_python(path: Path, entry: str | None, torch: Any) -> Any:
    """Import ``path`` and build the module with ``entry`` (a class or a function without arguments)."""
    mod_name = f"split4ml_user_model_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - any .py file gives a spec
        raise ModelLoadError(f"cannot import {str(path)!r} as a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelLoadError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}; fix the file") from exc
    classes = [v for v in vars(mod).values()
               if pyinspect.isclass(v) and issubclass(v, torch.nn.Module) and v.__module__ == mod_name]
    if entry is None:
        if callable(getattr(mod, "make_model", None)):
            entry = "make_model"
        elif len(classes) == 1:
            entry = classes[0].__name__
        else:
            found = sorted(c.__name__ for c in classes)
            raise ModelLoadError(
                f"{str(path)!r} defines {len(classes)} nn.Module classes {found} and no make_model(); name the "
                "class or factory function that builds the model (entry=... / --entry NAME)")
    factory: Callable[[], Any] | None = getattr(mod, entry, None)
    if factory is None or not callable(factory):
        found = sorted([c.__name__ for c in classes] + [n for n, v in vars(mod).items()
                                                        if pyinspect.isfunction(v) and v.__module__ == mod_name])
        raise ModelLoadError(f"{str(path)!r} has no class or function {entry!r}; pass one of {found} (--entry)")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelLoadError(f"{entry}() in {str(path)!r} failed: {type(exc).__name__}: {exc}; --entry must name a "
                             "class or function that builds the model without arguments") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{entry}() in {str(path)!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_state_dict(model: Any, weights: Path, torch: Any) -> None:
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read state_dict {str(weights)!r}: {one_line(exc)}; save it with "
                             "torch.save(model.state_dict(), path)") from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{str(weights)!r} holds a {type(state).__name__}, not a state_dict; save it with "
                             "torch.save(model.state_dict(), path)")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"state_dict {str(weights)!r} does not match the model: {one_line(exc)}; pass the "
                             "weights saved from this very architecture") from exc


def _torchscript_to_onnx(scripted: Any, path: Path, input_shape: Sequence[int] | None, name: str,
                         torch: Any) -> ModelSource:
    """A TorchScript module exported to ONNX (torch's TorchScript exporter, which keeps the static
    shapes of the example input) and read by hls4ml's ONNX parser."""
    import io

    import onnx

    from .onnx import source_from_onnx

    scripted.eval()
    shape = example_shape(scripted, input_shape, f"TorchScript model {str(path)!r}")
    buf = io.BytesIO()
    try:
        with quiet():
            torch.onnx.export(scripted, (torch.zeros((1, *shape)),), buf, dynamo=False)
        proto = onnx.load_from_string(buf.getvalue())
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot export TorchScript {str(path)!r} (input shape (1, {', '.join(map(str, shape))})) to ONNX: "
            f"{one_line(exc)}; save the model with torch.export.save(torch.export.export(model, (x,)), 'model.pt2') "
            "instead") from exc
    return source_from_onnx(proto, name, (path,), via="TorchScript exported to ONNX (torch.onnx.export)")


def read_torch(path: str | Path, weights: str | Path | None = None, entry: str | None = None,
               input_shape: Sequence[int] | None = None) -> ModelSource:
    """Read a PyTorch model file (see the module docstring).

    Raises:
        ModelLoadError: missing/unreadable file or bad options.
        UnsupportedLayerError: a module or operator hls4ml does not convert.
    """
    torch = _import_torch()
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file {str(p)!r} does not exist; pass a .pt2, .pt/.pth or .py file")
    if p.is_dir():
        raise ModelLoadError(f"{str(p)!r} is a directory; pass a .pt2, .pt/.pth or .py file")
    suffix = p.suffix.lower()
    name = p.stem.replace(".", "_") or "torch_model"
    if entry is not None and suffix != ".py":
        raise ModelLoadError(f"entry={entry!r} (--entry) applies only to a .py model, not {str(p)!r}")
    if weights is not None and suffix != ".py":
        raise ModelLoadError(f"weights (--weights) apply only to a .py model; {str(p)!r} holds its own weights (to use "
                             "a state_dict, pass the model's .py file as the model)")
    if suffix == ".py":
        if weights is None:
            raise ModelLoadError(f"{str(p)!r} is Python code; pass its state_dict too (weights=... / --weights "
                                 "state_dict.pt), saved with torch.save(model.state_dict(), path)")
        if not Path(weights).is_file():
            raise ModelLoadError(f"weights file {str(weights)!r} does not exist; pass a file saved with "
                                 "torch.save(model.state_dict(), path)")
        model = _load_python(p, entry, torch)
        _load_state_dict(model, Path(weights), torch)
        return source_from_torch(model, input_shape=input_shape, name=name, files=(p, Path(weights)))
    if suffix == ".pt2":
        try:
            program = torch.export.load(str(p))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot load {str(p)!r} as a torch.export program: {one_line(exc)}; write it with "
                                 "torch.export.save(torch.export.export(model.eval(), (x,)), path)") from exc
        return _program_to_onnx(program, name, (p,), via="torch.export program exported to ONNX (torch.onnx.export)")
    try:
        scripted = torch.jit.load(str(p), map_location="cpu")
    except Exception:  # noqa: BLE001 - not TorchScript: a pickled module?
        scripted = None
    if scripted is not None:
        return _torchscript_to_onnx(scripted, p, input_shape, name, torch)
    try:
        with quiet():
            model = torch.load(str(p), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot load {str(p)!r}: it is neither TorchScript (torch.jit.save) nor a pickled module "
            f"(torch.save(model)): {one_line(exc)}; for a state_dict pass the model's .py file as the model and this "
            "file as weights (--weights)") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{str(p)!r} holds a {type(model).__name__}, not a module; for a state_dict pass the "
                             "model's .py file as the model and this file as weights (--weights)")
    return source_from_torch(model, input_shape=input_shape, name=name, files=(p,))
