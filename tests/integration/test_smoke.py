"""The first thing a user does: start a node, create, read, stop."""

from __future__ import annotations

import pytest

from bigbunny.client import BBError


def test_create_snapshot_roundtrip(node) -> None:
    c = node.client("smoke")
    sid = c.create(b"hello")
    assert sid.startswith("v1:0:") and len(sid) == 64
    snap = c.snapshot(sid)
    assert snap.body == b"hello"
    assert snap.ttl == 1_209_599


def test_other_customer_cannot_open(node) -> None:
    sid = node.client("smoke").create(b"x")
    with pytest.raises(BBError) as e:
        node.client("other").snapshot(sid)
    assert e.value.status == 400 and e.value.message == "invalid store ID" and e.value.code is None


def test_status_single_node_primary(node) -> None:
    st = node.status()
    assert st["role"] == "PRIMARY" and st["leader_epoch"] == 1
    assert len(st["shards"]) == 2 and all(s["up"] for s in st["shards"])
