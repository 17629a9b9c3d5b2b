"""uvicorn, in-process, on the Unix socket we bound ourselves — plus what uvicorn lacks.

uvicorn's httptools protocol has no header-size cap and no header/read/write timeouts, so this
subclass adds them, mapping the daemon's Go-style flags (documented in docs/configuration.md):

* ``--http-max-header-bytes`` → request line + headers above the cap get ``431`` and the connection closes
* ``--http-read-header-timeout`` → a connection that has not sent complete headers in time is closed
  (also an idle new connection that sends nothing: slowloris protection)
* ``--http-read-timeout`` → a request (headers + body) not fully read in time is closed
* ``--http-write-timeout`` → a response the client does not drain in time aborts the connection
* ``--http-idle-timeout`` → uvicorn's ``timeout_keep_alive``

``BbdServer`` keeps uvicorn from installing signal handlers: the supervisor's loop owns signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

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
_REFUSE_LINGER = 0.5  # s to keep discarding a refused request's input after the 431


_SWEEP_EVERY = 0.25  # deadline granularity of the HTTP timeouts


class _HeaderOverflow(Exception):
    pass


class _CorkedTransport:
    """Joins a response's head and body (uvicorn writes them separately) into one ``write``: one
    syscall per response instead of two. The head waits for the body write, or for the end of the
    response (a HEAD answer has no body write); nothing is scheduled per response."""

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


def make_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    """A protocol class bound to ``limits`` (uvicorn instantiates it per connection)."""

    sweeper: dict[str, Any] = {"handle": None}
    max_header_bytes = limits.max_header_bytes
    read_header_timeout = limits.read_header_timeout
    read_timeout = limits.read_timeout

    def sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """One timer for all connections instead of three per request: every ``_SWEEP_EVERY`` s,
        close the connections whose header, read or keep-alive deadline has passed."""
        now = loop.time()
        for conn in list(connections):
            if isinstance(conn, BbdHttpProtocol):
                conn._check_deadlines(now)
        sweeper["handle"] = loop.call_later(_SWEEP_EVERY, sweep, loop, connections) if connections else None

    class BbdHttpProtocol(HttpToolsProtocol):
        _hdr_bytes = 0
        _refused = False
        _hdr_deadline = 0.0  # loop time by which the request headers must be complete (0: none)
        _read_deadline = 0.0  # ... the whole request must be read
        _idle_deadline = 0.0  # ... the next request must start (keep-alive)
        _write_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._corked = _CorkedTransport(transport)
            self._hdr_deadline = self.loop.time() + limits.read_header_timeout
            if sweeper["handle"] is None:
                sweeper["handle"] = self.loop.call_later(_SWEEP_EVERY, sweep, self.loop, self.connections)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._write_timer is not None:
                self._write_timer.cancel()
            super().connection_lost(exc)

        def _check_deadlines(self, now: float) -> None:
            for deadline, what in ((self._hdr_deadline, "header"), (self._read_deadline, "read"),
                                   (self._idle_deadline, "idle")):
                if deadline and now > deadline:
                    self._expire(what)
                    return

        def _unset_keepalive_if_required(self) -> None:
            self._idle_deadline = 0.0

        def on_response_complete(self) -> None:
            # uvicorn's, with the keep-alive timer replaced by a deadline the sweeper checks
            self._corked.flush()  # a HEAD answer's head is still waiting for a body that never comes
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._idle_deadline = 0.0
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                self._idle_deadline = self.loop.time() + self.timeout_keep_alive

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # 431 sent: discard the rest of the request until the client closes
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except _HeaderOverflow:
                self._refuse_headers()
            except httptools.HttpParserCallbackError as e:
                if isinstance(e.__context__, _HeaderOverflow) or self._hdr_bytes > limits.max_header_bytes:
                    self._refuse_headers()
                else:
                    self.send_400_response("Invalid HTTP request received.")
            except httptools.HttpParserError:
                self.send_400_response("Invalid HTTP request received.")
            except httptools.HttpParserUpgrade:
                self.send_400_response("Upgrade not supported.")

        def send_400_response(self, msg: str) -> None:
            """Unparsable request: our plain error format (not uvicorn's), then close."""
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

        # The parser callbacks below are uvicorn's own, merged with our header accounting and deadlines
        # and trimmed of what our config never uses (root_path, limit_concurrency): they run for every
        # request, and each saved call is latency (see docs/performance.md).
        def on_message_begin(self) -> None:
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self._hdr_bytes = 0
            now = self.loop.time()
            if not self._hdr_deadline:
                self._hdr_deadline = now + read_header_timeout
            self._read_deadline = now + read_timeout

        def on_url(self, url: bytes) -> None:
            n = self._hdr_bytes = self._hdr_bytes + len(url)
            if n > max_header_bytes:
                raise _HeaderOverflow
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            n = self._hdr_bytes = self._hdr_bytes + len(name) + len(value) + 4
            if n > max_header_bytes:
                raise _HeaderOverflow
            name = name.lower()
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            self._hdr_deadline = 0.0
            parser = self.parser
            http_version = parser.get_http_version()
            if parser.should_upgrade() and self._should_upgrade():
                return
            parsed = httptools.parse_url(self.url)
            raw_path = parsed.path
            path = raw_path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            self.scope = scope = {
                "type": "http",
                "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                "http_version": http_version,
                "server": self.server,
                "client": self.client,
                "scheme": self.scheme,
                "root_path": "",
                "headers": self.headers,
                "state": self.app_state.copy(),
                "method": parser.get_method().decode("ascii"),
                "path": path,
                "raw_path": raw_path,
                "query_string": parsed.query or b"",
            }
            existing = self.cycle
            self.cycle = cycle = RequestResponseCycle(
                scope=scope,  # type: ignore[arg-type]
                transport=self._corked,  # the response's head and body leave in one write
                flow=self.flow,
                logger=self.logger,
                access_logger=self.access_logger,
                access_log=False,
                default_headers=self.server_state.default_headers,
                message_event=asyncio.Event(),
                expect_100_continue=self.expect_100_continue,
                keep_alive=http_version != "1.0" and parser.should_keep_alive(),
                on_response=self.on_response_complete,
            )
            if existing is None or existing.response_complete:
                self._start_asgi_task(cycle, self.app)
            else:  # pipelined request: it waits for the one before it
                self.flow.pause_reading()
                self.pipeline.appendleft((cycle, self.app))

        def on_message_complete(self) -> None:
            self._read_deadline = 0.0
            super().on_message_complete()

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(limits.write_timeout, self._expire, "write")

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None

        def _expire(self, what: str) -> None:
            if self.transport is None or self.transport.is_closing():
                return
            log.debug("closing connection: %s timeout", what)
            if what == "write":
                self.transport.abort()
            else:
                self.transport.close()

    return BbdHttpProtocol


class BbdServer(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the supervisor's loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Any, limits: HttpLimits, idle_timeout: float, graceful: float) -> BbdServer:
    config = uvicorn.Config(
        app,
        http=make_protocol(limits),
        loop="none",
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        timeout_keep_alive=max(1, int(idle_timeout)),
        timeout_graceful_shutdown=max(1, int(graceful)),
        backlog=4096,
    )
    return BbdServer(config)
