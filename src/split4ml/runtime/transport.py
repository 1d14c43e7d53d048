"""ZeroMQ plumbing shared by nodes and the launcher.

Links are PUSH -> PULL over TCP: a consumer binds its input address; each producer connects one
PUSH socket per consumer. No broker. Every socket has a high-water mark (``hwm`` frames queued per
peer, on both sides), so a slow stage makes its producers' sends wait (backpressure) and memory
stays bounded; sends wait in slices of :data:`SEND_SLICE_MS` so a blocked process still notices a
stop request. Statistics go from every node to the launcher on a separate PUSH -> PULL link as
small JSON messages (``hello`` once ready, ``stats`` periodically, ``final`` when stopping).
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from ..errors import RuntimeFault

#: Milliseconds a blocked send waits before checking whether it should give up.
SEND_SLICE_MS = 100
#: Default high-water mark (frames) of every data socket.
DEFAULT_HWM = 16


#: The largest statistics message the launcher takes (a node's are a few hundred bytes).
MAX_STATS_BYTES = 1 << 16
#: The smallest message-size limit a socket gets (handshakes and small frames always pass).
MIN_MAX_BYTES = 1 << 16


def make_socket(ctx: zmq.Context, kind: int, hwm: int = DEFAULT_HWM, linger_ms: int = 0,
                max_bytes: int | None = None) -> zmq.Socket:
    """A socket with its high-water mark, a short send slice and quick reconnects; ``max_bytes``: a
    receiving socket drops (and disconnects) a peer that sends a larger message (``ZMQ_MAXMSGSIZE``)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, linger_ms)
    if max_bytes is not None:  # never below 64 KiB: handshakes (CURVE's are ~250 B) count too
        sock.setsockopt(zmq.MAXMSGSIZE, max(int(max_bytes), MIN_MAX_BYTES))
    if kind in (zmq.PUSH,):
        sock.setsockopt(zmq.SNDHWM, max(1, hwm))
        sock.setsockopt(zmq.SNDTIMEO, SEND_SLICE_MS)
    if kind in (zmq.PULL,):
        sock.setsockopt(zmq.RCVHWM, max(1, hwm))
    sock.setsockopt(zmq.RECONNECT_IVL, 20)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)  # a restarted peer is reached again within 0.1 s
    return sock


def watch_connections(socks: list[zmq.Socket]) -> list[zmq.Socket]:
    """Monitor sockets reporting when each of ``socks`` connects; call before ``connect``."""
    return [s.get_monitor_socket(zmq.EVENT_CONNECTED) for s in socks]


def wait_connected(socks: list[zmq.Socket], monitors: list[zmq.Socket], timeout_s: float,
                   give_up: Callable[[], bool]) -> list[int]:
    """Wait until every socket in ``socks`` has connected to its peer (at most ``timeout_s``),
    then stop monitoring; returns the indices of the sockets still unconnected. Connecting is
    asynchronous in ZeroMQ: a node that announced itself before its consumers accepted would hold
    its first frames back (and with a retry back-off, for a while)."""
    import zmq.utils.monitor

    waiting = set(range(len(socks)))
    deadline = time.monotonic() + timeout_s
    try:
        while waiting and time.monotonic() < deadline and not give_up():
            for i in list(waiting):
                if monitors[i].poll(20):
                    event = zmq.utils.monitor.recv_monitor_message(monitors[i])
                    if event["event"] == zmq.EVENT_CONNECTED:
                        waiting.discard(i)
    finally:
        for s in socks:
            with contextlib.suppress(zmq.ZMQError):
                s.disable_monitor()
        for m in monitors:
            m.close(linger=0)
    return sorted(waiting)


#: A connection that ends this close to a node's stop is taken for a producer finishing, not a drop.
HANGUP_GRACE_S = 0.5


class HangUps:
    """Counts the connections of a receiving socket that ended mid-run after a completed handshake.

    ZeroMQ closes the connection of a peer that sends a message over ``ZMQ_MAXMSGSIZE`` and says only
    that it disconnected; a peer that hangs up looks the same. A socket monitor attributes each
    disconnect, in the order the events come: first to a connection whose handshake failed (a wrong
    key: counted as ``key`` elsewhere), then to one that never finished its handshake (a port scan),
    and only then to an established connection, which is counted. When both an unfinished and an
    established connection are open the disconnect is given to the unfinished one: the count can be
    low, never high. :meth:`count` leaves out the disconnects of the last :data:`HANGUP_GRACE_S`:
    producers hang up when the run stops.
    """

    _EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
               | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
               | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock = sock
        self._monitor: zmq.Socket | None = sock.get_monitor_socket(self._EVENTS)
        self.unshaken = 0  # accepted, handshake not finished
        self.failed = 0  # handshake failed, not yet closed
        self.established = 0
        self.settled = 0  # established connections that ended longer than the grace ago
        self.recent: deque[float] = deque()  # when the others ended (monotonic seconds): memory stays bounded

    def poll(self) -> None:
        """Read the events that have come in (never blocks)."""
        import zmq.utils.monitor

        if self._monitor is None:
            return
        while self._monitor.poll(0):
            try:
                event = zmq.utils.monitor.recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            except (zmq.Again, ValueError, IndexError):
                return
            if event == zmq.EVENT_ACCEPTED:
                self.unshaken += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.unshaken = max(0, self.unshaken - 1)
                self.established += 1
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                           zmq.EVENT_HANDSHAKE_FAILED_AUTH):
                self.unshaken = max(0, self.unshaken - 1)
                self.failed += 1
            elif event == zmq.EVENT_DISCONNECTED:
                if self.failed:
                    self.failed -= 1
                elif self.unshaken:
                    self.unshaken -= 1
                elif self.established:
                    self.established -= 1
                    self.recent.append(time.monotonic())

    def count(self) -> int:
        """Established connections that ended at least :data:`HANGUP_GRACE_S` ago."""
        self.poll()
        cut = time.monotonic() - HANGUP_GRACE_S
        while self.recent and self.recent[0] <= cut:
            self.recent.popleft()
            self.settled += 1
        return self.settled

    def close(self) -> None:
        if self._monitor is None:
            return
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._monitor = None


def bind(sock: zmq.Socket, address: str, who: str, retry_s: float = 0.0) -> str:
    """Bind ``sock`` to ``address`` (``tcp://HOST:PORT``; port ``0`` or ``*`` lets the OS pick a free
    port, never one held by a :class:`PortReservation`); returns the address actually bound. A port in
    use is tried again for ``retry_s`` seconds (a process just killed may still hold it)."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return _bind_once(sock, address, who)
        except RuntimeFault:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _bind_once(sock: zmq.Socket, address: str, who: str) -> str:
    try:
        if address.endswith((":0", ":*")):
            host = address.rsplit(":", 1)[0]
            sock.bind(f"{host}:*")
            port = sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
            return f"{host}:{port}"
        sock.bind(address)
        return address
    except zmq.ZMQError as exc:
        raise RuntimeFault(f"{who}: cannot bind {address}: {exc}; pick another port or stop the process "
                           "using it") from exc


def connect(sock: zmq.Socket, address: str, who: str) -> None:
    try:
        sock.connect(address)
    except zmq.ZMQError as exc:
        raise RuntimeFault(f"{who}: cannot connect to {address}: {exc}; addresses look like "
                           "tcp://192.168.2.11:5555") from exc


def send_blocking(sock: zmq.Socket, buf: bytes, give_up: Callable[[], bool]) -> bool:
    """Send ``buf``, waiting while the peer's queue is full (backpressure); returns False if
    ``give_up()`` became true before the frame could be queued."""
    while True:
        try:
            sock.send(buf, copy=len(buf) < 8192)
            return True
        except zmq.Again:
            if give_up():
                return False


class PortReservation:
    """``n`` distinct TCP ports on ``host``, held until :meth:`release`.

    Each port stays bound (``SO_REUSEADDR``, never listening) by a socket of this process, so the
    OS hands it to no one else: not to another program binding port 0, and not as the local port of
    an outgoing connection (a node connecting to the sink, say). A node process can still bind it,
    because ZeroMQ listens with ``SO_REUSEADDR`` too. A port merely found free and closed again can
    be taken in the seconds before its node binds it.
    """

    def __init__(self, n: int, host: str = "127.0.0.1") -> None:
        self._socks: list[socket.socket] = []
        try:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, 0))
        except BaseException:
            self.release()
            raise
        self.ports = [s.getsockname()[1] for s in self._socks]

    def release(self) -> None:
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        self._socks = []

    def __enter__(self) -> PortReservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def pack_stats(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


#: The kinds of statistics message a node sends.
STATS_KINDS = ("hello", "stats", "final")
_STATS_COUNTS = ("frames", "samples", "received", "sent", "send_waits", "join_evicted", "pace_overruns")
_STATS_SECONDS = ("busy_s", "active_s", "send_s", "cpu_s")


def unpack_stats(buf: bytes) -> dict[str, Any] | None:
    """A well-formed statistics message, or None (it is then counted and dropped): a JSON object with
    ``kind`` (hello, stats or final), ``node`` (a string), ``pid`` (positive) and ``incarnation`` (not
    negative) integers, non-negative finite counters (integers) and times (seconds, none longer than
    ``wall_s``), and ``rejected`` counts by reason."""
    try:
        d = json.loads(buf.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(d, dict) or d.get("kind") not in STATS_KINDS or not isinstance(d.get("node"), str):
        return None

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53

    def seconds(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1e9

    if not (count(d.get("pid")) and d["pid"] > 0 and count(d.get("incarnation", 0))):
        return None
    if not all(count(d[k]) for k in _STATS_COUNTS if k in d):
        return None
    if not all(seconds(d[k]) for k in (*_STATS_SECONDS, "wall_s") if k in d):
        return None
    wall = float(d.get("wall_s", 0.0))
    if any(float(d[k]) > wall + 1.0 for k in _STATS_SECONDS if k in d and k != "cpu_s"):
        return None
    rej = d.get("rejected", {})
    if not isinstance(rej, dict) or not all(isinstance(k, str) and len(k) <= 32 and count(v) for k, v in rej.items()):
        return None
    return d
