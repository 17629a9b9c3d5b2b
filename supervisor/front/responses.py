"""Every HTTP answer of ``/api/v1`` is built here, from pre-encoded byte templates.

An answer leaves the supervisor in one of two ways, behind the same three calls (``ok``, ``error``,
``raw``): written to a client connection as one byte string (``supervisor.front.protocol``), or captured
as status, headers and body for a relayed request, to travel back to the node that relayed it
(``Capture``). This is the one place where an ``ApiError`` becomes an answer.

Header order matches what clients saw from uvicorn: ``date`` first, then ``content-length``,
``content-type`` and the endpoint's own headers; ``connection: close`` last when the connection ends.
An empty 200 body carries no Content-Type (SPEC §2.1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple

from bigbunny.errors import ApiError

Header = tuple[bytes, bytes]

TEXT = b"content-type: text/plain\r\n"
OCTETS = b"content-type: application/octet-stream\r\n"
JSON = b"content-type: application/json\r\n"
NONE = b""
CLOSE = b"connection: close\r\n"
DEGRADED = b"bigbunny-warning: DegradedWrite\r\n"
NOT_REPLICATED = b"bigbunny-warning: NotReplicated\r\n"
ALLOW_POST = b"allow: POST\r\n"
METHOD_NOT_ALLOWED = ApiError(405, "Method Not Allowed")

STATUS_LINE: dict[int, bytes] = {}
for _code in range(100, 600):
    try:
        _phrase = HTTPStatus(_code).phrase.encode()
    except ValueError:
        _phrase = b""
    STATUS_LINE[_code] = b"HTTP/1.1 %d %s\r\n" % (_code, _phrase)


# --- the Date header (RFC 9110 §6.6.1): one value, refreshed at most once a second ----------------------
class _Clock:
    __slots__ = ("second", "line")

    def __init__(self) -> None:
        self.second = -1
        self.line = b""
        self.refresh()

    def refresh(self) -> None:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"


clock = _Clock()


# --- rendering ------------------------------------------------------------------------------------------
class ErrorParts(NamedTuple):
    """An error answer, rendered once per error: the status line, the header lines that follow
    ``date``, the body, and the same headers as (name, value) pairs."""

    status_line: bytes
    header_lines: bytes
    body: bytes
    headers: list[Header]


_error_cache: dict[ApiError, ErrorParts] = {}


def error_parts(err: ApiError) -> ErrorParts:
    """The rendered parts of ``err``'s answer (cached)."""
    parts = _error_cache.get(err)
    if parts is None:
        body = (err.message + "\n").encode()
        headers: list[Header] = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"x-content-type-options", b"nosniff"),
            (b"content-length", str(len(body)).encode()),
        ]
        if err.code:
            headers.append((b"bigbunny-error-code", err.code.encode()))
        if err.retry_after is not None:
            headers.append((b"retry-after", str(err.retry_after).encode()))
        if err.lock_state_unknown:
            headers.append((b"bigbunny-lock-state", b"unknown"))
        lines = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        parts = ErrorParts(STATUS_LINE[err.status], lines, body, headers)
        if len(_error_cache) < 256:  # errors are module constants; the bound only guards ad-hoc ones
            _error_cache[err] = parts
    return parts


# A whole 200 answer: % (date line, body length, content-type line or b"", extra header lines,
# CLOSE or b"", body). The content-type line is one of those above, left out for an empty body.
OK_TEMPLATE = b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n%s%s%s\r\n%s"


def render_error(err: ApiError, extra: bytes, close: bool, head: bool) -> bytes:
    status, lines, body, _ = error_parts(err)
    return b"%s%s%s%s%s\r\n%s" % (status, clock.line, lines, extra, CLOSE if close else b"", b"" if head else body)


def render_raw(status: int, headers: list[Any], body: bytes, close: bool, head: bool) -> bytes:
    """An answer relayed from the primary: its headers verbatim (they carry content-length)."""
    lines = b"".join(bytes(k) + b": " + bytes(v) + b"\r\n" for k, v in headers if bytes(k).lower() != b"connection")
    line = STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status
    return b"%s%s%s%s\r\n%s" % (line, clock.line, lines, CLOSE if close else b"", b"" if head else body)


def _pairs(lines: bytes) -> list[Header]:
    out = []
    for line in lines.split(b"\r\n"):
        if line:
            k, _, v = line.partition(b": ")
            out.append((k, v))
    return out


class Capture:
    """The answer sink of a relayed request: hands ``(status, headers, body)`` to ``deliver`` once."""

    __slots__ = ("deliver",)

    def __init__(self, deliver: Callable[[int, list[Header], bytes], None]) -> None:
        self.deliver = deliver

    def ok(self, req: Any, body: bytes, ctype: bytes, extra: bytes) -> None:
        headers = [(b"content-length", str(len(body)).encode())]
        if body and ctype:
            headers += _pairs(ctype)
        self.deliver(200, headers + _pairs(extra), body)

    def error(self, req: Any, err: ApiError, extra: bytes = b"") -> None:
        parts = error_parts(err)
        body, headers = parts.body, parts.headers
        self.deliver(err.status, headers + _pairs(extra), body)

    def raw(self, req: Any, status: int, headers: list[Any], body: bytes) -> None:
        self.deliver(status, [(bytes(k), bytes(v)) for k, v in headers], body)
