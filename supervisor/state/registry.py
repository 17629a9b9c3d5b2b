"""Named stores (SPEC §2.8): per-customer names mapped to store IDs, owned by the supervisor.

States: ``creating`` (reserved, with a reservation ID, expires after 5 s) → ``active`` (bound to a
store ID) → ``deleting`` → removed. The supervisor is single-threaded, so a check followed by a state
change with no ``await`` in between is atomic; handlers rely on that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bigbunny.records import DEL, PUT, REGISTRY, NameRow, RegistryDelete, RegistryPut, RegistryRecord, name_row

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

    def apply(self, rec: RegistryRecord) -> None:
        """Apply a replicated registry record (§7.4): put only if newer; an active entry may not take
        a store ID already bound to another name; del removes if present."""
        customer, name = rec.customer, rec.name
        key = self.key(customer, name)
        if isinstance(rec, RegistryDelete):
            self.entries.pop(key, None)
            return
        old = self.entries.get(key)
        if old is not None and rec.version <= old.version:
            return
        store_id = rec.store_id
        if rec.state == ACTIVE and store_id:
            for e in self.entries.values():
                if e.state == ACTIVE and e.store_id == store_id and (e.customer, e.name) != (customer, name):
                    return
        self.entries[key] = _entry(rec)

    def snapshot(self) -> list[NameRow]:
        return [_row(e) for e in self.entries.values()]

    def load(self, rows: Sequence[Sequence[Any]]) -> None:
        """Replace every entry from a join snapshot (``NameRow`` fields, as msgpack lists)."""
        entries = (_entry(name_row(r)) for r in rows)
        self.entries = {self.key(e.customer, e.name): e for e in entries}

    def pointing_at(self, store_ids: set[str]) -> list[NameEntry]:
        """Active entries bound to any of ``store_ids`` (GC cleans them up with their stores)."""
        return [e for e in self.entries.values() if e.state == ACTIVE and e.store_id in store_ids]


def _row(e: NameEntry) -> NameRow:
    return NameRow(e.customer, e.name, e.state, e.store_id, e.expiry, e.reservation_id, e.version, e.reserved_at)


def _entry(r: NameRow | RegistryPut) -> NameEntry:
    return NameEntry(r.customer, r.name, r.state, r.reservation_id, r.reserved_at, r.version, r.store_id, r.expiry)


def entry_record(entry: NameEntry) -> RegistryPut:
    """Replication record of an entry's current state (REG_RESERVE / REG_COMMIT / state changes)."""
    return RegistryPut(REGISTRY, PUT, *_row(entry))


def delete_record(entry: NameEntry) -> RegistryDelete:
    """Replication record of an entry's removal (REG_ABORT / REG_DELETE)."""
    return RegistryDelete(REGISTRY, DEL, entry.customer, entry.name)
