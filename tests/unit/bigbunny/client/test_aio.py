"""bigbunny.aio.AsyncBBClient against the fake daemon: the same requests and results as the sync client,
errors by meaning, retries, per-call timeouts and the connection pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from fakedaemon import Canned, FakeDaemon

from bigbunny.aio import (
    AsyncBBClient,
    Conflict,
    ConnectionFailed,
    NotFound,
    NotReplicated,
    PoolTimeout,
    RetryLater,
    RetryPolicy,
)

pytestmark = pytest.mark.timeout(30)
T = TypeVar("T")


def run(fake: FakeDaemon, body: Callable[[AsyncBBClient], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        async with AsyncBBClient(fake.path, customer="acme", **kw) as client:
            return await body(client)

    return asyncio.run(main())


def test_calls_send_the_same_requests_as_the_sync_client(fake: FakeDaemon) -> None:
    async def body(c: AsyncBBClient) -> None:
        fake.answer(body="SID1")
        assert await c.create(b"hello", ttl=60) == "SID1"
        fake.answer(body=b"\x00data", BigBunny_Not_Valid_After="3599", Content_Type="application/octet-stream")
        snap = await c.snapshot("a/b")
        assert (snap.body, snap.ttl, snap.content_type) == (b"\x00data", 3599, "application/octet-stream")
        fake.answer(body=b"cur", BigBunny_Lock_ID="L" * 22, BigBunny_Not_Valid_After="10")
        mod = await c.begin_modify("S")
        assert (mod.lock_id, mod.body, mod.ttl) == ("L" * 22, b"cur", 10)
        await c.complete_modify("S", mod.lock_id, b"new", ttl=5)
        fake.answer(body='{"value":3,"version":2,"bounded":false}\n')
        assert await c.decrement("C", 4) == {"value": 3, "version": 2, "bounded": False}
        fake.answer(body='{"role":"PRIMARY"}\n')
        assert await c.status() == {"role": "PRIMARY"}

    run(fake, body)
    reqs = fake.requests
    assert [(r.method, r.path) for r in reqs] == [
        ("POST", "/api/v1/create"),
        ("POST", "/api/v1/snapshot/a%2Fb"),
        ("POST", "/api/v1/begin-modify/S"),
        ("POST", "/api/v1/complete-modify/S"),
        ("POST", "/api/v1/decrement/C"),
        ("GET", "/status"),
    ]
    assert reqs[0].body == b"hello" and reqs[0].headers["bigbunny-not-valid-after"] == "60"
    assert all(r.headers["x-customer-id"] == "acme" for r in reqs[:5]) and "x-customer-id" not in reqs[5].headers
    assert reqs[3].headers["bigbunny-lock-id"] == "L" * 22 and reqs[3].body == b"new"
    assert reqs[4].body == b'{"delta":4}'
    assert fake.connections == 1  # one keep-alive connection for sequential calls


def test_errors_by_meaning_and_opt_in_retries(fake: FakeDaemon) -> None:
    async def body(c: AsyncBBClient) -> None:
        fake.error(404, "store not found", "NotFound")
        with pytest.raises(NotFound) as nf:
            await c.snapshot("S")
        assert (nf.value.status, nf.value.code, nf.value.message) == (404, "NotFound", "store not found")
        fake.error(409, "store is locked", "StoreLocked")
        fake.error(503, "leader unknown", "LeaderChanged", retry_after=0)
        fake.answer(body="ok")
        assert await c.promote() == "ok"  # retried twice
        fake.error(409, "lock mismatch", "LockMismatch")
        with pytest.raises(Conflict):
            await c.update("S", b"x")  # not retryable: one request

    run(fake, body, retries=RetryPolicy(3, base=0.001))
    assert len(fake.requests) == 5


def test_retries_stop_after_the_budget(fake: FakeDaemon) -> None:
    async def body(c: AsyncBBClient) -> None:
        for _ in range(3):
            fake.error(503, "shard unavailable", "StoreUnavailable", retry_after=0)
        with pytest.raises(RetryLater) as info:
            await c.snapshot("S")
        assert info.value.retry_after == 0

    run(fake, body, retries=RetryPolicy(2, base=0.001))
    assert len(fake.requests) == 3


def test_not_replicated_and_warnings_per_task(fake: FakeDaemon) -> None:
    async def body(c: AsyncBBClient) -> None:
        fake.answer(body="SID", BigBunny_Warning="NotReplicated")
        with pytest.raises(NotReplicated) as info:
            await c.create(b"x", replicas=1)
        assert info.value.result == "SID" and fake.last.headers["bigbunny-replicas"] == "1"
        fake.answer(BigBunny_Warning="DegradedWrite")
        await c.update("S", b"x")
        assert c.last_warning == "DegradedWrite"

        async def other() -> str | None:
            return c.last_warning

        assert await asyncio.create_task(other()) == "DegradedWrite"  # a task starts with a copy of the context
        fake.answer()

        async def writes() -> str | None:
            await c.update("S", b"y")
            return c.last_warning

        assert await asyncio.create_task(writes()) is None
        assert c.last_warning == "DegradedWrite"  # the other task's call did not change ours

    run(fake, body)


def test_pool_bounds_connections_and_reuses_the_most_recent(fake: FakeDaemon) -> None:
    async def body(c: AsyncBBClient) -> None:
        for _ in range(40):
            fake.responses.append(Canned(delay=0.01))
        await asyncio.gather(*(c.delete(f"d{i}") for i in range(40)))
        assert len(c._pool._idle) == 4
        newest = c._pool._idle[-1]
        await c.delete("again")
        assert c._pool._idle[-1] is newest  # LIFO: the warmest connection is taken first

    run(fake, body, max_connections=4)
    assert sorted(r.path for r in fake.requests[:40]) == sorted(f"/api/v1/delete/d{i}" for i in range(40))
    assert fake.connections == 4


def test_idle_connection_closed_by_the_server_is_dropped(fake: FakeDaemon) -> None:
    async def body(c: AsyncBBClient) -> None:
        fake.responses.append(Canned(drop_after=True))
        await c.delete("a")
        await asyncio.sleep(0.1)  # the close reaches the idle connection
        assert [conn.closed for conn in c._pool._idle] in ([], [True])
        await c.delete("b")

    run(fake, body)
    assert [r.path for r in fake.requests] == ["/api/v1/delete/a", "/api/v1/delete/b"]
    assert fake.connections == 2


def test_pool_timeout_and_per_call_timeout(fake: FakeDaemon) -> None:
    async def body(c: AsyncBBClient) -> None:
        fake.responses.append(Canned(delay=0.8))
        slow = asyncio.create_task(c.request("GET", "/status"))
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout, match="no free connection"):
            await c.status()
        assert 0.15 < time.monotonic() - t0 < 0.7
        assert (await slow).status == 200
        fake.responses.append(Canned(delay=0.6))
        with pytest.raises(ConnectionFailed, match=r"timed out after 0\.2s"):
            await c.status(timeout=0.2)

    run(fake, body, max_connections=1, pool_timeout=0.2)


def test_connection_failures_and_bad_headers(fake: FakeDaemon) -> None:
    async def body(c: AsyncBBClient) -> None:
        with pytest.raises(ConnectionFailed, match="No such file or directory") as info:
            await c.status()
        assert info.value.status == 0

    async def main() -> None:
        async with AsyncBBClient(fake.path + "-missing") as c:
            await body(c)
        async with AsyncBBClient(fake.path, customer="a\r\nX-Evil: 1") as c:
            with pytest.raises(ValueError, match="invalid header"):
                await c.snapshot("S")

    asyncio.run(main())
    assert fake.requests == []
