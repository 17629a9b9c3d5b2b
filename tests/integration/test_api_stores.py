"""Store endpoints of the public API against a real daemon (SPEC §2.1–§2.5, §2.9, §2.11 as amended by §14).

create, snapshot, begin/complete/cancel-modify, update, delete; TTL header rules (§2.9 + §13 fix 8 as
decided: unparsable or outside int64 = absent, > 9,223,372,036 → 400, ≤ 0 on create → 400, ≤ 0 on a
write expires at once); ownership and invalid IDs; path/method/header rules; exact response formats.
Every test uses its own customer on the shared ``node`` or its own daemon.
"""

from __future__ import annotations

import re
import time

import pytest
from helpers import assert_empty_ok, assert_error, assert_sid, call, raw_one, req, seg, snap, wait_for_status

from bigbunny.client import Response

LOCK_RE = re.compile(r"[A-Za-z0-9_-]{22}")
DEFAULT_TTL = 1_209_600
MAX_TTL = 9_223_372_036


# --- helpers ------------------------------------------------------------------------------------
def create(node, customer: str, body: bytes = b"x", ttl: str | None = None) -> str:
    r = call(node, "/api/v1/create", customer, body, {} if ttl is None else {"BigBunny-Not-Valid-After": ttl})
    assert_sid(r)
    return r.text


def begin(node, customer: str, sid: str) -> Response:
    return call(node, f"/api/v1/begin-modify/{seg(sid)}", customer)


def complete(node, customer: str, sid: str, lock: str | None, body: bytes = b"", ttl: str | None = None) -> Response:
    h = {}
    if lock is not None:
        h["BigBunny-Lock-ID"] = lock
    if ttl is not None:
        h["BigBunny-Not-Valid-After"] = ttl
    return call(node, f"/api/v1/complete-modify/{seg(sid)}", customer, body, h)


def cancel(node, customer: str, sid: str, lock: str | None) -> Response:
    return call(
        node,
        f"/api/v1/cancel-modify/{seg(sid)}",
        customer,
        headers=None if lock is None else {"BigBunny-Lock-ID": lock},
    )


def update(node, customer: str, sid: str, body: bytes, ttl: str | None = None) -> Response:
    return call(
        node, f"/api/v1/update/{seg(sid)}", customer, body, None if ttl is None else {"BigBunny-Not-Valid-After": ttl}
    )


def delete(node, customer: str, sid: str) -> Response:
    return call(node, f"/api/v1/delete/{seg(sid)}", customer)


def assert_blob(r: Response, body: bytes) -> None:
    assert (r.status, r.body) == (200, body), (r.status, r.body)
    if body:
        assert r.headers.get("content-type") == "application/octet-stream"
    else:
        assert "content-type" not in r.headers and r.headers.get("content-length") == "0"


def ttl_of(r: Response) -> int:
    return int(r.headers["bigbunny-not-valid-after"])


def assert_ttl_near(r: Response, ttl: int) -> None:
    """Remaining TTL = floor(expiry - now): strictly below the TTL just set, allowing a slow machine."""
    assert ttl - 3 <= ttl_of(r) < ttl, (ttl_of(r), ttl)


# --- create / snapshot -------------------------------------------------------------------------
def test_create_and_snapshot_formats(node, cust) -> None:
    r = call(node, "/api/v1/create", cust, b"\x00binary\xffdata\n")
    assert_sid(r)
    assert not r.body.endswith(b"\n")
    sid = r.text
    s = snap(node, cust, sid)
    assert_blob(s, b"\x00binary\xffdata\n")
    assert_ttl_near(s, DEFAULT_TTL)
    # every create mints a fresh ID
    assert create(node, cust) != create(node, cust)


def test_single_node_writes_carry_no_warning_and_ignore_no_forward(node, cust) -> None:
    """§2.12: no DegradedWrite without peers; X-BB-No-Forward is ignored on the primary."""
    nf = {"X-BB-No-Forward": "true"}
    r = call(node, "/api/v1/create", cust, b"w", nf)
    assert_sid(r)
    sid = r.text
    responses = [
        r,
        call(node, f"/api/v1/update/{seg(sid)}", cust, b"w2", nf),
        call(node, f"/api/v1/snapshot/{seg(sid)}", cust, headers=nf),
        call(node, f"/api/v1/delete/{seg(sid)}", cust, headers=nf),
    ]
    for resp in responses:
        assert resp.status == 200 and "bigbunny-warning" not in resp.headers


def test_create_empty_blob_and_snapshot_of_it(node, cust) -> None:
    sid = create(node, cust, b"")
    assert_blob(snap(node, cust, sid), b"")


def test_snapshot_ignores_content_type_and_query(node, cust) -> None:
    sid = create(node, cust, b'{"a":1}')
    r = call(node, f"/api/v1/snapshot/{seg(sid)}?x=1&y", cust, headers={"Content-Type": "application/json"})
    assert_blob(r, b'{"a":1}')


def test_snapshot_of_missing_store_404(node, cust) -> None:
    sid = create(node, cust)
    assert_empty_ok(delete(node, cust, sid))
    assert_error(snap(node, cust, sid), 404, "store not found", "NotFound")


# --- begin / complete / cancel -------------------------------------------------------------------
def test_modify_roundtrip(lnode, cust) -> None:
    sid = create(lnode, cust, b"old", ttl="3600")
    b = begin(lnode, cust, sid)
    assert_blob(b, b"old")
    lock = b.headers["bigbunny-lock-id"]
    assert LOCK_RE.fullmatch(lock), lock
    assert_ttl_near(b, 3600)
    assert_empty_ok(complete(lnode, cust, sid, lock, b"new"))
    assert_blob(snap(lnode, cust, sid), b"new")
    # the lock was cleared by complete: a new begin succeeds at once, with a fresh lock ID
    b2 = begin(lnode, cust, sid)
    assert b2.status == 200 and b2.headers["bigbunny-lock-id"] != lock
    assert_empty_ok(cancel(lnode, cust, sid, b2.headers["bigbunny-lock-id"]))


def test_begin_while_locked_is_409_store_locked(lnode, cust) -> None:
    sid = create(lnode, cust)
    assert begin(lnode, cust, sid).status == 200
    assert_error(begin(lnode, cust, sid), 409, "store is locked", "StoreLocked")  # no Retry-After


def test_complete_with_wrong_lock_is_409_and_changes_nothing(lnode, cust) -> None:
    sid = create(lnode, cust, b"keep")
    lock = begin(lnode, cust, sid).headers["bigbunny-lock-id"]
    assert_error(complete(lnode, cust, sid, "A" * 22, b"evil"), 409, "lock mismatch", "LockMismatch")
    assert_blob(snap(lnode, cust, sid), b"keep")
    # the real holder still completes
    assert_empty_ok(complete(lnode, cust, sid, lock, b"mine"))
    assert_blob(snap(lnode, cust, sid), b"mine")


def test_complete_without_lock_taken_or_twice_is_lock_mismatch(lnode, cust) -> None:
    sid = create(lnode, cust, b"v0")
    assert_error(complete(lnode, cust, sid, "B" * 22, b"x"), 409, "lock mismatch", "LockMismatch")
    lock = begin(lnode, cust, sid).headers["bigbunny-lock-id"]
    assert_empty_ok(complete(lnode, cust, sid, lock, b"v1"))
    assert_error(complete(lnode, cust, sid, lock, b"v2"), 409, "lock mismatch", "LockMismatch")
    assert_blob(snap(lnode, cust, sid), b"v1")


@pytest.mark.parametrize("lock", [None, ""])
def test_complete_and_cancel_need_a_lock_header(node, cust, lock) -> None:
    sid = create(node, cust)
    assert_error(complete(node, cust, sid, lock, b"x"), 400, "missing lock ID")
    assert_error(cancel(node, cust, sid, lock), 400, "missing lock ID")
    # the lock header is checked before the store ID (§2.4)
    assert_error(complete(node, cust, "garbage", lock, b"x"), 400, "missing lock ID")
    assert_error(cancel(node, cust, "garbage", lock), 400, "missing lock ID")


def test_cancel_rules(lnode, cust) -> None:
    sid = create(lnode, cust, b"c")
    # no lock recorded → 200 (§14, idempotent)
    assert_empty_ok(cancel(lnode, cust, sid, "C" * 22))
    lock = begin(lnode, cust, sid).headers["bigbunny-lock-id"]
    # a different live lock → 409, and the lock stays
    assert_error(cancel(lnode, cust, sid, "D" * 22), 409, "lock mismatch", "LockMismatch")
    assert_error(begin(lnode, cust, sid), 409, "store is locked", "StoreLocked")
    # own lock → 200, released at once; a second cancel is 200 too
    assert_empty_ok(cancel(lnode, cust, sid, lock))
    assert_empty_ok(cancel(lnode, cust, sid, lock))
    b = begin(lnode, cust, sid)
    assert b.status == 200
    # cancel does not change the body
    assert_empty_ok(cancel(lnode, cust, sid, b.headers["bigbunny-lock-id"]))
    assert_blob(snap(lnode, cust, sid), b"c")


def test_modify_ops_on_missing_store_404(node, cust) -> None:
    sid = create(node, cust)
    assert_empty_ok(delete(node, cust, sid))
    assert_error(begin(node, cust, sid), 404, "store not found", "NotFound")
    assert_error(complete(node, cust, sid, "E" * 22, b"x"), 404, "store not found", "NotFound")
    assert_error(update(node, cust, sid, b"x"), 404, "store not found", "NotFound")
    # SPEC §15: cancel-modify is idempotent like delete; an ID that does not open is still 400
    assert_empty_ok(cancel(node, cust, sid, "E" * 22))
    assert_empty_ok(cancel(node, cust, sid, "E" * 22))
    assert_error(cancel(node, cust + "x", sid, "E" * 22), 400, "invalid store ID")


def test_while_locked_matrix(lnode, cust) -> None:
    """While a store is locked: snapshot and delete work; begin and blob update get StoreLocked (§2.5)."""
    d, c = lnode, cust
    sid = create(d, c, b"before")
    lock = begin(d, c, sid).headers["bigbunny-lock-id"]
    assert_blob(snap(d, c, sid), b"before")
    assert_error(update(d, c, sid, b"other"), 409, "store is locked", "StoreLocked")
    assert_error(begin(d, c, sid), 409, "store is locked", "StoreLocked")
    assert_blob(snap(d, c, sid), b"before")
    assert_empty_ok(cancel(d, c, sid, lock))
    assert_empty_ok(update(d, c, sid, b"after"))
    assert_blob(snap(d, c, sid), b"after")
    # a locked store can be deleted
    assert begin(d, c, sid).status == 200
    assert_empty_ok(delete(d, c, sid))
    assert_error(snap(d, c, sid), 404, "store not found", "NotFound")


def test_lock_expiry(daemon_factory) -> None:
    """--lock-timeout=200ms: a late complete is LockMismatch (§14), an expired lock is replaced, no
    longer blocks update, and cancelling it is a no-op 200. (Only expiry is timed here: checks that
    need a lock to stay live run on ``lnode``, whose locks last 30 s.)"""
    d = daemon_factory("--rate-limit=0", "--lock-timeout=200ms")
    c = "lockexp"
    sid = create(d, c, b"orig")
    old = begin(d, c, sid).headers["bigbunny-lock-id"]
    time.sleep(0.3)  # > the lock timeout: the lock expires (the behaviour under test)
    assert_error(complete(d, c, sid, old, b"late"), 409, "lock mismatch", "LockMismatch")
    assert_blob(snap(d, c, sid), b"orig")
    # the expired lock is replaced by a new one
    new = begin(d, c, sid).headers["bigbunny-lock-id"]
    assert LOCK_RE.fullmatch(new) and new != old
    time.sleep(0.3)
    # expired: update goes through, cancelling the expired lock is 200, and begin works again
    assert_empty_ok(update(d, c, sid, b"updated"))
    assert_empty_ok(cancel(d, c, sid, new))
    assert_empty_ok(cancel(d, c, sid, old))
    assert begin(d, c, sid).status == 200
    assert_blob(snap(d, c, sid), b"updated")


# --- update / delete ---------------------------------------------------------------------------
def test_update_replaces_blob(node, cust) -> None:
    sid = create(node, cust, b"one")
    assert_empty_ok(update(node, cust, sid, b"two"))
    assert_blob(snap(node, cust, sid), b"two")
    assert_empty_ok(update(node, cust, sid, b""))
    assert_blob(snap(node, cust, sid), b"")
    # a blob that looks like a counter set stays a blob
    assert_empty_ok(update(node, cust, sid, b'{"value":5}'))
    assert_blob(snap(node, cust, sid), b'{"value":5}')


def test_delete_is_idempotent(node, cust) -> None:
    sid = create(node, cust)
    before = node.status()["tombstone_count"]
    assert_empty_ok(delete(node, cust, sid))
    assert_error(snap(node, cust, sid), 404, "store not found", "NotFound")
    assert_empty_ok(delete(node, cust, sid))  # §14: 200, idempotent
    assert node.status()["tombstone_count"] == before + 1  # recorded once


# --- ownership and invalid IDs ------------------------------------------------------------------
def _all_id_ops(node, customer: str, sid: str) -> dict[str, Response]:
    return {
        "snapshot": snap(node, customer, sid),
        "begin": begin(node, customer, sid),
        "complete": complete(node, customer, sid, "F" * 22, b"x"),
        "cancel": cancel(node, customer, sid, "F" * 22),
        "update": update(node, customer, sid, b"x"),
        "increment": call(node, f"/api/v1/increment/{seg(sid)}", customer, b'{"delta":1}'),
        "decrement": call(node, f"/api/v1/decrement/{seg(sid)}", customer, b'{"delta":1}'),
        "delete": delete(node, customer, sid),
    }


def test_other_customer_gets_invalid_store_id_everywhere(node, cust) -> None:
    sid = create(node, cust, b"private")
    for op, r in _all_id_ops(node, cust + "x", sid).items():
        assert r.status == 400, op
        assert_error(r, 400, "invalid store ID")
    # nothing happened to the owner's store (not deleted, not locked, not changed)
    assert_blob(snap(node, cust, sid), b"private")
    assert begin(node, cust, sid).status == 200


def _tamper(sid: str) -> str:
    i = 20
    return sid[:i] + ("A" if sid[i] != "A" else "B") + sid[i + 1 :]


@pytest.mark.parametrize(
    "make",
    [
        lambda sid: "garbage",
        lambda sid: sid[:-1],
        lambda sid: sid + "A",
        _tamper,
        lambda sid: "v1:1:" + sid[5:],
        lambda sid: "V1" + sid[2:],
        lambda sid: " " + sid,
        lambda sid: sid + " ",
        lambda sid: sid.replace(":", "%3A", 1),  # literal "%3A" after decoding once
        lambda sid: "x" * 10_000,
    ],
    ids=[
        "garbage",
        "truncated",
        "extended",
        "tampered",
        "other-key",
        "upper-v",
        "lead-space",
        "trail-space",
        "double-encoded",
        "10k",
    ],
)
def test_invalid_store_ids_are_opaque_400(node, cust, make) -> None:
    sid = create(node, cust, b"safe")
    bad = make(sid)
    r = _all_id_ops(node, cust, bad)
    for op in ("snapshot", "begin", "complete", "cancel", "update", "delete"):
        assert_error(r[op], 400, "invalid store ID")
    assert_blob(snap(node, cust, sid), b"safe")


def test_increment_and_decrement_trim_the_id(node, cust) -> None:
    sid = call(node, "/api/v1/create", cust, b'{"type":"counter","value":1}').text
    r = call(node, f"/api/v1/increment/{seg('  ' + sid + ' ')}", cust, b'{"delta":2}')
    assert (r.status, r.body) == (200, b'{"value":3,"version":2,"bounded":false}\n')
    r = call(node, f"/api/v1/decrement/{seg(sid + chr(9))}", cust, b'{"delta":1}')
    assert (r.status, r.body) == (200, b'{"value":2,"version":3,"bounded":false}\n')
    # only whitespace → missing store ID (not 404: the segment is not empty)
    assert_error(call(node, "/api/v1/increment/%20%20", cust, b'{"delta":1}'), 400, "missing store ID")
    assert_error(call(node, "/api/v1/decrement/%20", cust, b'{"delta":1}'), 400, "missing store ID")


# --- TTL header (§2.9 + §13 fix 8 as decided) ----------------------------------------------------
@pytest.mark.parametrize(
    "value,expected",
    [
        (None, DEFAULT_TTL),
        ("abc", DEFAULT_TTL),
        ("60.5", DEFAULT_TTL),
        ("", DEFAULT_TTL),
        ("1e3", DEFAULT_TTL),
        ("0x10", DEFAULT_TTL),
        ("9223372036854775808", DEFAULT_TTL),  # outside int64 = absent
        ("-9223372036854775809", DEFAULT_TTL),
        ("99999999999999999999999", DEFAULT_TTL),
        ("60", 60),
        ("+60", 60),
        ("060", 60),
        ("1", 1),
        (str(MAX_TTL), MAX_TTL),
    ],
)
def test_create_ttl_accepted(node, cust, value, expected) -> None:
    sid = create(node, cust, b"t", ttl=value)
    r = snap(node, cust, sid)
    assert r.status == 200
    assert_ttl_near(r, expected)


@pytest.mark.parametrize("value", [str(MAX_TTL + 1), "9223372036854775807", "0", "-1", "-9223372036854775808"])
def test_create_ttl_refused(node, cust, value) -> None:
    before = node.status()["store_count"]
    r = call(node, "/api/v1/create", cust, b"t", {"BigBunny-Not-Valid-After": value})
    assert_error(r, 400, "invalid TTL")
    assert node.status()["store_count"] == before


def test_ttl_header_whitespace_is_trimmed(node, cust) -> None:
    data = (
        f"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nX-Customer-ID: {cust}\r\n"
        "BigBunny-Not-Valid-After:   77  \r\nContent-Length: 1\r\nConnection: close\r\n\r\nz"
    ).encode()
    status, _, body = raw_one(node.sock, data)
    assert status == 200
    assert_ttl_near(snap(node, cust, body.decode()), 77)


def test_update_ttl_rules(node, cust) -> None:
    sid = create(node, cust, b"u0", ttl="1000")
    assert_empty_ok(update(node, cust, sid, b"u1", ttl="abc"))  # unparsable: expiry unchanged
    assert_ttl_near(snap(node, cust, sid), 1000)
    assert_empty_ok(update(node, cust, sid, b"u2", ttl="9223372036854775808"))  # > int64: absent
    assert_ttl_near(snap(node, cust, sid), 1000)
    assert_empty_ok(update(node, cust, sid, b"u3"))  # absent: unchanged
    assert_ttl_near(snap(node, cust, sid), 1000)
    assert_empty_ok(update(node, cust, sid, b"u4", ttl="100"))  # reset
    assert_ttl_near(snap(node, cust, sid), 100)
    assert_empty_ok(update(node, cust, sid, b"u5", ttl=str(MAX_TTL)))
    assert_ttl_near(snap(node, cust, sid), MAX_TTL)
    # too large: plain 400, nothing applied
    assert_error(update(node, cust, sid, b"bad", ttl=str(MAX_TTL + 1)), 400, "invalid TTL")
    s = snap(node, cust, sid)
    assert_blob(s, b"u5")
    assert_ttl_near(s, MAX_TTL)


@pytest.mark.parametrize("value", ["0", "-1", "-9223372036854775808"])
def test_update_ttl_not_positive_expires_at_once(node, cust, value) -> None:
    sid = create(node, cust, b"x", ttl="1000")
    assert_empty_ok(update(node, cust, sid, b"y", ttl=value))
    assert_error(wait_for_status(lambda: snap(node, cust, sid), 410), 410, "store expired", "StoreExpired")


def test_complete_modify_ttl_rules(lnode, cust) -> None:
    sid = create(lnode, cust, b"m0", ttl="1000")
    lock = begin(lnode, cust, sid).headers["bigbunny-lock-id"]
    assert_empty_ok(complete(lnode, cust, sid, lock, b"m1", ttl="junk"))
    assert_ttl_near(snap(lnode, cust, sid), 1000)
    lock = begin(lnode, cust, sid).headers["bigbunny-lock-id"]
    assert_error(complete(lnode, cust, sid, lock, b"m2", ttl=str(MAX_TTL + 1)), 400, "invalid TTL")
    assert_blob(snap(lnode, cust, sid), b"m1")
    assert_empty_ok(complete(lnode, cust, sid, lock, b"m2", ttl="50"))
    s = snap(lnode, cust, sid)
    assert_blob(s, b"m2")
    assert_ttl_near(s, 50)
    lock = begin(lnode, cust, sid).headers["bigbunny-lock-id"]
    assert_empty_ok(complete(lnode, cust, sid, lock, b"m3", ttl="0"))
    assert_error(wait_for_status(lambda: snap(lnode, cust, sid), 410), 410, "store expired", "StoreExpired")


def test_reads_and_cancel_do_not_touch_expiry(node, cust) -> None:
    sid = create(node, cust, b"r", ttl="500")
    h = {"BigBunny-Not-Valid-After": "5"}
    assert_ttl_near(snap(node, cust, sid, headers=h), 500)
    b = call(node, f"/api/v1/begin-modify/{seg(sid)}", cust, headers=h)
    assert_ttl_near(b, 500)
    r = call(
        node,
        f"/api/v1/cancel-modify/{seg(sid)}",
        cust,
        headers={**h, "BigBunny-Lock-ID": b.headers["bigbunny-lock-id"]},
    )
    assert_empty_ok(r)
    assert_ttl_near(snap(node, cust, sid), 500)


def test_ttl_one_expires_then_410_everywhere_and_delete_200(node, cust) -> None:
    sid = create(node, cust, b"short", ttl="1")
    first = snap(node, cust, sid)
    assert first.status == 200 and ttl_of(first) == 0
    r = wait_for_status(lambda: snap(node, cust, sid), 410, timeout=5.0)
    assert_error(r, 410, "store expired", "StoreExpired")
    assert_error(begin(node, cust, sid), 410, "store expired", "StoreExpired")
    assert_error(update(node, cust, sid, b"late"), 410, "store expired", "StoreExpired")
    assert_empty_ok(delete(node, cust, sid))  # deleting an expired store is 200
    assert_error(snap(node, cust, sid), 404, "store not found", "NotFound")


# --- quotas and tombstone limit -------------------------------------------------------------------
def test_memory_quota_and_limit(daemon_factory) -> None:
    """§6: quota 600 → two 10-byte blobs (532) fit, a third doesn't; growth +90 refused, +40 allowed;
    global limit 1000 checked after the customer quota."""
    d = daemon_factory("--rate-limit=0", "--customer-memory-quota=600", "--memory-limit=1000", "--lock-timeout=30s")
    a, b = "quotaA", "quotaB"
    s1 = create(d, a, b"0123456789")
    s2 = create(d, a, b"0123456789")
    r = call(d, "/api/v1/create", a, b"0123456789")
    assert_error(r, 507, "customer quota exceeded", "CustomerQuotaExceeded")
    assert_error(update(d, a, s1, b"x" * 100), 507, "customer quota exceeded", "CustomerQuotaExceeded")
    assert_blob(snap(d, a, s1), b"0123456789")
    lock = begin(d, a, s2).headers["bigbunny-lock-id"]
    assert_error(complete(d, a, s2, lock, b"y" * 100), 507, "customer quota exceeded", "CustomerQuotaExceeded")
    assert_empty_ok(cancel(d, a, s2, lock))
    assert_empty_ok(update(d, a, s1, b"x" * 50))
    assert d.status()["memory_usage"] == 306 + 266
    # shrinking is never refused
    assert_empty_ok(update(d, a, s1, b""))
    assert d.status()["memory_usage"] == 256 + 266
    # customer B: within its quota, but the global limit (1000) is reached: 522 + 266 + 266 > 1000
    create(d, b, b"0123456789")
    assert d.status()["memory_usage"] == 256 + 266 * 2
    assert_error(call(d, "/api/v1/create", b, b"0123456789"), 507, "capacity exceeded", "CapacityExceeded")
    # both exceeded: the customer quota is reported (checked first)
    assert_error(call(d, "/api/v1/create", a, b"q" * 400), 507, "customer quota exceeded", "CustomerQuotaExceeded")
    # reaching the global limit exactly is allowed
    assert_empty_ok(delete(d, a, s2))
    assert d.status()["memory_usage"] == 256 + 266
    create(d, "quotaC", b"z" * (1000 - (256 + 266) - 256))
    assert d.status()["memory_usage"] == 1000
    assert_error(call(d, "/api/v1/create", "quotaD", b""), 507, "capacity exceeded", "CapacityExceeded")


def test_tombstone_customer_limit(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=0", "--tombstone-customer-limit=2")
    c = "tomb"
    s1, s2, s3 = create(d, c), create(d, c), create(d, c)
    assert_empty_ok(delete(d, c, s1))
    assert_empty_ok(delete(d, c, s2))
    assert_error(delete(d, c, s3), 429, "tombstone limit exceeded", "TombstoneLimitExceeded")
    assert_blob(snap(d, c, s3), b"x")  # refused before anything was removed
    assert_empty_ok(delete(d, c, s1))  # re-deleting a tombstoned ID adds nothing: allowed
    assert d.status()["tombstone_count"] == 2
    # other customers have their own count
    other = create(d, "tomb2")
    assert_empty_ok(delete(d, "tomb2", other))


# --- paths, methods, headers -------------------------------------------------------------------
ID_ENDPOINTS = [
    "snapshot",
    "begin-modify",
    "complete-modify",
    "cancel-modify",
    "update",
    "increment",
    "decrement",
    "delete",
    "create-by-name",
    "delete-by-name",
    "lookup-id-by-name",
]


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api",
        "/api/v1",
        "/api/v1/",
        "/api/v1/nope",
        "/api/v1/CREATE",
        "/API/v1/create",
        "/api/v2/create",
        "/api/v1/create/",
        "/api/v1/create/x",
        "/api/v1//create",
        "/api/v1/snapshot",
        "/api/v1/snapshot/",
        "/api/v1/snapshot/a/b",
        "/api/v1/snapshot//",
        "/api/v1/snapshot/x/",
        "/api/v1/delete-by-name/",
        "/api/v1/lookup-id-by-name/",
        "/api/v1/create-by-name/",
        "/api/v1/increment/",
        "/internal",
        "/internal/",
        "/internal/nope",
        "/internal/release-lock/",
        "/statusx",
        "/favicon.ico",
    ],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_unknown_path_is_plain_404(node, cust, path, method) -> None:
    assert_error(call(node, path, cust, method=method), 404, "page not found")
    # also without a customer: the route is checked first
    assert_error(call(node, path, None, method=method), 404, "page not found")


@pytest.mark.parametrize("endpoint", ["create", *ID_ENDPOINTS])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_wrong_method_is_405_allow_post(node, cust, endpoint, method) -> None:
    path = "/api/v1/create" if endpoint == "create" else f"/api/v1/{endpoint}/abc"
    r = call(node, path, None, method=method)  # method is checked before the customer
    assert_error(r, 405, "Method Not Allowed")
    assert r.headers["allow"] == "POST"


def test_head_on_api_is_405_without_body(node, cust) -> None:
    r = call(node, "/api/v1/create", cust, method="HEAD")
    assert (r.status, r.body, r.headers.get("allow")) == (405, b"", "POST")


def test_percent_decoded_segments(node, cust) -> None:
    sid = create(node, cust, b"pct")
    every_char = "".join(f"%{b:02X}" for b in sid.encode())
    assert_blob(call(node, f"/api/v1/snapshot/{every_char}", cust), b"pct")
    assert_blob(call(node, f"/api/v1/snapshot/{sid.replace(':', '%3a')}", cust), b"pct")
    assert_blob(call(node, f"/api/v1/snapshot/{sid}", cust), b"pct")  # ':' unencoded is fine too
    # an encoded slash is part of the segment (no 404), and then an invalid ID
    assert_error(call(node, f"/api/v1/snapshot/{sid[:10]}%2F{sid[11:]}", cust), 400, "invalid store ID")
    # invalid escapes stay literal
    assert_error(call(node, "/api/v1/snapshot/%zz", cust), 400, "invalid store ID")


def test_header_names_are_case_insensitive(lnode, cust) -> None:
    r = call(lnode, "/api/v1/create", None, b"ci", {"x-CUSTOMER-id": cust, "BIGBUNNY-NOT-VALID-AFTER": "90"})
    assert_sid(r)
    sid = r.text
    assert_ttl_near(snap(lnode, cust, sid), 90)
    b = call(lnode, f"/api/v1/begin-modify/{seg(sid)}", None, headers={"X-Customer-Id": cust})
    lock = b.headers["bigbunny-lock-id"]
    assert_empty_ok(
        call(
            lnode,
            f"/api/v1/complete-modify/{seg(sid)}",
            None,
            b"ci2",
            {"x-customer-id": cust, "bigbunny-lock-id": lock},
        )
    )
    assert_blob(snap(lnode, cust, sid), b"ci2")


def test_repeated_headers_first_value_wins(lnode, cust) -> None:
    # customer: first valid, second invalid → OK; first invalid → 400
    status, _, sid_b = raw_one(
        lnode.sock, req("POST", "/api/v1/create", [("X-Customer-ID", cust), ("x-customer-id", "bad cust")], b"d")
    )
    assert status == 200
    sid = sid_b.decode()
    status, h, body = raw_one(
        lnode.sock, req("POST", f"/api/v1/snapshot/{sid}", [("X-Customer-ID", "bad cust"), ("X-Customer-ID", cust)])
    )
    assert (status, body) == (400, b"invalid customer ID\n")
    # TTL: the first value counts, even if unparsable
    status, _, sid_b = raw_one(
        lnode.sock,
        req(
            "POST",
            "/api/v1/create",
            [("X-Customer-ID", cust), ("BigBunny-Not-Valid-After", "120"), ("BigBunny-Not-Valid-After", "0")],
            b"t",
        ),
    )
    assert status == 200
    assert_ttl_near(snap(lnode, cust, sid_b.decode()), 120)
    status, _, sid_b = raw_one(
        lnode.sock,
        req(
            "POST",
            "/api/v1/create",
            [("X-Customer-ID", cust), ("BigBunny-Not-Valid-After", "abc"), ("BigBunny-Not-Valid-After", "0")],
            b"t",
        ),
    )
    assert status == 200
    assert_ttl_near(snap(lnode, cust, sid_b.decode()), DEFAULT_TTL)
    # lock ID: first wins
    lock = begin(lnode, cust, sid).headers["bigbunny-lock-id"]
    status, _, body = raw_one(
        lnode.sock,
        req(
            "POST",
            f"/api/v1/complete-modify/{sid}",
            [("X-Customer-ID", cust), ("BigBunny-Lock-ID", "G" * 22), ("BigBunny-Lock-ID", lock)],
            b"no",
        ),
    )
    assert (status, body) == (409, b"lock mismatch\n")
    status, _, body = raw_one(
        lnode.sock,
        req(
            "POST",
            f"/api/v1/complete-modify/{sid}",
            [("X-Customer-ID", cust), ("BigBunny-Lock-ID", lock), ("BigBunny-Lock-ID", "G" * 22)],
            b"yes",
        ),
    )
    assert (status, body) == (200, b"")
    assert_blob(snap(lnode, cust, sid), b"yes")


def test_host_is_ignored(node, cust) -> None:
    r = call(node, "/api/v1/create", cust, b"h", {"Host": "evil.example:1234"})
    assert_sid(r)
    assert_blob(snap(node, cust, r.text), b"h")


# --- check order (§2.4) ------------------------------------------------------------------------
def test_check_order(node, cust) -> None:
    sid = create(node, cust, b"o")
    big = b"x" * 2049
    # customer before anything about the request
    assert_error(call(node, "/api/v1/snapshot/garbage", None), 401, "missing customer ID")
    # create: body 413 before TTL
    assert_error(call(node, "/api/v1/create", cust, big, {"BigBunny-Not-Valid-After": "0"}), 413, "body too large")
    # update: invalid ID before body
    assert_error(update(node, cust, "garbage", big), 400, "invalid store ID")
    # update: body 413 before 404
    gone = create(node, cust)
    delete(node, cust, gone)
    assert_error(update(node, cust, gone, big), 413, "body too large")
    # complete: body 413 before the lock check
    assert_error(complete(node, cust, sid, "H" * 22, big), 413, "body too large")
    assert_blob(snap(node, cust, sid), b"o")
