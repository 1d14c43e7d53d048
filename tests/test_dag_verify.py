"""A ResNet-style model (two residual blocks) planned across 4 PYNQ-Z2 boards by hand, with a skip tensor
forwarded by two intermediate boards: the chained per-board C-simulations equal the whole model's bit
for bit, and the hls4ml projects (VivadoAccelerator, one AXI stream in and out per board) are written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("keras")
pytest.importorskip("hls4ml")

from split4ml.build import build_plan  # noqa: E402
from split4ml.frontends.keras import graph_from_keras  # noqa: E402
from split4ml.lower import plan_pipeline  # noqa: E402
from split4ml.networks import residual_mlp  # noqa: E402
from split4ml.plan.api import resolve_plan  # noqa: E402
from split4ml.plan.planfile import spec_from_dict  # noqa: E402
from split4ml.verify import random_inputs, verify_pipeline  # noqa: E402

#: stem (the first block's skip input) is read by b1_add on board 3: board 1 reads and forwards it, board 2
#: only forwards it (unpacked from and packed into its wires in firmware, never computed on).
STAGES = [["stem"], ["b1_fc1"], ["b1_fc2"],
          ["b1_add", "b1_relu", "b2_fc1", "b2_fc2", "b2_add", "b2_relu", "head", "softmax"]]


@pytest.fixture(scope="module")
def plan_and_graph():
    graph = graph_from_keras(residual_mlp(seed=5))
    spec = spec_from_dict({"model": "res.keras", "board": "pynq-z2", "stages": [{"layers": s} for s in STAGES]})
    return resolve_plan(spec, graph), graph


@pytest.mark.slow
def test_resnet_across_pynq_boards_is_bit_exact(plan_and_graph) -> None:
    plan, graph = plan_and_graph
    assert [st.output.tensors for st in plan.stages[:3]] == [("stem",), ("stem", "b1_fc1"), ("stem", "b1_fc2")]
    pipeline, whole = plan_pipeline(plan, graph)
    x = random_inputs(plan.build.input_precision, (64,), 64, seed=1) * 0.25 + 0.5
    x = plan.build.input_precision.quantize(x)
    res = verify_pipeline(pipeline, whole, x)
    assert res.bit_exact and res.samples == 64 and res.n_boards == 4 and res.max_abs_diff == 0.0
    # the whole model is not trivial on these samples: its outputs vary
    from split4ml.hls import csim

    out = csim.compile_stages([whole])[0].predict(x)
    assert np.ptp(np.argmax(out, axis=1)) > 0 or np.ptp(out) > 0


@pytest.mark.slow
def test_resnet_projects_have_one_axi_stream_per_board(plan_and_graph, tmp_path: Path) -> None:
    plan, graph = plan_and_graph
    result = build_plan(plan, graph, tmp_path / "build")
    assert [s.backend for s in result.stages] == ["VivadoAccelerator"] * 4
    for s in result.stages:
        axi = (s.project_dir / "firmware" / "myproject_axi.h").read_text()
        assert "T_in" in axi and "T_out" in axi
    top = (result.stages[1].project_dir / "firmware" / "myproject.cpp").read_text()
    assert "concatenate" in top.lower()  # board 1 packs the forwarded skip with its own output
    top2 = (result.stages[2].project_dir / "firmware" / "myproject.cpp").read_text().lower()
    assert "cropping1d" in top2 and "concatenate" in top2  # board 2 unpacks its input and repacks the skip


@pytest.mark.slow
def test_cli_inspects_verifies_and_runs_a_hand_written_resnet_plan(tmp_path: Path, monkeypatch, capsys) -> None:
    """The same plan as a file: ``inspect``, ``verify`` and an emulated ``run`` (4 node processes; the packed
    wires make the boards a line, so the runtime streams it like a chain)."""
    import json

    from cli_helpers import run_cli

    residual_mlp(seed=5).save(tmp_path / "res.keras")
    lines = ["split4ml_plan: 1", "model: res.keras", "board: pynq-z2", "stages:",
             *(f"  - layers: [{', '.join(s)}]" for s in STAGES)]
    (tmp_path / "plan.yaml").write_text("\n".join(lines) + "\n")
    rc, out, _ = run_cli(monkeypatch, capsys, "inspect", str(tmp_path / "res.keras"), "--json")
    assert rc == 0 and {"name": "b1_add", "inputs": ["stem", "b1_fc2"]}.items() <= {
        k: v for lyr in json.loads(out)["layers"] if lyr["name"] == "b1_add" for k, v in lyr.items()}.items()
    rc, out, _ = run_cli(monkeypatch, capsys, "verify", str(tmp_path / "plan.yaml"), "-n", "40", "--json")
    res = json.loads(out)
    assert rc == 0 and res["bit_exact"] and res["samples"] == 40 and res["n_boards"] == 4
    rc, out, _ = run_cli(monkeypatch, capsys, "run", str(tmp_path / "plan.yaml"), "--emulate", "-n", "24", "--json")
    run = json.loads(out)
    assert rc == 0 and run["bit_exact"] and run["completed"] and run["delivered"] == 24
    assert len(run["stages"]) == 4
