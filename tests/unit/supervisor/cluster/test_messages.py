"""Unit tests for supervisor.cluster.messages: every peer-link message survives pack/unpack, its bytes are
those the previous (hand-built list) version sent, and malformed input is refused — by ``unpack``
and by the link's reader, which must never crash on it."""

from __future__ import annotations

import hmac
import logging
from hashlib import sha256
from typing import Any

import msgpack
import pytest

from bigbunny.supervisor.cluster import messages as pm
from bigbunny.supervisor.cluster.link import PeerLink

ORIGIN = pm.Origin("node1", "local", 3, 1700000000.25)

# one message of every kind, with the list of fields the previous version put after the origin
SAMPLES: list[tuple[str, pm.Message, list[Any], bytes]] = [
    ("hb", pm.Heartbeat(42, 123456), [42, 123456], b""),
    ("hb_ack", pm.HeartbeatAck("node1:3", 17, "SECONDARY"), ["node1:3", 17, "SECONDARY"], b""),
    ("probe", pm.Probe("JOINING"), ["JOINING"], b""),
    ("probe_reply", pm.ProbeReply("PRIMARY"), ["PRIMARY"], b""),
    (
        "repl",
        pm.ReplBatch("node1:3", [[1, ["C", 0, "sid", "cust", b"body"], 1.5]], 0, True),
        ["node1:3", [[1, ["C", 0, "sid", "cust", b"body"], 1.5]], 0, True],
        b"",
    ),
    ("repl_ack", pm.ReplAck("node1:3", 9), ["node1:3", 9], b""),
    ("join_req", pm.JoinRequest("node2-1"), ["node2-1", True], b""),
    ("join_refuse", pm.JoinRefuse("node2-1", "not primary", 1), ["node2-1", "not primary", 1], b""),
    (
        "join_chunk",
        pm.JoinChunk("node2-1", 0, True, [["sid", 0]], {"site": "local", "base_seq": 5}),
        ["node2-1", 0, True, [["sid", 0]], {"site": "local", "base_seq": 5}],
        b"",
    ),
    ("join_chunk", pm.JoinChunk("node2-1", 1, False, [], None), ["node2-1", 1, False, [], None], b""),
    (
        "relay",
        pm.RelayRequest(7, "POST", b"/api/v1/create", [[b"bigbunny-customer", b"c1"]], b"payload"),
        [7, "POST", b"/api/v1/create", [[b"bigbunny-customer", b"c1"]]],
        b"payload",
    ),
    (
        "relay_reply",
        pm.RelayAnswer(7, 200, [[b"content-type", b"text/plain"]], b"sid"),
        [7, 200, [[b"content-type", b"text/plain"]]],
        b"sid",
    ),
]


def legacy_header(kind: str, fields: list[Any]) -> bytes:
    """The header as the previous version built it: ``[type, host_id, site, epoch, ts, *fields]``."""
    return msgpack.Packer(use_bin_type=True).pack([kind, *ORIGIN, *fields])


@pytest.mark.parametrize(("kind", "msg", "fields", "body"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_every_message_round_trips_with_the_previous_bytes(
    kind: str, msg: pm.Message, fields: list[Any], body: bytes
) -> None:
    header, frame = pm.pack(ORIGIN, msg)
    assert header == legacy_header(kind, fields) and frame == body
    assert pm.kind_of(msg) == kind
    origin, back = pm.unpack(header, frame)
    assert origin == ORIGIN and back == msg and type(back) is type(msg)


def test_every_kind_has_a_sample() -> None:
    assert {kind for kind, *_ in SAMPLES} == {"hb", "hb_ack", "probe", "probe_reply", "repl", "repl_ack"} | {
        "join_req",
        "join_refuse",
        "join_chunk",
        "relay",
        "relay_reply",
    }


def test_older_and_newer_senders_interoperate() -> None:
    # a batch without the ``urgent`` flag (an older sender) is not urgent
    _, batch = pm.unpack(legacy_header("repl", ["s", [], 0]))
    assert batch == pm.ReplBatch("s", [], 0, False)
    # fields a newer sender appends are ignored
    _, ack = pm.unpack(legacy_header("repl_ack", ["s", 4, "something new", 1]))
    assert ack == pm.ReplAck("s", 4)
    # an epoch-stamped float timestamp may arrive as an integer
    _, hb = pm.unpack(msgpack.packb(["hb", "node1", "", 1, 1700000000, 0, 0]))
    assert hb == pm.Heartbeat(0, 0)


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"\xc1",  # never valid msgpack
        b"\x92\x01",  # truncated array
        msgpack.packb({"kind": "hb"}),
        msgpack.packb("hb"),
        msgpack.packb(["hb", "node1", "", 1]),  # origin cut short
        msgpack.packb([["hb"], "node1", "", 1, 0.0, 0, 0]),  # unhashable kind
        msgpack.packb(["nope", "node1", "", 1, 0.0]),  # unknown kind
        msgpack.packb(["hb", "node1", "", 1, 0.0, 0]),  # a field missing
        msgpack.packb(["hb", "node1", "", "1", 0.0, 0, 0]),  # epoch not an integer
        msgpack.packb(["hb", 7, "", 1, 0.0, 0, 0]),  # sender not a string
        msgpack.packb(["repl", "node1", "", 1, 0.0, "s", {"not": "a list"}, 0]),
        msgpack.packb(["join_chunk", "node1", "", 1, 0.0, "j", 0, True, [], "not a dict"]),
        msgpack.packb(["relay", "node1", "", 1, 0.0, 1, "GET", "/str-not-bytes", []]),
    ],
)
def test_malformed_headers_are_refused(header: bytes) -> None:
    with pytest.raises(pm.Malformed):
        pm.unpack(header)


def test_the_link_reader_drops_malformed_messages_and_survives_handler_bugs(caplog: pytest.LogCaptureFixture) -> None:
    link = PeerLink("node2", "local", "127.0.0.1:0", "127.0.0.1:0", "", dev=True)  # no sockets until start()
    try:
        got: list[tuple[pm.Origin, pm.Heartbeat]] = []
        link.on(pm.Heartbeat, lambda origin, hb: got.append((origin, hb)))
        link.on(pm.Probe, lambda origin, probe: 1 / 0)
        with caplog.at_level(logging.WARNING, "bbd.link"):
            link._dispatch([b"", msgpack.packb(["hb", "node1"]), b""])
            link._dispatch([b"", b"\xc1", b""])
            link._dispatch([b"", b"only two frames"])
            header, body = pm.pack(ORIGIN, pm.ProbeReply("PRIMARY"))  # no handler registered
            link._dispatch([b"", header, body])
            header, body = pm.pack(ORIGIN, pm.Probe("JOINING"))  # the handler raises
            link._dispatch([b"", header, body])
            header, body = pm.pack(ORIGIN, pm.Heartbeat(1, 2))
            link._dispatch([b"", header, body])
        assert link.dropped_bad_mac == 4
        assert got == [(ORIGIN, pm.Heartbeat(1, 2))]
        assert "handling 'probe' from peer failed" in caplog.text
    finally:
        link.close()


def test_a_bad_mac_is_refused_before_decoding() -> None:
    link = PeerLink("node2", "local", "127.0.0.1:0", "127.0.0.1:0", "token", dev=True)
    try:
        got: list[pm.Heartbeat] = []
        link.on(pm.Heartbeat, lambda origin, hb: got.append(hb))
        header, body = pm.pack(ORIGIN, pm.Heartbeat(1, 2))
        link._dispatch([b"x" * 32, header, body])
        assert got == [] and link.dropped_bad_mac == 1
        link._dispatch([hmac.new(link.mac_key, header + body, sha256).digest(), header, body])
        assert got == [pm.Heartbeat(1, 2)]
    finally:
        link.close()
