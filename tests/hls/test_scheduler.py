"""Scheduler scripts for the vendor builds (hls/scheduler.py): a Slurm job array and HTCondor jobs, one task a
board, checked for syntax and content, and run here task by task the way the schedulers would (neither
scheduler exists on this machine: the tasks get the environment they would set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from split4ml.boards import get_board
from split4ml.errors import BuildError
from split4ml.hls.scheduler import write_scheduler_scripts
from split4ml.lower import plan_pipeline
from split4ml.plan.api import make_plan

sys.path.insert(0, str(Path(__file__).parents[1] / "plan"))
from test_plan_splits import mlp  # noqa: E402

PYNQ = get_board("pynq-z2")


@pytest.fixture(scope="module")
def big_stages():
    """The 25-board plan of 16-500x5-5 (Resource strategy, throughput): every board's stage, shards included."""
    g = mlp([16, 500, 500, 500, 500, 500, 5], seed=0, name="big_mlp")
    plan = make_plan(g, model="big.keras", board=PYNQ, objective="throughput", max_boards=25, strategy="Resource")
    pipeline, _ = plan_pipeline(plan, g)
    stages = [node.stage for node in pipeline.nodes]
    assert len(stages) == plan.n_boards == 25
    return stages


def _bash_n(path: Path) -> None:
    res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _stub_builds(out: Path, names: list[str], fail: set[str]) -> None:
    """A build.sh per board that says where it ran and fails for the boards in ``fail``."""
    for n in names:
        (out / n).mkdir(parents=True, exist_ok=True)
        script = out / n / "build.sh"
        script.write_text(f"#!/usr/bin/env bash\necho 'vendor build of {n}'\n"
                          + (f"echo 'ERROR: {n} does not meet timing' >&2\nexit 3\n" if n in fail else "exit 0\n"))
        script.chmod(0o755)


def test_scripts_for_the_25_board_plan(tmp_path, big_stages):
    out = tmp_path / "build"
    names = [st.name for st in big_stages]
    written = write_scheduler_scripts(out, big_stages, ["slurm", "htcondor"])
    assert set(written) == {"slurm", "htcondor", "run_stage", "collect", "stages"}
    assert written["stages"].read_text().splitlines() == names
    assert len(set(names)) == 25 and any("." in n for n in names)  # shards of split layers are boards too
    for role in ("slurm", "run_stage", "collect"):
        _bash_n(written[role])
        assert os.access(written[role], os.X_OK)
    slurm = written["slurm"].read_text()
    assert "#SBATCH --array=0-24\n" in slurm and "#SBATCH --output=logs/slurm-%A_%a.out" in slurm
    assert "#SBATCH --cpus-per-task=4" in slurm and "#SBATCH --time=04:00:00" in slurm
    assert 'exec "$HERE/run_stage.sh" "$stage"' in slurm
    sub = written["htcondor"].read_text()
    for line in ("executable            = run_stage.sh", "arguments             = $(stage)",
                 "transfer_executable   = False", "output                = logs/$(stage).condor.out",
                 "queue stage from stages.txt"):
        assert line in sub.splitlines()
    assert (out / "logs").is_dir()  # Slurm opens its --output file in logs/ before a task starts


def test_slurm_tasks_build_every_board_and_collect_names_the_failures(tmp_path, big_stages):
    out = tmp_path / "build"
    names = [st.name for st in big_stages]
    written = write_scheduler_scripts(out, big_stages, ["slurm"])
    bad = names[3]
    _stub_builds(out, names, fail={bad})
    res = subprocess.run([str(written["collect"])], capture_output=True, text=True)
    assert res.returncode == 1 and "0 of 25 board(s) built, 0 failed, 25 not run" in res.stdout
    for i in range(25):  # what sbatch does: the script, from the submit folder, with the task's index
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(i), "SLURM_SUBMIT_DIR": str(out)}
        r = subprocess.run(["bash", str(written["slurm"])], capture_output=True, text=True, env=env, cwd=out)
        assert r.returncode == (3 if names[i] == bad else 0), r.stderr
        assert f"[{names[i]}] started" in r.stdout
        assert (out / "logs" / f"{names[i]}.log").read_text().startswith(f"vendor build of {names[i]}")
    res = subprocess.run([str(written["collect"])], capture_output=True, text=True)
    assert res.returncode == 1
    assert f"FAILED {bad} (exit 3)" in res.stdout and "does not meet timing" in res.stdout
    assert "24 of 25 board(s) built, 1 failed, 0 not run" in res.stdout
    _stub_builds(out, [bad], fail=set())  # fixed: rerun that one task
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "3", "SLURM_SUBMIT_DIR": str(out)}
    assert subprocess.run(["bash", str(written["slurm"])], capture_output=True, env=env).returncode == 0
    res = subprocess.run([str(written["collect"])], capture_output=True, text=True)
    assert res.returncode == 0 and "25 of 25 board(s) built, 0 failed, 0 not run" in res.stdout
    # a task index past the array, or no index at all, is an error that says why
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "25", "SLURM_SUBMIT_DIR": str(out)}
    r = subprocess.run(["bash", str(written["slurm"])], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "task 25 has no line in stages.txt" in r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run(["bash", str(written["slurm"])], capture_output=True, text=True, env=env, cwd=out)
    assert r.returncode != 0 and "submit this with sbatch" in r.stderr


def test_htcondor_jobs_run_the_stage_they_are_given(tmp_path, big_stages):
    out = tmp_path / "build"
    names = [st.name for st in big_stages]
    written = write_scheduler_scripts(out, big_stages, ["htcondor"])
    _stub_builds(out, names, fail=set())
    for n in names:  # what condor does: run_stage.sh in place (transfer_executable = False), $(stage) as argument
        r = subprocess.run([str(written["run_stage"]), n], capture_output=True, text=True, cwd=out)
        assert r.returncode == 0 and f"[{n}] ok" in r.stdout
    res = subprocess.run([str(written["collect"])], capture_output=True, text=True)
    assert res.returncode == 0 and "25 of 25 board(s) built" in res.stdout
    r = subprocess.run([str(written["run_stage"]), "stage_99"], capture_output=True, text=True)
    assert r.returncode == 2 and "not a stage of this build" in r.stderr


def test_unknown_scheduler_is_refused_before_anything_is_written(tmp_path, big_stages):
    with pytest.raises(BuildError, match="--scheduler 'pbs' is not one of slurm, htcondor"):
        write_scheduler_scripts(tmp_path / "b", big_stages, ["pbs"])
    assert not (tmp_path / "b").exists()


def test_cli_build_writes_the_scheduler_scripts(monkeypatch, capsys, tmp_path):
    from cli_helpers import run_cli
    from split4ml.networks import mnist_fcnn

    mnist_fcnn(seed=1).save(tmp_path / "m.keras")
    plan = tmp_path / "plan.yaml"
    rc, _, err = run_cli(monkeypatch, capsys, "plan", str(tmp_path / "m.keras"), "--stages", "2", "-o", str(plan),
                         "-q")
    assert rc == 0, err
    rc, out, _ = run_cli(monkeypatch, capsys, "build", str(plan), "-o", str(tmp_path / "b"), "--scheduler", "SLURM",
                         "--scheduler", "htcondor", "--json")
    assert rc == 0
    d = json.loads(out)
    assert set(d["scheduler_scripts"]) == {"slurm", "htcondor", "run_stage", "collect", "stages"}
    assert (tmp_path / "b" / "stages.txt").read_text().split() == [s["node"] for s in d["stages"]]
    assert "#SBATCH --array=0-1" in (tmp_path / "b" / "build_slurm.sh").read_text()
    rc, out, _ = run_cli(monkeypatch, capsys, "build", str(plan), "-o", str(tmp_path / "c"), "--scheduler", "slurm")
    flat = " ".join(out.split())
    assert rc == 0 and "sbatch build_slurm.sh" in flat and "collect.sh" in flat
    rc, _, err = run_cli(monkeypatch, capsys, "build", str(plan), "-o", str(tmp_path / "d"), "--scheduler", "pbs")
    assert rc == 2 and "--scheduler 'pbs' is not one of slurm, htcondor" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()
