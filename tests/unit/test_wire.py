"""The supervisor <-> shard batch codec (``bigbunny.wire``): round trips and malformed frames."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bigbunny import wire

header_values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=40), st.booleans())
items = st.lists(st.tuples(st.lists(header_values, min_size=1, max_size=9), st.binary(max_size=3000)), max_size=20)


@given(items)
def test_pack_then_unpack_gives_back_every_header_and_body(batch: list[tuple[list, bytes]]) -> None:
    frame = wire.pack([h for h, _ in batch], [b for _, b in batch])
    assert isinstance(frame, bytes)
    assert [(h, b) for h, b in wire.unpack(frame)] == batch


def test_bodies_travel_raw_after_the_header() -> None:
    frame = wire.pack([[1, wire.OP_SNAPSHOT, "sid", "c"]], [b"BODY"])
    n = int.from_bytes(frame[:4], "little")
    assert frame[4 + n :] == b"BODY"


def _frame(header: object, bodies: bytes = b"") -> bytes:
    head = msgpack.packb(header, use_bin_type=True)
    return len(head).to_bytes(4, "little") + head + bodies


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x01\x00",
        (100).to_bytes(4, "little") + b"\x90",  # header length beyond the frame
        _frame({"a": 1}),  # not [headers, lengths]
        _frame([[[1]], [1, 2]]),  # one header, two lengths
        _frame([[[1]], [5]], b"abc"),  # body shorter than announced
        _frame([[[1]], [1]], b"abc"),  # trailing bytes
        _frame([[[]], [0]]),  # empty header
        _frame([["x"], [0]]),  # header not a list
    ],
)
def test_malformed_frames_raise_value_error(frame: bytes) -> None:
    with pytest.raises(ValueError):
        list(wire.unpack(frame))
