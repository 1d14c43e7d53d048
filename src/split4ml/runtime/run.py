"""The launcher: start every node, stream samples through the pipeline, check and measure.

:func:`run_pipeline` (``split4ml run PLAN --emulate``) compiles every stage and the whole model
(cache) *before* anything is timed, writes the runtime spec, starts one ``split4ml node`` process
per node (``csim`` driver by default) on 127.0.0.1, waits until every node has said ``hello``, and
then runs the source and the sink in the launcher process:

- **source**: cuts the samples into batches of ``batch`` samples (a frame carries one batch; the
  batch boundaries never change, so a re-sent batch is the same frame), keeps at most ``window``
  batches in flight (unacknowledged), and sends each consumer of the pipeline input its slice;
- **sink**: receives the pipeline output (joining the parts of a batch by sequence number when
  the output is a concatenation), drops samples it has already delivered (counted as
  ``duplicated``), stores the rest and acknowledges the batch to the source (both live in this
  process, so the acknowledgement is a function call);
- **faults**: a node process that exits is detected (``Popen.poll``) and named, e.g.
  ``stage_1 (pid 1234) exited with signal 9 (SIGKILL) after 12 frames``. With ``restart`` it is
  started again (same address); when it says ``hello`` the source re-sends every unacknowledged
  batch. A batch unacknowledged for longer than ``resend_after_s`` (or 4x the worst latency seen)
  is re-sent too (a frame rejected on the way is recovered this way). Without ``restart`` the run
  stops and the report says how many samples completed and which were in flight;
- **accounting**: a sample's latency runs from the first send of its batch to its delivery at the
  sink; throughput is delivered samples over the time from the first send to the last delivery;
  a node's busy fraction is its driver time over that same window.

Every wait is bounded: ``start_timeout_s`` for the nodes to come up, ``stall_timeout_s`` without
any delivery, and an overall ``timeout_s``. Nodes are stopped with a STOP frame (then SIGTERM,
then SIGKILL); they also exit by themselves when the launcher process is gone.

:func:`run_hosts` drives real hosts from a hosts file (:mod:`split4ml.runtime.hosts`): it prints
(or starts over ssh) the ``split4ml node`` command of each host, then runs the same source and sink.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from ..errors import DataError, FrameError, RuntimeFault
from ..stages import Pipeline, Stage
from .pace import PaceModel, Server, choose_factor, link_s, time_node_drivers
from .spec import RuntimeSpec, bundle_libraries, spec_from_pipeline
from .transport import (
    DEFAULT_HWM,
    MAX_STATS_BYTES,
    HangUps,
    PortReservation,
    bind,
    connect,
    make_socket,
    unpack_stats,
)
from .wire import SINK, SOURCE, decode_frame, encode_frame, encode_stop, max_frame_bytes

Progress = Callable[[str, int, int], None]

STEP_COMPILE = "compile C-simulations"
STEP_START = "start nodes"
STEP_STREAM = "stream samples"


# ------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Chaos:
    """A fault injected on purpose: ``kill`` node ``node`` after its ``after``-th frame, ``hang`` it
    there (SIGSTOP: alive but silent), or ``corrupt`` its ``after``-th outgoing frame (one payload
    byte flipped after the CRC)."""

    action: str
    node: str
    after: int

    @classmethod
    def parse(cls, text: str) -> Chaos:
        """``kill:STAGE@N``, ``hang:STAGE@N`` or ``corrupt:STAGE@N`` (STAGE: a node id such as ``stage_1``,
        or its index)."""
        m = re.fullmatch(r"\s*(kill|hang|corrupt):([^@\s]+)@(\d+)\s*", text)
        if not m or int(m[3]) < 1:
            raise RuntimeFault(f"--chaos {text!r}: expected kill:STAGE@N, hang:STAGE@N or corrupt:STAGE@N with "
                               "N >= 1, e.g. kill:stage_1@20")
        return cls(m[1], m[2], int(m[3]))


@dataclass(frozen=True)
class RunOptions:
    """Knobs of a run (defaults suit an emulated pipeline on one machine).

    Attributes:
        batch: samples per frame.
        window: batches in flight at most (default ``2 * nodes + 2``).
        hwm: high-water mark of every data socket, frames.
        driver: driver of the emulated nodes (``csim`` or ``reference``).
        reference_mode: ``fixed`` or ``float`` for the reference driver.
        restart: restart a node that dies and complete the run.
        max_restarts: restarts allowed per node.
        chaos: faults to inject.
        resend_after_s: re-send a batch unacknowledged for this long (at least 4x the worst latency).
        start_timeout_s: time for every node to say hello.
        stall_timeout_s: stop when no sample is delivered for this long.
        timeout_s: stop after this long in total (None: no limit besides the stall timeout).
        heartbeat_timeout_s: a node that said hello is declared dead after this long without
            statistics (it reports every 0.25 s): stopped, hung, or its host gone. A local process is
            killed first; with ``restart`` it is started again.
        workdir: where the spec and node logs go (default: a temporary directory, removed after a
            successful run).
        host: loopback address of emulated nodes.
        pace: pace every node, the source and the sink to these figures of the model
            (:mod:`split4ml.runtime.pace`); a model without a factor gets one chosen from the time the
            drivers take. None: everything runs as fast as it can.
        keys: a keys directory (:mod:`split4ml.runtime.security`): every link CURVE-encrypted and
            authenticated (the launcher is the party ``launcher``); None: plain TCP.
        on_start: called once every node is up, before the first sample is sent, with the nodes'
            addresses, the sink's and the statistics' (for drills and attack tests).
        results: the sink's journal directory (:mod:`split4ml.runtime.results`): every delivered batch
            is written there as it arrives. With ``resume``, the batches the journal already holds are
            not sent again.
    """

    batch: int = 8
    window: int | None = None
    hwm: int = DEFAULT_HWM
    driver: str = "csim"
    reference_mode: str = "fixed"
    restart: bool = False
    max_restarts: int = 3
    chaos: tuple[Chaos, ...] = ()
    resend_after_s: float = 2.0
    start_timeout_s: float = 60.0
    stall_timeout_s: float = 30.0
    timeout_s: float | None = None
    heartbeat_timeout_s: float = 10.0
    workdir: Path | None = None
    host: str = "127.0.0.1"
    pace: PaceModel | None = None
    keys: Path | None = None
    on_start: Callable[[Mapping[str, str], str, str], None] | None = None
    results: Path | None = None
    resume: bool = False


# ------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class StageReport:
    """What one node did during the run (summed over its restarts): frames and samples computed,
    seconds in its driver (``busy_s``; ``busy_fraction`` of the streaming time), CPU seconds of
    its process (``cpu_s``, start-up and warm-up included), seconds waiting to send (``send_s``:
    backpressure), frames it rejected, and restarts."""

    id: str
    frames: int
    samples: int
    busy_s: float
    busy_fraction: float
    rejected: int
    restarts: int
    driver: str = ""
    cpu_s: float = 0.0
    send_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "frames": self.frames, "samples": self.samples, "busy_s": self.busy_s,
                "busy_fraction": self.busy_fraction, "rejected": self.rejected, "restarts": self.restarts,
                "driver": self.driver, "cpu_s": self.cpu_s, "send_s": self.send_s}


@dataclass(frozen=True, eq=False)
class RunReport:
    """Outcome of a run.

    ``delivered`` counts distinct samples that reached the sink (each is delivered once);
    ``lost`` = ``samples - delivered``; ``duplicated`` counts copies that reached the sink after
    their sample had been delivered (dropped there); ``rejected`` counts frames rejected by any
    node or the sink. ``bit_exact`` is true only when every sample was delivered and equals the
    reference output. ``in_flight`` lists the samples sent but not delivered when the run stopped.
    """

    samples: int
    delivered: int
    lost: int
    duplicated: int
    rejected: int
    bit_exact: bool
    mismatched_samples: int
    throughput_per_s: float
    latency_us_p50: float
    latency_us_p99: float
    stages: tuple[StageReport, ...]
    restarts: int
    sent_frames: int
    received_frames: int
    resent_frames: int
    rejected_by: Mapping[str, int]
    wall_s: float
    batch: int
    reference: str
    faults: tuple[str, ...] = ()
    failure: str | None = None
    in_flight: tuple[int, ...] = ()
    not_sent: int = 0
    workdir: str | None = None
    outputs: np.ndarray | None = field(default=None, repr=False)
    #: delivered samples after the first delivered frame over the time from that delivery to the last
    #: (the pipeline's rate once it is full; 0 with fewer than two deliveries)
    steady_throughput_per_s: float = 0.0
    #: the pace factor of a paced run (None: not paced), what the model predicts at that pace, and
    #: the frames whose driver outran its paced fabric time (the factor was too small for them)
    pace: float | None = None
    predicted_throughput_per_s: float | None = None
    pace_overruns: int = 0
    pace_bottleneck: str | None = None
    encrypted: bool = False
    #: samples taken from the journal of an earlier run (--resume), and the journal's directory
    resumed: int = 0
    results: str | None = None

    @property
    def completed(self) -> bool:
        return self.delivered == self.samples and self.failure is None

    @property
    def ok(self) -> bool:
        return self.completed and self.bit_exact

    def as_dict(self) -> dict[str, Any]:
        """The ``run --json`` contract (keys are only ever added)."""
        return {
            "samples": self.samples, "delivered": self.delivered, "lost": self.lost, "duplicated": self.duplicated,
            "rejected": self.rejected, "bit_exact": self.bit_exact, "throughput_per_s": self.throughput_per_s,
            "latency_us": {"p50": self.latency_us_p50, "p99": self.latency_us_p99},
            "stages": [s.as_dict() for s in self.stages], "restarts": self.restarts,
            "completed": self.completed, "mismatched_samples": self.mismatched_samples,
            "sent_frames": self.sent_frames, "received_frames": self.received_frames,
            "resent_frames": self.resent_frames, "rejected_by": dict(self.rejected_by), "wall_s": self.wall_s,
            "batch": self.batch, "reference": self.reference, "faults": list(self.faults), "failure": self.failure,
            "in_flight": list(self.in_flight), "not_sent": self.not_sent, "workdir": self.workdir,
            "steady_throughput_per_s": self.steady_throughput_per_s, "pace": self.pace,
            "predicted_throughput_per_s": self.predicted_throughput_per_s, "pace_overruns": self.pace_overruns,
            "pace_bottleneck": self.pace_bottleneck,
            # CURVE on every link (--keys), or plain TCP: neither encrypted nor authenticated
            "encrypted": self.encrypted,
            "resumed": self.resumed, "results": self.results,
            "pace_ratio": (self.steady_throughput_per_s / self.predicted_throughput_per_s
                           if self.predicted_throughput_per_s else None),
        }


# ------------------------------------------------------------------------------------- node handles
@dataclass
class NodeLaunch:
    """How one node is started and reached.

    ``argv`` is its ``split4ml node`` command; ``mode`` is ``local`` (a child process), ``ssh``
    (``ssh DEST 'cd WORKDIR && COMMAND'``) or ``manual`` (someone else starts it: printed only);
    ``address`` is where its input is reached from the launcher and its producers.
    """

    node: str
    argv: list[str]
    address: str
    mode: str = "local"
    ssh: str | None = None
    workdir: str | None = None
    chaos_args: list[str] = field(default_factory=list)

    def command(self, incarnation: int = 0, chaos: bool = True, replaces: int | None = None) -> list[str]:
        """The command line to run (``--quiet --json`` when the launcher starts it: the output goes to a log);
        ``replaces``: the pid of the node's previous process on its host, which the new one ends first."""
        argv = [*self.argv, *(["--incarnation", str(incarnation)] if incarnation else []),
                *(["--replaces", str(replaces)] if replaces is not None else []),
                *(self.chaos_args if chaos else []), *(["--quiet", "--json"] if self.mode != "manual" else [])]
        if self.mode == "ssh":
            import shlex

            remote = " ".join(shlex.quote(a) for a in argv)
            if self.workdir:
                remote = f"cd {shlex.quote(self.workdir)} && {remote}"
            return ["ssh", "-o", "BatchMode=yes", str(self.ssh), remote]
        return argv


@dataclass
class _NodeState:
    launch: NodeLaunch
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    incarnation: int = 0
    up: bool = False
    last_seen: float = 0.0
    pid: int | None = None
    restarts: int = 0
    #: latest statistics of every process this node has been, by (incarnation, pid)
    stats: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)

    def total(self, key: str) -> float:
        return sum(float(s.get(key, 0)) for s in self.stats.values())

    @property
    def frames(self) -> int:
        return int(self.total("frames"))

    @property
    def current(self) -> dict[str, Any]:
        """Latest statistics of the node's current process (empty before its hello)."""
        return self.stats.get((self.incarnation, self.pid or 0), {})


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        return f"exited with signal {-code} ({name})"
    return f"exited with code {code}"


def _log_tail(path: Path | None, lines: int = 3) -> str:
    if path is None or not path.is_file():
        return ""
    rows = [r.strip() for r in path.read_text(errors="replace").splitlines() if r.strip()]
    return " | ".join(rows[-lines:])


# ------------------------------------------------------------------------------------- the launcher
class _Launcher:
    def __init__(self, spec: RuntimeSpec, launches: Sequence[NodeLaunch], options: RunOptions,
                 progress: Progress | None, logdir: Path, sink_bind: str, stats_bind: str,
                 announce: Callable[[list[NodeLaunch]], None] | None = None) -> None:
        self.spec = spec
        self.opts = options
        self.progress = progress
        self.logdir = logdir
        self.states = {la.node: _NodeState(la) for la in launches}
        self.ctx = zmq.Context()
        self.keys = None
        if options.keys is not None:
            from .security import LAUNCHER, Keys

            self.keys = Keys(options.keys, LAUNCHER)
            self.keys.start(self.ctx)
        self.sink = make_socket(self.ctx, zmq.PULL, max(options.hwm, 4 * self._window()),
                                max_bytes=max_frame_bytes([p.expect for p in spec.parts_into(SINK)],
                                                          max(1, int(options.batch))))
        self.sink_hangups = HangUps(self.sink)  # before bind: every connection is seen
        self.stats = make_socket(self.ctx, zmq.PULL, 10000, max_bytes=MAX_STATS_BYTES)
        if self.keys is not None:
            self.keys.server(self.sink)
            self.keys.server(self.stats)
        self.sink_address = bind(self.sink, sink_bind, "sink")
        self.stats_address = bind(self.stats, stats_bind, "statistics")
        self.announce = announce
        self.faults: list[str] = []
        self.hellos: list[_NodeState] = []  # nodes that said hello and were not handled yet
        #: statistics messages dropped: malformed, implausible, or not from a process of their node
        self.stats_rejected = 0
        #: batches and samples the source has sent, re-sends included (bounds on a node's counters)
        self.sent_batches = 0
        self.sent_samples = 0

    def _window(self) -> int:
        if self.opts.window:
            return self.opts.window
        w = 2 * len(self.spec.nodes) + 2
        return max(w, self.opts.pace.frames_in_flight()) if self.opts.pace is not None else w

    def report(self, step: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(step, done, total)

    # ---------------------------------------------------------------- processes
    def _spawn(self, st: _NodeState, chaos: bool, replaces: int | None = None) -> None:
        la = st.launch
        st.up = False
        if la.mode == "manual":
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        st.log = self.logdir / f"{la.node}.{st.incarnation}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        with open(st.log, "wb") as fh:
            st.proc = subprocess.Popen(la.command(st.incarnation, chaos=chaos, replaces=replaces), stdout=fh, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env)
        # over ssh the child is the ssh client: the node's own pid is learnt from its hello
        st.pid = st.proc.pid if la.mode == "local" else None

    def _describe_death(self, st: _NodeState, code: int | None) -> str:
        pid = st.pid if st.pid is not None else "?"
        if code is None:
            what = f"silent for more than {self.opts.heartbeat_timeout_s:g} s"
        else:
            what = _exit_text(code)
        msg = f"{st.launch.node} (pid {pid}) {what} after {st.current.get('frames', 0)} frames"
        tail = _log_tail(st.log) if code is not None and code > 0 else ""
        return msg + (f": {tail}" if tail else "")

    def _drain_stats(self) -> None:
        """Read pending statistics; nodes that just said hello are added to ``self.hellos``."""
        hello = self.hellos
        while True:
            try:
                buf = self.stats.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            d = unpack_stats(buf)
            st = self.states.get(d["node"]) if d else None
            if st is None or d is None or not self._plausible(d):
                self.stats_rejected += 1
                continue
            inc, pid = int(d.get("incarnation", 0)), int(d["pid"])
            known = (inc, pid) in st.stats
            if st.launch.mode == "manual":
                fresh = d["kind"] == "hello" or pid == st.pid
            else:
                fresh = inc == st.incarnation and (st.pid is None or pid == st.pid)
            if not (known or fresh):  # not this node's process, nor one it was: stale or forged
                self.stats_rejected += 1
                continue
            st.stats[(inc, pid)] = d
            if st.launch.mode == "manual" and d["kind"] == "hello" and pid != st.pid:
                # started by hand: a new process announces itself; it replaces the old one
                if st.pid is not None:
                    self.faults.append(f"{st.launch.node} was restarted by hand (pid {st.pid} -> {pid})")
                    st.restarts += 1
                st.pid, st.incarnation, st.up = pid, inc, False
            if st.launch.mode == "manual":
                current = pid == st.pid
            else:
                current = inc == st.incarnation and (st.pid is None or pid == st.pid)
            if current:
                st.pid = pid
                st.last_seen = time.monotonic()
                if d["kind"] == "hello" and not st.up:
                    st.up = True
                    hello.append(st)

    def _plausible(self, d: Mapping[str, Any]) -> bool:
        """Whether a node's statistics fit what the source has sent so far: no more frames than batches
        sent (re-sends included), no more samples than samples sent."""
        return int(d.get("frames", 0)) <= self.sent_batches and int(d.get("samples", 0)) <= self.sent_samples

    def _start_all(self) -> None:
        for st in self.states.values():
            self._spawn(st, chaos=True)
        if self.announce is not None:
            self.announce([st.launch for st in self.states.values()])
        total = len(self.states)
        deadline = time.monotonic() + self.opts.start_timeout_s
        self.report(STEP_START, 0, total)
        while True:
            self._drain_stats()
            up = sum(st.up for st in self.states.values())
            self.report(STEP_START, up, total)
            if up == total:
                return
            for st in self.states.values():
                if st.proc is not None and st.proc.poll() is not None:
                    msg = f"node {self._describe_death(st, st.proc.returncode)} while starting (log: {st.log})"
                    if not (self.opts.restart and st.restarts < self.opts.max_restarts):
                        raise RuntimeFault(msg)
                    self.faults.append(msg)  # --restart: start it again, as after a crash mid-run
                    st.restarts += 1
                    st.incarnation += 1
                    self._spawn(st, chaos=False)
            if time.monotonic() > deadline:
                missing = [st.launch.node for st in self.states.values() if not st.up]
                raise RuntimeFault(f"nodes {missing} did not report within {self.opts.start_timeout_s:g} s; check "
                                   f"that they run and reach the statistics address {self.stats_address}")
            self.stats.poll(50)

    def _stop_all(self, node_socks: Mapping[int, zmq.Socket]) -> None:
        h = self.spec.hash_bytes
        for idx, sock in node_socks.items():
            with contextlib.suppress(zmq.ZMQError):
                sock.send(encode_stop(h, idx), zmq.NOBLOCK)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            self._drain_stats()
            done = all(st.current.get("kind") == "final" or
                       (st.proc is not None and st.proc.poll() is not None) for st in self.states.values())
            if done:
                break
            self.stats.poll(50)
        for st in self.states.values():
            p = st.proc
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(2.0)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(2.0)
        self._drain_stats()

    def _kill_all(self) -> None:
        for st in self.states.values():
            if st.proc is not None and st.proc.poll() is None:
                st.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    st.proc.wait(2.0)

    # ---------------------------------------------------------------- the run
    def set_launches(self, launches: Sequence[NodeLaunch]) -> None:
        missing = [n.id for n in self.spec.nodes if n.id not in {la.node for la in launches}]
        if missing:
            raise RuntimeFault(f"no launch command for nodes {missing}")
        self.states = {la.node: _NodeState(la) for la in launches}

    def close(self) -> None:
        self._kill_all()
        if self.keys is not None:
            self.keys.stop()
        if not self.ctx.closed:
            self.ctx.destroy(linger=0)

    def _connect_nodes(self) -> dict[int, zmq.Socket]:
        """One PUSH socket per node: the source's link to the nodes it feeds, and the way STOP is sent."""
        socks: dict[int, zmq.Socket] = {}
        for st in self.states.values():
            sock = make_socket(self.ctx, zmq.PUSH, max(self.opts.hwm, self._window()))
            if self.keys is not None:
                self.keys.client(sock, st.launch.node)
            connect(sock, st.launch.address, "source")
            socks[self.spec.node(st.launch.node).index] = sock
        return socks

    def run(self, x: np.ndarray, reference: np.ndarray, reference_name: str) -> RunReport:
        try:
            node_socks = self._connect_nodes()  # connected while the nodes start: no connect delay later
            self._start_all()
            if self.opts.on_start is not None:  # drills and attack tests: every node is up now
                self.opts.on_start({st.launch.node: st.launch.address for st in self.states.values()},
                                   self.sink_address, self.stats_address)
            return self._stream(x, reference, reference_name, node_socks)
        finally:
            self.close()

    def _stream(self, x: np.ndarray, reference: np.ndarray, reference_name: str,
                node_socks: Mapping[int, zmq.Socket]) -> RunReport:
        spec, opts = self.spec, self.opts
        h = spec.hash_bytes
        n = int(x.shape[0])
        batch = max(1, int(opts.batch))
        window = self._window()
        src_parts = spec.parts_from(SOURCE)
        sink_parts = spec.parts_into(SINK)
        sink_expect = {p.part: p.expect for p in sink_parts}
        outbox: dict[int, deque[tuple[float, bytes]]] = {c: deque() for c in node_socks}  # (due, frame)
        pace = opts.pace
        factor = pace.factor if pace is not None and pace.factor is not None else 1.0
        source_link, sink_link = Server(), Server()
        out_size = int(np.prod(spec.output_shape))
        outputs = np.zeros((n, out_size), dtype=np.float64)
        delivered = np.zeros(n, dtype=bool)
        t_first = np.zeros(n, dtype=np.float64)
        t_done = np.zeros(n, dtype=np.float64)
        unacked: OrderedDict[int, list[float]] = OrderedDict()  # seq -> [count, last send time]
        pending: dict[int, dict[int, Any]] = {}
        counts = {"sent": 0, "received": 0, "resent": 0, "duplicated": 0}
        sink_rejected: dict[str, int] = {}
        batches = [(s, min(batch, n - s)) for s in range(0, n, batch)]
        next_batch = 0
        n_delivered = 0
        journal = None
        resumed = np.zeros(n, dtype=bool)
        if opts.results is not None:
            from .results import Journal, inputs_sha256

            journal = Journal(opts.results, spec.plan_hash, n, batch, out_size, inputs_sha256(x), opts.resume)
            for seq, count, vals in journal.records:
                outputs[seq:seq + count] = vals
                resumed[seq:seq + count] = True
            delivered |= resumed
            n_delivered = int(delivered.sum())
            batches = [(s, c) for s, c in batches if not delivered[s:s + c].all()]
        worst_latency = 0.0
        failure: str | None = None
        poller = zmq.Poller()
        poller.register(self.sink, zmq.POLLIN)
        poller.register(self.stats, zmq.POLLIN)

        def enqueue(seq: int, count: int, now: float) -> None:
            xs = x[seq:seq + count]
            t0 = time.monotonic_ns()
            for p in src_parts:
                buf = encode_frame(h, SOURCE, p.consumer, p.part, seq, xs[..., p.start:p.stop], p.wire, t0)
                due = 0.0 if pace is None else source_link.serve(now, link_s(pace.source_mbps, len(buf), factor))
                outbox[p.consumer].append((due, buf))
            counts["sent"] += len(src_parts)
            self.sent_batches += 1
            self.sent_samples += count
            unacked[seq] = [count, now]

        def resend(seqs: Sequence[int], now: float) -> None:
            for seq in seqs:
                count = int(unacked[seq][0])
                enqueue(seq, count, now)
                counts["resent"] += len(src_parts)

        t_start = time.monotonic()
        last_progress = 0.0
        last_delivery = t_start
        next_check = t_start
        self.report(STEP_STREAM, 0, n)
        while n_delivered < n:
            now = time.monotonic()
            all_up = all(st.up for st in self.states.values())
            while all_up and next_batch < len(batches) and len(unacked) < window:
                seq, count = batches[next_batch]
                enqueue(seq, count, now)
                t_first[seq:seq + count] = now
                next_batch += 1
            busy_out = False
            next_due = math.inf
            for c, q in outbox.items():
                while q:
                    if q[0][0] > now:
                        next_due = min(next_due, q[0][0])
                        break
                    try:
                        node_socks[c].send(q[0][1], zmq.NOBLOCK)
                    except zmq.Again:
                        busy_out = True
                        break
                    q.popleft()
            wait_ms = 1 if busy_out else 5
            if next_due < math.inf:
                wait_ms = max(0, min(wait_ms, int((next_due - now) * 1000)))
            events = dict(poller.poll(wait_ms))
            if self.sink in events:
                now = time.monotonic()
                while True:
                    try:
                        buf = self.sink.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if pace is not None:  # the sink's link: in no sooner than its bytes allow
                        now = sink_link.pass_through(time.monotonic(), link_s(pace.sink_mbps, len(buf), factor))
                    try:
                        fr = decode_frame(buf, h, SINK, sink_expect, batch)
                    except FrameError as exc:
                        sink_rejected[exc.reason] = sink_rejected.get(exc.reason, 0) + 1
                        continue
                    counts["received"] += 1
                    if len(sink_parts) == 1:
                        vals, seq, count = fr.values, fr.seq, fr.count
                    else:
                        entry = pending.setdefault(fr.seq, {})
                        entry[fr.part] = fr
                        if len(entry) < len(sink_parts):
                            while len(pending) > 4 * window:  # bounded join buffer: drop the oldest
                                del pending[next(iter(pending))]
                            continue
                        del pending[fr.seq]
                        vals = np.concatenate([entry[k].values for k in range(len(sink_parts))], axis=-1)
                        seq, count = fr.seq, fr.count
                    if seq < 0 or seq + count > n:
                        sink_rejected["seq"] = sink_rejected.get("seq", 0) + 1
                        continue
                    fresh = ~delivered[seq:seq + count]
                    counts["duplicated"] += int(count - fresh.sum())
                    if fresh.any():
                        if journal is not None:
                            journal.append(seq, vals.reshape(count, out_size))
                        idx = np.arange(seq, seq + count)[fresh]
                        outputs[idx] = vals.reshape(count, out_size)[fresh]
                        delivered[idx] = True
                        t_done[idx] = now
                        n_delivered += int(fresh.sum())
                        worst_latency = max(worst_latency, now - float(t_first[seq]))
                        last_delivery = now
                    unacked.pop(seq, None)
            if self.stats in events or now >= next_check:
                self._drain_stats()
            while self.hellos:
                st = self.hellos.pop(0)
                if st.restarts > 0 and unacked:  # a restarted node: re-send what was in flight
                    resend(list(unacked), time.monotonic())
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.02
                failure = self._check_nodes(now)
                if failure is not None:
                    break
                limit = max(opts.resend_after_s, 4 * worst_latency)
                late = [s for s, (_, t) in unacked.items() if now - t > limit]
                if late and all(st.up for st in self.states.values()):
                    resend(late, now)
                if now - last_delivery > opts.stall_timeout_s:
                    failure = (f"no sample delivered for {opts.stall_timeout_s:g} s "
                               f"({n_delivered} of {n} delivered); nodes: " +
                               ", ".join(f"{s.launch.node} {'up' if s.up else 'down'} {s.frames} frames"
                                         for s in self.states.values()))
                    break
                if opts.timeout_s is not None and now - t_start > opts.timeout_s:
                    failure = f"the run took longer than --timeout {opts.timeout_s:g} s ({n_delivered} of {n} delivered)"
                    break
                if now - last_progress > 0.1:
                    last_progress = now
                    self.report(STEP_STREAM, n_delivered, n)
        t_end = last_delivery if n_delivered else time.monotonic()
        self.report(STEP_STREAM, n_delivered, n)
        in_flight = tuple(int(i) for seq, (count, _) in unacked.items()
                          for i in range(seq, seq + int(count)) if not delivered[i])
        not_sent = sum(c for _, c in batches[next_batch:])
        dropped = self.sink_hangups.count() - self._producer_restarts(SINK)
        if dropped > 0:
            sink_rejected["disconnect"] = dropped
        self._stop_all(node_socks)
        if journal is not None:
            journal.close()
        if failure is None:
            failure = self._chaos_not_fired()
        rep = self._report(n, delivered, outputs, reference, t_first, t_done, t_start, t_end, counts,
                           sink_rejected, failure, in_flight, not_sent, batch, reference_name, resumed)
        return replace(rep, resumed=int(resumed.sum()),
                       results=str(opts.results) if opts.results is not None else None)

    def _producer_restarts(self, consumer: int) -> int:
        """How many times the nodes feeding ``consumer`` (a node index or the sink) died and were restarted:
        each death closes its connections, which the consumer counts as ``disconnect``."""
        producers = {p.producer for p in self.spec.parts_into(consumer) if p.producer != SOURCE}
        return sum(self.states[self.spec.nodes[i].id].restarts for i in producers)

    def _chaos_not_fired(self) -> str | None:
        """A fault of ``--chaos`` that never happened, said as the run's failure (a test of recovery that
        injected nothing must not pass): its node's first process made fewer frames than ``N``."""
        for c in self.opts.chaos:
            node = self.spec.node(c.node).id
            if c.action != "corrupt" and any(f.startswith(f"{node} (pid") for f in self.faults):
                continue  # it died or hung (its last statistics may not have made it out)
            first = [d for (inc, _), d in self.states[node].stats.items() if inc == 0]
            key = "sent" if c.action == "corrupt" else "frames"
            done = max((int(d.get(key, 0)) for d in first), default=0)
            if done < c.after:
                what = "sent" if c.action == "corrupt" else "computed"
                return (f"--chaos {c.action}:{c.node}@{c.after} never fired: {node} {what} only {done} frames; use a "
                        "smaller N, more samples or a smaller --batch")
        return None

    def _check_nodes(self, now: float) -> str | None:
        """Detect dead nodes; restart them or return the failure message."""
        for st in self.states.values():
            code = st.proc.poll() if st.proc is not None else None
            dead = code is not None
            if st.up and code is None and now - st.last_seen > self.opts.heartbeat_timeout_s:
                dead = True  # silent: stopped, hung, or its host gone (a node reports every 0.25 s)
                if st.proc is not None:  # make sure the hung process is gone before its successor binds
                    st.proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        st.proc.wait(2.0)
            if not dead:
                continue
            self.stats.poll(50)  # statistics it sent just before it died may still be on their way
            self._drain_stats()
            msg = self._describe_death(st, code)
            self.faults.append(msg)
            if not (self.opts.restart and st.restarts < self.opts.max_restarts):
                hint = "" if self.opts.restart else "; run with --restart to restart it and complete the run"
                return msg + hint
            st.restarts += 1
            st.last_seen = now
            st.up = False
            if st.proc is not None:
                st.incarnation += 1
                # over ssh, killing the client may leave a hung node holding its port: the new one ends it
                self._spawn(st, chaos=False, replaces=st.pid if st.launch.mode == "ssh" else None)
            else:
                st.pid = None  # started by hand: wait for a new process to say hello
        return None

    def _report(self, n: int, delivered: np.ndarray, outputs: np.ndarray, reference: np.ndarray,
                t_first: np.ndarray, t_done: np.ndarray, t_start: float, t_end: float, counts: Mapping[str, int],
                sink_rejected: Mapping[str, int], failure: str | None, in_flight: tuple[int, ...], not_sent: int,
                batch: int, reference_name: str, resumed: np.ndarray | None = None) -> RunReport:
        n_del = int(delivered.sum())
        ref = reference.reshape(n, -1)
        mism = int(np.sum(np.any(outputs[delivered] != ref[delivered], axis=1))) if n_del else 0
        here = delivered if resumed is None else delivered & ~resumed  # delivered in this run
        lat = (t_done[here] - t_first[here]) * 1e6
        wall = max(t_end - t_start, 1e-9)
        rejected_by: dict[str, int] = dict(sink_rejected)
        if self.stats_rejected:
            rejected_by["stats"] = self.stats_rejected
        if self.keys is not None and self.keys.denied:
            rejected_by["key"] = rejected_by.get("key", 0) + self.keys.denied
        stages = []
        for node in self.spec.nodes:
            st = self.states[node.id]
            rej = 0
            node_rejected: dict[str, int] = {}
            for s in st.stats.values():
                for k, v in (s.get("rejected") or {}).items():
                    node_rejected[k] = node_rejected.get(k, 0) + int(v)
            if "disconnect" in node_rejected:  # a producer's death is a fault, reported as such, not a rejection
                node_rejected["disconnect"] -= self._producer_restarts(node.index)
            for k, v in node_rejected.items():
                if v > 0:
                    rejected_by[k] = rejected_by.get(k, 0) + v
                    rej += v
            busy = st.total("busy_s")
            stages.append(StageReport(id=node.id, frames=st.frames, samples=int(st.total("samples")), busy_s=busy,
                                      busy_fraction=min(1.0, busy / wall), rejected=rej, restarts=st.restarts,
                                      driver=str(next(iter(st.stats.values()), {}).get("driver", "")),
                                      cpu_s=st.total("cpu_s"), send_s=st.total("send_s")))
        steady = 0.0
        if here.any():
            done = t_done[here]
            first, last = float(done.min()), float(done.max())
            later = int(np.sum(done > first))
            steady = later / (last - first) if later and last > first else 0.0
        pace = self.opts.pace
        return RunReport(
            steady_throughput_per_s=steady,
            pace=pace.factor if pace is not None else None,
            predicted_throughput_per_s=pace.predicted_throughput_per_s if pace is not None else None,
            pace_bottleneck=pace.bottleneck if pace is not None else None,
            encrypted=self.keys is not None,
            pace_overruns=int(sum(st.total("pace_overruns") for st in self.states.values())),
            samples=n, delivered=n_del, lost=n - n_del, duplicated=counts["duplicated"],
            rejected=sum(rejected_by.values()), bit_exact=(n_del == n and mism == 0), mismatched_samples=mism,
            throughput_per_s=int(here.sum()) / wall if here.any() else 0.0,
            latency_us_p50=float(np.percentile(lat, 50)) if here.any() else 0.0,
            latency_us_p99=float(np.percentile(lat, 99)) if here.any() else 0.0,
            stages=tuple(stages), restarts=sum(st.restarts for st in self.states.values()),
            sent_frames=counts["sent"], received_frames=counts["received"], resent_frames=counts["resent"],
            rejected_by=rejected_by, wall_s=wall, batch=batch, reference=reference_name, faults=tuple(self.faults),
            failure=failure, in_flight=in_flight, not_sent=not_sent, outputs=outputs)


# ------------------------------------------------------------------------------------- entry points
def node_argv(spec_path: Path | str, node: str, driver: str, bind_address: str, connect_to: Mapping[str, str],
              stats: str | None, *, hwm: int = DEFAULT_HWM, reference_mode: str = "fixed",
              bitstream: str | None = None, parent_pid: int | None = None,
              executable: Sequence[str] = ("split4ml",), pace: Path | str | None = None,
              max_batch: int | None = None, keys: Path | str | None = None) -> list[str]:
    """The ``split4ml node`` command line of one node."""
    argv = [*executable, "node", str(spec_path), "--stage", node, "--driver", driver, "--bind", bind_address]
    for cid, addr in connect_to.items():
        argv += ["--connect", f"{cid}={addr}"]
    if stats:
        argv += ["--stats", stats]
    if hwm != DEFAULT_HWM:
        argv += ["--hwm", str(hwm)]
    if driver == "reference" and reference_mode != "fixed":
        argv += ["--reference-mode", reference_mode]
    if bitstream:
        argv += ["--bitstream", bitstream]
    if parent_pid is not None:
        argv += ["--parent-pid", str(parent_pid)]
    if pace is not None:
        argv += ["--pace", str(pace)]
    if max_batch is not None:
        argv += ["--max-batch", str(max_batch)]
    if keys is not None:
        argv += ["--keys", str(keys)]
    return argv


def chaos_args(chaos: Sequence[Chaos], spec: RuntimeSpec, node: str) -> list[str]:
    """The node options injecting ``chaos`` into node ``node``."""
    args: list[str] = []
    for c in chaos:
        if spec.node(c.node).id == node:
            args += [{"kill": "--die-after", "hang": "--hang-after", "corrupt": "--corrupt-at"}[c.action], str(c.after)]
    return args


def prepare_inputs(x: np.ndarray, spec: RuntimeSpec) -> np.ndarray:
    """Samples reshaped to the pipeline input and quantised to its type (float64)."""
    xa = np.asarray(x, dtype=np.float64)
    shape = spec.input_shape
    if xa.shape[1:] != shape:
        if xa.ndim >= 2 and int(np.prod(xa.shape[1:])) == int(np.prod(shape)):
            xa = xa.reshape((xa.shape[0], *shape))
        else:
            raise DataError(f"samples have shape {xa.shape[1:]}, the pipeline input is {shape}")
    if xa.shape[0] < 1:
        raise DataError("no samples to run")
    return spec.input_type.quantize(xa)


def _compile(pipeline: Pipeline, whole: Stage | None, driver: str, progress: Progress | None,
             workdir: Path) -> tuple[dict[str, dict[str, Any]], Callable[[np.ndarray], np.ndarray], str]:
    """Artifacts per node and the reference predictor, built before anything is timed."""
    from ..hls import csim
    from .drivers import save_reference_model

    stages = [n.stage for n in pipeline.nodes]
    want = (stages if driver == "csim" else []) + ([whole] if whole is not None else [])
    if whole is None and driver != "csim":
        want = stages

    def cb(done: int, total: int) -> None:
        if progress is not None:
            progress(STEP_COMPILE, done, total)

    models = csim.compile_stages(want, progress=cb) if want else []
    artifacts: dict[str, dict[str, Any]] = {}
    by_key = dict(zip([id(s) for s in want], models, strict=True))
    for node in pipeline.nodes:
        art: dict[str, Any] = {}
        m = by_key.get(id(node.stage))
        if m is not None:
            art["csim"] = {"library": str(m.library), "project_name": m.project_name}
        if driver == "reference":
            art["reference"] = str(save_reference_model(node.stage, workdir / "models" / f"{node.id}.npz"))
        artifacts[node.id] = art
    if whole is not None:
        whole_model = by_key[id(whole)]
        return artifacts, whole_model.predict, "whole model C-simulation"
    chain = {n.id: by_key[id(n.stage)].predict for n in pipeline.nodes}
    return artifacts, (lambda a: pipeline.run(a, chain)), "chained C-simulation"


def _paced(pace: PaceModel, spec: RuntimeSpec, spec_path: Path, driver: str, reference_mode: str,
           batch: int) -> PaceModel:
    """``pace`` checked against the spec's nodes and batch, with its factor chosen (when it has none) from
    the time each node's driver takes on one frame, measured before anything runs."""
    ids = [n.id for n in spec.nodes]
    if sorted(ids) != sorted(pace.nodes):
        raise RuntimeFault(f"--pace: the model's figures are for nodes {sorted(pace.nodes)}, the pipeline runs {ids}")
    if pace.batch != batch:
        raise RuntimeFault(f"--pace: the model's figures are for frames of {pace.batch} samples, the run sends "
                           f"{batch}; price the plan at the run's batch")
    if pace.factor is not None:
        return pace
    return pace.with_factor(choose_factor(pace, time_node_drivers(spec_path, driver, batch, reference_mode)))


def _workdir(options: RunOptions) -> tuple[Path, bool]:
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
        return options.workdir, False
    return Path(tempfile.mkdtemp(prefix="split4ml-run-")), True


def run_pipeline(pipeline: Pipeline, x: np.ndarray, whole: Stage | None = None, options: RunOptions | None = None,
                 progress: Progress | None = None) -> RunReport:
    """Emulate ``pipeline`` on this machine: one node process per node, source and sink here.

    Args:
        pipeline: any :class:`~split4ml.stages.Pipeline` (a chain, or shards joined by concatenation).
        x: samples ``(n, *input_shape)``; quantised to the pipeline input type.
        whole: the whole model as one stage: the reference every output must equal, bit for bit.
            Without it the reference is the pipeline's own C-simulations chained in this process.
        options: see :class:`RunOptions`.
        progress: ``(step, done, total)`` callback.

    Raises:
        RuntimeFault: a node cannot start (the message names it and its log);
        BuildError: a stage does not compile; DataError: ``x`` has the wrong shape.
    """
    options = options or RunOptions()
    if options.driver not in ("csim", "reference"):
        raise RuntimeFault(f"--driver {options.driver!r} cannot be emulated; use csim or reference")
    workdir, temporary = _workdir(options)
    ok = started = False
    stack = contextlib.ExitStack()
    try:
        spec0 = spec_from_pipeline(pipeline, whole)
        xq = prepare_inputs(x, spec0)
        artifacts, reference_fn, reference_name = _compile(pipeline, whole, options.driver, progress, workdir)
        spec = spec0.with_artifacts(bundle_libraries(artifacts, workdir))
        spec_path = spec.write(workdir / "pipeline.json")
        reference = np.asarray(reference_fn(xq), dtype=np.float64)
        for c in options.chaos:
            spec.node(c.node)  # unknown node: error before anything starts
        pace_path = None
        if options.pace is not None:
            options = replace(options, pace=_paced(options.pace, spec, spec_path, options.driver,
                                                   options.reference_mode, options.batch))
            pace_path = options.pace.write(workdir / "pace.json")
        # The nodes' ports stay reserved until the run ends: a port only found free could be taken
        # (by another program, or as the local port of a connection) before its node binds it.
        reservation = PortReservation(len(spec.nodes), options.host)
        stack.callback(reservation.release)
        addresses = {n.id: f"tcp://{options.host}:{p}" for n, p in zip(spec.nodes, reservation.ports, strict=True)}
        from .node import consumer_ids

        launcher = _Launcher(spec, [], options, progress, workdir / "logs", f"tcp://{options.host}:0",
                             f"tcp://{options.host}:0")
        try:
            addresses["sink"] = launcher.sink_address
            exe = (sys.executable, "-m", "split4ml.cli")
            launches = []
            for n in spec.nodes:
                argv = node_argv(spec_path, n.id, options.driver, addresses[n.id],
                                 {c: addresses[c] for c in consumer_ids(spec, n.id)}, launcher.stats_address,
                                 hwm=options.hwm, reference_mode=options.reference_mode, parent_pid=os.getpid(),
                                 executable=exe, pace=pace_path, max_batch=options.batch, keys=options.keys)
                launches.append(NodeLaunch(n.id, argv, addresses[n.id], "local",
                                           chaos_args=chaos_args(options.chaos, spec, n.id)))
            launcher.set_launches(launches)
        except BaseException:
            launcher.close()
            raise
        started = True
        rep = launcher.run(xq, reference, reference_name)
        ok = rep.ok
        return replace(rep, workdir=None if temporary else str(workdir)) if ok else replace(rep, workdir=str(workdir))
    finally:
        stack.close()
        if temporary and (ok or not started):  # node logs are kept when nodes ran and something failed
            shutil.rmtree(workdir, ignore_errors=True)


def run_with_launches(spec: RuntimeSpec, launches: Sequence[NodeLaunch], x: np.ndarray, reference: np.ndarray,
                      reference_name: str, options: RunOptions, sink_bind: str, stats_bind: str,
                      progress: Progress | None = None,
                      announce: Callable[[list[NodeLaunch]], None] | None = None) -> RunReport:
    """Run the source and sink here against nodes started as ``launches`` describe (hosts mode);
    ``announce(launches)`` is called once the local processes are started (e.g. to print the
    commands of the hosts started by hand)."""
    workdir, _ = _workdir(options)
    launcher = _Launcher(spec, launches, options, progress, workdir / "logs", sink_bind, stats_bind, announce)
    try:
        launcher.set_launches(launches)
    except BaseException:
        launcher.close()
        raise
    rep = launcher.run(prepare_inputs(x, spec), reference, reference_name)
    return replace(rep, workdir=str(workdir))
