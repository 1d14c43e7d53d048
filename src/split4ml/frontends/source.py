"""A model as hls4ml reads it: its layer list, how to convert it, and how to convert it directly.

A :class:`ModelSource` is the result of running one of hls4ml's own parsers on the user's model
(``hls4ml.converters.parse_keras_model`` for Keras 2 JSON/H5, ``parse_keras_v3_model`` for Keras 3,
``parse_pytorch_model`` for a torch module, ``parse_onnx_model`` for ONNX/QONNX). Its layer list is
never changed: :meth:`ModelSource.convert` converts a fresh copy with ``ModelGraph.from_layer_list``,
exactly as hls4ml's converters do, and each board's project is cut out of that conversion
(:mod:`split4ml.hls.cut`). :meth:`ModelSource.reference` converts the user's original model through
hls4ml's public converter instead: that is what :mod:`split4ml.verify` compares the boards with.

Quantized models (QKeras, HGQ/HGQ2, binary/ternary Keras layers, QONNX ``Quant`` nodes) are
converted with the configuration hls4ml's ``config_from_*_model(granularity='name')`` writes
(:func:`name_config`): the quantizers give the types, ``auto`` types are resolved by hls4ml, and
split4ml's default precisions are never applied.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Split4mlError, UnsupportedLayerError
from ..hashing import file_sha256

#: hls4ml layer classes that carry quantization by themselves (besides ``*_quantizer`` entries).
QUANTIZER_CLASSES = ("Quant", "BipolarQuant", "FixedPointQuantizer", "QActivation")
#: Backend split4ml converts every model with when it reads it (the C++ is the same for
#: VivadoAccelerator, whose layers and passes are Vivado's).
READ_BACKEND = "Vivado"


def one_line(exc: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message, shortened: hls4ml and Keras errors may print a whole
    model configuration (kilobytes) that a terminal user cannot act on."""
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else type(exc).__name__
    if first.startswith("ERROR: "):
        first = first[len("ERROR: "):]
    if len(first) > limit:
        first = first[: limit - 3].rstrip() + "..."
    return first


def culprit(exc: BaseException) -> str | None:
    """The hls4ml layer an exception was raised in (``"layer 'fc1' (Dense)"``), found in the innermost
    traceback frame that holds one as ``self``, ``node`` or ``layer``; None when there is none."""
    from hls4ml.model.layers import Layer

    tb = exc.__traceback__
    found: str | None = None
    while tb is not None:
        for key in ("self", "node", "layer"):
            obj = tb.tb_frame.f_locals.get(key)
            if isinstance(obj, Layer):
                found = f"layer {obj.name!r} ({obj.class_name})"
                break
            if isinstance(obj, Mapping) and "class_name" in obj and "name" in obj:
                found = f"layer {obj['name']!r} ({obj['class_name']})"
                break
        tb = tb.tb_next
    return found


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Silence hls4ml's prints (topologies, 'Interpreting Model'), Python warnings and TensorFlow/absl
    logging while a model is read or converted; what was printed is in the yielded buffer."""
    buf = io.StringIO()
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buf
    finally:
        absl.setLevel(level)


def is_quantized(layers: Sequence[Mapping[str, Any]]) -> bool:
    """True when hls4ml's layer list carries quantizers: QKeras/binary/ternary ``*_quantizer`` entries,
    QONNX ``Quant`` nodes, HGQ ``FixedPointQuantizer`` layers."""
    for d in layers:
        if d.get("class_name") in QUANTIZER_CLASSES:
            return True
        if any(k.endswith("_quantizer") and v is not None for k, v in d.items()):
            return True
    return False


def name_config(layers: Sequence[Mapping[str, Any]], backend: str, default_precision: str,
                quantizers: bool) -> dict[str, Any]:
    """The hls4ml configuration ``config_from_keras_model`` / ``config_from_onnx_model`` /
    ``config_from_pytorch_model`` write with ``granularity='name'``, from hls4ml's layer list.

    Every layer gets its configurable types (``auto`` where hls4ml has no default) and reuse factor 1;
    with ``quantizers`` (what the Keras function does) a layer's ``*_quantizer`` entries set its
    weight/bias/result types. Written here from the parsed layer list so that every format, a Keras 2
    JSON architecture included, gets it without re-parsing the model; ``tests/frontends`` checks it
    against hls4ml's own functions.
    """
    import hls4ml
    from hls4ml.model.attributes import TypeAttribute
    from hls4ml.utils.config import _get_precision_from_quantizer

    be = hls4ml.backends.get_backend(backend)
    names: dict[str, Any] = {}
    for d in layers:
        cls_name = d["class_name"]
        if "config" in d and isinstance(d["config"], Mapping) and d["config"].get("activation") == "softmax":
            cls_name = "Softmax"
        if cls_name not in hls4ml.model.layers.layer_map:
            continue
        layer_cls = be.create_layer_class(hls4ml.model.layers.layer_map[cls_name])
        entry: dict[str, Any] = {}
        for attr in (a for a in layer_cls.expected_attributes if a.configurable):
            if isinstance(attr, TypeAttribute):
                prec = entry.setdefault("Precision", {})
                key = attr.name[:-2] if attr.name.endswith("_t") else attr.name
                prec[key] = "auto" if attr.default is None else str(attr.default)
            elif attr.name == "reuse_factor":
                entry[attr.config_name] = 1
            elif attr.default is not None:
                entry[attr.config_name] = attr.default
        if quantizers:
            for qname, q in d.items():
                if "quantizer" not in qname or q is None:
                    continue
                key = qname.lower().split("_quantizer")[0]
                key = "result" if key == "activation" else key
                precision = _get_precision_from_quantizer(q) if isinstance(q, dict) else q.hls_type
                entry.setdefault("Precision", {})[key] = str(precision)
        names[d["name"]] = entry
    return {"Model": {"Precision": {"default": default_precision}, "ReuseFactor": 1, "Strategy": "Latency",
                      "BramFactor": 1_000_000_000, "TraceOutput": False},
            "LayerName": names}


@dataclass(frozen=True, eq=False)
class ModelSource:
    """A model read by one of hls4ml's parsers.

    Attributes:
        framework: ``keras``, ``pytorch`` or ``onnx``.
        reader: which hls4ml parser read it: ``keras-v2`` (a Keras 2 JSON architecture with its H5
            weights, or a Keras 2 full-model H5, read without TensorFlow), ``keras-v3``, ``pytorch``,
            ``onnx``.
        name: the model's name (the file stem).
        layers: hls4ml's layer list (dicts, weights included). Never modified: see :meth:`layer_list`.
        inputs / outputs: the input and output layer names hls4ml's parser gives.
        files: every file the model was read from (architecture, weights, external ONNX data), for
            checksums; empty for an in-memory model.
        handle: what hls4ml's public converter takes for :meth:`reference`: the Keras 2 file config
            (``{"KerasJson"/"KerasH5": path}``), a ``keras.Model``, a ``torch.nn.Module`` or a qonnx
            ``ModelWrapper``.
        input_shape: a torch model's input shape without batch (channels-first), as hls4ml needs it.
        via: how a file hls4ml cannot read directly was brought to a form it reads (e.g. a ``.pt2``
            program exported to ONNX); empty when hls4ml reads the file itself.
        info: see below.
    """

    framework: str
    reader: str
    name: str
    layers: tuple[Mapping[str, Any], ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    files: tuple[Path, ...] = ()
    handle: Any = field(default=None, repr=False)
    input_shape: tuple[int, ...] | None = None
    via: str = ""
    #: what reading the model learned (``hls_nodes``: the names of every node of hls4ml's conversion,
    #: set by :func:`split4ml.frontends.graph.graph_from_source`)
    info: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def quantized(self) -> bool:
        """True when the model's quantizers give its types (see :func:`is_quantized`)."""
        return is_quantized(self.layers)

    def layer_list(self) -> list[dict[str, Any]]:
        """A deep copy of hls4ml's layer list (hls4ml's conversion modifies the dicts it is given)."""
        return copy.deepcopy([dict(d) for d in self.layers])

    def digest(self) -> str:
        """A sha256 identifying the model's content: its files, else its layer list's weights and
        configuration (used in cache keys)."""
        cached = self.info.get("digest")
        if cached is not None:
            return str(cached)
        h = hashlib.sha256()
        h.update(f"{self.framework}|{self.reader}|{self.via}|{self.input_shape}".encode())
        if self.files:
            for f in self.files:
                h.update(file_sha256(f).encode())
            self.info["digest"] = h.hexdigest()
            return self.info["digest"]
        import numpy as np

        for d in self.layers:
            for k in sorted(d):
                v = d[k]
                if "keras_tensor" in k:  # Keras numbers its tensors per process: not content
                    continue
                h.update(k.encode())
                if isinstance(v, np.ndarray):
                    h.update(np.ascontiguousarray(v).tobytes())
                elif isinstance(v, (str, int, float, bool, type(None), list, tuple)):
                    h.update(repr(v).encode())
                else:  # objects (quantizers, Keras objects): their class, not their address
                    h.update(type(v).__name__.encode())
        self.info["digest"] = h.hexdigest()
        return self.info["digest"]

    def base_config(self, default_precision: str) -> dict[str, Any]:
        """The hls4ml configuration of a quantized model: :func:`name_config` of its layer list."""
        return name_config(self.layers, READ_BACKEND, default_precision, quantizers=self.framework == "keras")

    def project_config(self, hls_config: Mapping[str, Any], backend: str, output_dir: str | Path,
                       project_name: str = "myproject", **backend_kwargs: Any) -> dict[str, Any]:
        """hls4ml's project configuration (``create_config`` of ``backend`` + ``HLSConfig``)."""
        from hls4ml.utils.config import create_config

        cfg = create_config(output_dir=str(output_dir), project_name=project_name, backend=backend, **backend_kwargs)
        cfg["HLSConfig"] = copy.deepcopy(dict(hls_config))
        if self.framework == "pytorch":
            cfg["HLSConfig"]["Model"].setdefault("ChannelsLastConversion", "full")
            cfg["HLSConfig"]["Model"].setdefault("TransposeOutputs", False)
            cfg["InputShape"] = self.input_shape
        return cfg

    def convert(self, hls_config: Mapping[str, Any], backend: str, output_dir: str | Path,
                project_name: str = "myproject", **backend_kwargs: Any) -> Any:
        """hls4ml's ``ModelGraph`` of the whole model, from a fresh copy of the layer list (what
        hls4ml's own ``*_to_hls`` converters do after parsing).

        Raises:
            BuildError: hls4ml cannot convert the model with this configuration (one line).
        """
        from hls4ml.model.graph import ModelGraph

        from ..errors import BuildError

        cfg = self.project_config(hls_config, backend, output_dir, project_name, **backend_kwargs)
        try:
            with quiet():
                return ModelGraph.from_layer_list(cfg, self.layer_list(), list(self.inputs), list(self.outputs))
        except Split4mlError:
            raise
        except Exception as exc:  # noqa: BLE001 - hls4ml raises bare Exceptions
            where = culprit(exc)
            raise BuildError(f"model {self.name!r}: hls4ml cannot convert {where or 'it'} ({backend}): "
                             f"{one_line(exc)}") from exc

    def reference(self, hls_config: Mapping[str, Any], backend: str, output_dir: str | Path,
                  project_name: str = "myproject", **backend_kwargs: Any) -> Any:
        """hls4ml's conversion of the original model through its public converter
        (``convert_from_keras_model`` / ``convert_from_pytorch_model`` / ``convert_from_onnx_model``, or
        ``keras_v2_to_hls`` for Keras 2 files), with ``hls_config``: the reference the boards are
        verified against. See :meth:`reference_name`.
        """
        import hls4ml

        from ..errors import BuildError

        cfg = copy.deepcopy(dict(hls_config))
        kw = dict(output_dir=str(output_dir), project_name=project_name, backend=backend, **backend_kwargs)
        try:
            with quiet():
                if self.reader == "keras-v2":
                    from hls4ml.utils.config import create_config

                    full = create_config(**kw)
                    full.update(self.handle)
                    full["HLSConfig"] = cfg
                    return hls4ml.converters.keras_v2_to_hls(full)
                if self.reader == "keras-v3":
                    return hls4ml.converters.convert_from_keras_model(self.handle, hls_config=cfg,
                                                                      allow_da_fallback=False, **kw)
                if self.reader == "pytorch":
                    cfg["InputShape"] = self.input_shape
                    cfg["Model"].setdefault("ChannelsLastConversion", "full")
                    cfg["Model"].setdefault("TransposeOutputs", False)
                    return hls4ml.converters.convert_from_pytorch_model(self.handle, hls_config=cfg, **kw)
                return hls4ml.converters.convert_from_onnx_model(self.handle, hls_config=cfg, **kw)
        except Exception as exc:  # noqa: BLE001
            raise BuildError(f"model {self.name!r}: hls4ml's {self.reference_name()} failed: {one_line(exc)}") from exc

    def reference_name(self) -> str:
        """How :meth:`reference` converts the model, e.g. ``hls4ml.converters.convert_from_onnx_model``."""
        fn = {"keras-v2": "keras_v2_to_hls", "keras-v3": "convert_from_keras_model",
              "pytorch": "convert_from_pytorch_model", "onnx": "convert_from_onnx_model"}[self.reader]
        return f"hls4ml.converters.{fn}"

    def float_predict(self) -> Callable[[Any], Any] | None:
        """The framework model's own float outputs ``x -> y`` (Keras ``predict``, torch ``forward``,
        onnxruntime), or None when the framework cannot run it here (a Keras 2 file without
        ``tf-keras``, a QONNX model). ``x`` is laid out as the hls4ml model's input."""
        import numpy as np

        if self.reader == "keras-v3":
            model = self.handle

            def keras_predict(x: Any) -> Any:
                with quiet():
                    return np.asarray(model(np.asarray(x, dtype=np.float32), training=False))

            return keras_predict
        if self.reader == "pytorch":
            import torch

            module = self.handle

            def torch_predict(x: Any) -> Any:
                a = np.asarray(x, dtype=np.float32)
                if a.ndim > 2:  # hls4ml takes channels-last data (ChannelsLastConversion 'full'); torch channels-first
                    a = np.moveaxis(a, -1, 1)
                with torch.no_grad():
                    return module(torch.as_tensor(np.ascontiguousarray(a))).numpy()

            return torch_predict
        return None


def check_single_io(source: ModelSource) -> None:
    """Refuse models with several inputs or outputs: a pipeline of boards streams one tensor in and
    one out."""
    if len(source.inputs) != 1:
        raise UnsupportedLayerError(
            f"model {source.name!r} has {len(source.inputs)} inputs ({', '.join(source.inputs)}); split4ml pipelines "
            "take one input tensor: concatenate the inputs into one before the model")
    if len(source.outputs) != 1:
        raise UnsupportedLayerError(
            f"model {source.name!r} has {len(source.outputs)} outputs ({', '.join(source.outputs)}); split4ml "
            "pipelines send one output tensor: concatenate the outputs into one")
