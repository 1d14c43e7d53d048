"""``split4ml report``: HTML and PNG files, the --json contract, bad inputs; --quiet on the model commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cli_helpers import run_cli as run
from split4ml import cli


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from split4ml.networks import mnist_fcnn

    d = tmp_path_factory.mktemp("report-cli")
    mnist_fcnn(seed=1).save(d / "mnist_fcnn.keras")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["split4ml", "plan", str(d / "mnist_fcnn.keras"), "-o", str(d / "plan.yaml"), "--json"])
        with pytest.raises(SystemExit) as exc:
            cli.main()
    assert exc.value.code in (0, None)
    return d / "plan.yaml"


def test_report_json_with_png(monkeypatch, capsys, plan_file: Path, tmp_path: Path) -> None:
    verify = tmp_path / "verify.json"
    verify.write_text(json.dumps({"bit_exact": True, "samples": 20, "mismatched_samples": 0, "max_abs_diff": 0.0,
                                  "n_stages": 3, "fixed_accuracy": None, "float_accuracy": None}))
    html = tmp_path / "out" / "report.html"
    rc, out, err = run(monkeypatch, capsys, "report", str(plan_file), "--verify-json", str(verify), "-o", str(html),
                       "--png", str(tmp_path / "png"), "--json")
    assert rc == 0, err
    d = json.loads(out)  # only JSON on stdout
    assert {"html", "figures"} <= set(d)
    assert Path(d["html"]) == html and html.is_file()
    assert [Path(f).name for f in d["figures"]] == ["boards.png", "resources.png", "timeline.png"]
    for f in d["figures"]:
        assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html.read_text()
    assert 'id="verify"' in page and "mnist_fcnn" in page
    assert "draw report figures" not in err  # --json turns progress off


def test_report_text_output_and_progress(monkeypatch, capsys, plan_file: Path, tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    rc, out, err = run(monkeypatch, capsys, "report", str(plan_file), "-o", str(html))
    assert rc == 0, err
    assert f"wrote {html}" in out.replace("\n", "")
    assert "draw report figures" in err
    assert html.is_file()
    rc, out, err = run(monkeypatch, capsys, "report", str(plan_file), "-o", str(html), "--quiet")
    assert rc == 0 and "draw report figures" not in err


def test_report_bad_inputs(monkeypatch, capsys, plan_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "run.json"
    bad.write_text(json.dumps({"samples": 3}))
    rc, out, err = run(monkeypatch, capsys, "report", str(plan_file), "--run-json", str(bad), "-o",
                       str(tmp_path / "r.html"))
    assert rc == 2 and out == ""
    assert "--run-json" in err and "delivered" in err and "Traceback" not in err
    rc, _, err = run(monkeypatch, capsys, "report", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "r.html"))
    assert rc == 2 and "Traceback" not in err


@pytest.mark.parametrize("command", ["inspect", "estimate", "plan"])
def test_model_commands_take_quiet(monkeypatch, capsys, plan_file: Path, tmp_path: Path, command: str) -> None:
    model = plan_file.parent / "mnist_fcnn.keras"
    extra = ["-o", str(tmp_path / "p.yaml")] if command == "plan" else []
    rc, out, err = run(monkeypatch, capsys, command, str(model), *extra, "--quiet")
    assert rc == 0, err
    assert "fc1" in out


def test_demo_training_reports_each_epoch(tmp_path: Path) -> None:
    """The demo's longest step without a compiler, training, drives the progress bar per epoch."""
    import numpy as np

    from split4ml.demo import train_mnist_fcnn

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64)
    steps: list[tuple[str, int, int]] = []
    train_mnist_fcnn(tmp_path / "m.keras", x, y, epochs=2, progress=lambda s, d, t: steps.append((s, d, t)))
    assert steps == [("train the MNIST network", i, 2) for i in range(3)]
