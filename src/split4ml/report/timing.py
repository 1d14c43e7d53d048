"""Per-board timing and the pipeline timeline (Gantt chart) of a plan, as plain numbers.

Everything here reads the one performance model (:mod:`split4ml.plan.metrics`) through
:func:`split4ml.plan.planfile.stage_loads`, as the plan's own figures do:

* a board's **interval** is the largest of its fabric interval (the AXI wrapper's reads and writes
  included), the link time of what it receives and sends (frame overhead shared by the batch), and
  its per-frame cost shared by the batch; a board feeding a neuron split sends its output once per
  shard;
* a sample's frame reaches the next stage the board's **latency** after the board got it (per-frame
  cost, the batch through the fabric, the frame on the link), and the first stage the source's
  frame time after the source sent it.

The timeline (:func:`gantt_segments`) plays a few samples through the pipeline with the source
sending one sample per bottleneck interval (the pipeline's steady-state rate): a board is drawn
computing (its fabric interval) then sending (its link time), and is free again one interval after
it started. All times are in microseconds from the moment the source sends the first sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..boards import Board
from ..estimate.base import Cost
from ..plan.metrics import BoardLoad, frame_link_us
from ..plan.planfile import Plan, stage_loads

#: Segment kinds of the timeline.
COMPUTE = "compute"  # the board's fabric works on the sample (its fabric interval)
SEND = "send"  # the board's link carries the sample's output
LINK = "link"  # the sample is in flight to the next stage (per-frame cost, pipeline depth)
KINDS = (COMPUTE, SEND, LINK)


@dataclass(frozen=True)
class BoardTiming:
    """One physical board of a pipeline step, with the performance-model figures of its work.

    Attributes:
        stage: index of the pipeline step (``Plan.stages``).
        part: shard number within a split step, ``None`` for a one-board step.
        label: ``"stage 0"`` or, for a shard, ``"stage 1.2"``.
        load: what it moves per sample (:class:`~split4ml.plan.metrics.BoardLoad`).
        batch / io_type: the plan's.
    """

    stage: int
    part: int | None
    label: str
    load: BoardLoad
    batch: int
    io_type: str

    @property
    def board(self) -> Board:
        return self.load.board

    @property
    def cost(self) -> Cost:
        return self.load.cost

    @property
    def bytes_sent(self) -> float:
        """Bytes per sample it sends downstream (fan-out to neuron shards included)."""
        return self.load.bytes_sent

    @property
    def bounds_us(self) -> dict[str, float]:
        """The four limits of its interval: ``fabric``, ``recv``, ``send``, ``frame``."""
        return self.load.bounds_us(self.io_type, self.batch)

    @property
    def ii_us(self) -> float:
        """Fabric interval per sample (wrapper reads and writes included), microseconds."""
        return self.bounds_us["fabric"]

    @property
    def compute_latency_us(self) -> float:
        """Fabric latency of one sample in microseconds."""
        return self.load.fabric_us(self.io_type)[1]

    @property
    def send_us(self) -> float:
        """Link time of one sample's output (frame overhead shared by the batch), microseconds."""
        return self.bounds_us["send"]

    @property
    def hop_fixed_us(self) -> float:
        """The board's per-frame fixed cost, microseconds."""
        return self.board.link.latency_us

    @property
    def frame_us(self) -> float:
        """Time its link takes for one batch's frames, microseconds."""
        return frame_link_us(self.board.link, self.load.bytes_sent, self.load.frames_sent, self.batch)

    @property
    def interval_us(self) -> float:
        """Time between samples this board can accept: the largest of its four bounds."""
        return self.load.interval_us(self.io_type, self.batch)

    @property
    def latency_us(self) -> float:
        """Latency this board adds to a sample's frame: per-frame cost, fabric, the frame on the link."""
        return self.load.latency_us(self.io_type, self.batch)


def board_timings(plan: Plan) -> list[list[BoardTiming]]:
    """Per pipeline step, its boards (one, or one per shard) with their performance-model figures.

    A step's interval and latency in :attr:`Plan.metrics` are the largest of its boards'.
    """
    steps, _, _ = stage_loads(plan.stages)
    out: list[list[BoardTiming]] = []
    for st, loads in zip(plan.stages, steps, strict=True):
        out.append([BoardTiming(st.index, sh.part if st.split else None,
                                f"stage {st.index}.{sh.part}" if st.split else f"stage {st.index}", ld, plan.batch,
                                plan.build.io_type)
                    for sh, ld in zip(st.shards if st.split else [None] * len(loads), loads, strict=True)])
    return out


def input_bytes_sent(plan: Plan) -> float:
    """Bytes per sample the source sends to the first stage (once per shard of a neuron split)."""
    return stage_loads(plan.stages)[1].n_bytes


def input_hop_us(plan: Plan) -> float:
    """Time from the source sending a frame to its arrival at the first stage, microseconds."""
    source = stage_loads(plan.stages)[1]
    return frame_link_us(source.link, source.n_bytes, source.frames, plan.batch)


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
    it is then occupied for one interval: ``compute`` (its fabric interval), then ``send`` for the
    rest of the interval when a link or the per-frame cost binds it (these run beside the fabric,
    so only what exceeds the fabric holds the board). The ``link`` segment runs from the end of
    that interval to the sample's arrival at the next stage. A split step's sample moves on when its
    slowest shard's output has arrived.
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
                if b.interval_us > b.ii_us:
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
