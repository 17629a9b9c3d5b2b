"""New store IDs are minted here, in the supervisor, and the create goes to the shard the ID hashes to.

Placement is a pure function of the ID string (``bigbunny.sharding.shard_of``). A shard minting for
itself would have to draw IDs until one hashed to it: ``N`` AES-SIV seals per create on average with
``N`` shards, all on the shard's critical path. Minting before routing costs exactly one seal, and a
shard that is down is skipped by drawing again (so creates keep working while it restarts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from bigbunny.sharding import shard_of
from bigbunny.storeid import StoreIdCodec


class Minted(NamedTuple):
    """A new store ID, the shard id it seals and the index of the shard worker it hashes to."""

    store_id: str
    shard_id: str
    shard: int


_ATTEMPTS_PER_SHARD = 32  # with one shard up out of N, P(no hit) = (1 - 1/N)^(32 N) < e^-32


class Minter:
    def __init__(self, codec: StoreIdCodec, shards: int, is_up: Callable[[int], bool]) -> None:
        self.codec = codec
        self.shards = shards
        self.is_up = is_up

    def mint(self, customer: str) -> Minted:
        """A new store ID for ``customer`` (already validated), on a shard that is up.

        With every shard down the last draw is returned: its call then fails with StoreUnavailable."""
        for _ in range(_ATTEMPTS_PER_SHARD * self.shards):
            sid, shard_id, _ = self.codec.mint_parts(customer)
            shard = shard_of(sid, self.shards)
            if self.is_up(shard):
                return Minted(sid, shard_id, shard)
        return Minted(sid, shard_id, shard)
