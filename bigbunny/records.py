"""Replication and join records (SPEC §7.4, §7.6): what one change did, named, in the layout it travels in.

A *store record* is built by the shard that made the change (``wire.Reply.record``), kept by the
primary's supervisor in its replication window, sent over the peer link, and handed by the secondary's
supervisor to the owning shard (``OP_APPLY``). A *registry record* is built and applied by supervisors
(``supervisor.state.registry``). Each travels as the msgpack array of its fields, in the order below (a
``NamedTuple`` packs as exactly that array); the first field is its kind:

======  ================  =============================================================================
kind    type              fields
======  ================  =============================================================================
``C``   PutRecord         STORE_CREATE: ``kind, shard_id, sid, customer, counter, body, expiry, version,
                          pending``
``U``   PutRecord         STORE_UPDATE: the same fields (the whole state after the write)
``L``   LockRecord        LOCK_ACQUIRED: ``kind, shard_id, sid, customer, lock_id``
``R``   LockRecord        LOCK_RELEASED: the same fields
``D``   DeleteRecord      STORE_DELETE: ``kind, shard_id, sid, customer``
``reg`` RegistryPut       a name's state: ``kind, op="put", customer, name, state, store_id, expiry,
                          reservation_id, version, reserved_at``
``reg`` RegistryDelete    a name's removal: ``kind, op="del", customer, name``
======  ================  =============================================================================

A join snapshot carries every store as a :class:`FullRecord` (``OP_DUMP``/``OP_LOAD``) and every name
as a :class:`NameRow` (a ``RegistryPut`` without its first two fields). Records arrive from msgpack as
plain lists: :func:`decode` names them, refusing a malformed one with ValueError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

CREATE = "C"
UPDATE = "U"
LOCK = "L"
UNLOCK = "R"
DELETE = "D"
REGISTRY = "reg"
PUT = "put"  # RegistryPut.op
DEL = "del"  # RegistryDelete.op

Counter = list[Any]  # [value, min, max] as it travels: ints, min/max None when unbounded


class PutRecord(NamedTuple):
    """STORE_CREATE (``C``) / STORE_UPDATE (``U``): a store's whole state after the write."""

    kind: str
    shard_id: str | None  # the ID's shard_id when the primary decrypted it; the secondary checks it matches
    sid: str
    customer: str
    counter: Counter | None  # None for a blob
    body: bytes  # the blob, or a counter's internal JSON
    expiry: float  # wall-clock seconds
    version: int
    pending: str | None  # pending name of a create-by-name in flight


class LockRecord(NamedTuple):
    """LOCK_ACQUIRED (``L``) / LOCK_RELEASED (``R``)."""

    kind: str
    shard_id: str | None
    sid: str
    customer: str
    lock_id: str


class DeleteRecord(NamedTuple):
    """STORE_DELETE (``D``); ``shard_id`` is always None (a delete needs no decryption check)."""

    kind: str
    shard_id: str | None
    sid: str
    customer: str


class NameRow(NamedTuple):
    """One named store's state: the fields of a ``RegistryPut`` after its kind and op (join snapshots)."""

    customer: str
    name: str
    state: str  # creating / active / deleting
    store_id: str
    expiry: float
    reservation_id: str
    version: int
    reserved_at: float


class RegistryPut(NamedTuple):
    """A name's current state (reserve, commit, state changes): ``"reg", "put"`` + a :class:`NameRow`."""

    kind: str
    op: str
    customer: str
    name: str
    state: str
    store_id: str
    expiry: float
    reservation_id: str
    version: int
    reserved_at: float


class RegistryDelete(NamedTuple):
    """A name's removal (abort, delete)."""

    kind: str
    op: str
    customer: str
    name: str


class FullRecord(NamedTuple):
    """One store in a join snapshot: its state plus its lock and pending-name timing."""

    sid: str
    customer: str
    counter: Counter | None
    body: bytes
    expiry: float
    version: int
    pending: str | None
    lock_id: str | None
    lock_expires: float | None
    pending_created: float | None  # when the pending name was set


StoreRecord = PutRecord | LockRecord | DeleteRecord
RegistryRecord = RegistryPut | RegistryDelete
Record = StoreRecord | RegistryRecord

_STORE_KINDS: dict[str, type[StoreRecord]] = {
    CREATE: PutRecord,
    UPDATE: PutRecord,
    LOCK: LockRecord,
    UNLOCK: LockRecord,
    DELETE: DeleteRecord,
}
_REGISTRY_OPS: dict[str, type[RegistryRecord]] = {PUT: RegistryPut, DEL: RegistryDelete}


def _checked(fields: Sequence[Any], arity: int, what: str) -> Sequence[Any]:
    if not isinstance(fields, (list, tuple)) or len(fields) != arity:
        raise ValueError(f"malformed {what}")
    return fields


def decode(fields: Sequence[Any]) -> Record:
    """Name a record received as a plain array; ValueError if its kind or field count is wrong."""
    kind = fields[0] if isinstance(fields, (list, tuple)) and len(fields) > 1 else None
    cls: type[Record] | None = None
    if kind == REGISTRY:
        cls = _REGISTRY_OPS.get(fields[1])
    elif isinstance(kind, str):
        cls = _STORE_KINDS.get(kind)
    if cls is None:
        raise ValueError(f"record of unknown kind {kind!r}")
    return cls._make(_checked(fields, len(cls._fields), f"record of kind {kind!r}"))


def store_record(fields: Sequence[Any]) -> StoreRecord:
    """:func:`decode` for a shard, which applies store records only."""
    rec = decode(fields)
    if isinstance(rec, (RegistryPut, RegistryDelete)):
        raise ValueError("a registry record is not a store's")
    return rec


def full_record(fields: Sequence[Any]) -> FullRecord:
    """Name one store of a join snapshot; ValueError if malformed."""
    return FullRecord._make(_checked(fields, len(FullRecord._fields), "snapshot record"))


def name_row(fields: Sequence[Any]) -> NameRow:
    """Name one registry row of a join snapshot; ValueError if malformed."""
    return NameRow._make(_checked(fields, len(NameRow._fields), "registry row"))
