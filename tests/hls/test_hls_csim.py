"""Compiled C-simulation: content-addressed cache, concurrency, and equality with hls4ml's predict."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from split4ml.boards import get_board
from split4ml.errors import DataError
from split4ml.fixed import FixedType
from split4ml.frontends.keras import graph_from_keras
from split4ml.hls.csim import CsimModel, cache_key, compile_stage
from split4ml.hls.project import convert_stage
from split4ml.ir import Graph
from split4ml.networks import mnist_fcnn
from split4ml.settings import BuildSettings, LayerPrecision, LayerSettings
from split4ml.stages import Stage, make_stages
from split4ml.verify import random_inputs

R18 = FixedType(18, 8, rounding="RND_CONV", saturation="SAT")


def _tail_stage(board: str = "pynq-z2", seed: int = 0) -> Stage:
    """fc2 -> fc3 -> softmax of the MNIST network (16 -> 32 -> 10), fed an 18-bit wire."""
    graph = graph_from_keras(mnist_fcnn(seed=seed))
    names = [lyr.name for lyr in graph.body]
    settings = {n: LayerSettings() for n in names}
    settings["fc1"] = LayerSettings(precision=LayerPrecision(result=R18))
    b = get_board(board)
    return make_stages(graph, [("fc1",), tuple(names[1:])], [b, b], settings, BuildSettings())[1]


def _with_weight(stage: Stage, layer: str, delta: float) -> Stage:
    g = stage.graph
    lyr = g.layer(layer)
    kernel = np.array(lyr.weights["kernel"], copy=True)
    kernel[0, 0] += delta
    new = lyr.with_(weights={**lyr.weights, "kernel": kernel})
    return dataclasses.replace(stage, graph=Graph(g.name, tuple(new if x.name == layer else x for x in g.layers),
                                                  g.outputs))


def test_cache_key_is_deterministic_and_content_sensitive() -> None:
    stage = _tail_stage()
    key = cache_key(stage)
    assert len(key) == 64 and key == cache_key(_tail_stage())  # rebuilt from scratch: same content
    assert cache_key(_with_weight(stage, "fc2", 2.0**-10)) != key
    other_rf = dict(stage.settings, fc3=LayerSettings(reuse_factor=2))
    assert cache_key(dataclasses.replace(stage, settings=other_rf)) != key
    assert cache_key(dataclasses.replace(stage, input_type=FixedType(16, 6))) != key
    assert cache_key(dataclasses.replace(stage, build=BuildSettings(io_type="io_stream"))) != key
    # the C-simulation does not depend on the part: same backend, same key; other backend, other key
    assert cache_key(dataclasses.replace(stage, board=get_board("zcu102"))) == key
    assert cache_key(dataclasses.replace(stage, board=get_board("alveo-u200"))) != key


@pytest.mark.slow
def test_compile_once_then_cache_hit_even_when_concurrent(tmp_path: Path) -> None:
    stage = _tail_stage(seed=7)  # weights no other test uses
    results: list[CsimModel] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(compile_stage(stage, cache_dir=tmp_path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(m.from_cache for m in results) == [False, True]  # exactly one compile
    entries = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in entries] == [cache_key(stage)]
    lib = results[0].library
    assert lib == results[1].library and lib.is_file()
    mtime = lib.stat().st_mtime_ns
    manifest = json.loads((entries[0] / "manifest.json").read_text())
    assert manifest["key"] == cache_key(stage) and manifest["output_shape"] == [10]

    again = compile_stage(stage, cache_dir=tmp_path)
    assert again.from_cache and again.library == lib and lib.stat().st_mtime_ns == mtime
    x = random_inputs(R18, (16,), 20, seed=1) / 8
    np.testing.assert_array_equal(again.predict(x), results[0].predict(x))

    # an interrupted compile (no manifest) is redone, not trusted
    (entries[0] / "manifest.json").unlink()
    redone = compile_stage(stage, cache_dir=tmp_path)
    assert not redone.from_cache and redone.library != lib
    np.testing.assert_array_equal(redone.predict(x), results[0].predict(x))


@pytest.mark.slow
def test_predict_equals_hls4ml_predict_on_both_backends(tmp_path: Path) -> None:
    vitis_stage = _tail_stage("alveo-u200")
    accel_stage = _tail_stage("pynq-z2")
    x = np.concatenate([random_inputs(R18, (16,), 100, seed=2), R18.quantize(np.random.default_rng(3).normal(size=(100, 16)))])

    ref_model = convert_stage(vitis_stage, tmp_path / "ref")
    ref_model.compile()  # hls4ml's own compile and predict (Vitis: no AXI wrapper)
    ref = np.asarray(ref_model.predict(x))

    vitis = compile_stage(vitis_stage)
    accel = compile_stage(accel_stage)
    out = vitis.predict(x)
    assert out.shape == (200, 10) and out.dtype == np.float64
    np.testing.assert_array_equal(out, ref)
    # the VivadoAccelerator AXI wrapper (wire types, 18 -> 32-bit AXI word) changes no value
    np.testing.assert_array_equal(accel.predict(x), ref)
    assert len(np.unique(out.argmax(axis=1))) > 1  # not a degenerate, constant output

    with pytest.raises(DataError, match="shape"):
        accel.predict(np.zeros((3, 15)))
    assert accel.predict(x[:5].reshape(5, 16)).shape == (5, 10)
