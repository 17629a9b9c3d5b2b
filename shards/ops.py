"""One small handler per wire op; each docstring shows the ``wire.Request`` fields it uses and its reply ``a``/``b``.

The handlers apply the per-endpoint check order of SPEC §2.4: the supervisor has already done the
steps it owns (customer, rate limit, body read) and passes the rest of its state as flags, which the
handler applies at exactly the step where the reference checks it (e.g. the join barrier comes after
the store-ID check, so an invalid ID still answers 400 while the barrier is held).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from bigbunny import errors, records, wire
from bigbunny.errors import ApiError
from bigbunny.logs import set_level
from bigbunny.records import DELETE, LOCK, UNLOCK, UPDATE, DeleteRecord, LockRecord, PutRecord, StoreRecord
from bigbunny.sharding import shard_of
from bigbunny.shards import counterjson
from bigbunny.shards.engine import StoreEngine
from bigbunny.shards.replica import Replica
from bigbunny.storeid import KeySet, StoreIdCodec, StoreIdError

Outcome = tuple[Any, Any, bytes]  # a handler's (Reply.a, Reply.b, reply body)
Ttl = int | None
Lock = str | None
Allow = list[int] | None
# Every handler takes the wire.Request fields after rid and op, by name, then the body.
Handler = Callable[[str, str, Ttl, int, Lock, Allow, Any, bytes], Outcome]
_OK = wire.OK

# The error for each supervisor flag that fails a request at its step of the check order.
_FLAG_ERRORS: dict[int, ApiError] = {
    wire.F_LOCK_UNKNOWN: errors.LOCK_STATE_UNKNOWN,
    wire.F_TOO_LARGE: errors.BODY_TOO_LARGE,
    wire.F_BAD_TTL: errors.INVALID_TTL,
    wire.F_TTL_TOO_LONG: errors.TTL_TOO_LONG,
    wire.F_BARRIER: errors.JOIN_SYNCING,
    wire.F_NO_TOMBSTONE: errors.TOMBSTONE_LIMIT,
}


def _allow(allow: Allow) -> tuple[int, int] | None:
    """The wire allowance ``[customer_bytes, global_bytes]`` as the engine's tuple."""
    return None if allow is None else (allow[0], allow[1])


def _check(flags: int, *steps: int) -> None:
    """Apply the flag ``steps`` in the order given (the op's own §2.4 order): the first set one fails."""
    if flags:
        for flag in steps:
            if flags & flag:
                raise _FLAG_ERRORS[flag]


class ShardOps:
    """Dispatches decoded requests to the engine and its replica component; owns the codec."""

    def __init__(
        self, index: int, shards: int, engine: StoreEngine, codec: StoreIdCodec, replicate: bool = False
    ) -> None:
        self.index = index
        self.shards = shards
        self.engine = engine
        self.replica = Replica(engine)
        self.codec = codec
        self.replicate = replicate  # with a peer: mutations return their replication record
        self.log = logging.getLogger(f"bbd.shard.{index}")
        self.rec: StoreRecord | None = None
        self.table: dict[int, Handler] = {
            wire.OP_CREATE: self.create,
            wire.OP_SNAPSHOT: self.snapshot,
            wire.OP_BEGIN: self.begin,
            wire.OP_COMPLETE: self.complete,
            wire.OP_CANCEL: self.cancel,
            wire.OP_UPDATE: self.update,
            wire.OP_ADD: self.add,
            wire.OP_DELETE: self.delete,
            wire.OP_RELEASE_LOCK: self.release_lock,
            wire.OP_PING: self.ping,
            wire.OP_GC: self.gc,
            wire.OP_ORPHANS: self.orphans,
            wire.OP_CLEAR_PENDING: self.clear_pending,
            wire.OP_ALIVE: self.alive,
            wire.OP_FORCE_DELETE: self.force_delete,
            wire.OP_USAGE: self.usage,
            wire.OP_APPLY: self.apply,
            wire.OP_DUMP: self.dump,
            wire.OP_LOAD: self.load,
            wire.OP_CUSTOMERS: self.customers,
            wire.OP_KEY_USE: self.key_use,
            wire.OP_RECONFIGURE: self.reconfigure,
        }

    def handle(self, fields: list[Any], body: bytes) -> tuple[tuple[Any, ...], bytes]:
        """Run one request (the fields of a ``wire.Request``, in order) and return its ``wire.Reply`` (the
        plain tuple of its fields) and body; every failure becomes an error reply, never an exception.

        The request's fields go to the handler's parameters of the same names (see ``bigbunny.wire``)."""
        rid, op, sid, customer, ttl, flags, lock, allow, extra = fields
        try:
            a, b, out = self.table[op](sid, customer, ttl, flags, lock, allow, extra, body)
            rec = self.rec
            if rec is None:
                return (rid, _OK, a, b, None), out
            self.rec = None
            return (rid, _OK, a, b, rec), out
        except ApiError as e:
            self.rec = None
            e.__traceback__ = e.__context__ = None  # errors are shared singletons: don't let frames pile up
            return (rid, errors.ERROR_INDEX.get(e, 0), None, None, None), b""
        except Exception:  # a bug must cost one request, not the shard
            self.rec = None
            self.log.exception("op %r failed", op)
            return (rid, 0, None, None, None), b""

    # --- helpers ---------------------------------------------------------------------------
    def _open(self, sid: str, customer: str, need_shard_id: bool = False) -> str | None:
        """Check the ID opens under ``customer`` (and belongs here); returns its shard_id.

        A store whose ID already opened under this customer skips the decryption (the answer cannot
        change while the keys are fixed) and returns None, unless the caller needs the shard_id."""
        if not need_shard_id and self.engine.verified_owner(sid, customer):
            return None
        if shard_of(sid, self.shards) != self.index:
            raise errors.INVALID_STORE_ID
        try:
            shard_id = self.codec.open(sid, customer).shard_id
        except StoreIdError:
            raise errors.INVALID_STORE_ID from None
        self.engine.mark_verified(sid, customer)
        return shard_id

    def _put_record(self, kind: str, shard_id: str | None, sid: str) -> None:
        if self.replicate:
            self.rec = self.replica.put_record(kind, shard_id, sid)

    # --- store ops -----------------------------------------------------------------------------
    def create(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid, customer, ttl, flags, lock=shard_id, allow, extra=pending_name`` → a = growth; body = the ID.

        The supervisor minted ``sid`` for ``customer`` (``supervisor.state.minting``); an ID that does not hash
        to this shard is refused, so a routing bug can never store what lookups would not find."""
        counter = counterjson.parse_counter_spec(body, bool(flags & wire.F_NAMED), bool(flags & wire.F_JSON))
        if not sid or shard_of(sid, self.shards) != self.index:
            raise errors.INTERNAL
        _check(flags, wire.F_BARRIER)
        growth = self.engine.create(sid, customer, body, counter, ttl, extra, _allow(allow))
        self._put_record(records.CREATE, lock, sid)
        return growth, None, sid.encode()

    def snapshot(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid, customer`` → a = TTL remaining, b = is_counter; body = bytes/JSON."""
        self._open(sid, customer)
        data, remaining, is_counter = self.engine.snapshot(sid, customer)
        return remaining, is_counter, data

    def begin(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid, customer, flags`` → a = TTL remaining, b = lock ID; body = current bytes."""
        shard_id = self._open(sid, customer, self.replicate)
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_BARRIER)
        data, remaining, lock_id = self.engine.begin_modify(sid, customer)
        if self.replicate:
            self.rec = LockRecord(LOCK, shard_id, sid, customer, lock_id)
        return remaining, lock_id, data

    def complete(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid, customer, ttl, flags, lock, allow`` → a = growth."""
        shard_id = self._open(sid, customer, self.replicate)
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_TOO_LARGE, wire.F_BAD_TTL, wire.F_TTL_TOO_LONG, wire.F_BARRIER)
        lock = lock or ""  # never empty: the supervisor answers a missing lock ID itself
        growth = self.engine.complete_modify(sid, customer, lock, body, ttl, _allow(allow))
        self._put_record(UPDATE, shard_id, sid)
        return growth, None, b""

    def cancel(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid, customer, flags, lock`` → nothing."""
        lock = lock or ""  # never empty: the supervisor answers a missing lock ID itself
        self._open(sid, customer)
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_BARRIER)
        if self.engine.cancel_modify(sid, customer, lock) and self.replicate:
            self.rec = LockRecord(UNLOCK, None, sid, customer, lock)
        return None, None, b""

    def update(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid, customer, ttl, flags, allow`` → a = growth."""
        self._open(sid, customer)
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_TOO_LARGE, wire.F_BAD_TTL, wire.F_TTL_TOO_LONG)
        if flags & wire.F_BARRIER:  # 404/410 before the barrier
            self.engine.check_live(sid, customer)
            raise errors.JOIN_SYNCING
        growth = self.engine.update(sid, customer, body, ttl, _allow(allow))
        self._put_record(UPDATE, None, sid)
        return growth, None, b""

    def add(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid, customer, ttl, flags (+F_DECREMENT), allow`` → a = growth; body = counter JSON."""
        self._open(sid, customer)
        # §13 fix 15: counters are covered by the lock-unknown window too
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_TOO_LARGE)
        delta = counterjson.parse_delta(body)
        _check(flags, wire.F_BAD_TTL, wire.F_TTL_TOO_LONG, wire.F_BARRIER)
        if flags & wire.F_DECREMENT:
            delta = -delta
        out, growth = self.engine.add(sid, customer, delta, ttl, _allow(allow))
        self._put_record(UPDATE, None, sid)
        return growth, None, out

    def delete(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid, customer, flags`` → a = growth (−size, 0 if it was absent)."""
        self._open(sid, customer)
        _check(flags, wire.F_BARRIER, wire.F_NO_TOMBSTONE)
        if self.replicate:
            self.rec = DeleteRecord(DELETE, None, sid, customer)
        return self.engine.delete(sid, customer), None, b""

    # --- ops without a customer --------------------------------------------------------------
    def release_lock(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid`` → nothing; 404 if the ID is unknown here."""
        if not self.engine.release_lock(sid):
            raise errors.NOT_FOUND_STORE
        return None, None, b""

    def ping(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """(no fields) → a = [store_count, bytes], b = pid."""
        return [self.engine.count, self.engine.total_bytes], os.getpid(), b""

    def gc(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """(no fields) → a = [[sid, customer, growth], ...] of expired stores removed."""
        return [list(t) for t in self.engine.collect_expired()], None, b""

    def orphans(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``extra=age`` → a = [[sid, customer, pending_name], ...]."""
        return [list(t) for t in self.engine.pending_older_than(extra)], None, b""

    def clear_pending(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid`` → nothing."""
        self.engine.clear_pending(sid)
        return None, None, b""

    def alive(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid`` → a = store exists and is unexpired."""
        return self.engine.alive(sid), None, b""

    def force_delete(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``sid`` → a = [customer, growth] or None if absent."""
        res = self.engine.force_delete(sid)
        return (None if res is None else list(res)), None, b""

    def usage(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """(no fields) → a = {customer: bytes}."""
        return self.engine.usage(), None, b""

    # --- replication and join ----------------------------------------------------------------
    def apply(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``extra=[[record, held_since], ...]`` → a = [[growth, customer] or None, ...].

        Records (``bigbunny.records`` store records) are applied in order. One is applied only if its
        ID opens under (our site, the record's customer) and, when given, its shard_id matches the
        decrypted one (SPEC §7.4); anything else is dropped (None in the answer).
        """
        return [self._apply_one(records.store_record(rec), held_since) for rec, held_since in extra], None, b""

    def _apply_one(self, rec: StoreRecord, held_since: float) -> list[Any] | None:
        sid, customer, shard_id = rec.sid, rec.customer, rec.shard_id
        try:
            opened = self._open(sid, customer, shard_id is not None)
        except ApiError as e:  # does not open here (or not on this shard): dropped
            e.__traceback__ = None  # a shared singleton: don't let frames pile up
            return None
        if shard_id is not None and shard_id != opened:
            return None
        replica = self.replica
        if isinstance(rec, PutRecord):
            return [replica.apply_put(rec, rec.kind == records.CREATE), customer]
        if isinstance(rec, DeleteRecord):
            res = self.engine.force_delete(sid)
            return [0 if res is None else res[1], customer]
        if rec.kind == LOCK:
            replica.apply_lock(sid, rec.lock_id, held_since)
        else:
            replica.apply_unlock(sid, rec.lock_id)
        return [0, customer]

    def key_use(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``extra=[key_id, ...]`` → a = {key_id: stores sealed with it}."""
        return self.engine.key_use(list(extra)), None, b""

    def reconfigure(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``extra={keys, current, log_level}`` (any subset) → nothing. New keys replace the codec (and its
        derived-key cache); a store already verified keeps that mark, which stays true for every key that
        remains, and the supervisor removes only keys that seal no store."""
        update = extra
        if "keys" in update:
            keys = KeySet({k: bytes.fromhex(v) for k, v in update["keys"].items()}, update["current"])
            self.codec = StoreIdCodec(keys, self.codec.site, self.codec.verify_site)
        if "log_level" in update:
            set_level(update["log_level"])
        return None, None, b""

    def customers(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """(no fields) → a = {customer: store count}."""
        return self.engine.customer_counts(), None, b""

    def dump(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """(no fields) → a = every store as a ``records.FullRecord`` (join snapshot)."""
        return self.replica.dump(), None, b""

    def load(
        self, sid: str, customer: str, ttl: Ttl, flags: int, lock: Lock, allow: Allow, extra: Any, body: bytes
    ) -> Outcome:
        """``extra=[clear_first, [FullRecord, ...]]`` → a = usage by customer afterwards."""
        clear, rows = extra
        if clear:
            self.engine.clear()
        self.replica.load([records.full_record(r) for r in rows])
        return self.engine.usage(), None, b""
