"""hls4ml's reuse-factor rules, written from reading hls4ml 1.3's source (not imported from it).

The planner must choose reuse factors (RF) that hls4ml keeps unchanged; otherwise the firmware
silently differs from the plan and from its estimate. These functions restate the rules of
``hls4ml/backends/fpga/fpga_backend.py`` (``get_layer_mult_size``, ``_validate_reuse_factor``,
``get_valid_reuse_factors``, ``get_closest_reuse_factor``) and of
``hls4ml/backends/vivado/vivado_backend.py`` (``init_dense``, ``init_conv1d``, ``init_conv2d``).

What hls4ml does (1.3):

* The "multiplication size" of a layer is ``(n_in, n_out)``: Dense ``(n_in, n_out)``; Conv1D
  ``(n_chan * filt_width, n_filt)``; Conv2D ``(n_chan * filt_height * filt_width, n_filt)``.
* An RF is valid when ``(n_in * n_out) % rf == 0`` and, for ``rf < n_in``, the multiplier count
  ``n_in * n_out / rf`` is a multiple of ``n_out``, and, for ``rf > n_in``, ``rf % n_in == 0``.
  Worked out, this is exactly the set ``{d : d divides n_in} U {n_in * d : d divides n_out}``,
  which we enumerate from divisors instead of looping to ``n_in * n_out`` as hls4ml does.
* With the **Resource** strategy, ``init_*`` replaces an invalid RF by the closest valid one (ties go
  to the smaller RF) and only prints a warning.
* With the **Latency** strategy hls4ml keeps any RF: the template uses
  ``#pragma HLS ALLOCATION ... limit=ceil(n_in*n_out/RF)`` and ``PIPELINE II=RF``. We still offer
  only the divisibility-valid set for Latency: with it ``ceil(n_in*n_out/RF)`` multipliers are
  used for exactly RF cycles each, so the multiplier count and the II that the estimator assumes
  are the ones the firmware gets (an RF outside the set gives a partially idle last multiplier
  and a less predictable schedule), and a plan stays valid if the user later switches strategy.
* io_parallel Conv1D/Conv2D with the Resource strategy (``conv_*d_resource_cl``) asserts
  ``RF <= n_in``; pass ``io_type="io_parallel"`` to get that extra restriction.
* Layers without multiplications (pooling, activations, BatchNormalization, Flatten, Input) take
  RF 1 in split4ml.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Sequence
from functools import lru_cache

from ..errors import UnsupportedLayerError
from ..ir import COMPUTE_KINDS, Layer

_RESOURCE = "resource"


#: Layer kinds that only reshape (hls4ml's ``Reshape`` class).
RESHAPE_KINDS = ("Flatten", "Reshape")


def relabels_stream(unit: Sequence[Layer], io_type: str, outputs: Collection[str] = ()) -> bool:
    """Whether ``unit`` is only a flatten that hls4ml computes in place with ``io_stream``.

    hls4ml's ``inplace_stream_flatten`` pass makes a Reshape whose output has one axis (and is not a
    model output) an alias of its input stream: it re-labels the stream's words and generates no
    logic (``backends/fpga/passes/inplace_stream_flatten.py``; other reshapes become a ``Repack``).
    Such a layer alone is no computation, so a board cannot hold only it: it must share a board with
    a layer before or after it.
    """
    return (io_type == "io_stream" and len(unit) == 1 and unit[0].kind in RESHAPE_KINDS
            and len(unit[0].output_shape) == 1 and unit[0].name not in outputs)


def mult_size(layer: Layer) -> tuple[int, int]:
    """``(n_in, n_out)`` of the layer's matrix multiplication, as hls4ml computes it.

    Dense: inputs per output and units (the kernel's shape when the layer carries weights).
    Conv1D/Conv2D: kernel window size times input channels, and filters.
    """
    kind = layer.kind
    if kind == "Dense":
        # an input split's merge: its (lazily made) kernel is (inputs, units), as the fallback says
        kernel = None if layer.params.get("merge_parts") else layer.weights.get("kernel")
        if kernel is not None and getattr(kernel, "ndim", 0) == 2:
            return int(kernel.shape[0]), int(kernel.shape[1])
        n_out = int(layer.params.get("units", layer.output_shape[-1]))
        return int(layer.input_shape[-1]), n_out
    if kind in ("Conv1D", "Conv2D"):
        n_chan = int(layer.input_shape[-1])
        window = 1
        for k in kernel_size(layer):
            window *= int(k)
        n_filt = int(layer.params.get("filters", layer.output_shape[-1]))
        return n_chan * window, n_filt
    raise UnsupportedLayerError(
        f"layer {layer.name!r} ({kind}) has no matrix multiplication, so it has no hls4ml mult size; "
        f"only {', '.join(COMPUTE_KINDS)} have one (other layers always take reuse factor 1)"
    )


def kernel_size(layer: Layer) -> tuple[int, ...]:
    """Spatial kernel size of a Conv1D/Conv2D layer (``params['kernel_size']``, else the kernel's shape)."""
    ks = layer.params.get("kernel_size")
    if ks is None:
        kernel = layer.weights.get("kernel")
        if kernel is None:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({layer.kind}) has neither params['kernel_size'] nor a kernel; "
                "the frontend must record the kernel size"
            )
        return tuple(int(k) for k in kernel.shape[:-2])
    if isinstance(ks, int):
        return (int(ks),)
    return tuple(int(k) for k in ks)


def is_valid_reuse_factor(n_in: int, n_out: int, rf: int) -> bool:
    """hls4ml's ``_validate_reuse_factor`` rule (functional correctness and QoR conditions)."""
    if rf < 1:
        return False
    total = n_in * n_out
    multfactor = min(n_in, rf)
    multiplier_limit = -(-total // multfactor)
    ok = (multiplier_limit % n_out == 0) or (rf >= n_in)
    ok = ok and ((rf % n_in == 0) or (rf < n_in))
    return ok and total % rf == 0


def _divisors(n: int) -> list[int]:
    """Sorted divisors of ``n`` by trial division up to sqrt(n) (n up to ~1e12 is instant)."""
    small: list[int] = []
    large: list[int] = []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


@lru_cache(maxsize=4096)
def _valid_rfs(n_in: int, n_out: int) -> tuple[int, ...]:
    # Closed form of hls4ml's rule (see module docstring); is_valid_reuse_factor double-checks it.
    cands = set(_divisors(n_in)) | {n_in * d for d in _divisors(n_out)}
    return tuple(rf for rf in sorted(cands) if is_valid_reuse_factor(n_in, n_out, rf))


def valid_reuse_factors_for(n_in: int, n_out: int) -> list[int]:
    """All RFs hls4ml accepts unchanged for a multiplication of size ``(n_in, n_out)``, ascending.

    Equals ``hls4ml.backends.get_backend('Vivado').get_valid_reuse_factors(n_in, n_out)``.
    """
    if n_in < 1 or n_out < 1:
        raise UnsupportedLayerError(f"multiplication size ({n_in}, {n_out}) must be positive")
    return list(_valid_rfs(int(n_in), int(n_out)))


def valid_reuse_factors(layer: Layer, strategy: str, io_type: str | None = None) -> list[int]:
    """Reuse factors hls4ml 1.3 keeps unchanged for ``layer`` under ``strategy``, ascending.

    Non-compute layers give ``[1]``. For Latency the same divisibility-valid set is returned (see
    the module docstring for why). With ``io_type="io_parallel"``, Resource-strategy convolutions
    are limited to ``RF <= n_in`` (hls4ml's ``conv_*d_resource_cl`` asserts it).
    """
    if layer.kind not in COMPUTE_KINDS:
        return [1]
    n_in, n_out = mult_size(layer)
    rfs = valid_reuse_factors_for(n_in, n_out)
    if io_type == "io_parallel" and layer.kind != "Dense" and strategy.lower() == _RESOURCE:
        rfs = [rf for rf in rfs if rf <= n_in]
    return rfs


def closest_reuse_factor(valid: list[int], chosen: int) -> int:
    """hls4ml's ``get_closest_reuse_factor``: nearest value of sorted ``valid``; ties -> smaller."""
    pos = bisect_left(valid, chosen)
    if pos == 0:
        return valid[0]
    if pos == len(valid):
        return valid[-1]
    before, after = valid[pos - 1], valid[pos]
    return after if after - chosen < chosen - before else before


def hls4ml_would_change(layer: Layer, rf: int, strategy: str) -> int | None:
    """The RF hls4ml would silently switch ``layer`` to under ``strategy``, or None if it keeps ``rf``.

    Only the Resource strategy of Dense/Conv1D/Conv2D is corrected by hls4ml; Latency keeps any RF
    and other layers have no RF correction.
    """
    if layer.kind not in COMPUTE_KINDS or strategy.lower() != _RESOURCE:
        return None
    n_in, n_out = mult_size(layer)
    valid = valid_reuse_factors_for(n_in, n_out)
    if rf in valid:
        return None
    return closest_reuse_factor(valid, int(rf))
