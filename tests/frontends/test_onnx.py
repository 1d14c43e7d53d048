"""Tests of the ONNX/QONNX frontend: torch exports (both exporters) and hand-built ONNX graphs.

The fast tests check the converted Graph against the Keras frontend's Graph of the same model
(identical weights, bit for bit) and against onnxruntime (float forward on the transposed input).
The slow test plans the Keras model and its ONNX export (same plan) and verifies the ONNX plan
bit-exact through hls4ml C-simulation.
"""

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
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

from cli_helpers import run_cli  # noqa: E402
from split4ml.errors import ModelLoadError, UnsupportedLayerError  # noqa: E402
from split4ml.frontends import load_model  # noqa: E402
from split4ml.frontends.keras import graph_from_keras  # noqa: E402
from split4ml.frontends.onnx import graph_from_onnx, load_onnx  # noqa: E402
from split4ml.hls.keras_model import keras_model_from_graph  # noqa: E402
from split4ml.ir import Graph  # noqa: E402
from split4ml.models import mnist_fcnn, small_cnn  # noqa: E402


# --------------------------------------------------------------------------- torch twins of models.py
class TorchMLP(nn.Module):
    """The twin of :func:`split4ml.models.mnist_fcnn` (784 -> 16 relu -> 32 relu -> 10 -> softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(784, 16), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(16, 32), nn.ReLU()
        self.fc3, self.softmax = nn.Linear(32, 10), nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x))))))


class TorchCNN(nn.Module):
    """The twin of :func:`split4ml.models.small_cnn` ((1, 8, 8) -> conv 4x3x3 relu -> pool 2 -> fc 10 -> softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu = nn.Conv2d(1, 4, 3), nn.ReLU()
        self.pool1, self.flatten = nn.MaxPool2d(2), nn.Flatten()
        self.fc1, self.softmax = nn.Linear(36, 10), nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.fc1(self.flatten(self.pool1(self.relu(self.conv1(x))))))


def _set(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def torch_twin(km: keras.Model) -> nn.Module:
    """The torch twin of a models.py Keras model, with the Keras weights (Flatten order converted)."""
    if km.name == "mnist_fcnn":
        tm = TorchMLP()
        for name in ("fc1", "fc2", "fc3"):
            k, b = km.get_layer(name).get_weights()
            _set(getattr(tm, name).weight, k.T)
            _set(getattr(tm, name).bias, b)
        return tm.eval()
    tm = TorchCNN()
    k, b = km.get_layer("conv1").get_weights()
    _set(tm.conv1.weight, k.transpose(3, 2, 0, 1))
    _set(tm.conv1.bias, b)
    k, b = km.get_layer("fc1").get_weights()
    # Keras flattens (H, W, C) = (3, 3, 4), torch (C, H, W): torch column c*9 + s is Keras row s*4 + c.
    torch_rows = np.arange(36).reshape(9, 4).T.reshape(-1)
    _set(tm.fc1.weight, k[torch_rows].T)
    _set(tm.fc1.bias, b)
    return tm.eval()


def export(module: nn.Module, example_shape: tuple[int, ...], path: Path, dynamo: bool, **kw) -> Path:
    """``torch.onnx.export`` quietly (the dynamo exporter prints its progress)."""
    example = torch.zeros((1, *example_shape))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if dynamo:
            torch.onnx.export(module.eval(), (example,), str(path), dynamo=True, **kw)
        else:
            torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, input_names=["x"], **kw)
    return path


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime on each sample (the exports have batch size 1)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: row[None].astype(np.float32)})[0] for row in x])


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) -> (N, *spatial, C)."""
    return np.moveaxis(x, 1, -1) if x.ndim > 2 else x


def graph_forward(g: Graph, x_channels_last: np.ndarray) -> np.ndarray:
    """The float forward pass of a Graph (through its Keras rebuild, which the float reference of verify uses)."""
    return np.asarray(keras_model_from_graph(g).predict(x_channels_last, verbose=0))


def assert_same_graph(a: Graph, b: Graph, *, check_names: bool = True) -> None:
    assert len(a.layers) == len(b.layers), ([x.name for x in a.layers], [x.name for x in b.layers])
    for la, lb in zip(a.layers, b.layers, strict=True):
        if check_names:
            assert (la.name, la.inputs) == (lb.name, lb.inputs)
        assert (la.kind, la.input_shape, la.output_shape, la.activation) == (
            lb.kind,
            lb.input_shape,
            lb.output_shape,
            lb.activation,
        ), la.name
        assert la.input_shapes == lb.input_shapes, la.name
        assert dict(la.params) == dict(lb.params), la.name
        assert la.weights.keys() == lb.weights.keys(), la.name
        for key in la.weights:
            assert la.weights[key].dtype == lb.weights[key].dtype
            np.testing.assert_array_equal(la.weights[key], lb.weights[key], err_msg=f"{la.name}.{key}")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def keras_models() -> dict[str, keras.Model]:
    return {"mlp": mnist_fcnn(seed=7), "cnn": small_cnn(seed=7)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, keras_models) -> dict[tuple[str, bool], Path]:
    """ONNX exports of the torch twins, with the TorchScript (False) and the dynamo (True) exporter."""
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for key, km in keras_models.items():
        shape = (784,) if key == "mlp" else (1, 8, 8)
        for dynamo in (False, True):
            out[(key, dynamo)] = export(torch_twin(km), shape, d / f"{km.name}_{int(dynamo)}.onnx", dynamo)
    return out


# --------------------------------------------------------------------------- same Graph as Keras
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("key", ["mlp", "cnn"])
def test_export_gives_the_keras_graph(key: str, dynamo: bool, keras_models, exported) -> None:
    """The ONNX export of the torch twin converts to exactly the Keras model's Graph: names, kinds,
    shapes, params, fused activations and weights bit for bit (the Flatten permutation undone)."""
    km = keras_models[key]
    g = load_onnx(exported[(key, dynamo)])
    assert g.name == exported[(key, dynamo)].stem
    assert_same_graph(g, graph_from_keras(km))
    assert g.is_chain
    assert not g.layer("fc1").weights["kernel"].flags.writeable


@pytest.mark.parametrize("key", ["mlp", "cnn"])
def test_export_computes_what_onnxruntime_computes(key: str, keras_models, exported) -> None:
    path = exported[(key, True)]
    shape = (784,) if key == "mlp" else (1, 8, 8)
    x = np.random.default_rng(0).uniform(-2, 2, size=(16, *shape)).astype(np.float32)
    expected = ort_run(path, x)
    got = graph_forward(load_onnx(path), channels_last(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, keras_models[key].predict(channels_last(x), verbose=0), rtol=1e-5, atol=1e-6)


def _randomize_bn(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            with torch.no_grad():
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.rand(t.shape, generator=gen) * 2 - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _rich_2d() -> nn.Module:
    torch.manual_seed(3)
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # 'same'
        nn.ReLU(),  # fused into the conv
        nn.BatchNorm2d(4),  # after the ReLU, so the exporters cannot fold it into the conv
        nn.Tanh(),  # after BN: a standalone Activation
        nn.AvgPool2d(2),
        nn.Conv2d(4, 3, (2, 3), stride=(1, 2), bias=False),
        nn.MaxPool2d(2, stride=1),
        nn.Flatten(),
        nn.BatchNorm1d(6),  # on the flattened map: its statistics follow the row permutation
        nn.Dropout(0.3),
        nn.Linear(6, 7),
        nn.Sigmoid(),
        nn.Linear(7, 5),
        nn.Softmax(dim=1),
    )
    _randomize_bn(m, 4)
    return m.eval()


def _rich_1d() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Conv1d(3, 4, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(4, 2, 2, stride=2),
        nn.AvgPool1d(2, stride=1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_channels_first_layout_is_converted(tmp_path: Path, dynamo: bool) -> None:
    """Every layer kind, 2-D: the Graph on the channels-last input equals onnxruntime on the channels-first one."""
    path = export(_rich_2d(), (2, 9, 10), tmp_path / "rich2d.onnx", dynamo)
    g = load_onnx(path)
    assert [(lyr.kind, lyr.activation) for lyr in g.layers] == [
        ("Input", None),
        ("Conv2D", "relu"),
        ("BatchNormalization", None),
        ("Activation", "tanh"),
        ("AveragePooling2D", None),
        ("Conv2D", None),
        ("MaxPooling2D", None),
        ("Flatten", None),
        ("BatchNormalization", None),
        ("Dense", "sigmoid"),
        ("Dense", None),
        ("Activation", "softmax"),
    ]
    c1, c2 = g.body[0], g.body[4]
    assert c1.input_shape == (9, 10, 2) and c1.output_shape == (9, 10, 4)
    assert dict(c1.params) == {
        "filters": 4,
        "kernel_size": (3, 3),
        "strides": (1, 1),
        "padding": "same",
        "use_bias": True,
    }
    assert c1.weights["kernel"].shape == (3, 3, 2, 4)
    assert c2.params["strides"] == (1, 2) and c2.params["use_bias"] is False and set(c2.weights) == {"kernel"}
    assert c2.output_shape == (3, 2, 3)
    assert g.body[5].params["strides"] == (1, 1) and g.body[6].output_shape == (6,)
    assert g.body[1].params["epsilon"] == 1e-05
    x = np.random.default_rng(1).normal(size=(32, 2, 9, 10)).astype(np.float32)
    np.testing.assert_allclose(graph_forward(g, channels_last(x)), ort_run(path, x), rtol=1e-4, atol=1e-6)


def test_flatten_permutation_is_needed(tmp_path: Path) -> None:
    """Without the row permutation the CNN would compute something else: the test above can fail."""
    path = export(_rich_2d(), (2, 9, 10), tmp_path / "rich2d.onnx", False)
    g = load_onnx(path)
    bn = g.body[7]
    assert bn.kind == "BatchNormalization" and bn.input_shape == (6,)
    raw = numpy_helper.to_array(
        next(t for t in onnx.load(str(path)).graph.initializer if t.name == "8.running_mean")
    )
    assert not np.array_equal(bn.weights["moving_mean"], raw)
    np.testing.assert_array_equal(bn.weights["moving_mean"], raw[np.arange(6).reshape(3, 2).T.reshape(-1)])


def test_conv1d_layout_is_converted(tmp_path: Path) -> None:
    path = export(_rich_1d(), (3, 16), tmp_path / "rich1d.onnx", True)
    g = load_onnx(path)
    assert [lyr.kind for lyr in g.body] == [
        "Conv1D",
        "MaxPooling1D",
        "Conv1D",
        "AveragePooling1D",
        "Flatten",
        "Dense",
    ]
    assert g.body[0].activation == "relu" and g.body[0].params["padding"] == "same"
    assert g.body[0].weights["kernel"].shape == (3, 3, 4)
    assert g.body[3].output_shape == (3, 2)
    x = np.random.default_rng(2).normal(size=(20, 3, 16)).astype(np.float32)
    np.testing.assert_allclose(graph_forward(g, channels_last(x)), ort_run(path, x), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- hand-built ONNX graphs
def _model(nodes, inits: dict[str, np.ndarray], in_shape, out_shape, opset: int = 17, in_name: str = "x"):
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [1, *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, *out_shape])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_matmul_add_becomes_dense_with_bias(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w1, b1, w2 = rng.normal(size=(5, 4)), rng.normal(size=(4,)), rng.normal(size=(4, 3))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="dense.1/mm"),
        helper.make_node("Add", ["h", "b1"], ["h2"], name="dense.1/add"),
        helper.make_node("Relu", ["h2"], ["h3"], name="act"),
        helper.make_node("Identity", ["h3"], ["h4"], name="id"),
        helper.make_node("MatMul", ["h4", "w2"], ["y"], name="out"),
    ]
    model = _model(nodes, {"w1": w1, "b1": b1, "w2": w2}, (5,), (3,))
    g = graph_from_onnx(model, name="mm")
    assert [(lyr.name, lyr.kind, lyr.activation, lyr.params["use_bias"]) for lyr in g.body] == [
        ("dense_1_mm_1", "Dense", "relu", True),
        ("out", "Dense", None, False),
    ]
    np.testing.assert_array_equal(g.body[0].weights["kernel"], w1.astype(np.float32))
    np.testing.assert_array_equal(g.body[0].weights["bias"], b1.astype(np.float32))
    path = tmp_path / "mm.onnx"
    onnx.save(model, str(path))
    x = rng.normal(size=(8, 5)).astype(np.float32)
    np.testing.assert_allclose(graph_forward(g, x), ort_run(path, x), rtol=1e-5, atol=1e-5)


def test_gemm_alpha_beta_and_untransposed_weight(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    b, c = rng.normal(size=(4, 3)), rng.normal(size=(1, 3))
    node = helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="g", alpha=0.5, beta=2.0, transB=0)
    model = _model([node], {"b": b, "c": c}, (4,), (3,))
    (dense,) = graph_from_onnx(model).body
    np.testing.assert_array_equal(dense.weights["kernel"], b.astype(np.float32) * np.float32(0.5))
    np.testing.assert_array_equal(dense.weights["bias"], c.reshape(-1).astype(np.float32) * np.float32(2.0))
    path = tmp_path / "gemm.onnx"
    onnx.save(model, str(path))
    x = rng.normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_allclose(graph_forward(graph_from_onnx(model), x), ort_run(path, x), rtol=1e-5, atol=1e-6)


def test_conv_plus_channel_add_becomes_conv_bias(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(3, 2, 2, 2)), rng.normal(size=(1, 3, 1, 1))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Add", ["c", "b"], ["s"], name="bias"),
        helper.make_node("Sigmoid", ["s"], ["y"], name="sig"),
    ]
    model = _model(nodes, {"w": w, "b": b}, (2, 5, 4), (3, 5, 4))
    g = graph_from_onnx(model)
    (conv,) = g.body
    assert conv.kind == "Conv2D" and conv.activation == "sigmoid" and conv.params["padding"] == "same"
    np.testing.assert_array_equal(conv.weights["bias"], b.reshape(-1).astype(np.float32))
    assert conv.output_shape == (5, 4, 3)
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    x = rng.normal(size=(4, 2, 5, 4)).astype(np.float32)
    expected = channels_last(ort_run(path, x))  # the Graph's output is channels-last too
    np.testing.assert_allclose(graph_forward(g, channels_last(x)), expected, rtol=1e-5, atol=1e-6)


def test_view_flatten_is_folded_by_qonnx_cleanup(tmp_path: Path) -> None:
    """``x.view(x.size(0), -1)`` with a dynamic batch exports as Shape/Gather/Unsqueeze/Concat/Reshape;
    the batch is fixed to 1 and qonnx folds the shape computation into one Reshape, read as a Flatten."""

    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.conv(x))
            return self.fc(x.view(x.size(0), -1))

    torch.manual_seed(2)
    path = export(ViewNet(), (1, 6, 6), tmp_path / "view.onnx", False, dynamic_axes={"x": {0: "batch"}})
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Shape" in ops and "Concat" in ops  # Concat would be refused if cleanup did not fold it
    g = load_onnx(path)
    assert [(lyr.name, lyr.kind, lyr.activation) for lyr in g.layers] == [
        ("x", "Input", None),
        ("conv", "Conv2D", "relu"),
        ("Reshape", "Flatten", None),
        ("fc", "Dense", None),
    ]
    x = np.random.default_rng(3).normal(size=(10, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(graph_forward(g, channels_last(x)), ort_run(path, x), rtol=1e-5, atol=1e-6)


def test_torch_frontend_and_onnx_export_agree(keras_models, exported) -> None:
    """The PyTorch frontend reads the twin itself; its ONNX export reads as the same Graph."""
    torch_frontend = pytest.importorskip("split4ml.frontends.torch")
    for key in ("mlp", "cnn"):
        shape = (784,) if key == "mlp" else (1, 8, 8)
        direct = torch_frontend.graph_from_torch(torch_twin(keras_models[key]), input_shape=shape)
        assert_same_graph(load_onnx(exported[(key, True)]), direct)


def test_flattened_map_at_the_output_raises() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1]),
        helper.make_node("Flatten", ["c"], ["y"], name="flat_out"),
    ]
    model = _model(nodes, {"w": np.ones((2, 1, 1))}, (1, 3), (6,))
    _raises(model, "flat_out", "Flatten", "reaches the model output")


def test_same_padded_average_pool_excludes_padding(tmp_path: Path) -> None:
    """Keras 'same' average pooling averages over the window inside the input (count_include_pad=0)."""
    nodes = [
        helper.make_node("AveragePool", ["x"], ["p"], name="avg", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("MaxPool", ["p"], ["y"], name="max", kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
    ]
    model = _model(nodes, {}, (2, 5, 5), (2, 3, 3))
    g = graph_from_onnx(model)
    assert [(lyr.kind, lyr.params["padding"], lyr.output_shape) for lyr in g.body] == [
        ("AveragePooling2D", "same", (3, 3, 2)),
        ("MaxPooling2D", "same", (3, 3, 2)),
    ]
    path = tmp_path / "pool.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(4).normal(size=(3, 2, 5, 5)).astype(np.float32)
    expected = channels_last(ort_run(path, x))
    np.testing.assert_allclose(graph_forward(g, channels_last(x)), expected, rtol=1e-5, atol=1e-6)
    nodes[0] = helper.make_node("AveragePool", ["x"], ["p"], name="avg", kernel_shape=[3, 3], strides=[2, 2],
                                pads=[1, 1, 1, 1], count_include_pad=1)
    _raises(_model(nodes, {}, (2, 5, 5), (2, 3, 3)), "avg", "AveragePool", "count_include_pad")


def test_dynamic_batch_and_reserved_names(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Linear(6, 5), nn.ReLU()), nn.Linear(5, 2)
    ).eval()  # module paths '0.0', '1'
    path = tmp_path / "dyn.onnx"
    with contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(
            net, (torch.zeros(1, 6),), str(path), dynamo=False, input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
        )
    g = load_onnx(path)
    assert [lyr.name for lyr in g.layers] == ["input_1", "layer_0_0", "layer_1"]
    assert all(n.isidentifier() for n in (lyr.name for lyr in g.layers))
    assert g.input.output_shape == (6,) and g.layers[-1].output_shape == (2,)


def test_nested_module_names_agree_between_exporters(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = nn.Sequential()
    net.add_module("features", nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten()))
    net.add_module("head", nn.Linear(12, 4))
    a = load_onnx(export(net, (2, 6), tmp_path / "a.onnx", False))
    b = load_onnx(export(net, (2, 6), tmp_path / "b.onnx", True))
    assert [lyr.name for lyr in a.layers] == ["x", "features_0", "features_2", "head"]
    assert b.input.name == "input_1"  # the dynamo exporter names the input after forward's argument
    assert [lyr.name for lyr in b.body] == [lyr.name for lyr in a.body]
    assert_same_graph(a, b, check_names=False)


# --------------------------------------------------------------------------- unsupported
def _raises(model, node_name: str, op_type: str, *words: str) -> str:
    with pytest.raises(UnsupportedLayerError) as info:
        graph_from_onnx(model)
    msg = str(info.value)
    assert f"node {node_name!r} ({op_type})" in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_lstm_node_raises() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="my/lstm", hidden_size=2),
    ]
    model = _model(nodes, {"W": rng.normal(size=(1, 8, 3)), "R": rng.normal(size=(1, 8, 2))}, (1, 3), (1, 1, 2))
    # LSTM input is (seq, batch, features): (5, 1, 3) here
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 5
    _raises(model, "my/lstm", "LSTM", "not supported", "Gemm", "README")


def test_concat_branch_from_torch(tmp_path: Path) -> None:
    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.a(x), self.b(x)], dim=1)

    torch.manual_seed(0)
    fork = Fork().eval()
    path = export(fork, (4,), tmp_path / "fork.onnx", False)
    g = load_onnx(path)
    assert [(lyr.name, lyr.kind, lyr.inputs) for lyr in g.body] == [
        ("a", "Dense", ("x",)), ("b", "Dense", ("x",)), ("cat", "Concatenate", ("a", "b"))]
    assert g.layer("cat").in_shapes == ((2,), (3,)) and g.layer("cat").params["axis"] == -1
    assert_same_graph(g, torch_frontend().graph_from_torch(fork, input_shape=(4,)))
    x = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(graph_forward(g, x), ort_run(path, x), rtol=1e-5, atol=1e-6)


def test_hand_built_skip_connection() -> None:
    """The raw MatMul output feeds the ReLU and the Add: the ReLU is not fused; names are the node names."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Add", ["h", "r"], ["y"], name="skip"),
    ]
    model = _model(nodes, {"w": rng.normal(size=(3, 3))}, (3,), (3,))
    g = graph_from_onnx(model)
    assert [(lyr.name, lyr.kind, lyr.inputs, lyr.activation) for lyr in g.body] == [
        ("mm", "Dense", ("x",), None), ("relu", "Activation", ("mm",), "relu"), ("skip", "Add", ("mm", "relu"), None)]
    assert g.outputs == ("skip",)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = np.concatenate([sess.run(None, {"x": row[None]})[0] for row in x])
    np.testing.assert_allclose(graph_forward(g, x), expected, rtol=1e-5, atol=1e-6)


def test_add_of_a_tensor_to_itself() -> None:
    """``h + h``: qonnx's tensor renaming renames only the first of two equal inputs; the frontend gives the
    second its own Identity copy first, so the Add still reads the MatMul twice."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "h"], ["s"], name="twice"),
        helper.make_node("Tanh", ["s"], ["y"], name="t"),
    ]
    model = _model(nodes, {"w": rng.normal(size=(3, 2))}, (3,), (2,))
    g = graph_from_onnx(model)
    assert [(lyr.name, lyr.kind, lyr.inputs) for lyr in g.body] == [
        ("mm", "Dense", ("x",)), ("twice", "Add", ("mm", "mm")), ("t", "Activation", ("twice",))]
    x = rng.normal(size=(4, 3)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = np.concatenate([sess.run(None, {"x": row[None]})[0] for row in x])
    np.testing.assert_allclose(graph_forward(g, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "nodes,inits,in_shape,out_shape,name,op,words",
    [
        ([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
          helper.make_node("Concat", ["c", "x"], ["y"], name="cat_len", axis=2)],
         {"w": np.ones((2, 2, 1))}, (2, 3), (2, 6), "cat_len", "Concat", ("axis 2", "channels")),
        ([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
          helper.make_node("Concat", ["h", "x", "h"], ["y"], name="cat3", axis=1)],
         {"w": np.ones((3, 3))}, (3,), (9,), "cat3", "Concat", ("3 tensors",)),
        ([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
          helper.make_node("Add", ["x", "h"], ["y"], name="bcast")],
         {"w": np.ones((3, 1))}, (3,), (3,), "bcast", "Add", ("broadcasts",)),
        ([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
          helper.make_node("Mul", ["x", "h"], ["y"], name="gate")],
         {"w": np.ones((3, 3))}, (3,), (3,), "gate", "Mul", ("not supported",)),
        ([helper.make_node("Relu", ["x"], ["h"], name="r"),
          helper.make_node("Add", ["h", "c"], ["y"], name="shift")],
         {"c": np.ones((3,))}, (3,), (3,), "shift", "Add", ("bias right after",)),
    ],
    ids=["concat-axis", "concat-3", "add-broadcast", "mul", "add-constant-not-bias"],
)
def test_unsupported_merges_raise(nodes, inits, in_shape, out_shape, name, op, words) -> None:
    _raises(_model(nodes, inits, in_shape, out_shape), name, op, *words)


# --------------------------------------------------------------------------- skip connections from torch
class Block(nn.Module):
    """One block of :func:`split4ml.models.residual_mlp`: fc1 relu, fc2, + input, relu."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.fc1, self.fc2, self.relu = nn.Linear(width, width), nn.Linear(width, width), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.fc2(torch.relu(self.fc1(x))))


class TorchResidualMLP(nn.Module):
    """The twin of :func:`split4ml.models.residual_mlp` (64 -> stem 16 relu -> 2 blocks -> head 10 -> softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.b1, self.b2 = nn.Linear(64, 16), Block(), Block()
        self.head, self.softmax = nn.Linear(16, 10), nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.head(self.b2(self.b1(torch.relu(self.stem(x))))))


def residual_twin(km: keras.Model) -> nn.Module:
    tm = TorchResidualMLP()
    for layer in km.layers:
        if layer.weights:
            k, b = layer.get_weights()
            target = tm.get_submodule(layer.name.replace("_", "."))  # b1_fc1 -> b1.fc1
            _set(target.weight, k.T)
            _set(target.bias, b)
    return tm.eval()


class TorchInception(nn.Module):
    """Conv branches concatenated over channels (dim 1: the last axis channels-last), a residual sum of
    maps inside a submodule, and a flattened map read by two Linears whose outputs are concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 2, 1)
        self.mix = nn.Sequential(nn.Conv2d(5, 5, 3, padding=1), nn.Tanh())
        self.pool, self.flatten = nn.MaxPool2d(2), nn.Flatten()
        self.fc1, self.fc2, self.out = nn.Linear(45, 6), nn.Linear(45, 4), nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        f = self.flatten(self.pool(c + self.mix(c)))
        return self.out(torch.cat((self.fc1(f), self.fc2(f)), dim=1))


def torch_frontend():
    return pytest.importorskip("split4ml.frontends.torch")


@pytest.fixture(scope="module")
def residual(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The Keras residual_mlp, its torch twin (same weights) and the twin's exports with both exporters."""
    from split4ml.models import residual_mlp

    d = tmp_path_factory.mktemp("onnx_res")
    km = residual_mlp(seed=4)
    tm = residual_twin(km)
    return {"keras": km, "torch": tm,
            **{dynamo: export(tm, (64,), d / f"residual_mlp_{int(dynamo)}.onnx", dynamo) for dynamo in (False, True)}}


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_residual_export_gives_the_keras_and_torch_graph(dynamo: bool, residual) -> None:
    g = load_onnx(residual[dynamo])
    kg = graph_from_keras(residual["keras"])
    assert_same_graph(g, kg)
    assert_same_graph(g, torch_frontend().graph_from_torch(residual["torch"]))
    assert g.outputs == kg.outputs == ("softmax",) and not g.is_chain
    assert g.layer("b2_add").inputs == ("b1_relu", "b2_fc2")
    x = np.random.default_rng(5).uniform(size=(12, 64)).astype(np.float32)
    expected = ort_run(residual[dynamo], x)
    np.testing.assert_allclose(graph_forward(g, x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(residual["keras"].predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_channel_concat_and_map_add_from_torch(tmp_path: Path, dynamo: bool) -> None:
    torch.manual_seed(8)
    tm = TorchInception().eval()
    path = export(tm, (2, 6, 6), tmp_path / "inception.onnx", dynamo)
    g = load_onnx(path)
    assert_same_graph(g, torch_frontend().graph_from_torch(tm, input_shape=(2, 6, 6)))
    assert [lyr.name for lyr in g.body] == ["a", "b", "cat", "mix_0", "add", "pool", "flatten", "fc1", "fc2",
                                           "cat_1", "out"]
    assert g.layer("cat").in_shapes == ((6, 6, 3), (6, 6, 2)) and g.layer("add").inputs == ("cat", "mix_0")
    assert g.layer("mix_0").activation == "tanh" and g.layer("a").activation == "relu"
    x = np.random.default_rng(6).normal(size=(6, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(graph_forward(g, channels_last(x)), ort_run(path, x), rtol=1e-5, atol=1e-5)


def test_quant_node_raises() -> None:
    nodes = [
        helper.make_node(
            "Quant", ["x", "s", "z", "bw"], ["q"], name="qin", domain="qonnx.custom_op.general",
            signed=1, narrow=0, rounding_mode="ROUND",
        ),
        helper.make_node("MatMul", ["q", "w"], ["y"], name="mm"),
    ]
    inits = {"s": np.array(0.125), "z": np.array(0.0), "bw": np.array(8.0), "w": np.ones((3, 2))}
    model = _model(nodes, inits, (3,), (2,))
    model.opset_import.append(helper.make_opsetid("qonnx.custom_op.general", 1))
    _raises(model, "qin", "Quant", "quantised", "--precision")


@pytest.mark.parametrize(
    "node,inits,in_shape,out_shape,name,op,words",
    [
        (
            helper.make_node("Conv", ["x", "w"], ["y"], name="grp", group=2, kernel_shape=[1, 1]),
            {"w": np.ones((2, 1, 1, 1))},
            (2, 3, 3),
            (2, 3, 3),
            "grp",
            "Conv",
            ("group=2",),
        ),
        (
            helper.make_node("Conv", ["x", "w"], ["y"], name="dil", dilations=[2], kernel_shape=[2]),
            {"w": np.ones((1, 1, 2))},
            (1, 6),
            (1, 4),
            "dil",
            "Conv",
            ("dilations",),
        ),
        (
            helper.make_node("Conv", ["x", "w"], ["y"], name="pad", pads=[1, 0], kernel_shape=[2]),
            {"w": np.ones((1, 1, 2))},
            (1, 6),
            (1, 6),
            "pad",
            "Conv",
            ("pads [1, 0]", "Keras 'same'"),
        ),
        (
            helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=-1),
            {},
            (3, 4, 5),
            (3, 4, 5),
            "sm",
            "Softmax",
            ("axis -1",),
        ),
        (
            helper.make_node("Gemm", ["x", "w"], ["y"], name="g3", transB=1),
            {"w": np.ones((2, 4))},
            (3, 4),
            (3, 2),
            "g3",
            "Gemm",
            ("Flatten",),
        ),
        (
            helper.make_node("Add", ["x", "c"], ["y"], name="plus"),
            {"c": np.ones((3,))},
            (3,),
            (3,),
            "plus",
            "Add",
            ("bias",),
        ),
        (
            helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky"),
            {},
            (3,),
            (3,),
            "leaky",
            "LeakyRelu",
            ("supported ONNX ops",),
        ),
    ],
    ids=["group", "dilation", "asymmetric-pad", "softmax-axis", "gemm-rank3", "add-not-bias", "leakyrelu"],
)
def test_unsupported_options_raise(node, inits, in_shape, out_shape, name, op, words) -> None:
    _raises(_model([node], inits, in_shape, out_shape), name, op, *words)


# --------------------------------------------------------------------------- files and dispatch
def test_load_model_dispatch_and_errors(tmp_path: Path, exported) -> None:
    src = exported[("cnn", True)]
    g = load_model(src)
    assert_same_graph(load_model(src, framework="onnx"), g)
    assert (src.parent / f"{src.name}.data").is_file()  # the dynamo exporter keeps weights next to the file
    other = tmp_path / "model.bin"
    onnx.save(onnx.load(str(src)), str(other))  # one self-contained file
    assert_same_graph(load_model(other, framework="onnx"), g, check_names=True)
    with pytest.raises(ModelLoadError, match="weights"):
        load_model(src, weights=tmp_path / "w.h5")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    lost = tmp_path / "lost.onnx"
    lost.write_bytes(src.read_bytes())  # its external weights are not next to it
    with pytest.raises(ModelLoadError, match="cannot read ONNX model"):
        load_model(lost)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(ModelLoadError, match="ONNX"):
        load_model(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="no ONNX graph nodes"):
        load_model(empty)


def test_import_is_lazy() -> None:
    code = (
        "import sys, split4ml.frontends, split4ml.frontends.onnx; "
        "assert not {'onnx', 'qonnx', 'keras', 'torch'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- CLI
def test_cli_inspect_estimate_plan_onnx(monkeypatch, capsys, tmp_path: Path, exported) -> None:
    src = exported[("mlp", True)]
    rc, out, _ = run_cli(monkeypatch, capsys, "inspect", str(src), "--json")
    assert rc == 0
    info = json.loads(out)
    assert [lyr["name"] for lyr in info["layers"]] == ["x", "fc1", "fc2", "fc3", "softmax"]
    assert info["n_params"] == 13434 and info["input_shape"] == [784]
    rc, out, _ = run_cli(monkeypatch, capsys, "estimate", str(src), "--json")
    assert rc == 0 and [lyr["name"] for lyr in json.loads(out)["layers"]][:3] == ["fc1", "fc2", "fc3"]
    renamed = tmp_path / "mlp.model"
    onnx.save(onnx.load(str(src)), str(renamed))
    rc, out, _ = run_cli(monkeypatch, capsys, "inspect", str(renamed), "--json", "--framework", "onnx")
    assert rc == 0 and json.loads(out)["n_params"] == 13434
    plan = tmp_path / "plan.yaml"
    rc, out, _ = run_cli(monkeypatch, capsys, "plan", str(src), "--stages", "2", "-o", str(plan), "--json")
    assert rc == 0
    p = json.loads(out)
    assert p["n_stages"] == 2
    assert [n for st in p["stages"] for n in st["layers"]] == ["fc1", "fc2", "fc3", "softmax"]
    assert plan.is_file()
    rc, out, err = run_cli(monkeypatch, capsys, "inspect", str(renamed), "--json")
    assert rc == 2 and "extension" in (out + err)
    # a plan of a file named without .onnx records the framework, so it reloads the same way
    plan2 = tmp_path / "plan2.yaml"
    rc, out, _ = run_cli(monkeypatch, capsys, "plan", str(renamed), "--framework", "onnx", "-o", str(plan2), "--json")
    assert rc == 0
    from split4ml.plan.api import load_plan

    reloaded, graph = load_plan(plan2)
    assert_same_graph(graph, load_onnx(src), check_names=True)
    assert [n for st in reloaded.stages for n in st.layers] == ["fc1", "fc2", "fc3", "softmax"]


def test_cli_unsupported_op_exit_code(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "leaky.onnx"
    onnx.save(_model([helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky")], {}, (3,), (3,)), str(path))
    rc, out, err = run_cli(monkeypatch, capsys, "inspect", str(path), "--json")
    assert rc == 2 and "'leaky' (LeakyRelu)" in (out + err)


# --------------------------------------------------------------------------- same plan, bit-exact (slow)
def _plan_json(monkeypatch, capsys, model: Path, out: Path, *extra: str) -> dict:
    rc, text, err = run_cli(monkeypatch, capsys, "plan", str(model), "-o", str(out), "--json", *extra)
    assert rc == 0, text + err
    d = json.loads(text)
    for key in ("model", "model_sha256", "model_options", "plan_file"):
        d.pop(key, None)
    return d


@pytest.mark.slow
@pytest.mark.parametrize("key,extra", [("mlp", ("--stages", "2")), ("cnn", ())])
def test_keras_and_onnx_same_plan_and_bit_exact(monkeypatch, capsys, tmp_path: Path, key: str, extra, keras_models,
                                                exported) -> None:
    km = keras_models[key]
    keras_file = tmp_path / f"{km.name}.keras"
    km.save(keras_file)
    p_keras = _plan_json(monkeypatch, capsys, keras_file, tmp_path / "keras_plan.yaml", *extra)
    onnx_plan = tmp_path / "onnx_plan.yaml"
    p_onnx = _plan_json(monkeypatch, capsys, exported[(key, True)], onnx_plan, *extra)
    assert p_onnx == p_keras
    rc, out, err = run_cli(monkeypatch, capsys, "verify", str(onnx_plan), "--samples", "100", "--json")
    v = json.loads(out)
    assert rc == 0, out + err
    assert v["bit_exact"] and v["samples"] == 100 and v["mismatched_samples"] == 0 and v["max_abs_diff"] == 0.0


def test_plan_notices_changed_external_weights(tmp_path):
    """torch's exporter keeps the weights in ``m.onnx.data``: the plan's model_sha256 covers that file
    too, so a plan made before the weights changed is refused, not silently re-used."""
    import onnx

    from split4ml.boards import get_board
    from split4ml.errors import PlanError
    from split4ml.plan.api import load_plan, make_plan

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4)).astype(np.float32)
    model = _model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], {"w": w}, (8,), (4,))
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    data = tmp_path / "m.onnx.data"
    assert data.is_file()
    plan = make_plan(load_onnx(path), model=path, board=get_board("pynq-z2"))
    plan.write(tmp_path / "plan.yaml")
    load_plan(tmp_path / "plan.yaml")  # unchanged: loads
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0x01  # one bit of one weight
    data.write_bytes(bytes(raw))
    with pytest.raises(PlanError, match="model_sha256"):
        load_plan(tmp_path / "plan.yaml")
