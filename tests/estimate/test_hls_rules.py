"""hls4ml's reuse-factor rules as restated in split4ml.estimate.hls_rules, checked against hls4ml itself."""

from __future__ import annotations

import random

import numpy as np
import pytest

from split4ml.errors import UnsupportedLayerError
from split4ml.estimate.hls_rules import (
    hls4ml_would_change,
    is_valid_reuse_factor,
    mult_size,
    valid_reuse_factors,
    valid_reuse_factors_for,
)
from split4ml.ir import Layer

hls4ml = pytest.importorskip("hls4ml")

PAIRS = [(16, 64), (64, 32), (784, 16), (7, 13), (12, 10), (1, 5), (5, 1), (96, 160), (27, 16), (100, 100),
         (30, 49), (2, 2), (128, 5)]


@pytest.fixture(scope="module")
def vivado():
    return hls4ml.backends.get_backend("Vivado")


def dense(n_in: int, n_out: int, **kw) -> Layer:
    return Layer("d", "Dense", (n_in,), (n_out,), params={"units": n_out}, **kw)


def conv2d(h: int, w: int, c: int, k: int, f: int) -> Layer:
    return Layer("c", "Conv2D", (h, w, c), (h - k + 1, w - k + 1, f),
                 params={"filters": f, "kernel_size": (k, k), "strides": (1, 1), "padding": "valid"})


@pytest.mark.parametrize("n_in,n_out", PAIRS)
def test_valid_rfs_equal_hls4ml(vivado, n_in, n_out):
    assert valid_reuse_factors_for(n_in, n_out) == vivado.get_valid_reuse_factors(n_in, n_out)


def test_valid_rfs_of_layers_use_hls4ml_mult_size(vivado):
    d = dense(784, 16)
    c2 = conv2d(12, 12, 3, 3, 8)
    c1 = Layer("c1", "Conv1D", (20, 4), (16, 6), params={"filters": 6, "kernel_size": (5,), "strides": (1,)})
    assert mult_size(d) == (784, 16)
    assert mult_size(c2) == (27, 8)
    assert mult_size(c1) == (20, 6)
    for lyr in (d, c2, c1):
        n_in, n_out = mult_size(lyr)
        expected = vivado.get_valid_reuse_factors(n_in, n_out)
        assert valid_reuse_factors(lyr, "Resource") == expected
        assert valid_reuse_factors(lyr, "Latency") == expected


def test_dense_mult_size_prefers_the_kernel_shape():
    lyr = dense(10, 4, weights={"kernel": np.zeros((10, 4)), "bias": np.zeros(4)})
    assert mult_size(lyr) == (10, 4)


def test_big_layer_is_fast_and_every_rf_passes_the_rule():
    rfs = valid_reuse_factors_for(1024, 600)
    assert rfs[0] == 1 and rfs[-1] == 1024 * 600
    assert all(is_valid_reuse_factor(1024, 600, rf) for rf in rfs)
    # spot-check a few values outside the list against the rule
    outside = [rf for rf in range(1, 5000) if rf not in set(rfs)]
    assert outside and not any(is_valid_reuse_factor(1024, 600, rf) for rf in outside)


def test_non_compute_layers_take_rf_one():
    pool = Layer("p", "MaxPooling2D", (8, 8, 4), (4, 4, 4), params={"pool_size": (2, 2)})
    act = Layer("a", "Activation", (10,), (10,), activation="relu")
    for lyr in (pool, act):
        assert valid_reuse_factors(lyr, "Resource") == [1]
        assert hls4ml_would_change(lyr, 4, "Resource") is None
        with pytest.raises(UnsupportedLayerError, match="no matrix multiplication"):
            mult_size(lyr)


def test_would_change_matches_hls4ml_closest(vivado):
    rng = random.Random(7)
    for n_in, n_out in PAIRS:
        lyr = dense(n_in, n_out)
        valid = vivado.get_valid_reuse_factors(n_in, n_out)
        for rf in {1, 2, 3, 7, 10, 100, rng.randint(1, n_in * n_out)}:
            got = hls4ml_would_change(lyr, rf, "Resource")
            if rf in valid:
                assert got is None
            else:
                assert got == vivado.get_closest_reuse_factor(valid, rf)
            # hls4ml never corrects the Latency strategy
            assert hls4ml_would_change(lyr, rf, "Latency") is None


def test_io_parallel_resource_conv_limits_rf_to_n_in():
    c2 = conv2d(12, 12, 3, 3, 8)  # n_in = 27
    par = valid_reuse_factors(c2, "Resource", io_type="io_parallel")
    assert max(par) == 27 and 54 in valid_reuse_factors(c2, "Resource", io_type="io_stream")
    assert 54 in valid_reuse_factors(c2, "Latency", io_type="io_parallel")
