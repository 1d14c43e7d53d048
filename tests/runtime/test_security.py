"""CURVE on the runtime's links: key files, a node that talks only to the parties it knows, and an
emulated run with every link encrypted."""

from __future__ import annotations

import stat
import threading
import time

import pytest
import zmq
from runtime_helpers import RESULT, dense_stage

from split4ml.runtime.node import NodeOptions, serve_node
from split4ml.runtime.security import LAUNCHER, Keys, make_keys
from split4ml.runtime.spec import spec_from_pipeline
from split4ml.runtime.transport import HANGUP_GRACE_S
from split4ml.runtime.wire import SINK, Expect, decode_frame, encode_frame, encode_stop
from split4ml.stages import linear_pipeline
from split4ml.verify import random_inputs


def test_keys_layout_and_permissions(tmp_path) -> None:
    assert make_keys(tmp_path, [LAUNCHER, "stage_0"]) == [LAUNCHER, "stage_0"]
    assert make_keys(tmp_path, ["stage_0", "stage_1"]) == ["stage_1"]  # existing pairs are kept
    assert sorted(p.name for p in (tmp_path / "public").iterdir()) == ["launcher.key", "stage_0.key", "stage_1.key"]
    secret = tmp_path / "secret" / "stage_0.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o700
    k = Keys(tmp_path, "stage_0")
    assert len(k.allowed) == 3 and k.peer_key(LAUNCHER) in k.allowed
    with pytest.raises(Exception, match="no secret key for 'nobody'"):
        Keys(tmp_path, "nobody")


def test_a_node_with_keys_takes_frames_only_from_known_parties(tmp_path, ports) -> None:
    keys = tmp_path / "keys"
    make_keys(keys, [LAUNCHER, "stage_0"])
    make_keys(tmp_path / "other", [LAUNCHER])  # an attacker's own "launcher" key
    st = dense_stage(0, (4, 3))
    spec = spec_from_pipeline(linear_pipeline([st]), whole=dense_stage(-1, (4, 3)))
    node_port, sink_port = ports(2)

    class Echo:
        def predict(self, x):
            return x[:, :3]

        def close(self):
            pass

    ctx = zmq.Context()
    launcher = Keys(keys, LAUNCHER)
    launcher.start(ctx)
    sink = ctx.socket(zmq.PULL)
    launcher.server(sink)
    sink.bind(f"tcp://127.0.0.1:{sink_port}")
    result: dict = {}
    stop = threading.Event()
    opts = NodeOptions(node="stage_0", bind=f"tcp://127.0.0.1:{node_port}",
                       connect={"sink": f"tcp://127.0.0.1:{sink_port}"}, keys=str(keys), max_batch=8)
    th = threading.Thread(target=lambda: result.update(serve_node(spec, opts, driver=Echo(), should_stop=stop.is_set,
                                                                  install_signals=False)), daemon=True)
    th.start()
    try:
        h = spec.hash_bytes
        part = spec.parts_into(0)[0]
        x = random_inputs(RESULT, (4,), 2, seed=1)
        evil = ctx.socket(zmq.PUSH)
        evil_keys = Keys(tmp_path / "other", LAUNCHER)
        evil_keys.client(evil, LAUNCHER)
        evil.curve_serverkey = Keys(keys, "stage_0").public  # it knows the node's public key, not a trusted key
        evil.connect(f"tcp://127.0.0.1:{node_port}")
        evil.send(encode_frame(h, part.producer, 0, 0, 99, x, part.wire), zmq.NOBLOCK)
        plain = ctx.socket(zmq.PUSH)
        plain.connect(f"tcp://127.0.0.1:{node_port}")
        plain.send(encode_frame(h, part.producer, 0, 0, 98, x, part.wire), zmq.NOBLOCK)
        good = ctx.socket(zmq.PUSH)
        launcher.client(good, "stage_0")
        good.connect(f"tcp://127.0.0.1:{node_port}")
        good.send(encode_frame(h, part.producer, 0, 0, 7, x, part.wire))
        assert sink.poll(10000), "the trusted frame never came through"
        fr = decode_frame(sink.recv(), h, SINK, {0: Expect(0, RESULT, (3,))})
        assert fr.seq == 7
        time.sleep(0.5)
        assert not sink.poll(200)  # nothing from the attacker or the plain socket
        good.send(encode_stop(h, 0))
        th.join(5)
    finally:
        stop.set()
        th.join(5)
        launcher.stop()
        ctx.destroy(linger=0)
    assert result["frames"] == 1 and result["rejected"].get("key", 0) >= 1


@pytest.mark.slow
def test_emulated_run_with_every_link_encrypted(mlp, tmp_path) -> None:
    from split4ml.runtime import RunOptions, run_pipeline

    pipeline, _, whole = mlp
    make_keys(tmp_path / "keys", [LAUNCHER, *(n.id for n in pipeline.nodes)])
    n = 60
    rep = run_pipeline(pipeline, random_inputs(whole.input_type, whole.input_shape, n, seed=9), whole,
                       RunOptions(batch=4, keys=tmp_path / "keys", start_timeout_s=60.0, stall_timeout_s=20.0,
                                  timeout_s=90.0))
    d = rep.as_dict()
    assert rep.ok and d["encrypted"] is True and d["delivered"] == n, d


def test_keys_command_makes_the_plans_parties(tmp_path, monkeypatch, capsys) -> None:
    import json

    from cli_helpers import run_cli

    rc, out, _ = run_cli(monkeypatch, capsys, "keys", str(tmp_path / "k"), "--names", "launcher", "--names", "stage_0",
                         "--json")
    assert rc == 0 and json.loads(out)["written"] == ["launcher", "stage_0"]
    rc, _, err = run_cli(monkeypatch, capsys, "keys", str(tmp_path / "k"), "--names", "a b")
    assert rc == 2 and "only letters" in err
    rc, _, err = run_cli(monkeypatch, capsys, "keys", str(tmp_path / "k"))
    assert rc == 2 and "--plan" in err


@pytest.mark.slow
@pytest.mark.parametrize("curve", [False, True])
def test_attacks_on_a_running_pipeline_are_rejected_counted_and_lose_nothing(mlp, tmp_path, curve: bool) -> None:
    """Against real node processes on loopback, while a run starts: a forged STOP, a frame of no
    samples, an oversize frame, a flood of garbage, forged and malformed statistics. Plain: each is
    refused by the frame and statistics checks and counted in ``rejected_by`` (the oversize frame
    closes its connection unread: ``disconnect``). With CURVE: the attacker's unknown key is refused at the handshake (``key``) and
    nothing it sends arrives. Either way every sample arrives exactly once, bit-exact."""
    import json

    from split4ml.runtime import RunOptions, run_pipeline
    from split4ml.runtime.wire import KIND_STOP, _pack

    pipeline, _, whole = mlp
    keys = tmp_path / "keys"
    make_keys(keys, [LAUNCHER, *(n.id for n in pipeline.nodes)])
    make_keys(tmp_path / "evil", [LAUNCHER])
    spec = spec_from_pipeline(pipeline, whole)
    h = spec.hash_bytes
    target = spec.nodes[1]
    part = spec.parts_into(1)[0]
    known = Keys(keys, LAUNCHER)  # public keys are no secret: the attacker knows them
    evil = Keys(tmp_path / "evil", LAUNCHER)

    def attack(nodes, sink, stats) -> None:
        ctx = zmq.Context()
        try:
            def client(address: str, server: str) -> zmq.Socket:
                s = ctx.socket(zmq.PUSH)
                s.linger = 2000
                # a refused CURVE handshake can leave a PUSH with no pipe, where a blocking send waits
                # forever: the attacker gives up after a second instead of hanging the run
                s.sndtimeo = 1000
                if curve:
                    s.curve_secretkey, s.curve_publickey = evil.secret, evil.public
                    s.curve_serverkey = known.peer_key(server)
                s.connect(address)
                return s

            def send(s: zmq.Socket, data: bytes) -> None:
                try:
                    s.send(data)
                except zmq.Again:  # no pipe to queue on (refused handshake): nothing was sent
                    pass

            node = client(nodes[target.id], target.id)
            x = random_inputs(part.wire, part.expect.shape, 4, seed=3)
            send(node, _pack(KIND_STOP, h, 0, target.index, 0, 0, 0, 0, part.wire, (), b""))  # STOP from stage_0
            send(node, encode_frame(h, part.producer, target.index, 0, 0, x[:0], part.wire))  # no samples
            send(node, b"\0" * (8 << 20))  # oversize
            for _ in range(200):
                send(node, b"garbage".ljust(100, b"."))  # as long as a header, not a frame
            st = client(stats, LAUNCHER)
            send(st, b"{not json")
            send(st, json.dumps({"kind": "stats", "node": target.id, "pid": 1, "frames": 10**12}).encode())
            time.sleep(1.0)
        finally:
            ctx.destroy(linger=2000)
        # the attacker's hang-up is a disconnect the node counts only once it is HANGUP_GRACE_S old
        # (producers hang up when a run stops); on a fast machine the 80 samples can be through sooner
        time.sleep(HANGUP_GRACE_S + 0.5)

    n = 80
    rep = run_pipeline(pipeline, random_inputs(whole.input_type, whole.input_shape, n, seed=5), whole,
                       RunOptions(batch=4, keys=keys if curve else None, on_start=attack, start_timeout_s=60.0,
                                  stall_timeout_s=20.0, timeout_s=120.0))
    d = rep.as_dict()
    assert rep.ok and d["delivered"] == n and d["duplicated"] == 0 and d["encrypted"] is curve, d
    got = d["rejected_by"]
    if curve:
        assert got.get("key", 0) >= 2 and set(got) == {"key"}, got
    else:
        assert got["stop"] == 1 and got["count"] == 1 and got["magic"] == 200 and got["stats"] == 2, got
        # ZeroMQ drops the oversize frame's connection; the attacker's last hang-up counts the same
        assert 1 <= got["disconnect"] <= 2, got
        assert "key" not in got
