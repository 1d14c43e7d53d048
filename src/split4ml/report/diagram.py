"""The board diagram of a plan as plain data: boxes (source, boards, sink) and labelled arrows.

Columns run in pipeline order: the source, one column per pipeline step, the sink. A split step's
shards are boxes stacked in its column (``lane`` 0, 1, ...), and arrows fan out to them and back
in; every arrow carries the wire (fixed-point type, shape, bytes per sample) that crosses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..plan.planfile import Plan, Wire
from .timing import board_timings

SOURCE = "source"
SINK = "sink"


@dataclass(frozen=True)
class DiagramBox:
    """One box of the diagram.

    Attributes:
        key: ``"source"``, ``"sink"``, ``"s<stage>"`` or ``"s<stage>.<part>"``.
        column: 0 for the source, ``stage + 1`` for a board, ``n_stages + 1`` for the sink.
        lane: position within the column (a split step's shards are lanes 0..k-1).
        lanes: number of boxes in the column.
        title: first line (e.g. ``"stage 1.0 · pynq-z2"``).
        lines: the layers with their settings, then utilisation and timing.
        stage: the pipeline step, ``None`` for source and sink.
        part: shard number, else ``None``.
        bottleneck: this box belongs to the bottleneck step.
    """

    key: str
    column: int
    lane: int
    lanes: int
    title: str
    lines: tuple[str, ...]
    stage: int | None = None
    part: int | None = None
    bottleneck: bool = False


@dataclass(frozen=True)
class DiagramEdge:
    """An arrow from box ``src`` to box ``dst`` carrying ``wire`` (per sample)."""

    src: str
    dst: str
    wire: Wire

    @property
    def bytes_per_sample(self) -> int:
        return self.wire.bytes_per_sample


def wire_label(wire: Wire) -> tuple[str, str]:
    """Two label lines for an arrow: the value format on the wire (``ap_fixed<W,I>``; rounding and
    saturation belong to the producer) and ``[shape] · N B`` (bytes per sample)."""
    t = wire.type
    shape = "×".join(str(d) for d in wire.shape)
    return f"{'ap_fixed' if t.signed else 'ap_ufixed'}<{t.width},{t.integer}>", f"[{shape}] · {wire.bytes_per_sample:,} B"


def _settings_line(name: str, settings: object) -> str:
    rf = getattr(settings, "reuse_factor", None)
    strategy = getattr(settings, "strategy", "")
    return f"{name} · RF {rf} · {strategy}"


def diagram_layout(plan: Plan) -> tuple[list[DiagramBox], list[DiagramEdge]]:
    """Boxes and arrows of the board diagram of ``plan``."""
    m = plan.metrics
    timings = board_timings(plan)
    boxes = [DiagramBox(SOURCE, 0, 0, 1, "source", ("model input",))]
    keys: list[list[str]] = []
    for st, tms in zip(plan.stages, timings, strict=True):
        bott = st.index == m.bottleneck_stage
        col = st.index + 1
        if st.split is not None:
            ks = []
            for sh, tm in zip(st.shards, tms, strict=True):
                key = f"s{st.index}.{sh.part}"
                util = sh.utilization()
                top = max(util, key=lambda r: util[r])
                lines = (f"{st.split.kind} split {sh.part + 1}/{st.split.parts} of {st.split.layer}",
                         *(_settings_line(n, sh.settings[n]) for n in sh.layers),
                         f"max {top.upper()} {util[top]:.0%} · II {sh.cost.ii_cycles:,.0f} cyc",
                         f"interval {tm.interval_us:,.2f} µs")
                boxes.append(DiagramBox(key, col, sh.part, len(st.shards), f"stage {st.index}.{sh.part} · "
                                        f"{sh.board.name}", lines, st.index, sh.part, bott))
                ks.append(key)
            keys.append(ks)
        else:
            key = f"s{st.index}"
            util = st.utilization()
            top = max(util, key=lambda r: util[r])
            lines = (*(f"+ {n} (merge of {st.merge})" if st.merge else f"+ {n}" for n in st.tail),
                     *(_settings_line(n, st.settings[n]) for n in st.layers),
                     f"max {top.upper()} {util[top]:.0%} · II {st.cost.ii_cycles:,.0f} cyc",
                     f"interval {tms[0].interval_us:,.2f} µs")
            boxes.append(DiagramBox(key, col, 0, 1, f"stage {st.index} · {st.board.name}", lines, st.index, None,
                                    bott))
            keys.append([key])
    boxes.append(DiagramBox(SINK, plan.n_stages + 1, 0, 1, "sink", ("model output",)))

    edges: list[DiagramEdge] = []
    first = plan.stages[0]
    for j, k in enumerate(keys[0]):
        edges.append(DiagramEdge(SOURCE, k, first.shards[j].input if first.split is not None else first.input))
    for st in plan.stages[1:]:
        prev = plan.stages[st.index - 1]
        senders = list(zip(keys[prev.index], prev.shards if prev.split is not None else [None], strict=True))
        for j, dst in enumerate(keys[st.index]):
            for src, shard in senders:
                if shard is not None:
                    wire = shard.output
                elif st.split is not None:
                    wire = st.shards[j].input
                else:
                    wire = prev.output
                edges.append(DiagramEdge(src, dst, wire))
    last = plan.stages[-1]
    for j, k in enumerate(keys[-1]):
        edges.append(DiagramEdge(k, SINK, last.shards[j].output if last.split is not None else last.output))
    return boxes, edges
