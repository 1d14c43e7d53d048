"""Plans of models with skip connections: hand-written stage lists, pricing of every crossing tensor,
YAML/JSON round trip, and the pipeline built from a DAG plan (no hls4ml compile here)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("keras")

from split4ml.errors import InfeasibleError, PlanError  # noqa: E402
from split4ml.frontends.keras import graph_from_keras  # noqa: E402
from split4ml.ir import Graph  # noqa: E402
from split4ml.lower import plan_pipeline, plan_stages  # noqa: E402
from split4ml.networks import residual_mlp  # noqa: E402
from split4ml.plan.api import resolve_plan  # noqa: E402
from split4ml.plan.planfile import read_plan_spec, spec_from_dict  # noqa: E402
from split4ml.stages import crossing_tensors, link_bytes  # noqa: E402

#: A skip tensor (stem) crosses board 1, which only runs b1_fc1 and forwards stem.
SKIP_OVER = [["stem"], ["b1_fc1"], ["b1_fc2", "b1_add", "b1_relu", "b2_fc1"],
             ["b2_fc2", "b2_add", "b2_relu", "head", "softmax"]]


@pytest.fixture(scope="module")
def graph() -> Graph:
    return graph_from_keras(residual_mlp(seed=3))


def _spec(stages: list[list[str]], **extra):
    return spec_from_dict({"model": "res.keras", "board": "pynq-z2", "stages": [{"layers": s} for s in stages],
                           **extra})


def test_hand_written_dag_plan_prices_every_crossing_tensor(graph: Graph) -> None:
    plan = resolve_plan(_spec(SKIP_OVER), graph)
    assert [st.layers for st in plan.stages] == [tuple(s) for s in SKIP_OVER]
    links = crossing_tensors(graph, SKIP_OVER)
    assert links == [["stem"], ["stem", "b1_fc1"], ["b1_relu", "b2_fc1"]]
    assert [st.output.tensors for st in plan.stages] == [("stem",), ("stem", "b1_fc1"), ("b1_relu", "b2_fc1"),
                                                         ("softmax",)]
    assert [st.input.tensors for st in plan.stages] == [("x",), ("stem",), ("stem", "b1_fc1"), ("b1_relu", "b2_fc1")]
    assert [st.output.bytes_per_sample for st in plan.stages[:-1]] == link_bytes(graph, SKIP_OVER, plan.settings,
                                                                                 plan.build) == [32, 64, 64]
    for st in plan.stages:  # each board's interval pays for all it receives and sends, forwarded skips included
        b, batch = st.board, plan.batch
        values = math.prod(st.input.shape) + st.cost.latency_cycles + math.prod(st.output.shape)
        want = max(values / b.clock_mhz, b.link.latency_us / batch,
                   (st.input.bytes_per_sample + 84 / batch) * 8 / b.link.bandwidth_mbps,
                   (st.output.bytes_per_sample + 84 / batch) * 8 / b.link.bandwidth_mbps)
        assert plan.metrics.stage_interval_us[st.index] == pytest.approx(want)
    assert plan.metrics.bottleneck_us == pytest.approx(max(plan.metrics.stage_interval_us))


def test_dag_plan_pipeline_is_a_line_of_packed_boards(graph: Graph) -> None:
    plan = resolve_plan(_spec(SKIP_OVER), graph)
    pipeline, whole = plan_pipeline(plan, graph)
    assert [n.id for n in pipeline.nodes] == ["stage_0", "stage_1", "stage_2", "stage_3"]
    assert [n.sources[0].node for n in pipeline.nodes] == [None, "stage_0", "stage_1", "stage_2"]
    for node, st in zip(pipeline.nodes, plan.stages, strict=True):
        assert math.prod(node.stage.input_shape) == math.prod(st.input.shape)
        assert math.prod(node.stage.output_shape) == math.prod(st.output.shape)
        assert node.stage.output_type == st.output.type
        assert {n: node.stage.settings[n] for n in st.layers} == dict(st.settings)
    assert whole.output_shape == (10,) and whole.input_shape == (64,)
    stages, whole2 = plan_stages(plan, graph)
    assert [s.name for s in stages] == [n.id for n in pipeline.nodes] and whole2.name == "whole"


def test_dag_plan_round_trips_through_yaml_and_json(graph: Graph, tmp_path: Path) -> None:
    plan = resolve_plan(_spec([["stem", "b1_fc1"], ["b1_fc2", "b1_add", "b1_relu", "b2_fc1", "b2_fc2"],
                               ["b2_add", "b2_relu", "head", "softmax"]]), graph)
    path = tmp_path / "plan.yaml"
    plan.write(path)
    again = resolve_plan(read_plan_spec(path), graph)
    assert again.to_dict(relative_to=tmp_path) == plan.to_dict(relative_to=tmp_path)
    js = plan.to_json()
    assert js["stages"][1]["output"]["tensors"] == ["b1_relu", "b2_fc2"]
    assert js["stages"][0]["output"]["tensors"] == ["stem", "b1_fc1"]
    assert js["n_boards"] == 3


def test_layers_may_be_listed_in_any_order_within_a_stage(graph: Graph) -> None:
    plan = resolve_plan(_spec([["b1_fc1", "stem"], ["b1_relu", "b1_fc2", "b1_add", "b2_fc1", "b2_fc2", "b2_add",
                                                     "b2_relu", "head", "softmax"]]), graph)
    assert plan.stages[0].layers == ("stem", "b1_fc1")


@pytest.mark.parametrize("stages,match", [
    ([["stem", "b1_fc2"], ["b1_fc1", "b1_add", "b1_relu", "b2_fc1", "b2_fc2", "b2_add", "b2_relu", "head",
                           "softmax"]], r"stages\[0\]: layer 'b1_fc2' reads 'b1_fc1', which runs later"),
    ([["stem", "b1_fc1", "b1_fc2", "b1_add"], ["b1_relu", "b2_fc1", "b2_fc2", "b2_add", "b2_relu", "head",
                                               "softmax"]], "activation 'b1_relu' must stay"),
    ([["stem", "b1_fc1"]], "are on no board"),
])
def test_bad_dag_plans_name_the_stage_and_layer(graph: Graph, stages: list[list[str]], match: str) -> None:
    with pytest.raises(PlanError, match=match):
        resolve_plan(_spec(stages), graph)


def test_split_in_a_dag_plan_is_refused(graph: Graph) -> None:
    data = {"model": "res.keras", "board": "pynq-z2",
            "stages": [{"layers": ["stem"], "split": {"layer": "stem", "kind": "neuron", "parts": 2}},
                       {"layers": [lyr.name for lyr in graph.body if lyr.name != "stem"]}]}
    with pytest.raises(PlanError, match=r"stages\[0\]\.split: splitting a layer is not supported yet"):
        resolve_plan(spec_from_dict(data), graph)


def test_board_that_does_not_fit_is_infeasible(graph: Graph) -> None:
    body = [lyr.name for lyr in graph.body]
    with pytest.raises(InfeasibleError, match=r"stages\[0\] \(board pynq-z2"):
        resolve_plan(_spec([body], hls={"reuse_factor": 1}, cap=0.05), graph)


def test_io_stream_is_refused_for_skip_connections(graph: Graph) -> None:
    with pytest.raises(PlanError, match="io_parallel only"):
        resolve_plan(_spec(SKIP_OVER, hls={"io_type": "io_stream"}), graph)


@pytest.mark.parametrize("n_stages", [5, 6])
def test_planner_keeps_one_wire_type_per_link(graph: Graph, n_stages: int) -> None:
    """A link is one wire of one type. With b1_fc1's result narrower than stem's, a cut that sends the
    skip tensor (stem) beside b1_fc1 is what the plan checker refuses; the DAG planner knows the rule, so
    --stages 5 and 6 give plans (before: a PlanError after solving)."""
    from split4ml.boards import get_board
    from split4ml.plan.api import make_plan

    cfg = {"LayerName": {"b1_fc1": {"Precision": {"result": "ap_fixed<12,4>"}}}}
    plan = make_plan(graph, model="res.keras", board=get_board("pynq-z2"), cap=0.85, n_stages=n_stages,
                     hls_config=cfg)
    assert plan.n_stages == n_stages
    for st in plan.stages:
        crossing = st.output.tensors or (st.layers[-1],)
        assert not ({"stem", "b1_fc1"} <= set(crossing)), st.output
    assert any("b1_fc1" in st.layers and "b1_fc2" in st.layers for st in plan.stages)


def test_a_plan_stopped_by_the_time_limit_says_so(graph: Graph, monkeypatch, capsys) -> None:
    """When CP-SAT stops at its time limit the plan keeps the best found, is marked not optimal with the
    solver's bound, in the table, the plan file and --json; the two-step plan is tried too."""
    import dataclasses

    from split4ml import cli
    from split4ml.boards import get_board
    from split4ml.plan import dag
    from split4ml.plan.api import make_plan

    solve = dag.partition_dag
    calls: list[float] = []

    def stopped(*args, **kwargs):
        calls.append(kwargs["time_limit_s"])
        part = solve(*args, **kwargs)
        return dataclasses.replace(part, optimal=False, bound=0.9 * part.metrics.bottleneck_us)

    monkeypatch.setattr(dag, "partition_dag", stopped)
    plan = make_plan(graph, model="res.keras", board=get_board("pynq-z2"), time_limit_s=20.0, batch=8)
    assert len(calls) == 2 and calls[0] <= 20.0  # the two-step solve, then the joint one in what is left
    opt = plan.optimality
    assert not opt.optimal and opt.key == "bottleneck_us" and opt.time_limit_s == 20.0
    assert opt.bound <= plan.metrics.bottleneck_us and opt.bound > 0
    d = plan.to_json()
    assert d["optimal"] is False and d["bound"] == opt.bound
    assert plan.to_dict()["summary"]["optimal"] is False
    cli.print_plan(plan)
    text = capsys.readouterr().out
    assert "NOT proven optimal" in text and "20 s time limit" in text and "--time-limit" in text
