"""Costs and the estimator protocol.

A :class:`Cost` is what a piece of a graph takes on a board: LUT, FF, DSP, BRAM18, latency and
initiation interval in fabric cycles. Costs compose in sequence with ``+``: resources and latency
add, the interval is the largest of the parts (hls4ml pipelines the layers of one project).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..boards import RESOURCES, Board
from ..ir import Layer
from ..settings import LayerSettings


@dataclass(frozen=True)
class Cost:
    lut: float = 0.0
    ff: float = 0.0
    dsp: float = 0.0
    bram18: float = 0.0
    latency_cycles: float = 0.0
    ii_cycles: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            lut=self.lut + other.lut,
            ff=self.ff + other.ff,
            dsp=self.dsp + other.dsp,
            bram18=self.bram18 + other.bram18,
            latency_cycles=self.latency_cycles + other.latency_cycles,
            ii_cycles=max(self.ii_cycles, other.ii_cycles),
        )

    def resources(self) -> dict[str, float]:
        return {r: float(getattr(self, r)) for r in RESOURCES}

    def utilization(self, board: Board) -> dict[str, float]:
        """Fraction (0..) of each resource of ``board`` that this cost uses."""
        return {r: float(getattr(self, r)) / board.capacity(r) for r in RESOURCES}

    def max_utilization(self, board: Board) -> float:
        return max(self.utilization(board).values())

    def fits(self, board: Board, cap: float) -> bool:
        """True when every resource is within ``cap`` x the board's capacity."""
        return all(float(getattr(self, r)) <= board.capped(r, cap) + 1e-9 for r in RESOURCES)

    def overflow(self, board: Board, cap: float) -> dict[str, float]:
        """Resources over the cap, as ratio used / allowed (only those > 1)."""
        out = {}
        for r in RESOURCES:
            allowed = board.capped(r, cap)
            used = float(getattr(self, r))
            if used > allowed + 1e-9:
                out[r] = used / allowed
        return out

    def as_dict(self) -> dict[str, float]:
        return {"lut": round(self.lut, 1), "ff": round(self.ff, 1), "dsp": round(self.dsp, 1),
                "bram18": round(self.bram18, 1), "latency_cycles": round(self.latency_cycles, 1),
                "ii_cycles": round(self.ii_cycles, 1)}


def layers_cost(est: Estimator, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                board: Board) -> Cost:
    """The sum of ``est.layer_cost`` over ``layers``, in order, without the board shell (an ``Input``
    layer is the board's interface, priced in the shell, and is skipped)."""
    c = Cost()
    for lyr in layers:
        if lyr.kind != "Input":
            c = c + est.layer_cost(lyr, settings[lyr.name], io_type, board)
    return c


def total(costs: Sequence[Cost]) -> Cost:
    out = Cost()
    for c in costs:
        out = out + c
    return out


class Estimator(Protocol):
    """Resources and cycles of graph pieces under given hls4ml settings on a given board."""

    name: str

    def layer_cost(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        """Cost of one layer (standalone activation layers included)."""
        ...

    def shell_cost(self, board: Board) -> Cost:
        """Fixed cost of one board's shell (DMA, interconnect, stream wrapper)."""
        ...

    def segment_cost(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                     board: Board) -> Cost:
        """Cost of a contiguous run of layers on one board, shell included."""
        ...


class AdditiveEstimator:
    """Mixin: segment cost = shell + sum of layer costs (the analytic model is additive)."""

    name = "additive"

    def layer_cost(self, layer: Layer, settings: LayerSettings, io_type: str, board: Board) -> Cost:
        raise NotImplementedError

    def shell_cost(self, board: Board) -> Cost:
        return Cost(lut=board.shell_lut, ff=board.shell_ff, dsp=board.shell_dsp, bram18=board.shell_bram18)

    def segment_cost(self, layers: Sequence[Layer], settings: Mapping[str, LayerSettings], io_type: str,
                     board: Board) -> Cost:
        c = self.shell_cost(board)
        for lyr in layers:
            c = c + self.layer_cost(lyr, settings[lyr.name], io_type, board)
        return c
