"""The pace of an emulated run (split4ml.runtime.pace): virtual-time resources, the factor, the pace file,
and ``run --pace`` against real processes (the model's prediction and the measured rate agree)."""

from __future__ import annotations

import json
import math

import pytest

from split4ml.boards import Board, Link, get_board
from split4ml.errors import RuntimeFault
from split4ml.estimate.base import Cost
from split4ml.plan.metrics import BoardLoad, Endpoint, group_metrics
from split4ml.runtime.pace import (
    MIN_FRAME_S,
    NODE_OVERHEAD_S,
    SAFETY,
    NodePace,
    NodePacer,
    PaceModel,
    Server,
    choose_factor,
    link_s,
    pace_from_loads,
    read_pace,
)


def _board(mbps: float = 1000.0, per_frame_us: float = 100.0) -> Board:
    b = get_board("pynq-z2")
    return Board(**{**b.__dict__, "link": Link(bandwidth_mbps=mbps, latency_us=per_frame_us)})


def _load(board: Board, latency_cycles: float, sent: float, recv: float, frames_sent: int = 1) -> BoardLoad:
    return BoardLoad(Cost(lut=1, ff=1, dsp=0, bram18=0, latency_cycles=latency_cycles, ii_cycles=latency_cycles),
                     board, bytes_sent=sent, bytes_recv=recv, n_in=4, n_out=4, frames_sent=frames_sent)


def test_server_serves_in_order_and_a_link_passes_transfers_at_its_rate() -> None:
    s = Server()
    assert s.serve(1.0, 0.5) == 1.5 and s.serve(1.2, 0.5) == 2.0 and s.serve(3.0, 0.5) == 3.5
    link = Server()
    # a transfer already took its time at the sender: it is in when it arrives, unless the link is still busy
    assert link.pass_through(1.0, 0.5) == 1.0 and link.pass_through(1.1, 0.5) == 1.5
    assert link.pass_through(4.0, 0.5) == 4.0
    assert link_s(8.0, 1000, 2.0) == pytest.approx(2e-3)  # 8000 bits at 8 Mbit/s = 1 ms, stretched 2x


def test_node_pacer_overlaps_its_resources_and_counts_overruns() -> None:
    pace = NodePace(fabric_interval_us=10.0, fabric_latency_us=30.0, frame_us=20.0, link_mbps=8.0, interval_us=1.0)
    p = NodePacer(pace, factor=1.0)
    # a frame of 4 samples: per-frame cost 20 us, then its fabric (3 x 10 + 30 us)
    assert p.computed(0.0, 4, driver_done=0.0) == pytest.approx(80e-6)
    # the next frame pays its per-frame cost (20 -> 40 us) while the fabric still works on the first,
    # then takes the fabric when it is free: 80 + 60 us
    assert p.computed(0.0, 4, driver_done=0.0) == pytest.approx(140e-6)
    assert p.overruns == 0
    # a driver that ends after the paced fabric moves the fabric with it, and is counted
    assert p.computed(0.0, 4, driver_done=1.0) == 1.0 and p.overruns == 1
    # 1000 bytes at 8 Mbit/s = 1 ms on the send link, back to back
    assert p.sent(0.0, 1000) == pytest.approx(1e-3) and p.sent(0.0, 1000) == pytest.approx(2e-3)


def _model(factor: float | None = None) -> PaceModel:
    b = _board(mbps=1000.0, per_frame_us=100.0)
    steps = [[_load(b, 500, sent=64, recv=32)], [_load(b, 50, sent=16, recv=64)]]
    return pace_from_loads([["a"], ["b"]], steps, Endpoint(b.link, 32), Endpoint(b.link, 16), batch=4,
                           io_type="io_parallel") if factor is None else \
        pace_from_loads([["a"], ["b"]], steps, Endpoint(b.link, 32), Endpoint(b.link, 16), batch=4,
                        io_type="io_parallel").with_factor(factor)


def test_pace_model_predicts_the_planners_figures_and_round_trips(tmp_path) -> None:
    b = _board(mbps=1000.0, per_frame_us=100.0)
    steps = [[_load(b, 500, sent=64, recv=32)], [_load(b, 50, sent=16, recv=64)]]
    m = group_metrics(steps, Endpoint(b.link, 32), Endpoint(b.link, 16), batch=4, io_type="io_parallel")
    pm = _model(10.0)
    assert pm.bottleneck_us == m.bottleneck_us and pm.latency_us == m.latency_us
    assert pm.predicted_throughput_per_s == pytest.approx(m.throughput_per_s / 10.0)
    a = pm.nodes["a"]
    assert a.fabric_interval_us == pytest.approx(b.cycles_to_us(4 + 500 + 4)) and a.frame_us == 100.0
    assert a.interval_us == pytest.approx(steps[0][0].interval_us("io_parallel", 4))
    assert read_pace(pm.write(tmp_path / "pace.json")) == pm
    with pytest.raises(RuntimeFault, match="factor is not chosen"):
        _ = _model().predicted_throughput_per_s
    with pytest.raises(RuntimeFault, match="positive number"):
        _model().with_factor(0)
    (tmp_path / "bad.json").write_text(json.dumps({"nodes": {}}))
    with pytest.raises(RuntimeFault, match="not a pace file"):
        read_pace(tmp_path / "bad.json")
    with pytest.raises(RuntimeFault, match="boards per step"):
        pace_from_loads([["a", "b"]], steps, Endpoint(b.link, 32), Endpoint(b.link, 16), batch=4,
                        io_type="io_parallel")


def test_chosen_factor_fits_every_driver_the_cores_and_the_minimum_frame() -> None:
    pm = _model()
    frame = {"a": 2e-3, "b": 1e-4}
    f = choose_factor(pm, frame, cores=2)
    for nid, p in pm.nodes.items():
        assert SAFETY * (frame[nid] + NODE_OVERHEAD_S) <= f * pm.batch * p.interval_us * 1e-6 * (1 + 1e-9)
    total = sum(frame.values()) + (len(frame) + 2) * NODE_OVERHEAD_S
    assert SAFETY * total <= 2 * f * pm.batch * pm.bottleneck_us * 1e-6 * (1 + 1e-9)
    assert f * pm.batch * pm.bottleneck_us * 1e-6 >= MIN_FRAME_S
    # rounded up to two significant digits, and no more than that above the tightest requirement
    assert f == float(f"{f:.2g}")
    one_core = choose_factor(pm, frame, cores=1)
    assert one_core >= f
    # drivers that take no time: the minimum frame alone decides
    idle = choose_factor(pm, {"a": 0.0, "b": 0.0}, cores=64)
    assert idle >= MIN_FRAME_S / (pm.batch * pm.bottleneck_us * 1e-6)
    assert math.isfinite(idle)


def test_frames_in_flight_cover_the_latency() -> None:
    pm = _model(1.0)
    assert pm.frames_in_flight() * pm.batch * pm.bottleneck_us >= pm.latency_us


def test_pace_alone_takes_auto_only_for_run() -> None:
    from split4ml.cli import PACE_AUTO, optional_values

    assert optional_values(["run", "p.yaml", "--emulate", "--pace"]) == ["run", "p.yaml", "--emulate", "--pace",
                                                                        PACE_AUTO]
    assert optional_values(["run", "p.yaml", "--pace", "--json"]) == ["run", "p.yaml", "--pace", PACE_AUTO, "--json"]
    assert optional_values(["run", "--pace", "p.yaml"]) == ["run", "--pace", PACE_AUTO, "p.yaml"]
    assert optional_values(["run", "p.yaml", "--pace", "12.5"]) == ["run", "p.yaml", "--pace", "12.5"]
    assert optional_values(["run", "p.yaml", "--pace", "auto"]) == ["run", "p.yaml", "--pace", "auto"]
    assert optional_values(["node", "s.json", "--pace", "pace.json"]) == ["node", "s.json", "--pace", "pace.json"]


@pytest.mark.slow
def test_paced_split_pipeline_runs_at_its_slowest_shard(split_pipeline) -> None:
    """Fan-out to two neuron shards and a join, paced: the slower shard's fabric bounds the pipeline,
    and the measured rate is the model's (real processes, C-simulation drivers)."""
    from split4ml.runtime import RunOptions, run_pipeline
    from split4ml.verify import random_inputs

    pipeline, whole = split_pipeline
    b = _board(mbps=10_000.0, per_frame_us=50.0)
    clock = b.clock_mhz
    slow = 2000.0 * clock  # 2 ms a sample on shard_b's fabric
    steps = [[_load(b, 1000 * clock, 128, 64, frames_sent=2)],
             [_load(b, 1000 * clock, 64, 128), _load(b, slow, 64, 128)],
             [_load(b, 1000 * clock, 20, 128)]]
    pm = pace_from_loads([["stage_0"], ["shard_a", "shard_b"], ["stage_3"]], steps, Endpoint(b.link, 64),
                         Endpoint(b.link, 20), batch=4, io_type="io_parallel").with_factor(1.0)
    assert pm.bottleneck == "stage" and pm.bottleneck_us == pytest.approx(steps[1][1].fabric_us("io_parallel")[0])
    n = 160
    rep = run_pipeline(pipeline, random_inputs(whole.input_type, whole.input_shape, n, seed=5), whole,
                       RunOptions(batch=4, pace=pm, start_timeout_s=60.0, stall_timeout_s=20.0, timeout_s=90.0))
    d = rep.as_dict()
    assert rep.ok, d
    assert d["pace"] == 1.0 and d["predicted_throughput_per_s"] == pytest.approx(1e6 / pm.bottleneck_us)
    assert abs(d["pace_ratio"] - 1.0) <= 0.15, d
    assert d["steady_throughput_per_s"] == pytest.approx(d["pace_ratio"] * d["predicted_throughput_per_s"])
    # the pace, not the C-simulation, set the rate: every fabric (4 ms a frame or more) is far slower than
    # its driver, so (barring a scheduling hiccup) no frame's driver outran its paced fabric
    assert d["pace_overruns"] <= 0.05 * sum(s["frames"] for s in d["stages"]), d
    with pytest.raises(RuntimeFault, match="frames of 4 samples"):
        run_pipeline(pipeline, random_inputs(whole.input_type, whole.input_shape, 8, seed=5), whole,
                     RunOptions(batch=8, pace=pm))
