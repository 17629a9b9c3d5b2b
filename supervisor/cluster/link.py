"""The inter-node link (SPEC §7.8): a ZeroMQ PUSH to the peer, our PULL bound on ``--tcp``.

Each message is three frames ``[mac, header, body]``: ``header`` and ``body`` are one message of
``supervisor.cluster.messages`` (which names every message and its fields) and ``mac`` an HMAC-SHA256
over header and body keyed from the internal token, compared in constant time *before* the header
is decoded; a header that does not unpack to a known message is dropped like a bad MAC. Outside
``--dev`` the sockets also use CURVE (encryption + authentication) with key pairs derived from the
internal token, so a node with the wrong token can neither read nor inject traffic. An empty token
(dev only) disables both and accepts everything.

Bounded everywhere: PUSH has IMMEDIATE (no silent queueing towards a dead peer — our own bounded,
acknowledged replication window retries instead), small HWMs, LINGER 0 at close; the PULL drains
from the event loop via its edge-triggered FD, one reader for the socket.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from hashlib import sha256
from typing import Any, TypeVar, cast

import zmq
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from zmq.utils import z85  # a submodule: not loaded by ``import zmq``
from zmq.utils.monitor import recv_monitor_message

from bigbunny.logs import Throttle
from bigbunny.supervisor.cluster.messages import Malformed, Message, Origin, kind_of, pack, unpack

log = logging.getLogger("bbd.link")
_reject_log = Throttle(log)  # a flood of bad messages cannot fill the disk
M = TypeVar("M", bound=Message)
Handler = Callable[[Origin, Any], None]


def _derive(token: str, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"bbd-link:" + label).derive(
        token.encode("utf-8", "surrogateescape")
    )


def curve_keys(token: str) -> tuple[bytes, bytes, bytes, bytes]:
    """(server_public, server_secret, client_public, client_secret), Z85, derived from the token."""
    out = []
    for label in (b"curve-server", b"curve-client"):
        secret = z85.encode(_derive(token, label))
        out += [zmq.curve_public(secret), secret]
    return out[0], out[1], out[2], out[3]


def tcp_bind_endpoint(addr: str) -> str:
    host, _, port = addr.rpartition(":")
    return f"tcp://{host or '*'}:{port}"


def tcp_connect_endpoint(addr: str) -> str:
    host, _, port = addr.rpartition(":")
    return f"tcp://{host or '127.0.0.1'}:{port}"


def _fd(sock: zmq.Socket) -> int:
    # pyzmq types every socket option int | bytes; ZMQ_FD is always an int.
    return cast(int, sock.getsockopt(zmq.FD))


class PeerLink:
    def __init__(self, host_id: str, site: str, bind: str, peer_addr: str, token: str, dev: bool) -> None:
        self.host_id = host_id
        self.site = site
        self.bind_addr = bind
        self.peer_addr = peer_addr
        self.token = token
        self.mac_key = _derive(token, b"mac") if token else b""
        self.curve = bool(token) and not dev
        self.handlers: dict[type[Any], Handler] = {}
        self.on_link_down: Callable[[], None] | None = None  # our PUSH's connection closed
        self.ctx = zmq.Context(1)
        self.pull: zmq.Socket | None = None
        self.monitor: zmq.Socket | None = None
        self.push: zmq.Socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dropped_bad_mac = 0
        self.sent = 0

    def on(self, kind: type[M], handler: Callable[[Origin, M], None]) -> None:
        """Call ``handler(origin, message)`` for every authenticated message of type ``kind``."""
        self.handlers[kind] = handler

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVHWM, 10_000)
        pull.setsockopt(zmq.MAXMSGSIZE, 256 << 20)
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.setsockopt(zmq.SNDHWM, 10_000)
        push.setsockopt(zmq.IMMEDIATE, 1)
        push.setsockopt(zmq.RECONNECT_IVL, 100)
        push.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        push.setsockopt(zmq.HEARTBEAT_IVL, 1000)  # TCP-level liveness: a dead peer's pipe is torn down
        push.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        if self.curve:
            spub, ssec, cpub, csec = curve_keys(self.token)
            pull.curve_server = True
            pull.curve_secretkey = ssec
            pull.curve_publickey = spub
            push.curve_serverkey = spub
            push.curve_publickey = cpub
            push.curve_secretkey = csec
        try:
            pull.bind(tcp_bind_endpoint(self.bind_addr))
        except zmq.ZMQError as e:
            pull.close(0)
            push.close(0)
            raise RuntimeError(f"failed to listen on TCP {self.bind_addr}: {e}") from e
        push.connect(tcp_connect_endpoint(self.peer_addr))
        self.pull, self.push = pull, push
        self.loop.add_reader(_fd(pull), self._drain)
        # Connection events of our PUSH: a peer process that dies closes its socket at once, which
        # lets the cluster check on its leader long before the lease runs out.
        self.monitor = push.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.loop.add_reader(_fd(self.monitor), self._drain_monitor)
        self.loop.call_soon(self._drain_monitor)
        self.loop.call_soon(self._drain)

    # --- sending -------------------------------------------------------------------------------
    def send(self, epoch: int, msg: Message) -> bool:
        """Send one message stamped with ``epoch``; False if the peer is not connected (nothing is
        queued for later)."""
        if self.push is None:
            return False
        header, body = pack(Origin(self.host_id, self.site, epoch, time.time()), msg)
        mac = hmac.new(self.mac_key, header + body, sha256).digest() if self.mac_key else b""
        try:
            self.push.send_multipart([mac, header, body], zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        except zmq.ZMQError as e:
            log.warning("send to peer failed: %s", e)
            return False
        self.sent += 1
        return True

    # --- receiving -----------------------------------------------------------------------------
    def _drain(self) -> None:
        pull = self.pull
        if pull is None:
            return
        while True:
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            except zmq.ZMQError as e:
                log.warning("receive from peer failed: %s", e)
                return
            self._dispatch(frames)

    def _dispatch(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            self._reject(f"malformed message ({len(frames)} frames)")
            return
        mac, header, body = frames
        if self.mac_key:
            want = hmac.new(self.mac_key, header + body, sha256).digest()
            if not hmac.compare_digest(mac, want):  # authenticate before decoding anything
                self._reject("bad MAC (wrong internal token?)")
                return
        try:
            origin, msg = unpack(header, body)
        except Malformed as e:
            self._reject(str(e))
            return
        handler = self.handlers.get(type(msg))
        if handler is None:
            self._reject(f"no handler for {kind_of(msg)}")
            return
        try:
            handler(origin, msg)
        except Exception:  # a handler bug must not kill the link reader
            log.exception("handling %r from peer failed", kind_of(msg))

    def _reject(self, why: str) -> None:
        self.dropped_bad_mac += 1
        _reject_log.log(
            logging.WARNING,
            "dropped from the peer link",
            "dropped a message from the peer link: %s (%d so far)",
            why,
            self.dropped_bad_mac,
        )

    def _drain_monitor(self) -> None:
        mon = self.monitor
        if mon is None:
            return
        while True:
            try:
                event = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            handler = self.on_link_down
            if event["event"] != zmq.EVENT_CONNECTED and handler is not None:
                try:
                    handler()
                except Exception:  # a handler bug must not kill the monitor reader
                    log.exception("link down handler failed")

    def close(self) -> None:
        if self.loop is not None and self.pull is not None:
            try:
                self.loop.remove_reader(_fd(self.pull))
                if self.monitor is not None:
                    self.loop.remove_reader(_fd(self.monitor))
            except (ValueError, OSError, zmq.ZMQError):
                pass
        if self.monitor is not None:
            self.monitor.close(0)
            self.monitor = None
            if self.push is not None:
                try:
                    self.push.disable_monitor()
                except zmq.ZMQError:
                    pass
        for s in (self.pull, self.push):
            if s is not None:
                s.close(0)
        self.pull = self.push = None
        self.ctx.term()
