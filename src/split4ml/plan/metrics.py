"""The pipeline performance model shared by planner, plan file and report.

The pipeline is ``source -> stage 0 -> ... -> stage n-1 -> sink``; every arrow is one network hop.

* A stage's **interval** (time between samples it can accept) is its hls4ml initiation interval
  plus the serialisation time of the bytes it sends downstream on its link: on a PYNQ-style board
  the processing system forwards each frame itself, so compute and send do not overlap.
  ``interval_us = ii_cycles / clock_mhz + bytes_out * 8 / bandwidth_mbps``.
* The **bottleneck** is the largest stage interval; throughput is its inverse.
* The **latency** of one sample is every stage's latency plus every hop's fixed cost and
  serialisation time, input hop from the source included:
  ``latency_us = hop(bytes_in) + sum_i (latency_cycles_i / clock_mhz_i + hop_i(bytes_out_i))``.
* Cycle figures (``bottleneck_ii_cycles``, ``latency_cycles``) are the microsecond figures
  expressed in cycles of the first board's fabric clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..boards import Board
from ..estimate.base import Cost


def stage_interval_us(cost: Cost, board: Board, bytes_out: float) -> float:
    """Time between samples for one stage: compute II plus sending its output."""
    return board.cycles_to_us(cost.ii_cycles) + board.link.transfer_us(bytes_out)


def stage_latency_us(cost: Cost, board: Board, bytes_out: float) -> float:
    """Latency added by one stage: its compute latency plus the hop to the next stage."""
    return board.cycles_to_us(cost.latency_cycles) + board.link.hop_us(bytes_out)


@dataclass(frozen=True)
class PipelineMetrics:
    bottleneck_us: float
    bottleneck_stage: int
    latency_us: float
    throughput_per_s: float
    bottleneck_ii_cycles: float
    latency_cycles: float
    stage_interval_us: tuple[float, ...]
    stage_latency_us: tuple[float, ...]


@dataclass(frozen=True)
class BoardLoad:
    """One board of a pipeline step: its cost, and the bytes per sample it sends downstream
    (a fan-out to ``k`` neuron shards sends its output ``k`` times)."""

    cost: Cost
    board: Board
    bytes_sent: float


def pipeline_metrics(costs: Sequence[Cost], boards: Sequence[Board], bytes_in: float,
                     bytes_out: Sequence[float]) -> PipelineMetrics:
    """Bottleneck, throughput and latency of a chain of one-board stages (see module docstring)."""
    if not costs:
        raise ValueError("a pipeline needs at least one stage")
    return group_metrics([[BoardLoad(c, b, o)] for c, b, o in zip(costs, boards, bytes_out, strict=True)], bytes_in)


def group_metrics(steps: Sequence[Sequence[BoardLoad]], bytes_in: float) -> PipelineMetrics:
    """Like :func:`pipeline_metrics` for steps that may be groups of boards working in parallel
    (the shards of a split layer): a step's interval and latency are those of its slowest board."""
    if not steps or any(not s for s in steps):
        raise ValueError("a pipeline needs at least one step, each with at least one board")
    intervals = tuple(max(stage_interval_us(b.cost, b.board, b.bytes_sent) for b in s) for s in steps)
    lats = tuple(max(stage_latency_us(b.cost, b.board, b.bytes_sent) for b in s) for s in steps)
    boards = [steps[0][0].board]
    latency = boards[0].link.hop_us(bytes_in) + sum(lats)
    bottleneck = max(intervals)
    clock = boards[0].clock_mhz
    return PipelineMetrics(
        bottleneck_us=bottleneck,
        bottleneck_stage=intervals.index(bottleneck),
        latency_us=latency,
        throughput_per_s=1e6 / bottleneck if bottleneck > 0 else float("inf"),
        bottleneck_ii_cycles=bottleneck * clock,
        latency_cycles=latency * clock,
        stage_interval_us=intervals,
        stage_latency_us=lats,
    )

