"""Encrypted, authenticated links: ZeroMQ CURVE with a ZAP handler that knows the run's public keys.

``split4ml keys DIR --names launcher stage_0 stage_1 ...`` (or ``--plan PLAN``: the launcher and every
node of the plan) writes one key pair per party (pyzmq's certificate files)::

    DIR/public/<name>.key          the public keys: every party gets all of them
    DIR/secret/<name>.key_secret   one secret key: only <name> gets its own

The launcher's party is ``launcher`` (source, sink and statistics); a node's is its id. Every socket
that binds (a node's input, the sink, the statistics) is a CURVE server with its party's key pair,
and accepts only clients whose public key is in ``DIR/public`` (the ZAP handler, which counts the
handshakes it refuses: ``rejected_by.key``). Every socket that connects is a CURVE client that knows
the public key of the party it connects to, so it talks to that party only. Frames and statistics
are then encrypted and authenticated end to end; the frame checks (:mod:`split4ml.runtime.wire`)
still apply inside.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import zmq

from ..errors import RuntimeFault

#: The launcher's party name (source, sink and statistics run there).
LAUNCHER = "launcher"


def make_keys(directory: str | Path, names: Iterable[str]) -> list[str]:
    """Write a key pair for each of ``names`` under ``directory`` (see the module docstring); names the
    directory already holds are kept. Returns the names written."""
    import zmq.auth

    d = Path(directory)
    (d / "public").mkdir(parents=True, exist_ok=True)
    (d / "secret").mkdir(parents=True, exist_ok=True)
    (d / "secret").chmod(0o700)
    written = []
    for name in names:
        if (d / "secret" / f"{name}.key_secret").exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            pub, sec = zmq.auth.create_certificates(tmp, name)
            shutil.move(pub, d / "public" / f"{name}.key")
            shutil.move(sec, d / "secret" / f"{name}.key_secret")
        (d / "secret" / f"{name}.key_secret").chmod(0o600)
        written.append(name)
    return written


class Keys:
    """One party's view of a keys directory: its key pair, the public keys it accepts, and the ZAP
    handler counting refused handshakes (``denied``)."""

    def __init__(self, directory: str | Path, me: str) -> None:
        import zmq.auth

        if not zmq.has("curve"):
            raise RuntimeFault("--keys: this pyzmq/libzmq has no CURVE support; install pyzmq from its wheels")
        self.dir = Path(directory)
        self.me = me
        secret = self.dir / "secret" / f"{me}.key_secret"
        if not secret.is_file():
            raise RuntimeFault(f"--keys {directory}: no secret key for {me!r} ({secret}); make the keys with "
                               f"'split4ml keys {directory} --plan PLAN' and copy {me}'s secret key there")
        try:
            self.public, self.secret = zmq.auth.load_certificate(secret)
            self.allowed = {zmq.auth.load_certificate(f)[0] for f in sorted((self.dir / "public").glob("*.key"))}
        except (OSError, ValueError) as exc:
            raise RuntimeFault(f"--keys {directory}: cannot read the keys ({exc})") from exc
        if self.secret is None:
            raise RuntimeFault(f"--keys {directory}: {secret} holds no secret key")
        self.denied = 0
        self._auth = None

    def peer_key(self, name: str) -> bytes:
        import zmq.auth

        path = self.dir / "public" / f"{name}.key"
        if not path.is_file():
            raise RuntimeFault(f"--keys {self.dir}: no public key for {name!r} ({path}); make it with "
                               f"'split4ml keys {self.dir} --names {name}'")
        return zmq.auth.load_certificate(path)[0]

    # the ZAP handler's credentials provider
    def callback(self, domain: str, key: bytes) -> bool:
        import zmq.utils.z85

        ok = zmq.utils.z85.encode(key) in self.allowed if len(key) == 32 else key in self.allowed
        if not ok:
            self.denied += 1
        return ok

    def start(self, ctx: zmq.Context) -> None:
        """Start the ZAP handler of ``ctx`` (before any server socket binds)."""
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(ctx)
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self)

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (not yet bound) a CURVE server of this party."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def client(self, sock: zmq.Socket, peer: str) -> None:
        """Make ``sock`` (not yet connected) a CURVE client of this party talking to ``peer`` only."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.peer_key(peer)


__all__ = ["LAUNCHER", "Keys", "make_keys"]
