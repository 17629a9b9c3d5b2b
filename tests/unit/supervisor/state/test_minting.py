"""Minter: the supervisor mints new IDs and places the create on the shard the ID hashes to."""

from __future__ import annotations

from bigbunny.sharding import shard_of
from bigbunny.storeid import KeySet, StoreIdCodec
from bigbunny.supervisor.state.minting import Minter


def codec() -> StoreIdCodec:
    return StoreIdCodec(KeySet.dev(), "local")


def test_an_id_goes_to_the_shard_it_hashes_to_and_opens_for_its_customer() -> None:
    c = codec()
    minter = Minter(c, 4, lambda i: True)
    seen = set()
    for _ in range(200):
        sid, shard_id, shard = minter.mint("cust-1")
        assert shard == shard_of(sid, 4)
        assert c.open(sid, "cust-1")[0] == shard_id
        seen.add(shard)
    assert seen == {0, 1, 2, 3}  # placement spreads over every shard


def test_shards_that_are_down_are_skipped() -> None:
    minter = Minter(codec(), 3, lambda i: i == 2)
    for _ in range(50):
        sid, _, shard = minter.mint("cust-1")
        assert shard == 2 == shard_of(sid, 3)


def test_with_every_shard_down_a_draw_is_still_returned() -> None:
    calls = []

    def down(i: int) -> bool:
        calls.append(i)
        return False

    sid, _, shard = Minter(codec(), 2, down).mint("cust-1")
    assert shard == shard_of(sid, 2)
    assert len(calls) == 64  # bounded: 32 draws per shard, then the caller's call fails with 503
