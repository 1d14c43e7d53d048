"""verify: chained per-board C-simulation against the whole model, bit for bit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from split4ml.boards import get_board
from split4ml.errors import BuildError, DataError
from split4ml.fixed import FixedType
from split4ml.frontends.keras import graph_from_keras
from split4ml.ir import Graph
from split4ml.networks import deep_mlp, small_cnn
from split4ml.settings import BuildSettings, LayerSettings
from split4ml.stages import Stage, make_stages, whole_model_stage
from split4ml.verify import STEP_COMPILE, STEP_SIMULATE, VerifyResult, random_inputs, verify_stages

JSON_KEYS = {"bit_exact", "samples", "mismatched_samples", "max_abs_diff", "n_stages", "fixed_accuracy",
             "float_accuracy"}


# ----------------------------------------------------------------------------- random inputs
@pytest.mark.parametrize("text", ["ap_fixed<16,6>", "ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "ap_ufixed<10,2>",
                                  "ap_fixed<40,20>"])
def test_random_inputs_are_on_the_grid_and_spread(text: str) -> None:
    t = FixedType.parse(text)
    x = random_inputs(t, (4, 5), 300, seed=5)
    assert x.shape == (300, 4, 5) and x.dtype == np.float64
    t.to_int(x)  # raises unless every value is on the grid and in range
    span = t.max_value - t.min_value
    assert x.min() < t.min_value + 0.05 * span and x.max() > t.max_value - 0.05 * span
    assert len(np.unique(x)) > min(1000, 2 ** (t.width - 2))
    np.testing.assert_array_equal(x, random_inputs(t, (4, 5), 300, seed=5))
    assert not np.array_equal(x, random_inputs(t, (4, 5), 300, seed=6))


def test_random_inputs_rejects_types_not_exact_in_float64() -> None:
    with pytest.raises(DataError, match="53 bits"):
        random_inputs(FixedType(60, 10), (2,), 3)


# ----------------------------------------------------------------------------- logic, with fake C-sims
class _Fake:
    """Stands in for a compiled stage: y = f(x) in float64."""

    def __init__(self, fn, out_shape):
        self.fn, self.output_shape = fn, out_shape

    def predict(self, x):
        return self.fn(np.asarray(x, dtype=np.float64))


def _toy_stages() -> tuple[list[Stage], Stage]:
    graph = graph_from_keras(deep_mlp(widths=(4, 4), n_in=3, n_out=2))
    names = [lyr.name for lyr in graph.body]
    settings = {n: LayerSettings() for n in names}
    b = get_board("pynq-z2")
    build = BuildSettings()
    return (make_stages(graph, [tuple(names[:1]), tuple(names[1:])], [b, b], settings, build),
            whole_model_stage(graph, b, settings, build))


def _patch_compile(monkeypatch, table):
    import split4ml.hls.csim as csim

    def fake_compile_stages(stages, progress=None):
        for i in range(len(stages)):
            if progress is not None:
                progress(i + 1, len(stages))
        return [table[st.name] for st in stages]

    monkeypatch.setattr(csim, "compile_stages", fake_compile_stages)


def test_mismatches_and_accuracies_are_counted(monkeypatch) -> None:
    stages, whole = _toy_stages()
    lsb = whole.input_type.lsb
    # stage_0 doubles, stage_1 picks 2 columns; the "whole model" agrees except where x[:,0] > 1
    table = {
        "stage_0": _Fake(lambda x: np.tile(x[:, :2], 2) * 2, (4,)),
        "stage_1": _Fake(lambda h: h[:, :2], (2,)),
        "whole": _Fake(lambda x: x[:, :2] * 2 + np.where(x[:, :1] > 1, lsb, 0.0), (2,)),
    }
    _patch_compile(monkeypatch, table)
    x = np.array([[0.5, 0.25, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.5, 1.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    calls: list[tuple[str, int, int]] = []
    res = verify_stages(stages, whole, x, labels, float_model=lambda a: -a[:, :2],
                        progress=lambda *c: calls.append(c), batch_size=3)
    assert isinstance(res, VerifyResult)
    assert (res.bit_exact, res.samples, res.mismatched_samples, res.n_stages) == (False, 4, 2, 2)
    assert res.mismatched_indices == (1, 3) and res.max_abs_diff == lsb
    assert res.fixed_accuracy == 0.75  # argmax of the whole model [0, 0, 1, 0] vs labels [0, 0, 1, 1]
    assert res.float_accuracy == 0.25  # argmax of -x: [1, 1, 0, 1]
    d = res.as_dict()
    assert JSON_KEYS <= set(d) and d["mismatched_indices"] == [1, 3]
    assert calls[0] == (STEP_COMPILE, 0, 3) and (STEP_COMPILE, 3, 3) in calls
    assert [c for c in calls if c[0] == STEP_SIMULATE] == [(STEP_SIMULATE, 0, 4), (STEP_SIMULATE, 3, 4),
                                                           (STEP_SIMULATE, 4, 4)]
    # one-hot labels give the same accuracies
    onehot = np.eye(2)[labels]
    res2 = verify_stages(stages, whole, x, onehot, float_model=lambda a: -a[:, :2])
    assert (res2.fixed_accuracy, res2.float_accuracy) == (0.75, 0.25)
    assert verify_stages(stages, whole, x).fixed_accuracy is None


def test_inputs_are_quantised_to_the_input_type(monkeypatch) -> None:
    stages, whole = _toy_stages()
    seen: list[np.ndarray] = []

    def first(x):
        seen.append(x)
        return np.tile(x[:, :2], 2)

    _patch_compile(monkeypatch, {"stage_0": _Fake(first, (4,)), "stage_1": _Fake(lambda h: h[:, :2], (2,)),
                                 "whole": _Fake(lambda x: x[:, :2], (2,))})
    x = np.random.default_rng(0).normal(size=(10, 3))
    res = verify_stages(stages, whole, x)
    assert res.bit_exact
    np.testing.assert_array_equal(seen[0], whole.input_type.quantize(x))
    assert not np.array_equal(seen[0], x)


def test_off_grid_wire_value_names_the_stage(monkeypatch) -> None:
    stages, whole = _toy_stages()
    _patch_compile(monkeypatch, {"stage_0": _Fake(lambda x: np.tile(x[:, :2], 2) + 1e-6, (4,)),
                                 "stage_1": _Fake(lambda h: h[:, :2], (2,)),
                                 "whole": _Fake(lambda x: x[:, :2], (2,))})
    with pytest.raises(BuildError, match="stage_0 on pynq-z2.*not representable"):
        verify_stages(stages, whole, np.zeros((2, 3)))


def test_bad_data_is_rejected(monkeypatch) -> None:
    stages, whole = _toy_stages()
    _patch_compile(monkeypatch, {})
    with pytest.raises(DataError, match="shape"):
        verify_stages(stages, whole, np.zeros((2, 4)))
    with pytest.raises(DataError, match="labels"):
        verify_stages(stages, whole, np.zeros((2, 3)), y=np.zeros(3))


# ----------------------------------------------------------------------------- real C-simulation
def _samples(t: FixedType, shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """Half spread over the whole input range, half typical (normal) values."""
    wide = random_inputs(t, shape, n - n // 2, seed=seed)
    typical = t.quantize(np.random.default_rng(seed + 1).normal(size=(n // 2, *shape)))
    return np.concatenate([wide, typical])


@pytest.fixture(scope="module")
def mlp():
    """32-64-64-32-32-16-16-10 + softmax (8 Dense layers), cut into three boards."""
    model = deep_mlp(widths=(64, 64, 32, 32, 16, 16), n_in=32, n_out=10, seed=1)
    graph = graph_from_keras(model)
    names = [lyr.name for lyr in graph.body]
    settings = {n: LayerSettings() for n in names}
    build = BuildSettings()
    b = get_board("pynq-z2")
    stages = make_stages(graph, [tuple(names[:3]), tuple(names[3:6]), tuple(names[6:])], [b, b, b], settings,
                         build)
    return model, stages, whole_model_stage(graph, b, settings, build)


@pytest.mark.slow
def test_three_board_mlp_is_bit_exact(mlp) -> None:
    model, stages, whole = mlp
    assert len([lyr for lyr in whole.graph.body if lyr.kind == "Dense"]) >= 6
    x = _samples(whole.input_type, (32,), 300, seed=11)
    y = np.random.default_rng(4).integers(0, 10, size=300)
    calls: list[tuple[str, int, int]] = []
    res = verify_stages(stages, whole, x, y, float_model=lambda a: model.predict(a, verbose=0),
                        progress=lambda *c: calls.append(c))
    assert res.bit_exact and res.mismatched_samples == 0 and res.max_abs_diff == 0.0
    assert res.samples == 300 and res.n_stages == 3
    assert 0.0 <= res.fixed_accuracy <= 1.0 and 0.0 <= res.float_accuracy <= 1.0
    assert (STEP_COMPILE, 4, 4) in calls and (STEP_SIMULATE, 300, 300) in calls
    assert JSON_KEYS <= set(res.as_dict())


@pytest.mark.slow
def test_wrong_chains_are_detected(mlp) -> None:
    _, stages, whole = mlp
    x = _samples(whole.input_type, (32,), 200, seed=12)
    # 1) a board whose input type differs from what the upstream board sends
    narrow = dataclasses.replace(stages[1], input_type=FixedType(10, 4, rounding="RND_CONV", saturation="SAT"))
    res = verify_stages([stages[0], narrow, stages[2]], whole, x)
    assert not res.bit_exact and res.mismatched_samples > 0 and res.max_abs_diff > 0
    assert res.as_dict()["bit_exact"] is False
    # 2) one weight of the last board perturbed
    g = stages[2].graph
    fc7 = g.layer("fc7")
    kernel = np.array(fc7.weights["kernel"], copy=True)
    kernel[:, 0] += 0.5
    bad_graph = Graph(g.name, tuple(fc7.with_(weights={**fc7.weights, "kernel": kernel}) if lyr.name == "fc7"
                                    else lyr for lyr in g.layers), g.outputs)
    res = verify_stages([stages[0], stages[1], dataclasses.replace(stages[2], graph=bad_graph)], whole, x)
    assert not res.bit_exact and res.mismatched_samples > 0
    assert len(res.mismatched_indices) == res.mismatched_samples


@pytest.mark.slow
def test_two_board_cnn_is_bit_exact() -> None:
    model = small_cnn(seed=2)
    graph = graph_from_keras(model)
    names = [lyr.name for lyr in graph.body]
    cut = names.index("flatten")  # board 0: conv + pool, board 1: flatten + dense + softmax
    settings = {n: LayerSettings() for n in names}
    build = BuildSettings()
    b = get_board("pynq-z2")
    stages = make_stages(graph, [tuple(names[:cut]), tuple(names[cut:])], [b, b], settings, build)
    assert stages[1].input_shape == (3, 3, 4)
    whole = whole_model_stage(graph, b, settings, build)
    x = _samples(whole.input_type, (8, 8, 1), 240, seed=13)
    y = np.random.default_rng(5).integers(0, 10, size=240)
    res = verify_stages(stages, whole, x, np.eye(10)[y], float_model=lambda a: model.predict(a, verbose=0))
    assert res.bit_exact and res.samples == 240 and res.n_stages == 2
    assert res.fixed_accuracy is not None and res.float_accuracy is not None
    assert math.isfinite(res.max_abs_diff) and res.max_abs_diff == 0.0
