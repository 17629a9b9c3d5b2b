"""Named stores (SPEC §2.8): per-customer names mapped to store IDs, owned by the supervisor.

States: ``creating`` (reserved, with a reservation ID, expires after 5 s) → ``active`` (bound to a
store ID) → ``deleting`` → removed. The supervisor is single-threaded, so a check followed by a state
change with no ``await`` in between is atomic; handlers rely on that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

CREATING, ACTIVE, DELETING = "creating", "active", "deleting"
RESERVATION_TTL = 5.0


@dataclass(slots=True)
class NameEntry:
    customer: str
    name: str
    state: str
    reservation_id: str
    reserved_at: float
    version: int = 1
    store_id: str = ""
    expiry: float = 0.0


def valid_name(name: str) -> bool:
    """§14: 1–64 printable ASCII characters without ``/``, whitespace or control characters."""
    return 0 < len(name) <= 64 and all(33 <= ord(ch) <= 126 and ch != "/" for ch in name)


class Registry:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.entries: dict[str, NameEntry] = {}

    @staticmethod
    def key(customer: str, name: str) -> str:
        return customer + ":" + name

    def get(self, customer: str, name: str) -> NameEntry | None:
        return self.entries.get(self.key(customer, name))

    def reservation_expired(self, entry: NameEntry) -> bool:
        return entry.state == CREATING and self.clock() - entry.reserved_at > RESERVATION_TTL

    def reserve(self, customer: str, name: str) -> NameEntry:
        """Create (or take over) a ``creating`` entry with a fresh reservation ID."""
        entry = NameEntry(customer, name, CREATING, os.urandom(16).hex(), self.clock())
        self.entries[self.key(customer, name)] = entry
        return entry

    def commit(self, entry: NameEntry, store_id: str, expiry: float) -> bool:
        """Bind a reservation to its store; False if it was taken over or aborted meanwhile."""
        if self.entries.get(self.key(entry.customer, entry.name)) is not entry or entry.state != CREATING:
            return False
        entry.state, entry.store_id, entry.expiry = ACTIVE, store_id, expiry
        entry.version += 1
        return True

    def remove(self, entry: NameEntry) -> None:
        """Drop ``entry`` if it is still the current one for its name."""
        k = self.key(entry.customer, entry.name)
        if self.entries.get(k) is entry:
            del self.entries[k]

    def set_state(self, entry: NameEntry, state: str) -> None:
        entry.state = state
        entry.version += 1

    def states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries.values():
            out[e.state] = out.get(e.state, 0) + 1
        return out

    def apply(self, fields: list) -> None:
        """Apply a replicated registry record (§7.4): put only if newer; an active entry may not take
        a store ID already bound to another name; del removes if present."""
        op, customer, name = fields[0], fields[1], fields[2]
        key = self.key(customer, name)
        if op == "del":
            self.entries.pop(key, None)
            return
        state, store_id, expiry, reservation_id, version, reserved_at = fields[3:9]
        old = self.entries.get(key)
        if old is not None and version <= old.version:
            return
        if state == ACTIVE and store_id:
            for e in self.entries.values():
                if e.state == ACTIVE and e.store_id == store_id and (e.customer, e.name) != (customer, name):
                    return
        self.entries[key] = NameEntry(customer, name, state, reservation_id, reserved_at, version, store_id, expiry)

    def snapshot(self) -> list[list]:
        return [entry_record(e)[2:] for e in self.entries.values()]

    def load(self, rows: list[list]) -> None:
        """Replace every entry from a join snapshot (rows of ``entry_record`` without its prefix)."""
        self.entries = {
            self.key(c, n): NameEntry(c, n, st, rid, rat, ver, sid, exp) for c, n, st, sid, exp, rid, ver, rat in rows
        }

    def pointing_at(self, store_ids: set[str]) -> list[NameEntry]:
        """Active entries bound to any of ``store_ids`` (GC cleans them up with their stores)."""
        return [e for e in self.entries.values() if e.state == ACTIVE and e.store_id in store_ids]


def entry_record(entry: NameEntry) -> list:
    """Replication record of an entry's current state (REG_RESERVE / REG_COMMIT / state changes)."""
    return [
        "reg",
        "put",
        entry.customer,
        entry.name,
        entry.state,
        entry.store_id,
        entry.expiry,
        entry.reservation_id,
        entry.version,
        entry.reserved_at,
    ]


def delete_record(entry: NameEntry) -> list:
    """Replication record of an entry's removal (REG_ABORT / REG_DELETE)."""
    return ["reg", "del", entry.customer, entry.name]
