"""Shared pytest fixtures of the split4ml test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from split4ml.plan.dag import import_cpsat_first

# [E2] OR-Tools' CP-SAT crashes in a process that loaded TensorFlow before it (google/or-tools#3230);
# loading it first keeps the DAG partitioner's solves in-process in test runs.
import_cpsat_first()


@pytest.fixture(scope="session", autouse=True)
def split4ml_csim_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The C-simulation cache of this test session.

    If ``SPLIT4ML_CACHE`` is set (e.g. to reuse compiled stages across runs), it is used as is;
    otherwise it points to a fresh session temporary directory, so each distinct stage compiles
    at most once per test run and nothing is written to the user's home.
    """
    existing = os.environ.get("SPLIT4ML_CACHE")
    if existing:
        yield Path(existing)
        return
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("csim-cache")
        mp.setenv("SPLIT4ML_CACHE", str(path))
        yield path
