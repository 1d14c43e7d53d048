"""The rule4ml estimator: whole segments priced by rule4ml's pre-trained predictors.

rule4ml (IMPETUS-UdeS, GPL-3.0; ``pip install "split4ml[rule4ml]"``) estimates the resources and
cycles of a *whole* hls4ml model with graph neural networks trained on synthesised hls4ml projects.
Its estimates are not additive over layers, so this estimator prices a segment (the layers of one
board) as one model: the planner calls :meth:`Rule4mlEstimator.segment_cost` for every candidate
stage (``partition_chain(..., segment_cost=...)``).

How a segment is priced:

* The segment's layers are renamed ``l0, l1, ...`` (the cache key depends on content, not names),
  rebuilt as a Keras model with :func:`split4ml.hls.to_keras.keras_model_from_graph` (layers
  without weights get zeros: rule4ml reads shapes and parameter counts, never values) and given to
  ``MultiModelWrapper.predict`` with the board, the strategy, the precision and per-layer reuse
  factors (``layer_name`` entries), for hls4ml 1.1.0 and Vivado 2023.2 (the newest versions its
  predictors accept; both are constructor arguments).
* One call per segment and settings: rule4ml's GNN normalises a whole call as one graph, so a
  prediction changes with what else is in the same call.
* Results are cached in memory and on disk (``$SPLIT4ML_CACHE/rule4ml/``, else
  ``~/.cache/split4ml/rule4ml/``), one JSON file per request, keyed by a SHA-256 of the segment's
  canonical description, the settings, the board and the rule4ml/hls4ml/Vivado versions.
* The segment cost is the board shell (from the board catalogue, as the analytic estimator) plus
  rule4ml's figures (which describe the hls4ml IP). BRAM is in 18 Kb blocks; CYCLES and INTERVAL
  are the latency and the initiation interval in cycles of rule4ml's training clock.

**Range.** Outside what rule4ml was trained on, a segment is priced by the fallback estimator
(analytic by default) and a :class:`EstimatorFallbackWarning` says why (once per reason);
:meth:`Rule4mlEstimator.segment_source` tells which estimator priced a segment, and the plan
records it per stage (``estimate_source``). Its training data (rule4ml's ``data_gen`` defaults):

* boards pynq-z2, zcu102, alveo-u200, alveo-u250 (matched by board name or FPGA part);
* io_parallel only; a 10 ns (100 MHz) clock: another board clock falls back unless
  ``strict_clock=False`` (rule4ml has no clock input, so its cycles are at 100 MHz);
* reuse factors 1..64 (powers of two) and precisions ``ap_fixed<2,1>`` .. ``ap_fixed<16,6>``, one
  precision for the whole model: every layer's weight, bias, result and accumulator widths must be
  one width in 2..16 (rule4ml ignores integer bits and rounding modes);
* one strategy per model (Latency or Resource): a segment mixing them falls back;
* layer kinds Dense, Conv1D, Conv2D, pooling, Flatten, BatchNormalization, Activation (relu,
  sigmoid, tanh, softmax, linear).

Its generator also capped layers at 4,096 parameters and networks at 20 Dense layers; larger
segments are priced by rule4ml all the same (extrapolation: ``benchmarks/estimators.py`` measures
how well that goes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..boards import Board
from ..errors import Split4mlError
from ..ir import ACTIVATIONS, COMPUTE_KINDS, POOL_KINDS, Layer
from ..settings import LayerSettings
from .base import Cost, Estimator, layers_cost

log = logging.getLogger(__name__)

#: rule4ml's boards and their FPGA parts (``rule4ml/parsers/supported_boards.json``).
RULE4ML_BOARDS: Mapping[str, str] = {
    "pynq-z2": "xc7z020clg400-1",
    "zcu102": "xczu9eg-ffvb1156-2-e",
    "alveo-u200": "xcu200-fsgd2104-2-e",
    "alveo-u250": "xcu250-figd2104-2L-e",
}
#: Fabric clock of rule4ml's training syntheses (``data_gen/nn_synth.py``: clock period 10 ns).
TRAINED_CLOCK_MHZ = 100.0
#: Relative clock difference still taken as the training clock.
CLOCK_TOLERANCE = 0.02
#: Total bit widths of the training precisions (ap_fixed<2,1>, <8,3>, <8,4>, <16,6>).
MIN_BITS, MAX_BITS = 2, 16
#: Largest reuse factor of the training data (powers of two 1..64).
MAX_REUSE_FACTOR = 64
#: Layer kinds rule4ml's parser and predictors know.
SUPPORTED_KINDS = ("Input", *COMPUTE_KINDS, *POOL_KINDS, "Flatten", "BatchNormalization", "Activation")
#: hls4ml and Vivado versions asked of the predictors (the newest ones they accept).
HLS4ML_VERSION = "1.1.0"
VIVADO_VERSION = "2023.2"
#: Bumped when the request description or the stored result changes (invalidates old entries).
CACHE_FORMAT = "split4ml-rule4ml-1"
CACHE_ENV = "SPLIT4ML_CACHE"
#: rule4ml output columns -> Cost fields.
_COLUMNS = {"LUT": "lut", "FF": "ff", "DSP": "dsp", "BRAM": "bram18", "CYCLES": "latency_cycles",
            "INTERVAL": "ii_cycles"}
_INSTALL_HINT = ('install it with: pip install "split4ml[rule4ml]" (it pins torch==2.13.0; where pip would pick a '
                 "CUDA build, first run: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu)")


class EstimatorFallbackWarning(UserWarning):
    """A segment outside an estimator's range was priced by its fallback estimator."""


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """Where rule4ml results are kept: ``cache_dir``, else ``$SPLIT4ML_CACHE/rule4ml``, else
    ``~/.cache/split4ml/rule4ml``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / "rule4ml"
    return Path.home() / ".cache" / "split4ml" / "rule4ml"


def _norm_part(part: str) -> str:
    return part.lower().replace("-", "").replace("_", "")


def rule4ml_board(board: Board) -> str | None:
    """rule4ml's name for ``board`` (by name, else by FPGA part), or None when it has no predictor for it."""
    if board.name.lower() in RULE4ML_BOARDS:
        return board.name.lower()
    part = _norm_part(board.part)
    for name, p in RULE4ML_BOARDS.items():
        if _norm_part(p) == part:
            return name
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True, eq=False)
class Rule4mlRequest:
    """One rule4ml prediction: a segment (layers renamed ``l0, l1, ...``) and its hls4ml settings.

    Attributes:
        layers: the segment's layers, renamed, in order (no Input layer).
        input_shape: shape of the segment's input, without batch.
        hls_config: the ``hls_configs`` entry given to rule4ml (board, model strategy/precision/RF,
            per-layer reuse factors).
        hls4ml_version, vivado_version: versions asked of the predictors.
        key: SHA-256 of the canonical description (the cache key).
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]
    hls_config: Mapping[str, Any]
    hls4ml_version: str
    vivado_version: str
    key: str = field(default="")

    def describe(self) -> dict[str, Any]:
        """The canonical, JSON-able description the key is computed from."""
        layers = []
        for lyr in self.layers:
            layers.append({
                "kind": lyr.kind, "input_shape": list(lyr.input_shape), "output_shape": list(lyr.output_shape),
                "activation": lyr.activation or "linear", "params": _jsonable(dict(lyr.params)),
                "weights": {k: list(np.shape(v)) for k, v in sorted(lyr.weights.items())},
            })
        return {"format": CACHE_FORMAT, "input_shape": list(self.input_shape), "layers": layers,
                "hls_config": _jsonable(dict(self.hls_config)), "hls4ml_version": self.hls4ml_version,
                "vivado_version": self.vivado_version}


def _with_key(req: Rule4mlRequest, rule4ml_version: str) -> Rule4mlRequest:
    desc = {**req.describe(), "rule4ml_version": rule4ml_version}
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()
    return Rule4mlRequest(layers=req.layers, input_shape=req.input_shape, hls_config=req.hls_config,
                          hls4ml_version=req.hls4ml_version, vivado_version=req.vivado_version, key=key)


#: A predictor: one request in, rule4ml's figures out (keys of :data:`_COLUMNS`' values).
Predictor = Callable[[Rule4mlRequest], Mapping[str, float]]


def installed_rule4ml_version() -> str | None:
    """The installed rule4ml version, or None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("rule4ml")
    except metadata.PackageNotFoundError:
        return None


def _zero_weights(layer: Layer) -> dict[str, np.ndarray]:
    """Weights of the right shapes (zeros) for a layer that carries none (rule4ml reads only counts)."""
    p = layer.params
    if layer.kind == "Dense":
        units = int(p.get("units", layer.output_shape[-1]))
        w = {"kernel": np.zeros((int(layer.input_shape[-1]), units), dtype=np.float32)}
        if p.get("use_bias", True):
            w["bias"] = np.zeros((units,), dtype=np.float32)
        return w
    if layer.kind in ("Conv1D", "Conv2D"):
        filters = int(p.get("filters", layer.output_shape[-1]))
        ks = p.get("kernel_size", 1)
        ks = (int(ks),) * (1 if layer.kind == "Conv1D" else 2) if isinstance(ks, (int, np.integer)) else tuple(
            int(k) for k in ks)
        w = {"kernel": np.zeros((*ks, int(layer.input_shape[-1]), filters), dtype=np.float32)}
        if p.get("use_bias", True):
            w["bias"] = np.zeros((filters,), dtype=np.float32)
        return w
    if layer.kind == "BatchNormalization":
        c = int(layer.output_shape[-1])
        return {"gamma": np.ones((c,), np.float32), "beta": np.zeros((c,), np.float32),
                "moving_mean": np.zeros((c,), np.float32), "moving_variance": np.ones((c,), np.float32)}
    return {}


class Rule4mlPredictor:
    """The real predictor: rule4ml's default GNNs, loaded on first use.

    Loading imports torch, TensorFlow/Keras and rule4ml (about 10 s) and sets torch to one thread
    (``torch.set_num_threads(1)``: calls then take 0.1-0.4 s instead of 0.3-1.7 s).

    Raises:
        Split4mlError: rule4ml is not installed (the message says how to install it).
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._wrapper: Any = None

    def _load(self) -> Any:
        if self._wrapper is None:
            if installed_rule4ml_version() is None:
                raise Split4mlError(f"the rule4ml estimator needs the rule4ml package, which is not installed; "
                                    f"{_INSTALL_HINT}; or use --estimator analytic")
            import torch

            torch.set_num_threads(self.threads)
            import rule4ml.parsers.network_parser as parser
            from rule4ml.models.wrappers import MultiModelWrapper

            # rule4ml finds the closest valid reuse factor by testing every RF up to n_in * n_out, six
            # times per prediction (about 1 s for a few 128x128 layers); split4ml's divisor enumeration
            # of the same hls4ml rule gives the same answer at once.
            parser.get_closest_reuse_factor = _closest_reuse_factor

            wrapper = MultiModelWrapper()
            wrapper.load_default_models()
            self._wrapper = wrapper
        return self._wrapper

    def __call__(self, request: Rule4mlRequest) -> dict[str, float]:
        wrapper = self._load()
        model = keras_segment(request)
        df = wrapper.predict(model, hls_configs=dict(request.hls_config), hls4ml_versions=request.hls4ml_version,
                             vivado_versions=request.vivado_version, verbose=0)
        if len(df) != 1:
            raise Split4mlError(f"rule4ml returned {len(df)} rows for one segment; expected one")
        row = df.iloc[0]
        return {field_: float(row[col]) for col, field_ in _COLUMNS.items()}


def _closest_reuse_factor(n_in: Any, n_out: Any, chosen_rf: Any) -> int:
    """rule4ml's (and hls4ml's) ``get_closest_reuse_factor``, from the valid set's closed form."""
    from .hls_rules import closest_reuse_factor, valid_reuse_factors_for

    return closest_reuse_factor(valid_reuse_factors_for(int(n_in), int(n_out)), int(chosen_rf))


def keras_segment(request: Rule4mlRequest) -> Any:
    """The request's segment as a built Keras model, as rule4ml's parser needs it.

    Layers that own no weights (pooling, Flatten, activations) are built explicitly with their
    input shape: rule4ml reads every layer's input shape from Keras' build record.
    """
    from ..hls.to_keras import keras_model_from_graph
    from ..stages import chain_graph

    layers = [lyr if lyr.weights or not _zero_weights(lyr) else lyr.with_(weights=_zero_weights(lyr))
              for lyr in request.layers]
    graph = chain_graph("segment", "l_input", layers, request.input_shape)
    model = keras_model_from_graph(graph)
    model.build((None, *request.input_shape))
    for klayer in model.layers:
        if klayer.__class__.__name__ == "InputLayer":
            continue
        if getattr(klayer, "_build_shapes_dict", None) is None:
            shape = (None, *(int(d) for d in klayer.input.shape[1:]))
            # rule4ml reads the input shape from Keras 3's private build record, which Keras fills only
            # for layers that own weights; record it for the others.
            klayer._build_shapes_dict = {"input_shape": shape}
    return model


class _DiskCache:
    """One JSON file per request under ``root/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, float] | None:
        p = self._path(key)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict) or set(result) != set(_COLUMNS.values()):
            return None
        return {k: float(v) for k, v in result.items()}

    def put(self, key: str, request: Rule4mlRequest, result: Mapping[str, float]) -> None:
        p = self._path(key)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": key, "request": request.describe(), "result": dict(result)}))
            os.replace(tmp, p)
        except OSError as exc:  # a read-only cache only costs time
            log.warning("rule4ml cache: cannot write %s: %s", p, exc)


class Rule4mlEstimator:
    """Segments priced by rule4ml (see the module docstring); outside its range, by ``fallback``.

    Args:
        fallback: estimator for segments rule4ml does not cover (default: the analytic estimator).
        cache_dir: cache directory (default :func:`cache_root`); ``use_disk_cache=False`` keeps
            results in memory only.
        predictor: the rule4ml call (default :class:`Rule4mlPredictor`; tests pass a stand-in).
        strict_clock: fall back when the board clock is not rule4ml's 100 MHz training clock.
        strict_precision: fall back when the segment's layers do not share one bit width; with
            ``False`` (for measurements only) the first compute layer's weight width stands for the
            whole model, as rule4ml takes one precision.
        hls4ml_version, vivado_version: versions asked of rule4ml's predictors.

    Attributes:
        calls: rule4ml predictions made (cache misses).
        memory_hits, disk_hits: requests answered from the caches.
        fallbacks: how many segments each fallback reason covered.
    """

    name = "rule4ml"
    #: Segment costs are not sums of layer costs: the planner must price whole segments.
    additive = False

    def __init__(self, fallback: Estimator | None = None, cache_dir: Path | str | None = None,
                 predictor: Predictor | None = None, strict_clock: bool = True, strict_precision: bool = True,
                 use_disk_cache: bool = True,
                 hls4ml_version: str = HLS4ML_VERSION, vivado_version: str = VIVADO_VERSION) -> None:
        if fallback is None:
            from .analytic import AnalyticEstimator

            fallback = AnalyticEstimator()
        self.fallback = fallback
        self.predictor: Predictor = predictor if predictor is not None else Rule4mlPredictor()
        self.strict_clock = strict_clock
        self.strict_precision = strict_precision
        self.hls4ml_version = hls4ml_version
        self.vivado_version = vivado_version
        self.rule4ml_version = installed_rule4ml_version() or "none"
        self._disk = _DiskCache(cache_root(cache_dir)) if use_disk_cache else None
        self._memory: dict[str, dict[str, float]] = {}
        self._warned: set[str] = set()
        self.calls = 0
        self.memory_hits = 0
        self.disk_hits = 0
        self.fallbacks: Counter[str] = Counter()
        #: called as ``on_request(calls, memory_hits + disk_hits)`` after every priced segment, so a
        #: caller (the CLI's progress bar) can show how far a plan's rule4ml estimation has come
        self.on_request: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------ range
    def unsupported_reason(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                           board: Board) -> str | None:
        """Why rule4ml cannot price this segment (None when it can)."""
        body = [lyr for lyr in layers if lyr.kind != "Input"]
        if not body:
            return "the segment has no layers"
        if io_type != "io_parallel":
            return f"io_type {io_type} (rule4ml was trained on io_parallel designs only)"
        if rule4ml_board(board) is None:
            return (f"board {board.name} (part {board.part}) has no rule4ml predictor; rule4ml knows "
                    f"{', '.join(RULE4ML_BOARDS)}")
        if self.strict_clock and abs(board.clock_mhz - TRAINED_CLOCK_MHZ) > CLOCK_TOLERANCE * TRAINED_CLOCK_MHZ:
            return (f"board {board.name} runs at {board.clock_mhz:g} MHz; rule4ml's training designs were "
                    f"synthesised at {TRAINED_CLOCK_MHZ:g} MHz")
        widths: set[int] = set()
        strategies: set[str] = set()
        for lyr in body:
            if lyr.kind not in SUPPORTED_KINDS:
                return f"layer {lyr.name!r} is a {lyr.kind}, which rule4ml does not model"
            act = lyr.activation or "linear"
            if act not in ACTIVATIONS:
                return f"layer {lyr.name!r} has activation {act!r}, which rule4ml does not model"
            s = settings[lyr.name]
            p = s.precision
            if lyr.kind in COMPUTE_KINDS:
                widths.update((p.weight.width, p.bias.width, p.result.width, p.accum.width) if self.strict_precision
                              else (p.weight.width,))
                strategies.add(s.strategy)
                if s.reuse_factor > MAX_REUSE_FACTOR:
                    return (f"layer {lyr.name!r} has reuse factor {s.reuse_factor}; rule4ml was trained on reuse "
                            f"factors 1..{MAX_REUSE_FACTOR}")
            elif self.strict_precision:
                widths.add(p.result.width)
        if not widths:  # not strict and no compute layer
            widths = {settings[body[0].name].precision.result.width}
        if len(widths) > 1:
            return (f"the segment mixes bit widths {sorted(widths)}; rule4ml takes one precision for the whole "
                    "model (weights, biases, results and accumulators of one width)")
        width = widths.pop()
        if not MIN_BITS <= width <= MAX_BITS:
            return f"precision of {width} bits; rule4ml was trained on {MIN_BITS} to {MAX_BITS} bits"
        if len(strategies) > 1:
            return "the segment mixes the Latency and Resource strategies; rule4ml takes one strategy per model"
        return None

    # ------------------------------------------------------------------ requests
    def request(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], board: Board) -> Rule4mlRequest:
        """The rule4ml request for a segment inside rule4ml's range."""
        body = [lyr for lyr in layers if lyr.kind != "Input"]
        renamed: list[Layer] = []
        layer_rf: dict[str, dict[str, int]] = {}
        rfs: list[int] = []
        strategy = "Latency"
        precision = None
        for i, lyr in enumerate(body):
            name = f"l{i}"
            renamed.append(lyr.with_(name=name, inputs=()))
            s = settings[lyr.name]
            if lyr.kind in COMPUTE_KINDS:
                layer_rf[name] = {"reuse_factor": int(s.reuse_factor)}
                rfs.append(int(s.reuse_factor))
                strategy = s.strategy
                if precision is None:
                    precision = s.precision.weight
        if precision is None:
            precision = settings[body[0].name].precision.result
        # hls4ml's Model ReuseFactor applies to layers without their own; use the most common one.
        counts = Counter(rfs)
        model_rf = min(counts, key=lambda r: (-counts[r], r)) if counts else 1
        hls_config = {
            "board": rule4ml_board(board),
            "model": {"strategy": strategy, "precision": f"ap_fixed<{precision.width},{precision.integer}>",
                      "reuse_factor": model_rf},
            "layer_name": layer_rf,
        }
        req = Rule4mlRequest(layers=tuple(renamed), input_shape=body[0].input_shape, hls_config=hls_config,
                             hls4ml_version=self.hls4ml_version, vivado_version=self.vivado_version)
        return _with_key(req, self.rule4ml_version)

    def predict(self, request: Rule4mlRequest) -> dict[str, float]:
        """rule4ml's figures for ``request``: from memory, the disk cache, or one rule4ml call."""
        try:
            return self._predict(request)
        finally:
            if self.on_request is not None:
                self.on_request(self.calls, self.memory_hits + self.disk_hits)

    def _predict(self, request: Rule4mlRequest) -> dict[str, float]:
        hit = self._memory.get(request.key)
        if hit is not None:
            self.memory_hits += 1
            return hit
        if self._disk is not None:
            hit = self._disk.get(request.key)
            if hit is not None:
                self.disk_hits += 1
                self._memory[request.key] = hit
                return hit
        raw = self.predictor(request)
        self.calls += 1
        result = {k: max(0.0, float(raw[k])) if math.isfinite(float(raw[k])) else 0.0 for k in _COLUMNS.values()}
        self._memory[request.key] = result
        if self._disk is not None:
            self._disk.put(request.key, request, result)
        return result

    def prefetch(self, segments: Sequence[tuple[Sequence[Layer], Mapping[str, LayerSettings], str, Board]],
                 progress: Callable[[int, int], None] | None = None) -> int:
        """Price many segments in one pass (one rule4ml call each, cached); returns the calls made."""
        before = self.calls
        for n, (layers, settings, io_type, board) in enumerate(segments):
            if progress is not None:
                progress(n, len(segments))
            if self.unsupported_reason(layers, settings, io_type, board) is None:
                self.predict(self.request(layers, settings, board))
        if progress is not None:
            progress(len(segments), len(segments))
        return self.calls - before

    # ------------------------------------------------------------------ the Estimator protocol
    def shell_cost(self, board: Board) -> Cost:
        """The board shell from the board catalogue (rule4ml estimates the hls4ml IP only)."""
        return Cost(lut=board.shell_lut, ff=board.shell_ff, dsp=board.shell_dsp, bram18=board.shell_bram18)

    def segment_source(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                       board: Board) -> str:
        """``rule4ml``, or the fallback estimator's name when the segment is outside rule4ml's range."""
        if self.unsupported_reason(layers, settings, io_type, board) is None:
            return self.name
        inner = getattr(self.fallback, "segment_source", None)
        return inner(layers, settings, io_type, board) if callable(inner) else getattr(self.fallback, "name", "?")

    def ip_cost(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                board: Board) -> Cost:
        """Cost of the segment's hls4ml IP (no board shell)."""
        reason = self.unsupported_reason(layers, settings, io_type, board)
        if reason is not None:
            self._fell_back(reason, layers)
            return layers_cost(self.fallback, layers, settings, io_type, board)
        r = self.predict(self.request(layers, settings, board))
        return Cost(**r)

    def segment_cost(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                     board: Board) -> Cost:
        """Board shell plus the segment priced as one model."""
        return self.shell_cost(board) + self.ip_cost(layers, settings, io_type, board)

    def layer_cost(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        """One layer priced alone as a model (rule4ml is not additive: layer costs do not sum to a
        segment's cost; the planner uses :meth:`segment_cost`)."""
        return self.ip_cost([layer], {layer.name: settings}, io_type, board)

    def _fell_back(self, reason: str, layers: Sequence[Layer]) -> None:
        self.fallbacks[reason] += 1
        if reason in self._warned:
            return
        self._warned.add(reason)
        names = [lyr.name for lyr in layers if lyr.kind != "Input"]
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        msg = (f"rule4ml estimator: {reason}; the segment of layers {shown} and others like it are priced by "
               f"the {getattr(self.fallback, 'name', 'fallback')} estimator instead")
        log.info(msg)
        warnings.warn(msg, EstimatorFallbackWarning, stacklevel=4)

    def stats(self) -> dict[str, Any]:
        """Calls, cache hits and fallback reasons so far."""
        return {"calls": self.calls, "memory_hits": self.memory_hits, "disk_hits": self.disk_hits,
                "fallbacks": dict(self.fallbacks)}
