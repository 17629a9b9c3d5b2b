"""The daemon's HTTP/1.1 connection: ``/api/v1`` answered without ASGI, everything else through it.

uvicorn runs the server (listening socket, graceful shutdown, the connection set) and instantiates
this protocol per connection through its documented ``http=`` setting. Parsing is httptools (llhttp).

Lifecycle of one connection:

* ``connection_made`` → the header deadline starts (a silent new connection is closed: slowloris).
* A request is parsed; its headers are counted against ``--http-max-header-bytes`` (431 and close).
* ``/api/v1/…`` becomes an ``ApiRequest`` once its body is complete — or as soon as the body passes
  ``--max-store-size`` (the rest is discarded, the answer is 413 or an earlier error) — and is handed
  to ``StoreApi.handle``: route (one dict look-up), the supervisor's checks, one shard call whose
  reply writes the answer, rendered from byte templates, in one ``transport.write``. No scope dict,
  no task, no Starlette object per request.
* Any other path gets a scope and uvicorn's ``RequestResponseCycle`` running the Starlette app in a
  task, as uvicorn itself would do it.
* Requests are answered one at a time, in order: a pipelined request waits in ``_queue`` (reading
  pauses meanwhile). After an answer, the connection closes (``Connection: close``, HTTP/1.0,
  shutdown) or serves the next request, or starts its keep-alive deadline.
* A transport whose write buffer is full pauses reading; if the client does not drain it within
  ``--http-write-timeout`` the connection is aborted.

The header, read and keep-alive deadlines are checked by one timer for all connections (every
``_SWEEP_EVERY`` s), which also refreshes the ``Date`` header's value.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from bigbunny.errors import ApiError
from bigbunny.supervisor.front.requests import WANTED, ApiHandler, ApiRequest
from bigbunny.supervisor.front.responses import CLOSE, OK_TEMPLATE, clock, render_error, render_raw

log = logging.getLogger("bbd.http")


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 1 << 20
    read_header_timeout: float = 10.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0


def _plain(status: int, reason: str, msg: str) -> bytes:
    body = (msg + "\n").encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"x-content-type-options: nosniff\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


_BAD_REQUEST = _plain(400, "Bad Request", "malformed HTTP request")
_TOO_LARGE = _plain(431, "Request Header Fields Too Large", "request header fields too large")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REFUSE_LINGER = 0.5  # s to keep discarding a refused request's input after the 431
_SWEEP_EVERY = 0.25  # deadline granularity of the HTTP timeouts
_API = b"/api/v1/"


class _HeaderOverflow(Exception):
    pass


class _CorkedTransport:
    """Joins an ASGI response's head and body (uvicorn's cycle writes them separately) into one
    ``write``. The head waits for the body write, or for the end of the response (a HEAD answer has
    no body write); nothing is scheduled per response."""

    __slots__ = ("_t", "_head")

    def __init__(self, transport: Any) -> None:
        self._t = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is None:
            self._head = data
        else:
            self._head = None
            if not self._t.is_closing():
                self._t.write(head + data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._t.is_closing():
                self._t.write(head)

    def close(self) -> None:
        self.flush()
        self._t.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


class _Sweeper:
    """One timer per server for every connection's deadlines (instead of timers per request)."""

    def __init__(self) -> None:
        self.handle: asyncio.TimerHandle | None = None
        # Loop time of the last sweep: deadlines are set from it (plus one sweep period, so they are
        # never early) instead of reading the clock several times per request.
        self.now = 0.0

    def ensure(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        if self.handle is None:
            clock.refresh()
            self.now = loop.time()
            self.handle = loop.call_later(_SWEEP_EVERY, self._sweep, loop, connections)

    def _sweep(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        clock.refresh()
        now = self.now = loop.time()
        for conn in list(connections):
            if isinstance(conn, HttpProtocol):
                conn.check_deadlines(now)
        self.handle = loop.call_later(_SWEEP_EVERY, self._sweep, loop, connections) if connections else None


class HttpProtocol(asyncio.Protocol):
    """One client connection. ``make_protocol`` binds the limits and the API to a subclass."""

    limits: HttpLimits = HttpLimits()
    api: ApiHandler
    max_body: int = 2048
    sweeper: _Sweeper = _Sweeper()

    def __init__(
        self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state
        self.timeout_keep_alive = config.timeout_keep_alive
        self.parser = httptools.HttpRequestParser(self)
        try:  # answer a pipelined request that follows a request with Connection: close (uvicorn does too)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:
            pass
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]
        self._corked: _CorkedTransport = None  # type: ignore[assignment]
        # the request being read
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._wanted: list[bytes | None] = [None] * len(WANTED)
        self._hdr_bytes = 0
        self._expect = False  # Expect: 100-continue
        self._conn_hdr = False  # a Connection header was sent
        self._parsing = False
        self._upgrade = False
        self._req: ApiRequest | None = None  # an /api/v1 request, until its body is complete
        self._chunks: list[bytes] = []
        self._size = 0
        self._cycle: RequestResponseCycle | None = None  # any other request (ASGI)
        # the requests being answered / waiting (pipelined), in order
        self._active: Any = None
        self._queue: deque[Any] = deque()
        self._in_next = False
        self._refused = False
        self._hdr_deadline = 0.0  # loop time by which the request headers must be complete (0: none)
        self._read_deadline = 0.0  # ... the whole request must be read
        self._idle_deadline = 0.0  # ... the next request must start (keep-alive)
        self._write_timer: asyncio.TimerHandle | None = None

    # --- connection -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(self.transport)
        self._corked = _CorkedTransport(transport)
        self._hdr_deadline = self.loop.time() + self.limits.read_header_timeout
        self.sweeper.ensure(self.loop, self.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        for cycle in (self._active, self._cycle):
            if cycle.__class__ is RequestResponseCycle:
                if not cycle.response_complete:
                    cycle.disconnected = True
                cycle.message_event.set()
        self._queue.clear()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()

    def eof_received(self) -> None:
        pass

    def shutdown(self) -> None:
        """Graceful stop (called by uvicorn): close when idle, else after the answer in progress."""
        active = self._active
        if active is None:
            self.transport.close()
        else:
            active.keep_alive = False

    def check_deadlines(self, now: float) -> None:
        for deadline, what in (
            (self._hdr_deadline, "header"),
            (self._read_deadline, "read"),
            (self._idle_deadline, "idle"),
        ):
            if deadline and now > deadline:
                self._expire(what)
                return

    def _expire(self, what: str) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        log.debug("closing connection: %s timeout", what)
        if what == "write":
            self.transport.abort()
        else:
            self.transport.close()

    # --- flow control -----------------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.flow.pause_writing()
        self.flow.pause_reading()  # no new requests while the client does not read its answers
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self._expire, "write")

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if not self._queue:
            self.flow.resume_reading()

    # --- input ------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # 431 sent: discard the rest of the request until the client closes
        self._idle_deadline = 0.0
        try:
            self.parser.feed_data(data)
        except _HeaderOverflow:
            self._refuse_headers()
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _HeaderOverflow) or self._hdr_bytes > self.limits.max_header_bytes:
                self._refuse_headers()
            else:
                self._bad_request()
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._bad_request()

    def _bad_request(self) -> None:
        """Unparsable request (or an upgrade, which bbd does not do): plain 400, then close."""
        if not self.transport.is_closing():
            self.transport.write(_BAD_REQUEST)
            self.transport.close()

    def _refuse_headers(self) -> None:
        """431, then half-close and keep reading (discarding) briefly, like Go's closeWriteAndWait:
        a client still sending its request would otherwise fail on a closed socket, never seeing the 431."""
        self._refused = True
        self.transport.write(_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(_REFUSE_LINGER, self.transport.close)
        else:
            self.transport.close()

    # httptools callbacks: they run for every request, so each keeps to a few operations.
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._wanted = [None, None, None, None, None, None, None]  # one slot per requests.WANTED
        self._hdr_bytes = 0
        self._expect = self._upgrade = self._conn_hdr = False
        self._parsing = True
        self._req = self._cycle = None
        now = self.sweeper.now + _SWEEP_EVERY
        if not self._hdr_deadline:
            self._hdr_deadline = now + self.limits.read_header_timeout
        self._read_deadline = now + self.limits.read_timeout
        self._idle_deadline = 0.0

    def on_url(self, url: bytes) -> None:
        n = self._hdr_bytes = self._hdr_bytes + len(url)
        if n > self.limits.max_header_bytes:
            raise _HeaderOverflow
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        n = self._hdr_bytes = self._hdr_bytes + len(name) + len(value) + 4
        if n > self.limits.max_header_bytes:
            raise _HeaderOverflow
        name = name.lower()
        i = WANTED.get(name)
        if i is not None:
            if self._wanted[i] is None:
                self._wanted[i] = value
        elif name == b"connection":
            self._conn_hdr = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._hdr_deadline = 0.0
        parser = self.parser
        if parser.should_upgrade():
            self._upgrade = True  # answered 400 when the parser stops at the upgrade
            return
        url = self._url
        if url.startswith(_API) and b"?" not in url and b"#" not in url:
            # Without a Connection header, llhttp's keep-alive answer is the version's default; with
            # one, HTTP/1.0 still closes (as uvicorn does).
            keep_alive = parser.should_keep_alive() and (not self._conn_hdr or parser.get_http_version() != "1.0")
            req = self._req = ApiRequest(parser.get_method(), url, self._headers, self._wanted, b"", False, self)
            req.keep_alive = keep_alive
            self._chunks = []
            self._size = 0
            if self._expect and self._active is None and not self._queue:
                self._expect = False
                self.transport.write(_CONTINUE)
            return
        parsed = httptools.parse_url(url)
        path, query = parsed.path, parsed.query or b""
        if path.startswith(_API):  # absolute form or a query string: the same API request
            self._url = path
            self.on_headers_complete()
            return
        http_version = parser.get_http_version()
        self._start_cycle(path, query, http_version, http_version != "1.0" and parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        req = self._req
        if req is not None:
            self._chunks.append(body)
            self._size += len(body)
            if self._size > self.max_body:  # answer now (413 or an earlier error); discard the rest
                self._req = None
                req.body = b"".join(self._chunks)[: self.max_body + 1]
                req.too_large = True
                self._chunks = []
                self._ready(req)
            return
        cycle = self._cycle
        if cycle is None or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._read_deadline = 0.0
        self._parsing = False
        if self._upgrade:
            self._bad_request()
            return
        req = self._req
        if req is not None:
            self._req = None
            if self._chunks:
                req.body = b"".join(self._chunks)
                self._chunks = []
            self._ready(req)
            return
        cycle = self._cycle
        if cycle is not None and not cycle.response_complete:
            cycle.more_body = False
            cycle.message_event.set()

    # --- requests in order --------------------------------------------------------------------------
    def _ready(self, item: Any) -> None:
        """A request can be answered: now if the connection is free, else after those before it."""
        if self._active is None and not self._queue and not self._in_next:
            self._start(item)
        else:
            self._queue.append(item)
            self.flow.pause_reading()

    def _start(self, item: Any) -> None:
        self._active = item
        if item.__class__ is ApiRequest:
            self.api.handle(item)
        else:
            task = self.loop.create_task(item.run_asgi(self.app))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    def _finished(self, keep_alive: bool) -> None:
        self._active = None
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
        elif self._queue or self.flow.read_paused or self._parsing:
            if not self._in_next:
                self._next()
        elif not self._in_next:  # the common case: nothing waiting, wait for the next request
            self._idle_deadline = self.sweeper.now + _SWEEP_EVERY + self.timeout_keep_alive

    def _next(self) -> None:
        """Serve the queued requests (each may be answered at once), then wait for input."""
        self._in_next = True
        try:
            while self._active is None and self._queue:
                if self.transport.is_closing():
                    return
                self._start(self._queue.popleft())
        finally:
            self._in_next = False
        if self._active is not None or self.transport.is_closing():
            return
        if not self.flow.write_paused:
            self.flow.resume_reading()
        if self._parsing:
            if self._expect and self._req is not None:  # a waiting client may send its body now
                self._expect = False
                self.transport.write(_CONTINUE)
        else:
            self._idle_deadline = self.sweeper.now + _SWEEP_EVERY + self.timeout_keep_alive

    # --- answers of /api/v1 requests (supervisor.front.requests.Responder) --------------------------------
    def ok(self, req: ApiRequest, body: bytes, ctype: bytes, extra: bytes) -> None:
        if req is not self._active:
            return  # the connection is gone, or a second answer (a bug): never answer another request
        keep = req.keep_alive
        if not self.transport.is_closing():
            self.transport.write(
                OK_TEMPLATE % (clock.line, len(body), ctype if body else b"", extra, b"" if keep else CLOSE, body)
            )
        self._finished(keep)

    def error(self, req: ApiRequest, err: ApiError, extra: bytes = b"") -> None:
        if req is not self._active:
            return
        if not self.transport.is_closing():
            self.transport.write(render_error(err, extra, not req.keep_alive, req.method == b"HEAD"))
        self._finished(req.keep_alive)

    def raw(self, req: ApiRequest, status: int, headers: list[Any], body: bytes) -> None:
        if req is not self._active:
            return
        if not self.transport.is_closing():
            self.transport.write(render_raw(status, headers, body, not req.keep_alive, req.method == b"HEAD"))
        self._finished(req.keep_alive)

    # --- other paths: ASGI ------------------------------------------------------------------------
    def _start_cycle(self, raw_path: bytes, query: bytes, http_version: str, keep_alive: bool) -> None:
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope = {
            "type": "http",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.3"},
            "http_version": http_version,
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "scheme": "http",
            "root_path": "",
            "headers": self._headers,
            "state": self.app_state.copy(),
            "method": self.parser.get_method().decode("ascii"),
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
        }
        cycle: RequestResponseCycle

        def on_response() -> None:
            self._corked.flush()  # a HEAD answer's head is still waiting for a body that never comes
            self._finished(cycle.keep_alive)

        cycle = self._cycle = RequestResponseCycle(
            scope=scope,  # type: ignore[arg-type]
            transport=self._corked,  # type: ignore[arg-type]  # head and body leave in one write
            flow=self.flow,
            logger=logging.getLogger("uvicorn.error"),
            access_logger=logging.getLogger("uvicorn.access"),
            access_log=False,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self._expect,
            keep_alive=keep_alive,
            on_response=on_response,
        )
        self._ready(cycle)


def make_protocol(limits: HttpLimits, api: ApiHandler, max_body: int) -> type[HttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to this server's settings."""
    return type(
        "BbdHttpProtocol", (HttpProtocol,), {"limits": limits, "api": api, "max_body": max_body, "sweeper": _Sweeper()}
    )
