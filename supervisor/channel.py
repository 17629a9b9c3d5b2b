"""The supervisor's end of one shard's ZeroMQ link: batched sends, one reader, futures by request id.

Lifecycle: ``open`` (DEALER connects to the shard's ipc endpoint; requests queue in ZeroMQ until the
shard binds) → ``up`` after the first answered ping → ``close`` when the shard dies or is replaced
(every waiting future fails with ``StoreUnavailable``). A channel is never reused across shard
generations, so a late reply from a dead shard can never resolve a new request.

Hot path: ``call`` appends the request to the outgoing batch and schedules one flush per loop turn;
the socket FD is edge-triggered, so after every send and wake-up the socket is drained until
``ZMQ_EVENTS`` shows no more input.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import zmq

from bigbunny import errors, wire

log = logging.getLogger("bbd.channel")
Result = tuple[int, Any, Any, bytes, Any]  # (err, a, b, body, replication record or None)


# Loop turns a batch waits before it is sent: requests parsed in those turns join it, so one ZeroMQ
# send (which wakes ZeroMQ's I/O thread, ~15 µs) serves several requests. Measured on 2 cores,
# snapshot C=64: 1 turn → 3.5 requests/batch, 46 µs supervisor CPU/request; 3 turns → ~6, 35-39 µs.
FLUSH_AFTER_TURNS = 3
STALE_AFTER = 5.0


class ShardDown(Exception):
    """The shard behind this channel is not serving (dead, hung, restarting)."""


class ShardChannel:
    def __init__(self, ctx: zmq.Context, endpoint: str, loop: asyncio.AbstractEventLoop) -> None:
        self.endpoint = endpoint
        self.loop = loop
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)  # bounded by our own pending map, not by silent drops
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)  # the shard binds a few ms after spawn: retry fast
        self.sock.connect(endpoint)
        self.fd = self.sock.getsockopt(zmq.FD)
        self.pending: dict[int, asyncio.Future[Result]] = {}
        self.hdrs: list[tuple[Any, ...]] = []
        self.bodies: list[bytes] = []
        self.flush_scheduled = False
        self._seen: set[int] = set()
        self.closed = False
        self._rid = itertools.count(1).__next__
        loop.add_reader(self.fd, self._drain)

    def call(
        self,
        op: int,
        sid: str = "",
        customer: str = "",
        ttl: int | None = None,
        flags: int = 0,
        lock: str | None = None,
        allow: Any = None,
        extra: Any = None,
        body: bytes = b"",
    ) -> asyncio.Future[Result]:
        """Queue one request; the future resolves to ``(err, a, b, body)``."""
        fut = self.loop.create_future()
        if self.closed:
            fut.set_exception(ShardDown())
            return fut
        rid = self._rid()
        self.pending[rid] = fut
        self.hdrs.append((rid, op, sid, customer, ttl, flags, lock, allow, extra))
        self.bodies.append(body)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush_later, FLUSH_AFTER_TURNS)
        return fut

    def _flush_later(self, turns: int) -> None:
        if turns > 1:
            self.loop.call_soon(self._flush_later, turns - 1)
        else:
            self._flush()

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.closed or not self.hdrs:
            return
        hdrs, bodies = self.hdrs, self.bodies
        self.hdrs, self.bodies = [], []
        try:
            frame = wire.pack(hdrs, bodies)
        except (ValueError, TypeError, OverflowError) as e:  # a bug must fail its requests, not wedge the channel
            log.error("cannot encode a batch for %s: %s", self.endpoint, e)
            for h in hdrs:
                self._fail(h[0], errors.INTERNAL)
            return
        try:
            self.sock.send(frame, zmq.NOBLOCK, copy=True)
        except zmq.Again:  # cannot happen with SNDHWM 0, but never lose requests silently
            self.hdrs, self.bodies = hdrs + self.hdrs, bodies + self.bodies
            self.flush_scheduled = True
            self.loop.call_later(0.001, self._flush)
            return
        except zmq.ZMQError as e:
            log.error("send to %s failed: %s", self.endpoint, e)
            self.close()
            return
        # A send may have processed the command that announced a reply, consuming the FD's edge:
        # ask ZMQ_EVENTS (no exception, unlike a recv that ends in EAGAIN) whether one is waiting.
        try:
            if self.sock.get(zmq.EVENTS) & zmq.POLLIN:
                self._drain()
        except zmq.ZMQError as e:
            log.error("poll of %s failed: %s", self.endpoint, e)
            self.close()

    def _fail(self, rid: int, exc: BaseException) -> None:
        fut = self.pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def expire_stale(self) -> int:
        """Fail requests that were already pending at the previous call (≥ ``STALE_AFTER`` apart):
        a shard that answers pings but lost a request must not leave its client waiting forever."""
        stale = [rid for rid in self._seen if rid in self.pending]
        for rid in stale:
            self._fail(rid, ShardDown())
        self._seen = set(self.pending)
        return len(stale)

    def _drain(self) -> None:
        # recv first (a wake-up nearly always has a reply waiting), then ZMQ_EVENTS to decide whether
        # to go on: a recv ending in EAGAIN raises zmq.Again, ~10 µs on a just-woken thread against
        # ~1 µs for the EVENTS check, which re-arms the edge-triggered FD just the same.
        sock, pending = self.sock, self.pending
        try:
            while not self.closed:
                for hdr, body in wire.unpack(sock.recv(zmq.NOBLOCK, copy=True)):
                    fut = pending.pop(hdr[0], None)
                    if fut is not None and not fut.done():
                        fut.set_result((hdr[1], hdr[2], hdr[3], body, hdr[4] if len(hdr) > 4 else None))
                if not sock.get(zmq.EVENTS) & zmq.POLLIN:
                    return
        except zmq.Again:
            return
        except zmq.ZMQError as e:
            log.error("receive from %s failed: %s", self.endpoint, e)
            self.close()

    def close(self) -> None:
        """Fail everything waiting and release the socket (LINGER 0: nothing is flushed to a dead shard)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.fd)
        except (ValueError, OSError):
            pass
        self.sock.close(0)
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ShardDown())
        self.hdrs, self.bodies = [], []
