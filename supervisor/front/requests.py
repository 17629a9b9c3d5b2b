"""The request as the API handlers see it, and parsing of the parts the supervisor owns: path segment,
headers, TTL."""

from __future__ import annotations

import re
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from bigbunny import errors

MAX_TTL = 9_223_372_036  # beyond this the reference's TTL × 10⁹ ns wraps int64 (§13 fix 8: refuse)
BAD_TTL = object()  # sentinel: the header parsed but its value is refused
TTL_TOO_LONG = object()  # sentinel: the header parsed but is above --max-ttl
_INT_RE = re.compile(rb"[+-]?[0-9]+")
_TRUE = {b"1", b"true", b"yes", b"y", b"on"}


# header name → its position in ``ApiRequest.wanted`` (names arrive lower-cased from the parser)
WANTED = {
    b"x-customer-id": 0,
    b"bigbunny-not-valid-after": 1,
    b"bigbunny-lock-id": 2,
    b"content-type": 3,
    b"bigbunny-reuse-if-exists": 4,
    b"x-bb-no-forward": 5,
    b"bigbunny-replicas": 6,
}


def pick_headers(raw: list[tuple[bytes, bytes]]) -> list[bytes | None]:
    """The values of the ``WANTED`` headers in ``raw``; for a repeated header the first counts."""
    found: list[bytes | None] = [None] * len(WANTED)
    for k, v in raw:
        i = WANTED.get(k)
        if i is not None and found[i] is None:
            found[i] = v
    return found


class Responder(Protocol):
    """Where a request's answer goes: a client connection, or the capture of a relayed request."""

    def ok(self, req: ApiRequest, body: bytes, ctype: bytes, extra: bytes) -> None: ...

    def error(self, req: ApiRequest, err: Any, extra: bytes = b"") -> None: ...

    def raw(self, req: ApiRequest, status: int, headers: list[Any], body: bytes) -> None: ...


class ApiHandler(Protocol):
    """What answers ``/api/v1`` requests on a listener: ``supervisor.front.api.StoreApi``, or
    ``supervisor.front.admin.NoApi`` where the listener does not serve the API."""

    def handle(self, req: ApiRequest) -> None: ...


class ApiRequest:
    """One ``/api/v1`` request, read whole: ``body`` ≤ ``--max-store-size``, else ``too_large`` (and ``body``
    cut to the limit + 1 bytes). ``out`` takes its one answer."""

    __slots__ = (
        "method",
        "path",
        "headers",
        "wanted",
        "body",
        "too_large",
        "relayed",
        "out",
        "label",
        "t0",
        "keep_alive",
        "replicas",
    )

    def __init__(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        wanted: list[bytes | None],
        body: bytes,
        too_large: bool,
        out: Responder,
        relayed: bool = False,
    ) -> None:
        self.method = method
        self.path = path  # raw path, no query
        self.headers = headers
        self.wanted = wanted
        self.body = body
        self.too_large = too_large
        self.out = out
        self.relayed = relayed  # arrived from the peer: never relayed again
        self.label = ""  # metrics endpoint label, set by the dispatcher
        self.t0 = 0.0
        self.keep_alive = True  # the connection stays open after the answer
        self.replicas = 0  # BigBunny-Replicas: 1 = answer once the secondary has the write

    @property
    def customer(self) -> bytes | None:
        return self.wanted[0]

    @property
    def ttl(self) -> bytes | None:
        return self.wanted[1]

    @property
    def lock(self) -> bytes | None:
        lock = self.wanted[2]
        return lock.strip(b" \t") if lock else lock

    @property
    def content_type(self) -> bytes | None:
        return self.wanted[3]

    @property
    def reuse(self) -> bool:
        v = self.wanted[4]
        return v is not None and v.strip().lower() in _TRUE

    @property
    def no_forward(self) -> bool:
        v = self.wanted[5]
        return v is not None and v.strip().lower() == b"true"


def parse_replicas(raw: bytes) -> int:
    """``BigBunny-Replicas`` (SPEC §15): 0 or 1; anything else is refused."""
    v = raw.strip(b" \t")
    if v == b"1":
        return 1
    if v == b"0":
        return 0
    raise errors.INVALID_REPLICAS


def decode_segment(raw: bytes) -> str:
    """Percent-decode one path segment (store IDs are used verbatim after decoding). Bytes that are
    not UTF-8 become U+FFFD: such a segment is never a valid ID or name, and it stays encodable."""
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    return raw.decode("utf-8", "replace")


def parse_ttl(raw: bytes | None, creating: bool, limit: int = MAX_TTL) -> Any:
    """TTL header (§2.9 + §13 fix 8): None = absent/unparsable, an int, BAD_TTL, or TTL_TOO_LONG when it
    is above ``limit`` (``--max-ttl``)."""
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
    if n > limit:
        return TTL_TOO_LONG
    return n
