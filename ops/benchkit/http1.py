"""HTTP/1.1 client side of the bench: response parsing, request bytes, the asyncio keep-alive
connection of the load workers (``Conn``) and a blocking one for the probes (``SyncConn``)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import cast
from urllib.parse import quote

now_ns = time.monotonic_ns  # CLOCK_MONOTONIC: comparable across processes on Linux


class ProtocolError(Exception):
    pass


class ConnClosed(Exception):
    pass


# (status, headers, body, keep_alive): header names lower-cased, first value wins; the body de-chunked;
# keep_alive False when the server closes the connection after this answer. A plain tuple, always
# unpacked by the callers: it is built once per response on the workers' hot path, where a NamedTuple
# costs ~150 ns more.
Response = tuple[int, dict[bytes, bytes], bytes, bool]


def parse_response(buf: bytearray) -> Response | None:
    """Parse one response at the start of ``buf``; None if incomplete. Consumes it from ``buf``."""
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        if len(buf) > 65536:
            raise ProtocolError("response head too large")
        return None
    lines = bytes(buf[:i]).split(b"\r\n")
    sl = lines[0]
    if not sl.startswith(b"HTTP/1.") or len(sl) < 12:
        raise ProtocolError(f"bad status line {sl[:40]!r}")
    try:
        status = int(sl[9:12])
    except ValueError:
        raise ProtocolError(f"bad status line {sl[:40]!r}") from None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, val = line.partition(b":")
        if not sep:
            raise ProtocolError("bad header line")
        name = name.strip().lower()
        if name not in headers:
            headers[name] = val.strip()
    start = i + 4
    te = headers.get(b"transfer-encoding")
    if te is not None and b"chunked" in te.lower():
        chunks = bytearray()
        pos = start
        while True:
            j = buf.find(b"\r\n", pos)
            if j < 0:
                return None
            try:
                n = int(bytes(buf[pos:j]).split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if n == 0:
                k = buf.find(b"\r\n\r\n", j)  # trailers (normally none) end with an empty line
                if k < 0:
                    return None
                end = k + 4
                break
            if len(buf) < j + 2 + n + 2:
                return None
            chunks += buf[j + 2 : j + 2 + n]
            pos = j + 2 + n + 2
        body = bytes(chunks)
    else:
        cl = headers.get(b"content-length")
        if cl is None:
            if 100 <= status < 200 or status in (204, 304):
                cl = b"0"
            else:
                raise ProtocolError("response without Content-Length")
        try:
            n = int(cl)
        except ValueError:
            raise ProtocolError("bad Content-Length") from None
        end = start + n
        if len(buf) < end:
            return None
        body = bytes(buf[start:end])
    del buf[:end]
    keep = headers.get(b"connection", b"").lower() != b"close" and sl.startswith(b"HTTP/1.1")
    return status, headers, body, keep


class Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.sent_at = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        w = self.waiter
        if w is None or w.done():
            return
        try:
            r = parse_response(self.buf)
        except ProtocolError as e:
            self.waiter = None
            w.set_exception(e)
            self.abort()
            return
        if r is not None:
            self.waiter = None
            _, _, _, keep_alive = r
            if not keep_alive:
                self.closed = True  # server will close: reconnect before the next request
            w.set_result(r)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            self.waiter = None
            w.set_exception(ConnClosed("connection closed by server"))

    def request(self, data: bytes) -> asyncio.Future:
        fut = self.loop.create_future()
        if self.closed or self.transport is None:
            fut.set_exception(ConnClosed("connection closed by server"))
            return fut
        self.waiter = fut
        self.sent_at = now_ns()
        self.transport.write(data)
        return fut

    def expire(self, deadline_ns: int) -> None:
        """Called by the watchdog: fail the outstanding request if it was sent before deadline_ns."""
        w = self.waiter
        if w is not None and not w.done() and self.sent_at < deadline_ns:
            self.waiter = None
            w.set_exception(TimeoutError())
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


async def connect(loop: asyncio.AbstractEventLoop, path: str, timeout: float) -> Conn:
    _, proto = await asyncio.wait_for(loop.create_unix_connection(lambda: Conn(loop), path), timeout)
    return proto


def build_req(path: str, customer: str, body: bytes = b"", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bbd\r\nX-Customer-ID: {customer}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def qid(store_id: str) -> str:
    return quote(store_id, safe=":")


def status_kind(st: int, hd: dict, body: bytes) -> str:
    code = hd.get(b"bigbunny-error-code")
    if code:
        what = code.decode(errors="replace")
    else:
        what = body[:60].decode(errors="replace").strip() or "(empty body)"
    kind = f"{st} {what}"
    ra = hd.get(b"retry-after")
    if ra is not None:
        kind += f" (Retry-After {ra.decode(errors='replace')})"
    return kind


class SyncConn:
    """Blocking keep-alive HTTP/1.1 client over a Unix socket (lag probe, read-back checks)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, data: bytes) -> tuple[int, dict, bytes]:
        """Raises OSError (TimeoutError included), ConnClosed or ProtocolError; the connection is then closed."""
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
            except OSError:
                s.close()
                raise
            self.sock, self.buf = s, bytearray()
        try:
            self.sock.sendall(data)
            deadline = time.monotonic() + self.timeout
            while True:
                r = parse_response(self.buf)
                if r is not None:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer in {self.timeout:g} s")
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnClosed("connection closed by server")
                self.buf += chunk
        except BaseException:
            self.close()
            raise
        st, hd, body, keep = r
        if not keep:
            self.close()
        return st, hd, body


def exc_kind(e: BaseException) -> str:
    if isinstance(e, (TimeoutError, TimeoutError)):
        return "timeout"
    return f"{type(e).__name__}: {e}"
