"""Vendor build scripts: one ``build.sh`` per stage and a parallel ``build_all.sh``.

split4ml cannot run Vivado here, so it writes the commands that turn each stage's hls4ml project
into an IP core (and, for PYNQ-style boards, a bitstream) where the tools are installed:

- VivadoAccelerator (``pynq-z2``, ``zcu102``): ``vivado_hls -f build_prj.tcl "reset=1 csim=0
  synth=1 cosim=0 validation=0 export=1 vsynth=0 fifo_opt=0"`` (hls4ml's ``build_prj.tcl`` reads
  these ``name=value`` options from its argument), then ``vivado -mode batch -source design.tcl``
  for the block design and bitstream; the ``.bit`` and ``.hwh`` are copied to ``bitstream/``;
- Vitis / Vivado (other boards): the same options in ``build_opt.tcl`` (Vitis reads them from
  there), then ``vitis-run --tcl build_prj.tcl --mode hls`` (Vitis >= 2024.1), else
  ``vitis_hls -f build_prj.tcl``; or ``vivado_hls`` for the Vivado backend. No bitstream: the
  exported IP goes into the user's own platform.

``build_all.sh [--jobs N]`` runs the stage scripts N at a time (``xargs -P``), logs each to
``stage_<i>/build.log`` and exits non-zero naming the stages that failed.
"""

from __future__ import annotations

import shlex
import stat
from collections.abc import Sequence
from pathlib import Path

from ..boards import SAFE_NAME
from ..errors import BuildError
from ..stages import Stage
from .project import DEFAULT_PROJECT_NAME, backend_for

#: Options handed to hls4ml's build_prj.tcl: synthesise and export the IP, no simulation.
HLS_OPTIONS = {"reset": 1, "csim": 0, "synth": 1, "cosim": 0, "validation": 0, "export": 1, "vsynth": 0,
               "fifo_opt": 0}

_PRELUDE = """#!/usr/bin/env bash
# Written by split4ml. Vendor build of {stage} ({board}, hls4ml backend {backend}).
set -euo pipefail
cd "$(dirname "$0")"

need() {{
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "{stage}: '$1' is not on PATH; source the Xilinx settings script (e.g. settings64.sh) of a Vivado/Vitis installation and run again" >&2
        exit 127
    fi
}}

if [ ! -f build_prj.tcl ]; then
    echo "{stage}: build_prj.tcl is missing in $(pwd); write the hls4ml project first (split4ml build PLAN)" >&2
    exit 2
fi
"""

_VIVADO_ACCELERATOR = """
need vivado_hls
need vivado
echo "{stage}: HLS synthesis and IP export (vivado_hls)"
vivado_hls -f build_prj.tcl {options}
echo "{stage}: block design and bitstream (vivado)"
vivado -mode batch -source design.tcl
mkdir -p bitstream
bit=$(find {project}_vivado_accelerator -name '*.bit' 2>/dev/null | head -n 1 || true)
hwh=$(find {project}_vivado_accelerator -name '*.hwh' 2>/dev/null | head -n 1 || true)
if [ -n "$bit" ]; then cp "$bit" bitstream/{stage}.bit; fi
if [ -n "$hwh" ]; then cp "$hwh" bitstream/{stage}.hwh; fi
echo "{stage}: done"
"""

_VITIS = """
cat > build_opt.tcl <<'EOF'
array set opt {{
{opt_block}
}}
EOF
if command -v vitis-run >/dev/null 2>&1; then
    echo "{stage}: HLS synthesis and IP export (vitis-run)"
    vitis-run --tcl build_prj.tcl --mode hls
else
    need vitis_hls
    echo "{stage}: HLS synthesis and IP export (vitis_hls)"
    vitis_hls -f build_prj.tcl {options}
fi
echo "{stage}: done (IP in {project}_prj/solution1/impl/ip)"
"""

_VIVADO = """
need vivado_hls
echo "{stage}: HLS synthesis and IP export (vivado_hls)"
vivado_hls -f build_prj.tcl {options}
echo "{stage}: done (IP in {project}_prj/solution1/impl/ip)"
"""

_BUILD_ALL = """#!/usr/bin/env bash
# Written by split4ml. Runs every stage's vendor build, N at a time.
#   ./build_all.sh [--jobs N]
# Each stage logs to stage_<i>/build.log. Exits 1 and names the failed stages if any fails.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
JOBS=1
usage() {{ echo "usage: $0 [--jobs N]" >&2; }}
while [ $# -gt 0 ]; do
    case "$1" in
        -j|--jobs)
            if [ $# -lt 2 ]; then usage; exit 2; fi
            JOBS="$2"; shift 2 ;;
        --jobs=*) JOBS="${{1#--jobs=}}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage; exit 2 ;;
    esac
done
case "$JOBS" in
    ''|*[!0-9]*|0) echo "--jobs must be a positive integer, got '$JOBS'" >&2; exit 2 ;;
esac
STAGES=({stages})
STATUS="$(mktemp -d)"
trap 'rm -rf "$STATUS"' EXIT
echo "building ${{#STAGES[@]}} stage(s), $JOBS at a time"
printf '%s\\n' "${{STAGES[@]}}" | xargs -P "$JOBS" -I {{}} bash -c '
    stage="$1"; here="$2"; status="$3"
    echo "[$stage] started"
    if "$here/$stage/build.sh" > "$here/$stage/build.log" 2>&1; then rc=0; else rc=$?; fi
    echo "$rc" > "$status/$stage"
    if [ "$rc" -eq 0 ]; then echo "[$stage] ok"; else echo "[$stage] FAILED (exit $rc), see $stage/build.log"; fi
' _ {{}} "$HERE" "$STATUS"
failed=()
for s in "${{STAGES[@]}}"; do
    rc="$(cat "$STATUS/$s" 2>/dev/null || echo missing)"
    if [ "$rc" != "0" ]; then failed+=("$s"); fi
done
if [ ${{#failed[@]}} -gt 0 ]; then
    echo "failed stages: ${{failed[*]}}" >&2
    exit 1
fi
echo "all ${{#STAGES[@]}} stage(s) built"
"""


def write_executable(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` and make it executable."""
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def stage_script(stage: Stage, project_name: str = DEFAULT_PROJECT_NAME) -> str:
    """The text of ``stage``'s ``build.sh``."""
    backend, _ = backend_for(stage.board)
    options = shlex.quote(" ".join(f"{k}={v}" for k, v in HLS_OPTIONS.items()))
    names = {"stage": stage.name, "board": stage.board.name, "backend": backend, "project": project_name}
    for what, value in names.items():  # they are written into shell commands, paths and comments
        if not SAFE_NAME.fullmatch(value):
            raise BuildError(f"{stage.name}: the {what} name {value!r} may hold only letters, digits, '.', '_' and "
                             "'-' to be written into build.sh; rename it")
    fields = {**names, "options": options,
              "opt_block": "\n".join(f"    {k:<10} {v}" for k, v in HLS_OPTIONS.items())}
    body = {"VivadoAccelerator": _VIVADO_ACCELERATOR, "Vitis": _VITIS, "Vivado": _VIVADO}[backend]
    return _PRELUDE.format(**fields) + body.format(**fields)


def write_build_scripts(out_dir: Path | str, stages: Sequence[Stage],
                        project_name: str = DEFAULT_PROJECT_NAME) -> Path:
    """Write ``out_dir/stage_<i>/build.sh`` for every stage and ``out_dir/build_all.sh``.

    The stage projects are expected in ``out_dir/stage_<i>/`` (see
    :func:`split4ml.hls.project.convert_stage`). Returns the path of ``build_all.sh``.
    """
    out = Path(out_dir)
    names = []
    for stage in stages:
        sdir = out / stage.name
        sdir.mkdir(parents=True, exist_ok=True)
        write_executable(sdir / "build.sh", stage_script(stage, project_name))
        names.append(stage.name)
    build_all = out / "build_all.sh"
    write_executable(build_all, _BUILD_ALL.format(stages=" ".join(shlex.quote(n) for n in names)))
    return build_all
