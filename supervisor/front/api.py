"""The ``/api/v1/*`` handlers: the hot path (SPEC §2), without ASGI.

``StoreApi.handle`` takes a request read whole by the HTTP protocol (``supervisor.front.protocol``) or
relayed by the peer (``supervisor.cluster.forwarding``) and does the steps the supervisor owns — route,
method, customer (401/400), rate limit (429) — then the endpoint's handler reads what it needs (body
size, TTL header), reserves memory budget and makes one call to the shard that owns the store.

The store endpoints are plain functions: they submit the shard call with a continuation, and the
channel's reader runs that continuation with the reply, which writes the answer — no task, no
future, no extra loop turn per request. The named-store endpoints (``supervisor.front.names``) and
relays to the primary, which await several steps, run as tasks. Supervisor state the shard must
apply at a later step of the check order travels as flags (see ``bigbunny.wire``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any, Unpack

from bigbunny import errors, wire
from bigbunny.errors import ApiError
from bigbunny.limits import STORE_OVERHEAD
from bigbunny.logs import Throttle
from bigbunny.sharding import shard_of
from bigbunny.storeid import CUSTOMER_RE
from bigbunny.supervisor.front.names import NamesApi
from bigbunny.supervisor.front.requests import (
    BAD_TTL,
    MAX_TTL,
    TTL_TOO_LONG,
    ApiRequest,
    decode_segment,
    parse_replicas,
    parse_ttl,
)
from bigbunny.supervisor.front.responses import (
    ALLOW_POST,
    DEGRADED,
    JSON,
    METHOD_NOT_ALLOWED,
    NONE,
    NOT_REPLICATED,
    OCTETS,
    TEXT,
)
from bigbunny.supervisor.pool.channel import DOWN, Result, ShardDown
from bigbunny.supervisor.state.node import Node
from bigbunny.supervisor.state.role import JOINING, PRIMARY
from bigbunny.wire import RequestArgs

# A store endpoint's continuation: (api, request, customer, shard, state, a, b, reply body).
Done = Callable[["StoreApi", ApiRequest, str, int, Any, Any, Any, bytes], None]
log = logging.getLogger("bbd.api")
_limits_log = Throttle(logging.getLogger("bbd.limits"))
_OP_NAMES = {
    wire.OP_CREATE: "create",
    wire.OP_COMPLETE: "complete-modify",
    wire.OP_UPDATE: "update",
    wire.OP_ADD: "counter change",
    wire.OP_DELETE: "delete",
}
# Reservations are the largest growth a request can cause (SPEC §6: size = body + 256):
# a create grows by len(body) + 256 at most (a counter's stored form is never longer than its spec);
# a blob write by len(body); a counter write by the digits of one int64 value.
_COUNTER_GROWTH = 20
_OK = wire.OK


class StoreApi:
    """Routes and store endpoints; named-store endpoints live in ``supervisor.front.names``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.max_body = node.cfg.max_store_size
        self.max_ttl = node.cfg.max_ttl or MAX_TTL
        self.ttl_too_long = ApiError(400, f"TTL above the maximum of {self.max_ttl} seconds", "TTLTooLong")
        self._customers: dict[bytes, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats = node.stats
        names = NamesApi(self)
        # segment -> (handler, takes a {param} segment, forwarded when not primary, metrics label).
        # A handler returns None when it has answered or submitted its shard call, or a coroutine to run.
        self.routes: dict[bytes, tuple[Callable[..., Any], bool, bool, str]] = {
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
    def handle(self, req: ApiRequest) -> None:
        """Answer ``req`` (now, from a shard reply, or from a task); never raises."""
        name, slash, param = req.path[8:].partition(b"/")
        route = self.routes.get(name)
        if route is None or slash != (b"/" if route[1] else b"") or b"/" in param or (route[1] and not param):
            req.out.error(req, errors.PAGE_NOT_FOUND)
            return
        if req.method != b"POST":
            req.out.error(req, METHOD_NOT_ALLOWED, ALLOW_POST)
            return
        req.label = route[3]
        req.t0 = perf_counter()
        node = self.node
        role = node.role.role
        if role != PRIMARY and node.cluster is not None and (route[2] or role == JOINING):
            self.spawn(req, self._forward(req))  # §2.4: forward first
            return
        # §15: past write_until the lead is in doubt or the replica lags (supervisor.cluster.writegate); a
        # cluster-level decision like forwarding, so it comes before the request's own checks
        if route[2] and req.t0 > node.write_until and self._gated(req):
            return
        customer = self._customers.get(req.wanted[0])  # type: ignore[arg-type]
        if customer is None:
            customer = self._customer(req.wanted[0])
            if customer.__class__ is ApiError:
                self.error(req, customer)
                return
        if not node.limiter.allow(customer):
            _limits_log.log(logging.INFO, f"rate:{customer}", "rate limit: refusing customer %s", customer)
            self.error(req, errors.RATE_LIMITED)
            return
        if req.wanted[6] is not None and route[2]:  # BigBunny-Replicas: on the endpoints that write
            try:
                req.replicas = parse_replicas(req.wanted[6])
            except ApiError as e:
                self.error(req, e)
                return
        try:
            coro = route[0](req, customer, decode_segment(param))
        except ApiError as e:
            e.__traceback__ = e.__context__ = None  # errors are shared singletons: don't let frames pile up
            self.error(req, e)
            return
        except Exception:
            log.exception("%s failed", req.label)
            self.error(req, errors.INTERNAL)
            return
        if coro is not None:
            self.spawn(req, coro)

    def _gated(self, req: ApiRequest) -> bool:
        """The write gate's slow path: True if it answers ``req`` (or will, from a task)."""
        node = self.node
        gate = node.cluster.gate
        if req.t0 > node.lead_until:
            self.spawn(req, self._after_lead_check(req))
            return True
        if req.t0 > gate.lag_until:
            gate.refused += 1
            _limits_log.log(
                logging.WARNING,
                "no-replicas",
                "refusing writes: the secondary lags more than %s ms",
                round(gate.max_lag * 1000),
            )
            self.error(req, errors.NO_REPLICAS)
            return True
        return False

    async def _after_lead_check(self, req: ApiRequest) -> None:
        """Dispatch a write again once the lead is settled: confirmed, it is served here (the lag rule
        judged anew); lost, we stepped down and it is relayed to the new primary (nothing was applied)."""
        if not await self.node.cluster.gate.lead_check() and self.node.role.role == PRIMARY:
            raise errors.LEAD_LOST  # cannot happen: a lost lead means a step-down
        self.handle(req)

    def _customer(self, raw: bytes | None) -> Any:
        """Validated customer string, or the ApiError to answer (§14: checked on entry)."""
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

    def spawn(self, req: ApiRequest, coro: Coroutine[Any, Any, None]) -> None:
        """Run a multi-step endpoint as a task; whatever it raises becomes its answer."""
        task = asyncio.get_running_loop().create_task(self._run(req, coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, req: ApiRequest, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except ApiError as e:
            e.__traceback__ = e.__context__ = None
            self.error(req, e)
        except ShardDown:
            self.error(req, errors.SHARD_UNAVAILABLE)
        except Exception:
            log.exception("%s failed", req.label)
            self.error(req, errors.INTERNAL)

    async def _forward(self, req: ApiRequest) -> None:
        answer = await self.node.cluster.forwarder.forward(req)
        self.raw(req, answer.status, answer.headers, answer.body)

    # --- answers (each counted for /metrics) -----------------------------------------------
    def ok(self, req: ApiRequest, body: bytes, ctype: bytes, extra: bytes = b"") -> None:
        self._stats.observe(req.label, 200, perf_counter() - req.t0)
        req.out.ok(req, body, ctype, extra)

    def error(self, req: ApiRequest, err: ApiError) -> None:
        self._stats.observe(req.label, err.status, perf_counter() - req.t0)
        req.out.error(req, err)

    def raw(self, req: ApiRequest, status: int, headers: list[Any], body: bytes) -> None:
        self._stats.observe(req.label, status, perf_counter() - req.t0)
        req.out.raw(req, status, headers, body)

    # --- shard calls -------------------------------------------------------------------------
    def lock_flags(self) -> int:
        role = self.node.role
        return (wire.F_LOCK_UNKNOWN if role.lock_unknown_until and role.lock_unknown() else 0) | (
            wire.F_BARRIER if role.barrier else 0
        )

    def barrier_flag(self) -> int:
        return wire.F_BARRIER if self.node.role.barrier else 0

    def submit(
        self,
        req: ApiRequest,
        customer: str,
        shard: int,
        done: Done,
        state: Any,
        op: int,
        sid: str,
        ttl: Any = None,
        flags: int = 0,
        lock: str | None = None,
        allow: Any = None,
        extra: Any = None,
        body: bytes = b"",
        cleanup: Callable[[str, Any], None] | None = None,
    ) -> None:
        """One shard round trip whose reply runs ``done`` (on success) in the channel's reader, after
        the reservation is released, refusals are counted and the mutation is handed to replication."""
        self.node.inflight_calls += 1
        call = _Call(self, req, customer, shard, done, state, op, allow, cleanup)
        self.node.channels[shard].submit(call, op, sid, customer, ttl, flags, lock, allow, extra, body)

    def _refusal(self, err: int, op: int, customer: str) -> ApiError:
        if err == DOWN:
            return errors.SHARD_UNAVAILABLE
        e = errors.ERRORS[err]
        if e is errors.TTL_TOO_LONG:
            return self.ttl_too_long
        if e.status == 507 or e is errors.TOMBSTONE_LIMIT:
            self.node.accounting.count_rejection(e.code)
            _limits_log.log(
                logging.WARNING,
                f"{e.code}:{customer}",
                "refused %s for customer %s: %s",
                _OP_NAMES.get(op, op),
                customer,
                e.code,
            )
        return e

    async def call(self, shard: int, op: int, **args: Unpack[RequestArgs]) -> Result:
        """``submit`` for the multi-step endpoints: awaits the reply, raises its error."""
        node = self.node
        customer, allow = args.get("customer", ""), args.get("allow")
        node.inflight_calls += 1
        try:
            res = await node.channels[shard].call(op, **args)
        finally:
            node.inflight_calls -= 1
            if allow is not None:
                node.accounting.release(customer, allow)
        if res.err != _OK:
            raise self._refusal(res.err, op, customer)
        if res.record is not None:
            node.replicate(res.record)
        return res

    def ttl_and_flags(self, req: ApiRequest, flags: int) -> tuple[Any, int]:
        ttl = parse_ttl(req.wanted[1], False, self.max_ttl)
        if ttl is BAD_TTL:
            return None, flags | wire.F_BAD_TTL
        if ttl is TTL_TOO_LONG:
            return None, flags | wire.F_TTL_TOO_LONG
        return ttl, flags

    def create_ttl(self, raw: bytes | None) -> int | None:
        """The TTL header of a create (§2.4: checked after the body); raises its 400."""
        ttl = parse_ttl(raw, True, self.max_ttl)
        if ttl is BAD_TTL:
            raise errors.INVALID_TTL
        if ttl is TTL_TOO_LONG:
            raise self.ttl_too_long
        return ttl

    def warning(self, req: ApiRequest) -> bytes:
        """§2.12 DegradedWrite header, judged before this write replicates; §15 NotReplicated at once
        for ``BigBunny-Replicas: 1`` without a peer."""
        if req.replicas and self.node.cluster is None:
            return NOT_REPLICATED
        return DEGRADED if self.node.degraded() else b""

    async def settled(self, req: ApiRequest, warn: bytes) -> bytes:
        """A multi-step write's warning once it may be acknowledged (see ``supervisor.cluster.writegate``)."""
        cl = self.node.cluster
        if cl is None or not (req.replicas or perf_counter() > self.node.lead_until):
            return warn
        extra = await cl.gate.settle(req, cl.sender.seq)
        if extra is None:
            raise errors.LEAD_LOST
        return warn.replace(DEGRADED, b"") + extra if extra else warn

    # --- endpoints ---------------------------------------------------------------------------
    def create(self, req: ApiRequest, customer: str, _: str) -> None:
        warn = self.warning(req)
        if req.too_large:
            raise errors.BODY_TOO_LARGE
        ttl = self.create_ttl(req.wanted[1])
        node = self.node
        sid, shard_id, shard = node.minter.mint(customer)
        allow = node.accounting.reserve(customer, len(req.body) + STORE_OVERHEAD)
        self.submit(
            req,
            customer,
            shard,
            _grown,
            (warn, TEXT),
            wire.OP_CREATE,
            sid,
            ttl,
            self.barrier_flag(),
            shard_id,
            allow,
            None,
            req.body,
        )

    def snapshot(self, req: ApiRequest, customer: str, sid: str) -> None:
        self.submit(req, customer, shard_of(sid, self.node.nshards), _snapshot, None, wire.OP_SNAPSHOT, sid)

    def begin_modify(self, req: ApiRequest, customer: str, sid: str) -> None:
        self.submit(
            req, customer, shard_of(sid, self.node.nshards), _begun, None, wire.OP_BEGIN, sid, None, self.lock_flags()
        )

    def complete_modify(self, req: ApiRequest, customer: str, sid: str) -> None:
        warn = self.warning(req)
        lock = req.lock
        if not lock:
            raise errors.MISSING_LOCK_ID
        too_large = req.too_large
        ttl, flags = self.ttl_and_flags(req, self.lock_flags() | (wire.F_TOO_LARGE if too_large else 0))
        allow = None if too_large else self.node.accounting.reserve(customer, len(req.body))
        self.submit(
            req,
            customer,
            shard_of(sid, self.node.nshards),
            _grown,
            (warn, NONE),
            wire.OP_COMPLETE,
            sid,
            ttl,
            flags,
            lock.decode("latin-1"),
            allow,
            None,
            req.body,
        )

    def cancel_modify(self, req: ApiRequest, customer: str, sid: str) -> None:
        lock = req.lock
        if not lock:
            raise errors.MISSING_LOCK_ID
        self.submit(
            req,
            customer,
            shard_of(sid, self.node.nshards),
            _grown,
            (b"", NONE),
            wire.OP_CANCEL,
            sid,
            None,
            self.lock_flags(),
            lock.decode("latin-1"),
        )

    def update(self, req: ApiRequest, customer: str, sid: str) -> None:
        warn = self.warning(req)
        too_large = req.too_large
        ttl, flags = self.ttl_and_flags(req, self.lock_flags() | (wire.F_TOO_LARGE if too_large else 0))
        allow = None if too_large else self.node.accounting.reserve(customer, max(len(req.body), _COUNTER_GROWTH))
        self.submit(
            req,
            customer,
            shard_of(sid, self.node.nshards),
            _grown,
            (warn, NONE),
            wire.OP_UPDATE,
            sid,
            ttl,
            flags,
            None,
            allow,
            None,
            req.body,
        )

    def increment(self, req: ApiRequest, customer: str, sid: str) -> None:
        self._add(req, customer, sid, 0)

    def decrement(self, req: ApiRequest, customer: str, sid: str) -> None:
        self._add(req, customer, sid, wire.F_DECREMENT)

    def _add(self, req: ApiRequest, customer: str, sid: str, flags: int) -> None:
        warn = self.warning(req)
        sid = sid.strip()
        if not sid:
            raise errors.MISSING_STORE_ID
        too_large = req.too_large
        # §13 fix 15: counter mutations are refused in the lock-state-unknown window too.
        ttl, flags = self.ttl_and_flags(req, flags | self.lock_flags() | (wire.F_TOO_LARGE if too_large else 0))
        allow = None if too_large else self.node.accounting.reserve(customer, _COUNTER_GROWTH)
        self.submit(
            req,
            customer,
            shard_of(sid, self.node.nshards),
            _grown,
            (warn, JSON),
            wire.OP_ADD,
            sid,
            ttl,
            flags,
            None,
            allow,
            None,
            req.body,
        )

    def delete(self, req: ApiRequest, customer: str, sid: str) -> None:
        warn = self.warning(req)
        tombs = self.node.tombstones
        admitted = tombs.admit(sid, customer)
        flags = self.barrier_flag() | (wire.F_NO_TOMBSTONE if admitted is False else 0)
        self.submit(
            req,
            customer,
            shard_of(sid, self.node.nshards),
            _deleted,
            (warn, sid, admitted),
            wire.OP_DELETE,
            sid,
            None,
            flags,
            cleanup=_finish_tombstone(tombs),
        )


class _Call:
    """One store endpoint's shard call in flight: the channel's waiter for its reply."""

    __slots__ = ("api", "req", "customer", "shard", "done", "state", "op", "allow", "cleanup")

    def __init__(
        self,
        api: StoreApi,
        req: ApiRequest,
        customer: str,
        shard: int,
        done: Done,
        state: Any,
        op: int,
        allow: Any,
        cleanup: Callable[[str, Any], None] | None,
    ) -> None:
        self.api = api
        self.req = req
        self.customer = customer
        self.shard = shard
        self.done = done
        self.state = state
        self.op = op
        self.allow = allow
        self.cleanup = cleanup

    def reply(self, err: int, a: Any, b: Any, body: bytes, record: Any) -> None:
        api = self.api
        node = api.node
        node.inflight_calls -= 1
        try:
            if self.allow is not None:
                node.accounting.release(self.customer, self.allow)
            if self.cleanup is not None:
                self.cleanup(self.customer, self.state)
            if err != _OK:
                api.error(self.req, api._refusal(err, self.op, self.customer))
                return
            if record is not None:
                node.replicate(record)
                # §15: the answer waits if the lead is in doubt (say the loop was frozen since submit)
                # or the client asked for the secondary's acknowledgement
                if self.req.replicas or perf_counter() > node.lead_until:
                    node.cluster.gate.hold(self.req)
            self.done(api, self.req, self.customer, self.shard, self.state, a, b, body)
        except Exception:  # a bug must cost this request a 500, never leave it unanswered
            log.exception("%s failed", self.req.label)
            api.error(self.req, errors.INTERNAL)


# --- continuations: run in the channel's reader with a successful reply ----------------------------
def _snapshot(
    api: StoreApi, req: ApiRequest, customer: str, shard: int, state: Any, a: Any, b: Any, body: bytes
) -> None:
    # a = TTL remaining (int seconds), b = is a counter
    api.ok(req, body, JSON if b else OCTETS, b"bigbunny-not-valid-after: %d\r\n" % a)


def _begun(api: StoreApi, req: ApiRequest, customer: str, shard: int, state: Any, a: Any, b: Any, body: bytes) -> None:
    # a = TTL remaining, b = lock ID
    api.ok(req, body, OCTETS, b"bigbunny-lock-id: %s\r\nbigbunny-not-valid-after: %d\r\n" % (b.encode(), a))


def _grown(api: StoreApi, req: ApiRequest, customer: str, shard: int, state: Any, a: Any, b: Any, body: bytes) -> None:
    # a = growth of the store (None when the op cannot grow it); state = (warning, content type)
    if a:
        api.node.accounting.apply(shard, customer, a)
    api.ok(req, body, state[1], state[0])


def _deleted(
    api: StoreApi, req: ApiRequest, customer: str, shard: int, state: Any, a: Any, b: Any, body: bytes
) -> None:
    warn, sid, _ = state
    api.node.tombstones.add(sid, customer)
    if a:
        api.node.accounting.apply(shard, customer, a)
    api.ok(req, b"", NONE, warn)


def _finish_tombstone(tombs: Any) -> Callable[[str, Any], None]:
    def finish(customer: str, state: Any) -> None:
        tombs.finish(customer, state[2])

    return finish
