"""Fixtures shared by the planner tests."""

from __future__ import annotations

import pytest

from split4ml.plan import dag


@pytest.fixture(params=["order-dp", "cp-sat"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every random DAG here has its units in forced order (each reads the one before it), which the
    exact chain DP solves; ``cp-sat`` hides that, so CP-SAT solves the same cases."""
    if request.param == "cp-sat":
        monkeypatch.setattr(dag, "in_forced_order", lambda n_units, tensors: False)
    return str(request.param)
