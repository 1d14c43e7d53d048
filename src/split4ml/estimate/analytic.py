"""The analytic estimator: split4ml's default, per layer and additive.

Every figure is a closed formula over the layer's shape, its hls4ml settings (reuse factor,
strategy, precisions), the io type and the board (DSP slice shape and clock). The formulas follow
the HLS code that hls4ml 1.3 generates (``templates/vivado/nnet_utils``); each coefficient below is
a named module constant with its source or reasoning. The planner calls ``layer_cost`` thousands of
times, so it is plain Python arithmetic; the only numpy work is a one-off pass over a layer's
weights (zero and bit-span statistics of the quantised constants), memoised per estimator.

Units: ``lut``, ``ff``, ``dsp``, ``bram18`` are device primitives (BRAM in 18 Kb blocks);
``latency_cycles`` and ``ii_cycles`` are cycles of the board's fabric clock.

Conventions and assumptions (the estimator sees one layer at a time):

* The width of a layer's *input* values is ``settings.precision.input`` when it is set (the layers
  of a quantized model, whose widths change from layer to layer), else ``settings.precision.result``
  (in a float model with one result precision this is the producer's result type, and split4ml
  defaults the model input to the result precision as well).
* A fused activation (``Dense(..., activation="relu")``) is costed as hls4ml builds it: a separate
  activation layer after the layer, on the layer's outputs. ``linear`` costs nothing (hls4ml
  removes linear activations).
* BatchNormalization is costed as a standalone layer, although hls4ml folds a BatchNormalization
  that directly follows a Dense/Conv into its weights; this errs on the safe side.
* Parallelization factor 1 for convolutions (hls4ml's default): io_parallel computes one output
  pixel per pass of the shared multipliers.

Calibration: ``benchmarks/estimators.py`` scores this model against 1,117 published hls4ml
synthesis results (``/work/shared/calibration``). HLS (C-synthesis) LUT estimates run ~1.5-4x above
post-synthesis figures; the constants here sit between the two (see ``benchmarks/estimators.py``).

Two flavours (``AnalyticEstimator(report=...)``, :data:`REPORT_MODELS`): ``synth`` (default) prices
the logic Vivado synthesis keeps; ``hls`` prices what the HLS C-synthesis report counts. They differ
only for the Resource kernel with RF > n_in, whose accumulator index HLS cannot bound (see
:data:`HLS_ACC_SELECT_SCALE`); calibrations fitted on HLS reports use ``hls``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from ..boards import Board
from ..errors import Split4mlError, UnsupportedLayerError
from ..fixed import FixedType
from ..ir import LAYER_KINDS, Layer
from ..settings import LayerSettings
from .base import AdditiveEstimator, Cost
from .hls_rules import kernel_size, mult_size

# ----------------------------------------------------------------------------------------------
# Multipliers: DSP slice or LUTs
# ----------------------------------------------------------------------------------------------
#: 7-series DSP48E1 multiplier: 25 x 18 signed (UG479). Zynq-7000, Artix/Kintex/Virtex-7.
DSP_SHAPE_7SERIES = (25, 18)
#: UltraScale/UltraScale+ DSP48E2 multiplier: 27 x 18 signed (UG579). Zynq MPSoC, Alveo, Kintex/Virtex US.
DSP_SHAPE_ULTRASCALE = (27, 18)
#: Vivado/Vitis HLS builds a product in LUTs when one operand is this narrow or narrower. Calibration
#: set (Vivado HLS 2020.1, 16-bit data): 16x2 and 16x4 products use no DSP, 16x6 products use one.
LUT_MULT_NARROW_BITS = 4
#: ... or when both operands are at most this wide (hls4ml/QKeras experience: ~8-10 bit products
#: land in LUTs; e.g. the hls4ml tutorial's 6-bit QKeras jet tagger uses almost no DSP).
LUT_MULT_BOTH_BITS = 10
#: A product by a *constant* weight (Latency strategy, or Resource with RF 1) gets a DSP only when the
#: constant's significant-bit span (odd part of |w|) is at least this; shorter constants become
#: shift-and-add logic. Fitted to the calibration set: with uniformly random b-bit weights it
#: predicts 0/25/69/89/96 % DSP products for b = 6/8/10/12/14, observed 0/26/66/86/94 %.
CONST_DSP_MIN_SPAN = 7
#: LUTs per partial-product bit (a*b) of a variable x variable product built from LUTs (a LUT6 +
#: carry chain computes about two partial-product bits).
LUT_PER_PP_BIT = 0.55
#: LUTs per (data bit x extra significant weight bit) of a shift-and-add constant product: each
#: extra non-zero digit of the constant costs about one adder of the data width; with canonical
#: signed digits about half the span bits are non-zero (fitted: 16-bit data, 4/6-bit weights).
CONST_MULT_LUT_PER_BIT = 0.3
#: Glue LUTs per DSP-mapped product (sign extension, operand registers' enables).
DSP_GLUE_LUT = 4.0

# ----------------------------------------------------------------------------------------------
# Adders, muxes, registers
# ----------------------------------------------------------------------------------------------
#: LUTs per accumulator bit of one addition (a carry-chain adder is ~1 LUT per bit; Vivado packs
#: adder trees, ternary adders and LUT sharing, so the average observed per tree addition is lower).
ADD_LUT_PER_BIT = 0.5
#: Inputs of a multiplexer that one LUT6 serves (4:1 per LUT6; MUXF7/F8 combine LUTs for wider muxes).
MUX_INPUTS_PER_LUT = 4.0
#: LUTs per accumulator bit for each output accumulator of the Resource kernel when RF > n_in: the
#: accumulator index then varies per cycle (``acc[out_index] += ...``), which costs an index decode,
#: a write mux from the block_factor products and an adder per output. Calibration: ~70-120 LUTs per
#: output both in HLS estimates (single layers, RF 512/1024) and after Vivado synthesis (2-3 layer
#: nets, RF 832-4992); 6 LUT/bit x 16 bits = 96.
RES_OUT_ACC_LUT_PER_BIT = 6.0

# ----------------------------------------------------------------------------------------------
# What the HLS C-synthesis report counts (``AnalyticEstimator(report="hls")``)
# ----------------------------------------------------------------------------------------------
#: Flavours of the analytic model: ``synth`` prices the logic Vivado keeps after synthesis (the
#: default, what a board must hold); ``hls`` prices what the Vivado/Vitis HLS C-synthesis report
#: counts, which differs for the Resource kernel with RF > n_in (below). Calibrating against HLS
#: reports uses ``hls``.
REPORT_MODELS = ("synth", "hls")
#: In ``dense_resource_rf_gt_nin_rem0`` multiplier ``im`` updates ``acc[outidx[ir] + im * outscale]``
#: (outscale = RF / n_in), an index HLS reads from the ``outidx`` ROM and so cannot bound: its report
#: prices, per multiplier, a read of the fully partitioned accumulator array through a
#: ``2**ceil(log2(n_out))``:1 mux of accumulator width (and likewise ``mult[out_index]`` in
#: ``dense_resource_rf_gt_nin``). With outscale = 2 the ROM holds one bit and the report prices a
#: 2:1 select. Vivado synthesis sees that the index's upper bits are constant and keeps an
#: outscale:1 select, i.e. about one select per output (``RES_OUT_ACC_LUT_PER_BIT`` above). Scale of
#: the mux-LUT formula (:func:`mux_luts_per_bit`): least squares on the fitting half of the
#: single-layer Vivado HLS 2020.1 reports (448 Resource rows with RF > n_in) gave 0.99.
HLS_ACC_SELECT_SCALE = 1.0
#: The same fit's per-input and per-output terms of that kernel, LUTs per data bit of each input
#: (the ``data[in_index]`` select and its registers, beyond the n_in:1 mux above; fitted 1.96) and
#: per accumulator bit of each output (the write-back select of each accumulator; fitted 1.94).
HLS_RES_INPUT_LUT_PER_BIT = 2.0
HLS_RES_OUTPUT_LUT_PER_BIT = 2.0
#: ... and its fixed part per layer (fitted 3,559 LUTs; the reports do not break it down).
HLS_RES_KERNEL_LUT = 3500.0
#: Registers of that kernel as the HLS report counts them: the accumulators (n_out x accumulator
#: width; fitted 1.06 FF per bit), no input or result registers, no product registers for LUT
#: multipliers, and this many FFs per DSP-mapped product (fitted 11.1; same 448 rows).
HLS_DSP_PRODUCT_FF = 11.0
#: Pipeline-register FFs per operand bit of a LUT-built multiplier of the Resource kernel (a DSP slice
#: keeps its operand and product registers inside).
FF_PER_SHARED_MULT_BIT = 1.0
#: Fraction of the fully parallel adder-tree bits that become pipeline registers per extra pipeline
#: stage of a Latency-strategy layer (Vivado HLS registers the tree at stage boundaries).
FF_TREE_STAGE_FRACTION = 0.25
#: LUTs per result bit for a cast with rounding (RND*) and for saturation (SAT*): an incrementer and
#: a range compare + clamp mux per output value.
CAST_ROUND_LUT_PER_BIT = 1.0
CAST_SAT_LUT_PER_BIT = 0.5
#: Fixed per-layer control logic (loop counters, FSM, handshakes) in LUTs and FFs.
LAYER_CONTROL_LUT = 60.0
LAYER_CONTROL_FF = 60.0

# ----------------------------------------------------------------------------------------------
# Memories
# ----------------------------------------------------------------------------------------------
#: BRAM18 aspect ratios (depth, width) of 7-series and UltraScale block RAM (UG473, UG573); 512x36
#: is the simple-dual-port mode. A memory uses the cheapest tiling over these modes. The
#: calibration set confirms ROM weights of width > 18 at depth <= 512 pack 36 bits per BRAM18.
BRAM18_MODES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: Memories without a binding pragma of at most this many bits go to LUTRAM/SRL instead of BRAM
#: (Vitis HLS ``config_storage fifo -auto_srl_max_bits`` default 1024, UG1399; we use the same for
#: small index ROMs and line buffers).
SMALL_MEMORY_BITS = 1024
#: FIFOs this deep or shallower are plain registers (Vitis HLS ``auto_srl_max_depth`` default 2).
FIFO_REGISTER_MAX_DEPTH = 2
#: Bits per LUT of LUTRAM / SRL storage (SRLC32E: 32 deep x 1 bit; RAM64X1: 64 x 1).
SRL_BITS_PER_LUT = 32.0
#: Control LUTs/FFs of one FIFO (pointers, full/empty flags).
FIFO_CONTROL_LUT = 20.0
FIFO_CONTROL_FF = 16.0

# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
#: Combinational delay (ns) of a DSP (or LUT-array) product incl. routing.
MULT_NS = 2.5
#: Delay (ns) of a shift-and-add product by a short constant (one adder level).
CONST_MULT_NS = 1.0
#: Delay (ns) of one adder-tree level of ~16-24 bit carry-chain adders incl. routing. With these,
#: a 32-input Latency layer fits one 5 ns cycle, as the calibration set's HLS reports show.
ADD_NS = 0.6
#: Extra cycles of the Resource kernel beyond its RF iterations (weight ROM read, product, final cast):
#: the calibration set shows latency = RF + 1..2 at 5 ns.
RESOURCE_EXTRA_CYCLES = 2
#: Per-pass overhead of the io_parallel Resource convolution (buffer fill + pipeline fill + drain).
CONV_RESOURCE_PASS_OVERHEAD = 3
#: Cycles per input pixel of the io_stream Resource convolution's outer loop (it is not pipelined).
STREAM_RESOURCE_PIXEL_CYCLES = 1
#: Cycles to read/write the packed stream of an io_stream Dense layer.
STREAM_DENSE_IO_CYCLES = 2

# ----------------------------------------------------------------------------------------------
# Large Latency-strategy layers
# ----------------------------------------------------------------------------------------------
#: hls4ml writes ``config_array_partition -maximum_size 4096`` (``MaximumSize``) in its build script:
#: a Latency-strategy layer with more products than this has arrays HLS will not fully partition,
#: synthesis slows dramatically and the design bloats (calibration: 561x20 and 196x56 Latency
#: layers come out 3-5x larger and slower than their size predicts).
LATENCY_MAX_PRODUCTS = 4096
#: Growth of LUT/FF/latency per multiple of ``LATENCY_MAX_PRODUCTS`` beyond it (cost x (1 + k*(r-1))).
LATENCY_OVERSIZE_PENALTY = 0.5

# ----------------------------------------------------------------------------------------------
# Activations, pooling, normalisation
# ----------------------------------------------------------------------------------------------
#: ReLU: a sign test gating each bit (about half a LUT per bit after packing) and an output register.
RELU_LUT_PER_BIT = 0.5
#: hls4ml's default activation table: 1024 entries of ap_fixed<18,8> (``table_size``/``table_t``).
TABLE_SIZE = 1024
TABLE_WIDTH = 18
#: Table-lookup ports served per ROM copy (dual-port BRAM): sigmoid/tanh tables are replicated
#: ceil(n / 2) times for n parallel lookups.
TABLE_LOOKUPS_PER_COPY = 2
#: Softmax: BRAM18 per element. Observed in the calibration set (Vitis HLS 2021.1, 2..16 classes):
#: BRAM18 = number of classes (replicated exp tables plus the inversion table).
SOFTMAX_BRAM_PER_ELEMENT = 1.0
#: LUTs per input bit of the table index computation (scale, offset, clamp) per lookup.
TABLE_INDEX_LUT_PER_BIT = 1.5
#: Cycles of a sigmoid/tanh lookup (index, ROM read, register) and of softmax's fixed part.
TABLE_LOOKUP_CYCLES = 3
SOFTMAX_BASE_CYCLES = 6
#: Max pooling: compare + select per bit; average pooling: one adder bit per bit.
POOL_MAX_LUT_PER_BIT = 1.0
POOL_AVG_LUT_PER_BIT = 1.0

#: Layers whose weight statistics one estimator remembers (the memo keeps those layers alive).
WEIGHT_STATS_CACHE_SIZE = 4096
#: Memoised layer costs an estimator keeps (cleared when full).
LAYER_COST_CACHE_SIZE = 65536

_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
#: Activations hls4ml computes with comparisons and shifts (priced like ReLU): a quantized model's
#: ``linear`` requantisation, leaky/thresholded ReLU, hard tanh and the binary/ternary signs.
COMPARE_ACTIVATIONS = ("relu", "leaky_relu", "leakyrelu", "thresholded_relu", "thresholdedrelu", "relu6",
                       "hard_tanh", "binary_tanh", "ternary_tanh", "ternarytanh", "prelu", "quantized_relu")
_POOLS = ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
#: ``Op`` classes that only move values (io_parallel wiring, stream re-packing): no logic.
MOVE_OPS = ("Transpose", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "Resize", "Repack", "Clone")


# ==============================================================================================
# Small helpers (pure functions)
# ==============================================================================================
def is_7series(board: Board) -> bool:
    """True for 7-series devices (DSP48E1), from ``board.family`` or, failing that, the part name."""
    fam = board.family.lower()
    if fam:
        return fam in ("zynq7000", "zynq-7000", "zynq7", "artix7", "kintex7", "virtex7", "spartan7", "7series")
    return board.part.lower().startswith("xc7")


def dsps_per_product(a_bits: int, b_bits: int, seven_series: bool) -> int:
    """DSP slices for one ``a_bits x b_bits`` product (wider operands are tiled over slices)."""
    big, small = (a_bits, b_bits) if a_bits >= b_bits else (b_bits, a_bits)
    pa, pb = DSP_SHAPE_7SERIES if seven_series else DSP_SHAPE_ULTRASCALE
    if big <= pa and small <= pb:
        return 1
    if small <= pb:
        return -(-big // (pa - 1))
    return -(-big // (pa - 1)) * -(-small // (pb - 1))


def product_in_luts(a_bits: int, b_bits: int) -> bool:
    """True when Vivado/Vitis HLS builds an ``a x b`` product from LUTs rather than a DSP."""
    return min(a_bits, b_bits) <= LUT_MULT_NARROW_BITS or max(a_bits, b_bits) <= LUT_MULT_BOTH_BITS


def mux_luts_per_bit(k: int) -> float:
    """LUTs per bit of a k:1 multiplexer: (k - 1) / 3 (a LUT6 is a 4:1 mux, two 2:1 muxes share one)."""
    if k <= 1:
        return 0.0
    return (k - 1) / (MUX_INPUTS_PER_LUT - 1.0)


def bram18_for(depth: int, width: int) -> int:
    """BRAM18 blocks for a ``depth x width`` memory: the cheapest tiling over :data:`BRAM18_MODES`."""
    if depth <= 0 or width <= 0:
        return 0
    return min(-(-depth // d) * -(-width // w) for d, w in BRAM18_MODES)


def log2_ceil(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def cast_luts_per_value(src: FixedType, dst: FixedType) -> float:
    """LUTs to convert one ``src`` value to ``dst``: rounding only when fractional bits are dropped,
    saturation only when integer bits are dropped (otherwise the cast is wiring)."""
    luts = 0.0
    if dst.rounding != "TRN" and src.fractional > dst.fractional:
        luts += CAST_ROUND_LUT_PER_BIT * dst.width
    if dst.saturation != "WRAP" and src.integer > dst.integer:
        luts += CAST_SAT_LUT_PER_BIT * dst.width
    return luts


@dataclass(frozen=True)
class WeightStats:
    """What the quantised constant weights of a layer look like to the HLS tool.

    Attributes:
        zero_frac: fraction of weights that quantise to 0 (their products vanish when constant).
        dsp_frac: fraction of non-zero weights whose significant-bit span >= CONST_DSP_MIN_SPAN.
        lut_extra_bits: mean (span - 1) of the non-zero weights below that span (shift-add cost).
        all_extra_bits: mean (span - 1) of all non-zero weights.
    """

    zero_frac: float
    dsp_frac: float
    lut_extra_bits: float
    all_extra_bits: float


@lru_cache(maxsize=256)
def uniform_weight_stats(width: int) -> WeightStats:
    """Stats of uniformly distributed ``width``-bit signed constants (used when no weights are known).

    Magnitudes are uniform on ``[0, 2**n)`` with ``n = width - 1``. A magnitude ``odd * 2**t`` has
    span ``L = bit_length(odd)``; there are ``max(1, 2**(L-2))`` odd numbers of length ``L`` and
    ``n - L + 1`` shifts, hence the closed-form counts below.
    """
    n = max(1, width - 1)
    total = float(2**n)
    below_n = below_extra = all_extra = above = 0.0
    for span in range(1, n + 1):
        count = float((1 if span == 1 else 2 ** (span - 2)) * (n - span + 1))
        all_extra += count * (span - 1)
        if span >= CONST_DSP_MIN_SPAN:
            above += count
        else:
            below_n += count
            below_extra += count * (span - 1)
    nonzero = total - 1.0
    return WeightStats(
        zero_frac=1.0 / total,
        dsp_frac=above / nonzero,
        lut_extra_bits=below_extra / below_n if below_n else 0.0,
        all_extra_bits=all_extra / nonzero,
    )


def measured_weight_stats(kernel: np.ndarray, wtype: FixedType) -> WeightStats:
    """Stats of real weights after quantisation to ``wtype`` (one numpy pass)."""
    q = wtype.quantize(np.asarray(kernel, dtype=np.float64).ravel())
    if q.size == 0:
        return uniform_weight_stats(wtype.width)
    mags = np.rint(np.abs(q) * math.ldexp(1.0, wtype.fractional)).astype(np.int64)
    nz = mags[mags != 0]
    zero_frac = 1.0 - nz.size / q.size
    if nz.size == 0:
        return WeightStats(zero_frac=1.0, dsp_frac=0.0, lut_extra_bits=0.0, all_extra_bits=0.0)
    odd = nz // (nz & -nz)
    span = np.floor(np.log2(odd.astype(np.float64))).astype(np.int64) + 1
    big = span >= CONST_DSP_MIN_SPAN
    small = span[~big]
    return WeightStats(
        zero_frac=float(zero_frac),
        dsp_frac=float(big.mean()),
        lut_extra_bits=float((small - 1).mean()) if small.size else 0.0,
        all_extra_bits=float((span - 1).mean()),
    )


def _cost_key(layer: Layer) -> tuple[Any, Any]:
    """What a layer's cost depends on (its kind, shapes, activation, parameters and kernel; not its
    name), as a hashable key, and the object whose ``id`` the key holds, to keep alive beside it."""
    kernel = None if layer.params.get("merge_parts") else layer.weights.get("kernel")
    try:
        params = tuple(sorted(layer.params.items()))
        hash(params)
    except TypeError:  # a parameter that is not hashable: this layer object only
        return ("layer", id(layer)), layer
    return ((layer.kind, layer.input_shape, layer.input_shapes, layer.output_shape, layer.activation, params,
             None if kernel is None else id(kernel)), kernel)


@dataclass
class _Acc:
    """Mutable running total used inside one ``layer_cost`` call (not part of the API)."""

    lut: float = 0.0
    ff: float = 0.0
    dsp: float = 0.0
    bram18: float = 0.0

    def add(self, lut: float = 0.0, ff: float = 0.0, dsp: float = 0.0, bram18: float = 0.0) -> None:
        self.lut += lut
        self.ff += ff
        self.dsp += dsp
        self.bram18 += bram18

    def cost(self, latency: float, ii: float) -> Cost:
        return Cost(lut=self.lut, ff=self.ff, dsp=self.dsp, bram18=self.bram18,
                    latency_cycles=float(latency), ii_cycles=float(ii))


def _memory(acc: _Acc, depth: int, width: int) -> None:
    """A RAM/ROM/line buffer without binding pragma: LUTRAM when small, BRAM otherwise."""
    bits = depth * width
    if bits <= 0:
        return
    if bits <= SMALL_MEMORY_BITS:
        acc.add(lut=math.ceil(bits / SRL_BITS_PER_LUT))
    else:
        acc.add(bram18=bram18_for(depth, width))


def _fifo(acc: _Acc, depth: int, width: int) -> None:
    """An hls::stream FIFO between layers (io_stream): registers, SRL or BRAM by size."""
    if depth <= 0 or width <= 0:
        return
    acc.add(lut=FIFO_CONTROL_LUT, ff=FIFO_CONTROL_FF)
    if depth <= FIFO_REGISTER_MAX_DEPTH:
        acc.add(ff=depth * width)
    elif depth * width <= SMALL_MEMORY_BITS:
        acc.add(lut=width * math.ceil(depth / SRL_BITS_PER_LUT))
    else:
        acc.add(bram18=bram18_for(depth, width))


def _pixels(shape: tuple[int, ...]) -> int:
    """Spatial positions of a channels-last shape (1 for a vector)."""
    p = 1
    for d in shape[:-1]:
        p *= int(d)
    return p


# ==============================================================================================
# The estimator
# ==============================================================================================
class AnalyticEstimator(AdditiveEstimator):
    """Per-layer closed-form estimate of hls4ml 1.3 firmware (see module docstring)."""

    name = "analytic"

    def __init__(self, report: str = "synth") -> None:
        """``report``: ``synth`` (default) prices the logic after Vivado synthesis, ``hls`` what the
        HLS C-synthesis report counts (see :data:`REPORT_MODELS`)."""
        if report not in REPORT_MODELS:
            raise Split4mlError(f"analytic estimator: report model {report!r} is not one of "
                                f"{', '.join(REPORT_MODELS)}")
        self.report = report
        # (id(kernel), weight type) -> (kernel kept alive so its id is not reused, stats): shards cut the
        # same way share one kernel array (split4ml.shard), whichever layer object holds it
        self._stats: dict[tuple[int, FixedType], tuple[np.ndarray, WeightStats]] = {}
        # (what the cost depends on, settings, io type, board) -> (the kernel kept alive, cost): the
        # planner prices the same layer under the same settings many times (every version, stage, split
        # option and batch), and rebuilds the same shards for each split option it prices
        self._costs: dict[tuple[Any, LayerSettings, str, Board], tuple[Any, Cost]] = {}

    # ------------------------------------------------------------------ public API
    def layer_cost(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        """Cost of one layer (its fused activation included) on ``board`` under ``settings`` (memoised:
        a layer's cost depends on nothing else)."""
        what, alive = _cost_key(layer)
        key = (what, settings, io_type, board)
        hit = self._costs.get(key)
        if hit is not None and hit[0] is alive:
            return hit[1]
        cost = self._layer_cost(layer, settings, io_type, board)
        if len(self._costs) >= LAYER_COST_CACHE_SIZE:
            self._costs.clear()
        self._costs[key] = (alive, cost)
        return cost

    def _layer_cost(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        kind = layer.kind
        if kind in ("Dense", "Conv1D", "Conv2D"):
            if layer.params.get("merge_parts"):
                cost = self._merge_adder(layer, settings, io_type)
            else:
                cost = self._compute(layer, settings, io_type, board)
            act = layer.activation or "linear"
            if act != "linear":  # the fused activation reads the layer's own results
                own = replace(settings, precision=replace(settings.precision, input=None))
                cost = cost + self._activation(act, layer.output_shape, own, io_type, board, layer.name)
            return cost
        if kind == "Activation":
            return self._activation(layer.activation or "linear", layer.output_shape, settings, io_type, board,
                                    layer.name)
        if kind in _POOLS:
            return self._pooling(layer, settings, io_type)
        if kind == "BatchNormalization":
            return self._batchnorm(layer, settings, io_type, board)
        if kind in ("Flatten", "Input", "Reshape", "Slice", "Concatenate"):
            # Flatten/Reshape are in-place reshapes in both io types (hls4ml inplace_parallel_reshape /
            # inplace_stream_flatten); Input is the interface, costed in the shell. Slice (Cropping1D)
            # and Concatenate of same-typed values only copy (wires in io_parallel). [E1: DAG wires]
            return Cost()
        if kind == "Add":
            return self._add(layer, settings, io_type)
        if kind == "ApplyAlpha":  # scale * x + bias per value: hls4ml's normalize kernel, as BatchNormalization
            return self._batchnorm(layer, settings, io_type, board)
        if kind == "Quantizer":
            return self._requantize(layer, settings, io_type)
        if kind == "Op":
            if layer.params.get("hls_class") in MOVE_OPS:
                return Cost()
            return self._requantize(layer, settings, io_type)
        raise UnsupportedLayerError(
            f"layer {layer.name!r}: the analytic estimator does not model kind {kind!r}; "
            f"supported kinds are {', '.join(LAYER_KINDS)}"
        )

    def _add(self, layer: Layer, settings: LayerSettings, io_type: str) -> Cost:
        """A two-input ``Add`` (a skip connection): one adder per value at the result width plus
        the cast to the result type; one cycle. [E1: DAG merges]"""
        n_values = math.prod(layer.output_shape)
        res = settings.precision.result
        lanes = int(layer.output_shape[-1]) if io_type == "io_stream" else n_values
        lut = lanes * res.width * (ADD_LUT_PER_BIT + (CAST_ROUND_LUT_PER_BIT if res.rounding != "TRN" else 0.0)
                                   + (CAST_SAT_LUT_PER_BIT if res.saturation != "WRAP" else 0.0)) + LAYER_CONTROL_LUT
        ii = n_values // lanes
        return Cost(lut=lut, ff=lanes * res.width + LAYER_CONTROL_FF, latency_cycles=float(ii),
                    ii_cycles=float(ii))

    def _requantize(self, layer: Layer, settings: LayerSettings, io_type: str) -> Cost:
        """An element-wise layer priced as a cast of every value from its input type to its result
        type (HGQ's ``FixedPointQuantizer``, a binary net's thresholding sign, other element-wise
        ``Op``s): one cycle. [E1: quantized models]"""
        n_values = math.prod(layer.output_shape)
        p = settings.precision
        lanes = int(layer.output_shape[-1]) if io_type == "io_stream" else n_values
        lut = lanes * max(cast_luts_per_value(p.data, p.result), p.result.width * RELU_LUT_PER_BIT) \
            + LAYER_CONTROL_LUT / 2
        ii = n_values // max(1, lanes)
        return Cost(lut=lut, ff=lanes * p.result.width + LAYER_CONTROL_FF / 2, latency_cycles=float(ii),
                    ii_cycles=float(ii))

    def _merge_adder(self, layer: Layer, settings: LayerSettings, io_type: str) -> Cost:
        """The merge layer of an input split (``params["merge_parts"] = k``).

        Its kernel is ``k`` stacked identity matrices of 1-bit weights: Vivado HLS folds the
        constant-0 products away and turns the products by 1 into wires, so what is built is, per
        output value, an adder tree of ``k`` partial sums plus the bias at the accumulator width, and
        the cast to the result type (same rounding/saturation logic as any layer's output).
        """
        k = int(layer.params["merge_parts"])
        n_values = math.prod(layer.output_shape)
        acc = settings.precision.accum.width
        res = settings.precision.result
        adds = n_values * k  # (k - 1) additions of partial sums + 1 for the bias, per value
        lut = adds * acc * ADD_LUT_PER_BIT + n_values * res.width * (
            (CAST_ROUND_LUT_PER_BIT if res.rounding != "TRN" else 0.0)
            + (CAST_SAT_LUT_PER_BIT if res.saturation != "WRAP" else 0.0)) + LAYER_CONTROL_LUT
        depth = max(1, math.ceil(math.log2(k + 1)))
        ff = n_values * acc * depth * FF_TREE_STAGE_FRACTION + LAYER_CONTROL_FF
        positions = n_values // max(1, layer.output_shape[-1])
        ii = positions if io_type == "io_stream" else 1
        return Cost(lut=lut, ff=ff, dsp=0.0, bram18=0.0, latency_cycles=float(depth + 1 + (ii - 1)),
                    ii_cycles=float(ii))

    def weight_stats(self, layer: Layer, wtype: FixedType) -> WeightStats:
        """Quantised-weight statistics of ``layer`` (memoised; uniform ones when it has no kernel)."""
        kernel = layer.weights.get("kernel")
        if kernel is None:
            return uniform_weight_stats(wtype.width)
        key = (id(kernel), wtype)
        hit = self._stats.get(key)
        if hit is not None and hit[0] is kernel:
            return hit[1]
        stats = measured_weight_stats(kernel, wtype)
        if len(self._stats) >= WEIGHT_STATS_CACHE_SIZE:
            self._stats.clear()
        self._stats[key] = (kernel, stats)
        return stats

    # ------------------------------------------------------------------ matrix multiplication
    def _matmul(self, acc: _Acc, layer: Layer, n_in: int, n_out: int, settings: LayerSettings,
                board: Board) -> tuple[float, float]:
        """Resources of one hls4ml ``dense_latency``/``dense_resource`` kernel of size n_in x n_out.

        Adds LUT/FF/DSP/BRAM to ``acc`` and returns ``(latency_cycles, ii_cycles)`` of one pass
        (one input vector, or one output pixel of a convolution).
        """
        p = settings.precision
        wd, ww, wa = p.data.width, p.weight.width, p.accum.width
        rf = max(1, int(settings.reuse_factor))
        total = n_in * n_out
        s7 = is_7series(board)
        period = board.clock_period_ns
        acc.add(lut=n_out * cast_luts_per_value(p.accum, p.result))

        constant_weights = settings.strategy == "Latency" or rf == 1
        if constant_weights:
            # dense_latency (or dense_resource with RF 1: weights reshaped to registers, no BRAM
            # pragma): every weight is a constant; products by 0 vanish, short constants become
            # shift-and-add logic, long ones use multipliers, shared over RF cycles (ALLOCATION).
            ws = self.weight_stats(layer, p.weight)
            products = total * (1.0 - ws.zero_frac)
            if product_in_luts(wd, ww):
                real, extra = 0.0, ws.all_extra_bits
            else:
                real, extra = products * ws.dsp_frac, ws.lut_extra_bits
            shared = min(real, math.ceil(products / rf)) if real else 0.0
            acc.add(dsp=shared * dsps_per_product(wd, ww, s7), lut=shared * DSP_GLUE_LUT)
            acc.add(lut=(products - real) * CONST_MULT_LUT_PER_BIT * wd * extra)
            if rf > 1 and shared:
                # Operand select of a shared multiplier: data k:1; the constant weight is a LUT
                # function of the schedule step (a LUT6_2 gives two weight bits for up to 32 steps).
                k = math.ceil(real / shared)
                acc.add(lut=shared * (wd * mux_luts_per_bit(k) + 0.5 * ww * math.ceil(k / 32)))
            # Adder tree: one accumulation per product plus the bias of each output.
            acc.add(lut=(products + n_out) * wa * ADD_LUT_PER_BIT)
            tree_ns = ((MULT_NS if real else CONST_MULT_NS if extra else 0.0)
                       + ADD_NS * log2_ceil(n_in + 1))
            stages = max(1, math.ceil(tree_ns / period))
            acc.add(ff=n_out * wa + (stages - 1) * products * wa * FF_TREE_STAGE_FRACTION)
            latency = float(stages + rf - 1)
            ii = float(rf)
            if settings.strategy == "Latency" and total > LATENCY_MAX_PRODUCTS:
                grow = 1.0 + LATENCY_OVERSIZE_PENALTY * (total / LATENCY_MAX_PRODUCTS - 1.0)
                acc.lut *= grow
                acc.ff *= grow
                latency *= grow
            return latency, ii

        # dense_resource with RF > 1: block_factor multipliers fed from a weight ROM in BRAM
        # (ARRAY_RESHAPE block factor=block_factor + RESOURCE core=ROM_nP_BRAM), one ROM word of
        # block_factor weights per cycle for RF cycles.
        block = -(-total // rf)
        hls_gt_nin = self.report == "hls" and rf > n_in  # registers as the HLS report counts them
        if product_in_luts(wd, ww):
            # LUT multipliers, with a product register each (DSP slices keep theirs inside).
            acc.add(lut=block * LUT_PER_PP_BIT * wd * ww,
                    ff=0.0 if hls_gt_nin else block * (wd + ww) * FF_PER_SHARED_MULT_BIT)
        else:
            dsps = block * dsps_per_product(wd, ww, s7)
            acc.add(dsp=dsps, lut=block * DSP_GLUE_LUT, ff=dsps * HLS_DSP_PRODUCT_FF if hls_gt_nin else 0.0)
        acc.add(bram18=bram18_for(rf, block * ww))
        # Operand select: multiplier im reads data[(ir + im*RF) % n_in]. For RF <= n_in only
        # n_in / RF index sequences are distinct, each an RF:1 mux; for RF > n_in (valid RFs are then
        # multiples of n_in) all multipliers share one n_in:1 mux.
        if rf <= n_in:
            acc.add(lut=(n_in // rf) * wd * mux_luts_per_bit(rf))
        else:
            acc.add(lut=wd * mux_luts_per_bit(n_in))
        # Accumulators and result registers per output; the input vector is held in registers for
        # the RF cycles of the reuse loop (the HLS report of the RF > n_in kernel counts the
        # accumulators only: HLS_DSP_PRODUCT_FF).
        acc.add(lut=block * wa * ADD_LUT_PER_BIT,
                ff=n_out * wa if hls_gt_nin else n_out * (wa + p.result.width) + n_in * wd)
        if rf > n_in:
            # Variable accumulator index: per-output write mux and adder (AccumLoop2 / outidx).
            if self.report == "hls":
                # What the HLS report counts (see HLS_ACC_SELECT_SCALE): a select per multiplier.
                outscale = rf // n_in if rf % n_in == 0 else 0
                ways = 2 if outscale == 2 else 2 ** log2_ceil(n_out)
                acc.add(lut=block * wa * mux_luts_per_bit(ways) * HLS_ACC_SELECT_SCALE
                        + n_in * wd * HLS_RES_INPUT_LUT_PER_BIT + n_out * wa * HLS_RES_OUTPUT_LUT_PER_BIT
                        + HLS_RES_KERNEL_LUT)
            else:
                acc.add(lut=n_out * wa * RES_OUT_ACC_LUT_PER_BIT)
            if rf % n_in == 0:
                _memory(acc, rf, max(1, log2_ceil(n_out + 1)))  # the outidx[] index ROM
        stages = 1 + (0 if product_in_luts(wd, ww) else 1)
        latency = float(rf + RESOURCE_EXTRA_CYCLES + stages - 1)
        return latency, float(rf)

    # ------------------------------------------------------------------ Dense / Conv
    def _compute(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        n_in, n_out = mult_size(layer)
        acc = _Acc(lut=LAYER_CONTROL_LUT, ff=LAYER_CONTROL_FF)
        pass_lat, pass_ii = self._matmul(acc, layer, n_in, n_out, settings, board)
        wd, wr = settings.precision.data.width, settings.precision.result.width
        rf = max(1, int(settings.reuse_factor))
        out_px = _pixels(layer.output_shape)
        stream = io_type == "io_stream"

        if layer.kind == "Dense":
            # A Dense on a (..., n_in) tensor runs once per leading position.
            positions = _pixels(layer.input_shape)
            ii = pass_ii * positions
            latency = pass_lat + pass_ii * (positions - 1)
            if stream:
                latency += STREAM_DENSE_IO_CYCLES
                _fifo(acc, positions, n_out * wr)
            return acc.cost(latency, ii)

        # Convolutions.
        n_chan = int(layer.input_shape[-1])
        kernel = kernel_size(layer)
        strides = tuple(int(s) for s in layer.params.get("strides", (1,) * len(kernel)))
        in_sp = layer.input_shape[:-1]
        out_sp = layer.output_shape[:-1]
        if not stream:
            # io_parallel (conv_*d_latency_cl / conv_*d_resource_cl): one output pixel per pass
            # of the shared kernel; the im2col buffer element for each of the n_in window
            # positions is selected among out_px input positions by the partition index.
            acc.add(lut=n_in * wd * mux_luts_per_bit(out_px), ff=n_in * wd)
            acc.add(ff=out_px * n_out * wr)  # fully partitioned output array
            if settings.strategy == "Latency":
                ii = pass_ii * out_px
                latency = ii + pass_lat
            else:
                per_pass = pass_lat + CONV_RESOURCE_PASS_OVERHEAD
                ii = latency = per_pass * out_px
            return acc.cost(latency, ii)

        # io_stream (conv_*d_buffer_cl): line buffers of (filt_h - 1) rows x n_chan, a window of
        # registers, one pass per input pixel (padding is a separate ZeroPadding layer upstream,
        # so the padded input is streamed).
        padded = [((o - 1) * s + k) if layer.params.get("padding", "valid") == "same" else i
                  for i, o, s, k in zip(in_sp, out_sp, strides, kernel, strict=False)]
        in_px = 1
        for d in padded:
            in_px *= max(1, int(d))
        if len(kernel) == 2 and kernel[0] > 1:
            rows = (kernel[0] - 1) * n_chan
            _memory_lines(acc, rows, int(padded[1]), wd)
        acc.add(ff=n_in * wd)  # the kernel window registers
        if settings.strategy == "Latency":
            ii = float(in_px * rf)
            latency = ii + pass_lat
        else:
            ii = float(in_px * STREAM_RESOURCE_PIXEL_CYCLES + out_px * (pass_lat + 1))
            latency = ii
        _fifo(acc, out_px, n_out * wr)
        return acc.cost(latency, ii)

    # ------------------------------------------------------------------ activations
    def _activation(self, fn: str, shape: tuple[int, ...], settings: LayerSettings, io_type: str,
                    board: Board, where: str) -> Cost:
        p = settings.precision
        if fn == "linear":
            if p.input is None or p.input == p.result:
                return Cost()
            fn = "relu"  # a quantized model's linear activation requantises: a cast, priced like ReLU
        wd, wr = p.data.width, p.result.width
        stream = io_type == "io_stream"
        n = 1
        for d in shape:
            n *= int(d)
        px = _pixels(shape)
        lanes = int(shape[-1]) if stream else n  # values handled per cycle
        acc = _Acc(lut=LAYER_CONTROL_LUT / 2, ff=LAYER_CONTROL_FF / 2)
        if fn in COMPARE_ACTIVATIONS:
            acc.add(lut=lanes * wr * RELU_LUT_PER_BIT, ff=lanes * wr)
            latency = 1.0
        elif fn != "softmax":  # sigmoid, tanh and every other table-based function (elu, selu, softplus...)
            acc.add(lut=lanes * wd * TABLE_INDEX_LUT_PER_BIT, ff=lanes * (wr + TABLE_WIDTH))
            copies = -(-lanes // TABLE_LOOKUPS_PER_COPY)
            acc.add(bram18=copies * bram18_for(TABLE_SIZE, TABLE_WIDTH))
            latency = float(TABLE_LOOKUP_CYCLES)
        else:  # softmax (hls4ml 'stable': max, subtract, exp table, sum, inverse table, multiply)
            acc.add(lut=lanes * wd * (POOL_MAX_LUT_PER_BIT + 1.0 + TABLE_INDEX_LUT_PER_BIT)
                    + lanes * TABLE_WIDTH * ADD_LUT_PER_BIT,
                    ff=lanes * (2 * TABLE_WIDTH + wr),
                    dsp=lanes * dsps_per_product(TABLE_WIDTH, TABLE_WIDTH, is_7series(board)),
                    bram18=math.ceil(lanes * SOFTMAX_BRAM_PER_ELEMENT))
            latency = float(SOFTMAX_BASE_CYCLES + 2 * log2_ceil(lanes))
        if stream:
            ii = float(px)
            latency += px - 1
            _fifo(acc, px, int(shape[-1]) * wr)
        else:
            ii = 1.0
        return acc.cost(latency, ii)

    # ------------------------------------------------------------------ pooling
    def _pooling(self, layer: Layer, settings: LayerSettings, io_type: str) -> Cost:
        p = settings.precision
        wd, wr = p.data.width, p.result.width
        pool = layer.params.get("pool_size", (2,))
        pool = (int(pool),) if isinstance(pool, int) else tuple(int(k) for k in pool)
        area = 1
        for k in pool:
            area *= k
        is_max = layer.kind.startswith("Max")
        per_op = POOL_MAX_LUT_PER_BIT if is_max else POOL_AVG_LUT_PER_BIT
        n_chan = int(layer.output_shape[-1])
        out_px = _pixels(layer.output_shape)
        in_px = _pixels(layer.input_shape)
        acc = _Acc(lut=LAYER_CONTROL_LUT, ff=LAYER_CONTROL_FF)
        stages = max(1, log2_ceil(area))
        if io_type == "io_stream":
            # Line buffer of (pool_h - 1) rows, one window per input pixel, II 1 per pixel.
            if len(pool) == 2 and pool[0] > 1:
                _memory_lines(acc, (pool[0] - 1) * n_chan, int(layer.input_shape[1]), wd)
            acc.add(lut=n_chan * (area - 1) * wd * per_op, ff=n_chan * area * wd)
            _fifo(acc, out_px, n_chan * wr)
            return acc.cost(in_px + stages, in_px)
        ops = out_px * n_chan
        acc.add(lut=ops * (area - 1) * wd * per_op, ff=ops * wr)
        return acc.cost(stages, 1)

    # ------------------------------------------------------------------ batch normalisation
    def _batchnorm(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        # nnet::normalize: res = data * scale + bias per value, scale/bias constant per channel.
        p = settings.precision
        wd, ww, wa = p.data.width, p.weight.width, p.accum.width
        stream = io_type == "io_stream"
        n_chan = int(layer.output_shape[-1])
        px = _pixels(layer.output_shape)
        lanes = n_chan if stream else n_chan * px
        ws = uniform_weight_stats(ww)
        acc = _Acc(lut=LAYER_CONTROL_LUT, ff=LAYER_CONTROL_FF)
        if product_in_luts(wd, ww):
            acc.add(lut=lanes * CONST_MULT_LUT_PER_BIT * wd * ws.all_extra_bits)
        else:
            real = lanes * ws.dsp_frac
            acc.add(dsp=real * dsps_per_product(wd, ww, is_7series(board)), lut=real * DSP_GLUE_LUT)
            acc.add(lut=(lanes - real) * CONST_MULT_LUT_PER_BIT * wd * ws.lut_extra_bits)
        acc.add(lut=lanes * (wa * ADD_LUT_PER_BIT + cast_luts_per_value(p.accum, p.result)),
                ff=lanes * (wa + p.result.width))
        stages = max(1, math.ceil((MULT_NS + ADD_NS) / board.clock_period_ns))
        if stream:
            _fifo(acc, px, n_chan * p.result.width)
            return acc.cost(px + stages, px)
        return acc.cost(stages, 1)


def _memory_lines(acc: _Acc, rows: int, depth: int, width: int) -> None:
    """``rows`` line buffers (ap_shift_reg) of ``depth`` values of ``width`` bits each."""
    if rows <= 0 or depth <= 0:
        return
    if depth * width <= SMALL_MEMORY_BITS:
        acc.add(lut=rows * width * math.ceil(depth / SRL_BITS_PER_LUT))
    else:
        acc.add(bram18=rows * bram18_for(depth, width))
