"""Supervisor <-> shard wire format: the one pack/unpack pair.

A ZeroMQ message is a *batch*: a list of frames ``[hdr0, body0, hdr1, body1, ...]``. Each header is a
small msgpack array; each body is the raw request or response bytes in a frame of its own (never
re-encoded). The supervisor packs whatever requests are waiting for a shard into one message; the
shard answers a batch with one message of replies, in any order, matched by request id.

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
The reply body frame is the HTTP response body on success (empty on error).
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

# --- flags -------------------------------------------------------------------------------------
F_BARRIER = 1  # join barrier held: mutation fails with JoinSyncing at its barrier step
F_LOCK_UNKNOWN = 2  # lock-state-unknown window: lock-taking ops fail with LockStateUnknown
F_NO_TOMBSTONE = 4  # tombstone limit reached: delete fails with TombstoneLimitExceeded
F_DECREMENT = 8  # OP_ADD negates the delta
F_NAMED = 16  # create-by-name semantics for counter detection
F_JSON = 32  # request Content-Type is application/json (create-by-name counters)
F_TOO_LARGE = 64  # body exceeded the limit: fail with 413 at the body step (body not sent)
F_BAD_TTL = 128  # TTL header out of range: fail with 400 invalid TTL at the TTL step

OK = -1

_packb = msgpack.Packer(use_bin_type=True).pack
_unpacker_opts: dict[str, Any] = {"raw": False, "use_list": True, "max_bin_len": 1 << 16, "max_str_len": 1 << 16}


def pack(header: Sequence[Any], body: bytes = b"") -> tuple[bytes, bytes]:
    """Encode one request or reply as its two frames (header, body)."""
    return _packb(header), body


def unpack(frames: Sequence[bytes]) -> Iterator[tuple[list[Any], bytes]]:
    """Decode a batch message back into ``(header, body)`` pairs; the inverse of :func:`pack`."""
    if len(frames) % 2:
        raise ValueError("odd number of frames in a batch")
    unpackb = msgpack.unpackb
    for i in range(0, len(frames), 2):
        hdr = unpackb(frames[i], **_unpacker_opts)
        if not isinstance(hdr, list) or not hdr:
            raise ValueError("malformed header frame")
        yield hdr, frames[i + 1]
