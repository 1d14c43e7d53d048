"""Port reservation: a node's port is held for it until the run ends."""

from __future__ import annotations

import socket

import pytest
import zmq

from split4ml.runtime.transport import PortReservation, bind


def test_reserved_port_is_bindable_by_a_node_and_by_no_one_else() -> None:
    ctx = zmq.Context.instance()
    with PortReservation(2) as res:
        a, b = res.ports
        assert a != b
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # a program without SO_REUSEADDR
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", a))
        other.close()
        node = ctx.socket(zmq.PULL)
        try:
            assert bind(node, f"tcp://127.0.0.1:{a}", "node") == f"tcp://127.0.0.1:{a}"
            peer = ctx.socket(zmq.PUSH)
            peer.connect(f"tcp://127.0.0.1:{a}")
            peer.send(b"frame")
            assert node.poll(5000) and node.recv() == b"frame"
            peer.close(linger=0)
        finally:
            node.close(linger=0)


def test_os_chosen_ports_avoid_reserved_ones() -> None:
    ctx = zmq.Context.instance()
    with PortReservation(20) as res:
        socks = [ctx.socket(zmq.PULL) for _ in range(50)]
        try:
            got = {int(bind(s, "tcp://127.0.0.1:0", "sink").rsplit(":", 1)[1]) for s in socks}
        finally:
            for s in socks:
                s.close(linger=0)
        assert not got & set(res.ports)
        assert len(got) == 50


def test_release_frees_the_ports() -> None:
    res = PortReservation(1)
    (port,) = res.ports
    res.release()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.close()
