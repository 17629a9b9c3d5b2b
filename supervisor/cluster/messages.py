"""The peer-link protocol (SPEC §7.8): every message between two nodes, by name, with one pack/unpack pair.

A message travels as the frames ``[mac, header, body]`` (``supervisor.cluster.link`` adds and checks the
MAC). ``header`` is one msgpack array: the sender's ``Origin`` followed by the message's own fields,

    [kind, sender, site, epoch, ts, *fields]

and ``body`` is empty except for the two relay messages, which carry the HTTP body there (bytes
never go through the msgpack header). Each message below is a ``NamedTuple`` of its own fields in
wire order, so packing it is packing a tuple: the bytes are those of the lists the previous
versions built by hand, and the two versions interoperate.

``unpack`` refuses (``Malformed``) anything that is not such an array of a known kind with fields of
the declared types; extra trailing fields are ignored (a newer sender may append some) and missing
trailing fields with a default take it (an older sender may not know them).

| kind | message | from → to | fields after the origin |
|---|---|---|---|
| ``hb`` | ``Heartbeat`` | primary → peer, every 200 ms | store_count, memory_usage |
| ``hb_ack`` | ``HeartbeatAck`` | any → primary | stream, applied, role |
| ``probe`` | ``Probe`` | any → peer | role |
| ``probe_reply`` | ``ProbeReply`` | any → prober | role |
| ``repl`` | ``ReplBatch`` | primary → secondary | stream, records, dropped_upto, urgent |
| ``repl_ack`` | ``ReplAck`` | secondary → primary | stream, applied |
| ``join_req`` | ``JoinRequest`` | joiner → primary | join_id, with_registry |
| ``join_refuse`` | ``JoinRefuse`` | primary → joiner | join_id, reason, retry_after |
| ``join_chunk`` | ``JoinChunk`` | primary → joiner | join_id, part, last, stores, meta |
| ``relay`` | ``RelayRequest`` | non-primary → primary | corr, method, raw_path, headers (+ body frame) |
| ``relay_reply`` | ``RelayAnswer`` | primary → relayer | corr, status, headers (+ body frame) |
"""

from __future__ import annotations

import types
import typing
from typing import Any, NamedTuple, Union, cast

import msgpack

_UNPACK_OPTS: dict[str, Any] = {"raw": False, "use_list": True, "max_bin_len": 64 << 20, "max_str_len": 1 << 20}


class Malformed(ValueError):
    """A header that is not a peer-link message of this protocol."""


class Origin(NamedTuple):
    """Who sent a message, and when: the head of every header, filled in by the sending link."""

    sender: str  # host ID
    site: str
    epoch: int  # the sender's epoch when the message was built (fencing, SPEC §7.3)
    ts: float  # the sender's wall clock


class Heartbeat(NamedTuple):
    """``hb``: the primary's heartbeat (SPEC §7.2), every 200 ms; answered by a ``HeartbeatAck``."""

    store_count: int
    memory_usage: int


class HeartbeatAck(NamedTuple):
    """``hb_ack``: the receiver's replication position (``stream``, last ``applied`` sequence number)
    and role; acks never change roles."""

    stream: str
    applied: int
    role: str


class Probe(NamedTuple):
    """``probe``: "what is your role?" — the asker's own role rides along (a restarted, empty leader
    says ``JOINING``)."""

    role: str


class ProbeReply(NamedTuple):
    """``probe_reply``: the answer's ``role``; its epoch is the origin's."""

    role: str


class ReplBatch(NamedTuple):
    """``repl``: replication records of ``stream`` as ``[seq, record, held_since]`` (records are opaque
    here, see ``bigbunny.wire``); ``dropped_upto`` is the highest sequence number the sender gave up on;
    ``urgent`` asks for an acknowledgement as soon as the batch is applied."""

    stream: str
    records: list[Any]
    dropped_upto: int
    urgent: bool = False


class ReplAck(NamedTuple):
    """``repl_ack``: cumulative acknowledgement — everything of ``stream`` up to ``applied`` is applied."""

    stream: str
    applied: int


class JoinRequest(NamedTuple):
    """``join_req``: a JOINING node asks the primary for a snapshot (SPEC §7.6)."""

    join_id: str
    with_registry: bool = True


class JoinRefuse(NamedTuple):
    """``join_refuse``: the primary will not serve ``join_id`` now; retry after ``retry_after`` s."""

    join_id: str
    reason: str
    retry_after: int


class JoinChunk(NamedTuple):
    """``join_chunk``: chunk number ``part`` of snapshot ``join_id``; ``stores`` are opaque store rows. The
    ``last`` chunk carries ``meta`` (site, has_registry, registry, tombstones, stream, base_seq);
    its origin's epoch is the snapshot's."""

    join_id: str
    part: int
    last: bool
    stores: list[Any]
    meta: dict[str, Any] | None


class RelayRequest(NamedTuple):
    """``relay``: a client request for the primary's pipeline (SPEC §7.8); ``headers`` as
    ``[[name, value], ...]``, ``body`` in the body frame."""

    corr: int
    method: str
    raw_path: bytes
    headers: list[Any]
    body: bytes = b""


class RelayAnswer(NamedTuple):
    """``relay_reply``: the primary's answer to relay ``corr``, returned verbatim; ``body`` in the body
    frame."""

    corr: int
    status: int
    headers: list[Any]
    body: bytes = b""


Message = (
    Heartbeat
    | HeartbeatAck
    | Probe
    | ProbeReply
    | ReplBatch
    | ReplAck
    | JoinRequest
    | JoinRefuse
    | JoinChunk
    | RelayRequest
    | RelayAnswer
)


def _runtime_types(annotation: Any) -> tuple[type, ...]:
    """What ``isinstance`` accepts for a field's annotation (``float`` takes ints too)."""
    if annotation is float:
        return (int, float)
    if annotation is Any:
        return (object,)
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _runtime_types(arg))
    if annotation is None or annotation is type(None):
        return (type(None),)
    return (origin or annotation,)


_ORIGIN_CHECKS = tuple(_runtime_types(t) for t in typing.get_type_hints(Origin).values())
_ORIGIN_LEN = len(_ORIGIN_CHECKS)


class _Spec(NamedTuple):
    kind: str
    cls: type[Any]
    checks: tuple[tuple[type, ...], ...]  # per header element after the kind: origin, then fields
    required: int  # header elements after the kind without a default
    body: bool  # the last field travels as the body frame


def _spec(kind: str, cls: type[Any]) -> _Spec:
    hints = typing.get_type_hints(cls)
    fields: tuple[str, ...] = cls._fields
    body = fields[-1] == "body"
    header = fields[:-1] if body else fields
    checks = _ORIGIN_CHECKS + tuple(_runtime_types(hints[f]) for f in header)
    required = _ORIGIN_LEN + sum(1 for f in header if f not in cls._field_defaults)
    return _Spec(kind, cls, checks, required, body)


_SPECS = [
    _spec(kind, cls)
    for kind, cls in (
        ("hb", Heartbeat),
        ("hb_ack", HeartbeatAck),
        ("probe", Probe),
        ("probe_reply", ProbeReply),
        ("repl", ReplBatch),
        ("repl_ack", ReplAck),
        ("join_req", JoinRequest),
        ("join_refuse", JoinRefuse),
        ("join_chunk", JoinChunk),
        ("relay", RelayRequest),
        ("relay_reply", RelayAnswer),
    )
]
_BY_CLASS: dict[type[Any], _Spec] = {s.cls: s for s in _SPECS}
_BY_KIND: dict[str, _Spec] = {s.kind: s for s in _SPECS}
_packb = msgpack.Packer(use_bin_type=True).pack


def kind_of(msg: Message) -> str:
    """The wire name of a message (``hb``, ``repl``, ...)."""
    return _BY_CLASS[type(msg)].kind


def pack(origin: Origin, msg: Message) -> tuple[bytes, bytes]:
    """``(header, body)`` frames of one message."""
    spec = _BY_CLASS[type(msg)]
    if spec.body:
        return _packb([spec.kind, *origin, *msg[:-1]]), cast(bytes, msg[-1])
    return _packb([spec.kind, *origin, *msg]), b""


def unpack(header: bytes, body: bytes = b"") -> tuple[Origin, Message]:
    """The origin and message of ``(header, body)`` frames; ``Malformed`` if they are not one."""
    try:
        hdr = msgpack.unpackb(header, **_UNPACK_OPTS)
    except Exception as e:  # noqa: BLE001 - peer input: any decoding problem is a malformed message
        raise Malformed(f"undecodable header ({type(e).__name__})") from None
    if not isinstance(hdr, list) or len(hdr) < 5 or not isinstance(hdr[0], str):
        raise Malformed("header is not a message")
    spec = _BY_KIND.get(hdr[0])
    if spec is None:
        raise Malformed(f"unknown message kind {hdr[0][:40]!r}")
    values = hdr[1 : 1 + len(spec.checks)]
    if len(values) < spec.required:
        raise Malformed(f"{spec.kind}: {len(values)} elements after the kind, {spec.required} required")
    for value, ok in zip(values, spec.checks):
        if not isinstance(value, ok):
            raise Malformed(f"{spec.kind}: bad field type {type(value).__name__}")
    if spec.body:
        values.append(body)
    return Origin(*values[:_ORIGIN_LEN]), spec.cls(*values[_ORIGIN_LEN:])
