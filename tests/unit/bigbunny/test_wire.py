"""The supervisor <-> shard batch codec (``bigbunny.wire``): typed round trips and malformed frames."""

from __future__ import annotations

import inspect

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bigbunny import wire
from bigbunny.shards.engine import StoreEngine
from bigbunny.shards.ops import ShardOps
from bigbunny.storeid import KeySet, StoreIdCodec

values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=40), st.booleans())
bodies = st.binary(max_size=3000)
requests = st.builds(
    wire.Request,
    rid=st.integers(1, 2**62),
    op=st.integers(wire.OP_CREATE, wire.OP_RECONFIGURE),
    sid=st.text(max_size=80),
    customer=st.text(max_size=40),
    ttl=st.one_of(st.none(), st.integers(0, 2**31)),
    flags=st.integers(0, 511),
    lock=st.one_of(st.none(), st.text(max_size=30)),
    allow=st.one_of(st.none(), st.lists(st.integers(0, 2**40), min_size=2, max_size=2)),
    extra=st.one_of(values, st.lists(values, max_size=5), st.dictionaries(st.text(max_size=8), values, max_size=3)),
)
replies = st.builds(
    wire.Reply,
    rid=st.integers(1, 2**62),
    err=st.integers(-1, 40),
    a=st.one_of(values, st.lists(values, max_size=3)),
    b=values,
    record=st.one_of(st.none(), st.lists(values, min_size=4, max_size=9)),
)


@given(st.lists(st.tuples(requests, bodies), max_size=20))
def test_requests_round_trip_with_their_bodies(batch: list[tuple[wire.Request, bytes]]) -> None:
    frame = wire.pack([m for m, _ in batch], [b for _, b in batch])
    assert isinstance(frame, bytes)
    out = [(wire.Request._make(fields), body) for fields, body in wire.unpack(frame, wire.Request)]
    assert out == batch


@given(st.lists(st.tuples(replies, bodies), max_size=20))
def test_replies_round_trip_with_their_bodies(batch: list[tuple[wire.Reply, bytes]]) -> None:
    frame = wire.pack([m for m, _ in batch], [b for _, b in batch])
    out = [(wire.Reply._make(fields), body) for fields, body in wire.unpack(frame, wire.Reply)]
    assert out == batch


def test_a_message_travels_as_the_positional_array_of_its_fields() -> None:
    """The named types change nothing on the wire: a Request is the array of its nine fields, in order."""
    req = wire.Request(7, wire.OP_COMPLETE, "sid", "cust", 30, wire.F_BARRIER, "lock", [10, 20], None)
    positional = [7, wire.OP_COMPLETE, "sid", "cust", 30, wire.F_BARRIER, "lock", [10, 20], None]
    assert wire.pack([req], [b"x"]) == wire.pack([positional], [b"x"])
    rep = wire.Reply(7, wire.OK, 12, None, None)
    assert wire.pack([rep], [b""]) == wire.pack([[7, wire.OK, 12, None, None]], [b""])


def test_the_field_order_the_hot_loops_unpack_by() -> None:
    """The channel and the shard worker build and unpack messages as plain tuples in this order."""
    assert wire.Request._fields == ("rid", "op", "sid", "customer", "ttl", "flags", "lock", "allow", "extra")
    assert wire.Reply._fields == ("rid", "err", "a", "b", "record")


def test_every_shard_handler_takes_the_request_fields_by_name() -> None:
    """ShardOps.handle passes a request's fields after rid and op, in order, to its handler's parameters."""
    ops = ShardOps(0, 1, StoreEngine(), StoreIdCodec(KeySet.dev(), "local"))
    for op, handler in ops.table.items():
        assert tuple(inspect.signature(handler).parameters) == (*wire.Request._fields[2:], "body"), op


def test_bodies_travel_raw_after_the_header() -> None:
    frame = wire.pack([wire.Request(1, wire.OP_SNAPSHOT, "sid", "c")], [b"BODY"])
    n = int.from_bytes(frame[:4], "little")
    assert frame[4 + n :] == b"BODY"


def _frame(header: object, bodies: bytes = b"") -> bytes:
    head = msgpack.packb(header, use_bin_type=True)
    return len(head).to_bytes(4, "little") + head + bodies


_REQ = [1, wire.OP_PING, "", "", None, 0, None, None, None]


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x01\x00",
        (100).to_bytes(4, "little") + b"\x90",  # header length beyond the frame
        _frame({"a": 1}),  # not [headers, lengths]
        _frame([[_REQ], [1, 2]]),  # one header, two lengths
        _frame([[_REQ], [5]], b"abc"),  # body shorter than announced
        _frame([[_REQ], [1]], b"abc"),  # trailing bytes
        _frame([[[]], [0]]),  # empty header
        _frame([["x" * 9], [0]]),  # header not a list (though nine long)
        _frame([[_REQ[:8]], [0]]),  # a field short
        _frame([[[*_REQ, None]], [0]]),  # a field too many
        _frame([[[1, wire.OK, None, None, None]], [0]]),  # a Reply where a Request belongs
    ],
)
def test_malformed_request_frames_raise_value_error(frame: bytes) -> None:
    with pytest.raises(ValueError):
        list(wire.unpack(frame, wire.Request))


@pytest.mark.parametrize(
    "header",
    [[1, wire.OK, None, None], [1, wire.OK, None, None, None, None], _REQ],
)
def test_a_reply_needs_exactly_its_five_fields(header: object) -> None:
    frame = _frame([[header], [0]])
    with pytest.raises(ValueError):
        list(wire.unpack(frame, wire.Reply))
