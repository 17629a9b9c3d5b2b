"""Node-level API against a real daemon: /status (SPEC §3 + §14 additions), operator endpoints,
customer header rules, rate limiting, the body limit (incl. chunked bodies over a raw socket), and
malformed requests — each gets a clear 4xx and the node keeps serving with nothing lost.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from helpers import SID_RE, assert_error, call, chunked, parse_responses, raw_exchange, raw_one, req, seg, snap

STATUS_KEYS = {
    "host_id",
    "processes",
    "last_leader_seen",
    "last_replication_fail",
    "leader_epoch",
    "memory_usage",
    "peers",
    "queue_length",
    "registry_count",
    "registry_queue_length",
    "registry_states",
    "replication_fail_count",
    "role",
    "store_count",
    "tombstone_count",
    "shards",
    "uptime",
    "replication_dropped",
    "version",
    "writes_refused_no_replicas",
    "replica_lag_ms",
}
NEVER = "2562047h47m16.854775807s"


# --- helpers ------------------------------------------------------------------------------------
def create(node, customer: str, body: bytes = b"x") -> str:
    r = call(node, "/api/v1/create", customer, body)
    assert r.status == 200 and SID_RE.fullmatch(r.text), (r.status, r.body)
    return r.text


_DUR_RE = re.compile(
    r"0s|[1-9][0-9]{0,2}ns|[0-9]+(\.[0-9]{0,2}[1-9])?µs|[0-9]+(\.[0-9]{0,5}[1-9])?ms"
    r"|([1-9][0-9]*h)?([0-9]+m)?[0-9]+(\.[0-9]{0,8}[1-9])?s"
)


def duration_seconds(text: str) -> float:
    """Parse a §3 duration strictly (format checked), returning seconds."""
    assert _DUR_RE.fullmatch(text), text
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(h|ms|µs|ns|m|s)", text):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}[unit]
    if re.fullmatch(r"([0-9]+h)?[0-9]+m[0-9.]+s", text):
        m = int(re.search(r"([0-9]+)m", text).group(1))
        assert m < 60, text
    return total


# --- /status ----------------------------------------------------------------------------------
def test_status_document(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=0")
    r = call(d, "/status", method="GET")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.body.endswith(b"\n") and r.body.count(b"\n") == 1
    doc = json.loads(r.body)
    # compact, sorted keys, UTF-8 (µ is not escaped), trailing newline
    assert r.body == (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    assert set(doc) == STATUS_KEYS, set(doc) ^ STATUS_KEYS
    assert list(doc) == sorted(doc)
    assert doc["host_id"] == "host1"
    assert doc["role"] == "PRIMARY" and doc["leader_epoch"] == 1
    assert doc["last_replication_fail"] == ""
    assert doc["peers"] == {}  # no peers configured
    for k in (
        "queue_length",
        "registry_queue_length",
        "replication_fail_count",
        "replication_dropped",
        "store_count",
        "memory_usage",
        "registry_count",
        "tombstone_count",
        "writes_refused_no_replicas",
    ):
        assert type(doc[k]) is int and doc[k] == 0, k
    assert doc["replica_lag_ms"] is None  # no peer to lag
    assert doc["registry_states"] == {}
    assert 0 <= duration_seconds(doc["last_leader_seen"]) < 60
    assert doc["last_leader_seen"] != NEVER
    assert 0 < duration_seconds(doc["uptime"]) < 60
    from importlib.metadata import version

    assert doc["version"] == version("bigbunny")  # the installed distribution's version, not a constant
    assert [s["id"] for s in doc["shards"]] == [0, 1]
    for s in doc["shards"]:
        assert set(s) == {"id", "pid", "up", "stores", "memory", "restarts"}
        assert s["up"] is True and s["restarts"] == 0 and s["stores"] == 0 and s["memory"] == 0
        assert type(s["pid"]) is int and s["pid"] > 0 and s["pid"] != d.proc.pid
    # the counts follow the data
    a = create(d, "st", b"0123456789")
    create(d, "st", b"")
    assert call(d, "/api/v1/create-by-name/nm", "st", b"abc").status == 200
    assert call(d, f"/api/v1/delete/{seg(a)}", "st").status == 200
    doc = d.status()
    assert doc["store_count"] == 2
    assert doc["memory_usage"] == 256 + 259
    assert sum(s["stores"] for s in doc["shards"]) == 2
    assert sum(s["memory"] for s in doc["shards"]) == 256 + 259
    assert doc["registry_count"] == 1 and doc["registry_states"] == {"active": 1}
    assert doc["tombstone_count"] == 1
    # uptime advances
    t0 = duration_seconds(doc["uptime"])
    time.sleep(0.05)
    assert duration_seconds(d.status()["uptime"]) > t0


def test_status_head_and_query_and_headers(node) -> None:
    h = call(node, "/status", method="HEAD")
    assert (h.status, h.body) == (200, b"")
    assert h.headers["content-type"] == "application/json" and int(h.headers["content-length"]) > 100
    g = call(node, "/status?verbose=1", headers={"X-Customer-ID": "not valid!", "Host": "elsewhere"}, method="GET")
    assert g.status == 200 and json.loads(g.body)["role"] == "PRIMARY"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_status_wrong_method_405(node, method) -> None:
    r = call(node, "/status", method=method)
    assert_error(r, 405, "Method Not Allowed")
    assert r.headers["allow"] == "GET, HEAD"


def test_status_allow_header_is_stable(daemon_factory) -> None:
    """The Allow header must not depend on the interpreter's string-hash seed (set iteration order)."""
    d = daemon_factory("--rate-limit=0", env={**os.environ, "PYTHONHASHSEED": "3"})
    r = call(d, "/status", method="POST")
    assert_error(r, 405, "Method Not Allowed")
    assert r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "path,method",
    [
        ("/status/", "GET"),
        ("/status/", "HEAD"),
        ("/internal/promote/", "POST"),
        ("/Status", "GET"),
        ("/internal/promote/x", "POST"),
        ("/internal/release-lock", "POST"),
        ("/internal/release-lock/a/b", "POST"),
    ],
)
def test_no_trailing_slash_normalisation(node, path, method) -> None:
    epoch = node.status()["leader_epoch"]
    r = call(node, path, method=method)
    assert r.status == 404, (r.status, r.headers, r.body)
    if method != "HEAD":
        assert_error(r, 404, "page not found")
    assert node.status()["leader_epoch"] == epoch  # nothing was promoted


# --- operator endpoints -------------------------------------------------------------------------
def test_promote_bumps_epoch_without_lock_window(node, cust) -> None:
    sid = create(node, cust, b"p")
    ctr = call(node, "/api/v1/create", cust, b'{"type":"counter","value":0}').text
    before = node.status()
    r = call(node, "/internal/promote")
    assert (r.status, r.body) == (200, b"promoted")
    assert r.headers["content-type"].startswith("text/plain")
    after = node.status()
    assert after["leader_epoch"] == before["leader_epoch"] + 1 and after["role"] == "PRIMARY"
    assert duration_seconds(after["last_leader_seen"]) < 5
    # already PRIMARY: no lock-state-unknown window opens — lock-taking and counter ops work at once
    b = call(node, f"/api/v1/begin-modify/{seg(sid)}", cust)
    assert b.status == 200, b.body
    assert call(node, f"/api/v1/increment/{seg(ctr)}", cust, b'{"delta":1}').status == 200
    assert (
        call(
            node, f"/api/v1/cancel-modify/{seg(sid)}", cust, headers={"BigBunny-Lock-ID": b.headers["bigbunny-lock-id"]}
        ).status
        == 200
    )
    assert call(node, "/internal/promote").status == 200
    assert node.status()["leader_epoch"] == before["leader_epoch"] + 2
    assert snap(node, cust, sid).body == b"p"  # data untouched


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_internal_wrong_method_405(node, method) -> None:
    for path in ("/internal/promote", "/internal/release-lock/abc"):
        r = call(node, path, method=method)
        assert_error(r, 405, "Method Not Allowed")
        assert r.headers["allow"] == "POST"


def test_release_lock(lnode, cust) -> None:
    d, c = lnode, cust
    sid = create(d, c, b"locked")
    lock = call(d, f"/api/v1/begin-modify/{seg(sid)}", c).headers["bigbunny-lock-id"]
    assert_error(call(d, f"/api/v1/begin-modify/{seg(sid)}", c), 409, "store is locked", "StoreLocked")
    r = call(d, f"/internal/release-lock/{seg(sid)}")  # no customer needed
    assert (r.status, r.body) == (200, b"lock released")
    assert r.headers["content-type"].startswith("text/plain")
    # the lock is gone: the old holder cannot complete, a new begin succeeds at once
    assert_error(
        call(d, f"/api/v1/complete-modify/{seg(sid)}", c, b"late", {"BigBunny-Lock-ID": lock}),
        409,
        "lock mismatch",
        "LockMismatch",
    )
    assert call(d, f"/api/v1/begin-modify/{seg(sid)}", c).status == 200
    # releasing an unlocked store is fine; percent-encoded IDs are decoded
    every = "".join(f"%{b:02X}" for b in sid.encode())
    assert call(d, f"/internal/release-lock/{every}").status == 200
    assert call(d, f"/internal/release-lock/{seg(sid)}").status == 200
    assert snap(d, c, sid).body == b"locked"
    # unknown IDs → 404 NotFound
    assert call(d, f"/api/v1/delete/{seg(sid)}", c).status == 200
    assert_error(call(d, f"/internal/release-lock/{seg(sid)}"), 404, "store not found", "NotFound")
    assert_error(call(d, "/internal/release-lock/garbage"), 404, "store not found", "NotFound")


def test_release_lock_with_undecodable_id(daemon_factory) -> None:
    """An ID segment that is not UTF-8 (%FF) is simply unknown: 404, promptly, nothing disturbed."""
    d = daemon_factory("--rate-limit=0", shards=1)
    sid = create(d, "u", b"keep")
    pids = d.shard_pids()
    for path in ("/internal/release-lock/%FF", "/internal/release-lock/%C3%28abc"):
        t0 = time.monotonic()
        r = call(d, path, timeout=4.0)
        assert time.monotonic() - t0 < 1.0
        assert_error(r, 404, "store not found", "NotFound")
    assert call(d, f"/internal/release-lock/{seg(sid)}", timeout=2.0).status == 200
    assert snap(d, "u", sid).body == b"keep"
    assert d.shard_pids() == pids and d.status()["shards"][0]["restarts"] == 0


# --- customer header ----------------------------------------------------------------------------
ENDPOINTS = [
    ("create", b"x"),
    ("snapshot/abc", b""),
    ("begin-modify/abc", b""),
    ("complete-modify/abc", b""),
    ("cancel-modify/abc", b""),
    ("update/abc", b""),
    ("increment/abc", b'{"delta":1}'),
    ("decrement/abc", b'{"delta":1}'),
    ("delete/abc", b""),
    ("create-by-name/n", b""),
    ("delete-by-name/n", b""),
    ("lookup-id-by-name/n", b""),
]


@pytest.mark.parametrize("endpoint,body", ENDPOINTS)
def test_customer_missing_401_invalid_400(node, endpoint, body) -> None:
    path = f"/api/v1/{endpoint}"
    lock = {"BigBunny-Lock-ID": "x"}
    assert_error(call(node, path, None, body, lock), 401, "missing customer ID")
    assert_error(call(node, path, "", body, lock), 401, "missing customer ID")
    for bad in ("a" * 65, "a b", "a.b", "a/b", "a:b", "caf\u00e9", "a*", "a\tb"):
        assert_error(call(node, path, bad, body, lock), 400, "invalid customer ID")
    # customer before body size and before the store ID
    assert_error(call(node, path, None, b"z" * 3000, lock), 401, "missing customer ID")
    assert_error(call(node, path, "a.b", b"z" * 3000, lock), 400, "invalid customer ID")


def test_valid_customer_ids(node) -> None:
    for c in ("a", "Z" * 64, "Az09_-", "-", "_"):
        sid = create(node, c, c.encode())
        assert snap(node, c, sid).body == c.encode()


def test_customer_header_surrounding_whitespace_is_not_part_of_the_value(node, cust) -> None:
    """HTTP field values exclude leading and trailing whitespace (RFC 9110 OWS; §2.9: "surrounding
    whitespace removed by the HTTP layer")."""
    status, _, body = raw_one(node.sock, req("POST", "/api/v1/create", [("X-Customer-ID", f"  {cust}")], b"w"))
    assert (status, snap(node, cust, body.decode()).body) == (200, b"w")  # leading
    status, _, body = raw_one(node.sock, req("POST", "/api/v1/create", [("X-Customer-ID", f"{cust} \t ")], b"w"))
    assert status == 200, f"trailing whitespace kept in X-Customer-ID: {status} {body!r}"
    assert snap(node, cust, body.decode()).body == b"w"


def test_lock_header_surrounding_whitespace_is_not_part_of_the_value(lnode, cust) -> None:
    sid = create(lnode, cust, b"w")
    lock = call(lnode, f"/api/v1/begin-modify/{seg(sid)}", cust).headers["bigbunny-lock-id"]
    status, _, body = raw_one(
        lnode.sock,
        req(
            "POST",
            f"/api/v1/complete-modify/{sid}",
            [("X-Customer-ID", cust), ("BigBunny-Lock-ID", f" {lock}  ")],
            b"done",
        ),
    )
    assert (status, body) == (200, b""), f"whitespace kept in BigBunny-Lock-ID: {status} {body!r}"
    assert snap(lnode, cust, sid).body == b"done"


# --- rate limiting (§2.10) ----------------------------------------------------------------------
def test_rate_limit(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=1", "--burst-size=3")
    c = "rl"
    sid = create(d, c, b"r")  # 1
    assert call(d, "/api/v1/snapshot/garbage", c).status == 400  # 2: failing requests cost 1 too
    assert snap(d, c, sid).status == 200  # 3
    r = snap(d, c, sid)
    assert_error(r, 429, "rate limit exceeded", "RateLimited", 1)
    # not charged: route/method/customer errors come first; /status and ops are not limited
    assert_error(call(d, "/api/v1/nope", c), 404, "page not found")
    assert_error(call(d, "/api/v1/create", c, method="GET"), 405, "Method Not Allowed")
    assert_error(call(d, "/api/v1/create", None), 401, "missing customer ID")
    for _ in range(5):
        assert call(d, "/status", method="GET").status == 200
    assert call(d, f"/internal/release-lock/{seg(sid)}").status == 200
    # checked before the body limit
    assert_error(call(d, "/api/v1/create", c, b"z" * 3000), 429, "rate limit exceeded", "RateLimited", 1)
    # per customer
    other = create(d, "rl2", b"o")
    assert snap(d, "rl2", other).status == 200
    # refills at 1/s (bounded wait)
    deadline = time.monotonic() + 3.0
    while (r := snap(d, c, sid)).status == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (r.status, r.body) == (200, b"r")
    assert_error(snap(d, c, sid), 429, "rate limit exceeded", "RateLimited", 1)


# --- body limit (§2.4, §14) ---------------------------------------------------------------------
def test_body_limit_2048(lnode, cust) -> None:
    ok, big = b"a" * 2048, b"b" * 2049
    sid = create(lnode, cust, ok)
    assert snap(lnode, cust, sid).body == ok
    assert_error(call(lnode, "/api/v1/create", cust, big), 413, "body too large")
    assert_error(call(lnode, f"/api/v1/update/{seg(sid)}", cust, big), 413, "body too large")
    assert call(lnode, f"/api/v1/update/{seg(sid)}", cust, ok[:-1] + b"c").status == 200
    lock = call(lnode, f"/api/v1/begin-modify/{seg(sid)}", cust).headers["bigbunny-lock-id"]
    assert_error(
        call(lnode, f"/api/v1/complete-modify/{seg(sid)}", cust, big, {"BigBunny-Lock-ID": lock}), 413, "body too large"
    )
    assert (
        call(lnode, f"/api/v1/complete-modify/{seg(sid)}", cust, ok[:-1] + b"d", {"BigBunny-Lock-ID": lock}).status
        == 200
    )
    assert snap(lnode, cust, sid).body == ok[:-1] + b"d"
    assert_error(call(lnode, "/api/v1/create-by-name/big", cust, big), 413, "body too large")
    assert call(lnode, "/api/v1/create-by-name/big", cust, ok).status == 200
    assert_error(call(lnode, "/api/v1/create", cust, b"c" * 100_000), 413, "body too large")


def test_body_limit_chunked_raw_socket(node, cust) -> None:
    h = [("X-Customer-ID", cust)]
    status, hdrs, body = raw_one(node.sock, chunked("POST", "/api/v1/create", h, [b"a" * 1000, b"b" * 1000, b"c" * 48]))
    assert status == 200 and hdrs["content-type"] == "text/plain"
    sid = body.decode()
    assert snap(node, cust, sid).body == b"a" * 1000 + b"b" * 1000 + b"c" * 48
    status, hdrs, body = raw_one(node.sock, chunked("POST", "/api/v1/create", h, [b"a" * 1000, b"b" * 1000, b"c" * 49]))
    assert (status, body) == (413, b"body too large\n") and hdrs["x-content-type-options"] == "nosniff"
    # one byte per chunk, over the limit
    status, _, body = raw_one(node.sock, chunked("POST", f"/api/v1/update/{sid}", h, [b"z"] * 2049))
    assert (status, body) == (413, b"body too large\n")
    status, _, body = raw_one(node.sock, chunked("POST", f"/api/v1/update/{sid}", h, [b"y"] * 2048))
    assert (status, body) == (200, b"")
    assert snap(node, cust, sid).body == b"y" * 2048
    # a huge chunked body is refused without buffering it all
    status, _, body = raw_one(node.sock, chunked("POST", "/api/v1/create", h, [b"q" * 65536] * 16))
    assert (status, body) == (413, b"body too large\n")


def test_max_store_size_flag(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=0", "--max-store-size=16")
    sid = create(d, "ms", b"x" * 16)
    assert_error(call(d, "/api/v1/create", "ms", b"x" * 17), 413, "body too large")
    assert_error(call(d, f"/api/v1/update/{seg(sid)}", "ms", b"x" * 17), 413, "body too large")
    assert snap(d, "ms", sid).body == b"x" * 16


def test_refused_body_does_not_leak_into_the_next_request(node, cust) -> None:
    """After a 413 the rest of the body is discarded, not parsed as a pipelined request."""
    inner = req("POST", "/api/v1/create", [("X-Customer-ID", cust + "evil")], b"EVIL!", close=False)
    body = inner + b"a" * (3000 - len(inner))
    before = node.status()["store_count"]
    for first in (
        req("POST", "/api/v1/create", [("X-Customer-ID", cust)], body, close=False),
        chunked("POST", "/api/v1/create", [("X-Customer-ID", cust)], [body]).replace(b"Connection: close\r\n", b""),
    ):
        second = req("POST", "/api/v1/create", [("X-Customer-ID", cust)], b"ok")
        responses = parse_responses(raw_exchange(node.sock, first + second))
        assert [(s, b[:20]) for s, _, b in responses][:1] == [(413, b"body too large\n")]
        assert len(responses) == 2 and responses[1][0] == 200
        assert snap(node, cust, responses[1][2].decode()).body == b"ok"
    assert node.status()["store_count"] == before + 2  # no "evil" store


# --- keep-alive and malformed requests --------------------------------------------------------
def test_pipelined_requests_answered_in_order(node, cust) -> None:
    h = [("X-Customer-ID", cust)]
    data = b"".join(
        [
            req("POST", "/api/v1/create", h, b"one", close=False),
            req("POST", "/api/v1/nope", h, b"body", close=False),
            req("GET", "/api/v1/create", h, close=False),
            req("POST", "/api/v1/snapshot/garbage", h, close=False),
            req("POST", "/api/v1/create", [], close=False),
            req("POST", "/api/v1/create", h, b"two"),
        ]
    )
    responses = parse_responses(raw_exchange(node.sock, data))
    assert [s for s, _, _ in responses] == [200, 404, 405, 400, 401, 200]
    assert snap(node, cust, responses[0][2].decode()).body == b"one"
    assert snap(node, cust, responses[5][2].decode()).body == b"two"


MALFORMED = [
    (b"\x00\x01\x02\x03\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"hello world\r\n\r\n", 400),
    (b"POST /api/v1/create HTTP/1.1\r\nHost x\r\nConnection: close\r\n\r\n", 400),
    (b"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (
        b"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (b"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    (b"post /api/v1/create HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"BREW /api/v1/create HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"POST /api/v1/create HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    (b"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n", 400),
    (b"POST /api/v1/create HTTP/1.1\nHost: x\nX-Customer-ID: c\n\n", 400),
    (b"POST /api/v1/snapshot/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\nX-Customer-ID: c\r\n\r\n", 400),
    (b"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n", 431),
]


def test_malformed_requests_get_4xx_and_nothing_is_lost(node, cust) -> None:
    # data on every shard, a named store and a counter, created before the abuse
    blobs = {create(node, cust, f"blob{i}".encode()): f"blob{i}".encode() for i in range(6)}
    named = call(node, "/api/v1/create-by-name/keep", cust, b"named").text
    ctr = call(node, "/api/v1/create", cust, b'{"type":"counter","value":41}').text
    before = node.status()
    for data, status in MALFORMED:
        responses = parse_responses(raw_exchange(node.sock, data, timeout=5.0))
        assert [s for s, _, _ in responses] == [status], (data[:60], responses)
    # a client that goes away mid-body, one that connects and says nothing, one that sends half a line
    raw_exchange(
        node.sock,
        req(
            "POST", "/api/v1/create", [("X-Customer-ID", cust), ("Content-Length", "100")], b"only-ten-b", length=False
        ),
        timeout=0.3,
        close_write=True,
    )
    raw_exchange(node.sock, b"", timeout=0.1)
    raw_exchange(node.sock, b"POST /api/v1/cre", timeout=0.1, close_write=True)
    # the node still serves, and nothing was lost or added
    after = node.status()
    assert after["store_count"] == before["store_count"]
    assert after["memory_usage"] == before["memory_usage"]
    assert [s["pid"] for s in after["shards"]] == [s["pid"] for s in before["shards"]]
    assert all(s["up"] and s["restarts"] == 0 for s in after["shards"])
    for sid, body in blobs.items():
        assert snap(node, cust, sid).body == body
    assert call(node, "/api/v1/lookup-id-by-name/keep", cust).text == named
    assert snap(node, cust, ctr).body == b'{"value":41,"version":1}\n'
    assert call(node, f"/api/v1/increment/{seg(ctr)}", cust, b'{"delta":1}').body == (
        b'{"value":42,"version":2,"bounded":false}\n'
    )
    assert snap(node, cust, create(node, cust, b"new")).body == b"new"


def test_malformed_request_errors_use_the_error_format(node) -> None:
    """§2.1: every error is text/plain; charset=utf-8 with nosniff and a body ending in a newline —
    also the 400 for a request the HTTP parser refuses."""
    status, headers, body = raw_one(node.sock, b"GET\r\n\r\n")
    assert status == 400
    assert headers.get("content-type") == "text/plain; charset=utf-8"
    assert headers.get("x-content-type-options") == "nosniff", headers
    assert body.endswith(b"\n"), body


def test_undecodable_store_id_is_invalid_and_harmless(daemon_factory) -> None:
    """A store-ID segment that is not UTF-8 (%FF) must be an opaque 400 like any bad ID, promptly, and must
    not disturb the shard link (no shard restart, no data loss)."""
    d = daemon_factory("--rate-limit=0", shards=1)
    c = "utf"
    sid = create(d, c, b"precious")
    pids = d.shard_pids()
    for segment in ("%FF", "abc%80", "%ED%A0%80"):
        for ep in ("snapshot", "update", "increment", "delete"):
            t0 = time.monotonic()
            r = call(d, f"/api/v1/{ep}/{segment}", c, b'{"delta":1}' if ep == "increment" else b"", timeout=4.0)
            elapsed = time.monotonic() - t0
            assert (r.status, r.body) == (400, b"invalid store ID\n"), (
                segment,
                ep,
                r.status,
                r.body,
                f"{elapsed:.1f}s",
            )
            assert elapsed < 1.0
    assert snap(d, c, sid).body == b"precious"
    assert d.shard_pids() == pids and d.status()["shards"][0]["restarts"] == 0


def test_every_answer_carries_a_date(node, cust) -> None:
    """RFC 9110 §6.6.1: a server with a clock sends Date — on the API's answers (200 and errors) and on
    the Starlette routes alike, with the node's current time, to the second."""
    from email.utils import parsedate_to_datetime

    h = [("X-Customer-ID", cust)]
    data = b"".join(
        [
            req("POST", "/api/v1/create", h, b"dated", close=False),
            req("POST", "/api/v1/snapshot/garbage", h, close=False),
            req("GET", "/api/v1/create", h, close=False),
            req("GET", "/healthz", []),
        ]
    )
    before = time.time()
    answers = parse_responses(raw_exchange(node.sock, data))
    after = time.time()
    assert [s for s, _, _ in answers] == [200, 400, 405, 200]
    for _, hdrs, _ in answers:
        when = parsedate_to_datetime(hdrs["date"]).timestamp()
        assert before - 2 <= when <= after + 1, (hdrs["date"], before, after)
