"""One node in a thread, fed and drained by the test over loopback ZeroMQ: joins, rejections, stop."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq
from runtime_helpers import RESULT, dense_stage

from split4ml.fixed import FixedType
from split4ml.runtime.node import NodeOptions, consumer_ids, serve_node
from split4ml.runtime.spec import spec_from_pipeline
from split4ml.runtime.transport import HANGUP_GRACE_S, unpack_stats
from split4ml.runtime.wire import (
    KIND_STOP,
    SINK,
    SOURCE,
    Expect,
    _pack,
    decode_frame,
    encode_frame,
    encode_stop,
)
from split4ml.stages import Node, Pipeline, Source
from split4ml.verify import random_inputs


class RecordingDriver:
    """y = x[:, [0, 4]]: the first value of part 0 and the last of part 1 (so the join order shows)."""

    input_shape = (5,)
    output_shape = (2,)

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []
        self.closed = False

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(np.array(x))
        return x[:, [0, 4]]

    def close(self) -> None:
        self.closed = True


def _spec():
    a, b, c = dense_stage(0, (6, 3)), dense_stage(1, (5, 2), seed=1), dense_stage(2, (5, 2), seed=2)
    pipe = Pipeline(nodes=(Node("a", a, (Source(None),)), Node("b", b, (Source(None, 1, None),)),
                           Node("c", c, (Source("a"), Source("b")))), outputs=(Source("c"),))
    return spec_from_pipeline(pipe, whole=dense_stage(-1, (6, 2)))


@contextlib.contextmanager
def _node_c_in_thread(ports, driver: RecordingDriver, stats: bool = True, **options) -> Iterator[dict]:
    """Node ``c`` of :func:`_spec` served in a thread (``options``: more :class:`NodeOptions`), with the test's
    sink, statistics and producer sockets around it; stopped and cleaned up on exit."""
    spec = _spec()
    ctx = zmq.Context()
    node_port, sink_port, stats_port = ports(3)
    sink = ctx.socket(zmq.PULL)
    sink.bind(f"tcp://127.0.0.1:{sink_port}")
    stats_sock = None
    if stats:
        stats_sock = ctx.socket(zmq.PULL)
        stats_sock.bind(f"tcp://127.0.0.1:{stats_port}")
        options["stats"] = f"tcp://127.0.0.1:{stats_port}"
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{node_port}")
    stop = threading.Event()
    result: dict = {}
    assert consumer_ids(spec, "c") == ["sink"]
    opts = NodeOptions(node="c", bind=f"tcp://127.0.0.1:{node_port}", connect={"sink": f"tcp://127.0.0.1:{sink_port}"},
                       **options)
    th = threading.Thread(target=lambda: result.update(serve_node(spec, opts, driver=driver, should_stop=stop.is_set,
                                                                  install_signals=False)), daemon=True)
    th.start()
    try:
        yield {"spec": spec, "ctx": ctx, "node_port": node_port, "push": push, "sink": sink, "stats": stats_sock,
               "driver": driver, "thread": th, "result": result, "stop": stop}
    finally:
        stop.set()
        th.join(5)
        ctx.destroy(linger=0)


@pytest.fixture
def node_c(ports) -> Iterator[dict]:
    with _node_c_in_thread(ports, RecordingDriver(), join_capacity=2, stats_interval_s=0.05) as n:
        assert n["stats"].poll(5000), "the node never said hello"
        hello = unpack_stats(n["stats"].recv())
        assert hello is not None and hello["kind"] == "hello" and hello["node"] == "c"
        yield n


def _recv(sock: zmq.Socket, timeout_ms: int = 3000) -> bytes:
    assert sock.poll(timeout_ms), "nothing arrived"
    return sock.recv()


def test_fan_in_joins_parts_by_sequence_number(node_c) -> None:
    spec, push, sink, driver = node_c["spec"], node_c["push"], node_c["sink"], node_c["driver"]
    h = spec.hash_bytes
    pa, pb = spec.parts_into(2)
    xa = random_inputs(RESULT, (3,), 4, seed=1)
    xb = random_inputs(RESULT, (2,), 4, seed=2)
    xa2 = random_inputs(RESULT, (3,), 4, seed=3)
    # part 1 of batch 0 first, then a whole other batch, then part 0 of batch 0: joins by seq, not by arrival
    push.send(encode_frame(h, pb.producer, 2, 1, 0, xb, pb.wire, t0_ns=5))
    push.send(encode_frame(h, pa.producer, 2, 0, 4, xa2, pa.wire, t0_ns=9))
    push.send(encode_frame(h, pb.producer, 2, 1, 4, xb[::-1], pb.wire, t0_ns=9))
    push.send(encode_frame(h, pa.producer, 2, 0, 0, xa, pa.wire, t0_ns=3))
    sink_expect = {0: Expect(2, RESULT, (2,))}
    got = {}
    for _ in range(2):
        fr = decode_frame(_recv(sink), h, SINK, sink_expect)
        got[fr.seq] = fr
    np.testing.assert_array_equal(got[0].values, np.stack([xa[:, 0], xb[:, 1]], axis=1))
    np.testing.assert_array_equal(got[4].values, np.stack([xa2[:, 0], xb[::-1][:, 1]], axis=1))
    assert got[0].t0_ns == 3 and got[0].count == 4  # the batch keeps its earliest first-send time
    warm_up, *calls = driver.calls  # the node runs its driver once on zeros before it says hello
    assert warm_up.shape == (1, 5) and not warm_up.any()
    assert len(calls) == 2 and all(c.shape == (4, 5) for c in calls)


def test_bad_frames_are_counted_and_never_reach_the_driver(node_c) -> None:
    spec, push, sink, driver = node_c["spec"], node_c["push"], node_c["sink"], node_c["driver"]
    h = spec.hash_bytes
    pa, pb = spec.parts_into(2)
    xa = random_inputs(RESULT, (3,), 2, seed=4)
    good = encode_frame(h, pa.producer, 2, 0, 10, xa, pa.wire)
    bad_crc = bytearray(good)
    bad_crc[-9] ^= 0x01
    push.send(bytes(bad_crc))
    push.send(encode_frame(bytes(8), pa.producer, 2, 0, 10, xa, pa.wire))  # another plan
    push.send(encode_frame(h, pa.producer, 2, 0, 10, random_inputs(RESULT, (4,), 2), pa.wire))  # wrong shape
    push.send(encode_frame(h, pa.producer, 2, 0, 10, xa, FixedType(16, 6)))  # wrong type
    push.send(encode_frame(h, pa.producer, 1, 0, 10, xa, pa.wire))  # meant for node b
    push.send(encode_frame(h, SOURCE, 2, 0, 10, xa, pa.wire))  # from the wrong producer
    push.send(b"not a frame at all")
    # three incomplete batches with join capacity 2: the oldest is evicted
    for seq in (20, 30, 40):
        push.send(encode_frame(h, pa.producer, 2, 0, seq, xa, pa.wire))
    # a part whose count disagrees with its partner's
    push.send(encode_frame(h, pb.producer, 2, 1, 40, random_inputs(RESULT, (2,), 3), pb.wire))
    # a STOP that does not come from the source, and a frame of no samples
    push.send(_pack(KIND_STOP, h, pa.producer, 2, 0, 0, 0, 0, FixedType(8, 8), (), b""))
    push.send(encode_frame(h, pa.producer, 2, 0, 50, np.zeros((0, 3)), pa.wire))
    time.sleep(0.3)
    assert node_c["thread"].is_alive()  # the forged STOP did not end the node
    push.send(encode_stop(h, 2))
    node_c["thread"].join(5)
    res = node_c["result"]
    assert res["rejected"] == {"crc": 1, "plan_hash": 1, "shape": 1, "type": 1, "destination": 1, "part": 1,
                               "truncated": 1, "join": 1, "stop": 1, "count": 1}
    assert res["rejected_total"] == 10 and res["join_evicted"] == 1 and res["frames"] == 0
    assert len(driver.calls) == 1 and not driver.calls[0].any() and driver.closed  # the warm-up only
    assert not sink.poll(100)
    # statistics: periodic ones then the final one, all from this node
    kinds = []
    while node_c["stats"].poll(200):
        d = unpack_stats(node_c["stats"].recv())
        kinds.append(d["kind"])
    assert kinds[-1] == "final"


def test_oversize_frames_and_floods_leave_the_node_working_and_its_join_bounded(ports) -> None:
    """With the run's batch known, a frame larger than any legitimate one is refused by ZeroMQ before
    it is read (the sender is dropped, counted as ``disconnect``); a flood of incomplete batches is held within the join
    buffer's byte bound; good frames still go through."""
    with _node_c_in_thread(ports, RecordingDriver(), stats=False, max_batch=4, join_capacity=10_000,
                           join_bytes=4096) as n:
        spec, ctx, node_port, sink, result = n["spec"], n["ctx"], n["node_port"], n["sink"], n["result"]
        h = spec.hash_bytes
        pa, pb = spec.parts_into(2)
        attacker = ctx.socket(zmq.PUSH)
        attacker.connect(f"tcp://127.0.0.1:{node_port}")
        attacker.send(b"\0" * (48 << 20))  # 48 MiB: never read
        flood = ctx.socket(zmq.PUSH)
        flood.connect(f"tcp://127.0.0.1:{node_port}")
        xa = random_inputs(RESULT, (3,), 4, seed=7)
        for seq in range(1000):  # half batches that never complete: 4 x 3 float64 = 96 B each
            flood.send(encode_frame(h, pa.producer, 2, 0, 1000 + seq, xa, pa.wire))
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{node_port}")
        xb = random_inputs(RESULT, (2,), 4, seed=8)
        push.send(encode_frame(h, pa.producer, 2, 0, 0, xa, pa.wire))
        push.send(encode_frame(h, pb.producer, 2, 1, 0, xb, pb.wire))
        fr = decode_frame(_recv(sink, 10000), h, SINK, {0: Expect(2, RESULT, (2,))})
        assert fr.seq == 0 and fr.count == 4
        time.sleep(HANGUP_GRACE_S + 0.3)  # let the rest of the flood in; a hang-up this old is counted
    # the 48 MiB frame was never received (ZeroMQ dropped it unread and closed its connection); the flood
    # came in, and the join buffer held at most 4096 bytes of it (42 half batches of 96 B), the oldest evicted
    assert result["rejected"] == {"disconnect": 1} and result["frames"] == 1
    held = result["received"] - 2 - result["join_evicted"]
    assert result["received"] > 500 and 0 <= held <= 4096 // 96


def test_stop_via_should_stop_and_idle_exit(ports) -> None:
    spec = _spec()
    port, sink_port = ports(2)
    t0 = time.monotonic()
    res = serve_node(spec, NodeOptions(node="c", bind=f"tcp://127.0.0.1:{port}",
                                       connect={"": f"tcp://127.0.0.1:{sink_port}"}, idle_exit_s=0.3),
                     driver=RecordingDriver(), install_signals=False)
    assert 0.3 <= time.monotonic() - t0 < 5 and res["frames"] == 0
    with pytest.raises(Exception, match="no --connect address"):
        serve_node(spec, NodeOptions(node="c", bind=f"tcp://127.0.0.1:{port}"), driver=RecordingDriver(),
                   install_signals=False)


@pytest.mark.slow
def test_a_node_runs_without_keras_tensorflow_or_hls4ml(tmp_path, ports) -> None:
    """What a PYNQ board runs: ``split4ml node pipeline.json`` with those packages made unimportable."""
    import json
    import subprocess
    import sys

    from split4ml.runtime.drivers import save_reference_model
    from split4ml.stages import linear_pipeline

    st = dense_stage(0, (6, 4))
    spec = spec_from_pipeline(linear_pipeline([st]))
    path = spec.with_artifacts({"stage_0": {"reference": str(save_reference_model(st, tmp_path / "s.npz"))}}).write(
        tmp_path / "pipeline.json")
    (sink_port,) = ports(1)
    argv = ["split4ml", "node", str(path), "--stage", "stage_0", "--driver", "reference", "--bind", "tcp://127.0.0.1:0",
            "--connect", f"sink=tcp://127.0.0.1:{sink_port}", "--idle-exit", "0.3", "--json"]
    code = ("import sys\nfor m in ('hls4ml', 'keras', 'tensorflow', 'torch'):\n    sys.modules[m] = None\n"
            f"sys.argv = {argv!r}\nfrom split4ml.cli import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["kind"] == "final" and res["node"] == "stage_0" and res["frames"] == 0


@pytest.mark.slow
def test_node_memory_stays_flat_under_oversize_frames_and_a_flood(tmp_path, ports) -> None:
    """The audit's attack on a real node process: six 48 MiB frames and a flood of 50,000 small garbage
    frames. With the run's batch given (``--max-batch``) the big frames are dropped unread and the
    flood is rejected frame by frame: the node's peak resident memory grows by less than 16 MiB
    (without the limit, each 48 MiB frame is read into memory before it is rejected)."""
    import subprocess
    import sys

    from split4ml.runtime.drivers import save_reference_model
    from split4ml.stages import linear_pipeline

    st = dense_stage(0, (6, 4))
    spec = spec_from_pipeline(linear_pipeline([st]))
    path = spec.with_artifacts({"stage_0": {"reference": str(save_reference_model(st, tmp_path / "s.npz"))}}).write(
        tmp_path / "pipeline.json")
    node_port, sink_port = ports(2)
    proc = subprocess.Popen([sys.executable, "-m", "split4ml.cli", "node", str(path), "--stage", "stage_0", "--driver",
                             "reference", "--bind", f"tcp://127.0.0.1:{node_port}", "--connect",
                             f"sink=tcp://127.0.0.1:{sink_port}", "--max-batch", "8", "--idle-exit", "30", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def rss_mib() -> float:
        """The node's peak resident memory so far (VmHWM)."""
        for line in open(f"/proc/{proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{node_port}")
        sink = ctx.socket(zmq.PULL)
        sink.bind(f"tcp://127.0.0.1:{sink_port}")
        part = spec.parts_into(0)[0]
        h = spec.hash_bytes
        x = random_inputs(part.wire, (6,), 2, seed=1)
        push.send(encode_frame(h, part.producer, 0, 0, 0, x, part.wire))  # the node is up once this comes back
        assert sink.poll(30000), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no answer"
        sink.recv()
        before = rss_mib()
        for _ in range(6):
            big = ctx.socket(zmq.PUSH)  # each oversize sender is dropped: a new connection for each
            big.connect(f"tcp://127.0.0.1:{node_port}")
            big.send(b"\0" * (48 << 20))
        for _ in range(50_000):
            push.send(b"garbage".ljust(100, b"."))
        push.send(encode_frame(h, part.producer, 0, 0, 2, x, part.wire))
        assert sink.poll(30000), "the node stopped answering"
        sink.recv()
        time.sleep(0.5)
        grown = rss_mib() - before
        assert grown < 16, f"the node's peak grew by {grown:.1f} MiB"
    finally:
        proc.kill()
        proc.wait(10)
        ctx.destroy(linger=0)


def test_a_long_driver_call_keeps_the_heartbeat_going(ports) -> None:
    """A node whose driver takes longer than several statistics periods still reports (from its heartbeat
    thread), so the launcher does not take a slow board for a hung one."""
    class Slow(RecordingDriver):
        def predict(self, x):
            if len(self.calls) >= 1:  # not the warm-up
                time.sleep(1.5)
            return super().predict(x)

    with _node_c_in_thread(ports, Slow(), stats_interval_s=0.1) as n:
        spec, push, sink, stats = n["spec"], n["push"], n["sink"], n["stats"]
        assert stats.poll(5000)  # hello
        h = spec.hash_bytes
        pa, pb = spec.parts_into(2)
        push.send(encode_frame(h, pa.producer, 2, 0, 0, random_inputs(RESULT, (3,), 2, seed=1), pa.wire))
        push.send(encode_frame(h, pb.producer, 2, 1, 0, random_inputs(RESULT, (2,), 2, seed=2), pb.wire))
        time.sleep(0.3)  # the driver call has begun
        while stats.poll(0):  # what was sent before it
            stats.recv()
        gaps, last = [], time.monotonic()
        while not sink.poll(0):
            assert stats.poll(2000), "no statistics for 2 s during the driver call"
            stats.recv()
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        assert len(gaps) >= 5 and max(gaps) < 0.5, gaps


def test_a_restarted_node_ends_only_its_own_hung_predecessor() -> None:
    """``--replaces PID``: a stopped process whose command line is ``node --stage`` this stage is killed;
    any other process with that pid (reused) is left alone."""
    import signal
    import subprocess
    import sys

    from split4ml.runtime.node import end_predecessor

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    hung = subprocess.Popen([*sleeper, "node", "plan.json", "--stage", "stage_1"])
    other = subprocess.Popen([*sleeper, "node", "plan.json", "--stage", "stage_2"])
    try:
        os.kill(hung.pid, signal.SIGSTOP)
        assert not end_predecessor(other.pid, "stage_1", 1)  # another stage's node
        assert not end_predecessor(os.getpid(), "stage_1", 1)
        assert end_predecessor(hung.pid, "stage_1", 1)
        assert hung.wait(5) == -signal.SIGKILL
        assert other.poll() is None
        assert not end_predecessor(hung.pid, "stage_1", 1)  # gone: nothing to do
    finally:
        for p in (hung, other):
            if p.poll() is None:
                p.kill()
                p.wait(5)
