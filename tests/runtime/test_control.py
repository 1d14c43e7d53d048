"""What a peer sends on the statistics link: malformed, implausible, stale or forged messages are counted
and dropped, and never crash the launcher or reach the report."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from split4ml.runtime.run import NodeLaunch, RunOptions, _Launcher
from split4ml.runtime.transport import pack_stats, unpack_stats


def _stats(**kw) -> dict:
    d = {"kind": "stats", "node": "a", "index": 0, "pid": 4242, "incarnation": 0, "driver": "csim", "wall_s": 2.0,
         "cpu_s": 1.0, "frames": 3, "samples": 24, "received": 3, "sent": 3, "busy_s": 0.5, "active_s": 0.7,
         "send_s": 0.01, "send_waits": 0, "join_evicted": 0, "pace_overruns": 0, "rejected": {}, "rejected_total": 0}
    d.update(kw)
    return d


@pytest.mark.parametrize("bad", [
    b"\xff\xfe not utf-8", b"[1, 2]", b"{not json", json.dumps({"kind": "stats"}).encode(),
    pack_stats(_stats(kind="explode")), pack_stats(_stats(node=7)), pack_stats(_stats(pid=0)),
    pack_stats(_stats(pid=True)), pack_stats(_stats(incarnation=-1)), pack_stats(_stats(frames=-5)),
    pack_stats(_stats(frames=1.5)), pack_stats(_stats(frames="many")), pack_stats(_stats(busy_s=float("nan"))),
    pack_stats(_stats(busy_s=99.0)), pack_stats(_stats(rejected=[1])), pack_stats(_stats(rejected={"crc": -1})),
    b"[" * 100000,
])
def test_malformed_statistics_are_not_statistics(bad: bytes) -> None:
    assert unpack_stats(bad) is None


def test_well_formed_statistics_pass() -> None:
    assert unpack_stats(pack_stats(_stats())) == _stats()


def test_the_launcher_drops_what_is_not_its_nodes_statistics(tmp_path) -> None:
    from runtime_helpers import dense_stage

    from split4ml.runtime.spec import spec_from_pipeline
    from split4ml.stages import linear_pipeline

    spec = spec_from_pipeline(linear_pipeline([dense_stage(0, (4, 3))]), whole=dense_stage(-1, (4, 3)))
    node = spec.nodes[0].id
    launcher = _Launcher(spec, [], RunOptions(), None, tmp_path, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    ctx = zmq.Context()
    try:
        launcher.set_launches([NodeLaunch(node, [], "tcp://127.0.0.1:1", "local")])
        st = launcher.states[node]
        st.pid = 4242
        launcher.sent_batches, launcher.sent_samples = 10, 80
        push = ctx.socket(zmq.PUSH)
        push.connect(launcher.stats_address)
        sends = [b"garbage", pack_stats(_stats(node="nobody")),
                 pack_stats(_stats(node=node, pid=999)),  # another process claiming to be it
                 pack_stats(_stats(node=node, incarnation=3)),  # a later incarnation that never started
                 pack_stats(_stats(node=node, frames=1_000_000_006_000)),  # more frames than batches sent
                 pack_stats(_stats(node=node, samples=81)),  # more samples than were sent
                 pack_stats(_stats(node=node, kind="hello"))]  # the real one
        for m in sends:
            push.send(m)
        deadline = time.monotonic() + 5
        while launcher.stats_rejected < 6 or not st.up:
            assert time.monotonic() < deadline, (launcher.stats_rejected, st.stats)
            launcher.stats.poll(50)
            launcher._drain_stats()
        assert launcher.stats_rejected == 6
        assert list(st.stats) == [(0, 4242)] and st.frames == 3 and st.up
        push.close(linger=0)
    finally:
        launcher.close()
        ctx.destroy(linger=0)


_FLAKY_NODE = """
import json, os, sys, time
import zmq
args = sys.argv[1:]
if "--incarnation" not in args:
    sys.exit(3)  # the first start crashes
inc = int(args[args.index("--incarnation") + 1])
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.connect(args[0])
s.send(json.dumps({"kind": "hello", "node": args[1], "pid": os.getpid(), "incarnation": inc,
                   "wall_s": 0.1}).encode())
time.sleep(1.0)
"""


@pytest.mark.parametrize("restart", [False, True])
def test_a_crash_while_starting_is_restarted_with_restart(tmp_path, restart: bool) -> None:
    import sys

    from runtime_helpers import dense_stage

    from split4ml.errors import RuntimeFault
    from split4ml.runtime.spec import spec_from_pipeline
    from split4ml.stages import linear_pipeline

    spec = spec_from_pipeline(linear_pipeline([dense_stage(0, (4, 3))]), whole=dense_stage(-1, (4, 3)))
    node = spec.nodes[0].id
    launcher = _Launcher(spec, [], RunOptions(restart=restart, start_timeout_s=20.0), None, tmp_path,
                         "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    try:
        launcher.set_launches([NodeLaunch(node, [sys.executable, "-c", _FLAKY_NODE, launcher.stats_address, node],
                                          "tcp://127.0.0.1:1", "local")])
        if not restart:
            with pytest.raises(RuntimeFault, match=f"node {node} .*exited with code 3 .* while starting"):
                launcher._start_all()
            return
        launcher._start_all()
        st = launcher.states[node]
        assert st.up and st.restarts == 1 and st.incarnation == 1
        assert "exited with code 3" in launcher.faults[0] and "while starting" in launcher.faults[0]
    finally:
        launcher.close()
