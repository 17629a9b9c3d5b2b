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

Messages (:class:`Request` one way, :class:`Reply` the other) are ``NamedTuple`` classes: msgpack packs a
tuple as an array, so a message travels as the plain positional array of its fields, in order.

The two hot loops (the supervisor's channel, the shard's worker) never construct the NamedTuples: a
sender builds the plain tuple of the fields in order, and a receiver binds the fields to their names
by unpacking (``rid, err, a, b, record = fields``; the shard passes a request's fields to its
handler's parameters of the same names). Building a NamedTuple costs ~150 ns per message here, four
times per request (measured at 0.35 µs per request in the supervisor and 0.45 µs in a shard, and a
few per cent of the node's throughput); unpacking into names costs less than the index reads it
replaces. ``tests/unit/bigbunny/test_wire.py`` pins the field order those loops rely on.

==========  =====================================================================================
message     fields, in wire order
==========  =====================================================================================
Request     ``rid, op, sid, customer, ttl, flags, lock, allow, extra`` (see :class:`Request`)
Reply       ``rid, err, a, b, record`` (see :class:`Reply`)
==========  =====================================================================================

What each op reads and answers is documented at its handler in ``shards.ops``; replication records
(``Reply.record``, ``OP_APPLY``) and join snapshot records (``OP_DUMP``/``OP_LOAD``) are the named
types of :mod:`bigbunny.records`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, TypedDict, TypeVar

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

OK = -1  # Reply.err on success


class RequestArgs(TypedDict, total=False):
    """A ``Request``'s fields after ``op``, and its body, as the keyword arguments of the awaitable calls
    that build one (``ShardChannel.call``, ``StoreApi.call``); each left out takes its default: ``""``,
    ``""``, None, 0, None, None, None, ``b""``."""

    sid: str
    customer: str
    ttl: int | None
    flags: int
    lock: str | None
    allow: Any
    extra: Any
    body: bytes


class Request(NamedTuple):
    """One request to a shard (supervisor → shard).

    * ``rid``      int, unique per in-flight request on one channel
    * ``op``       one of the ``OP_*`` constants
    * ``sid``      raw store-ID string (``""`` for ops without one)
    * ``customer`` tenant string, already validated by the supervisor (``""`` for ops that need none)
    * ``ttl``      parsed TTL seconds, or None (header absent or refused: see the ``F_*TTL*`` flags)
    * ``flags``    ``F_*`` bits: supervisor state the shard applies at its step of the check order
    * ``lock``     lock ID for complete/cancel-modify; the minted ID's shard_id for create; else None
    * ``allow``    None (no memory limit configured) or ``[customer_bytes, global_bytes]``: growth the
                   supervisor has reserved for this request (see ``supervisor.state.accounting``)
    * ``extra``    op-specific value (pending name for create, records for apply, etc.)

    The body (the HTTP request body, raw) travels beside the header, not in it.
    """

    rid: int
    op: int
    sid: str = ""
    customer: str = ""
    ttl: int | None = None
    flags: int = 0
    lock: str | None = None
    allow: list[int] | None = None
    extra: Any = None


class Reply(NamedTuple):
    """One shard's answer to a :class:`Request` (shard → supervisor), matched by ``rid``.

    * ``rid``     the request's ``rid``
    * ``err``     :data:`OK` (-1) on success, else an index into ``bigbunny.errors.ERRORS``
    * ``a``, ``b`` op-specific results (documented at each op in ``shards.ops``); None on error
    * ``record``  the replication record of a mutation (a ``bigbunny.records`` store record) when the
                  shard replicates and the op changed a store, else None

    The body (the HTTP response body on success, empty on error) travels beside the header.
    """

    rid: int
    err: int
    a: Any = None
    b: Any = None
    record: Any = None


Message = TypeVar("Message", Request, Reply)

_packb = msgpack.Packer(use_bin_type=True).pack
_unpacker_opts: dict[str, Any] = {"raw": False, "use_list": True, "max_bin_len": 1 << 20, "max_str_len": 1 << 20}


def pack(messages: Sequence[Sequence[Any]], bodies: Sequence[bytes]) -> bytes:
    """Encode a batch (parallel lists of messages and bodies) as its one frame. A message is a
    :class:`Request` or :class:`Reply`, or a plain tuple of its fields in order (see the module notes)."""
    head = _packb((messages, [len(b) for b in bodies]))
    return b"".join((len(head).to_bytes(4, "little"), head, *bodies))


def unpack(frame: bytes, kind: type[Message]) -> Iterator[tuple[list[Any], bytes]]:
    """Decode a batch of ``kind`` messages into ``(fields, body)`` pairs, the inverse of :func:`pack`:
    ``fields`` is the list of one message's fields in ``kind``'s order, to bind to names at once
    (``rid, err, a, b, record = fields``) or to name with ``kind._make(fields)``. A malformed frame, or
    a header without exactly ``kind``'s fields, raises ValueError (possibly after the first items)."""
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
    arity = len(kind._fields)
    pos = end
    for fields, n in zip(headers, lengths):
        if fields.__class__ is not list or len(fields) != arity:
            raise ValueError(f"malformed {kind.__name__}")
        yield fields, frame[pos : pos + n]
        pos += n
