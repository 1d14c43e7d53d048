"""Vendor build scripts: written, executable, valid bash, parallel, and failures propagate."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from split4ml.boards import get_board
from split4ml.frontends.keras import graph_from_keras
from split4ml.hls.project import convert_stage
from split4ml.hls.scripts import write_build_scripts
from split4ml.networks import deep_mlp
from split4ml.settings import BuildSettings, LayerSettings
from split4ml.stages import make_stages

FAKE_VIVADO_HLS = """#!/usr/bin/env bash
# fake vivado_hls: records its arguments, fails in a directory named by $FAIL_STAGE
echo "$@" > vivado_hls.args
case "$(basename "$(pwd)")" in "${FAIL_STAGE:-none}") echo "synthesis error" >&2; exit 3 ;; esac
sleep 0.3
mkdir -p myproject_prj/solution1/impl/ip && touch myproject_prj/solution1/impl/ip/component.xml
"""
FAKE_VIVADO = """#!/usr/bin/env bash
echo "$@" > vivado.args
mkdir -p myproject_vivado_accelerator/x && touch myproject_vivado_accelerator/x/design_1_wrapper.bit
mkdir -p myproject_vivado_accelerator/y && touch myproject_vivado_accelerator/y/design_1.hwh
"""
FAKE_VITIS_HLS = """#!/usr/bin/env bash
echo "$@" > vitis_hls.args
"""


@pytest.fixture(scope="module")
def stages():
    graph = graph_from_keras(deep_mlp())
    names = [lyr.name for lyr in graph.body]
    settings = {n: LayerSettings() for n in names}
    boards = [get_board("pynq-z2"), get_board("zcu102"), get_board("alveo-u200")]
    return make_stages(graph, [tuple(names[:3]), tuple(names[3:6]), tuple(names[6:])], boards, settings,
                       BuildSettings())


@pytest.fixture()
def out_dir(tmp_path: Path, stages) -> Path:
    out = tmp_path / "out"
    for st in stages:
        convert_stage(st, out / st.name)
    write_build_scripts(out, stages)
    return out


def _fake_bin(tmp_path: Path, tools: dict[str, str]) -> dict[str, str]:
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    for name, text in tools.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    # only the fake tools, bash and coreutils: no real Xilinx tool can leak in
    return {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)}


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_scripts_are_written_executable_and_valid_bash(out_dir: Path, stages) -> None:
    scripts = [out_dir / st.name / "build.sh" for st in stages] + [out_dir / "build_all.sh"]
    for s in scripts:
        assert s.is_file() and s.stat().st_mode & stat.S_IXUSR, s
        assert subprocess.run(["bash", "-n", str(s)], capture_output=True).returncode == 0, s
    text0 = (out_dir / "stage_0" / "build.sh").read_text()
    assert 'vivado_hls -f build_prj.tcl' in text0 and "export=1" in text0 and "csim=0" in text0
    assert "vivado -mode batch -source design.tcl" in text0
    text2 = (out_dir / "stage_2" / "build.sh").read_text()  # alveo: Vitis, no bitstream
    assert "vitis-run --tcl build_prj.tcl --mode hls" in text2 and "design.tcl" not in text2


def test_build_all_runs_every_stage_in_parallel(out_dir: Path, tmp_path: Path) -> None:
    env = _fake_bin(tmp_path, {"vivado_hls": FAKE_VIVADO_HLS, "vivado": FAKE_VIVADO, "vitis_hls": FAKE_VITIS_HLS})
    res = _run(["./build_all.sh", "--jobs", "2"], env, out_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 at a time" in res.stdout and "all 3 stage(s) built" in res.stdout
    for s in ("stage_0", "stage_1"):
        args = (out_dir / s / "vivado_hls.args").read_text()
        assert "synth=1" in args and "export=1" in args and "csim=0" in args
        assert (out_dir / s / "vivado.args").read_text().split() == ["-mode", "batch", "-source", "design.tcl"]
        assert (out_dir / s / "bitstream" / f"{s}.bit").is_file()
        assert (out_dir / s / "bitstream" / f"{s}.hwh").is_file()
    assert (out_dir / "stage_2" / "vitis_hls.args").read_text().startswith("-f build_prj.tcl")
    assert "export     1" in (out_dir / "stage_2" / "build_opt.tcl").read_text()


def test_build_all_reports_failed_stage_and_exits_nonzero(out_dir: Path, tmp_path: Path) -> None:
    env = _fake_bin(tmp_path, {"vivado_hls": FAKE_VIVADO_HLS, "vivado": FAKE_VIVADO, "vitis_hls": FAKE_VITIS_HLS})
    res = _run(["./build_all.sh", "--jobs=2"], dict(env, FAIL_STAGE="stage_1"), out_dir)
    assert res.returncode == 1
    assert "failed stages: stage_1" in res.stderr
    assert "[stage_1] FAILED (exit 3)" in res.stdout
    assert "synthesis error" in (out_dir / "stage_1" / "build.log").read_text()
    # the other stages still ran to the end
    assert (out_dir / "stage_0" / "bitstream" / "stage_0.bit").is_file()
    assert (out_dir / "stage_2" / "vitis_hls.args").is_file()


def test_missing_tool_fails_with_a_clear_message(out_dir: Path, tmp_path: Path) -> None:
    env = _fake_bin(tmp_path, {})
    res = _run(["./build.sh"], env, out_dir / "stage_0")
    assert res.returncode == 127
    assert "stage_0: 'vivado_hls' is not on PATH" in res.stderr
    res = _run(["./build_all.sh", "--jobs", "0"], env, out_dir)
    assert res.returncode == 2 and "--jobs must be a positive integer" in res.stderr


def test_missing_project_is_reported(tmp_path: Path, stages) -> None:
    write_build_scripts(tmp_path, stages[:1])
    env = _fake_bin(tmp_path, {"vivado_hls": FAKE_VIVADO_HLS, "vivado": FAKE_VIVADO})
    res = _run(["./build.sh"], env, tmp_path / "stage_0")
    assert res.returncode == 2 and "build_prj.tcl is missing" in res.stderr
    assert os.access(tmp_path / "build_all.sh", os.X_OK)
