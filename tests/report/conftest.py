"""Plans for the report tests, built in memory (no Keras, no compiler): a chain of three boards, a
chain whose bottleneck is a middle board of another type, and the original work's input and
neuron splits of a 784-16-10 network."""

from __future__ import annotations

import pytest
from report_helpers import mlp, plan_of

from split4ml.ir import Graph
from split4ml.plan.planfile import Plan


@pytest.fixture(scope="session")
def chain_graph() -> Graph:
    return mlp([784, 16, 32, 10], name="mnist_like")


@pytest.fixture(scope="session")
def chain_plan(chain_graph: Graph) -> Plan:
    """The demo's shape: 784-16-32-10 on three PYNQ-Z2 boards."""
    return plan_of(chain_graph, [{"layers": ["fc1"]}, {"layers": ["fc2"]}, {"layers": ["fc3", "softmax"]}])


@pytest.fixture(scope="session")
def middle_plan() -> Plan:
    """A bottleneck in the middle, on a ZCU102 between two PYNQ-Z2 boards, under a 70 % cap."""
    p = plan_of(mlp([64, 64, 64, 10]), [
        {"layers": ["fc1"]},
        {"layers": [{"name": "fc2", "reuse_factor": 64, "strategy": "Resource"}], "board": "zcu102"},
        {"layers": ["fc3", "softmax"]}], cap=0.7)
    assert p.metrics.bottleneck_stage == 1
    return p


def _split(kind: str) -> Plan:
    return plan_of(mlp([784, 16, 10]), [{"layers": ["fc1"], "split": {"layer": "fc1", "kind": kind, "parts": 2}},
                                        {"layers": ["fc2", "softmax"]}])


@pytest.fixture(scope="session")
def input_split_plan() -> Plan:
    return _split("input")


@pytest.fixture(scope="session")
def neuron_split_plan() -> Plan:
    return _split("neuron")


@pytest.fixture(scope="session")
def merge_plan() -> Plan:
    """A neuron split of the last Dense layer: its softmax runs on a merge board of its own."""
    p = plan_of(mlp([64, 32, 10]), [{"layers": ["fc1"]}, {"layers": ["fc2", "softmax"],
                                                         "split": {"layer": "fc2", "kind": "neuron", "parts": 2}}])
    assert p.n_stages == 3 and p.stages[2].tail == ("softmax",)
    return p


@pytest.fixture(scope="session", params=["chain", "middle", "input", "neuron", "merge"])
def any_plan(request: pytest.FixtureRequest) -> Plan:
    name = {"chain": "chain_plan", "middle": "middle_plan", "input": "input_split_plan",
            "neuron": "neuron_split_plan", "merge": "merge_plan"}[request.param]
    return request.getfixturevalue(name)
