"""bigbunny.client.BBClient against the fake daemon: requests sent, answers read, errors, retries, the pool."""

from __future__ import annotations

import gc
import json
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
from fakedaemon import Canned, FakeDaemon

from bigbunny.client import (
    BBClient,
    BBConnectionError,
    BBError,
    Conflict,
    ConnectionFailed,
    Expired,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotReplicated,
    PoolTimeout,
    Refused,
    RetryLater,
    RetryPolicy,
    ServerError,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def client(fake: FakeDaemon) -> Iterator[BBClient]:
    sleeps: list[float] = []
    c = BBClient(fake.path, customer="acme", sleep=sleeps.append)
    c.sleeps = sleeps  # type: ignore[attr-defined]
    with c:
        yield c


def test_create_sends_body_ttl_and_customer(fake: FakeDaemon, client: BBClient) -> None:
    fake.answer(body="SID1")
    assert client.create(b"hello", ttl=60) == "SID1"
    req = fake.last
    assert (req.method, req.path, req.body) == ("POST", "/api/v1/create", b"hello")
    assert req.headers["x-customer-id"] == "acme"
    assert req.headers["bigbunny-not-valid-after"] == "60"
    assert client.last_warning is None


def test_path_segments_are_percent_encoded(fake: FakeDaemon, client: BBClient) -> None:
    client.delete("a/b c?")
    client.delete_by_name("app:sess 1")
    assert [r.path for r in fake.requests] == ["/api/v1/delete/a%2Fb%20c%3F", "/api/v1/delete-by-name/app%3Asess%201"]


def test_snapshot_and_begin_modify_read_headers(fake: FakeDaemon, client: BBClient) -> None:
    fake.answer(body=b"\x00data", BigBunny_Not_Valid_After="3599", Content_Type="application/octet-stream")
    snap = client.snapshot("S")
    assert (snap.body, snap.ttl, snap.content_type) == (b"\x00data", 3599, "application/octet-stream")
    fake.answer(body=b"cur", BigBunny_Lock_ID="L" * 22, BigBunny_Not_Valid_After="10")
    mod = client.begin_modify("S")
    assert (mod.lock_id, mod.body, mod.ttl) == ("L" * 22, b"cur", 10)


def test_modify_and_counter_requests(fake: FakeDaemon, client: BBClient) -> None:
    client.complete_modify("S", "LOCK", b"new", ttl=5)
    assert fake.last.headers["bigbunny-lock-id"] == "LOCK" and fake.last.body == b"new"
    client.cancel_modify("S", "LOCK")
    assert fake.last.path == "/api/v1/cancel-modify/S" and fake.last.headers["bigbunny-lock-id"] == "LOCK"
    client.set_counter("C", 2**63 - 1)
    assert (fake.last.path, fake.last.body) == ("/api/v1/update/C", b'{"value":9223372036854775807}')
    fake.answer(body='{"value":3,"version":2,"bounded":false}\n', Content_Type="application/json")
    assert client.decrement("C", 4) == {"value": 3, "version": 2, "bounded": False}
    assert (fake.last.path, fake.last.body) == ("/api/v1/decrement/C", b'{"delta":4}')
    client.create_counter(5, min=0, max=10, name="n", reuse=True)
    req = fake.last
    assert req.path == "/api/v1/create-by-name/n" and json.loads(req.body) == {
        "type": "counter",
        "value": 5,
        "min": 0,
        "max": 10,
    }
    assert req.headers["content-type"] == "application/json" and req.headers["bigbunny-reuse-if-exists"] == "true"


def test_ops_endpoints_have_no_customer_header(fake: FakeDaemon, client: BBClient) -> None:
    fake.answer(body="promoted")
    assert client.promote() == "promoted"
    fake.answer(body='{"role":"PRIMARY"}\n')
    assert client.status() == {"role": "PRIMARY"}
    assert fake.last.method == "GET" and fake.last.path == "/status"
    assert all("x-customer-id" not in r.headers for r in fake.requests)


def test_error_carries_status_message_code_and_retry_after(fake: FakeDaemon, client: BBClient) -> None:
    fake.error(503, "name reservation in progress", "NameCreating", retry_after=1)
    with pytest.raises(BBError) as info:
        client.lookup("n")
    err = info.value
    assert (err.status, err.message, err.code) == (503, "name reservation in progress", "NameCreating")
    assert err.retry_after == 1
    assert err.headers["bigbunny-error-code"] == "NameCreating"
    assert client.sleeps == []  # type: ignore[attr-defined]


def test_warning_is_exposed(fake: FakeDaemon, client: BBClient) -> None:
    fake.answer(BigBunny_Warning="DegradedWrite")
    client.update("S", b"x")
    assert client.last_warning == "DegradedWrite"
    client.update("S", b"y")
    assert client.last_warning is None


def test_retries_honour_retry_after_capped(fake: FakeDaemon) -> None:
    sleeps: list[float] = []
    with BBClient(fake.path, retries=RetryPolicy(4, jitter=lambda: 1.0), sleep=sleeps.append) as c:
        fake.error(409, "store is locked", "StoreLocked")
        fake.error(503, "primary syncing to secondary", "JoinSyncing", retry_after=0)
        fake.error(429, "rate limit exceeded", "RateLimited", retry_after=30)
        fake.answer(body="ok")
        assert c.promote() == "ok"
    assert sleeps == [0.05, 0.1, 2.0]  # back-off doubles; Retry-After is a floor; 2 s is the cap
    assert len(fake.requests) == 4


def test_retries_stop_after_budget_and_skip_final_errors(fake: FakeDaemon) -> None:
    sleeps: list[float] = []
    with BBClient(fake.path, retries=RetryPolicy(1, jitter=lambda: 1.0), sleep=sleeps.append) as c:
        fake.error(409, "store is locked", "StoreLocked")
        fake.error(409, "store is locked", "StoreLocked")
        with pytest.raises(BBError, match="store is locked"):
            c.update("S", b"x")
        fake.error(429, "tombstone limit exceeded", "TombstoneLimitExceeded")
        with pytest.raises(BBError):
            c.delete("S")
        fake.error(404, "store not found", "NotFound")
        with pytest.raises(BBError):
            c.snapshot("S")
    assert sleeps == [0.05] and len(fake.requests) == 4


def test_keep_alive_is_reused_and_reopened_after_idle_close(fake: FakeDaemon, client: BBClient) -> None:
    client.delete("a")
    client.delete("b")
    assert fake.connections == 1
    fake.responses.append(Canned(drop_after=True))
    client.delete("c")
    time.sleep(0.1)  # let the server close its end
    client.delete("d")
    assert [r.path[-1] for r in fake.requests] == ["a", "b", "c", "d"]
    assert fake.connections == 2


def test_connection_errors(fake: FakeDaemon) -> None:
    with pytest.raises(BBConnectionError, match="No such file or directory"):
        BBClient(fake.path + "-missing").status()
    fake.responses.append(Canned(delay=1.0))
    with BBClient(fake.path, timeout=0.2) as c, pytest.raises(BBConnectionError, match="timed out"):
        c.status()


# --- errors by meaning ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "cls", "retryable"),
    [
        (400, None, InvalidRequest, False),
        (401, None, InvalidRequest, False),
        (413, None, InvalidRequest, False),
        (403, "Unauthorized", Forbidden, False),
        (404, "NotFound", NotFound, False),
        (410, "StoreExpired", Expired, False),
        (409, "StoreLocked", Conflict, True),
        (409, "LockMismatch", Conflict, False),
        (409, "LockStateUnknown", Conflict, True),
        (503, "LeaderChanged", RetryLater, True),
        (503, "NoReplicas", RetryLater, True),
        (429, "RateLimited", Refused, True),
        (429, "TombstoneLimitExceeded", Refused, False),
        (507, "CustomerQuotaExceeded", Refused, False),
        (500, None, ServerError, False),
        (502, None, ServerError, False),
    ],
)
def test_errors_are_classed_by_meaning(
    fake: FakeDaemon, client: BBClient, status: int, code: str | None, cls: type[BBError], retryable: bool
) -> None:
    fake.error(status, "msg", code, retry_after=1 if code == "RateLimited" else None)
    with pytest.raises(cls) as info:
        client.snapshot("S")
    err = info.value
    assert (err.status, err.code, err.message, err.retryable) == (status, code, "msg", retryable)
    assert isinstance(err, BBError)


def test_connection_failed_is_a_bberror(fake: FakeDaemon) -> None:
    with BBClient(fake.path + "-missing") as c, pytest.raises(ConnectionFailed) as info:
        c.status()
    assert isinstance(info.value, BBError) and info.value.status == 0 and not info.value.retryable
    assert BBConnectionError is ConnectionFailed


def test_retry_policy_jitter_floor_and_cap() -> None:
    locked = Conflict(409, "store is locked", "StoreLocked")
    p = RetryPolicy(3, base=0.1, cap=0.5, jitter=lambda: 0.0)
    assert [p.delay(locked, n) for n in range(4)] == [0.05, 0.1, 0.2, None]  # half of base * 2**n, then give up
    assert RetryPolicy(3, jitter=lambda: 0.0).delay(RetryLater(503, "m", "LeaderChanged", 1), 0) == 1.0
    assert RetryPolicy(3, cap=0.5).delay(RetryLater(503, "m", "LeaderChanged", 30), 0) == 0.5
    assert RetryPolicy(3).delay(NotFound(404, "m", "NotFound"), 0) is None
    assert RetryPolicy(3).delay(ConnectionFailed("gone"), 0) is None  # outcome unknown: never retried
    with pytest.raises(ValueError):
        RetryPolicy(-1)


# --- replicas ---------------------------------------------------------------------------------
def test_replicas_header_on_every_write(fake: FakeDaemon, client: BBClient) -> None:
    fake.answer(body="SID")
    assert client.create(b"x", replicas=1) == "SID"
    client.create_by_name("n", b"x", replicas=1)
    client.create_counter(1, replicas=1)
    client.update("S", b"x", replicas=1)
    client.complete_modify("S", "L", b"x", replicas=1)
    client.set_counter("S", 1, replicas=1)
    fake.answer(body='{"value":1}')
    client.increment("S", replicas=1)
    fake.answer(body='{"value":0}')
    client.decrement("S", replicas=1)
    client.delete("S", replicas=1)
    client.delete_by_name("n", replicas=1)
    assert [r.headers.get("bigbunny-replicas") for r in fake.requests] == ["1"] * 10
    client.update("S", b"x")
    assert "bigbunny-replicas" not in fake.last.headers
    with pytest.raises(ValueError, match="replicas must be 0 or 1"):
        client.update("S", b"x", replicas=2)


def test_not_replicated_raises_with_the_result(fake: FakeDaemon, client: BBClient) -> None:
    fake.answer(body="SID7", BigBunny_Warning="NotReplicated")
    with pytest.raises(NotReplicated) as info:
        client.create(b"x", replicas=1)
    err = info.value
    assert (err.result, err.status, err.code, err.retryable) == ("SID7", 200, "NotReplicated", False)
    assert client.last_warning == "NotReplicated"
    fake.answer(body="SID8", BigBunny_Warning="NotReplicated")  # not asked for: a plain warning
    assert client.create(b"x") == "SID8" and client.last_warning == "NotReplicated"


# --- sharing between threads ------------------------------------------------------------------
def test_one_client_shared_by_threads(fake: FakeDaemon) -> None:
    errors: list[BaseException] = []
    with BBClient(fake.path, customer="acme", max_connections=3) as c:

        def work(n: int) -> None:
            try:
                for i in range(25):
                    c.delete(f"t{n}-{i}")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(20)
    assert errors == []
    assert sorted(r.path for r in fake.requests) == sorted(
        f"/api/v1/delete/t{n}-{i}" for n in range(8) for i in range(25)
    )
    assert 1 <= fake.connections <= 3  # never more connections than the pool allows


def test_last_warning_is_per_thread(fake: FakeDaemon, client: BBClient) -> None:
    fake.answer(BigBunny_Warning="DegradedWrite")
    client.update("S", b"x")
    seen: list[str | None] = []
    th = threading.Thread(target=lambda: seen.append(client.last_warning))
    th.start()
    th.join(5)
    assert seen == [None] and client.last_warning == "DegradedWrite"


def test_pool_timeout_when_every_connection_is_busy(fake: FakeDaemon) -> None:
    with BBClient(fake.path, max_connections=1, pool_timeout=0.2) as c:
        fake.responses.append(Canned(delay=1.0))
        th = threading.Thread(target=c.request, args=("GET", "/status"))
        th.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout, match="no free connection"):
            c.status()
        assert 0.15 < time.monotonic() - t0 < 0.9
        th.join(5)
        assert len(fake.requests) == 1  # the refused call sent nothing


def test_per_call_timeout(fake: FakeDaemon) -> None:
    with BBClient(fake.path, timeout=5.0) as c:
        fake.responses.append(Canned(delay=0.6))
        with pytest.raises(ConnectionFailed, match=r"timed out after 0\.2s"):
            c.status(timeout=0.2)


def test_a_dropped_client_closes_its_connections(fake: FakeDaemon) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = BBClient(fake.path)
        c.delete("S")
        conn = c._pool._idle[0]
        del c
        gc.collect()
        assert conn.sock is None  # closed, not left for the socket's finaliser
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
