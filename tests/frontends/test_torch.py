"""PyTorch models read the way hls4ml reads them: every file form, errors, and an end-to-end check."""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cli_helpers import run_cli  # noqa: E402
from split4ml.errors import ModelLoadError, UnsupportedLayerError  # noqa: E402
from split4ml.frontends import framework_of, load_model  # noqa: E402
from split4ml.frontends.graph import graph_from_source  # noqa: E402
from split4ml.frontends.torch import read_torch, source_from_torch  # noqa: E402

MODELS_PY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class TinyMLP(nn.Module):
        \"\"\"12 -> 16 relu -> 8 relu -> 4 -> softmax.\"\"\"

        def __init__(self, n_in=12, widths=(16, 8), n_out=4):
            super().__init__()
            sizes = [n_in, *widths]
            for i in range(len(widths)):
                setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
            self.n_hidden = len(widths)
            setattr(self, f"fc{len(widths) + 1}", nn.Linear(sizes[-1], n_out))
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x):
            for i in range(self.n_hidden):
                x = torch.relu(getattr(self, f"fc{i + 1}")(x))
            return self.softmax(getattr(self, f"fc{self.n_hidden + 1}")(x))


    class TinyCNN(nn.Module):
        \"\"\"1x8x8 -> conv 4@3x3 relu -> maxpool 2 -> flatten -> 10 -> softmax.\"\"\"

        input_shape = (1, 8, 8)

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.relu1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(36, 10)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x):
            return self.softmax(self.fc1(self.flatten(self.pool1(self.relu1(self.conv1(x))))))


    def make_cnn():
        return TinyCNN()
    """
)


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) - 0.5)
    return module.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The CNN as .py + state_dict, TorchScript .pt, torch.export .pt2, a pickled module; the MLP as .py."""
    import importlib.util
    import sys

    d = tmp_path_factory.mktemp("torch-files")
    (d / "tiny_models.py").write_text(MODELS_PY)
    spec = importlib.util.spec_from_file_location("tiny_models", d / "tiny_models.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tiny_models"] = mod  # so that torch.save can pickle the module by reference
    spec.loader.exec_module(mod)
    cnn, mlp = _seeded(mod.TinyCNN(), 7), _seeded(mod.TinyMLP(), 8)
    torch.save(cnn.state_dict(), d / "cnn_state.pt")
    torch.save(mlp.state_dict(), d / "mlp_state.pt")
    example = torch.zeros(1, 1, 8, 8)
    torch.jit.save(torch.jit.trace(cnn, example), str(d / "cnn_ts.pt"))
    torch.export.save(torch.export.export(cnn, (example,)), str(d / "cnn.pt2"))
    torch.save(cnn, d / "cnn_pickled.pt")
    return {"dir": d, "py": d / "tiny_models.py", "cnn_state": d / "cnn_state.pt", "mlp_state": d / "mlp_state.pt",
            "ts": d / "cnn_ts.pt", "pt2": d / "cnn.pt2", "pickled": d / "cnn_pickled.pt", "cnn": cnn, "mlp": mlp}


def test_module_is_read_by_hls4mls_pytorch_parser(files) -> None:
    g = graph_from_source(source_from_torch(files["mlp"]))
    assert g.source.reader == "pytorch" and g.source.input_shape == (12,)
    assert [(lyr.kind, lyr.activation) for lyr in g.body] == [
        ("Dense", None), ("Activation", "relu"), ("Dense", None), ("Activation", "relu"), ("Dense", None),
        ("Activation", "softmax")]
    np.testing.assert_array_equal(g.layer("fc1").weights["kernel"], files["mlp"].fc1.weight.detach().numpy().T)
    # a ReLU module stays with the Linear before it (one unit): the planner never cuts between them
    assert [len(u) for u in g.units()] == [2, 2, 2]


def test_every_file_form_reads(files) -> None:
    ref = load_model(files["py"], weights=files["cnn_state"], entry="make_cnn")
    assert ref.source.reader == "pytorch" and ref.source.files == (files["py"], files["cnn_state"])
    # hls4ml converts the model to channels-last, its input included
    assert ref.input.output_shape == (8, 8, 1)
    kinds = [lyr.kind for lyr in ref.body]
    assert kinds == ["Conv2D", "Activation", "MaxPooling2D", "Flatten", "Dense", "Activation"]
    pickled = load_model(files["pickled"])
    assert [lyr.kind for lyr in pickled.body] == kinds and pickled.source.reader == "pytorch"
    for key in ("pt2", "ts"):  # hls4ml reads neither: both go through ONNX, which it reads
        g = load_model(files[key], input_shape=(1, 8, 8) if key == "ts" else None)
        assert g.source.reader == "onnx" and "ONNX" in g.source.via
        assert g.input.output_shape == (8, 8, 1)
        assert [lyr.kind for lyr in g.body if lyr.kind != "ApplyAlpha"] == kinds
    np.testing.assert_array_equal(
        np.sort(load_model(files["pt2"]).layer("Conv2D_Conv_0").weights["kernel"].ravel()),
        np.sort(ref.layer("conv1").weights["kernel"].ravel()))


def test_float_outputs_are_the_modules(files) -> None:
    src = read_torch(files["py"], weights=files["cnn_state"], entry="make_cnn")
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 8, 8, 1)).astype(np.float32)  # channels-last, as hls4ml
    with torch.no_grad():
        want = files["cnn"](torch.from_numpy(np.moveaxis(x, -1, 1).copy())).numpy()
    np.testing.assert_allclose(src.float_predict()(x), want, rtol=1e-6)


def test_framework_detection() -> None:
    assert framework_of("m.pt2") == framework_of("m.pt") == framework_of("m.py") == "pytorch"
    assert framework_of("m.whatever", "torch") == "pytorch"


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({}, "pass its state_dict too"),
        ({"weights": "missing.pt"}, "does not exist"),
        ({"weights": "mlp_state.pt", "entry": "make_cnn"}, "does not match the model"),
        ({"weights": "cnn_state.pt", "entry": "nope"}, "has no class or function 'nope'"),
        ({"weights": "cnn_state.pt"}, "defines 2 nn.Module classes"),
    ],
)
def test_python_file_errors(files, kwargs, needle) -> None:
    if "weights" in kwargs:
        kwargs = {**kwargs, "weights": files["dir"] / kwargs["weights"]}
    with pytest.raises(ModelLoadError, match=needle):
        read_torch(files["py"], **kwargs)


def test_file_errors(files, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_torch(tmp_path / "nothing.pt2")
    with pytest.raises(ModelLoadError, match="apply only to a .py model"):
        read_torch(files["pt2"], weights=files["cnn_state"])
    with pytest.raises(ModelLoadError, match="not a module"):
        read_torch(files["cnn_state"])  # a state_dict is not a model
    with pytest.raises(ModelLoadError, match="input shape"):
        read_torch(files["ts"])  # a conv TorchScript needs its input shape
    with pytest.raises(ModelLoadError, match="only apply to PyTorch"):
        load_model(tmp_path / "m.keras", entry="x")
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ModelLoadError, match="boom"):
        read_torch(bad, weights=files["cnn_state"])


def test_unsupported_module_is_one_line() -> None:
    class Gelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.GELU()

        def forward(self, x):
            return self.act(self.fc(x))

    with pytest.raises(UnsupportedLayerError, match="hls4ml cannot read it") as info:
        source_from_torch(Gelu())
    assert "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_torch_model_plans_and_verifies_bit_exact(monkeypatch, capsys, files, tmp_path, io_type: str) -> None:
    plan = tmp_path / "torch.yaml"
    rc, out, _ = run_cli(monkeypatch, capsys, "plan", str(files["py"]), "--weights", str(files["cnn_state"]),
                         "--entry", "make_cnn", "--stages", "2", "-o", str(plan), "--io-type", io_type, "--json")
    assert rc == 0, out
    assert json.loads(out)["n_stages"] == 2
    rc, out, _ = run_cli(monkeypatch, capsys, "verify", str(plan), "--samples", "100", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["mismatched_samples"] == 0, v
    assert v["reference"]["converter"] == "hls4ml.converters.convert_from_pytorch_model"
