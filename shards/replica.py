"""Replication and join support for one shard's stores (SPEC §7.4, §7.6): a component beside the engine.

``Replica`` turns a store's state into the records of ``bigbunny.records`` (after a local write, and
for join snapshots) and applies records received from the primary. It works only through the
engine's public API (``get``, ``items``, ``insert``, ``account``, ``force_delete``, ``clear``, its
``clock`` and ``lock_timeout``); the engine knows nothing of it.

Replicated writes bypass memory limits (§6); every method keeps the engine's running totals.
"""

from __future__ import annotations

from bigbunny.records import Counter, FullRecord, PutRecord
from bigbunny.shards.engine import StoreEngine
from bigbunny.shards.store import Store


def _state(sid: str, st: Store) -> tuple[str, str, Counter | None, bytes, float, int, str | None]:
    """The fields a ``PutRecord`` (after its kind and shard_id) and a ``FullRecord`` (first) share."""
    c, pend = st.counter, st.pending
    counter = None if c is None else list(c)
    return sid, st.customer, counter, st.body, st.expiry, st.version, None if pend is None else pend[0]


def _counter(c: Counter | None) -> tuple[int, int | None, int | None] | None:
    """A record's counter (a msgpack list) as the engine's tuple."""
    return None if c is None else (c[0], c[1], c[2])


class Replica:
    """Builds and applies the records of one engine's stores."""

    __slots__ = ("engine",)

    def __init__(self, engine: StoreEngine) -> None:
        self.engine = engine

    def put_record(self, kind: str, shard_id: str | None, sid: str) -> PutRecord | None:
        """The ``C``/``U`` record of a store's current state (after a local write); None if it is gone."""
        st = self.engine.get(sid)
        return None if st is None else PutRecord(kind, shard_id, *_state(sid, st))

    def apply_put(self, rec: PutRecord, create: bool) -> int:
        """Apply a replicated STORE_CREATE (``create``) or STORE_UPDATE; idempotent; returns growth.

        Create: absent → insert; same customer and newer version → replace; else no-op. Update:
        present with version ≤ local → no-op; else replace type/body/expiry/version and clear the
        lock; absent → insert. Replication bypasses limits (§6)."""
        engine = self.engine
        st = engine.get(rec.sid)
        if st is not None:
            if rec.version <= st.version or (create and st.customer != rec.customer):
                return 0
            growth = len(rec.body) - len(st.body)
            st.body, st.expiry, st.version = rec.body, rec.expiry, rec.version
            st.counter = _counter(rec.counter)
            st.lock = None
            engine.account(st.customer, growth)
            return growth
        # verified: applied only after its ID opened under this customer (see ShardOps.apply)
        st = Store(rec.customer, rec.body, _counter(rec.counter), rec.expiry, rec.version)
        if rec.pending and create:
            st.pending = (rec.pending, engine.clock())
        return engine.insert(rec.sid, st)

    def apply_lock(self, sid: str, lock_id: str, held_since: float) -> None:
        """Replicated LOCK_ACQUIRED: set unless a different unexpired lock is held."""
        engine = self.engine
        st = engine.get(sid)
        if st is None:
            return
        lock = st.lock
        if lock is not None and lock[0] != lock_id and not engine.clock() > lock[1]:
            return
        st.lock = (lock_id, held_since + engine.lock_timeout)

    def apply_unlock(self, sid: str, lock_id: str) -> None:
        """Replicated LOCK_RELEASED: clear if none, expired, or the same ID."""
        st = self.engine.get(sid)
        if st is None or st.lock is None:
            return
        if st.lock[0] == lock_id or self.engine.clock() > st.lock[1]:
            st.lock = None

    def dump(self) -> list[FullRecord]:
        """Every store as a full record (join snapshot)."""
        out = []
        for sid, st in self.engine.items():
            lock, pend = st.lock, st.pending
            out.append(
                FullRecord(
                    *_state(sid, st),
                    None if lock is None else lock[0],
                    None if lock is None else lock[1],
                    None if pend is None else pend[1],
                )
            )
        return out

    def load(self, records: list[FullRecord]) -> int:
        """Insert full records (join snapshot), replacing stores of the same ID; returns the bytes added."""
        added = 0
        insert = self.engine.insert
        for rec in records:
            lock_id, lock_expires, pending, created = rec.lock_id, rec.lock_expires, rec.pending, rec.pending_created
            # not verified: join snapshots are not decrypted on load, the first request checks
            st = Store(
                rec.customer,
                rec.body,
                _counter(rec.counter),
                rec.expiry,
                rec.version,
                None if lock_id is None or lock_expires is None else (lock_id, lock_expires),
                None if pending is None or created is None else (pending, created),
                verified=False,
            )
            added += insert(rec.sid, st)
        return added
