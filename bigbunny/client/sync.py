"""The blocking client: :class:`BBClient`, safe to share between threads. Stdlib only.

It keeps a small pool of keep-alive connections to the daemon's Unix socket (HTTP/1.1 carries one request
at a time per connection): a call takes the most recently used idle connection, or opens one while fewer
than ``max_connections`` exist, or waits up to ``pool_timeout`` for one to come back. An idle connection
the server has closed is dropped when it is next taken; a request that finds its reused connection closed
before any answer arrived is sent once more on a new one. ``last_warning`` is per thread. ``close()`` (or
``with``) closes the idle connections at once; a client that is garbage-collected closes them then.

    with BBClient("/tmp/bbd.sock", customer="acme") as bb:
        sid = bb.create(b"hello", ttl=60)
        assert bb.snapshot(sid).body == b"hello"
"""

from __future__ import annotations

import http.client
import itertools
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TypeVar

import bigbunny.client.calls as calls
from bigbunny.client.base import Backoff, ClientBase
from bigbunny.client.calls import Call, Response
from bigbunny.client.errors import ConnectionFailed, PoolTimeout
from bigbunny.client.methods import blocking
from bigbunny.client.retry import RetryPolicy

T = TypeVar("T")

_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def closed_by_peer(self) -> bool:
        """An idle connection is readable only if the server closed it (or sent something unasked)."""
        if self.sock is None:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)


class _Pool:
    """Idle connections, most recent last; a semaphore bounds how many exist."""

    def __init__(self, uds: str, max_connections: int, pool_timeout: float) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.uds = uds
        self.pool_timeout = pool_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[_UnixHTTPConnection] = []
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> tuple[_UnixHTTPConnection, bool]:
        """A connection and whether it was used before."""
        if not self._slots.acquire(timeout=self.pool_timeout):
            raise PoolTimeout(f"no free connection to {self.uds} within {self.pool_timeout:g}s")
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return _UnixHTTPConnection(self.uds, timeout), False
            if conn.closed_by_peer():
                conn.close()
                continue
            conn.set_timeout(timeout)
            return conn, True

    def release(self, conn: _UnixHTTPConnection, reusable: bool) -> None:
        if reusable and conn.sock is not None:
            with self._lock:
                self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class BBClient(ClientBase):
    """Client for one daemon socket and one customer; share one instance between threads.

    ``retries`` (a count or a :class:`RetryPolicy`) retries answers that mean "not applied"; ``timeout`` is
    the default per-call timeout in seconds (each call takes ``timeout=`` too). ``last_warning`` holds the
    ``BigBunny-Warning`` of this thread's most recent successful call (``None`` if it had none)."""

    def __init__(
        self,
        uds: str = "/tmp/bbd.sock",
        customer: str = "default",
        timeout: float = 5.0,
        retries: int | RetryPolicy = 0,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int = 4,
        pool_timeout: float = 5.0,
    ) -> None:
        super().__init__(uds, customer, timeout, retries)
        self._sleep = sleep
        self._pool = _Pool(uds, max_connections, pool_timeout)
        weakref.finalize(self, self._pool.close)  # a client dropped without close() leaves no socket open

    # --- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the idle connections; connections in use close when their call ends."""
        self._pool.close()

    def __enter__(self) -> BBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float | None = None,
    ) -> Response:
        """Send one request; any HTTP status is returned. No answer raises :class:`ConnectionFailed`."""
        limit = self.timeout if timeout is None else timeout
        for attempt in (0, 1):
            conn, reused = self._pool.acquire(limit)
            keep = False
            try:
                payload = body if body or method not in ("GET", "HEAD") else None
                conn.request(method, path, body=payload, headers=dict(headers or {}))
                resp = conn.getresponse()
                data = resp.read()
                keep = not resp.will_close
            except _STALE_CONNECTION as e:
                if reused and attempt == 0:
                    continue  # the server closed our idle keep-alive connection: send it once more
                raise ConnectionFailed(self._describe(e, limit)) from e
            except (OSError, http.client.HTTPException) as e:
                raise ConnectionFailed(self._describe(e, limit)) from e
            finally:
                self._pool.release(conn, keep)
            hdrs: dict[str, str] = {}
            for name, value in resp.getheaders():
                hdrs.setdefault(name.lower(), value)
            return Response(resp.status, hdrs, data)
        raise AssertionError("unreachable")

    def _describe(self, e: BaseException, timeout: float) -> str:
        if isinstance(e, TimeoutError):
            return f"request to {self.uds} timed out after {timeout:g}s"
        detail = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        return f"unix {self.uds}: {detail}"

    def run(self, call: Call[T]) -> T:
        """Send ``call`` (retrying as the policy allows) and return its result or raise its error."""
        headers = self.headers_for(call)
        for attempt in itertools.count():
            resp = self.request(call.method, call.path, headers, call.body, call.timeout)
            try:
                return self.settle(call, resp, attempt)
            except Backoff as b:
                self._sleep(b.delay)
        raise AssertionError("unreachable")

    # --- calls: each defined once, in bigbunny.client.calls ------------------------------------
    create = blocking(calls.create)
    create_by_name = blocking(calls.create_by_name)
    create_counter = blocking(calls.create_counter)
    snapshot = blocking(calls.snapshot)
    begin_modify = blocking(calls.begin_modify)
    complete_modify = blocking(calls.complete_modify)
    cancel_modify = blocking(calls.cancel_modify)
    update = blocking(calls.update)
    set_counter = blocking(calls.set_counter)
    increment = blocking(calls.increment)
    decrement = blocking(calls.decrement)
    delete = blocking(calls.delete)
    delete_by_name = blocking(calls.delete_by_name)
    lookup = blocking(calls.lookup)
    status = blocking(calls.status)
    customers = blocking(calls.customers)
    promote = blocking(calls.promote)
    release_lock = blocking(calls.release_lock)
    reload = blocking(calls.reload)
