"""Replication and join records (``bigbunny.records``): named, in the positional layout they travel in."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from bigbunny import records
from bigbunny.records import (
    DeleteRecord,
    FullRecord,
    LockRecord,
    NameRow,
    PutRecord,
    RegistryDelete,
    RegistryPut,
)

EVERY_RECORD: list[records.Record] = [
    PutRecord(records.CREATE, "shard-id", "v1:k:abc", "cust", None, b"body", 1.5e9, 1, "a-name"),
    PutRecord(records.UPDATE, None, "v1:k:abc", "cust", [5, None, 10], b'{"v":5}', 1.5e9, 7, None),
    LockRecord(records.LOCK, "shard-id", "v1:k:abc", "cust", "lock-1"),
    LockRecord(records.UNLOCK, None, "v1:k:abc", "cust", "lock-1"),
    DeleteRecord(records.DELETE, None, "v1:k:abc", "cust"),
    RegistryPut(records.REGISTRY, records.PUT, "cust", "name", "active", "v1:k:abc", 1.5e9, "rid", 3, 1.4e9),
    RegistryDelete(records.REGISTRY, records.DEL, "cust", "name"),
]


def _through_msgpack(rec: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(rec, use_bin_type=True), raw=False)


@pytest.mark.parametrize("rec", EVERY_RECORD, ids=lambda r: f"{type(r).__name__}-{r[0]}")
def test_every_record_survives_msgpack_and_comes_back_named(rec: records.Record) -> None:
    wire_form = _through_msgpack(rec)
    assert wire_form == list(rec)  # a plain array of its fields, in order
    back = records.decode(wire_form)
    assert back == rec and type(back) is type(rec)


def test_the_layout_is_the_positional_one_peers_exchange() -> None:
    """A node of this version and one that built records as plain lists send the same bytes."""
    put = PutRecord(records.UPDATE, None, "sid", "c", None, b"x", 2.0, 3, None)
    assert msgpack.packb(put, use_bin_type=True) == msgpack.packb(
        ["U", None, "sid", "c", None, b"x", 2.0, 3, None], use_bin_type=True
    )
    reg = RegistryDelete(records.REGISTRY, records.DEL, "c", "n")
    assert msgpack.packb(reg) == msgpack.packb(["reg", "del", "c", "n"])


def test_store_record_refuses_registry_records() -> None:
    assert records.store_record(["D", None, "sid", "c"]) == DeleteRecord("D", None, "sid", "c")
    with pytest.raises(ValueError):
        records.store_record(["reg", "del", "c", "n"])


@pytest.mark.parametrize(
    "fields",
    [
        [],
        ["C"],
        "C, None, sid",
        ["X", None, "sid", "c"],  # unknown kind
        [1, None, "sid", "c"],
        ["D", None, "sid"],  # a field short
        ["L", None, "sid", "c"],  # a lock record without its lock ID
        ["C", None, "sid", "c", None, b"", 1.0, 1],  # a field short
        ["reg", "put", "c", "n"],  # a put without the state
        ["reg", "nope", "c", "n"],
    ],
)
def test_malformed_records_are_refused(fields: Any) -> None:
    with pytest.raises(ValueError):
        records.decode(fields)


def test_snapshot_rows_are_named_and_checked() -> None:
    full = FullRecord("sid", "c", None, b"x", 2.0, 1, None, "lock", 3.0, None)
    assert records.full_record(_through_msgpack(full)) == full
    row = NameRow("c", "n", "active", "sid", 2.0, "rid", 2, 1.0)
    assert records.name_row(_through_msgpack(row)) == row
    assert list(RegistryPut(records.REGISTRY, records.PUT, *row)[2:]) == list(row)
    with pytest.raises(ValueError):
        records.full_record(list(full)[:9])
    with pytest.raises(ValueError):
        records.name_row([*row, None])
