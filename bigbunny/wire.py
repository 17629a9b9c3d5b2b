"""Supervisor <-> shard wire format: the one pack/unpack pair.

A ZeroMQ message carries a *batch* of requests (or replies) in a single frame:

* 4 bytes, little-endian: the length ``n`` of the msgpack header that follows;
* ``n`` bytes of msgpack ``[headers, lengths]``: one small positional header array per item, and the
  byte length of each item's body;
* the raw bodies, concatenated (never re-encoded: request/response bytes travel as is).

One frame per batch, whatever its size, keeps the per-frame cost of ZeroMQ off the per-request path
(a second frame costs ~2 µs to send and ~2 µs to receive here); the supervisor packs whatever
requests are waiting for a shard into one message, and the shard answers a batch with one message
of replies, matched by request id.

Request header ``[rid, op, sid, customer, ttl, flags, lock, allow, extra]``:

* ``rid``      int, unique per in-flight request on one channel
* ``op``       one of the ``OP_*`` constants below
* ``sid``      raw store-ID string (``""`` when the op mints one)
* ``customer`` tenant string, already validated by the supervisor (``""`` for ops that need none)
* ``ttl``      parsed TTL seconds or None (absent)
* ``flags``    ``F_*`` bits: supervisor state the shard must apply at the right step of the check order
* ``lock``     lock ID for complete/cancel-modify, else None
* ``allow``    None (no memory limit configured) or ``[customer_bytes, global_bytes]``: growth the
               supervisor has reserved for this request (see ``supervisor.accounting``)
* ``extra``    op-specific value (pending name for create, etc.)

Reply header ``[rid, err, a, b]``: ``err`` is -1 on success or an index into
``bigbunny.errors.ERRORS``; ``a``/``b`` are op-specific (documented at each op in ``shards.ops``).
The reply body is the HTTP response body on success (empty on error).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgpack

# --- ops ---------------------------------------------------------------------------------------
OP_CREATE = 1
OP_SNAPSHOT = 2
OP_BEGIN = 3
OP_COMPLETE = 4
OP_CANCEL = 5
OP_UPDATE = 6
OP_ADD = 7  # increment / decrement (F_DECREMENT)
OP_DELETE = 8
OP_RELEASE_LOCK = 9
OP_PING = 10
OP_GC = 11
OP_ORPHANS = 12
OP_CLEAR_PENDING = 13
OP_ALIVE = 14
OP_FORCE_DELETE = 15
OP_USAGE = 16
OP_APPLY = 17  # a replicated store record (SPEC §7.4)
OP_DUMP = 18  # every store, for a join snapshot (§7.6)
OP_LOAD = 19  # replace/insert stores from a join snapshot
OP_CUSTOMERS = 20  # store count per customer (operator view)
OP_KEY_USE = 21  # stores sealed with given key ids (may a reload remove them?)
OP_RECONFIGURE = 22  # settings a reload changed: {keys, current, log_level}, any subset

# --- flags -------------------------------------------------------------------------------------
F_BARRIER = 1  # join barrier held: mutation fails with JoinSyncing at its barrier step
F_LOCK_UNKNOWN = 2  # lock-state-unknown window: lock-taking ops fail with LockStateUnknown
F_NO_TOMBSTONE = 4  # tombstone limit reached: delete fails with TombstoneLimitExceeded
F_DECREMENT = 8  # OP_ADD negates the delta
F_NAMED = 16  # create-by-name semantics for counter detection
F_JSON = 32  # request Content-Type is application/json (create-by-name counters)
F_TOO_LARGE = 64  # body exceeded the limit: fail with 413 at the body step (body not sent)
F_BAD_TTL = 128  # TTL header out of range: fail with 400 invalid TTL at the TTL step
F_TTL_TOO_LONG = 256  # TTL header above --max-ttl: fail with 400 TTLTooLong at the TTL step

OK = -1

_packb = msgpack.Packer(use_bin_type=True).pack
_unpacker_opts: dict[str, Any] = {"raw": False, "use_list": True, "max_bin_len": 1 << 20, "max_str_len": 1 << 20}


def pack(headers: Sequence[Sequence[Any]], bodies: Sequence[bytes]) -> bytes:
    """Encode a batch (parallel lists of headers and bodies) as its one frame."""
    head = _packb((headers, [len(b) for b in bodies]))
    return b"".join((len(head).to_bytes(4, "little"), head, *bodies))


def unpack(frame: bytes) -> Iterator[tuple[list[Any], bytes]]:
    """Decode a batch back into ``(header, body)`` pairs; the inverse of :func:`pack`."""
    if len(frame) < 4:
        raise ValueError("batch frame too short")
    end = 4 + int.from_bytes(frame[:4], "little")
    if end > len(frame):
        raise ValueError("batch header length beyond the frame")
    decoded = msgpack.unpackb(frame[4:end], **_unpacker_opts)
    if not isinstance(decoded, list) or len(decoded) != 2:
        raise ValueError("malformed batch header")
    headers, lengths = decoded
    if not isinstance(headers, list) or not isinstance(lengths, list) or len(headers) != len(lengths):
        raise ValueError("malformed batch header")
    if end + sum(lengths) != len(frame):
        raise ValueError("batch body length mismatch")
    pos = end
    for hdr, n in zip(headers, lengths):
        if not isinstance(hdr, list) or not hdr:
            raise ValueError("malformed header")
        yield hdr, frame[pos : pos + n]
        pos += n
