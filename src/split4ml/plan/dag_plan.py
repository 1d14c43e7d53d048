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
from pathlib import Path
from typing import Any

from ..boards import Board
from ..errors import PlanError
from ..estimate.base import Estimator
from ..ir import Graph
from ..settings import BuildSettings, LayerSettings
from ..stages import check_dag_io_type, dag_stage_of, link_wire, stage_tensors
from .fit import check_stage_fit
from .metrics import DEFAULT_BATCH
from .planfile import Plan, SplitSpec, StagePlan, Wire, price_stages


def _wire(graph: Graph, tensors: Sequence[str], settings: Mapping[str, LayerSettings], build: BuildSettings,
          where: str) -> Wire:
    wtype, shape = link_wire(graph, tensors, settings, build, where)
    return Wire(wtype, shape, tensors=tuple(tensors))


def assemble_dag(graph: Graph, *, model: str, model_sha256: str | None, board: Board, cap: float, objective: str,
                 estimator: Estimator, build: BuildSettings, stage_layers: Sequence[Sequence[str]],
                 stage_boards: Sequence[Board], settings: Mapping[str, LayerSettings],
                 where: Sequence[str] | None = None, board_files: Sequence[str] = (),
                 base_dir: Path = Path("."), splits: Sequence[SplitSpec | None] | None = None,
                 model_options: Mapping[str, Any] | None = None, batch: int = DEFAULT_BATCH) -> Plan:
    """Price, check and package the DAG stage assignment ``stage_layers`` (one list of layer names per
    board, in pipeline order) as a :class:`Plan`.

    Each stage's layers are stored in graph order; its ``input``/``output`` wires name the tensors
    they carry. Every board must fit under ``cap``.

    Raises:
        PlanError: an invalid assignment (a layer on no board or two, an edge going back, an
            activation away from its producer), a split (not supported with skip connections),
            tensors of different types on one link, or io_stream (io_parallel only).
        InfeasibleError: a board that does not fit (naming the stage, board and layers).
    """
    where = list(where) if where is not None else [f"stages[{i}]" for i in range(len(stage_layers))]
    if len(stage_layers) != len(stage_boards):
        raise PlanError(f"{len(stage_layers)} stages but {len(stage_boards)} boards")
    for i, sp in enumerate(splits or ()):
        if sp is not None:
            raise PlanError(f"{where[i]}.split: splitting a layer is not supported yet in models with skip "
                            f"connections (model {graph.name!r}); remove 'split' and give the layer a board of its "
                            "own, or raise its reuse_factor")
    check_dag_io_type(graph, build)
    dag_stage_of(graph, stage_layers)  # its errors name stages[i], as plan files do
    io = stage_tensors(graph, stage_layers)
    stages: list[StagePlan] = []
    for i, (names, b, (received, sent)) in enumerate(zip(stage_layers, stage_boards, io, strict=True)):
        chosen = set(names)
        layers = [lyr for lyr in graph.body if lyr.name in chosen]
        sets = {lyr.name: settings[lyr.name] for lyr in layers}
        cost = estimator.segment_cost(layers, sets, build.io_type, b)
        check_stage_fit(cost, b, cap, where[i], [lyr.name for lyr in layers], can_split=False)
        in_wire = _wire(graph, received, settings, build, f"{where[i]}.input")
        out_wire = _wire(graph, sent, settings, build, f"{where[i]}.output")
        stages.append(StagePlan(index=i, board=b, layers=tuple(lyr.name for lyr in layers), settings=sets, cost=cost,
                                input=in_wire, output=out_wire))
    return Plan(model=model, model_sha256=model_sha256, board=board, cap=cap, objective=objective,
                estimator=getattr(estimator, "name", "analytic"), build=build, stages=tuple(stages),
                metrics=price_stages(stages, batch, build.io_type), board_files=tuple(board_files),
                base_dir=base_dir, model_options=dict(model_options or {}), batch=batch)
