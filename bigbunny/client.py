"""A small typed client for the public HTTP API (SPEC §2) over the daemon's Unix socket. Stdlib only.

One keep-alive connection is reused across calls; a reused connection that the server closed while
idle is reopened once, transparently. Non-2xx answers raise :class:`BBError`; socket failures raise
:class:`BBConnectionError`. With ``retries > 0`` errors that mean "not applied, try again" (§2.11) are
retried, honouring ``Retry-After`` (capped at 2 s). Not thread-safe: use one client per thread.

    with BBClient("/tmp/bbd.sock", customer="acme") as bb:
        sid = bb.create(b"hello", ttl=60)
        assert bb.snapshot(sid).body == b"hello"
"""

from __future__ import annotations

import http.client
import json as _json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

# Error codes meaning "not applied, try again" (SPEC §2.11); 429s that carry Retry-After are retried too.
RETRYABLE_CODES = frozenset(
    "StoreLocked LockStateUnknown LeaderChanged JoinSyncing NameCreating StoreUnavailable RateLimited".split()
)
MAX_RETRY_SLEEP = 2.0
_LOCKED_BACKOFF = 0.05  # first StoreLocked back-off; doubles per attempt (locks last 500 ms by default)
_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class BBError(Exception):
    """A non-2xx answer: ``status``, one-line ``message``, optional ``code`` and ``retry_after``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"BBError({self.status}, {self.message!r}, code={self.code!r})"


class BBConnectionError(Exception):
    """The daemon could not be reached (or the connection failed mid-request)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names; first value wins
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class Snapshot:
    body: bytes
    ttl: int | None
    content_type: str | None


@dataclass(frozen=True)
class Modify:
    lock_id: str
    body: bytes
    ttl: int | None


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


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def _seg(segment: str) -> str:
    return quote(segment, safe="")


def _ttl_headers(ttl: int | None) -> dict[str, str]:
    return {} if ttl is None else {"BigBunny-Not-Valid-After": str(ttl)}


def _dumps(obj: Any) -> bytes:
    return _json.dumps(obj, separators=(",", ":")).encode()


class BBClient:
    """Client for one daemon socket and one customer. ``last_warning`` holds the ``BigBunny-Warning``
    of the most recent successful call (``None`` if it had none)."""

    def __init__(
        self,
        uds: str = "/tmp/bbd.sock",
        customer: str = "default",
        timeout: float = 5.0,
        retries: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.uds = uds
        self.customer = customer
        self.timeout = timeout
        self.retries = retries
        self.last_warning: str | None = None
        self._sleep = sleep
        self._conn: _UnixHTTPConnection | None = None

    # --- plumbing -----------------------------------------------------------------------------
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> BBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Response:
        """Send one request; any HTTP status is returned. Socket failures raise BBConnectionError."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = _UnixHTTPConnection(self.uds, self.timeout)
            reused = self._conn.sock is not None
            try:
                payload = body if body or method not in ("GET", "HEAD") else None
                self._conn.request(method, path, body=payload, headers=dict(headers or {}))
                resp = self._conn.getresponse()
                data = resp.read()
            except _STALE_CONNECTION as e:
                self.close()
                if reused and attempt == 0:
                    continue  # the server closed our idle keep-alive connection: reconnect once
                raise BBConnectionError(self._describe(e)) from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise BBConnectionError(self._describe(e)) from e
            hdrs: dict[str, str] = {}
            for name, value in resp.getheaders():
                hdrs.setdefault(name.lower(), value)
            if resp.will_close:
                self.close()
            return Response(resp.status, hdrs, data)
        raise AssertionError("unreachable")

    def _describe(self, e: BaseException) -> str:
        if isinstance(e, TimeoutError):
            return f"request to {self.uds} timed out after {self.timeout:g}s"
        detail = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        return f"unix {self.uds}: {detail}"

    def _call(self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Response:
        hdrs = dict(headers or {})
        if path.startswith("/api/"):
            hdrs["X-Customer-ID"] = self.customer
        attempt = 0
        while True:
            resp = self.request(method, path, hdrs, body)
            if 200 <= resp.status < 300:
                self.last_warning = resp.headers.get("bigbunny-warning")
                return resp
            err = BBError(
                resp.status,
                resp.text.rstrip("\r\n"),
                resp.headers.get("bigbunny-error-code") or None,
                _int_or_none(resp.headers.get("retry-after")),
                resp.headers,
            )
            if attempt >= self.retries or not _retryable(err):
                raise err
            self._sleep(_retry_delay(err, attempt))
            attempt += 1

    # --- stores -------------------------------------------------------------------------------
    def create(self, data: bytes = b"", ttl: int | None = None) -> str:
        return self._call("POST", "/api/v1/create", _ttl_headers(ttl), data).text

    def create_by_name(
        self, name: str, data: bytes = b"", ttl: int | None = None, reuse: bool = False, json: bool = False
    ) -> str:
        headers = _ttl_headers(ttl)
        if reuse:
            headers["BigBunny-Reuse-If-Exists"] = "true"
        if json:
            headers["Content-Type"] = "application/json"
        return self._call("POST", f"/api/v1/create-by-name/{_seg(name)}", headers, data).text

    def create_counter(
        self,
        value: int = 0,
        min: int | None = None,
        max: int | None = None,
        ttl: int | None = None,
        name: str | None = None,
        reuse: bool = False,
    ) -> str:
        spec: dict[str, Any] = {"type": "counter", "value": value}
        if min is not None:
            spec["min"] = min
        if max is not None:
            spec["max"] = max
        if name is not None:
            return self.create_by_name(name, _dumps(spec), ttl, reuse=reuse, json=True)
        headers = {"Content-Type": "application/json", **_ttl_headers(ttl)}
        return self._call("POST", "/api/v1/create", headers, _dumps(spec)).text

    def snapshot(self, id: str) -> Snapshot:
        resp = self._call("POST", f"/api/v1/snapshot/{_seg(id)}")
        ttl = _int_or_none(resp.headers.get("bigbunny-not-valid-after"))
        return Snapshot(resp.body, ttl, resp.headers.get("content-type"))

    def begin_modify(self, id: str) -> Modify:
        resp = self._call("POST", f"/api/v1/begin-modify/{_seg(id)}")
        ttl = _int_or_none(resp.headers.get("bigbunny-not-valid-after"))
        return Modify(resp.headers.get("bigbunny-lock-id", ""), resp.body, ttl)

    def complete_modify(self, id: str, lock_id: str, data: bytes, ttl: int | None = None) -> None:
        headers = {"BigBunny-Lock-ID": lock_id, **_ttl_headers(ttl)}
        self._call("POST", f"/api/v1/complete-modify/{_seg(id)}", headers, data)

    def cancel_modify(self, id: str, lock_id: str) -> None:
        self._call("POST", f"/api/v1/cancel-modify/{_seg(id)}", {"BigBunny-Lock-ID": lock_id})

    def update(self, id: str, data: bytes, ttl: int | None = None) -> None:
        self._call("POST", f"/api/v1/update/{_seg(id)}", _ttl_headers(ttl), data)

    def set_counter(self, id: str, value: int, ttl: int | None = None) -> None:
        self.update(id, _dumps({"value": value}), ttl)

    def increment(self, id: str, delta: int = 1, ttl: int | None = None) -> dict[str, Any]:
        return self._counter_op("increment", id, delta, ttl)

    def decrement(self, id: str, delta: int = 1, ttl: int | None = None) -> dict[str, Any]:
        return self._counter_op("decrement", id, delta, ttl)

    def _counter_op(self, op: str, id: str, delta: int, ttl: int | None) -> dict[str, Any]:
        resp = self._call("POST", f"/api/v1/{op}/{_seg(id)}", _ttl_headers(ttl), _dumps({"delta": delta}))
        result: dict[str, Any] = _json.loads(resp.body)
        return result

    def delete(self, id: str) -> None:
        self._call("POST", f"/api/v1/delete/{_seg(id)}")

    def delete_by_name(self, name: str) -> None:
        self._call("POST", f"/api/v1/delete-by-name/{_seg(name)}")

    def lookup(self, name: str) -> str:
        return self._call("POST", f"/api/v1/lookup-id-by-name/{_seg(name)}").text

    # --- node and operator endpoints ----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = _json.loads(self._call("GET", "/status").body)
        return result

    def customers(self, top: int = 10) -> dict[str, Any]:
        """Operator view: the customers with the most memory, stores, tombstones, rate-limit rejections."""
        result: dict[str, Any] = _json.loads(self._call("GET", f"/internal/customers?top={int(top)}").body)
        return result

    def promote(self) -> str:
        return self._call("POST", "/internal/promote").text

    def release_lock(self, id: str) -> str:
        return self._call("POST", f"/internal/release-lock/{_seg(id)}").text

    def reload(self) -> dict[str, Any]:
        """Re-read the daemon's config file: its JSON report; a refused reload raises BBError with the reason."""
        resp = self.request("POST", "/internal/reload")
        try:
            report: dict[str, Any] = _json.loads(resp.body)
        except ValueError:
            report = {"error": resp.text.rstrip("\r\n")}
        if not 200 <= resp.status < 300:
            raise BBError(resp.status, str(report.get("error", "")), resp.headers.get("bigbunny-error-code"))
        return report


def _retryable(err: BBError) -> bool:
    return err.code in RETRYABLE_CODES or (err.status == 429 and err.retry_after is not None)


def _retry_delay(err: BBError, attempt: int) -> float:
    if err.retry_after is not None:
        return min(float(max(err.retry_after, 0)), MAX_RETRY_SLEEP)
    return min(_LOCKED_BACKOFF * 2.0**attempt, MAX_RETRY_SLEEP)
