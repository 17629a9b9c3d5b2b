"""The asyncio client: :class:`AsyncBBClient`, the same calls and results as :class:`bigbunny.client.BBClient`.

Transport: asyncio's own Unix-socket connections with ``httptools`` (llhttp, already the daemon's HTTP
parser) reading the answers, and requests written as one byte string. Measured against ``httpx``,
``httpx2`` and ``aiohttp`` over the same socket (``docs/client.md``), it does several times their calls per
second at 64 concurrent calls; all it needs is HTTP/1.1 keep-alive with ``Content-Length`` bodies, which is
all the daemon speaks.

Pool: HTTP/1.1 carries one request at a time per connection, so up to ``max_connections`` keep-alive
connections are kept; a call takes the most recently used idle one (warm, and it lets the rest idle out),
opens one while fewer exist, or waits up to ``pool_timeout`` (then :class:`PoolTimeout`). A connection the
server closed while idle is dropped as soon as the close arrives; a request that finds its reused connection
closed before any answer is sent once more on a new one. ``last_warning`` is per task.

    async with AsyncBBClient("/tmp/bbd.sock", customer="acme") as bb:
        sid = await bb.create(b"hello", ttl=60)
        assert (await bb.snapshot(sid)).body == b"hello"
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Mapping
from typing import TypeVar, cast

import httptools

import bigbunny.client.calls as calls
from bigbunny.client.base import Backoff, ClientBase
from bigbunny.client.calls import Call, Response
from bigbunny.client.errors import ConnectionFailed, PoolTimeout
from bigbunny.client.methods import awaitable
from bigbunny.client.retry import RetryPolicy

T = TypeVar("T")


class _StaleConnection(Exception):
    """The server closed a reused connection before answering: safe to send the request again."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (the pool guarantees it)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._answered = False  # any byte of the current answer arrived

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionFailed(f"malformed answer from the daemon: {e}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answered:
            self._fail(ConnectionFailed("connection closed mid-answer"))
        else:
            self._fail(_StaleConnection())

    # --- httptools callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        self.reusable = self._parser.should_keep_alive()
        resp = Response(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    # --- use ----------------------------------------------------------------------------------
    def send(self, request: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._headers = {}
        self._body = []
        self._answered = False
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return waiter

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            try:
                self.transport.close()
            except RuntimeError:  # its event loop is closed already (a client dropped after asyncio.run)
                pass


class _Pool:
    """Idle connections, most recent last; a semaphore bounds how many exist."""

    def __init__(self, uds: str, max_connections: int, pool_timeout: float) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.uds = uds
        self.pool_timeout = pool_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []

    async def acquire(self) -> tuple[_Connection, bool]:
        """A connection and whether it was used before."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.pool_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolTimeout(f"no free connection to {self.uds} within {self.pool_timeout:g}s") from None
        else:
            await self._slots.acquire()  # free: returns without suspending
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        try:
            _, conn = await asyncio.get_running_loop().create_unix_connection(_Connection, self.uds)
        except BaseException:
            self._slots.release()
            raise
        return conn, False

    def release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and conn.reusable and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _encode(method: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"invalid header {name!r}: {value!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


class AsyncBBClient(ClientBase):
    """Asyncio client for one daemon socket and one customer; share one instance between tasks.

    ``retries`` (a count or a :class:`RetryPolicy`) retries answers that mean "not applied"; ``timeout`` is
    the default per-call timeout in seconds (each call takes ``timeout=`` too). ``last_warning`` holds the
    ``BigBunny-Warning`` of this task's most recent successful call (``None`` if it had none)."""

    def __init__(
        self,
        uds: str = "/tmp/bbd.sock",
        customer: str = "default",
        timeout: float = 5.0,
        retries: int | RetryPolicy = 0,
        max_connections: int = 16,
        pool_timeout: float = 5.0,
    ) -> None:
        super().__init__(uds, customer, timeout, retries)
        self._pool = _Pool(uds, max_connections, pool_timeout)
        weakref.finalize(self, self._pool.close)  # a client dropped without aclose() leaves no socket open

    # --- plumbing -----------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the idle connections; connections in use close when their call ends."""
        self._pool.close()

    async def __aenter__(self) -> AsyncBBClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float | None = None,
    ) -> Response:
        """Send one request; any HTTP status is returned. No answer raises :class:`ConnectionFailed`."""
        limit = self.timeout if timeout is None else timeout
        request = _encode(method, path, headers or {}, body)
        try:
            async with asyncio.timeout(limit):
                return await self._exchange(request)
        except TimeoutError:
            raise ConnectionFailed(f"request to {self.uds} timed out after {limit:g}s") from None
        except OSError as e:
            raise ConnectionFailed(f"unix {self.uds}: {e.strerror or e}") from e

    async def _exchange(self, request: bytes) -> Response:
        for attempt in (0, 1):
            conn, reused = await self._pool.acquire()
            keep = False
            try:
                resp = await conn.send(request)
                keep = True
                return resp
            except _StaleConnection:
                if not (reused and attempt == 0):
                    raise ConnectionFailed(f"unix {self.uds}: connection closed before the answer") from None
            finally:
                self._pool.release(conn, keep)
        raise AssertionError("unreachable")

    async def run(self, call: Call[T]) -> T:
        """Send ``call`` (retrying as the policy allows) and return its result or raise its error."""
        headers = self.headers_for(call)
        for attempt in itertools.count():
            resp = await self.request(call.method, call.path, headers, call.body, call.timeout)
            try:
                return self.settle(call, resp, attempt)
            except Backoff as b:
                await asyncio.sleep(b.delay)
        raise AssertionError("unreachable")

    # --- calls: each defined once, in bigbunny.client.calls ------------------------------------
    create = awaitable(calls.create)
    create_by_name = awaitable(calls.create_by_name)
    create_counter = awaitable(calls.create_counter)
    snapshot = awaitable(calls.snapshot)
    begin_modify = awaitable(calls.begin_modify)
    complete_modify = awaitable(calls.complete_modify)
    cancel_modify = awaitable(calls.cancel_modify)
    update = awaitable(calls.update)
    set_counter = awaitable(calls.set_counter)
    increment = awaitable(calls.increment)
    decrement = awaitable(calls.decrement)
    delete = awaitable(calls.delete)
    delete_by_name = awaitable(calls.delete_by_name)
    lookup = awaitable(calls.lookup)
    status = awaitable(calls.status)
    customers = awaitable(calls.customers)
    promote = awaitable(calls.promote)
    release_lock = awaitable(calls.release_lock)
    reload = awaitable(calls.reload)
