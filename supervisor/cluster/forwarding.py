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
from typing import TYPE_CHECKING, Protocol

from bigbunny import errors
from bigbunny.errors import ApiError
from bigbunny.supervisor.cluster.messages import Message, Origin, RelayAnswer, RelayRequest
from bigbunny.supervisor.front.requests import ApiHandler, ApiRequest, pick_headers
from bigbunny.supervisor.front.responses import Capture
from bigbunny.supervisor.state.role import JOINING

if TYPE_CHECKING:
    from bigbunny.supervisor.state.node import Node

log = logging.getLogger("bbd.relay")
RELAY_TIMEOUT = 5.0
PEER_SILENT_AFTER = 2.0
FORWARDING_FAILED = ApiError(503, "forwarding failed", "LeaderChanged", 1)


class PeerChannel(Protocol):
    """What relaying needs of the cluster: when the peer was last heard from, and a way to send."""

    peer_seen: float | None  # monotonic

    def send(self, msg: Message) -> bool: ...


class Forwarder:
    def __init__(self, node: Node, peer: PeerChannel) -> None:
        self.node = node
        self.peer = peer
        self.api: ApiHandler | None = None  # the node's StoreApi, set once it exists
        self.pending: dict[int, asyncio.Future[RelayAnswer]] = {}
        self._ids = itertools.count(1)
        self.relayed_out = 0
        self.relayed_in = 0

    # --- non-primary side ------------------------------------------------------------------------
    async def forward(self, req: ApiRequest) -> RelayAnswer:
        """Relay one request; returns the primary's answer or raises the ApiError to answer instead."""
        if req.relayed or req.no_forward:
            raise errors.NOT_PRIMARY_NO_FORWARD
        seen, role = self.peer.peer_seen, self.node.role
        reachable = seen is not None and time.monotonic() - seen <= PEER_SILENT_AFTER
        if role.leader is None or role.leader == self.node.cfg.host_id or not reachable:
            raise errors.STORE_UNAVAILABLE if role.role == JOINING else errors.LEADER_UNKNOWN
        body = req.body  # over the limit it was cut to limit + 1 bytes: the primary still answers 413
        corr = next(self._ids)
        fut: asyncio.Future[RelayAnswer] = asyncio.get_running_loop().create_future()
        self.pending[corr] = fut
        headers = [[k, v] for k, v in req.headers]
        try:
            if not self.peer.send(RelayRequest(corr, req.method.decode("latin-1"), req.path, headers, body)):
                raise FORWARDING_FAILED
            self.relayed_out += 1
            try:
                reply = await asyncio.wait_for(fut, RELAY_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                raise FORWARDING_FAILED from None
        finally:
            self.pending.pop(corr, None)
        return reply

    def on_relay_reply(self, origin: Origin, answer: RelayAnswer) -> None:
        fut = self.pending.get(answer.corr)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    def fail_all(self) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.cancel()

    # --- primary side ----------------------------------------------------------------------------
    def on_relay(self, origin: Origin, relay: RelayRequest) -> None:
        self.relayed_in += 1
        asyncio.get_running_loop().create_task(
            self._serve(relay.corr, relay.method, relay.raw_path, relay.headers, relay.body)
        )

    async def _serve(self, corr: int, method: str, raw_path: bytes, headers: list[list[bytes]], body: bytes) -> None:
        """Answer a relayed request through this node's own API handlers; the answer goes back once."""
        sent = False

        def deliver(status: int, rheaders: list[tuple[bytes, bytes]], rbody: bytes) -> None:
            nonlocal sent
            if not sent:
                sent = True
                self.peer.send(RelayAnswer(corr, status, [[k, v] for k, v in rheaders], rbody))

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
            if self.api is None:
                raise RuntimeError("relay before the API is wired")  # start-up only: answered as below
            self.api.handle(req)
        except Exception:  # noqa: BLE001 - a relayed request must always get an answer
            log.exception("relayed request failed")
            out.error(req, errors.INTERNAL)
