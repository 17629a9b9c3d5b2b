"""Named stores against a real daemon (SPEC §2.8 as amended by §14 and §13 fixes 5, 6, 7, 16).

create-by-name with and without Reuse-If-Exists, NameExists, NameCreating (503 + Retry-After 1) for a
name being created or deleted, an expired/deleted target with reuse created anew, idempotent
delete-by-name, lookup cleanup, name validation, and named counters (JSON Content-Type with params).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from helpers import assert_empty_ok, assert_error, assert_sid, call, seg, snap, wait_for_status

from bigbunny.client import Response


# --- helpers ------------------------------------------------------------------------------------
def cbn(
    node,
    customer: str,
    name: str,
    body: bytes = b"x",
    headers: dict | None = None,
    encoded: bool = False,
    timeout: float = 5.0,
) -> Response:
    path = f"/api/v1/create-by-name/{name if encoded else seg(name)}"
    return call(node, path, customer, body, headers, timeout=timeout)


def lookup(node, customer: str, name: str, encoded: bool = False) -> Response:
    return call(node, f"/api/v1/lookup-id-by-name/{name if encoded else seg(name)}", customer)


def dbn(node, customer: str, name: str, encoded: bool = False, timeout: float = 5.0) -> Response:
    return call(node, f"/api/v1/delete-by-name/{name if encoded else seg(name)}", customer, timeout=timeout)


def registry(node) -> tuple[int, dict]:
    st = node.status()
    return st["registry_count"], st["registry_states"]


# --- create / lookup / delete ------------------------------------------------------------------
def test_create_lookup_snapshot(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "cart", b"items"))
    assert assert_sid(lookup(node, cust, "cart")) == sid
    s = snap(node, cust, sid)
    assert (s.status, s.body) == (200, b"items")
    assert 1_209_597 <= int(s.headers["bigbunny-not-valid-after"]) < 1_209_600


def test_create_existing_name_is_409_name_exists(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "dup", b"first"))
    before = node.status()["store_count"]
    assert_error(cbn(node, cust, "dup", b"second"), 409, "name already exists", "NameExists")
    for falsy in ("false", "0", "no", "off", "", "truthy", "2"):
        r = cbn(node, cust, "dup", b"second", {"BigBunny-Reuse-If-Exists": falsy})
        assert_error(r, 409, "name already exists", "NameExists")
    assert node.status()["store_count"] == before
    assert assert_sid(lookup(node, cust, "dup")) == sid
    assert snap(node, cust, sid).body == b"first"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True", "yes", "Y", "y", "on", " On "])
def test_reuse_if_exists_returns_existing_id(node, cust, value) -> None:
    sid = assert_sid(cbn(node, cust, "reuse", b"orig"))
    before = node.status()["store_count"]
    r = cbn(node, cust, "reuse", b"ignored", {"BigBunny-Reuse-If-Exists": value})
    assert assert_sid(r) == sid
    assert node.status()["store_count"] == before  # no new store
    assert snap(node, cust, sid).body == b"orig"  # the body of the reuse request is not applied


def test_reuse_on_fresh_name_creates(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "fresh", b"new", {"BigBunny-Reuse-If-Exists": "true"}))
    assert assert_sid(lookup(node, cust, "fresh")) == sid


def test_reuse_check_comes_before_body_limit(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "big", b"small"))
    r = cbn(node, cust, "big", b"z" * 5000, {"BigBunny-Reuse-If-Exists": "1"})
    assert assert_sid(r) == sid
    assert_error(cbn(node, cust, "big2", b"z" * 2049), 413, "body too large")
    assert_error(lookup(node, cust, "big2"), 404, "name not found", "NotFound")  # nothing reserved


def test_reuse_with_expired_target_creates_anew(node, cust) -> None:
    """§13 fix 7: an expired target is free: a new store is created and the name rebound."""
    old = assert_sid(cbn(node, cust, "exp", b"old", {"BigBunny-Not-Valid-After": "1"}))
    assert_error(wait_for_status(lambda: snap(node, cust, old), 410, 5.0), 410, "store expired", "StoreExpired")
    new = assert_sid(cbn(node, cust, "exp", b"new", {"BigBunny-Reuse-If-Exists": "true"}))
    assert new != old
    assert assert_sid(lookup(node, cust, "exp")) == new
    assert snap(node, cust, new).body == b"new"
    # the name now holds the new store: a plain create conflicts, reuse returns the new ID
    assert_error(cbn(node, cust, "exp"), 409, "name already exists", "NameExists")
    assert assert_sid(cbn(node, cust, "exp", headers={"BigBunny-Reuse-If-Exists": "y"})) == new


def test_reuse_with_target_expired_by_update(node, cust) -> None:
    old = assert_sid(cbn(node, cust, "upd", b"old"))
    r = call(node, f"/api/v1/update/{seg(old)}", cust, b"old2", {"BigBunny-Not-Valid-After": "-1"})
    assert r.status == 200
    new = assert_sid(cbn(node, cust, "upd", b"new", {"BigBunny-Reuse-If-Exists": "on"}))
    assert new != old and snap(node, cust, new).body == b"new"


def test_reuse_with_target_deleted_by_id_creates_anew(node, cust) -> None:
    old = assert_sid(cbn(node, cust, "gone", b"old"))
    assert_empty_ok(call(node, f"/api/v1/delete/{seg(old)}", cust))
    # without reuse, the stale active entry still conflicts until a lookup notices (§2.8)
    assert_error(cbn(node, cust, "gone"), 409, "name already exists", "NameExists")
    new = assert_sid(cbn(node, cust, "gone", b"new", {"BigBunny-Reuse-If-Exists": "true"}))
    assert new != old
    assert assert_sid(lookup(node, cust, "gone")) == new


def test_lookup_cleans_up_a_deleted_target(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "clean", b"v"))
    count, _ = registry(node)
    assert_empty_ok(call(node, f"/api/v1/delete/{seg(sid)}", cust))
    assert registry(node)[0] == count  # entry untouched by a delete by ID
    assert_error(lookup(node, cust, "clean"), 404, "name not found", "NotFound")
    assert registry(node)[0] == count - 1  # the lookup removed the stale entry
    assert_error(lookup(node, cust, "clean"), 404, "name not found", "NotFound")
    # the name is free again for a plain create
    new = assert_sid(cbn(node, cust, "clean", b"w"))
    assert new != sid and assert_sid(lookup(node, cust, "clean")) == new


def test_lookup_cleans_up_an_expired_target(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "lexp", b"v", {"BigBunny-Not-Valid-After": "1000"}))
    call(node, f"/api/v1/update/{seg(sid)}", cust, b"v", {"BigBunny-Not-Valid-After": "0"})
    assert_error(wait_for_status(lambda: lookup(node, cust, "lexp"), 404), 404, "name not found", "NotFound")
    assert_sid(cbn(node, cust, "lexp"))  # free


def test_delete_by_name(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "del", b"v"))
    tombs = node.status()["tombstone_count"]
    assert_empty_ok(dbn(node, cust, "del"))
    assert node.status()["tombstone_count"] == tombs + 1
    assert_error(lookup(node, cust, "del"), 404, "name not found", "NotFound")
    assert_error(snap(node, cust, sid), 404, "store not found", "NotFound")  # the store went too
    assert_empty_ok(dbn(node, cust, "del"))  # §14: idempotent
    assert_empty_ok(dbn(node, cust, "never-existed"))
    # deleting the name of an already deleted store is fine too
    sid2 = assert_sid(cbn(node, cust, "del2"))
    assert_empty_ok(call(node, f"/api/v1/delete/{seg(sid2)}", cust))
    assert_empty_ok(dbn(node, cust, "del2"))
    assert_error(lookup(node, cust, "del2"), 404, "name not found", "NotFound")
    assert_sid(cbn(node, cust, "del2"))


def test_names_are_per_customer(node, cust) -> None:
    a = assert_sid(cbn(node, cust, "shared", b"A"))
    b = assert_sid(cbn(node, cust + "B", "shared", b"B"))
    assert a != b
    assert assert_sid(lookup(node, cust, "shared")) == a
    assert assert_sid(lookup(node, cust + "B", "shared")) == b
    assert_error(lookup(node, cust + "C", "shared"), 404, "name not found", "NotFound")
    assert_empty_ok(dbn(node, cust + "C", "shared"))  # another customer's delete touches nothing
    assert assert_sid(lookup(node, cust, "shared")) == a
    # a name with ':' is just a name (customers cannot contain ':', so registry keys cannot collide)
    xy = assert_sid(cbn(node, cust, "x:y"))
    assert assert_sid(lookup(node, cust, "x:y")) == xy
    assert_error(lookup(node, cust, "x"), 404, "name not found", "NotFound")


def test_registry_status_fields(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=0")
    assert registry(d) == (0, {})
    assert_sid(cbn(d, "reg", "a"))
    assert_sid(cbn(d, "reg", "b"))
    assert registry(d) == (2, {"active": 2})
    assert_empty_ok(dbn(d, "reg", "a"))
    assert registry(d) == (1, {"active": 1})


# --- name validation (§14) ----------------------------------------------------------------------
VALID = [
    ("a", "a"),
    ("x" * 64, "x" * 64),
    ("app:session:42", "app:session:42"),
    ("a.b-c_d~!@$&'()*+,;=[]{}|^`\"<>?#%", None),
    ("%20trim%20", "trim"),
    ("%09" + "y" * 64 + "%0A", "y" * 64),
    ("%3A", ":"),
]


@pytest.mark.parametrize("raw,name", VALID)
def test_valid_names(node, cust, raw, name) -> None:
    if name is None:  # given unencoded: encode every reserved character
        name, raw = raw, seg(raw)
    sid = assert_sid(cbn(node, cust, raw, b"ok", encoded=True))
    assert assert_sid(lookup(node, cust, raw, encoded=True)) == sid
    assert assert_sid(lookup(node, cust, name)) == sid  # the same entry under its canonical spelling
    assert_empty_ok(dbn(node, cust, raw, encoded=True))
    assert_error(lookup(node, cust, name), 404, "name not found", "NotFound")


INVALID = [
    "x" * 65,
    "%20" + "x" * 65,
    "a%2Fb",
    "%2F",
    "a%20b",
    "a%09b",
    "a%0Ab",
    "a%00b",
    "a%01b",
    "a%7Fb",
    "%C3%A9",
    "%FF",
    "a%C2%A0b",
]


@pytest.mark.parametrize("raw", INVALID)
def test_invalid_names_are_400(node, cust, raw) -> None:
    before = registry(node)
    assert_error(cbn(node, cust, raw, encoded=True), 400, "invalid name")
    assert_error(cbn(node, cust, raw, headers={"BigBunny-Reuse-If-Exists": "1"}, encoded=True), 400, "invalid name")
    assert_error(lookup(node, cust, raw, encoded=True), 400, "invalid name")
    assert_error(dbn(node, cust, raw, encoded=True), 400, "invalid name")
    assert registry(node) == before


@pytest.mark.parametrize("raw", ["%20", "%20%20%09", "%0D%0A"])
def test_blank_names_are_missing_name(node, cust, raw) -> None:
    assert_error(cbn(node, cust, raw, encoded=True), 400, "missing name")
    assert_error(lookup(node, cust, raw, encoded=True), 400, "missing name")
    assert_error(dbn(node, cust, raw, encoded=True), 400, "missing name")


def test_name_checked_before_body_and_ttl(node, cust) -> None:
    assert_error(
        cbn(node, cust, "x" * 65, b"z" * 3000, {"BigBunny-Not-Valid-After": "0"}, encoded=True), 400, "invalid name"
    )


# --- TTL on create-by-name -----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-1", "9223372037", "9223372036854775807"])
def test_create_by_name_bad_ttl_is_400_and_reserves_nothing(node, cust, value) -> None:
    before = registry(node)
    assert_error(cbn(node, cust, "ttl", headers={"BigBunny-Not-Valid-After": value}), 400, "invalid TTL")
    assert registry(node) == before
    assert_error(lookup(node, cust, "ttl"), 404, "name not found", "NotFound")


def test_create_by_name_ttl_applies(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "t", headers={"BigBunny-Not-Valid-After": "300"}))
    assert 297 <= int(snap(node, cust, sid).headers["bigbunny-not-valid-after"]) < 300
    sid = assert_sid(cbn(node, cust, "t2", headers={"BigBunny-Not-Valid-After": "junk"}))
    assert 1_209_597 <= int(snap(node, cust, sid).headers["bigbunny-not-valid-after"]) < 1_209_600


# --- named counters (§2.7 + fix 16) ------------------------------------------------------------
@pytest.mark.parametrize(
    "ct", ["application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON"]
)
def test_named_counter_with_json_content_type(node, cust, ct) -> None:
    sid = assert_sid(cbn(node, cust, "ctr", b'{"type":"counter","value":5,"min":0,"max":10}', {"Content-Type": ct}))
    s = snap(node, cust, sid)
    assert (s.status, s.body, s.headers["content-type"]) == (
        200,
        b'{"value":5,"version":1,"min":0,"max":10}\n',
        "application/json",
    )
    looked = assert_sid(lookup(node, cust, "ctr"))
    r = call(node, f"/api/v1/increment/{seg(looked)}", cust, b'{"delta":9}')
    assert (r.status, r.body) == (200, b'{"value":10,"version":2,"bounded":true,"min":0,"max":10}\n')


def test_named_counter_missing_value_is_zero(node, cust) -> None:
    sid = assert_sid(cbn(node, cust, "zero", b'{"type":"counter"}', {"Content-Type": "application/json"}))
    assert snap(node, cust, sid).body == b'{"value":0,"version":1}\n'


@pytest.mark.parametrize("ct", [None, "text/plain", "application/jsonx", "application/octet-stream", "json"])
def test_named_spec_without_json_content_type_is_blob(node, cust, ct) -> None:
    body = b'{"type":"counter","value":5}'
    sid = assert_sid(cbn(node, cust, "blob", body, None if ct is None else {"Content-Type": ct}))
    s = snap(node, cust, sid)
    assert (s.status, s.body, s.headers["content-type"]) == (200, body, "application/octet-stream")


@pytest.mark.parametrize("body", [b"", b"not json", b'{"type":"blob","value":1}', b"[1,2]"])
def test_named_json_non_counter_is_blob(node, cust, body) -> None:
    sid = assert_sid(cbn(node, cust, "jb", body, {"Content-Type": "application/json"}))
    assert (snap(node, cust, sid).status, snap(node, cust, sid).body) == (200, body)


@pytest.mark.parametrize(
    "body,status,message,code",
    [
        (b'{"type":"counter","value":5,"min":10,"max":1}', 400, "invalid bounds", "InvalidBounds"),
        (b'{"type":"counter","value":50,"min":0,"max":10}', 400, "value out of bounds", "ValueOutOfBounds"),
    ],
)
def test_named_counter_refused_frees_the_name(node, cust, body, status, message, code) -> None:
    before = registry(node)
    assert_error(cbn(node, cust, "bad", body, {"Content-Type": "application/json"}), status, message, code)
    assert registry(node) == before
    assert_error(lookup(node, cust, "bad"), 404, "name not found", "NotFound")
    assert_sid(cbn(node, cust, "bad", b'{"type":"counter","value":5}', {"Content-Type": "application/json"}))


@pytest.mark.parametrize(
    "body",
    [b'{"type":"counter","value":"5"}', b'{"type":"counter","value":1.5}', b'{"type":"counter","value":1,"max":"9"}'],
)
def test_named_ill_typed_counter_is_400(node, cust, body) -> None:
    before = registry(node)
    r = cbn(node, cust, "ill", body, {"Content-Type": "application/json"})
    assert r.status == 400 and r.body.endswith(b"\n") and "bigbunny-error-code" not in r.headers
    assert registry(node) == before


# --- NameCreating / deleting states (§14) -----------------------------------------------------
def _poll_until(fn, pred, timeout: float = 1.5) -> Response:
    deadline = time.monotonic() + timeout
    while True:
        r = fn()
        if pred(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.01)


def test_name_creating_and_deleting_are_503(daemon_factory) -> None:
    """Hold a create-by-name (then a delete-by-name) in flight by stopping the single shard: the entry
    sits in ``creating`` (``deleting``), and every name endpoint answers 503 NameCreating, Retry-After 1.
    The shard is resumed well inside the supervisor's 2 s hang detection."""
    d = daemon_factory("--rate-limit=0", shards=1)
    c = "busy"
    shard = d.shard_pids()[0]
    keep = assert_sid(cbn(d, c, "other", b"keep"))
    results: dict[str, Response] = {}

    def bg(key: str, fn) -> threading.Thread:
        t = threading.Thread(target=lambda: results.__setitem__(key, fn()), daemon=True)
        t.start()
        return t

    os.kill(shard, signal.SIGSTOP)
    try:
        t = bg("create", lambda: cbn(d, c, "n", b"body"))
        r = _poll_until(lambda: lookup(d, c, "n"), lambda r: r.status != 404)
        assert_error(r, 503, "name reservation in progress", "NameCreating", 1)
        assert_error(cbn(d, c, "n"), 503, "name reservation in progress", "NameCreating", 1)
        assert_error(
            cbn(d, c, "n", headers={"BigBunny-Reuse-If-Exists": "true"}),
            503,
            "name reservation in progress",
            "NameCreating",
            1,
        )
        assert_error(dbn(d, c, "n"), 503, "name reservation in progress", "NameCreating", 1)
    finally:
        os.kill(shard, signal.SIGCONT)
    t.join(5)
    sid = assert_sid(results["create"])
    assert assert_sid(lookup(d, c, "n")) == sid

    os.kill(shard, signal.SIGSTOP)
    try:
        t = bg("delete", lambda: dbn(d, c, "n"))
        # (a lookup of an active name asks the stopped shard; a plain create-by-name does not)
        r = _poll_until(lambda: cbn(d, c, "n"), lambda r: r.status != 409)
        assert_error(r, 503, "name deletion in progress", "NameCreating", 1)
        assert_error(lookup(d, c, "n"), 503, "name deletion in progress", "NameCreating", 1)
        assert_error(
            cbn(d, c, "n", headers={"BigBunny-Reuse-If-Exists": "1"}),
            503,
            "name deletion in progress",
            "NameCreating",
            1,
        )
    finally:
        os.kill(shard, signal.SIGCONT)
    t.join(5)
    assert_empty_ok(results["delete"])
    assert_error(lookup(d, c, "n"), 404, "name not found", "NotFound")
    assert_error(snap(d, c, sid), 404, "store not found", "NotFound")
    # nothing else was disturbed: same shard process, other data intact
    assert d.shard_pids() == [shard]
    assert snap(d, c, keep).body == b"keep"
    assert d.status()["shards"][0]["restarts"] == 0


# --- limits on named operations ------------------------------------------------------------------
def test_create_by_name_over_quota_is_507(daemon_factory) -> None:
    """§13 fix 6: proper 507 codes (the reference answered 500); the reservation is aborted."""
    d = daemon_factory("--rate-limit=0", "--customer-memory-quota=600", "--memory-limit=1100")
    assert_sid(cbn(d, "q", "a", b"0123456789"))
    assert_sid(cbn(d, "q", "b", b"0123456789"))
    assert_error(cbn(d, "q", "c", b"0123456789"), 507, "customer quota exceeded", "CustomerQuotaExceeded")
    assert registry(d) == (2, {"active": 2})
    assert_error(lookup(d, "q", "c"), 404, "name not found", "NotFound")
    # global: 532 + 532 (q2) = 1064; one more 266 > 1100
    assert_sid(cbn(d, "q2", "a", b"0123456789"))
    assert_sid(cbn(d, "q2", "b", b"0123456789"))
    assert_error(cbn(d, "q3", "a", b"0123456789"), 507, "capacity exceeded", "CapacityExceeded")
    assert registry(d) == (4, {"active": 4})
    assert d.status()["memory_usage"] == 4 * 266
    # reuse of an existing name never needs memory
    assert_sid(cbn(d, "q", "a", b"0123456789", {"BigBunny-Reuse-If-Exists": "true"}))


def test_delete_by_name_tombstone_limit_keeps_the_name(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=0", "--tombstone-customer-limit=1")
    s1 = assert_sid(cbn(d, "tl", "one", b"1"))
    s2 = assert_sid(cbn(d, "tl", "two", b"2"))
    assert_empty_ok(dbn(d, "tl", "one"))
    assert_error(dbn(d, "tl", "two"), 429, "tombstone limit exceeded", "TombstoneLimitExceeded")
    # reverted to active: still usable
    assert assert_sid(lookup(d, "tl", "two")) == s2
    assert snap(d, "tl", s2).body == b"2"
    assert registry(d) == (1, {"active": 1})
    assert_error(snap(d, "tl", s1), 404, "store not found", "NotFound")


def test_failed_store_creation_aborts_the_reservation(daemon_factory) -> None:
    """§2.8: a store-creation failure aborts the reservation — here the shard dies while the create is
    in flight; the name is free again afterwards."""
    d = daemon_factory("--rate-limit=0", shards=1)
    c = "abort"
    shard = d.shard_pids()[0]
    result: list[Response] = []
    os.kill(shard, signal.SIGSTOP)
    try:
        t = threading.Thread(target=lambda: result.append(cbn(d, c, "n", b"body")), daemon=True)
        t.start()
        r = _poll_until(lambda: lookup(d, c, "n"), lambda r: r.status != 404)
        assert_error(r, 503, "name reservation in progress", "NameCreating", 1)
    finally:
        os.kill(shard, signal.SIGKILL)
    t.join(5)
    assert result and result[0].status == 503, result
    assert result[0].headers.get("bigbunny-error-code") == "StoreUnavailable"
    assert_error(lookup(d, c, "n"), 404, "name not found", "NotFound")  # reservation aborted
    # once the shard is back, the name can be created
    deadline = time.monotonic() + 10
    while not all(s["up"] for s in d.status()["shards"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    sid = assert_sid(cbn(d, c, "n", b"again"))
    assert assert_sid(lookup(d, c, "n")) == sid
    assert registry(d) == (1, {"active": 1})
