"""Shard worker process: entry point run by the supervisor with the ``spawn`` start method.

Lifecycle: spawned → builds its own ZeroMQ context and binds its private ``ipc://`` endpoint (the
supervisor's DEALER has already connected and queued any early requests) → serves batches until
SIGTERM, or until its parent disappears (then it exits on its own: a shard never outlives its
supervisor) → closes the socket with LINGER 0 and terminates the context.

One request batch in, one reply batch out: the loop drains everything readable, runs it, and answers
with a single one-frame message, which keeps per-message ZeroMQ cost off the per-request path.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from typing import Any

import zmq

from bigbunny import wire
from bigbunny.logs import setup_logging
from bigbunny.shards.engine import StoreEngine
from bigbunny.shards.gcpolicy import GcPolicy
from bigbunny.shards.ops import ShardOps
from bigbunny.storeid import KeySet, StoreIdCodec

_POLL_MS = 250
_MAX_BATCH = 256
# ZeroMQ's constants are enums: ``int & zmq.POLLIN`` builds an enum member (~1 µs); plain ints do not.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL us if the supervisor dies, even by SIGKILL (no orphaned shards)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the getppid() check in the loop still covers it
        pass


def shard_main(index: int, shards: int, endpoint: str, settings: dict[str, Any]) -> None:
    """Process entry point. ``settings`` is plain data (spawn pickles it): keys, site, timeouts, log settings."""
    parent = settings.get("supervisor_pid") or os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before PDEATHSIG was armed
        return
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True  # only record; the loop acts

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the supervisor's; it sends what changed
    # the supervisor's level and format (text or JSON), set up by the same code as its own logging
    setup_logging(settings["log_level"], settings["log_format"])
    log = logging.getLogger(f"bbd.shard.{index}")
    keys = KeySet({k: bytes.fromhex(v) for k, v in settings["keys"].items()}, settings["current"])
    codec = StoreIdCodec(keys, settings["site"], settings["verify_site"])
    engine = StoreEngine(lock_timeout=settings["lock_timeout"], default_ttl=settings["default_ttl"])
    ops = ShardOps(index, shards, engine, codec, replicate=bool(settings.get("replicate")))

    ctx = zmq.Context(1)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    try:
        sock.bind(endpoint)
        log.info("shard %d up (pid %d)", index, os.getpid())
        _serve(sock, ops, lambda: stop or os.getppid() != parent, log)
    finally:
        sock.close(0)
        ctx.term()
    log.info("shard %d stopped", index)


def _serve(sock: zmq.Socket, ops: ShardOps, should_stop: Any, log: logging.Logger) -> None:
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    handle = ops.handle
    unpack, pack, request = wire.unpack, wire.pack, wire.Request
    heap = GcPolicy()
    heap.settle()
    while not should_stop():
        heap.tick()
        if not poller.poll(_POLL_MS):
            continue
        replies: list[tuple[Any, ...]] = []  # wire.Reply fields, as plain tuples (see bigbunny.wire)
        bodies: list[bytes] = []
        for _ in range(_MAX_BATCH):
            try:
                frame = sock.recv(_NOBLOCK, copy=True)
            except zmq.Again:
                break
            # Not a recv ending in zmq.Again: ~10 µs when cold. pyzmq types every option int | bytes; EVENTS is an int.
            more = sock.get(_EVENTS) & _POLLIN  # type: ignore[operator]
            try:
                for fields, body in unpack(frame, request):
                    reply, rbody = handle(fields, body)
                    replies.append(reply)
                    bodies.append(rbody)
            except (ValueError, TypeError, KeyError, IndexError) as e:  # malformed batch: drop it, keep serving
                log.error("dropping malformed batch: %s", e)
            if not more:
                break
        if replies:
            sock.send(pack(replies, bodies), copy=True)
