"""Per-board resource use of a plan, as plain numbers (the report's resource bars)."""

from __future__ import annotations

from dataclasses import dataclass

from ..boards import RESOURCES
from ..plan.planfile import Plan

#: Display names of the resources, in the order :data:`split4ml.boards.RESOURCES` lists them.
RESOURCE_LABELS = {"lut": "LUT", "ff": "FF", "dsp": "DSP", "bram18": "BRAM18"}


@dataclass(frozen=True)
class ResourceBar:
    """One physical board's estimated resource use.

    Attributes:
        label: ``"stage 0"`` or, for a shard of a split step, ``"stage 1.2"``.
        stage: the pipeline step.
        part: shard number, ``None`` for a one-board step.
        board: board type name.
        used: estimated amount per resource (LUT, FF, DSP, BRAM18 counts; shell included).
        available: the board's capacity per resource.
        utilization: ``used / available`` per resource (a fraction; 0.5 is 50 %).
    """

    label: str
    stage: int
    part: int | None
    board: str
    used: dict[str, float]
    available: dict[str, int]
    utilization: dict[str, float]

    def level(self, resource: str, cap: float) -> str:
        """``over`` above the cap, ``near`` above 80 % of the cap, else ``ok`` (the terminal's colours)."""
        u = self.utilization[resource]
        if u > cap + 1e-9:
            return "over"
        if u > 0.8 * cap:
            return "near"
        return "ok"


def resource_bars(plan: Plan) -> list[ResourceBar]:
    """One bar group per physical board, in pipeline order (a split step gives one per shard).

    A one-board step's utilisation is :meth:`StagePlan.utilization`; a shard's is
    :meth:`ShardPlan.utilization` (the step's is the largest of its shards').
    """
    out: list[ResourceBar] = []
    for st in plan.stages:
        if st.split is not None:
            for sh in st.shards:
                out.append(ResourceBar(f"stage {st.index}.{sh.part}", st.index, sh.part, sh.board.name,
                                       sh.cost.resources(), {r: sh.board.capacity(r) for r in RESOURCES},
                                       sh.utilization()))
        else:
            out.append(ResourceBar(f"stage {st.index}", st.index, None, st.board.name, st.cost.resources(),
                                   {r: st.board.capacity(r) for r in RESOURCES}, st.utilization()))
    return out
