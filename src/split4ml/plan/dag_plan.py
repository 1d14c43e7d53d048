"""Plans of models with skip connections (DAGs): check, price and package a stage assignment.

A DAG plan is an ordinary :class:`~split4ml.plan.planfile.Plan` whose stages list any layers (not
only contiguous runs of a chain), as long as every edge goes from a stage to the same or a later
one (:func:`split4ml.stages.dag_stage_of`). The optimiser (:mod:`split4ml.plan.dag`) and a
hand-written plan file both end in :func:`assemble_dag`, called by
:func:`split4ml.plan.api.assemble` for graphs that are not chains.

Pricing: stage ``k`` costs the estimate of its model layers on its board (the wire layers that pack
and unpack tensors copy values and cost nothing); it sends one wire, the packed tensors crossing
link ``k`` (:func:`split4ml.stages.crossing_tensors`: a skip tensor is sent again by every board it
passes through) and receives the one of link ``k - 1``; it is priced as a chain stage with those
wires (:func:`split4ml.plan.planfile.price_stages`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import PlanError
from ..estimate.base import Estimator
from ..ir import Graph
from ..settings import BuildSettings, LayerSettings
from ..stages import check_dag_io_type, dag_stage_of, link_wire, stage_tensors
from .fit import check_stage_fit
from .planfile import Plan, PlanHeader, StageChoice, StagePlan, Wire


def _wire(graph: Graph, tensors: Sequence[str], settings: Mapping[str, LayerSettings], build: BuildSettings,
          where: str) -> Wire:
    wtype, shape = link_wire(graph, tensors, settings, build, where)
    return Wire(wtype, shape, tensors=tuple(tensors))


def assemble_dag(graph: Graph, header: PlanHeader, stages: Sequence[StageChoice],
                 settings: Mapping[str, LayerSettings], estimator: Estimator) -> Plan:
    """Price, check and package the DAG stage assignment ``stages`` (the layers of each board, in
    pipeline order) as a :class:`Plan`.

    Each stage's layers are stored in graph order; its ``input``/``output`` wires name the tensors
    they carry. Every board must fit under ``cap``.

    Raises:
        PlanError: an invalid assignment (a layer on no board or two, an edge going back, an
            activation away from its producer), a split (not supported with skip connections),
            tensors of different types on one link, or io_stream (io_parallel only).
        InfeasibleError: a board that does not fit (naming the stage, board and layers).
    """
    cap, build = header.cap, header.build
    stage_layers = [c.layers for c in stages]
    stage_boards = [c.board for c in stages]
    where = [c.where or f"stages[{i}]" for i, c in enumerate(stages)]
    for i, sp in enumerate(c.split for c in stages):
        if sp is not None:
            raise PlanError(f"{where[i]}.split: splitting a layer is not supported yet in models with skip "
                            f"connections (model {graph.name!r}); remove 'split' and give the layer a board of its "
                            "own, or raise its reuse_factor")
    check_dag_io_type(graph, build)
    dag_stage_of(graph, stage_layers)  # its errors name stages[i], as plan files do
    io = stage_tensors(graph, stage_layers)
    planned: list[StagePlan] = []
    for i, (names, b, (received, sent)) in enumerate(zip(stage_layers, stage_boards, io, strict=True)):
        chosen = set(names)
        layers = [lyr for lyr in graph.body if lyr.name in chosen]
        sets = {lyr.name: settings[lyr.name] for lyr in layers}
        cost = estimator.segment_cost(layers, sets, build.io_type, b)
        check_stage_fit(cost, b, cap, where[i], [lyr.name for lyr in layers], can_split=False)
        in_wire = _wire(graph, received, settings, build, f"{where[i]}.input")
        out_wire = _wire(graph, sent, settings, build, f"{where[i]}.output")
        planned.append(StagePlan(index=i, board=b, layers=tuple(lyr.name for lyr in layers), settings=sets, cost=cost,
                                input=in_wire, output=out_wire))
    return header.plan(getattr(estimator, "name", "analytic"), planned)
