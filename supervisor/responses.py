"""Every HTTP answer is built here: the one place where an ``ApiError`` becomes a response.

Pure ASGI ``send`` calls with pre-encoded header lists: the hot routes never build Starlette
Request/Response objects. ``content-length`` is always given, so uvicorn never falls back to chunked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bigbunny.errors import ApiError

Send = Callable[[dict[str, Any]], Awaitable[None]]
Header = tuple[bytes, bytes]

TEXT = b"text/plain"
OCTETS = b"application/octet-stream"
JSON = b"application/json"
_TEXT_ERR = (b"content-type", b"text/plain; charset=utf-8")
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_cache: dict[ApiError, tuple[list[Header], bytes]] = {}


def _error_parts(err: ApiError) -> tuple[list[Header], bytes]:
    parts = _cache.get(err)
    if parts is None:
        body = (err.message + "\n").encode()
        headers = [_TEXT_ERR, _NOSNIFF, (b"content-length", str(len(body)).encode())]
        if err.code:
            headers.append((b"bigbunny-error-code", err.code.encode()))
        if err.retry_after is not None:
            headers.append((b"retry-after", str(err.retry_after).encode()))
        if err.lock_state_unknown:
            headers.append((b"bigbunny-lock-state", b"unknown"))
        parts = (headers, body)
        if len(_cache) < 256:  # errors are module constants; the bound only guards ad-hoc ones
            _cache[err] = parts
    return parts


async def send_error(send: Send, err: ApiError, extra: Iterable[Header] = ()) -> int:
    """Answer ``err``; returns the status (the dispatcher counts it for /metrics)."""
    headers, body = _error_parts(err)
    if extra:
        headers = [*headers, *extra]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return err.status


async def send_ok(send: Send, body: bytes, content_type: bytes | None, extra: Iterable[Header] = ()) -> int:
    """200 with ``body``; an empty body carries no Content-Type (SPEC §2.1). Returns 200."""
    headers = [(b"content-length", str(len(body)).encode())]
    if body and content_type:
        headers.append((b"content-type", content_type))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return 200


async def send_method_not_allowed(send: Send, allow: bytes) -> int:
    return await send_error(send, ApiError(405, "Method Not Allowed"), [(b"allow", allow)])
