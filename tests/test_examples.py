"""The two examples of issue 6 in their reduced (--quick) form, as CI runs them.

Each example trains its model, plans it on at most 5 PYNQ-Z2 boards, writes the hls4ml projects, verifies
the chained C-simulations against the whole model and streams the same samples through an
emulated pipeline (one ``split4ml node`` process per board). Slow: 6 hls4ml compiles each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, out: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name / "run.py"), "--quick", "--json", "-o",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert proc.returncode == (0 if summary["ok"] else 1)
    return summary


def check_boards_bit_exact(s: dict[str, Any], min_accuracy: float) -> None:
    plan, build, verify, run = s["plan"], s["build"], s["verify"], s["run"]
    assert plan["board"] == "pynq-z2"
    n = plan["n_boards"]
    assert 2 <= n <= 5 and build["n_boards"] == n and verify["n_boards"] == n
    assert sum(max(1, len(st["shards"])) for st in plan["stages"]) == n  # a split step has a board per shard
    assert len({st["project_dir"] for st in build["stages"]}) == n
    assert len(run["stages"]) == n  # one node process per board
    assert verify["bit_exact"] and verify["mismatched_samples"] == 0 and verify["max_abs_diff"] == 0.0
    assert verify["samples"] == s["samples"] == 100
    assert min_accuracy <= verify["fixed_accuracy"] <= 1.0
    assert abs(verify["fixed_accuracy"] - verify["float_accuracy"]) <= 0.05
    assert run["bit_exact"] and run["completed"] and run["delivered"] == 100
    assert run["lost"] == 0 and run["duplicated"] == 0 and run["rejected"] == 0
    assert s["ok"]


@pytest.mark.slow
def test_mnist_fcnn_quick(tmp_path):
    s = run_example("mnist_fcnn", tmp_path / "mnist")
    check_boards_bit_exact(s, min_accuracy=0.8)
    assert (tmp_path / "mnist" / "hls" / "build_all.sh").is_file()


@pytest.mark.slow
def test_cyber_cnn_quick(tmp_path):
    pytest.importorskip("river", reason="the cyber_cnn example needs river (pip install -e '.[examples]')")
    s = run_example("cyber_cnn", tmp_path / "cyber")
    check_boards_bit_exact(s, min_accuracy=0.8)
    layers = [n for st in s["plan"]["stages"] for n in st["layers"]]
    assert layers[:2] == ["conv1", "conv2"]  # the convolutions run on the boards too
    assert (tmp_path / "cyber" / "hls" / "build_all.sh").is_file()
