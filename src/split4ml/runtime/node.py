"""One board's process: receive frames, run the stage, send the result downstream.

``split4ml node SPEC --stage ID --driver D --bind tcp://HOST:PORT --connect ID=tcp://... [--stats ADDR]``
runs :func:`serve_node`:

1. load the driver (C-sim library, reference model or bitstream) and run it once on a zero sample
   (warm-up: a C-simulation reads its weight files on its first call), then bind the input (PULL),
   connect one PUSH socket per consumer, wait until the consumers have accepted (at most
   ``connect_wait_s``), and send ``hello`` on the statistics link;
2. for every frame: decode and check it (:func:`~split4ml.runtime.wire.decode_frame`); a
   rejected frame is counted by reason and dropped, never fed to the driver;
3. join: a node with several sources (the consumer of a neuron split) keeps the parts of each
   batch, keyed by sequence number, until all have arrived, then concatenates them along the last
   axis. The join buffer holds at most ``join_capacity`` incomplete batches (the oldest is evicted
   and counted: its samples are re-sent by the source);
4. run the driver on the batch (the time is the node's *busy* time), slice the output for each
   consumer part and send it (a send waits while the consumer's queue is full: backpressure);
5. every ``stats_interval_s`` send statistics (frames, samples, busy seconds in the driver,
   active seconds handling frames, seconds spent sending, i.e. waiting for a full consumer queue,
   CPU seconds, rejections); on a STOP frame, SIGTERM or SIGINT send ``final`` statistics and
   return.

A node keeps no state across batches (besides the join buffer), so a node that dies can be
restarted and the source's re-sends complete its work. Frames keep the sequence numbers and
first-send time of the batch they came from.

Chaos (for tests and demos, set by the launcher's ``--chaos``): ``die_after=N`` SIGKILLs the node
after it has sent its N-th frame; ``hang_after=N`` SIGSTOPs it there (a hung board); ``corrupt_at=N`` flips one payload byte of its N-th frame
after the CRC was computed, so the next hop rejects it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from ..errors import FrameError, PlanError, RuntimeFault
from .drivers import Driver, make_driver
from .pace import NodePace, NodePacer
from .security import LAUNCHER
from .spec import RuntimeSpec
from .transport import (
    DEFAULT_HWM,
    HangUps,
    bind,
    connect,
    make_socket,
    pack_stats,
    send_blocking,
    wait_connected,
    watch_connections,
)
from .wire import HEADER_BYTES, KIND_STOP, SINK, decode_frame, encode_frame, max_frame_bytes

#: How often a node reads its input socket's connection events (a paced loop ticks far more often).
HANGUP_POLL_S = 0.05


@dataclass(frozen=True)
class NodeOptions:
    """How to run one node (see :func:`serve_node`).

    Attributes:
        node: the node's id (or index) in the spec.
        bind: address of the node's input, e.g. ``tcp://0.0.0.0:5555``.
        connect: consumer id (a node id or ``sink``) -> address of its input. A single address
            under the key ``""`` is used for a node with exactly one consumer.
        driver: ``csim``, ``reference`` or ``pynq``.
        stats: address of the launcher's statistics link (None: no statistics are sent).
        hwm: high-water mark of every data socket, frames.
        reference_mode: ``fixed`` or ``float`` (reference driver).
        bitstream: the pynq driver's bitstream (overrides the spec's artifact).
        die_after / hang_after / corrupt_at: chaos (see module docstring).
        parent_pid: exit when this process is gone (the emulating launcher).
        idle_exit_s: exit after this many seconds without a frame (None: never).
        incarnation: how many times the launcher restarted this node before.
        stats_interval_s: period of the statistics messages, seconds.
        join_capacity / join_bytes: incomplete batches kept by a fan-in node, at most, and the bytes
            they may hold (the oldest is evicted first).
        connect_wait_s: how long to wait for the consumers to accept the connections before
            saying hello anyway.
        pace / pace_factor: run paced to these figures of the model, stretched by the factor
            (:mod:`split4ml.runtime.pace`); None: as fast as the driver goes.
        max_batch: frames of more samples are rejected (reason ``count``); None: no limit.
        keys: a keys directory (:mod:`split4ml.runtime.security`): every link is CURVE-encrypted,
            peers are known by their public keys, and refused handshakes are counted (``key``).
        busy_limit_s: how long one driver call may last while the node still reports (from a
            heartbeat thread); after that it goes silent and the launcher declares it dead.
        replaces: the pid of this node's previous process on this host, declared dead by the launcher
            (a hung ``launch: ssh`` node: killing the ssh client leaves it holding its port). It is
            killed before binding, if it is still a ``split4ml node`` of this stage
            (:func:`end_predecessor`).
    """

    node: str
    bind: str
    connect: Mapping[str, str] = field(default_factory=dict)
    driver: str = "csim"
    stats: str | None = None
    hwm: int = DEFAULT_HWM
    reference_mode: str = "fixed"
    bitstream: str | None = None
    die_after: int | None = None
    hang_after: int | None = None
    corrupt_at: int | None = None
    parent_pid: int | None = None
    idle_exit_s: float | None = None
    incarnation: int = 0
    stats_interval_s: float = 0.25
    join_capacity: int = 256
    join_bytes: int = 256 << 20
    connect_wait_s: float = 10.0
    pace: NodePace | None = None
    pace_factor: float = 1.0
    max_batch: int | None = None
    keys: str | None = None
    busy_limit_s: float = 300.0
    replaces: int | None = None


@dataclass
class NodeCounters:
    """What a node did, as reported in its statistics."""

    frames: int = 0
    samples: int = 0
    received: int = 0
    sent: int = 0
    busy_s: float = 0.0
    active_s: float = 0.0
    send_s: float = 0.0
    send_waits: int = 0
    join_evicted: int = 0
    pace_overruns: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "samples": self.samples, "received": self.received, "sent": self.sent,
                "busy_s": self.busy_s, "active_s": self.active_s, "send_s": self.send_s,
                "send_waits": self.send_waits,
                "join_evicted": self.join_evicted, "pace_overruns": self.pace_overruns,
                "rejected": dict(self.rejected), "rejected_total": sum(self.rejected.values())}


def _address_for(opts: NodeOptions, consumer: str, n_consumers: int) -> str:
    if consumer in opts.connect:
        return opts.connect[consumer]
    if "" in opts.connect and n_consumers == 1:
        return opts.connect[""]
    raise RuntimeFault(f"node {opts.node}: no --connect address for its consumer {consumer!r}; pass "
                       f"--connect {consumer}=tcp://HOST:PORT")


def serve_node(spec: RuntimeSpec, opts: NodeOptions, driver: Driver | None = None,
               should_stop: Callable[[], bool] | None = None, install_signals: bool = True) -> dict[str, Any]:
    """Run node ``opts.node`` of ``spec`` until a STOP frame, a signal or ``should_stop()``.

    Args:
        driver: use this driver instead of making one from ``opts.driver`` and the spec's artifacts.
        should_stop: polled about every 100 ms (for running a node in a thread).
        install_signals: handle SIGTERM/SIGINT (only possible in the main thread).

    Returns:
        the final statistics (``NodeCounters.as_dict()`` plus ``node``, ``pid``, ``wall_s``).

    Raises:
        RuntimeFault: the driver cannot be loaded, an address cannot be bound, or the stage produces
            values its output wire type cannot carry (a plan error: the node stops).
    """
    me = spec.node(opts.node)
    parts_in = spec.parts_into(me.index)
    expects = {p.part: p.expect for p in parts_in}
    parts_out = spec.parts_from(me.index)
    consumers = list(OrderedDict.fromkeys(p.consumer for p in parts_out))
    if driver is None:
        driver = make_driver(opts.driver, me.artifacts, me.input_shape, me.output_shape, me.input_type,
                             me.output_type, reference_mode=opts.reference_mode, bitstream=opts.bitstream)
    stop = {"flag": False}
    if install_signals:
        def on_signal(signum: int, _frame: Any) -> None:
            stop["flag"] = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    ctx = zmq.Context()
    keys = None
    if opts.keys is not None:  # CURVE: encrypted links, peers known by their public keys
        from .security import Keys

        keys = Keys(opts.keys, me.id)
        keys.start(ctx)
    counters = NodeCounters()
    pid = os.getpid()
    t_start = time.monotonic()
    cpu0 = time.process_time()
    last_stats = 0.0
    last_frame = t_start
    parent = opts.parent_pid
    next_parent_check = t_start
    h = spec.hash_bytes
    stats_sock = None
    hello_sent = False
    hangups: HangUps | None = None
    next_hangup_poll = t_start

    def parent_gone() -> bool:
        if parent is None:
            return False
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return os.getppid() == 1 and parent != 1

    def count_keys() -> None:
        if keys is not None and keys.denied:
            counters.rejected["key"] = keys.denied

    def count_hangups() -> None:
        """Connections dropped mid-run (main thread only: the monitor socket is this thread's)."""
        if hangups is not None and (n := hangups.count()):
            counters.rejected["disconnect"] = n

    def stats_message(kind: str) -> bytes:
        count_keys()
        msg = {"kind": kind, "node": me.id, "index": me.index, "pid": pid, "incarnation": opts.incarnation,
               "driver": opts.driver, "wall_s": time.monotonic() - t_start, "cpu_s": time.process_time() - cpu0,
               **counters.as_dict()}
        return pack_stats(msg)

    def report(kind: str) -> None:
        nonlocal last_stats
        last_stats = time.monotonic()
        if stats_sock is not None:
            try:
                stats_sock.send(stats_message(kind), zmq.NOBLOCK)
            except zmq.Again:
                pass

    in_driver: list[float | None] = [None]  # since when the main loop waits on the driver (None: it does not)
    beats_done = threading.Event()

    def beat() -> None:
        """While the main loop is inside one long driver call (its own statistics pause then), keep the
        launcher's heartbeat going from this thread, for at most ``busy_limit_s``: a process that is
        stopped (or a driver stuck for longer) goes silent and is declared dead."""
        sock = make_socket(ctx, zmq.PUSH, 1000, linger_ms=0)
        try:
            if keys is not None:
                keys.client(sock, LAUNCHER)
            connect(sock, str(opts.stats), f"node {me.id}")
            while not beats_done.wait(opts.stats_interval_s):
                since = in_driver[0]
                if since is None or time.monotonic() - since > opts.busy_limit_s:
                    continue
                try:
                    sock.send(stats_message("stats"), zmq.NOBLOCK)
                except (zmq.Again, RuntimeError):  # RuntimeError: counters changed while being read
                    pass
        finally:
            sock.close(linger=0)

    def tick() -> bool:
        """Housekeeping; True when the node must stop."""
        nonlocal next_parent_check, next_hangup_poll
        now = time.monotonic()
        if hangups is not None and now >= next_hangup_poll:  # a disconnect is timed when it is read
            hangups.poll()
            next_hangup_poll = now + HANGUP_POLL_S
        if hello_sent and now - last_stats >= opts.stats_interval_s:
            count_hangups()
            report("stats")
        if should_stop is not None and should_stop():
            stop["flag"] = True
        if now >= next_parent_check:
            next_parent_check = now + 0.5
            if parent_gone():
                stop["flag"] = True
        if opts.idle_exit_s is not None and now - last_frame > opts.idle_exit_s:
            stop["flag"] = True
        return stop["flag"]

    beater: threading.Thread | None = None
    try:
        # warm-up: the first call of a C-simulation reads its weight files, the first DMA transfer maps
        # its buffers; doing it now keeps that out of the run (and fails early if the driver is broken)
        driver.predict(np.zeros((1, *me.input_shape)))
        # with a batch limit, no legitimate frame is larger than this: ZeroMQ drops a peer sending more
        limit = max_frame_bytes(expects, opts.max_batch) if opts.max_batch is not None else None
        replaced = opts.replaces is not None and end_predecessor(opts.replaces, me.id, me.index)
        pull = make_socket(ctx, zmq.PULL, opts.hwm, max_bytes=limit)
        hangups = HangUps(pull)  # before bind: every connection is seen
        if keys is not None:
            keys.server(pull)
        bind(pull, opts.bind, f"node {me.id}", retry_s=5.0 if replaced else 0.0)
        pushes = {c: make_socket(ctx, zmq.PUSH, opts.hwm, linger_ms=1000) for c in consumers}
        monitors = watch_connections(list(pushes.values()))
        for c, sock in pushes.items():
            if keys is not None:
                keys.client(sock, _party(spec.name_of(c)))
            connect(sock, _address_for(opts, spec.name_of(c), len(consumers)), f"node {me.id}")
        if opts.stats:
            stats_sock = make_socket(ctx, zmq.PUSH, 1000, linger_ms=2000)
            if keys is not None:
                keys.client(stats_sock, LAUNCHER)
            connect(stats_sock, opts.stats, f"node {me.id}")
        wait_connected(list(pushes.values()), monitors, opts.connect_wait_s, tick)
        report("hello")
        hello_sent = True
        if opts.stats:
            beater = threading.Thread(target=beat, name=f"split4ml-beat-{me.id}", daemon=True)
            beater.start()
        pending: OrderedDict[int, dict[int, Any]] = OrderedDict()
        ready_at: dict[int, float] = {}  # paced: seq -> when its parts were all in
        pending_bytes = 0  # what the join buffer holds
        n_parts = len(parts_in)
        out_shape = me.output_shape
        pacer = NodePacer(opts.pace, opts.pace_factor) if opts.pace is not None else None

        def take(buf: bytes, arrival: float) -> tuple[np.ndarray, int, int, int, float] | None:
            """Decode and join one received frame: the batch (values, seq, count, t0, when it was in)
            once complete, None while parts are missing or when the frame is rejected; raises _Stop."""
            nonlocal last_frame
            try:
                frame = decode_frame(buf, h, me.index, expects, opts.max_batch)
            except FrameError as exc:
                counters.rejected[exc.reason] = counters.rejected.get(exc.reason, 0) + 1
                return None
            if frame.kind == KIND_STOP:
                raise _Stop
            counters.received += 1
            last_frame = time.monotonic()
            t_in = pacer.received(arrival, len(buf)) if pacer is not None else arrival
            if n_parts == 1:
                return frame.values, frame.seq, frame.count, frame.t0_ns, t_in
            nonlocal pending_bytes
            entry = pending.get(frame.seq)
            if entry is None:
                entry = pending[frame.seq] = {}
            elif any(f.count != frame.count for f in entry.values()):
                counters.rejected["join"] = counters.rejected.get("join", 0) + 1
                return None
            if frame.part in entry:
                pending_bytes -= entry[frame.part].values.nbytes
            entry[frame.part] = frame
            pending_bytes += frame.values.nbytes
            # bounded in batches and in bytes: the oldest incomplete batch goes first
            while len(pending) > 1 and (len(pending) > opts.join_capacity or pending_bytes > opts.join_bytes):
                old, parts = pending.popitem(last=False)
                pending_bytes -= sum(f.values.nbytes for f in parts.values())
                ready_at.pop(old, None)
                counters.join_evicted += 1
            if frame.seq not in pending:
                return None
            ready_at[frame.seq] = max(ready_at.get(frame.seq, t_in), t_in)
            if len(entry) < n_parts:
                return None
            del pending[frame.seq]
            pending_bytes -= sum(f.values.nbytes for f in entry.values())
            ordered = [entry[k] for k in range(n_parts)]
            return (np.concatenate([f.values for f in ordered], axis=-1), frame.seq, frame.count,
                    min(f.t0_ns for f in ordered), ready_at.pop(frame.seq))

        encoded = 0  # outgoing frames made so far (chaos: corrupt_at counts them)

        def compute(x: np.ndarray, seq: int, count: int, t0: int) -> list[tuple[int, bytes]]:
            """Run the driver on a batch; its outgoing frames, one per consumer part."""
            nonlocal encoded
            x = x.reshape((count, *me.input_shape))
            t_busy = time.perf_counter()
            in_driver[0] = time.monotonic()
            try:
                y = np.asarray(driver.predict(x)).reshape((count, *out_shape))
            finally:
                in_driver[0] = None
            counters.busy_s += time.perf_counter() - t_busy
            counters.frames += 1
            counters.samples += count
            outs = []
            for p in parts_out:
                try:
                    out = encode_frame(h, me.index, p.consumer, p.part, seq, y[..., p.start:p.stop], p.wire, t0)
                except PlanError as exc:
                    raise RuntimeFault(f"node {me.id}: its output (batch seq {seq}) cannot be sent as {p.wire}: "
                                       f"{exc}; the plan's output type of this stage is not what it computes") from exc
                encoded += 1
                if opts.corrupt_at is not None and encoded == opts.corrupt_at:
                    bad = bytearray(out)
                    bad[HEADER_BYTES if len(bad) > HEADER_BYTES + 4 else 0] ^= 0xFF
                    out = bytes(bad)
                outs.append((p.consumer, out))
            return outs

        def deliver(consumer: int, out: bytes) -> bool:
            """Send one frame (waiting while the consumer's queue is full); False when the node must stop."""
            t_send = time.perf_counter()
            try:
                pushes[consumer].send(out, zmq.NOBLOCK, copy=len(out) < 8192)
                queued = True
            except zmq.Again:  # the consumer's queue is full: wait (backpressure)
                counters.send_waits += 1
                queued = send_blocking(pushes[consumer], out, tick)
            counters.send_s += time.perf_counter() - t_send
            if queued:
                counters.sent += 1
            return queued

        def chaos_after_frame() -> None:
            if opts.hang_after is not None and counters.frames >= opts.hang_after:
                report("stats")
                time.sleep(0.2)  # let the statistics leave
                os.kill(pid, signal.SIGSTOP)  # alive, silent: only a heartbeat deadline notices
            if opts.die_after is not None and counters.frames >= opts.die_after:
                report("stats")
                if hangups is not None:
                    hangups.close()  # its monitor socket too: ctx.term() waits for every socket
                for sock in (pull, *pushes.values()):
                    sock.close(linger=0)
                if stats_sock is not None:
                    stats_sock.close(linger=2000)
                beats_done.set()
                if beater is not None:
                    beater.join(2.0)
                if keys is not None:
                    keys.stop()
                ctx.term()  # returns once the statistics have left (or after 2 s), then die hard
                os.kill(pid, signal.SIGKILL)

        try:
            if pacer is None:
                while not tick():
                    if not pull.poll(100):
                        continue
                    buf = pull.recv(copy=True)
                    t_active = time.perf_counter()
                    got = take(buf, 0.0)
                    if got is None:
                        continue
                    outs = compute(*got[:4])
                    if not all(deliver(c, out) for c, out in outs):
                        break
                    counters.active_s += time.perf_counter() - t_active
                    chaos_after_frame()
            else:
                _paced_loop(pull, opts.hwm, PACED_AHEAD * max(1, len(parts_out)), pacer, take, compute, deliver,
                            chaos_after_frame, tick, counters)
        except _Stop:
            pass
        count_hangups()
        report("final")
        count_keys()
        final = {"kind": "final", "node": me.id, "pid": pid, "wall_s": time.monotonic() - t_start,
                 **counters.as_dict()}
        return final
    finally:
        beats_done.set()
        if beater is not None:
            beater.join(2.0)
        if hangups is not None:
            hangups.close()
        driver.close()
        if keys is not None:
            keys.stop()
        ctx.destroy(linger=500)


def _is_node_of(pid: int, node_id: str, index: int) -> bool:
    """Whether process ``pid`` runs ``split4ml node ... --stage`` this node (by id or index), per
    ``/proc/PID/cmdline``: a pid can be reused, and only a node's own predecessor may be killed."""
    try:
        args = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return False
    if "node" not in args:
        return False
    stages = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--stage"]
    stages += [a.split("=", 1)[1] for a in args if a.startswith("--stage=")]
    return any(s in (node_id, str(index)) for s in stages)


def end_predecessor(pid: int, node_id: str, index: int, wait_s: float = 5.0) -> bool:
    """Kill this node's previous process ``pid`` (SIGKILL ends a stopped process too) and wait until it
    is gone, so its port is free; True if it was killed. A process that is not a ``split4ml node`` of
    this stage (the pid was reused, or it already exited) is left alone. Without ``/proc`` nothing is
    done."""
    if pid <= 1 or pid == os.getpid() or not _is_node_of(pid, node_id, index):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:  # its file table is gone (the kernel may hold the port a moment longer: bind retries)
            if not os.listdir(f"/proc/{pid}/fd"):
                return True
        except OSError:
            return True
        time.sleep(0.02)
    raise RuntimeFault(f"node {node_id}: its previous process (pid {pid}) did not end within {wait_s:g} s of "
                       "SIGKILL; it may still hold the node's port")


def _party(consumer: str) -> str:
    """The key name of a consumer: a node's id, or the launcher's for the sink."""
    return LAUNCHER if consumer == "sink" else consumer


class _Stop(Exception):
    """A STOP frame arrived."""


#: Frames a paced node holds computed but not yet sent (its fabric and send link are busy with them).
PACED_AHEAD = 8


def _paced_loop(pull: zmq.Socket, hwm: int, ahead: int, pacer: NodePacer, take: Callable[..., Any], compute: Callable[..., Any],
                deliver: Callable[[int, bytes], bool], chaos_after_frame: Callable[[], None],
                tick: Callable[[], bool], counters: NodeCounters) -> None:
    """The node loop of a paced run (:mod:`split4ml.runtime.pace`): frames are read as soon as they
    arrive (time-stamped, at most ``hwm`` held), computed as soon as they are complete, and each
    outgoing frame is sent when the paced send link is done with it; at most ``ahead`` frames wait to
    be sent."""
    inbox: deque[tuple[float, bytes]] = deque()
    outbox: deque[tuple[float, int, bytes]] = deque()  # (due, consumer, frame); dues never decrease
    while not tick():
        now = time.monotonic()
        sent_some = False
        while outbox and outbox[0][0] <= now:
            _, consumer, out = outbox.popleft()
            if not deliver(consumer, out):
                return
            sent_some = True
        if sent_some and not outbox:
            chaos_after_frame()  # die_after: once the frames computed so far have left
        if inbox and len(outbox) < ahead:
            arrival, buf = inbox.popleft()
            t_active = time.perf_counter()
            got = take(buf, arrival)
            if got is not None:
                x, seq, count, t0, t_in = got
                outs = compute(x, seq, count, t0)
                done = pacer.computed(t_in, count, time.monotonic())
                for consumer, out in outs:
                    outbox.append((pacer.sent(done, len(out)), consumer, out))
                counters.pace_overruns = pacer.overruns
                counters.active_s += time.perf_counter() - t_active
            continue
        wait = (outbox[0][0] - now) if outbox else 0.1
        if len(inbox) >= max(1, hwm):
            time.sleep(max(0.0, min(wait, 0.1)))
        elif wait < 2e-3:
            if pull.poll(0):
                inbox.append((time.monotonic(), pull.recv(copy=True)))
            else:
                time.sleep(max(0.0, wait))
        elif pull.poll(int(wait * 1000) - 1):
            while len(inbox) < max(1, hwm):
                try:
                    inbox.append((time.monotonic(), pull.recv(zmq.NOBLOCK, copy=True)))
                except zmq.Again:
                    break


def consumer_ids(spec: RuntimeSpec, node_id: str) -> list[str]:
    """Ids of the consumers (node ids or ``sink``) node ``node_id`` sends to, in order."""
    me = spec.node(node_id)
    return list(OrderedDict.fromkeys(spec.name_of(p.consumer) for p in spec.parts_from(me.index)))


__all__ = ["NodeCounters", "NodeOptions", "SINK", "consumer_ids", "serve_node"]
