"""ONNX and QONNX models, read by hls4ml's ONNX parser.

The file goes through the qonnx steps hls4ml's documentation gives for every ONNX model: ``cleanup``
(shape inference, constant folding), ``ConvertToChannelsLastAndClean`` (hls4ml computes channels-last),
``GemmToMatMul``, and ``cleanup`` again. hls4ml's ``parse_onnx_model`` then reads the result; QONNX
``Quant``/``BipolarQuant`` nodes (Brevitas ``export_qonnx``) become the layers' types. Weights stored
beside the model (``model.onnx.data``) are read with it and counted in its checksum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, UnsupportedLayerError
from .source import ModelSource, check_single_io, one_line, quiet

__all__ = ["read_onnx", "source_from_onnx"]


def _import() -> Any:
    try:
        import onnx  # noqa: F401
        from qonnx.core.modelwrapper import ModelWrapper
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(f"cannot import onnx/qonnx ({exc}); install the extra: pip install 'split4ml[onnx]'") from exc
    return ModelWrapper


def prepare(model: Any, what: str) -> Any:
    """The qonnx steps of hls4ml's documentation on ``model`` (an ``onnx.ModelProto`` or qonnx
    ``ModelWrapper``); returns a ModelWrapper.

    Raises:
        ModelLoadError: qonnx cannot clean the graph.
    """
    ModelWrapper = _import()
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    wrapper = model if isinstance(model, ModelWrapper) else ModelWrapper(model)
    try:
        with quiet():
            dims = wrapper.model.graph.input[0].type.tensor_type.shape.dim
            batch_one = len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == 1
            wrapper = cleanup_model(wrapper, override_inpsize=None if batch_one else 1)
            wrapper = wrapper.transform(ConvertToChannelsLastAndClean())
            wrapper = wrapper.transform(GemmToMatMul())
            wrapper = cleanup_model(wrapper)
    except Exception as exc:  # noqa: BLE001 - qonnx/onnx raise many types
        raise ModelLoadError(f"{what}: qonnx cannot clean the graph: {one_line(exc)}; check it with "
                             "onnx.checker.check_model and export it with a fixed input shape") from exc
    return wrapper


def source_from_onnx(model: Any, name: str, files: tuple[Path, ...] = (), via: str = "") -> ModelSource:
    """An ONNX model (``onnx.ModelProto`` or ``ModelWrapper``) read by hls4ml's ONNX parser.

    Raises:
        UnsupportedLayerError: a node hls4ml does not convert (named with its operator), or several
            inputs/outputs.
    """
    from hls4ml.converters.onnx_to_hls import get_supported_onnx_layers, parse_onnx_model

    what = f"ONNX model {name!r}"
    wrapper = prepare(model, what)
    known = set(get_supported_onnx_layers()) | {"Dropout", "Identity"}
    for node in wrapper.model.graph.node:
        if node.op_type not in known:
            raise UnsupportedLayerError(
                f"{what}: node {node.name or '?'!r} ({node.op_type}) is not an operator hls4ml converts; hls4ml 1.3 "
                "reads the operators listed by hls4ml.converters.get_supported_onnx_layers()")
    try:
        with quiet():
            layers, inputs, outputs = parse_onnx_model(wrapper)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedLayerError(f"{what}: hls4ml cannot read it: {one_line(exc)}") from exc
    src = ModelSource(framework="onnx", reader="onnx", name=name, layers=tuple(layers), inputs=tuple(inputs),
                      outputs=tuple(outputs), files=files, handle=wrapper, via=via)
    check_single_io(src)
    return src


def read_onnx(path: str | Path) -> ModelSource:
    """Read an ``.onnx`` file (ONNX or QONNX).

    Raises:
        ModelLoadError: missing or unreadable file.
        UnsupportedLayerError: see :func:`source_from_onnx`.
    """
    _import()
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file {str(p)!r} does not exist; pass the path of an .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
        files = [p]
        for init in model.graph.initializer:
            for entry in init.external_data:
                if entry.key == "location":
                    f = p.parent / entry.value
                    if f not in files:
                        files.append(f)
        onnx.external_data_helper.load_external_data_for_model(model, str(p.parent))
    except Exception as exc:  # noqa: BLE001 - protobuf raises many types
        raise ModelLoadError(f"cannot read ONNX model {str(p)!r}: {one_line(exc)}; pass a file written by "
                             "torch.onnx.export, tf2onnx or onnx.save (with its external weights file beside it)"
                             ) from exc
    if not model.graph.node:
        raise ModelLoadError(f"{str(p)!r} holds no ONNX graph nodes")
    return source_from_onnx(model, p.stem.replace(".", "_"), tuple(files))
