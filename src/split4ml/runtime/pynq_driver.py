"""The ``pynq`` driver: a stage's bitstream on a PYNQ board, fed through the AXI DMA.

It works like the ``axi_stream_driver.py`` that hls4ml's VivadoAccelerator backend writes next to
each project: load the bitstream with ``pynq.Overlay`` (the ``.hwh`` file must sit beside the
``.bit``), take the DMA ``hier_0.axi_dma_0`` of hls4ml's block design, ``pynq.allocate``
physically contiguous input and output buffers of the batch's shape, then
``sendchannel.transfer(in)``, ``recvchannel.transfer(out)``, ``sendchannel.wait()``,
``recvchannel.wait()``.

Data. The accelerator's AXI stream types are :func:`split4ml.hls.project.axi_type` of the stage's
wire types (same integer bits, width rounded up to 8, 16, 32 or 64). A value ``v`` travels in the
DMA buffer as the integer ``v * 2**(axi.width - axi.integer)`` of numpy type ``int<axi.width>``
(``uint`` for unsigned types), one value per stream word, samples one after the other. hls4ml's
wrapper reads ``N_IN`` words per sample and raises ``TLAST`` after the last output of a transfer,
so a batch of ``n`` samples is one transfer of ``n * N_IN`` words in and ``n * N_OUT`` words out.
Every wire value is exactly representable in the AXI type, so nothing changes on the way.

Buffers are allocated per batch size and kept (at most :data:`MAX_BUFFER_SETS` sizes; the least
recently used set is freed with ``freebuffer()``). ``pynq`` is imported when the driver is created,
so this module imports fine on hosts without it; tests inject a mock ``pynq`` in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RuntimeFault
from ..fixed import FixedType
from ..hls.project import axi_type

#: Attribute path of the AXI DMA in hls4ml's VivadoAccelerator block design.
DEFAULT_DMA = "hier_0.axi_dma_0"
#: Distinct batch sizes whose DMA buffers are kept allocated.
MAX_BUFFER_SETS = 4


def axi_dtype(axi: FixedType) -> np.dtype:
    """numpy type of one AXI stream word of type ``axi`` (``int16`` for ``ap_fixed<16,6>``)."""
    return np.dtype(f"{'int' if axi.signed else 'uint'}{axi.width}")


def to_axi(values: np.ndarray, axi: FixedType) -> np.ndarray:
    """Values (exactly representable in ``axi``) as the integers the DMA buffer holds."""
    return axi.to_int(values).astype(axi_dtype(axi))


def from_axi(words: np.ndarray, axi: FixedType) -> np.ndarray:
    """DMA buffer integers back to float64 values."""
    return np.asarray(words, dtype=np.float64) * math.ldexp(1.0, -(axi.width - axi.integer))


class PynqDriver:
    """A stage's accelerator on a PYNQ board (see the module docstring).

    Args:
        bitstream: the stage's ``.bit`` (``split4ml build`` + Vivado write ``stage_<i>/bitstream/stage_<i>.bit``
            and ``.hwh``).
        input_type / output_type: the stage's wire types (the AXI types are derived from them).
        input_shape / output_shape: per-sample shapes.
        dma: attribute path of the AXI DMA in the overlay.
        download: program the FPGA (``pynq.Overlay(download=...)``).
    """

    def __init__(self, bitstream: str | Path, input_type: FixedType, output_type: FixedType,
                 input_shape: tuple[int, ...], output_shape: tuple[int, ...], dma: str = DEFAULT_DMA,
                 download: bool = True) -> None:
        try:
            self._pynq: Any = importlib.import_module("pynq")
        except ImportError as exc:
            raise RuntimeFault("driver pynq: the 'pynq' package is not installed; run the node on a PYNQ board "
                               "(PYNQ image >= 2.7), or use --driver csim or reference on other hosts") from exc
        bit = Path(bitstream)
        if not bit.is_file():
            raise RuntimeFault(f"driver pynq: bitstream {bit} does not exist; copy stage_<i>/bitstream/ from the "
                               "Vivado build (the .bit and its .hwh) to the board")
        try:
            self.overlay = self._pynq.Overlay(str(bit), download=download)
            ip: Any = self.overlay
            for part in dma.split("."):
                ip = getattr(ip, part)
        except AttributeError as exc:
            raise RuntimeFault(f"driver pynq: the overlay {bit.name} has no DMA {dma!r} ({exc}); it should be an "
                               "hls4ml VivadoAccelerator design") from exc
        except Exception as exc:  # pynq raises plain exceptions for bad bitstreams / missing .hwh
            raise RuntimeFault(f"driver pynq: cannot load overlay {bit}: {type(exc).__name__}: {exc}") from exc
        self.sendchannel = ip.sendchannel
        self.recvchannel = ip.recvchannel
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = tuple(int(d) for d in output_shape)
        self.n_in = math.prod(self.input_shape)
        self.n_out = math.prod(self.output_shape)
        self.axi_in = axi_type(input_type)
        self.axi_out = axi_type(output_type)
        self._buffers: OrderedDict[int, tuple[Any, Any]] = OrderedDict()

    def _buffers_for(self, n: int) -> tuple[Any, Any]:
        if n in self._buffers:
            self._buffers.move_to_end(n)
            return self._buffers[n]
        while len(self._buffers) >= MAX_BUFFER_SETS:
            _, old = self._buffers.popitem(last=False)
            for buf in old:
                _free(buf)
        bufs = (self._pynq.allocate(shape=(n, self.n_in), dtype=axi_dtype(self.axi_in)),
                self._pynq.allocate(shape=(n, self.n_out), dtype=axi_dtype(self.axi_out)))
        self._buffers[n] = bufs
        return bufs

    def predict(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        n = int(a.shape[0])
        if n == 0:
            return np.zeros((0, *self.output_shape))
        inbuf, outbuf = self._buffers_for(n)
        inbuf[:] = to_axi(a.reshape(n, self.n_in), self.axi_in)
        self.sendchannel.transfer(inbuf)
        self.recvchannel.transfer(outbuf)
        self.sendchannel.wait()
        self.recvchannel.wait()
        return from_axi(np.array(outbuf, copy=True), self.axi_out).reshape((n, *self.output_shape))

    def close(self) -> None:
        for bufs in self._buffers.values():
            for buf in bufs:
                _free(buf)
        self._buffers.clear()


def _free(buf: Any) -> None:
    free = getattr(buf, "freebuffer", None)
    if callable(free):
        free()
