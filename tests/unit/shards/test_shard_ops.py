"""ShardOps: the shard's request handlers, driven directly (no processes) with the dev key set."""

from __future__ import annotations

from typing import Any

import pytest

from bigbunny import errors, wire
from bigbunny.records import FullRecord
from bigbunny.sharding import shard_of
from bigbunny.shards.engine import StoreEngine
from bigbunny.shards.ops import ShardOps
from bigbunny.storeid import KeySet, StoreIdCodec


class CountingCodec(StoreIdCodec):
    """Counts decryptions, so tests can see when the verified-ID fast path skips one."""

    __slots__ = ("opens",)

    def __init__(self) -> None:
        super().__init__(KeySet.dev(), "local")
        self.opens = 0

    def open(self, store_id: str, customer: str) -> tuple[str, str]:
        self.opens += 1
        return super().open(store_id, customer)


def make_ops(replicate: bool = False) -> tuple[ShardOps, CountingCodec]:
    codec = CountingCodec()
    return ShardOps(0, 1, StoreEngine(lock_timeout=5), codec, replicate=replicate), codec


def call(ops: ShardOps, op: int, sid: str = "", customer: str = "c1", body: bytes = b"", **kw: Any) -> list[Any]:
    req = wire.Request(1, op, sid, customer, kw.get("ttl"), kw.get("flags", 0), kw.get("lock"), None, kw.get("extra"))
    reply, out = ops.handle(req, body)
    return [*reply, out]


def create(ops: ShardOps, customer: str = "c1", body: bytes = b"hello") -> str:
    sid, shard_id, _ = ops.codec.mint_parts(customer)  # as the supervisor does (supervisor.state.minting)
    reply = call(ops, wire.OP_CREATE, sid, customer=customer, body=body, lock=shard_id)
    assert reply[1] == wire.OK
    assert reply[-1].decode() == sid
    return sid


def err(reply: list[Any]) -> errors.ApiError | None:
    return None if reply[1] == wire.OK else errors.ERRORS[reply[1]]


def test_a_store_minted_here_is_served_without_decrypting_its_id() -> None:
    ops, codec = make_ops()
    sid = create(ops)
    reply = call(ops, wire.OP_SNAPSHOT, sid)
    assert err(reply) is None and reply[-1] == b"hello"
    call(ops, wire.OP_UPDATE, sid, body=b"again")
    assert call(ops, wire.OP_SNAPSHOT, sid)[-1] == b"again"
    assert codec.opens == 0


def test_a_create_for_an_id_of_another_shard_is_refused() -> None:
    codec = CountingCodec()
    ops = ShardOps(0, 2, StoreEngine(lock_timeout=5), codec)
    sid = next(s for s in (codec.mint("c1") for _ in range(100)) if shard_of(s, 2) == 1)
    assert err(call(ops, wire.OP_CREATE, sid, body=b"x")) is errors.INTERNAL
    assert err(call(ops, wire.OP_CREATE, "", body=b"x")) is errors.INTERNAL
    assert ops.engine.count == 0


def test_another_customer_still_gets_invalid_store_id() -> None:
    ops, codec = make_ops()
    sid = create(ops, "c1")
    assert err(call(ops, wire.OP_SNAPSHOT, sid, customer="c2")) is errors.INVALID_STORE_ID
    assert codec.opens == 1  # the fast path does not apply to a customer the ID was not verified for


def test_a_forged_id_is_rejected() -> None:
    ops, _ = make_ops()
    sid = create(ops)
    forged = sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")
    assert err(call(ops, wire.OP_SNAPSHOT, forged)) is errors.INVALID_STORE_ID


def test_join_snapshot_stores_are_decrypted_once_then_trusted() -> None:
    source, _ = make_ops()
    sid = create(source)
    ops, codec = make_ops()
    ops.replica.load(source.replica.dump())
    for _ in range(3):
        assert call(ops, wire.OP_SNAPSHOT, sid)[-1] == b"hello"
    assert codec.opens == 1


def test_a_loaded_store_under_a_foreign_id_is_never_trusted() -> None:
    """A snapshot record whose ID does not open here keeps failing: a failed open marks nothing."""
    other = StoreIdCodec(KeySet({"x": bytes(range(32))}, "x"), "local")
    ops, codec = make_ops()
    sid = other.mint("c1")
    ops.replica.load([FullRecord(sid, "c1", None, b"x", 4e9, 1, None, None, None, None)])
    for _ in range(2):
        assert err(call(ops, wire.OP_SNAPSHOT, sid)) is errors.INVALID_STORE_ID
    assert codec.opens == 2


@pytest.mark.parametrize("replicate", [False, True])
def test_modify_records_carry_the_shard_id_when_replicating(replicate: bool) -> None:
    ops, codec = make_ops(replicate)
    sid = create(ops)
    begin = call(ops, wire.OP_BEGIN, sid)
    assert err(begin) is None
    if replicate:
        shard_id = begin[4][1]
        assert shard_id == codec.open(sid, "c1")[0]
    else:
        assert begin[4] is None  # Reply.record: no replication record
        assert codec.opens == 0
