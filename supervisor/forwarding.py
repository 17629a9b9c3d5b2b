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
from urllib.parse import unquote

from bigbunny import errors
from bigbunny.errors import ApiError
from supervisor import peerlink, responses
from supervisor.requests import Disconnected, Headers
from supervisor.role import JOINING

if TYPE_CHECKING:
    from supervisor.cluster import Cluster
    from supervisor.node import Node

log = logging.getLogger("bbd.relay")
RELAY_TIMEOUT = 5.0
PEER_SILENT_AFTER = 2.0
FORWARDING_FAILED = ApiError(503, "forwarding failed", "LeaderChanged", 1)


class Forwarder:
    def __init__(self, node: Node, cluster: Cluster) -> None:
        self.node = node
        self.cluster = cluster
        self.app: Any = None  # the node's ASGI app, set once it exists
        self.pending: dict[int, asyncio.Future[list[Any]]] = {}
        self._ids = itertools.count(1)
        self.relayed_out = 0
        self.relayed_in = 0

    # --- non-primary side ------------------------------------------------------------------------
    async def forward(self, scope: dict[str, Any], receive: Any, send: Any, h: Headers) -> int:
        """Relay one request; returns the status answered (0 if the client went away)."""
        if scope.get("bbd.relayed") or h.no_forward:
            return await responses.send_error(send, errors.NOT_PRIMARY_NO_FORWARD)
        cl = self.cluster
        now = time.monotonic()
        reachable = cl.peer_seen is not None and now - cl.peer_seen <= PEER_SILENT_AFTER
        if cl.leader is None or cl.leader == self.node.cfg.host_id or not reachable:
            err = errors.STORE_UNAVAILABLE if self.node.role.role == JOINING else errors.LEADER_UNKNOWN
            return await responses.send_error(send, err)
        try:
            body = await _read_all(receive, self.node.cfg.max_store_size + 1)
        except Disconnected:
            return 0
        corr = next(self._ids)
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.pending[corr] = fut
        headers = [[k, v] for k, v in scope["headers"]]
        try:
            if not cl.send(peerlink.RELAY, [corr, scope["method"], scope["raw_path"], headers], body):
                return await responses.send_error(send, FORWARDING_FAILED)
            self.relayed_out += 1
            try:
                reply = await asyncio.wait_for(fut, RELAY_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                return await responses.send_error(send, FORWARDING_FAILED)
        finally:
            self.pending.pop(corr, None)
        status, rheaders, rbody = reply
        await send({"type": "http.response.start", "status": status, "headers": [(k, v) for k, v in rheaders]})
        await send({"type": "http.response.body", "body": rbody})
        return int(status)

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
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": b"",
            "root_path": "",
            "headers": [(bytes(k), bytes(v)) for k, v in headers],
            "client": None,
            "server": None,
            "state": {},
            "bbd.relayed": True,
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        out: dict[str, Any] = {"status": 500, "headers": [], "body": []}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
                out["headers"] = [[k, v] for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                out["body"].append(message.get("body", b""))

        try:
            await self.app(scope, receive, capture)
        except Exception:  # noqa: BLE001 - a relayed request must always get an answer
            log.exception("relayed request failed")
            out = {"status": 500, "body": [b"internal error\n"], "headers": [
                [b"content-type", b"text/plain; charset=utf-8"], [b"x-content-type-options", b"nosniff"]]}
        self.cluster.send(peerlink.RELAY_REPLY, [corr, out["status"], out["headers"]], b"".join(out["body"]))


async def _read_all(receive: Any, cap: int) -> bytes:
    """The request body, up to ``cap`` bytes (the primary applies the real size limit)."""
    chunks, size = [], 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise Disconnected
        chunk = msg.get("body", b"")
        if size < cap:
            chunks.append(chunk[: cap - size])
        size += len(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)
