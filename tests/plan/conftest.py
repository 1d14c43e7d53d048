"""Fixtures shared by the planner tests."""

from __future__ import annotations

import pytest

from split4ml.plan import dag


@pytest.fixture(params=["order-dp", "cp-sat", "cp-sat-coarse"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which solver a DAG test runs. The random DAGs of these tests have their units in forced order
    (each reads the one before it), which the exact chain DP solves (``order-dp``); the ``cp-sat`` ways
    hide that, so CP-SAT solves the same cases, ``cp-sat-coarse`` with whole-microsecond proxy times
    (its exact refinement must still reach the optimum)."""
    if request.param.startswith("cp-sat"):
        monkeypatch.setattr(dag, "in_forced_order", lambda n_units, tensors: False)
    if request.param == "cp-sat-coarse":
        monkeypatch.setattr(dag, "TIME_SCALE", 1)
    return str(request.param)


@pytest.fixture
def cp_sat(monkeypatch: pytest.MonkeyPatch) -> None:
    """CP-SAT decides even where the units run in forced order (a test of CP-SAT itself)."""
    monkeypatch.setattr(dag, "in_forced_order", lambda n_units, tensors: False)
