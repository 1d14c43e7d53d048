"""keras_model_from_graph: the IR rebuilt as a Keras model computes what the original computes."""

from __future__ import annotations

import numpy as np
import pytest

from split4ml.errors import UnsupportedLayerError
from split4ml.frontends.keras import graph_from_keras
from split4ml.hls.to_keras import keras_model_from_graph
from split4ml.ir import Graph, Layer
from split4ml.networks import deep_mlp, small_cnn


def _mixed_model():
    """Conv1D, BatchNormalization, AveragePooling1D, sigmoid/tanh: the less common layer kinds."""
    import keras

    rng = np.random.default_rng(3)
    inp = keras.Input((12, 3), name="seq")
    x = keras.layers.Conv1D(5, 3, padding="same", activation="tanh", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.AveragePooling1D(2, name="ap")(x)
    x = keras.layers.MaxPooling1D(3, strides=1, name="mp")(x)
    x = keras.layers.Flatten(name="fl")(x)
    x = keras.layers.Dense(4, activation="sigmoid", name="d1")(x)
    model = keras.Model(inp, x, name="mixed")
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 1.5, 5), rng.normal(size=5), rng.normal(size=5), rng.uniform(0.5, 2.0, 5)])
    return model


def _predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x.astype(np.float32), training=False))


@pytest.mark.parametrize("builder", [deep_mlp, small_cnn, _mixed_model], ids=["deep_mlp", "small_cnn", "mixed"])
def test_round_trip_gives_identical_predictions(builder) -> None:
    original = builder()
    graph = graph_from_keras(original)
    rebuilt = keras_model_from_graph(graph)
    assert [lyr.name for lyr in rebuilt.layers][1:] == [lyr.name for lyr in graph.body]
    assert rebuilt.inputs[0].name == graph.input.name
    x = np.random.default_rng(0).normal(size=(64, *graph.input.output_shape))
    np.testing.assert_array_equal(_predict(rebuilt, x), _predict(original, x))


def _dense_graph(seed: int = 0) -> tuple[Graph, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    w = {"k1": rng.normal(size=(6, 5)).astype(np.float32), "b1": rng.normal(size=5).astype(np.float32),
         "k2": rng.normal(size=(5, 3)).astype(np.float32)}
    layers = (
        Layer("in0", "Input", (6,), (6,)),
        Layer("fc1", "Dense", (6,), (5,), ("in0",), "relu", {"units": 5, "use_bias": True},
              {"kernel": w["k1"], "bias": w["b1"]}),
        Layer("fc2", "Dense", (5,), (3,), ("fc1",), None, {"units": 3, "use_bias": False}, {"kernel": w["k2"]}),
        Layer("sm", "Activation", (3,), (3,), ("fc2",), "softmax"),
    )
    return Graph("hand", layers, ("sm",)), w


def test_hand_built_graph_matches_numpy_forward_pass() -> None:
    graph, w = _dense_graph()
    model = keras_model_from_graph(graph)
    x = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)
    h = np.maximum(x @ w["k1"] + w["b1"], 0.0) @ w["k2"]
    e = np.exp(h - h.max(axis=1, keepdims=True))
    expected = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_predict(model, x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.get_layer("fc1").get_weights()[0], w["k1"])
    assert len(model.get_layer("fc2").get_weights()) == 1  # use_bias=False respected


def test_unsupported_kind_is_named() -> None:
    graph, _ = _dense_graph()
    bad = Graph("bad", (*graph.layers[:2], Layer("mystery", "Multiply", (5,), (5,), ("fc1",))), ("mystery",))
    with pytest.raises(UnsupportedLayerError, match="mystery.*Multiply"):
        keras_model_from_graph(bad)
    one = Graph("bad", (*graph.layers[:2], Layer("lonely", "Add", (5,), (5,), ("fc1",))), ("lonely",))
    with pytest.raises(UnsupportedLayerError, match="lonely.*Add.*exactly two"):
        keras_model_from_graph(one)


def test_wrong_weight_shape_is_reported() -> None:
    graph, w = _dense_graph()
    fc1 = graph.layers[1].with_(weights={"kernel": w["k1"].T, "bias": w["b1"]})
    bad = Graph("bad", (graph.layers[0], fc1, *graph.layers[2:]), graph.outputs)
    with pytest.raises(UnsupportedLayerError, match="fc1.*shape"):
        keras_model_from_graph(bad)
