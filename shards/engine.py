"""The in-memory store engine of one shard worker: pure logic, no I/O, no crypto (SPEC §2.5–§2.9, §6, §14).

Stores are keyed by the raw store-ID string (already validated by the caller). Every method that takes
a ``customer`` checks, in this order: missing → ``NOT_FOUND_STORE``; owned by another customer →
``UNAUTHORIZED``; then its own checks as documented. Errors are the predefined
:mod:`bigbunny.errors` constants (raised with a cleared traceback so the shared singletons don't
accumulate frames).

Memory limits are enforced through an *allowance* passed by the supervisor to each growing op:
``None`` (no limits) or ``(customer_bytes, global_bytes)``; a positive growth above either is refused
before anything is mutated (:func:`_check_allow`). Each op returns its growth (new size − old size)
so the supervisor can keep its totals; the engine keeps its own running totals too.

Store size = ``len(body) + 256`` (§6), where a counter's body is its internal JSON representation,
kept current on every change.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, ItemsView

from bigbunny import errors
from bigbunny.limits import STORE_OVERHEAD

from .counterjson import INT64_MAX, INT64_MIN, parse_set, render_add, render_internal, render_snapshot
from .store import Store

_NOT_FOUND = errors.NOT_FOUND_STORE
_UNAUTHORIZED = errors.UNAUTHORIZED
_EXPIRED = errors.STORE_EXPIRED
_LOCKED = errors.STORE_LOCKED
_MISMATCH = errors.LOCK_MISMATCH
_TYPE = errors.TYPE_MISMATCH

_token = secrets.token_urlsafe


def _check_allow(allow: tuple[int, int] | None, growth: int) -> None:
    """Refuse a positive ``growth`` beyond the allowance: customer quota first, then global (§6)."""
    if allow is not None and growth > 0:
        if growth > allow[0]:
            raise errors.CUSTOMER_QUOTA_EXCEEDED.with_traceback(None)
        if growth > allow[1]:
            raise errors.CAPACITY_EXCEEDED.with_traceback(None)


class StoreEngine:
    """All stores of one shard, with running totals (count, bytes, bytes per customer).

    Replication and join snapshots (``shards.replica.Replica``) work through the small public API of
    the "replica support" section: read a store, insert or remove one, account a change, clear all."""

    __slots__ = ("lock_timeout", "clock", "default_ttl", "_stores", "_usage", "_total", "_pending")

    def __init__(
        self,
        lock_timeout: float = 0.5,
        clock: Callable[[], float] = time.time,
        default_ttl: int = 1_209_600,
    ) -> None:
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.default_ttl = default_ttl
        self._stores: dict[str, Store] = {}
        self._usage: dict[str, int] = {}
        self._total = 0
        self._pending: set[str] = set()  # IDs of stores carrying a pending-name marker

    # --- accounting --------------------------------------------------------------------------------

    def account(self, customer: str, delta: int) -> None:
        """Add ``delta`` bytes to the totals (a store of ``customer`` grew or shrank)."""
        if delta:
            self._total += delta
            usage = self._usage
            n = usage.get(customer, 0) + delta
            if n:
                usage[customer] = n
            else:
                del usage[customer]

    @property
    def count(self) -> int:
        """Stores held, expired-uncollected and pending-name ones included."""
        return len(self._stores)

    @property
    def total_bytes(self) -> int:
        """Sum of store sizes (§6)."""
        return self._total

    def usage(self) -> dict[str, int]:
        """Bytes per customer (a copy)."""
        return dict(self._usage)

    def customer_counts(self) -> dict[str, int]:
        """Stores per customer (operator view; walks every store)."""
        counts: dict[str, int] = {}
        for st in self._stores.values():
            counts[st.customer] = counts.get(st.customer, 0) + 1
        return counts

    def key_use(self, key_ids: list[str]) -> dict[str, int]:
        """Stores whose ID is sealed with each of ``key_ids`` (``v1:<key id>:…``; walks every store)."""
        counts = dict.fromkeys(key_ids, 0)
        if key_ids:
            prefixes = tuple(f"v1:{k}:" for k in key_ids)
            for sid in self._stores:
                if sid.startswith(prefixes):
                    counts[sid[3 : sid.index(":", 3)]] += 1
        return counts

    # --- lookups -----------------------------------------------------------------------------------

    def _owned(self, sid: str, customer: str) -> Store:
        st = self._stores.get(sid)
        if st is None:
            raise _NOT_FOUND.with_traceback(None)
        if st.customer != customer:
            raise _UNAUTHORIZED.with_traceback(None)
        return st

    def _live(self, sid: str, customer: str) -> tuple[Store, float]:
        """The store and ``now``; 404 → 403 → 410."""
        st = self._stores.get(sid)
        if st is None:
            raise _NOT_FOUND.with_traceback(None)
        if st.customer != customer:
            raise _UNAUTHORIZED.with_traceback(None)
        now = self.clock()
        if now > st.expiry:
            raise _EXPIRED.with_traceback(None)
        return st, now

    def verified_owner(self, sid: str, customer: str) -> bool:
        """True if the store exists, belongs to ``customer`` and its ID already opened under it."""
        st = self._stores.get(sid)
        return st is not None and st.verified and st.customer == customer

    def mark_verified(self, sid: str, customer: str) -> None:
        """Record that ``sid`` opened under ``customer`` (only meaningful if the store is theirs)."""
        st = self._stores.get(sid)
        if st is not None and st.customer == customer:
            st.verified = True

    def check_live(self, sid: str, customer: str) -> None:
        """404 / 403 / 410 checks only (lets the ops layer place the barrier check)."""
        self._live(sid, customer)

    def alive(self, sid: str) -> bool:
        """Exists and not expired (owner not checked)."""
        st = self._stores.get(sid)
        return st is not None and not self.clock() > st.expiry

    # --- create ------------------------------------------------------------------------------------

    def create(
        self,
        sid: str,
        customer: str,
        body: bytes,
        counter: tuple[int, int | None, int | None] | None,
        ttl: int | None,
        pending_name: str | None,
        allow: tuple[int, int] | None,
    ) -> int:
        """Insert a new store (version 1); returns its growth (= its size).

        For a counter, ``body`` is ignored and the internal representation stored. Checks: existing ID
        → INTERNAL; counter ``min > max`` → INVALID_BOUNDS; value outside the bounds →
        VALUE_OUT_OF_BOUNDS; allowance → 507. ``ttl`` None = default TTL; expiry = now + ttl.
        """
        if sid in self._stores:
            raise errors.INTERNAL.with_traceback(None)
        if counter is not None:
            value, vmin, vmax = counter
            if vmin is not None and vmax is not None and vmin > vmax:
                raise errors.INVALID_BOUNDS.with_traceback(None)
            if (vmin is not None and value < vmin) or (vmax is not None and value > vmax):
                raise errors.VALUE_OUT_OF_BOUNDS.with_traceback(None)
            body = render_internal(value, vmin, vmax)
            counter = (value, vmin, vmax)
        size = len(body) + STORE_OVERHEAD
        _check_allow(allow, size)
        now = self.clock()
        pending = None if pending_name is None else (pending_name, now)
        # verified: the caller minted its ID under this customer
        return self._add(
            sid, Store(customer, body, counter, now + (self.default_ttl if ttl is None else ttl), 1, None, pending)
        )

    def _add(self, sid: str, st: Store) -> int:
        """Hold ``st`` under a free ``sid`` and count it; returns its size."""
        if st.pending is not None:
            self._pending.add(sid)
        self._stores[sid] = st
        size = len(st.body) + STORE_OVERHEAD
        self.account(st.customer, size)
        return size

    # --- reads -------------------------------------------------------------------------------------

    def snapshot(self, sid: str, customer: str) -> tuple[bytes, int, bool]:
        """``(blob bytes or counter snapshot JSON, ttl_remaining, is_counter)``; ignores locks; 404/403/410."""
        st, now = self._live(sid, customer)
        ttl = int(st.expiry - now)  # > -1 here; int() truncates toward 0 = floor(max(x, 0))
        c = st.counter
        if c is None:
            return st.body, ttl, False
        return render_snapshot(c[0], st.version, c[1], c[2]), ttl, True

    # --- modify protocol ---------------------------------------------------------------------------

    def begin_modify(self, sid: str, customer: str) -> tuple[bytes, int, str]:
        """Take the store lock: ``(current bytes, ttl_remaining, lock_id)``.

        404 → 403 → 410 → counter: TYPE_MISMATCH (§13 fix 1) → live lock: STORE_LOCKED. An expired
        lock is replaced. The lock lives ``lock_timeout`` seconds (live while now <= expires_at).
        """
        st, now = self._live(sid, customer)
        if st.counter is not None:
            raise _TYPE.with_traceback(None)
        lock = st.lock
        if lock is not None and not now > lock[1]:
            raise _LOCKED.with_traceback(None)
        lock_id = _token(16)
        st.lock = (lock_id, now + self.lock_timeout)
        return st.body, int(st.expiry - now), lock_id

    def complete_modify(
        self,
        sid: str,
        customer: str,
        lock_id: str,
        body: bytes,
        ttl: int | None,
        allow: tuple[int, int] | None,
    ) -> int:
        """Replace the body under the lock; returns growth.

        404 → 403 → counter: TYPE_MISMATCH → lock absent / different / expired (§14): LOCK_MISMATCH →
        allowance. Then body := body, lock cleared, version +1, expiry reset iff ``ttl`` is given.
        Store expiry is not checked (§2.5).
        """
        st = self._owned(sid, customer)
        if st.counter is not None:
            raise _TYPE.with_traceback(None)
        lock = st.lock
        now = self.clock()
        if lock is None or lock[0] != lock_id or now > lock[1]:
            raise _MISMATCH.with_traceback(None)
        growth = len(body) - len(st.body)
        _check_allow(allow, growth)
        st.lock = None
        return self._write(st, body, ttl, now, growth)

    def cancel_modify(self, sid: str, customer: str, lock_id: str) -> bool:
        """Release the lock (§14): no lock, an expired one or our own → cleared, OK; a different live
        lock → LOCK_MISMATCH; 403 first. A store that no longer exists is OK too (§15: idempotent, like
        delete). Returns whether the store was there."""
        if sid not in self._stores:
            return False
        st = self._owned(sid, customer)
        lock = st.lock
        if lock is not None and lock[0] != lock_id and not self.clock() > lock[1]:
            raise _MISMATCH.with_traceback(None)
        st.lock = None
        return True

    def release_lock(self, sid: str) -> bool:
        """Operator release: clear any lock on exactly this ID; False if the store is unknown."""
        st = self._stores.get(sid)
        if st is None:
            return False
        st.lock = None
        return True

    # --- writes ------------------------------------------------------------------------------------

    def update(
        self,
        sid: str,
        customer: str,
        body: bytes,
        ttl: int | None,
        allow: tuple[int, int] | None,
    ) -> int:
        """Replace a blob / set a counter; returns growth. Version +1, expiry reset iff ``ttl`` given.

        404 → 403 → 410 → counter: ``{"value":int64}`` else INVALID_JSON_COUNTER_UPDATE → live lock:
        STORE_LOCKED (§13 fix 15) → out of bounds: VALUE_OUT_OF_BOUNDS (no clamping) → allowance.
        Blob: live lock: STORE_LOCKED → allowance → replace.
        """
        st, now = self._live(sid, customer)
        c = st.counter
        if c is not None:
            value = parse_set(body)
            lock = st.lock
            if lock is not None and not now > lock[1]:
                raise _LOCKED.with_traceback(None)
            vmin, vmax = c[1], c[2]
            if (vmin is not None and value < vmin) or (vmax is not None and value > vmax):
                raise errors.VALUE_OUT_OF_BOUNDS.with_traceback(None)
            body = render_internal(value, vmin, vmax)
            growth = len(body) - len(st.body)
            _check_allow(allow, growth)
            st.counter = (value, vmin, vmax)
        else:
            lock = st.lock
            if lock is not None and not now > lock[1]:
                raise _LOCKED.with_traceback(None)
            growth = len(body) - len(st.body)
            _check_allow(allow, growth)
        return self._write(st, body, ttl, now, growth)

    def _write(self, st: Store, body: bytes, ttl: int | None, now: float, growth: int) -> int:
        """The common tail of a write: new body, version + 1, expiry reset iff ``ttl``, totals."""
        st.body = body
        st.version += 1
        if ttl is not None:
            st.expiry = now + ttl
        self.account(st.customer, growth)
        return growth

    def add(
        self,
        sid: str,
        customer: str,
        delta: int,
        ttl: int | None,
        allow: tuple[int, int] | None,
    ) -> tuple[bytes, int]:
        """Increment by ``delta`` (the ops layer negates for decrement); ``(response JSON, growth)``.

        404 → 403 → 410 → blob: TYPE_MISMATCH → live lock: STORE_LOCKED → exact int64 overflow of
        value + delta: OVERFLOW (before clamping; ``delta`` may be 2**63) → clamp to the bounds →
        allowance on the new size → version +1 → expiry reset iff ``ttl`` given. Delta 0 still counts
        as a mutation.
        """
        st, now = self._live(sid, customer)
        c = st.counter
        if c is None:
            raise _TYPE.with_traceback(None)
        lock = st.lock
        if lock is not None and not now > lock[1]:
            raise _LOCKED.with_traceback(None)
        value = c[0] + delta
        if value > INT64_MAX or value < INT64_MIN:
            raise errors.OVERFLOW.with_traceback(None)
        vmin, vmax = c[1], c[2]
        bounded = False
        if vmin is not None and value < vmin:
            value = vmin
            bounded = True
        elif vmax is not None and value > vmax:
            value = vmax
            bounded = True
        body = render_internal(value, vmin, vmax)
        growth = len(body) - len(st.body)
        _check_allow(allow, growth)
        st.body = body
        st.counter = (value, vmin, vmax)
        version = st.version + 1
        st.version = version
        if ttl is not None:
            st.expiry = now + ttl
        if growth:
            self.account(st.customer, growth)
        return render_add(value, version, bounded, vmin, vmax), growth

    # --- deletes -----------------------------------------------------------------------------------

    def _remove(self, sid: str, st: Store) -> int:
        del self._stores[sid]
        if st.pending is not None:
            self._pending.discard(sid)
        size = len(st.body) + STORE_OVERHEAD
        self.account(st.customer, -size)
        return -size

    def delete(self, sid: str, customer: str) -> int:
        """Remove the store, expired or locked alike; idempotent (§14). Returns growth: −size, or 0 if
        absent. Another customer's store → UNAUTHORIZED."""
        st = self._stores.get(sid)
        if st is None:
            return 0
        if st.customer != customer:
            raise _UNAUTHORIZED.with_traceback(None)
        return self._remove(sid, st)

    def force_delete(self, sid: str) -> tuple[str, int] | None:
        """Remove without an owner check (GC, orphans, failed commits, replicated deletes):
        ``(customer, −size)`` or None if absent."""
        st = self._stores.get(sid)
        if st is None:
            return None
        return st.customer, self._remove(sid, st)

    # --- named stores and GC -----------------------------------------------------------------------

    def clear_pending(self, sid: str) -> None:
        """Drop the pending-name marker (after the name's commit). Unknown IDs are ignored."""
        st = self._stores.get(sid)
        if st is not None and st.pending is not None:
            st.pending = None
            self._pending.discard(sid)

    def collect_expired(self) -> list[tuple[str, str, int]]:
        """GC step 1 (§6): remove expired stores not under a live lock; ``[(sid, customer, −size)]``."""
        now = self.clock()
        doomed = [
            (sid, st) for sid, st in self._stores.items() if now > st.expiry and (st.lock is None or now > st.lock[1])
        ]
        return [(sid, st.customer, self._remove(sid, st)) for sid, st in doomed]

    def pending_older_than(self, age: float) -> list[tuple[str, str, str]]:
        """Orphan candidates (§6 step 2): ``[(sid, customer, pending_name)]`` of stores whose
        pending-name marker is more than ``age`` seconds old. Nothing is removed here."""
        if not self._pending:
            return []
        now = self.clock()
        out = []
        stores = self._stores
        for sid in self._pending:
            st = stores[sid]
            p = st.pending
            if p is not None and now - p[1] > age:
                out.append((sid, st.customer, p[0]))
        return out

    # --- replica support ---------------------------------------------------------------------------

    def get(self, sid: str) -> Store | None:
        """The store object (replication reads it, and updates it in place with ``account``)."""
        return self._stores.get(sid)

    def items(self) -> ItemsView[str, Store]:
        """Every ``(sid, store)`` (join snapshots)."""
        return self._stores.items()

    def insert(self, sid: str, st: Store) -> int:
        """Hold ``st`` under ``sid``, replacing any store there; keeps the totals; returns its size."""
        old = self._stores.get(sid)
        if old is not None:
            self._remove(sid, old)
        return self._add(sid, st)

    def clear(self) -> None:
        """Forget every store (a joining node replaces its state with the primary's snapshot)."""
        self._stores.clear()
        self._usage.clear()
        self._pending.clear()
        self._total = 0
