"""Tombstones (SPEC §6): store ID → (deletion time, customer), node-wide limits, 24 h lifetime.

Limits apply to client deletes on the primary only and are checked before adding; a delete in
flight holds a slot (``admit``) until its shard answers, so concurrent deletes cannot pass a limit.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

LIFETIME = 24 * 3600.0


class Tombstones:
    def __init__(
        self, customer_limit: int, global_limit: int, clock: Callable[[], float] = time.time, lifetime: float = LIFETIME
    ) -> None:
        self.set_limits(customer_limit, global_limit)
        self.clock = clock
        self.lifetime = lifetime
        self.entries: dict[str, tuple[float, str]] = {}
        self.per_customer: defaultdict[str, int] = defaultdict(int)
        self.pending = 0
        self.pending_customer: defaultdict[str, int] = defaultdict(int)

    def set_limits(self, customer_limit: int, global_limit: int) -> None:
        """Apply new limits (a reload); deletes already admitted finish, later ones see the new limits."""
        self.customer_limit = max(customer_limit, 0)
        self.global_limit = max(global_limit, 0)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, sid: object) -> bool:
        return sid in self.entries

    def admit(self, sid: str, customer: str) -> bool | None:
        """Reserve a slot for a client delete. None = no slot needed (no limit or already tombstoned),
        True = slot reserved (call ``finish``), False = limit reached."""
        if not (self.customer_limit or self.global_limit) or sid in self.entries:
            return None
        if self.global_limit and len(self.entries) + self.pending >= self.global_limit:
            return False
        if self.customer_limit and self.per_customer[customer] + self.pending_customer[customer] >= self.customer_limit:
            return False
        self.pending += 1
        self.pending_customer[customer] += 1
        return True

    def finish(self, customer: str, admitted: bool | None) -> None:
        """Release a slot taken by ``admit`` (the tombstone itself is recorded with ``add``)."""
        if admitted:
            self.pending -= 1
            left = self.pending_customer[customer] - 1
            if left:
                self.pending_customer[customer] = left
            else:
                del self.pending_customer[customer]

    def add(self, sid: str, customer: str, when: float | None = None) -> bool:
        """Record a tombstone (no limit); re-deleting a tombstoned ID adds nothing."""
        if sid in self.entries:
            return False
        self.entries[sid] = (self.clock() if when is None else when, customer)
        self.per_customer[customer] += 1
        return True

    def sweep(self) -> int:
        """Drop tombstones older than the lifetime; returns how many went."""
        cutoff = self.clock() - self.lifetime
        old = [sid for sid, (t, _) in self.entries.items() if t < cutoff]
        for sid in old:
            _, customer = self.entries.pop(sid)
            left = self.per_customer[customer] - 1
            if left:
                self.per_customer[customer] = left
            else:
                del self.per_customer[customer]
        return len(old)

    def snapshot(self) -> list[list]:
        """``[sid, time, customer]`` rows for a join snapshot (§13 fix 18: customers included)."""
        return [[sid, t, customer] for sid, (t, customer) in self.entries.items()]

    def replace(self, rows: list[list]) -> None:
        """Adopt a join snapshot's tombstones."""
        self.entries = {}
        self.per_customer = defaultdict(int)
        for sid, t, customer in rows:
            self.add(sid, customer, t)
