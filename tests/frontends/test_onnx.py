"""ONNX models read by hls4ml's ONNX parser after qonnx's cleaning; torch and hand-made exports."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
onnx = pytest.importorskip("onnx")
pytest.importorskip("qonnx")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

from cli_helpers import run_cli  # noqa: E402
from split4ml.errors import ModelLoadError, UnsupportedLayerError  # noqa: E402
from split4ml.frontends import load_model, read_model  # noqa: E402


class TorchMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(20, 16), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(16, 12), nn.ReLU()
        self.fc3, self.softmax = nn.Linear(12, 5), nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x))))))


class TorchCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu = nn.Conv2d(1, 4, 3), nn.ReLU()
        self.pool1, self.flatten = nn.MaxPool2d(2), nn.Flatten()
        self.fc1, self.softmax = nn.Linear(36, 10), nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.fc1(self.flatten(self.pool1(self.relu(self.conv1(x))))))


def export(module: nn.Module, example_shape: tuple[int, ...], path: Path, dynamo: bool) -> Path:
    torch.manual_seed(0)
    example = torch.zeros((1, *example_shape))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=dynamo)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(1)
    return {"mlp": export(TorchMLP(), (20,), d / "mlp.onnx", True),
            "mlp_ts": export(TorchMLP(), (20,), d / "mlp_ts.onnx", False),
            "cnn": export(TorchCNN(), (1, 8, 8), d / "cnn.onnx", True)}


def _model(nodes, inits: dict[str, np.ndarray], in_shape, out_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, *out_shape])],
        [numpy_helper.from_array(v, name=k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("key", ["mlp", "mlp_ts"])
def test_mlp_export_is_hls4mls_conversion(key: str, exported) -> None:
    g = load_model(exported[key])
    assert g.source.reader == "onnx" and not g.quantized and g.source.reference_name().endswith("convert_from_onnx_model")
    dense = [lyr for lyr in g.body if lyr.kind == "Dense"]
    assert [d.output_shape for d in dense] == [(16,), (12,), (5,)]
    # hls4ml turns MatMul + Add into a Dense and a bias scale (ApplyAlpha) that stays on the Dense's board
    assert all(len(u) >= 2 for u in g.units()[:-1])
    assert g.layers[-1].activation == "softmax"


def test_cnn_export_is_channels_last(exported) -> None:
    g = load_model(exported["cnn"])
    assert g.input.output_shape == (8, 8, 1)
    conv = next(lyr for lyr in g.body if lyr.kind == "Conv2D")
    assert conv.output_shape == (6, 6, 4) and conv.weights["kernel"].shape == (3, 3, 1, 4)


def test_external_weights_are_read_and_recorded(tmp_path: Path) -> None:
    w = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], {"w": w}, (8,), (4,))
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    src = read_model(path)
    assert src.files == (path, tmp_path / "m.onnx.data")
    (dense,) = [lyr for lyr in load_model(path).body if lyr.kind == "Dense"]
    np.testing.assert_array_equal(dense.weights["kernel"], w)


def test_unsupported_operator_is_named(tmp_path: Path) -> None:
    model = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
                    helper.make_node("Erf", ["h"], ["y"], name="my_erf")],
                   {"w": np.ones((4, 4), np.float32)}, (4,), (4,))
    onnx.save(model, tmp_path / "erf.onnx")
    with pytest.raises(UnsupportedLayerError, match="node 'Erf_0' \\(Erf\\) is not an operator hls4ml converts"):
        load_model(tmp_path / "erf.onnx")


def test_file_errors(tmp_path: Path, exported) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not protobuf")
    with pytest.raises(ModelLoadError, match="cannot read ONNX model"):
        load_model(tmp_path / "bad.onnx")
    with pytest.raises(ModelLoadError, match="do not apply to ONNX"):
        load_model(exported["mlp"], weights=exported["mlp"])


def test_import_is_lazy() -> None:
    code = "import sys, split4ml.frontends.onnx; print('onnx' in sys.modules, 'qonnx' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


def test_plan_notices_changed_external_weights(tmp_path):
    """torch's exporter keeps the weights in ``m.onnx.data``: the plan's model_sha256 covers that file
    too, so a plan made before the weights changed is refused, not silently re-used."""
    from split4ml.boards import get_board
    from split4ml.errors import PlanError
    from split4ml.plan.api import load_plan, make_plan

    w = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], {"w": w}, (8,), (4,))
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    data = tmp_path / "m.onnx.data"
    plan = make_plan(load_model(path), model=path, board=get_board("pynq-z2"))
    plan.write(tmp_path / "plan.yaml")
    load_plan(tmp_path / "plan.yaml")  # unchanged: loads
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0x01  # one bit of one weight
    data.write_bytes(bytes(raw))
    with pytest.raises(PlanError, match="model_sha256"):
        load_plan(tmp_path / "plan.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_onnx_cnn_plans_and_verifies_bit_exact(monkeypatch, capsys, tmp_path: Path, exported, io_type: str) -> None:
    """io_stream too: a board's input has the shape its first node reads in hls4ml's model (the
    channels-first input before hls4ml's Transpose), since io_stream packs the last axis per word."""
    plan = tmp_path / "cnn.yaml"
    rc, out, _ = run_cli(monkeypatch, capsys, "plan", str(exported["cnn"]), "--stages", "2", "-o", str(plan),
                         "--io-type", io_type, "--json")
    assert rc == 0, out
    rc, out, err = run_cli(monkeypatch, capsys, "verify", str(plan), "--samples", "100", "--json")
    v = json.loads(out)
    assert rc == 0, out + err
    assert v["bit_exact"] and v["samples"] == 100 and v["mismatched_samples"] == 0
    assert v["reference"]["converter"] == "hls4ml.converters.convert_from_onnx_model"


def test_an_io_stream_board_never_holds_only_a_flatten(monkeypatch, capsys, tmp_path: Path, exported) -> None:
    """With io_stream hls4ml computes a Flatten in place (it re-labels the stream): alone on a board it is
    nothing hls4ml can build. The planner never cuts so (the Flatten joins a neighbour, and the stage count
    it may ask for excludes it), and a hand-written plan that does is refused by name."""
    import yaml

    plan = tmp_path / "cnn.yaml"
    rc, out, _ = run_cli(monkeypatch, capsys, "plan", str(exported["cnn"]), "--stages", "3", "-o", str(plan),
                         "--io-type", "io_stream", "--json")
    assert rc == 0, out
    stages = [list(st["layers"]) for st in json.loads(out)["stages"]]
    assert len(stages) == 3 and ["Flatten_0"] not in stages, stages
    # io_parallel keeps the Flatten a unit of its own (a lone in-place reshape builds there)
    rc, out, _ = run_cli(monkeypatch, capsys, "plan", str(exported["cnn"]), "--stages", "4", "-o",
                         str(tmp_path / "p4.yaml"), "--io-type", "io_parallel", "--json")
    assert rc == 0, out
    assert ["Flatten_0"] in [list(st["layers"]) for st in json.loads(out)["stages"]]
    rc, out, err = run_cli(monkeypatch, capsys, "plan", str(exported["cnn"]), "--stages", "4", "-o",
                           str(tmp_path / "p.yaml"), "--io-type", "io_stream")
    flat = " ".join(err.split())
    assert rc == 2 and "at most 3 stages" in flat and "computes in place with io_stream" in flat and "Traceback" not in err
    # a hand-edited plan that puts the Flatten alone on a board
    data = yaml.safe_load(plan.read_text())
    last = data["stages"][-1]
    flatten = [e for e in last["layers"] if (e["name"] if isinstance(e, dict) else e) == "Flatten_0"]
    last["layers"] = [e for e in last["layers"] if e not in flatten]
    data["stages"].insert(len(data["stages"]) - 1, {"board": last.get("board", data.get("board")), "layers": flatten})
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    for cmd in (["check", str(edited)], ["build", str(edited), "-o", str(tmp_path / "build")]):
        rc, out, err = run_cli(monkeypatch, capsys, *cmd)
        flat = " ".join(err.split())
        assert rc == 2 and "holds only ['Flatten_0']" in flat and "stage before or after" in flat, err
        assert "stages[2]" in flat and "Traceback" not in err
