"""Tests of the PyTorch frontend: conversion, layout, files, errors, CLI, and Keras/torch twins."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cli_helpers import run_cli  # noqa: E402
from split4ml.errors import ModelLoadError, UnsupportedLayerError  # noqa: E402
from split4ml.frontends import framework_of, load_model  # noqa: E402
from split4ml.frontends.torch import channels_last_input, graph_from_torch, load_torch  # noqa: E402
from split4ml.ir import Graph  # noqa: E402

# The same two models as source text: written to .py files for the file/CLI tests, exec'd here for the rest.
MODELS_PY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class TinyMLP(nn.Module):
        \"\"\"12 -> 16 relu -> 8 relu -> 4 -> softmax: the twin of split4ml.models.deep_mlp((16, 8), 12, 4).\"\"\"

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
        \"\"\"The twin of split4ml.models.small_cnn: 1x8x8 -> conv 4@3x3 relu -> maxpool 2 -> flatten -> 10 -> softmax.\"\"\"

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
_NS: dict = {}
exec(compile(MODELS_PY, "<split4ml test models>", "exec"), _NS)  # noqa: S102 - our own test source
TinyMLP, TinyCNN = _NS["TinyMLP"], _NS["TinyCNN"]


def _seeded(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) - 0.5)
    return module.eval()


def _float_forward(g: Graph, x_channels_last: np.ndarray) -> np.ndarray:
    """The Graph's float output, through the Keras model split4ml builds for hls4ml."""
    from split4ml.hls.keras_model import keras_model_from_graph

    return np.asarray(keras_model_from_graph(g).predict(x_channels_last, verbose=0))


def _torch_out(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _check_chain(g: Graph) -> None:
    assert g.layers[0].kind == "Input" and g.is_chain
    for prev, cur in zip(g.layers, g.layers[1:], strict=False):
        assert cur.input_shape == prev.output_shape, cur.name


# --------------------------------------------------------------------------- conversion
def test_mlp_layers_weights_and_fused_relu() -> None:
    m = _seeded(TinyMLP(), 1)
    g = graph_from_torch(m)  # input shape from the first Linear
    _check_chain(g)
    assert [(lyr.name, lyr.kind, lyr.activation) for lyr in g.layers] == [
        ("x", "Input", None), ("fc1", "Dense", "relu"), ("fc2", "Dense", "relu"), ("fc3", "Dense", None),
        ("softmax", "Activation", "softmax")]
    assert g.input.output_shape == (12,) and g.layers[-1].output_shape == (4,)
    fc1 = g.layer("fc1")
    assert dict(fc1.params) == {"units": 16, "use_bias": True}
    np.testing.assert_array_equal(fc1.weights["kernel"], m.fc1.weight.detach().numpy().T)
    np.testing.assert_array_equal(fc1.weights["bias"], m.fc1.bias.detach().numpy())
    assert fc1.weights["kernel"].dtype == np.float32 and not fc1.weights["kernel"].flags.writeable
    assert g.name == "TinyMLP" and g.n_params == sum(p.numel() for p in m.parameters())
    x = np.random.default_rng(0).normal(size=(6, 12)).astype(np.float32)
    np.testing.assert_allclose(_float_forward(g, x), _torch_out(m, x), atol=1e-6)


def test_cnn_channels_last_and_flatten_permutation() -> None:
    """conv kernels transposed, (C,H,W) shapes -> (H,W,C), and the Linear after Flatten re-ordered."""
    m = _seeded(TinyCNN(), 2)
    g = graph_from_torch(m)  # input shape from the class attribute
    _check_chain(g)
    assert [(lyr.name, lyr.kind, lyr.output_shape) for lyr in g.layers] == [
        ("x", "Input", (8, 8, 1)), ("conv1", "Conv2D", (6, 6, 4)), ("pool1", "MaxPooling2D", (3, 3, 4)),
        ("flatten", "Flatten", (36,)), ("fc1", "Dense", (10,)), ("softmax", "Activation", (10,))]
    conv = g.layer("conv1")
    assert conv.activation == "relu"
    assert dict(conv.params) == {"filters": 4, "kernel_size": (3, 3), "strides": (1, 1), "padding": "valid",
                                 "use_bias": True}
    np.testing.assert_array_equal(conv.weights["kernel"], m.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    # without the permutation the flattened features would be in the wrong order: check it matters
    w = m.fc1.weight.detach().numpy()
    assert not np.array_equal(g.layer("fc1").weights["kernel"], w.T)
    x = np.random.default_rng(1).normal(size=(7, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_float_forward(g, channels_last_input(x)), _torch_out(m, x), atol=1e-6)


class _Conv1dNet(nn.Module):
    """Conv1d 'same' (integer padding), BatchNorm1d, AvgPool1d, tanh, functional flatten, BatchNorm1d after flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm1d(5)
        self.pool = nn.AvgPool1d(2)
        self.bn_flat = nn.BatchNorm1d(20)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(20, 6)
        self.out = nn.Sigmoid()

    def forward(self, x):
        x = self.pool(torch.tanh(self.bn(self.conv(x))))
        x = self.bn_flat(torch.flatten(x, 1))
        return self.out(self.head(self.drop(x)))


def test_conv1d_batchnorm_pool_match_torch() -> None:
    m = _seeded(_Conv1dNet(), 3)
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.3, 0.3)
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn_flat.running_mean.uniform_(-0.3, 0.3)
        m.bn_flat.running_var.uniform_(0.5, 2.0)
    g = graph_from_torch(m, input_shape=(3, 8))
    _check_chain(g)
    assert [(lyr.name, lyr.kind, lyr.activation) for lyr in g.layers] == [
        ("x", "Input", None), ("conv", "Conv1D", None), ("bn", "BatchNormalization", None),
        ("tanh", "Activation", "tanh"), ("pool", "AveragePooling1D", None), ("flatten", "Flatten", None),
        ("bn_flat", "BatchNormalization", None), ("head", "Dense", "sigmoid")]
    assert g.input.output_shape == (8, 3) and g.layer("conv").params["padding"] == "same"
    assert g.layer("bn").params["epsilon"] == pytest.approx(1e-5)
    x = np.random.default_rng(2).normal(size=(5, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(_float_forward(g, channels_last_input(x)), _torch_out(m, x), atol=1e-5)


def test_nested_sequential_names_are_hls_safe() -> None:
    m = _seeded(nn.Sequential(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), nn.Linear(3, 2)), 4)
    g = graph_from_torch(m)
    assert [lyr.name for lyr in g.layers] == ["input_1", "layer_0_0", "layer_1"]
    assert g.layer("layer_0_0").activation == "relu"


def test_view_as_flatten_and_functional_relu_after_pool() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(2, 3, 2, stride=2)
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            y = torch.relu(nn.functional.max_pool2d(self.c(x), 1))
            return self.fc(y.view(y.size(0), -1))

    m = _seeded(Net(), 5)
    g = graph_from_torch(m, input_shape=(2, 4, 4))
    assert [lyr.kind for lyr in g.body] == ["Conv2D", "MaxPooling2D", "Activation", "Flatten", "Dense"]
    assert g.layer("c").params["strides"] == (2, 2)
    x = np.random.default_rng(3).normal(size=(4, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_float_forward(g, channels_last_input(x)), _torch_out(m, x), atol=1e-6)


# --------------------------------------------------------------------------- unsupported
class _Cat(nn.Module):
    """Concatenation along the length axis (dim 2 of (N, C, L)): the Graph concatenates only channels."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv1d(2, 2, 1)

    def forward(self, x):
        return torch.cat([self.c(x), x], dim=2)


class _Cat3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cat([self.fc(x), x, x], dim=1)


class _Broadcast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return x + self.fc(x)


class _AddParam(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4, bias=False)
        self.shift = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.fc(x) + self.shift


class _Alpha(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.add(x, self.fc(x), alpha=2)


class _Mul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * x


class _FlatSkip(nn.Module):
    """A flattened multi-position map (channels-last order) added to a Linear output (torch order)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv1d(2, 2, 1)
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        f = torch.flatten(self.c(x), 1)
        return f + self.fc(f)


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        return h, self.fc2(h)


class _Lstm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


class _FlatOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.flatten(self.c(x), 1)


@pytest.mark.parametrize(
    "module,shape,needles",
    [
        (_Cat(), (2, 3), ["'cat'", "aten.cat", "dim 2"]),
        (_Cat3(), (4,), ["'cat'", "3 tensors"]),
        (_Broadcast(), (4,), ["'add'", "aten.add", "broadcasts"]),
        (_AddParam(), (4,), ["'add'", "'shift'", "stored parameter"]),
        (_Alpha(), (4,), ["'add'", "alpha=2"]),
        (_Mul(), (4,), ["'mul'", "aten.mul"]),
        (_FlatSkip(), (2, 3), ["'add'", "another feature order"]),
        (_TwoOutputs(), (4,), ["['fc', 'fc2']", "single output"]),
        (_Lstm(), (5, 4), ["lstm", "LSTM"]),
        (nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU()), (4,), ["leaky_relu", "LeakyReLU"]),
        (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), (1, 8, 8), ["dilation"]),
        (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, stride=2)), (1, 8, 8), ["padding"]),
        (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (2, 8, 8), ["groups=2"]),
        (nn.Sequential(nn.MaxPool2d(2, padding=1)), (1, 8, 8), ["padding"]),
        (nn.Sequential(nn.Softmax(dim=1)), (2, 3, 3), ["Softmax over dim=1"]),
        (nn.Sequential(nn.Linear(3, 2)), (4, 3), ["Linear on an input of shape (4, 3)"]),
        (_FlatOut(), (1, 5, 5), ["reaches the model output"]),
    ],
)
@pytest.mark.filterwarnings("ignore:The tensor attributes:UserWarning")  # export's note on nn.LSTM
def test_unsupported_ops_name_the_node_and_op(module, shape, needles) -> None:
    with pytest.raises(UnsupportedLayerError) as exc:
        graph_from_torch(module.eval(), input_shape=shape)
    for needle in needles:
        assert needle in str(exc.value)


def test_input_shape_needed_for_a_conv_model() -> None:
    with pytest.raises(ModelLoadError, match="input shape"):
        graph_from_torch(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ModelLoadError, match="torch.export cannot trace"):
        graph_from_torch(nn.Sequential(nn.Linear(4, 2)), input_shape=(5,))


# --------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The CNN as .py + state_dict, TorchScript .pt, torch.export .pt2, and the MLP as .py + state_dict."""
    d = tmp_path_factory.mktemp("torch-files")
    cnn = _seeded(TinyCNN(), 7)
    mlp = _seeded(TinyMLP(), 8)
    (d / "models.py").write_text(MODELS_PY)
    torch.save(cnn.state_dict(), d / "cnn_state.pt")
    torch.save(mlp.state_dict(), d / "mlp_state.pt")
    example = torch.zeros(1, 1, 8, 8)
    torch.jit.save(torch.jit.trace(cnn, example), str(d / "cnn_ts.pt"))
    torch.export.save(torch.export.export(cnn, (example,)), str(d / "cnn.pt2"))
    torch.export.save(torch.export.export(cnn, (example,)), str(d / "cnn_export.bin"))
    return {"dir": d, "py": d / "models.py", "cnn_state": d / "cnn_state.pt", "mlp_state": d / "mlp_state.pt",
            "ts": d / "cnn_ts.pt", "pt2": d / "cnn.pt2", "bin": d / "cnn_export.bin", "cnn": cnn, "mlp": mlp}


def _same_weights(a: Graph, b: Graph) -> None:
    assert [lyr.kind for lyr in a.layers] == [lyr.kind for lyr in b.layers]
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert la.output_shape == lb.output_shape and la.activation == lb.activation
        assert dict(la.params) == dict(lb.params)
        assert set(la.weights) == set(lb.weights)
        for k in la.weights:
            np.testing.assert_array_equal(la.weights[k], lb.weights[k])


def test_every_file_form_gives_the_same_graph(files) -> None:
    ref = graph_from_torch(files["cnn"])
    from_py = load_torch(files["py"], weights=files["cnn_state"], entry="make_cnn")
    from_pt2 = load_torch(files["pt2"])
    from_ts = load_model(files["ts"], input_shape=(1, 8, 8))  # dispatch by extension
    from_bin = load_model(files["bin"], framework="pytorch")  # unknown extension: by content
    for g in (from_py, from_pt2, from_ts, from_bin):
        _same_weights(ref, g)
    assert [lyr.name for lyr in from_pt2.layers] == [lyr.name for lyr in ref.layers]
    assert from_py.name == "models" and from_pt2.name == "cnn"
    # TorchScript keeps the weight owners' names
    assert {"conv1", "fc1"} <= {lyr.name for lyr in from_ts.layers}
    # the only nn.Module class is found without entry... here there are two, so entry names it
    mlp = load_torch(files["py"], weights=files["mlp_state"], entry="TinyMLP")
    _same_weights(graph_from_torch(files["mlp"]), mlp)


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
        load_torch(files["py"], **kwargs)


def test_file_errors(files, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_torch(tmp_path / "nothing.pt2")
    with pytest.raises(ModelLoadError, match="apply only to a .py model"):
        load_torch(files["pt2"], weights=files["cnn_state"])
    with pytest.raises(ModelLoadError, match="differs from the shape"):
        load_torch(files["pt2"], input_shape=(1, 9, 9))
    with pytest.raises(ModelLoadError, match="as TorchScript"):
        load_torch(files["cnn_state"])  # a state_dict is not a model
    with pytest.raises(ModelLoadError, match="input shape"):
        load_torch(files["ts"])  # a conv TorchScript needs its input shape
    with pytest.raises(ModelLoadError, match="only apply to PyTorch"):
        load_model(tmp_path / "m.keras", entry="x")
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ModelLoadError, match="boom"):
        load_torch(bad, weights=files["cnn_state"])


# --------------------------------------------------------------------------- CLI and plans
def test_cli_inspect_estimate_plan(monkeypatch, capsys, files, tmp_path) -> None:
    rc, out, _ = run_cli(monkeypatch, capsys, "inspect", str(files["pt2"]), "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["input_shape"] == [8, 8, 1] and data["n_params"] == 410
    assert [lyr["name"] for lyr in data["layers"]] == ["x", "conv1", "pool1", "flatten", "fc1", "softmax"]

    rc, out, _ = run_cli(monkeypatch, capsys, "inspect", str(files["ts"]), "--input-shape", "1,8,8", "--json")
    assert rc == 0 and json.loads(out)["n_params"] == 410

    rc, out, _ = run_cli(monkeypatch, capsys, "estimate", str(files["bin"]), "--framework", "pytorch", "--json")
    assert rc == 0 and [r["name"] for r in json.loads(out)["layers"]][0] == "conv1"

    plan = files["dir"] / "p.yaml"
    rc, out, _ = run_cli(monkeypatch, capsys, "plan", str(files["py"]), "--weights", str(files["cnn_state"]),
                         "--entry", "make_cnn", "--stages", "2", "-o", str(plan), "--json")
    assert rc == 0, out
    assert json.loads(out)["n_stages"] == 2
    import yaml

    doc = yaml.safe_load(plan.read_text())
    assert set(doc["model_options"]) == {"weights", "entry", "weights_sha256"}
    assert doc["model_options"]["entry"] == "make_cnn" and len(doc["model_options"]["weights_sha256"]) == 64
    assert not Path(doc["model_options"]["weights"]).is_absolute()  # relative to the plan file, like 'model'
    assert doc["model_options"]["weights"] == "cnn_state.pt" and doc["model"] == "models.py"

    from split4ml.plan.api import load_plan

    p, g = load_plan(plan)  # reloads the .py model with its state_dict and entry
    _same_weights(graph_from_torch(files["cnn"]), g)
    assert p.model_options["entry"] == "make_cnn" and p.n_stages == 2

    # the plan notices changed weights, as it notices a changed model file
    from split4ml.errors import PlanError

    doc["model_options"]["weights_sha256"] = "0" * 64
    tampered = files["dir"] / "tampered.yaml"
    tampered.write_text(yaml.safe_dump(doc))
    with pytest.raises(PlanError, match="model_options.weights_sha256"):
        load_plan(tampered)
    doc["model_options"]["colour"] = "red"
    tampered.write_text(yaml.safe_dump(doc))
    with pytest.raises(PlanError, match="model_options: unknown field"):
        load_plan(tampered)


@pytest.mark.filterwarnings("ignore:The tensor attributes:UserWarning")
def test_cli_errors(monkeypatch, capsys, files, tmp_path) -> None:
    rc, out, err = run_cli(monkeypatch, capsys, "inspect", str(files["py"]), "--json")
    assert rc == 2 and out == "" and "state_dict" in err and "Traceback" not in err
    rc, _, err = run_cli(monkeypatch, capsys, "inspect", str(files["pt2"]), "--input-shape", "a,b")
    assert rc == 2 and "--input-shape" in err
    rc, _, err = run_cli(monkeypatch, capsys, "plan", str(files["pt2"]), "--framework", "caffe", "-o",
                         str(tmp_path / "p.yaml"))
    assert rc == 2 and "unknown framework" in err
    lstm = tmp_path / "lstm.pt2"
    torch.export.save(torch.export.export(_Lstm().eval(), (torch.zeros(1, 5, 4),)), str(lstm))
    rc, _, err = run_cli(monkeypatch, capsys, "inspect", str(lstm))
    assert rc == 2 and "lstm" in err and "aten." in err


# --------------------------------------------------------------------------- Keras twins (slow)
def _keras_twin_weights(keras_model, module: nn.Module) -> None:
    """Copy a Keras model's weights into its torch twin (conv kernels and post-flatten rows re-ordered)."""
    with torch.no_grad():
        for layer in keras_model.layers:
            if not layer.weights:
                continue
            target = getattr(module, layer.name)
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            if kernel.ndim == 4:  # (kh, kw, c_in, c_out) -> (c_out, c_in, kh, kw)
                target.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
            else:
                w = kernel.T.copy()
                n_in = kernel.shape[0]
                if layer.name == "fc1" and n_in == 36:  # after Flatten of (3, 3, 4): keras rows are (h, w, c)
                    perm = np.arange(36).reshape(4, 3, 3).transpose(1, 2, 0).ravel()
                    w = np.empty_like(w)
                    w[:, perm] = kernel.T
                target.weight.copy_(torch.from_numpy(w))
            target.bias.copy_(torch.from_numpy(bias))


def _plan_body(plan_file: Path) -> dict:
    import yaml

    doc = yaml.safe_load(plan_file.read_text())
    for key in ("model", "model_sha256", "model_options"):
        doc.pop(key, None)
    return doc


@pytest.mark.slow
@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_keras_and_torch_twins_plan_alike_and_verify_bit_exact(monkeypatch, capsys, tmp_path, which) -> None:
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.models import deep_mlp, small_cnn

    if which == "mlp":
        km = deep_mlp(widths=(16, 8), n_in=12, n_out=4, seed=5)
        tm, entry, shape = TinyMLP(), "TinyMLP", (12,)
    else:
        km = small_cnn(seed=5)
        tm, entry, shape = TinyCNN(), "make_cnn", (1, 8, 8)
    _keras_twin_weights(km, tm.eval())
    kg, tg = graph_from_keras(km), graph_from_torch(tm)
    _same_weights(kg, tg)
    assert [lyr.name for lyr in kg.layers] == [lyr.name for lyr in tg.layers]
    x = np.random.default_rng(9).normal(size=(8, *shape)).astype(np.float32)
    np.testing.assert_allclose(km.predict(channels_last_input(x), verbose=0), _torch_out(tm, x), atol=1e-5)

    keras_file, py_file, state = tmp_path / "twin.keras", tmp_path / "twin.py", tmp_path / "twin_state.pt"
    km.save(keras_file)
    py_file.write_text(MODELS_PY)
    torch.save(tm.state_dict(), state)
    plans = {}
    for label, args in (("keras", [str(keras_file)]),
                        ("torch", [str(py_file), "--weights", str(state), "--entry", entry])):
        plans[label] = tmp_path / f"{label}.yaml"
        rc, out, _ = run_cli(monkeypatch, capsys, "plan", *args, "--stages", "2", "-o", str(plans[label]), "--json")
        assert rc == 0, out
    assert _plan_body(plans["keras"]) == _plan_body(plans["torch"])
    assert _plan_body(plans["torch"])["summary"]["n_stages"] == 2
    for label in ("torch", "keras"):  # identical graphs: the keras run reuses the compiled C-sim libraries
        rc, out, _ = run_cli(monkeypatch, capsys, "verify", str(plans[label]), "--samples", "200", "--json")
        v = json.loads(out)
        assert rc == 0 and v["bit_exact"] and v["samples"] == 200 and v["mismatched_samples"] == 0, v


# --------------------------------------------------------------------------- skip connections (DAGs)
RESIDUAL_PY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Block(nn.Module):
        \"\"\"x -> fc1 relu -> fc2, + x, relu: one block of split4ml.models.residual_mlp.\"\"\"

        def __init__(self, width=16):
            super().__init__()
            self.fc1 = nn.Linear(width, width)
            self.fc2 = nn.Linear(width, width)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x + self.fc2(torch.relu(self.fc1(x))))


    class ResidualMLP(nn.Module):
        \"\"\"The twin of split4ml.models.residual_mlp() (64 -> stem 16 relu -> 2 blocks -> head 10 -> softmax).\"\"\"

        def __init__(self, n_in=64, width=16, blocks=2, n_out=10):
            super().__init__()
            self.stem = nn.Linear(n_in, width)
            self.n_blocks = blocks
            for b in range(1, blocks + 1):
                setattr(self, f"b{b}", Block(width))
            self.head = nn.Linear(width, n_out)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x):
            h = torch.relu(self.stem(x))
            for b in range(1, self.n_blocks + 1):
                h = getattr(self, f"b{b}")(h)
            return self.softmax(self.head(h))
    """
)
exec(compile(RESIDUAL_PY, "<split4ml residual twin>", "exec"), _NS)  # noqa: S102 - our own test source
ResidualMLP = _NS["ResidualMLP"]


def _residual_twin(keras_model) -> nn.Module:
    """The torch twin of ``split4ml.models.residual_mlp`` holding the Keras model's weights."""
    tm = ResidualMLP()
    with torch.no_grad():
        for layer in keras_model.layers:
            if layer.weights:
                kernel, bias = (np.asarray(w) for w in layer.get_weights())
                target = tm.get_submodule(layer.name.replace("_", "."))  # b1_fc1 -> b1.fc1
                target.weight.copy_(torch.from_numpy(kernel.T.copy()))
                target.bias.copy_(torch.from_numpy(bias))
    return tm.eval()


def _assert_same_dag(a: Graph, b: Graph) -> None:
    """Same layers, names, producers, shapes, params and weights (bit for bit)."""
    assert [lyr.name for lyr in a.layers] == [lyr.name for lyr in b.layers]
    assert a.outputs == b.outputs
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert (la.kind, la.inputs, la.in_shapes, la.input_shape, la.output_shape, la.activation) == (
            lb.kind, lb.inputs, lb.in_shapes, lb.input_shape, lb.output_shape, lb.activation), la.name
        assert la.input_shapes == lb.input_shapes, la.name
    _same_weights(a, b)


def test_residual_twin_gives_the_keras_graph() -> None:
    from split4ml.frontends.keras import graph_from_keras
    from split4ml.models import residual_mlp

    km = residual_mlp(seed=3)
    tm = _residual_twin(km)
    tg, kg = graph_from_torch(tm, name="residual_mlp"), graph_from_keras(km)
    _assert_same_dag(tg, kg)
    assert not tg.is_chain and tg.name == "residual_mlp"
    tg.check_dag()
    assert tg.layer("b1_add").inputs == ("stem", "b1_fc2") and tg.layer("b2_add").inputs == ("b1_relu", "b2_fc2")
    assert tg.layer("stem").activation == "relu" and tg.layer("b1_relu").kind == "Activation"
    x = np.random.default_rng(4).uniform(size=(16, 64)).astype(np.float32)
    expected = _torch_out(tm, x)
    np.testing.assert_allclose(km.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_float_forward(tg, x), expected, rtol=1e-5, atol=1e-6)


class _Inception(nn.Module):
    """Two conv branches concatenated over channels, a residual sum of maps, a flatten read by two Linears."""

    input_shape = (2, 6, 6)

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 1)
        self.mix = nn.Conv2d(5, 5, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(45, 6)
        self.fc2 = nn.Linear(45, 4)
        self.out = nn.Linear(10, 3)

    def forward(self, x):
        c = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        r = torch.add(c, torch.tanh(self.mix(c)))
        f = torch.flatten(self.pool(r), 1)
        return self.out(torch.cat((self.fc1(f), torch.sigmoid(self.fc2(f))), dim=-1))


def test_channel_concat_and_map_add_match_torch() -> None:
    m = _seeded(_Inception(), 11)
    g = graph_from_torch(m)
    g.check_dag()
    cat = g.layer("cat")
    assert cat.kind == "Concatenate" and cat.params["axis"] == -1 and cat.inputs == ("a", "b")
    assert cat.in_shapes == ((6, 6, 3), (6, 6, 2)) and cat.output_shape == (6, 6, 5)
    add = g.layer("add")
    assert add.kind == "Add" and add.inputs == ("cat", "mix") and add.in_shapes == ((6, 6, 5), (6, 6, 5))
    assert g.layer("mix").activation == "tanh" and g.layer("a").activation == "relu"
    assert g.layer("fc1").inputs == ("flatten",) and g.layer("fc2").inputs == ("flatten",)
    assert g.layer("cat_1").inputs == ("fc1", "fc2") and g.layer("fc2").activation == "sigmoid"
    # both Linears read the flattened map: both kernels get the channels-last row order
    x = np.random.default_rng(12).normal(size=(8, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_float_forward(g, channels_last_input(x)), _torch_out(m, x), rtol=1e-5, atol=1e-5)


class _ReusedRaw(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x):
        h = self.fc(x)
        return self.fc2(nn.functional.dropout(torch.relu(h), 0.5, training=False) + h)


def test_activation_is_not_fused_where_the_raw_output_is_also_read() -> None:
    m = _seeded(_ReusedRaw(), 2)
    g = graph_from_torch(m)
    assert [(lyr.kind, lyr.activation) for lyr in g.body] == [
        ("Dense", None), ("Activation", "relu"), ("Add", None), ("Dense", None)]
    assert g.layer("add").inputs == ("relu", "fc")
    x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    np.testing.assert_allclose(_float_forward(g, x), _torch_out(m, x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_residual_twin_plans_like_keras_and_verifies_bit_exact(monkeypatch, capsys, tmp_path) -> None:
    """The torch ResNet twin (.py + state_dict) through the CLI: the same DAG plan as the Keras model, and
    the chained per-board C-simulations equal the whole model's bit for bit."""
    from split4ml.models import residual_mlp

    km = residual_mlp(seed=6)
    tm = _residual_twin(km)
    keras_file, py_file, state = tmp_path / "residual_mlp.keras", tmp_path / "residual_mlp.py", tmp_path / "w.pt"
    km.save(keras_file)
    py_file.write_text(RESIDUAL_PY)
    torch.save(tm.state_dict(), state)
    plans = {}
    for label, args in (("keras", [str(keras_file)]),
                        ("torch", [str(py_file), "--weights", str(state), "--entry", "ResidualMLP"])):
        plans[label] = tmp_path / f"{label}.yaml"
        rc, out, _ = run_cli(monkeypatch, capsys, "plan", *args, "--stages", "2", "-o", str(plans[label]), "--json")
        assert rc == 0, out
    body = _plan_body(plans["torch"])
    assert body == _plan_body(plans["keras"])
    assert body["summary"]["n_stages"] == 2
    assert "b1_add" in {lyr["name"] for st in body["stages"] for lyr in st["layers"]}
    rc, out, _ = run_cli(monkeypatch, capsys, "verify", str(plans["torch"]), "--samples", "100", "--json")
    v = json.loads(out)
    assert rc == 0 and v["bit_exact"] and v["samples"] == 100 and v["mismatched_samples"] == 0, v
