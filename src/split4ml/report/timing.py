"""Per-board timing and the pipeline timeline (Gantt chart) of a plan, as plain numbers.

Everything here follows :mod:`split4ml.plan.metrics`, the one performance model, and the boards'
link model (:class:`split4ml.boards.Link`):

* a board is **occupied** per sample for its initiation interval plus the time to send its output
  (``interval_us = ii_cycles / clock_mhz + bytes_sent * 8 / bandwidth_mbps``); a board feeding a
  neuron split sends its output once per shard;
* a sample reaches the next stage ``latency_cycles / clock_mhz + link.latency_us + send_us``
  after the stage started on it (the stage's latency in the model), and the first stage
  ``link.hop_us(input bytes)`` after the source sent it.

The timeline (:func:`gantt_segments`) plays a few samples through the pipeline with the source
sending one sample per bottleneck interval (the pipeline's steady-state rate), so the bottleneck
stage is busy all the time and every other stage idles between samples. All times are in
microseconds from the moment the source sends the first sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..boards import Board
from ..estimate.base import Cost
from ..plan.model import Plan

#: Segment kinds of the timeline.
COMPUTE = "compute"  # the board's fabric accepts the sample (initiation interval)
SEND = "send"  # the board serialises its output onto its link
LINK = "link"  # the sample is in flight to the next stage (per-hop fixed cost, pipeline depth)
KINDS = (COMPUTE, SEND, LINK)


@dataclass(frozen=True)
class BoardTiming:
    """One physical board of a pipeline step, with the performance-model figures of its work.

    Attributes:
        stage: index of the pipeline step (``Plan.stages``).
        part: shard number within a split step, ``None`` for a one-board step.
        label: ``"stage 0"`` or, for a shard, ``"stage 1.2"``.
        board: the board type.
        cost: its estimated cost (resources, cycles).
        bytes_sent: bytes per sample it sends downstream (fan-out to neuron shards included).
    """

    stage: int
    part: int | None
    label: str
    board: Board
    cost: Cost
    bytes_sent: float

    @property
    def ii_us(self) -> float:
        """Initiation interval in microseconds."""
        return self.board.cycles_to_us(self.cost.ii_cycles)

    @property
    def compute_latency_us(self) -> float:
        """Compute latency of one sample in microseconds."""
        return self.board.cycles_to_us(self.cost.latency_cycles)

    @property
    def send_us(self) -> float:
        """Serialisation time of one sample's output on the board's link, microseconds."""
        return self.board.link.transfer_us(self.bytes_sent)

    @property
    def hop_fixed_us(self) -> float:
        """The link's fixed cost per hop, microseconds."""
        return self.board.link.latency_us

    @property
    def interval_us(self) -> float:
        """Time between samples this board can accept (``ii_us + send_us``)."""
        return self.ii_us + self.send_us

    @property
    def latency_us(self) -> float:
        """Latency this board adds to a sample: compute, then the hop to the next stage."""
        return self.compute_latency_us + self.board.link.hop_us(self.bytes_sent)


def board_timings(plan: Plan) -> list[list[BoardTiming]]:
    """Per pipeline step, its boards (one, or one per shard) with their performance-model figures.

    A step's interval and latency in :attr:`Plan.metrics` are the largest of its boards'.
    """
    out: list[list[BoardTiming]] = []
    for st in plan.stages:
        nxt = plan.stages[st.index + 1] if st.index + 1 < plan.n_stages else None
        fan = nxt.split.parts if nxt is not None and nxt.split is not None and nxt.split.kind == "neuron" else 1
        if st.split is not None:
            out.append([BoardTiming(st.index, sh.part, f"stage {st.index}.{sh.part}", sh.board, sh.cost,
                                    float(sh.output.bytes_per_sample * fan)) for sh in st.shards])
        else:
            out.append([BoardTiming(st.index, None, f"stage {st.index}", st.board, st.cost,
                                    float(st.output.bytes_per_sample * fan))])
    return out


def input_bytes_sent(plan: Plan) -> float:
    """Bytes per sample the source sends to the first stage (once per shard of a neuron split)."""
    first = plan.stages[0]
    fan = first.split.parts if first.split is not None and first.split.kind == "neuron" else 1
    return float(first.input.bytes_per_sample * fan)


def input_hop_us(plan: Plan) -> float:
    """Latency of the hop from the source to the first stage, microseconds (as in the model)."""
    return plan.stages[0].board.link.hop_us(input_bytes_sent(plan))


@dataclass(frozen=True)
class GanttSegment:
    """One bar of the timeline.

    Attributes:
        row: the row it is drawn in: a board (``"stage 1"``, ``"stage 1.0"``) or a link
            (``"source → stage 0"``, ``"stage 0 → stage 1"``, ``"stage 2 → sink"``).
        stage: the stage the board belongs to, or the stage a link leaves (``-1``: the source).
        part: shard number for a shard's row, else ``None``.
        sample: sample number (0 is the first sample sent).
        start_us: start, microseconds after the source sent sample 0.
        end_us: end, microseconds.
        kind: ``compute``, ``send`` (board rows) or ``link`` (link rows).
    """

    row: str
    stage: int
    part: int | None
    sample: int
    start_us: float
    end_us: float
    kind: str

    @property
    def duration_us(self) -> float:
        return self.end_us - self.start_us


def link_row(plan: Plan, stage: int) -> str:
    """Name of the timeline row of the link leaving ``stage`` (``-1``: the source)."""
    a = "source" if stage < 0 else f"stage {stage}"
    b = "sink" if stage + 1 >= plan.n_stages else f"stage {stage + 1}"
    return f"{a} → {b}"


def gantt_rows(plan: Plan) -> list[str]:
    """Rows of the timeline, top to bottom: the input link, then each step's boards and the link after it."""
    rows = [link_row(plan, -1)]
    for boards in board_timings(plan):
        rows.extend(b.label for b in boards)
        rows.append(link_row(plan, boards[0].stage))
    return rows


def gantt_segments(plan: Plan, n_samples: int = 6) -> list[GanttSegment]:
    """The timeline of ``n_samples`` samples through the pipeline (see the module docstring).

    Every board of a step starts on a sample when the sample has arrived and the board is free;
    it is then occupied for ``compute`` (its II) and ``send`` (serialising its output). The
    ``link`` segment runs from the end of that send to the sample's arrival at the next stage
    (the link's fixed cost, plus the compute latency beyond the II). A split step's sample moves
    on when its slowest shard's output has arrived.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    period = plan.metrics.bottleneck_us
    hop_in = input_hop_us(plan)
    segs: list[GanttSegment] = []
    arrival = []
    for k in range(n_samples):
        sent = k * period
        arrival.append(sent + hop_in)
        segs.append(GanttSegment(link_row(plan, -1), -1, None, k, sent, sent + hop_in, LINK))
    for boards in board_timings(plan):
        free = [0.0] * len(boards)
        nxt = []
        for k in range(n_samples):
            done = []
            for j, b in enumerate(boards):
                start = max(arrival[k], free[j])
                segs.append(GanttSegment(b.label, b.stage, b.part, k, start, start + b.ii_us, COMPUTE))
                if b.send_us > 0:
                    segs.append(GanttSegment(b.label, b.stage, b.part, k, start + b.ii_us, start + b.interval_us,
                                             SEND))
                free[j] = start + b.interval_us
                done.append((start + b.latency_us, start + b.interval_us))
            arrive, leave = max(done)
            if arrive > leave:
                segs.append(GanttSegment(link_row(plan, boards[0].stage), boards[0].stage, None, k, leave, arrive,
                                         LINK))
            nxt.append(arrive)
        arrival = nxt
    return segs


def sink_arrivals(plan: Plan, segments: list[GanttSegment]) -> dict[int, float]:
    """Time each sample reaches the sink (end of its last link segment), microseconds."""
    last = link_row(plan, plan.n_stages - 1)
    out: dict[int, float] = {}
    for s in segments:
        if s.row == last:
            out[s.sample] = max(out.get(s.sample, 0.0), s.end_us)
    return out


def busy_fraction(segments: list[GanttSegment], row: str) -> float:
    """Fraction of a board row's span (first start to last end) in which the board is occupied."""
    mine = [s for s in segments if s.row == row and s.kind in (COMPUTE, SEND)]
    if not mine:
        return 0.0
    span = max(s.end_us for s in mine) - min(s.start_us for s in mine)
    return sum(s.duration_us for s in mine) / span if span > 0 else 1.0


def gantt_bottleneck(plan: Plan, segments: list[GanttSegment]) -> int:
    """The stage whose boards are busiest in the timeline (the one drawn as the bottleneck).

    It agrees with ``plan.metrics.bottleneck_stage``: at the steady-state rate, only the
    bottleneck's slowest board never idles.
    """
    best, best_frac = 0, -1.0
    for boards in board_timings(plan):
        frac = max(busy_fraction(segments, b.label) for b in boards)
        if frac > best_frac + 1e-9:
            best, best_frac = boards[0].stage, frac
    return best
