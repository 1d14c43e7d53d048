"""Batch-scheduler scripts for the vendor builds: one job-array task per board.

Synthesising one board with Vivado takes about an hour, so a plan of 25 boards is where one machine
stops being enough. ``split4ml build PLAN -o OUT --scheduler slurm`` (or ``htcondor``, or both)
writes, beside ``OUT/build_all.sh``:

- ``stages.txt``: the boards' build folders, one per line (task ``i`` builds line ``i + 1``);
- ``run_stage.sh STAGE``: runs ``STAGE/build.sh``, logs it to ``logs/STAGE.log`` and writes its exit
  status to ``status/STAGE``: the one thing every task does;
- ``build_slurm.sh`` (``slurm``): an ``sbatch`` job array, ``--array=0-(N-1)``, task ``i`` running
  ``run_stage.sh`` on line ``i + 1`` of ``stages.txt``;
- ``build.sub`` (``htcondor``): a submit description that queues one job per line of ``stages.txt``;
- ``collect.sh``: once the jobs are done, prints which boards built, which failed (with the last
  lines of their logs) and which never ran, and exits 0 only when every board built.

The resource requests (4 cores, 16 GB, 4 hours a board) are written as plain ``#SBATCH`` and
``request_*`` lines to edit. The folder must be on a file system the workers share, and the
workers need Vivado/Vitis on their ``PATH`` (``build.sh`` says so when it is not).

Submit and collect, from ``OUT``::

    cd OUT && sbatch build_slurm.sh        # Slurm
    cd OUT && condor_submit build.sub      # HTCondor
    ./collect.sh                           # when the queue is empty
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from ..boards import SAFE_NAME
from ..errors import BuildError
from ..stages import Stage
from .scripts import write_executable

#: The schedulers split4ml writes scripts for.
SCHEDULERS = ("slurm", "htcondor")
#: What each task asks for: Vivado synthesis of one board (edit the written lines to taste).
CPUS, MEMORY_GB, HOURS = 4, 16, 4

_RUN_STAGE = """#!/usr/bin/env bash
# Written by split4ml. Runs one board's vendor build: ./run_stage.sh STAGE (a line of stages.txt).
# Logs to logs/STAGE.log and writes the exit status to status/STAGE (read by collect.sh).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
stage="${1:?usage: run_stage.sh STAGE (a line of stages.txt)}"
if ! grep -qxF -- "$stage" "$HERE/stages.txt"; then
    echo "run_stage.sh: '$stage' is not a stage of this build (see stages.txt)" >&2
    exit 2
fi
mkdir -p "$HERE/logs" "$HERE/status"
rm -f "$HERE/status/$stage"
echo "[$stage] started on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if "$HERE/$stage/build.sh" > "$HERE/logs/$stage.log" 2>&1; then rc=0; else rc=$?; fi
echo "$rc" > "$HERE/status/$stage"
if [ "$rc" -eq 0 ]; then echo "[$stage] ok"; else echo "[$stage] FAILED (exit $rc), see logs/$stage.log"; fi
exit "$rc"
"""

_SLURM = """#!/usr/bin/env bash
#SBATCH --job-name=split4ml-build
#SBATCH --array=0-{last}
#SBATCH --cpus-per-task={cpus}
#SBATCH --mem={memory}G
#SBATCH --time={hours:02d}:00:00
#SBATCH --output=logs/slurm-%A_%a.out
# Written by split4ml. Vendor builds of {n} board(s) as a Slurm job array, one task per board.
#   cd {folder} && sbatch build_slurm.sh        (the workers must share this folder and have Vivado/Vitis)
#   ./collect.sh                              (when the array is done: which boards built, which failed)
# Task i builds line i + 1 of stages.txt. Edit the #SBATCH lines above for your site (partition, account).
set -uo pipefail
HERE="${{SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")" && pwd)}}"
i="${{SLURM_ARRAY_TASK_ID:?submit this with sbatch: it is a job array (or set SLURM_ARRAY_TASK_ID to run one task)}}"
stage="$(sed -n "$((i + 1))p" "$HERE/stages.txt")"
if [ -z "$stage" ]; then
    echo "build_slurm.sh: task $i has no line in stages.txt ({n} stages)" >&2
    exit 2
fi
exec "$HERE/run_stage.sh" "$stage"
"""

_HTCONDOR = """# Written by split4ml. Vendor builds of {n} board(s) as HTCondor jobs, one per board.
#   cd {folder} && condor_submit build.sub     (the workers must share this folder and have Vivado/Vitis)
#   ./collect.sh                               (when the jobs are done: which boards built, which failed)
# Edit the request_* lines for your pool.
universe              = vanilla
executable            = run_stage.sh
transfer_executable   = False
should_transfer_files = NO
getenv                = True
arguments             = $(stage)
output                = logs/$(stage).condor.out
error                 = logs/$(stage).condor.err
log                   = logs/condor.log
request_cpus          = {cpus}
request_memory        = {memory}GB
queue stage from stages.txt
"""

_COLLECT = """#!/usr/bin/env bash
# Written by split4ml. Summary of the boards' vendor builds (run_stage.sh writes status/STAGE).
# Exits 0 when every board built, 1 when some failed or never ran.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
built=(); failed=(); missing=()
while IFS= read -r stage; do
    [ -n "$stage" ] || continue
    if [ ! -f "$HERE/status/$stage" ]; then missing+=("$stage"); continue; fi
    rc="$(cat "$HERE/status/$stage")"
    if [ "$rc" = "0" ]; then built+=("$stage"); else failed+=("$stage"); fi
done < "$HERE/stages.txt"
for stage in "${failed[@]}"; do
    echo "FAILED $stage (exit $(cat "$HERE/status/$stage")), last lines of logs/$stage.log:"
    tail -n 5 "$HERE/logs/$stage.log" 2>/dev/null | sed 's/^/    /'
done
if [ ${#missing[@]} -gt 0 ]; then echo "not run (yet): ${missing[*]}"; fi
total=$(( ${#built[@]} + ${#failed[@]} + ${#missing[@]} ))
echo "${#built[@]} of $total board(s) built, ${#failed[@]} failed, ${#missing[@]} not run"
bits=$(find "$HERE" -path '*/bitstream/*.bit' 2>/dev/null | wc -l)
echo "bitstreams: $bits in */bitstream/"
if [ ${#failed[@]} -gt 0 ] || [ ${#missing[@]} -gt 0 ]; then exit 1; fi
"""


def check_schedulers(schedulers: Sequence[str]) -> None:
    """Raise :class:`BuildError` naming the first of ``schedulers`` split4ml writes no scripts for."""
    unknown = [s for s in schedulers if s not in SCHEDULERS]
    if unknown:
        raise BuildError(f"--scheduler {unknown[0]!r} is not one of {', '.join(SCHEDULERS)}")


def write_scheduler_scripts(out_dir: Path | str, stages: Sequence[Stage], schedulers: Sequence[str]) -> dict[str, Path]:
    """Write the job scripts of ``schedulers`` (see the module docstring) for ``stages`` into ``out_dir``.

    Returns the paths written, by role: ``slurm``, ``htcondor``, ``run_stage``, ``collect``, ``stages``.

    Raises:
        BuildError: an unknown scheduler, no stages, or a stage name that could not be written into a
            script safely (each names what to change).
    """
    check_schedulers(schedulers)
    if not stages:
        raise BuildError("no stages to build: the plan has no boards")
    names = [st.name for st in stages]
    bad = [n for n in names if not SAFE_NAME.fullmatch(n)]
    if bad:
        raise BuildError(f"stage name {bad[0]!r} may hold only letters, digits, '.', '_' and '-' to be written into "
                         "the scheduler scripts")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)  # Slurm opens its --output file before the task runs
    written = {"stages": out / "stages.txt", "run_stage": out / "run_stage.sh", "collect": out / "collect.sh"}
    written["stages"].write_text("".join(f"{n}\n" for n in names))
    write_executable(written["run_stage"], _RUN_STAGE)
    write_executable(written["collect"], _COLLECT)
    fields = {"n": len(names), "last": len(names) - 1, "cpus": CPUS, "memory": MEMORY_GB, "hours": HOURS,
              "folder": shlex.quote(str(out))}
    if "slurm" in schedulers:
        written["slurm"] = out / "build_slurm.sh"
        write_executable(written["slurm"], _SLURM.format(**fields))
    if "htcondor" in schedulers:
        written["htcondor"] = out / "build.sub"
        written["htcondor"].write_text(_HTCONDOR.format(**fields))
    return written
