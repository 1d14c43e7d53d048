"""The performance model: what a pipeline of boards does per sample, priced in one place.

The pipeline is ``source -> step 0 -> ... -> step n-1 -> sink``. A step is one board, or the ``k``
boards of a split layer working in parallel. Source and sink are the host; samples travel in frames
of ``batch`` samples (the runtime's ``--batch``).

**One board** (its figures: the estimate of its layers, shell included, and its board file):

* **fabric**, hls4ml's VivadoAccelerator ``axi_stream`` wrapper around the layers
  (``writer/vivado_accelerator_writer.py``, "insert enqueue" / "insert dequeue"):

  - ``io_parallel``: a pipelined loop reads the ``n_in`` input values one per clock, the model runs,
    a second loop writes the ``n_out`` outputs one per clock, and nothing overlaps (no DATAFLOW at the
    top): ``interval = latency = n_in + L + n_out`` cycles, ``L`` the latency of its layers;
  - ``io_stream``: the wrapper is a DATAFLOW region, so reading, the layers and writing overlap:
    ``interval = max(n_in, II, n_out)``, ``latency = n_in + L + n_out`` cycles;

* **links**: per sample it receives ``bytes_recv`` in ``frames_recv`` frames per batch and sends
  ``bytes_sent`` (every copy of a fan-out to neuron shards) in ``frames_sent`` frames; every frame
  adds :data:`FRAME_OVERHEAD_BYTES` (header and CRC): ``link_us = (bytes + frames x overhead / batch)
  x 8 / bandwidth_mbps``. ZeroMQ moves the bytes in its own I/O thread, so receiving, computing and
  sending overlap;
* **per-frame cost**: ``link.latency_us`` (the processor's software, TCP and DMA set-up) is paid once
  per frame: ``latency_us / batch`` per sample.

A board's **interval** is the largest of the four (fabric, receive, send, per-frame); a step's is its
slowest board's. The **source** sends the model input (once per shard of a neuron split at step 0)
and the **sink** receives the outputs, both on the link of the board they talk to. The
**bottleneck** is the largest interval of source, steps and sink; throughput is its inverse.

The **latency** of a sample is that of its frame: the source sends the frame, then every step takes
its per-frame cost, runs the batch through its fabric (``((batch - 1) x interval + latency) /
clock``) and sends the frame on; a step's latency is its slowest board's.

Cycle figures (``bottleneck_ii_cycles``, ``latency_cycles``) are the microsecond figures expressed in
cycles of the first board's fabric clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..boards import Board, Link
from ..estimate.base import Cost

#: Bytes every frame adds to its payload: the runtime's header and CRC
#: (:data:`split4ml.runtime.wire.OVERHEAD_BYTES`; a test keeps the two equal).
FRAME_OVERHEAD_BYTES = 84
#: Samples per frame when a plan does not say (the runtime's default ``--batch``).
DEFAULT_BATCH = 8


def fabric_cycles(ii_cycles: float, latency_cycles: float, n_in: float, n_out: float,
                  io_type: str = "io_parallel") -> tuple[float, float]:
    """(interval, latency) in cycles of a board's fabric, the AXI wrapper's reads and writes included
    (see the module docstring). Works on numpy arrays too."""
    lat = n_in + latency_cycles + n_out
    if io_type == "io_stream":
        import numpy as np

        return np.maximum(np.maximum(n_in, ii_cycles), n_out), lat
    return lat, lat


def link_us(link: Link, n_bytes: float, frames: float, batch: int) -> float:
    """Per-sample occupancy of ``link`` by ``n_bytes`` per sample sent in ``frames`` frames per batch
    (payload plus frame overhead), microseconds. Works on numpy arrays too."""
    return link.transfer_us(n_bytes + frames * FRAME_OVERHEAD_BYTES / batch)


def frame_link_us(link: Link, n_bytes: float, frames: float, batch: int) -> float:
    """Time to send one batch's frames carrying ``n_bytes`` per sample, microseconds."""
    return link.transfer_us(n_bytes * batch + frames * FRAME_OVERHEAD_BYTES)


def per_frame_us(board: Board, batch: int) -> float:
    """The board's per-frame fixed cost, per sample, microseconds."""
    return board.link.latency_us / batch


@dataclass(frozen=True)
class BoardLoad:
    """One board of a pipeline step and what it moves per sample.

    Attributes:
        cost: its estimated cost (resources, cycles), board shell included.
        board: the board type.
        bytes_sent: bytes per sample it sends (every copy of a fan-out to neuron shards).
        bytes_recv: bytes per sample it receives.
        n_in / n_out: values per sample its AXI wrapper reads / writes.
        frames_sent / frames_recv: frames per batch it sends (one per consumer) / receives (one per
            producer).
    """

    cost: Cost
    board: Board
    bytes_sent: float
    bytes_recv: float = 0.0
    n_in: float = 0.0
    n_out: float = 0.0
    frames_sent: int = 1
    frames_recv: int = 1

    def fabric_us(self, io_type: str) -> tuple[float, float]:
        """(interval, latency) of its fabric per sample, microseconds."""
        ii, lat = fabric_cycles(float(self.cost.ii_cycles), float(self.cost.latency_cycles), self.n_in, self.n_out,
                                io_type)
        return float(self.board.cycles_to_us(ii)), float(self.board.cycles_to_us(lat))

    def bounds_us(self, io_type: str, batch: int) -> dict[str, float]:
        """The four limits of its interval: ``fabric``, ``recv``, ``send``, ``frame``."""
        link = self.board.link
        return {"fabric": self.fabric_us(io_type)[0],
                "recv": link_us(link, self.bytes_recv, self.frames_recv, batch),
                "send": link_us(link, self.bytes_sent, self.frames_sent, batch),
                "frame": per_frame_us(self.board, batch)}

    def interval_us(self, io_type: str, batch: int) -> float:
        return max(self.bounds_us(io_type, batch).values())

    def latency_us(self, io_type: str, batch: int) -> float:
        """Time from its frame's arrival to the frame's departure on its link, microseconds."""
        interval, lat = self.fabric_us(io_type)
        return (self.board.link.latency_us + (batch - 1) * interval + lat
                + frame_link_us(self.board.link, self.bytes_sent, self.frames_sent, batch))


@dataclass(frozen=True)
class Endpoint:
    """The host's end of the pipeline: the source sending the model input, or the sink receiving the
    outputs; ``bytes`` per sample in ``frames`` frames per batch over ``link``."""

    link: Link
    n_bytes: float
    frames: int = 1

    def interval_us(self, batch: int) -> float:
        return link_us(self.link, self.n_bytes, self.frames, batch)


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
    #: samples per frame the figures are for
    batch: int = DEFAULT_BATCH
    #: what bounds the pipeline: ``source``, ``stage`` (``bottleneck_stage``) or ``sink``
    bottleneck: str = "stage"
    source_us: float = 0.0
    sink_us: float = 0.0
    #: the largest fabric interval of a board, and the largest link occupancy (source and sink
    #: included), per-frame cost per sample: the bounds the plan table prints side by side
    fabric_bound_us: float = 0.0
    link_bound_us: float = 0.0
    frame_bound_us: float = 0.0


def group_metrics(steps: Sequence[Sequence[BoardLoad]], source: Endpoint, sink: Endpoint, *,
                  batch: int = DEFAULT_BATCH, io_type: str = "io_parallel") -> PipelineMetrics:
    """Bottleneck, throughput and latency of a pipeline of steps (one board, or the boards of a split
    layer working in parallel), fed by ``source`` and drained by ``sink`` (see the module docstring)."""
    if not steps or any(not s for s in steps):
        raise ValueError("a pipeline needs at least one step, each with at least one board")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    bounds = [[b.bounds_us(io_type, batch) for b in s] for s in steps]
    intervals = tuple(max(max(d.values()) for d in s) for s in bounds)
    lats = tuple(max(b.latency_us(io_type, batch) for b in s) for s in steps)
    src, snk = source.interval_us(batch), sink.interval_us(batch)
    stage_worst = max(intervals)
    bottleneck = max(src, stage_worst, snk)
    which = "stage" if stage_worst >= bottleneck else ("source" if src >= bottleneck else "sink")
    latency = frame_link_us(source.link, source.n_bytes, source.frames, batch) + sum(lats)
    clock = steps[0][0].board.clock_mhz
    flat = [d for s in bounds for d in s]
    return PipelineMetrics(
        bottleneck_us=bottleneck,
        bottleneck_stage=intervals.index(stage_worst),
        latency_us=latency,
        throughput_per_s=1e6 / bottleneck if bottleneck > 0 else float("inf"),
        bottleneck_ii_cycles=bottleneck * clock,
        latency_cycles=latency * clock,
        stage_interval_us=intervals,
        stage_latency_us=lats,
        batch=batch,
        bottleneck=which,
        source_us=src,
        sink_us=snk,
        fabric_bound_us=max(d["fabric"] for d in flat),
        link_bound_us=max([src, snk] + [max(d["recv"], d["send"]) for d in flat]),
        frame_bound_us=max(d["frame"] for d in flat),
    )


def pipeline_metrics(costs: Sequence[Cost], boards: Sequence[Board], bytes_in: float, bytes_out: Sequence[float],
                     values_in: float = 0.0, values_out: Sequence[float] | None = None, *,
                     batch: int = DEFAULT_BATCH, io_type: str = "io_parallel") -> PipelineMetrics:
    """:func:`group_metrics` of a chain of one-board stages: stage ``k`` receives what stage ``k - 1`` sends
    (``bytes_out[k - 1]``, ``values_out[k - 1]``; the model input for the first), the source and the sink
    use the links of the first and last board."""
    if not costs:
        raise ValueError("a pipeline needs at least one stage")
    vo = list(values_out) if values_out is not None else [0.0] * len(costs)
    steps = [[BoardLoad(c, b, bytes_sent=float(bytes_out[k]), bytes_recv=float(bytes_out[k - 1]) if k else float(bytes_in),
                        n_in=float(vo[k - 1]) if k else float(values_in), n_out=float(vo[k]))]
             for k, (c, b) in enumerate(zip(costs, boards, strict=True))]
    return group_metrics(steps, Endpoint(boards[0].link, float(bytes_in)), Endpoint(boards[-1].link, float(bytes_out[-1])),
                         batch=batch, io_type=io_type)
