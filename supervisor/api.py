"""Pure-ASGI handlers for ``/api/v1/*``: the hot path (SPEC §2).

The dispatcher does the steps the supervisor owns — route, method, customer (401/400), rate limit
(429) — then each handler reads what it needs (body with the size limit, TTL header), reserves memory
budget, and makes one call to the shard that owns the store. Supervisor state the shard must apply
at a later step of the check order travels as flags (see ``bigbunny.wire``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from bigbunny import errors, wire
from bigbunny.errors import ApiError
from bigbunny.logs import Throttle
from bigbunny.storeid import CUSTOMER_RE
from supervisor import responses
from supervisor.channel import ShardDown
from supervisor.node import Node
from supervisor.requests import BAD_TTL, Disconnected, Headers, decode_segment, parse_ttl, read_body
from supervisor.role import JOINING, PRIMARY

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Result = tuple[int, Any, Any, bytes]
_ALLOW_POST = b"POST"
DEGRADED = ((b"bigbunny-warning", b"DegradedWrite"),)
_limits_log = Throttle(logging.getLogger("bbd.limits"))
_OP_NAMES = {wire.OP_CREATE: "create", wire.OP_COMPLETE: "complete-modify", wire.OP_UPDATE: "update",
             wire.OP_ADD: "counter change", wire.OP_DELETE: "delete"}
# Reservations are the largest growth a request can cause (SPEC §6: size = body + 256):
# a create grows by len(body) + 256 at most (a counter's stored form is never longer than its spec);
# a blob write by len(body); a counter write by the digits of one int64 value.
_OVERHEAD = 256
_COUNTER_GROWTH = 20


class StoreApi:
    """Routes and store endpoints; named-store endpoints live in ``supervisor.api_names``."""

    def __init__(self, node: Node) -> None:
        from supervisor.api_names import NamesApi  # one module per concern; names need the helpers here

        self.node = node
        self.max_body = node.cfg.max_store_size
        self._customers: dict[bytes, str] = {}
        names = NamesApi(self)
        # segment -> (handler, takes a {param} segment, forwarded when not primary, metrics label)
        self.routes: dict[bytes, tuple[Callable[..., Awaitable[None]], bool, bool, str]] = {
            b"create": (self.create, False, True, "create"),
            b"snapshot": (self.snapshot, True, False, "snapshot"),
            b"begin-modify": (self.begin_modify, True, True, "begin-modify"),
            b"complete-modify": (self.complete_modify, True, True, "complete-modify"),
            b"cancel-modify": (self.cancel_modify, True, True, "cancel-modify"),
            b"update": (self.update, True, True, "update"),
            b"increment": (self.increment, True, True, "increment"),
            b"decrement": (self.decrement, True, True, "decrement"),
            b"delete": (self.delete, True, True, "delete"),
            b"create-by-name": (names.create_by_name, True, True, "create-by-name"),
            b"delete-by-name": (names.delete_by_name, True, True, "delete-by-name"),
            b"lookup-id-by-name": (names.lookup, True, False, "lookup-id-by-name"),
        }

    # --- dispatch ----------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        name, slash, param = scope["raw_path"][8:].partition(b"/")
        route = self.routes.get(name)
        if route is None or slash != (b"/" if route[1] else b"") or b"/" in param or (route[1] and not param):
            await responses.send_error(send, errors.PAGE_NOT_FOUND)
            return  # an ASGI app returns None (uvicorn closes the connection on anything else)
        if scope["method"] != "POST":
            await responses.send_method_not_allowed(send, _ALLOW_POST)
            return
        t0 = perf_counter()
        status = 0
        try:
            status = await self._dispatch(scope, receive, send, route, param)
        finally:
            self.node.stats.observe(route[3], status, perf_counter() - t0)

    async def _dispatch(self, scope: dict[str, Any], receive: Receive, send: Send, route: Any, param: bytes) -> int:
        """Everything after routing; returns the status answered (0 if the client went away)."""
        h = Headers(scope["headers"])
        role = self.node.role
        if role.role != PRIMARY and self.node.cluster is not None and (route[2] or role.role == JOINING):
            return await self.node.cluster.forwarder.forward(scope, receive, send, h)  # §2.4: forward first
        customer = self._customer(h.customer)
        if customer.__class__ is ApiError:
            return await responses.send_error(send, customer)
        if not self.node.limiter.allow(customer):
            _limits_log.log(logging.INFO, f"rate:{customer}", "rate limit: refusing customer %s", customer)
            return await responses.send_error(send, errors.RATE_LIMITED)
        try:
            return await route[0](send, receive, h, customer, decode_segment(param))
        except ApiError as e:
            e.__traceback__ = e.__context__ = None  # errors are shared singletons: don't let frames pile up
            return await responses.send_error(send, e)
        except ShardDown:
            return await responses.send_error(send, errors.SHARD_UNAVAILABLE)
        except Disconnected:
            return 0

    def _customer(self, raw: bytes | None) -> Any:
        """Validated customer string, or the ApiError to answer (§14: checked on entry)."""
        c = self._customers.get(raw) if raw else None
        if c is not None:
            return c
        if raw:
            raw_key, raw = raw, raw.strip(b" \t")  # httptools keeps trailing OWS; HTTP says it is not the value
        if not raw:
            return errors.MISSING_CUSTOMER
        text = raw.decode("latin-1")
        if not CUSTOMER_RE.fullmatch(text):
            return errors.INVALID_CUSTOMER
        if len(self._customers) > 100_000:  # bound the cache; it refills from live traffic
            self._customers.clear()
        self._customers[raw_key] = text
        return text

    # --- helpers -----------------------------------------------------------------------------
    def lock_flags(self) -> int:
        role = self.node.role
        return (wire.F_LOCK_UNKNOWN if role.lock_unknown_until and role.lock_unknown() else 0) | (
            wire.F_BARRIER if role.barrier else 0
        )

    def barrier_flag(self) -> int:
        return wire.F_BARRIER if self.node.role.barrier else 0

    async def call(self, shard: int, op: int, sid: str, customer: str, ttl: Any = None, flags: int = 0,
                   lock: str | None = None, allow: Any = None, extra: Any = None, body: bytes = b"") -> Result:
        """One shard round trip; applies reported growth and releases the reservation."""
        node = self.node
        acct = node.accounting
        node.inflight_calls += 1
        try:
            res = await node.channels[shard].call(op, sid, customer, ttl, flags, lock, allow, extra, body)
        finally:
            node.inflight_calls -= 1
            if allow is not None:
                acct.release(customer, allow)
        err = res[0]
        if err != wire.OK:
            e = errors.ERRORS[err]
            if e.status == 507 or e is errors.TOMBSTONE_LIMIT:
                acct.count_rejection(e.code)
                _limits_log.log(logging.WARNING, f"{e.code}:{customer}", "refused %s for customer %s: %s",
                                _OP_NAMES.get(op, op), customer, e.code)
            raise e
        if res[4] is not None:
            node.replicate(res[4])
        return res

    def ttl_and_flags(self, h: Headers, flags: int, creating: bool = False) -> tuple[Any, int]:
        ttl = parse_ttl(h.ttl, creating)
        if ttl is BAD_TTL:
            return None, flags | wire.F_BAD_TTL
        return ttl, flags

    async def body(self, receive: Receive) -> tuple[bytes, bool]:
        return await read_body(receive, self.max_body)

    # --- endpoints ---------------------------------------------------------------------------
    async def create(self, send: Send, receive: Receive, h: Headers, customer: str, _: str) -> int:
        warn = DEGRADED if self.node.degraded() else ()  # judged before this write replicates
        body, too_large = await self.body(receive)
        if too_large:
            raise errors.BODY_TOO_LARGE
        ttl = parse_ttl(h.ttl, True)
        if ttl is BAD_TTL:
            raise errors.INVALID_TTL
        sid, shard_id, shard = self.node.minter.mint(customer)
        allow = self.node.accounting.reserve(customer, len(body) + _OVERHEAD)
        res = await self.call(
            shard, wire.OP_CREATE, sid, customer, ttl, self.barrier_flag(), shard_id, allow, None, body
        )
        self.node.accounting.apply(shard, customer, res[1])
        return await responses.send_ok(send, res[3], responses.TEXT, warn)

    async def snapshot(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str) -> int:
        res = await self.call(self.node.shard_for(sid), wire.OP_SNAPSHOT, sid, customer)
        return await responses.send_ok(
            send,
            res[3],
            responses.JSON if res[2] else responses.OCTETS,
            ((b"bigbunny-not-valid-after", str(res[1]).encode()),),
        )

    async def begin_modify(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str) -> int:
        res = await self.call(self.node.shard_for(sid), wire.OP_BEGIN, sid, customer, None, self.lock_flags())
        return await responses.send_ok(
            send,
            res[3],
            responses.OCTETS,
            ((b"bigbunny-lock-id", res[2].encode()), (b"bigbunny-not-valid-after", str(res[1]).encode())),
        )

    async def complete_modify(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str) -> int:
        warn = DEGRADED if self.node.degraded() else ()  # judged before this write replicates
        if not h.lock:
            raise errors.MISSING_LOCK_ID
        body, too_large = await self.body(receive)
        ttl, flags = self.ttl_and_flags(h, self.lock_flags() | (wire.F_TOO_LARGE if too_large else 0))
        shard = self.node.shard_for(sid)
        allow = None if too_large else self.node.accounting.reserve(customer, len(body))
        res = await self.call(
            shard, wire.OP_COMPLETE, sid, customer, ttl, flags, h.lock.decode("latin-1"), allow, None, body
        )
        self.node.accounting.apply(shard, customer, res[1])
        return await responses.send_ok(send, b"", None, warn)

    async def cancel_modify(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str) -> int:
        if not h.lock:
            raise errors.MISSING_LOCK_ID
        await self.call(
            self.node.shard_for(sid), wire.OP_CANCEL, sid, customer, None, self.lock_flags(), h.lock.decode("latin-1")
        )
        return await responses.send_ok(send, b"", None)

    async def update(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str) -> int:
        warn = DEGRADED if self.node.degraded() else ()  # judged before this write replicates
        body, too_large = await self.body(receive)
        ttl, flags = self.ttl_and_flags(h, self.lock_flags() | (wire.F_TOO_LARGE if too_large else 0))
        shard = self.node.shard_for(sid)
        allow = None if too_large else self.node.accounting.reserve(customer, max(len(body), _COUNTER_GROWTH))
        res = await self.call(shard, wire.OP_UPDATE, sid, customer, ttl, flags, None, allow, None, body)
        self.node.accounting.apply(shard, customer, res[1])
        return await responses.send_ok(send, b"", None, warn)

    async def increment(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str) -> int:
        return await self._add(send, receive, h, customer, sid, 0)

    async def decrement(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str) -> int:
        return await self._add(send, receive, h, customer, sid, wire.F_DECREMENT)

    async def _add(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str, flags: int) -> int:
        warn = DEGRADED if self.node.degraded() else ()  # judged before this write replicates
        sid = sid.strip()
        if not sid:
            raise errors.MISSING_STORE_ID
        body, too_large = await self.body(receive)
        # §13 fix 15: counter mutations are refused in the lock-state-unknown window too.
        ttl, flags = self.ttl_and_flags(h, flags | self.lock_flags() | (wire.F_TOO_LARGE if too_large else 0))
        shard = self.node.shard_for(sid)
        allow = None if too_large else self.node.accounting.reserve(customer, _COUNTER_GROWTH)
        res = await self.call(shard, wire.OP_ADD, sid, customer, ttl, flags, None, allow, None, body)
        self.node.accounting.apply(shard, customer, res[1])
        return await responses.send_ok(send, res[3], responses.JSON, warn)

    async def delete(self, send: Send, receive: Receive, h: Headers, customer: str, sid: str) -> int:
        warn = DEGRADED if self.node.degraded() else ()  # judged before this write replicates
        tombs = self.node.tombstones
        admitted = tombs.admit(sid, customer)
        flags = self.barrier_flag() | (wire.F_NO_TOMBSTONE if admitted is False else 0)
        shard = self.node.shard_for(sid)
        try:
            res = await self.call(shard, wire.OP_DELETE, sid, customer, None, flags)
        finally:
            tombs.finish(customer, admitted)
        tombs.add(sid, customer)
        self.node.accounting.apply(shard, customer, res[1])
        return await responses.send_ok(send, b"", None, warn)
