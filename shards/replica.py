"""Replication and join support for the store engine (SPEC §7.4, §7.6), mixed into ``StoreEngine``.

Records are plain lists so they cross msgpack unchanged:

* state  ``[sid, customer, counter, body, expiry, version, pending_name]`` (counter: list or None)
* full   state + ``[lock_id, lock_expires, pending_created]`` (join snapshots)

Replicated writes bypass memory limits (§6); every method keeps the engine's running totals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bigbunny.limits import STORE_OVERHEAD
from bigbunny.shards.store import Store


def _record(sid: str, st: Store) -> list:
    """The state record of one store (the first seven fields of a full record too)."""
    c = st.counter
    return [
        sid,
        st.customer,
        None if c is None else list(c),
        st.body,
        st.expiry,
        st.version,
        None if st.pending is None else st.pending[0],
    ]


def _counter(c: list | None) -> tuple[int, int | None, int | None] | None:
    """A record's counter (a msgpack list) as the engine's tuple."""
    return None if c is None else (c[0], c[1], c[2])


class EngineState:
    """What ``ReplicaMixin`` uses of its host ``StoreEngine``, declared for the type checker.

    Annotations only: ``StoreEngine.__init__`` sets the attributes and ``StoreEngine`` defines the methods,
    so nothing here exists at run time.
    """

    lock_timeout: float
    clock: Callable[[], float]
    _stores: dict[str, Store]
    _usage: dict[str, int]
    _total: int
    _pending: set[str]

    if TYPE_CHECKING:

        def _account(self, customer: str, delta: int) -> None: ...

        def _remove(self, sid: str, st: Store) -> int: ...


class ReplicaMixin(EngineState):
    def state(self, sid: str) -> list | None:
        """Replication record of a store's current state (after a local mutation)."""
        st = self._stores.get(sid)
        return None if st is None else _record(sid, st)

    def apply_put(self, rec: list, create: bool) -> int:
        """Apply a replicated STORE_CREATE (``create``) or STORE_UPDATE; idempotent; returns growth.

        Create: absent → insert; same customer and newer version → replace; else no-op. Update:
        present with version ≤ local → no-op; else replace type/body/expiry/version and clear the
        lock; absent → insert. Replication bypasses limits (§6)."""
        sid, customer, counter, body, expiry, version, pending = rec[:7]
        st = self._stores.get(sid)
        if st is not None:
            if version <= st.version or (create and st.customer != customer):
                return 0
            growth = len(body) - len(st.body)
            st.body, st.expiry, st.version = body, expiry, version
            st.counter = _counter(counter)
            st.lock = None
            self._account(st.customer, growth)
            return growth
        # verified: applied only after its ID opened under this customer (see ShardOps.apply)
        st = Store(customer, body, _counter(counter), expiry, version)
        if pending and create:
            st.pending = (pending, self.clock())
            self._pending.add(sid)
        self._stores[sid] = st
        size = len(body) + STORE_OVERHEAD
        self._account(st.customer, size)
        return size

    def apply_lock(self, sid: str, lock_id: str, held_since: float) -> None:
        """Replicated LOCK_ACQUIRED: set unless a different unexpired lock is held."""
        st = self._stores.get(sid)
        if st is None:
            return
        lock = st.lock
        if lock is not None and lock[0] != lock_id and not self.clock() > lock[1]:
            return
        st.lock = (lock_id, held_since + self.lock_timeout)

    def apply_unlock(self, sid: str, lock_id: str) -> None:
        """Replicated LOCK_RELEASED: clear if none, expired, or the same ID."""
        st = self._stores.get(sid)
        if st is None or st.lock is None:
            return
        if st.lock[0] == lock_id or self.clock() > st.lock[1]:
            st.lock = None

    def dump(self) -> list[list]:
        """Every store as a full record (join snapshot)."""
        out = []
        for sid, st in self._stores.items():
            lock, pend = st.lock, st.pending
            out.append(
                [
                    *_record(sid, st),
                    None if lock is None else lock[0],
                    None if lock is None else lock[1],
                    None if pend is None else pend[1],
                ]
            )
        return out

    def clear(self) -> None:
        """Forget every store (a joining node replaces its state with the primary's snapshot)."""
        self._stores.clear()
        self._usage.clear()
        self._pending.clear()
        self._total = 0

    def load(self, records: list[list]) -> int:
        """Insert full records (join snapshot); returns the bytes added."""
        added = 0
        for rec in records:
            sid, customer, counter, body, expiry, version, pending, lock_id, lock_exp, created = rec
            # not verified: join snapshots are not decrypted on load, the first request checks
            st = Store(
                customer,
                body,
                _counter(counter),
                expiry,
                version,
                None if lock_id is None else (lock_id, lock_exp),
                None if pending is None else (pending, created),
                verified=False,
            )
            old = self._stores.get(sid)
            if old is not None:
                self._remove(sid, old)
            if pending is not None:
                self._pending.add(sid)
            self._stores[sid] = st
            size = len(body) + STORE_OVERHEAD
            self._account(st.customer, size)
            added += size
        return added
