"""Write one hls4ml project per stage of a plan, plus the vendor build scripts.

``OUT/stage_<i>/`` (``OUT/stage_<i>.<part>/`` for the shards of a split layer) holds one board's hls4ml project (VivadoAccelerator for PYNQ boards, Vitis
otherwise), ``OUT/stage_<i>/build.sh`` runs the vendor build where the tools exist, and
``OUT/build_all.sh --jobs N`` runs them in parallel on this machine, and with ``schedulers`` a Slurm
job array or HTCondor jobs run them on a cluster (:mod:`split4ml.hls.scheduler`). ``OUT/plan.yaml``
is a copy of the plan and ``OUT/manifest.json`` lists what was written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ir import Graph
from .lower import plan_pipeline
from .plan.planfile import Plan

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StageBuild:
    index: int
    board: str
    backend: str
    project_dir: Path
    script: Path
    node: str = ""
    part: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "node": self.node, "part": self.part, "board": self.board,
                "backend": self.backend, "project_dir": str(self.project_dir), "script": str(self.script)}


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    stages: tuple[StageBuild, ...]
    build_all: Path
    #: the scheduler scripts written, by role (``slurm``, ``htcondor``, ``run_stage``, ``collect``, ``stages``)
    scheduler_scripts: dict[str, Path] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "n_stages": len({s.index for s in self.stages}),
                "n_boards": len(self.stages),
                "stages": [s.as_dict() for s in self.stages], "build_all": str(self.build_all),
                "scheduler_scripts": {k: str(v) for k, v in self.scheduler_scripts.items()}}


def build_plan(plan: Plan, graph: Graph, out_dir: str | Path, progress: Progress | None = None,
               schedulers: Sequence[str] = ()) -> BuildResult:
    """Write every stage's hls4ml project and build scripts into ``out_dir``, and the job scripts of
    ``schedulers`` (``slurm``, ``htcondor``; :mod:`split4ml.hls.scheduler`)."""
    from .hls.project import backend_for, convert_stage
    from .hls.scheduler import check_schedulers, write_scheduler_scripts
    from .hls.scripts import write_build_scripts

    check_schedulers(schedulers)  # before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipeline, _ = plan_pipeline(plan, graph)
    stages = [node.stage for node in pipeline.nodes]  # one per board: shards and merge boards included
    results = []
    for i, st in enumerate(stages):
        if progress:
            progress("write hls4ml projects", i, len(stages))
        pdir = out / st.name
        convert_stage(st, pdir)
        backend, _ = backend_for(st.board)
        results.append(StageBuild(index=st.index, board=st.board.name, backend=backend, project_dir=pdir,
                                  script=pdir / "build.sh", node=st.name, part=st.part))
    if progress:
        progress("write hls4ml projects", len(stages), len(stages))
    build_all = write_build_scripts(out, stages)
    sched = write_scheduler_scripts(out, stages, schedulers) if schedulers else {}
    plan.write(out / "plan.yaml")
    result = BuildResult(out_dir=out, stages=tuple(results), build_all=Path(build_all), scheduler_scripts=sched)
    (out / "manifest.json").write_text(json.dumps(result.as_dict(), indent=2))
    return result
