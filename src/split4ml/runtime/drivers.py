"""Drivers: what computes a node's piece of the model.

Every driver maps a batch ``x`` of float64 values, shape ``(n, *input_shape)``, exactly
representable in the node's input wire type, to float64 outputs ``(n, *output_shape)`` that must be
representable in its output wire type (the node refuses to send anything else).

- ``csim`` (:class:`CsimDriver`): the stage's hls4ml C-simulation library, compiled by
  :func:`split4ml.hls.csim.compile_stage` and loaded from the content-addressed cache. Bit-exact
  with the firmware's C++.
- ``reference`` (:class:`ReferenceDriver`): numpy, for hosts without a compiler. Mode ``fixed``
  replays hls4ml's fixed-point arithmetic where it is simple integer arithmetic: a Dense layer's
  products are cast to the accumulator type (its rounding and overflow modes), summed with the
  accumulator's overflow mode starting from the bias cast to it, then cast to the result type;
  ReLU and linear activations and Flatten are exact casts. Softmax, sigmoid and tanh (hls4ml uses
  lookup tables) and BatchNormalization are computed in float64 and quantised to the result type,
  so they are close to, not bit-exact with, the firmware. Mode ``float`` computes every layer in
  float64 with unquantised weights and quantises only the stage output to its wire type. Conv and
  pooling layers are not supported (use ``csim``).
- ``pynq``: the stage's bitstream on a PYNQ board (:mod:`split4ml.runtime.pynq_driver`).

The reference model of a stage is stored as an ``.npz`` (:func:`save_reference_model`): layer
descriptions as JSON plus the weight arrays, so a node does not need Keras or the plan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import RuntimeFault, UnsupportedLayerError
from ..fixed import FixedType
from ..stages import Stage

DRIVERS = ("csim", "reference", "pynq")
REFERENCE_MODES = ("fixed", "float")


class Driver(Protocol):
    """Computes one node's piece: float64 ``(n, *input_shape)`` -> float64 ``(n, *output_shape)``."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class CsimDriver:
    """The stage's compiled hls4ml C-simulation (see :class:`split4ml.hls.csim.CsimModel`)."""

    def __init__(self, library: str | Path, project_name: str, input_shape: tuple[int, ...],
                 output_shape: tuple[int, ...]) -> None:
        from ..hls.csim import CsimModel

        if not Path(library).is_file():
            raise RuntimeFault(f"C-simulation library {library} does not exist; compile the stage first "
                               "('split4ml verify PLAN' fills the cache) or run the node from the plan file")
        self.model = CsimModel(Path(library), project_name, input_shape, output_shape)
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ fixed-point helpers
def _cast(ints: np.ndarray, frac: int, to: FixedType) -> np.ndarray:
    """Integers with ``frac`` fractional bits cast to ``to`` (its rounding and overflow modes): the
    integers of ``to`` (``to.fractional`` fractional bits), as ``ap_fixed``'s conversion does."""
    v = np.asarray(ints, dtype=np.int64)
    shift = frac - to.fractional
    if shift < 0:
        v = v << (-shift)
    elif shift > 0:
        q = v >> shift  # floor
        rem = v - (q << shift)
        half = 1 << (shift - 1)
        mode = to.rounding
        if mode == "TRN":
            v = q
        elif mode == "RND":
            v = q + (rem >= half)
        elif mode == "RND_CONV":
            v = q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
        elif mode == "TRN_ZERO":
            v = q + ((v < 0) & (rem != 0))
        elif mode == "RND_ZERO":
            v = q + ((rem > half) | ((rem == half) & (v < 0)))
        elif mode == "RND_INF":
            v = q + ((rem > half) | ((rem == half) & (v >= 0)))
        elif mode == "RND_MIN_INF":
            v = q + (rem > half)
        else:  # pragma: no cover - FixedType validates modes
            raise RuntimeFault(f"rounding mode {mode} is not modelled")
        v = v.astype(np.int64)
    lo = -(1 << (to.width - 1)) if to.signed else 0
    hi = (1 << (to.width - 1)) - 1 if to.signed else (1 << to.width) - 1
    if to.saturation == "WRAP":
        return ((v - lo) & ((1 << to.width) - 1)) + lo
    if to.saturation == "SAT_ZERO":
        return np.where((v < lo) | (v > hi), 0, v)
    if to.saturation == "SAT_SYM" and to.signed:
        return np.clip(v, -hi, hi)
    return np.clip(v, lo, hi)


def _to_ints(values: np.ndarray, t: FixedType) -> np.ndarray:
    """Float values (already quantised) as integers of ``t``."""
    return np.rint(np.asarray(values, dtype=np.float64) * math.ldexp(1.0, t.fractional)).astype(np.int64)


def _quantize_float(values: np.ndarray, t: FixedType) -> np.ndarray:
    """Float values cast into ``t`` (any rounding mode), via an exact integer detour where possible."""
    frac = min(60 - max(t.width, 1), 40)
    scaled = np.floor(np.asarray(values, dtype=np.float64) * math.ldexp(1.0, frac))
    return _cast(scaled.astype(np.int64), frac, t).astype(np.float64) * t.lsb


# ------------------------------------------------------------------------------ reference model
_REF_KINDS = ("Dense", "Activation", "Flatten", "BatchNormalization")


def _float_act(name: str | None, v: np.ndarray) -> np.ndarray:
    if name in (None, "linear"):
        return v
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-v))
    if name == "tanh":
        return np.tanh(v)
    if name == "softmax":
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise UnsupportedLayerError(f"the reference driver has no activation {name!r}")


def save_reference_model(stage: Stage, path: str | Path) -> Path:
    """Write what :class:`ReferenceDriver` needs of ``stage`` (layers, weights, types) to ``path`` (.npz).

    Raises:
        UnsupportedLayerError: the stage has a layer the reference driver cannot compute.
    """
    layers = []
    arrays: dict[str, np.ndarray] = {}
    for i, layer in enumerate(stage.graph.body):
        if layer.kind not in _REF_KINDS:
            raise UnsupportedLayerError(f"{stage.name}: layer {layer.name!r} ({layer.kind}) is not supported by the "
                                        f"reference driver (it supports {list(_REF_KINDS)}); use --driver csim")
        s = stage.settings[layer.name]
        layers.append({"name": layer.name, "kind": layer.kind, "activation": layer.activation,
                       "output_shape": list(layer.output_shape), "precision": s.precision.as_dict(),
                       "params": {k: v for k, v in layer.params.items() if isinstance(v, (int, float, str, bool))},
                       "weights": sorted(layer.weights)})
        for w, arr in layer.weights.items():
            arrays[f"w{i}_{w}"] = np.asarray(arr, dtype=np.float64)
    meta = {"stage": stage.name, "input_type": str(stage.input_type), "output_type": str(stage.output_type),
            "input_shape": list(stage.input_shape), "output_shape": list(stage.output_shape), "layers": layers}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as fh:
        np.savez(fh, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return p


class ReferenceDriver:
    """numpy evaluation of a stage (see the module docstring for what is exact in ``fixed`` mode)."""

    def __init__(self, model: str | Path | Stage, mode: str = "fixed") -> None:
        if mode not in REFERENCE_MODES:
            raise RuntimeFault(f"reference mode {mode!r} is not one of {REFERENCE_MODES}")
        if isinstance(model, Stage):
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                self._load(save_reference_model(model, Path(tmp) / "stage.npz"))
        else:
            self._load(Path(model))
        self.mode = mode

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise RuntimeFault(f"reference model {path} does not exist")
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            self.weights = {k: np.array(data[k]) for k in data.files if k != "meta"}
        self.meta = meta
        self.input_type = FixedType.parse(meta["input_type"])
        self.output_type = FixedType.parse(meta["output_type"])
        self.input_shape = tuple(meta["input_shape"])
        self.output_shape = tuple(meta["output_shape"])
        self.layers: list[dict[str, Any]] = meta["layers"]

    def _w(self, i: int, name: str) -> np.ndarray:
        return self.weights[f"w{i}_{name}"]

    def predict(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        n = a.shape[0]
        a = a.reshape((n, *self.input_shape))
        if self.mode == "float":
            for i, layer in enumerate(self.layers):
                a = self._float_layer(i, layer, a)
            return _quantize_float(a, self.output_type).reshape((n, *self.output_shape))
        ints, t = _to_ints(a, self.input_type), self.input_type
        for i, layer in enumerate(self.layers):
            ints, t = self._fixed_layer(i, layer, ints, t)
        return (ints.astype(np.float64) * t.lsb).reshape((n, *self.output_shape))

    def _float_layer(self, i: int, layer: Mapping[str, Any], a: np.ndarray) -> np.ndarray:
        kind = layer["kind"]
        if kind == "Dense":
            out = a @ self._w(i, "kernel")
            if "bias" in layer["weights"]:
                out = out + self._w(i, "bias")
            return _float_act(layer["activation"], out)
        if kind == "Activation":
            return _float_act(layer["activation"], a)
        if kind == "Flatten":
            return a.reshape(a.shape[0], -1)
        return self._batchnorm(i, layer, a)

    def _batchnorm(self, i: int, layer: Mapping[str, Any], a: np.ndarray) -> np.ndarray:
        eps = float(layer["params"].get("epsilon", 1e-3))
        ws = layer["weights"]
        gamma = self._w(i, "gamma") if "gamma" in ws else 1.0
        beta = self._w(i, "beta") if "beta" in ws else 0.0
        return (a - self._w(i, "moving_mean")) / np.sqrt(self._w(i, "moving_variance") + eps) * gamma + beta

    def _fixed_layer(self, i: int, layer: Mapping[str, Any], ints: np.ndarray,
                     t: FixedType) -> tuple[np.ndarray, FixedType]:
        kind = layer["kind"]
        prec = {k: FixedType.parse(v) for k, v in layer["precision"].items()}
        res = prec["result"]
        if kind == "Dense":
            w, b, acc = prec["weight"], prec["bias"], prec["accum"]
            if t.width + w.width > 62:
                raise RuntimeFault(f"layer {layer['name']}: {t} x {w} products exceed 62 bits; use mode 'float'")
            w_int = _to_ints(_quantize_float(self._w(i, "kernel"), w), w)
            frac = t.fractional + w.fractional
            lead = ints.shape[:-1]
            ints = ints.reshape(-1, ints.shape[-1])  # Dense acts on the last axis
            prods = _cast(ints[:, :, None] * w_int[None, :, :], frac, acc)  # (n, n_in, n_out), in accum
            start = np.zeros(w_int.shape[1], dtype=np.int64)
            if "bias" in layer["weights"]:
                start = _cast(_to_ints(_quantize_float(self._w(i, "bias"), b), b), b.fractional, acc)
            if acc.saturation == "WRAP":  # modular: the order of the additions does not matter
                total = _cast(prods.sum(axis=1) + start[None, :], acc.fractional, acc)
            else:  # saturating accumulator: add in hls4ml's order, input by input, from the bias
                total = np.broadcast_to(start[None, :], (ints.shape[0], start.shape[0])).copy()
                for k in range(prods.shape[1]):
                    total = _cast(total + prods[:, k, :], acc.fractional, acc)
            out = _cast(total, acc.fractional, res).reshape((*lead, w_int.shape[1]))
            act = layer["activation"]
            if act in (None, "linear"):
                return out, res
            if act == "relu":
                return np.maximum(out, 0), res
            vals = _float_act(act, out.astype(np.float64) * res.lsb)
            return _to_ints(_quantize_float(vals, res), res), res
        if kind == "Flatten":
            return ints.reshape(ints.shape[0], -1), t
        if kind == "Activation":
            act = layer["activation"]
            if act in (None, "linear"):
                return _cast(ints, t.fractional, res), res
            if act == "relu":
                return _cast(np.maximum(ints, 0), t.fractional, res), res
            vals = _float_act(act, ints.astype(np.float64) * t.lsb)
            return _to_ints(_quantize_float(vals, res), res), res
        vals = self._batchnorm(i, layer, ints.astype(np.float64) * t.lsb)
        return _to_ints(_quantize_float(vals, res), res), res

    def close(self) -> None:
        pass


def make_driver(name: str, artifacts: Mapping[str, Any], input_shape: tuple[int, ...],
                output_shape: tuple[int, ...], input_type: FixedType, output_type: FixedType,
                reference_mode: str = "fixed", bitstream: str | None = None) -> Driver:
    """The driver ``name`` for a node whose artifacts are ``artifacts`` (see :class:`~.spec.NodeSpec`).

    Raises:
        RuntimeFault: unknown driver, or its artifact is missing.
    """
    if name == "csim":
        cs = artifacts.get("csim")
        if not cs:
            raise RuntimeFault("driver csim: the runtime spec has no C-simulation library for this node; run the "
                               "node from the plan file, or write the spec with 'split4ml run --emulate'")
        return CsimDriver(cs["library"], cs.get("project_name", "myproject"), input_shape, output_shape)
    if name == "reference":
        ref = artifacts.get("reference")
        if not ref:
            raise RuntimeFault("driver reference: the runtime spec has no reference model for this node")
        return ReferenceDriver(ref, mode=reference_mode)
    if name == "pynq":
        from .pynq_driver import PynqDriver

        bit = bitstream or artifacts.get("bitstream")
        if not bit:
            raise RuntimeFault("driver pynq: no bitstream; pass --bitstream stage_<i>.bit (with its .hwh beside it)")
        return PynqDriver(bit, input_type, output_type, input_shape, output_shape)
    raise RuntimeFault(f"unknown driver {name!r}; use one of {DRIVERS}")
