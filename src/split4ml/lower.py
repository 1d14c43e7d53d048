"""Lowering a plan to its boards: the plan's stages become the :class:`~split4ml.stages.Pipeline` that
``build``, ``verify`` and the runtime all execute, so what is checked is what runs.

Nothing here chooses anything: the planner (:mod:`split4ml.plan`) decides the stages, a plan file
records them, and this module only turns them into per-board stages. An ordinary stage is one board;
a split stage is cut into shards (:func:`split4ml.shard.shard_unit`), one board each; the tail of a
split runs on the stage that merges it. Models with skip connections become one packed board per
stage (:func:`split4ml.stages.dag_stages`).

It reads a plan through :class:`PlanLike` and :class:`StageLike`, the fields it needs of
:class:`split4ml.plan.planfile.Plan` and :class:`split4ml.plan.planfile.StagePlan`, so it sits below the
planner: building, verifying or running a loaded plan does not take in the solvers (reading a plan
file still goes through :func:`split4ml.plan.api.load_plan`, which fills in the settings it leaves out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .boards import Board
from .errors import PlanError
from .fixed import FixedType
from .hls.reference import reference_for
from .ir import Graph
from .settings import BuildSettings, LayerSettings
from .shard import shard_unit, split_stage_units
from .stages import (
    Node,
    Pipeline,
    Source,
    Stage,
    chain_stage,
    dag_stages,
    linear_pipeline,
    make_stages,
    whole_model_stage,
)


class StageLike(Protocol):
    """What lowering reads of one stage of a plan (:class:`split4ml.plan.planfile.StagePlan`)."""

    @property
    def index(self) -> int: ...
    @property
    def board(self) -> Board: ...
    @property
    def layers(self) -> tuple[str, ...]: ...
    @property
    def settings(self) -> Mapping[str, LayerSettings]: ...
    @property
    def split(self) -> Any: ...  # a SplitSpec: layer, kind, parts; None for an ordinary stage
    @property
    def merge(self) -> str | None: ...
    @property
    def shards(self) -> Sequence[Any]: ...  # ShardPlan: board, settings


class PlanLike(Protocol):
    """What lowering reads of a plan (:class:`split4ml.plan.planfile.Plan`)."""

    @property
    def stages(self) -> Sequence[StageLike]: ...
    @property
    def build(self) -> BuildSettings: ...
    @property
    def board(self) -> Board: ...
    @property
    def settings(self) -> dict[str, LayerSettings]: ...


def plan_pipeline(plan: PlanLike, graph: Graph) -> tuple[Pipeline, Stage]:
    """The boards of a plan as a :class:`~split4ml.stages.Pipeline`, and the reference they are verified
    against (:func:`split4ml.hls.reference.reference_for`: hls4ml's direct conversion of the model file).

    Verify and the runtime both execute this topology, so what is checked is what runs. See
    :func:`stages_pipeline` for how splits become nodes.
    """
    pipeline = stages_pipeline(graph, plan.stages, plan.build)
    return pipeline, reference_for(graph, plan.board, plan.settings, plan.build)


def _slice_sources(sources: Sequence[Source], widths: Sequence[int], a: int, b: int) -> tuple[Source, ...]:
    """The sources giving features ``a:b`` of the concatenation of ``sources`` (last-axis widths ``widths``)."""
    out: list[Source] = []
    off = 0
    for src, w in zip(sources, widths, strict=True):
        lo, hi = max(a, off), min(b, off + w)
        if lo < hi:
            out.append(Source(src.node, src.start + lo - off, src.start + hi - off))
        off += w
    return tuple(out)


def stages_pipeline(graph: Graph, stages: Sequence[StageLike], build: BuildSettings) -> Pipeline:
    """The pipeline DAG of ``stages`` (plan stages, possibly with intra-layer splits).

    - An ordinary stage is one node ``stage_<i>`` reading the whole output of the stage before it.
    - A split stage (``split`` set; ``layers`` = exactly one unit of the model) becomes ``parts`` nodes
      ``stage_<i>.<part>`` (:func:`split4ml.shard.shard_unit`, shard settings from ``shards[part]``,
      boards from ``shards[part].board``). Neuron shards read the producer's whole output (the
      concatenation of its nodes if the producer is itself a split without a tail); input shards
      read ``Source(producer, a, b)`` (slices mapped onto the producer's nodes).
    - The split's tail (merge layer, softmax...) runs at the start of the stage whose ``merge`` names
      the split layer (it may have no layers of its own: a merge board), behind one Input of the
      concatenated shard outputs; its settings come from that stage's ``settings`` (tail layer names),
      else the derived ones. A neuron split with an empty tail needs no merge: the next stage (or
      the pipeline output) concatenates the shards.

    Raises:
        PlanError: a split stage that is not exactly one unit, a tail left without a merge stage, a
            ``merge`` naming a split that is not the one just before, or a stage with nothing to run.
    """
    if not graph.is_chain:  # skip connections: one packed board per stage, in a line (split.dag_stages)
        merged: dict[str, LayerSettings] = {}
        for st in stages:
            merged.update(st.settings)
        return linear_pipeline(dag_stages(graph, [st.layers for st in stages], [st.board for st in stages], merged,
                                          build))
    graph_units = graph.units()
    merges = {st.merge: st for st in stages if st.merge is not None}
    nodes: list[Node] = []
    steps: list[tuple[str, ...]] = []
    prev: tuple[Source, ...] = (Source(None),)
    prev_widths: list[int] = [graph.input.output_shape[-1]]
    prev_shape: tuple[int, ...] = graph.input.output_shape
    prev_type: FixedType = build.input_precision
    pending: Any = None  # the ShardedUnit of the split just before, until its tail has run
    for st in stages:
        where = f"stages[{st.index}]"
        split = getattr(st, "split", None)
        merge = getattr(st, "merge", None)
        if merge is not None and (pending is None or pending.layer != merge):
            raise PlanError(f"{where}.merge: {merge!r} is not the layer split by the stage just before; a merge "
                            "stage must directly follow the split stage whose tail it runs")
        tail = tuple(pending.tail) if pending is not None and merge is not None else ()
        if pending is not None and pending.tail and merge is None:
            raise PlanError(
                f"{where}: the split of layer {pending.layer!r} ({pending.kind}) leaves "
                f"{[lyr.name for lyr in pending.tail]} to run after its shards; set 'merge: {pending.layer}' on "
                "this stage (it then runs them first), or add a merge stage")
        if split is not None:
            if tail:
                raise PlanError(f"{where}: a split stage cannot also run the tail of the split of {merge!r}; put a "
                                "merge stage between them")
            if not split_stage_units(graph_units, tuple(st.layers), split):
                raise PlanError(f"{where}.layers: a split stage holds exactly one unit (a compute layer and its "
                                "activation layers; for a neuron split, optionally the channel-wise layers after it: "
                                f"pooling, batch normalization), got {list(st.layers)}")
            unit = [graph.layer(n) for n in st.layers]
            shards = tuple(getattr(st, "shards", ()) or ())
            if shards and len(shards) != split.parts:
                raise PlanError(f"{where}.shards: {len(shards)} shards listed but split.parts is {split.parts}")
            shard_over: dict[str, LayerSettings] = {}
            for sh in shards:
                shard_over.update(sh.settings)
            consumer = merges.get(split.layer)
            tail_over = dict(consumer.settings) if consumer is not None else {}
            try:
                su = shard_unit(unit, split.layer, split.kind, split.parts, st.settings, shard_settings=shard_over,
                                tail_settings=tail_over, io_type=build.io_type)
            except PlanError as exc:
                raise PlanError(f"{where}.split: {exc}") from exc
            ids: list[str] = []
            for i, piece in enumerate(su.shards):
                board = shards[i].board if shards else st.board
                if piece.source_slice is None:
                    sources, in_shape = prev, prev_shape
                else:
                    a, b = piece.source_slice
                    sources, in_shape = _slice_sources(prev, prev_widths, a, b), (*prev_shape[:-1], b - a)
                stage = chain_stage(st.index, board, piece.layers, piece.settings, prev_type, build,
                                    model_name=graph.name, part=i, input_shape=in_shape, source=graph.source)
                nodes.append(Node(id=stage.name, stage=stage, sources=sources))
                ids.append(stage.name)
            prev = tuple(Source(i) for i in ids)
            prev_widths = [piece.out_shape[-1] for piece in su.shards]
            prev_shape, prev_type = su.concat_shape, su.concat_type
            pending = su
            steps.append(tuple(ids))
            continue
        layers = [*tail, *(graph.layer(n) for n in st.layers)]
        if not layers:
            raise PlanError(f"{where}: the stage has no layers and no tail to run; remove it")
        settings: dict[str, LayerSettings] = dict(pending.tail_settings) if tail else {}
        settings.update({n: st.settings[n] for n in st.layers})
        stage = chain_stage(st.index, st.board, layers, settings, prev_type, build, model_name=graph.name,
                            input_shape=prev_shape, source=graph.source)
        nodes.append(Node(id=stage.name, stage=stage, sources=prev))
        steps.append((stage.name,))
        prev, prev_widths = (Source(stage.name),), [stage.output_shape[-1]]
        prev_shape, prev_type = stage.output_shape, stage.output_type
        pending = None
    if pending is not None and pending.tail:
        raise PlanError(f"stages: the split of the last layer {pending.layer!r} ({pending.kind}) leaves "
                        f"{[lyr.name for lyr in pending.tail]} to run after its shards; add a merge stage "
                        f"(layers: [], merge: {pending.layer}) at the end")
    return Pipeline(nodes=tuple(nodes), outputs=prev, steps=tuple(steps))


def plan_stages(plan: PlanLike, graph: Graph) -> tuple[list[Stage], Stage]:
    """The per-board stages of a plan, and the whole model as reference stage."""
    settings = plan.settings
    if not graph.is_chain:
        stages = dag_stages(graph, [st.layers for st in plan.stages], [st.board for st in plan.stages], settings,
                            plan.build)
        return stages, whole_model_stage(graph, plan.board, settings, plan.build)
    stages = make_stages(graph, [st.layers for st in plan.stages], [st.board for st in plan.stages], settings,
                         plan.build)
    whole = whole_model_stage(graph, plan.board, settings, plan.build)
    return stages, whole
