"""Hosts files: parsing, the printed node commands, and runs whose nodes are started as the file says."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_helpers import dense_stage

from split4ml.errors import RuntimeFault
from split4ml.runtime import RunOptions
from split4ml.runtime.hosts import format_launches, host_launches, hosts_from_dict, read_hosts, run_hosts
from split4ml.runtime.run import STEP_STREAM
from split4ml.runtime.security import LAUNCHER, make_keys
from split4ml.runtime.spec import spec_from_pipeline
from split4ml.stages import linear_pipeline
from split4ml.verify import random_inputs

BOARDS = {"controller": "10.0.0.1", "workdir": "/home/xilinx/run",
          "nodes": {"stage_0": {"host": "10.0.0.2", "bitstream": "bits/s0.bit"},
                    "stage_1": {"host": "10.0.0.3", "port": 6000, "ssh": "me@board3"}}}


def _spec():
    return spec_from_pipeline(linear_pipeline([dense_stage(0, (6, 5)), dense_stage(1, (5, 3), seed=1)]))


def test_hosts_file_and_printed_commands(tmp_path) -> None:
    path = tmp_path / "hosts.yaml"
    import yaml

    path.write_text(yaml.safe_dump(BOARDS))
    h = read_hosts(path)
    assert (h.launch, h.sink_address, h.stats_address) == ("print", "tcp://10.0.0.1:5600", "tcp://10.0.0.1:5601")
    assert h.nodes["stage_1"].address == "tcp://10.0.0.3:6000" and h.nodes["stage_0"].driver == "pynq"
    launches = host_launches(h, _spec(), "pipeline.json", None, RunOptions())
    lines = format_launches(launches)
    assert lines[0].splitlines() == [
        "# stage_0 on 10.0.0.2",
        "split4ml node pipeline.json --stage stage_0 --driver pynq --bind tcp://10.0.0.2:5555 --connect "
        "stage_1=tcp://10.0.0.3:6000 --stats tcp://10.0.0.1:5601 --bitstream bits/s0.bit --max-batch 8"]
    assert "--connect sink=tcp://10.0.0.1:5600" in lines[1] and "--bitstream stage_1.bit" in lines[1]
    ssh = launches[1]
    ssh.mode = "ssh"
    cmd = ssh.command(2)
    assert cmd[:4] == ["ssh", "-o", "BatchMode=yes", "me@board3"]
    assert cmd[4].startswith("cd /home/xilinx/run && split4ml node pipeline.json --stage stage_1")
    assert cmd[4].endswith("--bitstream stage_1.bit --max-batch 8 --incarnation 2 --quiet --json")


def test_a_hosts_run_needs_keys_unless_the_file_says_insecure(mlp, tmp_path) -> None:
    pipeline, _, whole = mlp
    h = hosts_from_dict(BOARDS)
    with pytest.raises(RuntimeFault, match="split4ml keys DIR --plan PLAN.*insecure: true"):
        run_hosts(pipeline, random_inputs(whole.input_type, whole.input_shape, 4), h, whole=whole, out_dir=tmp_path)
    assert "plain TCP" in hosts_from_dict({**BOARDS, "insecure": True}).warnings()[0]
    with pytest.raises(RuntimeFault, match="insecure: expected true or false"):
        hosts_from_dict({**BOARDS, "insecure": "yes"})


def test_every_socket_binds_its_own_address_unless_the_file_asks_for_all_interfaces() -> None:
    h = hosts_from_dict(BOARDS)
    assert h.bind_host is None and h.warnings() == []
    assert h.node_bind("stage_1") == "tcp://10.0.0.3:6000" and h.launcher_bind(5600) == "tcp://10.0.0.1:5600"
    wide = hosts_from_dict({**BOARDS, "bind": "0.0.0.0"})
    assert wide.node_bind("stage_1") == "tcp://0.0.0.0:6000" and wide.launcher_bind(5601) == "tcp://0.0.0.0:5601"
    assert "all interfaces" in wide.warnings()[0]
    with pytest.raises(RuntimeFault, match="bind"):
        hosts_from_dict({**BOARDS, "bind": "0.0.0.0\nrm -rf /"})


@pytest.mark.parametrize(("change", "match"), [
    ({"controller": None}, "controller"), ({"launch": "telepathy"}, "launch"), ({"nodes": {}}, "nodes"),
    ({"nodes": {"stage_0": {"port": 1}}}, "host"), ({"nodes": {"stage_0": {"host": "h", "port": 70000}}}, "port"),
    ({"nodes": {"stage_0": {"host": "h", "driver": "gpu"}}}, "driver"), ({"colour": 1}, "unknown field"),
    ({"nodes": {"stage_0": {"host": "h", "cores": 2}}}, "unknown field"),
])
def test_hosts_file_errors_name_the_field(change, match) -> None:
    with pytest.raises(RuntimeFault, match=match):
        hosts_from_dict({**BOARDS, **change})


def test_every_node_must_be_placed() -> None:
    h = hosts_from_dict({**BOARDS, "nodes": {"stage_0": {"host": "a"}, "stage_7": {"host": "b"}}})
    with pytest.raises(RuntimeFault, match=r"\['stage_1'\] are missing and \['stage_7'\]"):
        host_launches(h, _spec(), "pipeline.json", None, RunOptions())


def _local_hosts(ports: list[int], drivers: dict[str, str], launch: str, command: str = "split4ml",
                 keys: Path | None = None) -> dict:
    """A hosts mapping on loopback; with ``keys`` (made here for the launcher and the nodes) every link is
    CURVE, else the file says ``insecure: true``."""
    extra: dict = {"insecure": True}
    if keys is not None:
        make_keys(keys, [LAUNCHER, *drivers])
        extra = {"keys": str(keys)}
    return {**extra, "controller": "127.0.0.1", "bind_host": "127.0.0.1", "launch": launch, "command": command,
            "sink_port": ports[0], "stats_port": ports[1],
            "nodes": {nid: {"host": "127.0.0.1", "port": p, "driver": d}
                      for (nid, d), p in zip(drivers.items(), ports[2:], strict=False)}}


@pytest.mark.slow
def test_local_hosts_with_a_reference_node(mlp, tmp_path, ports) -> None:
    """Nodes started as local processes from a hosts file; stage_1 runs the numpy reference driver."""
    pipeline, _, whole = mlp
    h = hosts_from_dict(_local_hosts(ports(5), {"stage_0": "csim", "stage_1": "reference", "stage_2": "csim"}, "local",
                                     keys=tmp_path / "keys"))
    x = random_inputs(whole.input_type, whole.input_shape, 100, seed=7)
    rep = run_hosts(pipeline, x, h, whole=whole, options=RunOptions(batch=10, stall_timeout_s=20, timeout_s=90),
                    out_dir=tmp_path)
    assert rep.ok and rep.encrypted, rep.as_dict()
    assert [s.driver for s in rep.stages] == ["csim", "reference", "csim"]
    assert (tmp_path / "pipeline.json").is_file()


@pytest.mark.slow
def test_nodes_started_by_hand_and_one_that_dies(mlp, tmp_path, ports) -> None:
    """``launch: print``: the launcher only prints the commands; here the test runs them. Killing a node
    started by hand is noticed by its silence, and the run stops naming it."""
    pipeline, _, whole = mlp
    command = f"{shlex.quote(sys.executable)} -m split4ml.cli"
    h = hosts_from_dict(_local_hosts(ports(5), {"stage_0": "csim", "stage_1": "csim", "stage_2": "csim"}, "print", command,
                                     keys=tmp_path / "keys"))
    procs: list[subprocess.Popen] = []
    printed: list[str] = []

    def start(launches) -> None:  # what a person would do with the printed lines
        printed.extend(format_launches(launches))
        for la in launches:
            procs.append(subprocess.Popen(la.command(0), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))

    try:
        x = random_inputs(whole.input_type, whole.input_shape, 60, seed=8)
        rep = run_hosts(pipeline, x, h, whole=whole,
                        options=RunOptions(batch=6, stall_timeout_s=20, timeout_s=90, start_timeout_s=30),
                        announce=start, out_dir=tmp_path)
        assert rep.ok, rep.as_dict()
        assert len(printed) == 3 and "pipeline.json --stage stage_0 --driver csim" in printed[0]
        for p in procs:  # the launcher stopped them at the end of the run
            assert p.wait(10) == 0
        procs.clear()

        def kill_when_streaming(step: str, done: int, total: int) -> None:
            if step == STEP_STREAM and done >= 200 and procs[1].poll() is None:
                os.kill(procs[1].pid, signal.SIGKILL)

        x = random_inputs(whole.input_type, whole.input_shape, 20000, seed=9)
        t0 = time.monotonic()
        rep = run_hosts(pipeline, x, h, whole=whole, announce=start, out_dir=tmp_path, progress=kill_when_streaming,
                        options=RunOptions(batch=2, heartbeat_timeout_s=1.5, stall_timeout_s=30, timeout_s=90,
                                           start_timeout_s=30))
        assert time.monotonic() - t0 < 30
        assert not rep.completed and rep.failure is not None
        assert rep.failure.startswith(f"stage_1 (pid {procs[1].pid}) silent for more than 1.5 s after ")
        assert rep.delivered < 20000 and len(rep.in_flight) > 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


FAKE_SSH = """#!/bin/bash
# ssh -o BatchMode=yes DEST 'REMOTE': runs REMOTE here in a session of its own, as sshd would on a board.
# Killing this client leaves REMOTE running, as with a real ssh client and no terminal.
setsid bash -c "${@: -1}" &
echo $! >> "$FAKE_SSH_LOG"
wait $!
"""


@pytest.mark.slow
def test_a_hung_ssh_node_is_replaced_and_its_old_process_ended(mlp, tmp_path, ports, monkeypatch) -> None:
    """``launch: ssh`` under ``--restart``: a node that hangs (SIGSTOP) keeps its port on its host after the
    launcher kills its ssh client. The node started in its place ends it (``--replaces``) before
    binding, and the run completes with every sample exactly once."""
    from split4ml.runtime import Chaos

    pipeline, _, whole = mlp
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    command = f"{shlex.quote(sys.executable)} -m split4ml.cli"
    d = _local_hosts(ports(5), {"stage_0": "csim", "stage_1": "csim", "stage_2": "csim"}, "ssh", command)
    h = hosts_from_dict({**d, "workdir": str(tmp_path)})
    n = 120
    try:
        rep = run_hosts(pipeline, random_inputs(whole.input_type, whole.input_shape, n, seed=4), h, whole=whole,
                        out_dir=tmp_path,
                        options=RunOptions(batch=4, restart=True, chaos=(Chaos.parse("hang:stage_1@5"),),
                                           heartbeat_timeout_s=2.0, resend_after_s=1.0, stall_timeout_s=30,
                                           timeout_s=120, start_timeout_s=60))
        assert rep.ok, rep.as_dict()
        assert (rep.delivered, rep.lost, rep.restarts) == (n, 0, 1)
        assert dict(rep.rejected_by) == {}, rep.rejected_by  # stage_2 saw stage_1 go: a fault, not an attack
        hung = [f for f in rep.faults if f.startswith("stage_1 (pid") and "silent" in f]
        assert len(hung) == 1, rep.faults
        old = int(hung[0].split("(pid ", 1)[1].split(")", 1)[0])
        stat = Path(f"/proc/{old}/stat")
        gone = not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        assert gone, f"the hung stage_1 (pid {old}) is still running"
    finally:
        for pgid in (int(p) for p in log.read_text().split()) if log.exists() else ():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
