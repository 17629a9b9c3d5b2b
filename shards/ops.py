"""One small handler per wire op; each docstring shows its request fields and reply ``a``/``b``.

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

from bigbunny import errors, wire
from bigbunny.errors import ApiError
from bigbunny.sharding import shard_of
from bigbunny.shards import counterjson
from bigbunny.shards.engine import StoreEngine
from bigbunny.storeid import KeySet, StoreIdCodec, StoreIdError

Reply = tuple[Any, Any, bytes]
Handler = Callable[[list[Any], bytes], Reply]

# The error for each supervisor flag that fails a request at its step of the check order.
_FLAG_ERRORS: dict[int, ApiError] = {
    wire.F_LOCK_UNKNOWN: errors.LOCK_STATE_UNKNOWN,
    wire.F_TOO_LARGE: errors.BODY_TOO_LARGE,
    wire.F_BAD_TTL: errors.INVALID_TTL,
    wire.F_TTL_TOO_LONG: errors.TTL_TOO_LONG,
    wire.F_BARRIER: errors.JOIN_SYNCING,
    wire.F_NO_TOMBSTONE: errors.TOMBSTONE_LIMIT,
}


def _check(flags: int, *steps: int) -> None:
    """Apply the flag ``steps`` in the order given (the op's own §2.4 order): the first set one fails."""
    if flags:
        for flag in steps:
            if flags & flag:
                raise _FLAG_ERRORS[flag]


class ShardOps:
    """Dispatches decoded requests to the engine; owns nothing but the codec and the engine."""

    def __init__(
        self, index: int, shards: int, engine: StoreEngine, codec: StoreIdCodec, replicate: bool = False
    ) -> None:
        self.index = index
        self.shards = shards
        self.engine = engine
        self.codec = codec
        self.replicate = replicate  # with a peer: mutations return their replication record
        self.rec: list[Any] | None = None
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

    def handle(self, hdr: list[Any], body: bytes) -> tuple[list[Any], bytes]:
        """Run one request; every failure becomes an error reply, never an exception."""
        rid = hdr[0]
        try:
            handler = self.table[hdr[1]]
            a, b, out = handler(hdr, body)
            rec = self.rec
            if rec is None:
                return [rid, wire.OK, a, b], out
            self.rec = None
            return [rid, wire.OK, a, b, rec], out
        except ApiError as e:
            self.rec = None
            e.__traceback__ = e.__context__ = None  # errors are shared singletons: don't let frames pile up
            return [rid, errors.ERROR_INDEX.get(e, 0), None, None], b""
        except Exception:  # a bug must cost one request, not the shard
            logging.getLogger("bbd.shard").exception("op %r failed", hdr[1] if len(hdr) > 1 else None)
            return [rid, 0, None, None], b""

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
            shard_id = self.codec.open(sid, customer)[0]
        except StoreIdError:
            raise errors.INVALID_STORE_ID from None
        self.engine.mark_verified(sid, customer)
        return shard_id

    def _put_record(self, kind: str, shard_id: str | None, sid: str) -> None:
        if self.replicate:
            state = self.engine.state(sid)
            if state is not None:
                self.rec = [kind, shard_id, *state]

    @staticmethod
    def _allow(hdr: list[Any]) -> tuple[int, int] | None:
        allow = hdr[7]
        return None if allow is None else (allow[0], allow[1])

    # --- store ops -----------------------------------------------------------------------------
    def create(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, CREATE, sid, cust, ttl, flags, shard_id, allow, pending_name]`` → a = growth; body = the ID.

        The supervisor minted ``sid`` for ``cust`` (``supervisor.minting``); an ID that does not hash to
        this shard is refused, so a routing bug can never store what lookups would not find."""
        sid, customer, flags = hdr[2], hdr[3], hdr[5]
        counter = counterjson.parse_counter_spec(body, bool(flags & wire.F_NAMED), bool(flags & wire.F_JSON))
        if not sid or shard_of(sid, self.shards) != self.index:
            raise errors.INTERNAL
        _check(flags, wire.F_BARRIER)
        growth = self.engine.create(sid, customer, body, counter, hdr[4], hdr[8], self._allow(hdr))
        self._put_record("C", hdr[6], sid)
        return growth, None, sid.encode()

    def snapshot(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, SNAPSHOT, sid, cust, ...]`` → a = TTL remaining, b = is_counter; body = bytes/JSON."""
        self._open(hdr[2], hdr[3])
        data, ttl, is_counter = self.engine.snapshot(hdr[2], hdr[3])
        return ttl, is_counter, data

    def begin(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, BEGIN, sid, cust, None, flags]`` → a = TTL remaining, b = lock ID; body = current bytes."""
        sid, customer, flags = hdr[2], hdr[3], hdr[5]
        shard_id = self._open(sid, customer, self.replicate)
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_BARRIER)
        data, ttl, lock_id = self.engine.begin_modify(sid, customer)
        if self.replicate:
            self.rec = ["L", shard_id, sid, customer, lock_id]
        return ttl, lock_id, data

    def complete(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, COMPLETE, sid, cust, ttl, flags, lock, allow]`` → a = growth."""
        sid, customer, flags = hdr[2], hdr[3], hdr[5]
        shard_id = self._open(sid, customer, self.replicate)
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_TOO_LARGE, wire.F_BAD_TTL, wire.F_TTL_TOO_LONG, wire.F_BARRIER)
        growth = self.engine.complete_modify(sid, customer, hdr[6], body, hdr[4], self._allow(hdr))
        self._put_record("U", shard_id, sid)
        return growth, None, b""

    def cancel(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, CANCEL, sid, cust, None, flags, lock]`` → nothing."""
        sid, customer, flags = hdr[2], hdr[3], hdr[5]
        self._open(sid, customer)
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_BARRIER)
        if self.engine.cancel_modify(sid, customer, hdr[6]) and self.replicate:
            self.rec = ["R", None, sid, customer, hdr[6]]
        return None, None, b""

    def update(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, UPDATE, sid, cust, ttl, flags, None, allow]`` → a = growth."""
        sid, customer, flags = hdr[2], hdr[3], hdr[5]
        self._open(sid, customer)
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_TOO_LARGE, wire.F_BAD_TTL, wire.F_TTL_TOO_LONG)
        if flags & wire.F_BARRIER:  # 404/410 before the barrier
            self.engine.check_live(sid, customer)
            raise errors.JOIN_SYNCING
        growth = self.engine.update(sid, customer, body, hdr[4], self._allow(hdr))
        self._put_record("U", None, sid)
        return growth, None, b""

    def add(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, ADD, sid, cust, ttl, flags(+F_DECREMENT), None, allow]`` → a = growth; body = counter JSON."""
        sid, customer, flags = hdr[2], hdr[3], hdr[5]
        self._open(sid, customer)
        # §13 fix 15: counters are covered by the lock-unknown window too
        _check(flags, wire.F_LOCK_UNKNOWN, wire.F_TOO_LARGE)
        delta = counterjson.parse_delta(body)
        _check(flags, wire.F_BAD_TTL, wire.F_TTL_TOO_LONG, wire.F_BARRIER)
        if flags & wire.F_DECREMENT:
            delta = -delta
        out, growth = self.engine.add(sid, customer, delta, hdr[4], self._allow(hdr))
        self._put_record("U", None, sid)
        return growth, None, out

    def delete(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, DELETE, sid, cust, None, flags]`` → a = growth (−size, 0 if it was absent)."""
        sid, customer, flags = hdr[2], hdr[3], hdr[5]
        self._open(sid, customer)
        _check(flags, wire.F_BARRIER, wire.F_NO_TOMBSTONE)
        if self.replicate:
            self.rec = ["D", None, sid, customer]
        return self.engine.delete(sid, customer), None, b""

    # --- ops without a customer --------------------------------------------------------------
    def release_lock(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, RELEASE_LOCK, sid]`` → nothing; 404 if the ID is unknown here."""
        if not self.engine.release_lock(hdr[2]):
            raise errors.NOT_FOUND_STORE
        return None, None, b""

    def ping(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, PING]`` → a = [store_count, bytes], b = pid."""
        return [self.engine.count, self.engine.total_bytes], os.getpid(), b""

    def gc(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, GC]`` → a = [[sid, customer, growth], ...] of expired stores removed."""
        return [list(t) for t in self.engine.collect_expired()], None, b""

    def orphans(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, ORPHANS, ..., extra=age]`` → a = [[sid, customer, pending_name], ...]."""
        return [list(t) for t in self.engine.pending_older_than(hdr[8])], None, b""

    def clear_pending(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, CLEAR_PENDING, sid]`` → nothing."""
        self.engine.clear_pending(hdr[2])
        return None, None, b""

    def alive(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, ALIVE, sid]`` → a = store exists and is unexpired."""
        return self.engine.alive(hdr[2]), None, b""

    def force_delete(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, FORCE_DELETE, sid]`` → a = [customer, growth] or None if absent."""
        res = self.engine.force_delete(hdr[2])
        return (None if res is None else list(res)), None, b""

    def usage(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, USAGE]`` → a = {customer: bytes}."""
        return self.engine.usage(), None, b""

    # --- replication and join ----------------------------------------------------------------
    def apply(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, APPLY, ..., extra=[[record, held_since], ...]]`` → a = [[growth, customer] or None, ...].

        Records are applied in order. One is applied only if its ID opens under (our site, the
        record's customer) and, when given, its shard_id matches the decrypted one (SPEC §7.4);
        anything else is dropped (None in the answer).
        """
        return [self._apply_one(rec, held_since) for rec, held_since in hdr[8]], None, b""

    def _apply_one(self, rec: list[Any], held_since: float) -> list[Any] | None:
        kind, shard_id, sid, customer = rec[0], rec[1], rec[2], rec[3]
        try:
            opened = self._open(sid, customer, shard_id is not None)
        except ApiError as e:  # does not open here (or not on this shard): dropped
            e.__traceback__ = None  # a shared singleton: don't let frames pile up
            return None
        if shard_id is not None and shard_id != opened:
            return None
        engine = self.engine
        if kind == "C" or kind == "U":
            return [engine.apply_put(rec[2:], kind == "C"), customer]
        if kind == "D":
            res = engine.force_delete(sid)
            return [0 if res is None else res[1], customer]
        if kind == "L":
            engine.apply_lock(sid, rec[4], held_since)
        elif kind == "R":
            engine.apply_unlock(sid, rec[4])
        return [0, customer]

    def key_use(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, KEY_USE, ..., extra=[key_id, ...]]`` → a = {key_id: stores sealed with it}."""
        return self.engine.key_use(list(hdr[8])), None, b""

    def reconfigure(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, RECONFIGURE, ..., extra={keys, current, log_level}]`` → nothing. New keys replace the codec (and its
        derived-key cache); a store already verified keeps that mark, which stays true for every key that
        remains, and the supervisor removes only keys that seal no store."""
        update = hdr[8]
        if "keys" in update:
            keys = KeySet({k: bytes.fromhex(v) for k, v in update["keys"].items()}, update["current"])
            self.codec = StoreIdCodec(keys, self.codec.site, self.codec.verify_site)
        if "log_level" in update:
            logging.getLogger().setLevel(update["log_level"].upper())
        return None, None, b""

    def customers(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, CUSTOMERS]`` → a = {customer: store count}."""
        return self.engine.customer_counts(), None, b""

    def dump(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, DUMP]`` → a = every store as a full record (join snapshot)."""
        return self.engine.dump(), None, b""

    def load(self, hdr: list[Any], body: bytes) -> Reply:
        """``[rid, LOAD, ..., extra=[clear_first, records]]`` → a = usage by customer afterwards."""
        clear, records = hdr[8]
        if clear:
            self.engine.clear()
        self.engine.load(records)
        return self.engine.usage(), None, b""
