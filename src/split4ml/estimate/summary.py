"""One estimator's figures for every layer of a model and for the whole model on one board: what
``split4ml estimate`` prints and its ``--json`` holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..boards import Board
from ..ir import Graph
from ..settings import LayerSettings
from .base import Estimator
from .calibrate import segment_source


def model_figures(graph: Graph, settings: Mapping[str, LayerSettings], est: Estimator, io_type: str, board: Board,
                  cap: float) -> dict[str, Any]:
    """``{"board", "estimator", "cap", "layers", "total"}``: per layer its resources, latency and II
    cycles, settings and which estimator priced it (``source``); the total of the whole model as one
    board's segment (shell included), its utilisation, whether it fits one board under ``cap``, and
    the shell alone."""
    rows = []
    for lyr in graph.body:
        s = settings[lyr.name]
        c = est.layer_cost(lyr, s, io_type, board)
        rows.append({"name": lyr.name, "type": lyr.kind, "lut": c.lut, "ff": c.ff, "dsp": c.dsp, "bram18": c.bram18,
                     "latency_cycles": c.latency_cycles, "ii_cycles": c.ii_cycles, "reuse_factor": s.reuse_factor,
                     "strategy": s.strategy, "source": segment_source(est, [lyr], {lyr.name: s}, io_type, board)})
    body = list(graph.body)
    tot = est.segment_cost(body, settings, io_type, board)
    total = {**tot.resources(), "latency_cycles": tot.latency_cycles, "ii_cycles": tot.ii_cycles,
             "utilization": tot.utilization(board), "fits_one_board": tot.fits(board, cap),
             "shell": est.shell_cost(board).resources(), "source": segment_source(est, body, settings, io_type, board)}
    return {"board": board.name, "estimator": est.name, "cap": cap, "layers": rows, "total": total}
