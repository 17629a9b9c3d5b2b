"""Parsing of the request parts the supervisor owns: path segment, headers, TTL, body."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

Receive = Callable[[], Awaitable[dict[str, Any]]]

MAX_TTL = 9_223_372_036  # beyond this the reference's TTL × 10⁹ ns wraps int64 (§13 fix 8: refuse)
BAD_TTL = object()  # sentinel: the header parsed but its value is refused
_INT_RE = re.compile(rb"[+-]?[0-9]+")
_TRUE = {b"1", b"true", b"yes", b"y", b"on"}


class Disconnected(Exception):
    """The client went away while we were reading its body."""


# header name → its position in Headers' raw values (names arrive lower-cased from uvicorn)
_WANTED = {
    b"x-customer-id": 0,
    b"bigbunny-not-valid-after": 1,
    b"bigbunny-lock-id": 2,
    b"content-type": 3,
    b"bigbunny-reuse-if-exists": 4,
    b"x-bb-no-forward": 5,
}


class Headers:
    """The handful of request headers bbd reads; for repeated headers the first value counts."""

    __slots__ = ("customer", "ttl", "lock", "reuse", "content_type", "no_forward")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        found: list[bytes | None] = [None] * len(_WANTED)
        for k, v in raw:
            i = _WANTED.get(k)
            if i is not None and found[i] is None:
                found[i] = v
        customer, ttl, lock, content_type, reuse, no_forward = found
        self.customer: bytes | None = customer
        self.ttl: bytes | None = ttl
        self.lock: bytes | None = lock.strip(b" \t") if lock else lock
        self.reuse = reuse is not None and reuse.strip().lower() in _TRUE
        self.content_type: bytes | None = content_type
        self.no_forward = no_forward is not None and no_forward.strip().lower() == b"true"


def decode_segment(raw: bytes) -> str:
    """Percent-decode one path segment (store IDs are used verbatim after decoding). Bytes that are
    not UTF-8 become U+FFFD: such a segment is never a valid ID or name, and it stays encodable."""
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    return raw.decode("utf-8", "replace")


def parse_ttl(raw: bytes | None, creating: bool) -> Any:
    """TTL header (§2.9 + §13 fix 8): None = absent/unparsable, an int, or BAD_TTL."""
    if raw is None:
        return None
    v = raw.strip()
    if not _INT_RE.fullmatch(v):
        return None
    n = int(v)
    if n >= 1 << 63 or n < -(1 << 63):  # does not parse as int64: same as absent
        return None
    if n > MAX_TTL or (creating and n <= 0):
        return BAD_TTL
    return n


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """Read the request body; stops buffering past ``limit`` and reports (b"", True) then."""
    msg = await receive()
    if msg["type"] != "http.request":
        raise Disconnected
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body", False):
        return (body, False) if len(body) <= limit else (b"", True)
    chunks, size = [body], len(body)
    while True:
        if size > limit:
            return b"", True
        msg = await receive()
        if msg["type"] != "http.request":
            raise Disconnected
        chunk = msg.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not msg.get("more_body", False):
            break
    if size > limit:
        return b"", True
    return b"".join(chunks), False
