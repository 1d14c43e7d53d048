"""The reference of :mod:`split4ml.verify`: the whole model, as hls4ml converts it directly.

The boards are checked against hls4ml's conversion of the user's original model through hls4ml's
public converter (``convert_from_keras_model``, ``convert_from_pytorch_model``,
``convert_from_onnx_model``, or ``keras_v2_to_hls`` for a Keras 2 JSON/H5 file: see
:meth:`~split4ml.frontends.source.ModelSource.reference`), with the plan's per-layer settings
(:func:`split4ml.hls.config.model_config`). It does not go through split4ml's cutting, so a mistake
there cannot hide in the reference too. Its C-simulation is compiled once and cached like a stage's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..boards import Board
from ..errors import BuildError
from ..fixed import FixedType
from ..ir import Graph
from ..settings import BuildSettings, LayerSettings
from .config import check_no_auto, model_config, with_tables


@dataclass(frozen=True, eq=False)
class Reference:
    """The whole model converted by hls4ml's public converter, for ``verify`` (see the module
    docstring). It has the attributes :func:`split4ml.hls.csim.compile_stages` reads of a stage."""

    graph: Graph
    settings: Mapping[str, LayerSettings]
    build: BuildSettings
    board: Board
    index: int = -1
    part: int | None = None

    @property
    def name(self) -> str:
        return "reference"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.input.output_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.graph.layer(self.graph.outputs[0]).output_shape

    @property
    def input_type(self) -> FixedType:
        return self.build.input_precision

    @property
    def output_type(self) -> FixedType:
        last = self.graph.outputs[0]
        s = self.settings.get(last)
        return s.precision.result if s is not None else self.build.result_precision

    @property
    def backend(self) -> str:
        from .project import backend_for, conversion_backend

        return conversion_backend(backend_for(self.board)[0])

    def hls_config(self) -> dict[str, Any]:
        """The configuration hls4ml converts the model with: the plan's per-layer settings."""
        return with_tables(model_config(self.graph, self.settings, self.build))

    def describe(self) -> dict[str, Any]:
        """What the reference is (``verify --json``'s ``reference``)."""
        import hls4ml

        src = self.graph.source
        return {"kind": "hls4ml", "converter": src.reference_name(),
                "model": str(src.files[0]) if src.files else src.name, "via": src.via or None,
                "backend": self.backend, "io_type": self.build.io_type, "hls4ml_version": hls4ml.__version__}

    def cache_key(self) -> str:
        import hls4ml

        from .csim import CACHE_FORMAT

        h = hashlib.sha256()
        payload = {"format": CACHE_FORMAT, "kind": "reference", "hls4ml": hls4ml.__version__,
                   "model": self.graph.source.digest(), "backend": self.backend, "io_type": self.build.io_type,
                   "input": str(self.build.input_precision), "config": self.hls_config()}
        h.update(json.dumps(payload, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def write_project(self, prj: Path, project_name: str) -> str:
        """Convert and write the reference project in ``prj``; returns hls4ml's library stamp."""
        from ..frontends.source import quiet
        from .project import _clock

        src = self.graph.source
        model = src.reference(self.hls_config(), self.backend, prj, project_name, part=self.board.part,
                              clock_period=_clock(self.board.clock_period_ns), io_type=self.build.io_type)
        check_no_auto(model, where="the reference (hls4ml's direct conversion)")
        try:
            with quiet():
                model.write()
        except Exception as exc:  # noqa: BLE001
            raise BuildError(f"the reference: hls4ml could not write {prj}: {type(exc).__name__}: {exc}") from exc
        return str(model.config.get_config_value("Stamp"))


def reference_for(graph: Graph, board: Board, settings: Mapping[str, LayerSettings], build: BuildSettings) -> Any:
    """The verify reference of ``graph``: hls4ml's direct conversion (:class:`Reference`) of a model
    read from a file, else (a graph built by hand) split4ml's own whole-model stage."""
    from ..stages import whole_model_stage

    if graph.source is None:
        return whole_model_stage(graph, board, settings, build)
    return Reference(graph=graph, settings=dict(settings), build=build, board=board)


def describe_reference(whole: Any) -> dict[str, Any]:
    """``verify --json``'s ``reference`` for a reference built by :func:`reference_for`."""
    if isinstance(whole, Reference):
        return whole.describe()
    return {"kind": "split4ml", "converter": "split4ml whole-model stage (the graph was not read from a model file)",
            "model": whole.graph.name, "via": None, "backend": None, "io_type": whole.build.io_type,
            "hls4ml_version": None}
