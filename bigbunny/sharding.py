"""The one pure function that places a store on a shard worker.

It reads only the raw store-ID string, so the supervisor can route any request — including
``/internal/release-lock/{id}``, which carries no customer and therefore cannot decrypt the ID — and a
shard minting a new ID can keep drawing until the ID lands on itself. CRC-32 is enough: the ID is
already an AES-SIV ciphertext, so its bytes are uniformly distributed and not chosen by clients.
"""

from __future__ import annotations

from zlib import crc32


def shard_of(store_id: str, shards: int) -> int:
    """Index of the shard worker that owns ``store_id`` among ``shards`` workers."""
    return crc32(store_id.encode("utf-8", "surrogateescape")) % shards
