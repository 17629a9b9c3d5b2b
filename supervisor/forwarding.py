"""Request relay to the primary over the inter-node link (SPEC §2.12 as amended by §14, §7.8).

A non-primary relays forwardable requests — and, while JOINING, every ``/api/v1`` request (it has no
trustworthy data yet) — as ``relay`` messages (method, raw path, headers, body, correlation id). The
primary runs them through its normal ASGI pipeline, rate limiter included, marked as relayed so
they are never relayed again, and answers with status, headers and body, returned verbatim.
Failures answer ``503 LeaderChanged`` with ``Retry-After: 1``: relay refused or marked
no-forward, no leader known, link down, or no answer within ``RELAY_TIMEOUT``. A JOINING node with
no reachable primary answers ``503 StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from bigbunny import errors
from bigbunny.errors import ApiError
from bigbunny.supervisor import peerlink
from bigbunny.supervisor.requests import ApiRequest, pick_headers
from bigbunny.supervisor.responses import Capture
from bigbunny.supervisor.role import JOINING

if TYPE_CHECKING:
    from bigbunny.supervisor.cluster import Cluster
    from bigbunny.supervisor.node import Node

log = logging.getLogger("bbd.relay")
RELAY_TIMEOUT = 5.0
PEER_SILENT_AFTER = 2.0
FORWARDING_FAILED = ApiError(503, "forwarding failed", "LeaderChanged", 1)


class Forwarder:
    def __init__(self, node: Node, cluster: Cluster) -> None:
        self.node = node
        self.cluster = cluster
        self.api: Any = None  # the node's StoreApi, set once it exists
        self.pending: dict[int, asyncio.Future[list[Any]]] = {}
        self._ids = itertools.count(1)
        self.relayed_out = 0
        self.relayed_in = 0

    # --- non-primary side ------------------------------------------------------------------------
    async def forward(self, req: ApiRequest) -> tuple[int, list[Any], bytes]:
        """Relay one request; returns the primary's ``(status, headers, body)`` or raises the ApiError
        to answer instead."""
        if req.relayed or req.no_forward:
            raise errors.NOT_PRIMARY_NO_FORWARD
        cl = self.cluster
        now = time.monotonic()
        reachable = cl.peer_seen is not None and now - cl.peer_seen <= PEER_SILENT_AFTER
        if cl.leader is None or cl.leader == self.node.cfg.host_id or not reachable:
            raise errors.STORE_UNAVAILABLE if self.node.role.role == JOINING else errors.LEADER_UNKNOWN
        body = req.body  # over the limit it was cut to limit + 1 bytes: the primary still answers 413
        corr = next(self._ids)
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.pending[corr] = fut
        headers = [[k, v] for k, v in req.headers]
        try:
            if not cl.send(peerlink.RELAY, [corr, req.method.decode("latin-1"), req.path, headers], body):
                raise FORWARDING_FAILED
            self.relayed_out += 1
            try:
                reply = await asyncio.wait_for(fut, RELAY_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                raise FORWARDING_FAILED from None
        finally:
            self.pending.pop(corr, None)
        status, rheaders, rbody = reply
        return int(status), rheaders, rbody

    def on_relay_reply(self, hdr: list[Any], body: bytes) -> None:
        corr, status, headers = hdr[5], hdr[6], hdr[7]
        fut = self.pending.get(corr)
        if fut is not None and not fut.done():
            fut.set_result([status, headers, body])

    def fail_all(self) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.cancel()

    # --- primary side ----------------------------------------------------------------------------
    def on_relay(self, hdr: list[Any], body: bytes) -> None:
        corr, method, raw_path, headers = hdr[5], hdr[6], hdr[7], hdr[8]
        self.relayed_in += 1
        asyncio.get_running_loop().create_task(self._serve(corr, method, raw_path, headers, body))

    async def _serve(self, corr: int, method: str, raw_path: bytes, headers: list[list[bytes]], body: bytes) -> None:
        """Answer a relayed request through this node's own API handlers; the answer goes back once."""
        sent = False

        def deliver(status: int, rheaders: list[tuple[bytes, bytes]], rbody: bytes) -> None:
            nonlocal sent
            if not sent:
                sent = True
                self.cluster.send(peerlink.RELAY_REPLY, [corr, status, [[k, v] for k, v in rheaders]], rbody)

        out = Capture(deliver)
        raw = [(bytes(k), bytes(v)) for k, v in headers]
        limit = self.node.cfg.max_store_size
        req = ApiRequest(
            method.encode("latin-1"),
            bytes(raw_path),
            raw,
            pick_headers(raw),
            body,
            len(body) > limit,
            out,
            relayed=True,
        )
        if not req.path.startswith(b"/api/v1/"):
            out.error(req, errors.PAGE_NOT_FOUND)
            return
        try:
            self.api.handle(req)
        except Exception:  # noqa: BLE001 - a relayed request must always get an answer
            log.exception("relayed request failed")
            out.error(req, errors.INTERNAL)
