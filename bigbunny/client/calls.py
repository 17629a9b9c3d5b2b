"""What each client call sends and how its answer is read, with no I/O: both clients run these.

A :class:`Call` is one request (method, path, headers, body) plus the function that turns a 2xx
:class:`Response` into the call's result; :func:`outcome` applies it, or builds the exception of a
failed answer. Each public call of the clients is one builder below: its signature and docstring are the
method's (``BBClient.create`` is ``create`` run by the blocking client, ``AsyncBBClient.create`` the same
awaited), so a call is defined once for both clients.

Every builder takes keyword-only ``timeout`` (seconds; ``None``: the client's default), and every write
``replicas`` (0 or 1: answer only once the secondary has the write, SPEC §15).
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from bigbunny.client.errors import BBError, NotReplicated, error_for

T = TypeVar("T")

NOT_REPLICATED = "NotReplicated"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names; first value wins
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Snapshot:
    body: bytes
    ttl: int | None
    content_type: str | None


@dataclass(frozen=True, slots=True)
class Modify:
    lock_id: str
    body: bytes
    ttl: int | None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API request and how to read its success. ``replicas`` is the durability the caller asked for."""

    method: str
    path: str
    parse: Callable[[Response], T]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    replicas: int = 0
    timeout: float | None = None  # None: the client's default
    error_message: Callable[[Response], str] | None = None  # None: the answer's body is the message


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def outcome(call: Call[T], resp: Response) -> T:
    """The call's result for a 2xx answer; otherwise raise the :class:`BBError` subclass it means."""
    if 200 <= resp.status < 300:
        result = call.parse(resp)
        if call.replicas and resp.headers.get("bigbunny-warning") == NOT_REPLICATED:
            raise NotReplicated(result, resp.headers)
        return result
    raise answer_error(resp, call.error_message)


def answer_error(resp: Response, message: Callable[[Response], str] | None = None) -> BBError:
    return error_for(
        resp.status,
        message(resp) if message is not None else resp.text.rstrip("\r\n"),
        resp.headers.get("bigbunny-error-code") or None,
        int_or_none(resp.headers.get("retry-after")),
        resp.headers,
    )


# --- result readers ---------------------------------------------------------------------------
def _text(resp: Response) -> str:
    return resp.text


def _none(resp: Response) -> None:
    return None


def _json_object(resp: Response) -> dict[str, Any]:
    result: dict[str, Any] = _json.loads(resp.body)
    return result


def _snapshot(resp: Response) -> Snapshot:
    return Snapshot(
        resp.body, int_or_none(resp.headers.get("bigbunny-not-valid-after")), resp.headers.get("content-type")
    )


def _modify(resp: Response) -> Modify:
    ttl = int_or_none(resp.headers.get("bigbunny-not-valid-after"))
    return Modify(resp.headers.get("bigbunny-lock-id", ""), resp.body, ttl)


# --- request builders -------------------------------------------------------------------------
def _seg(segment: str) -> str:
    return quote(segment, safe="")


def _write_headers(ttl: int | None, replicas: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    if replicas not in (0, 1):
        raise ValueError(f"replicas must be 0 or 1, not {replicas!r}")
    headers = dict(extra or {})
    if ttl is not None:
        headers["BigBunny-Not-Valid-After"] = str(ttl)
    if replicas:
        headers["BigBunny-Replicas"] = "1"
    return headers


def dumps(obj: Any) -> bytes:
    return _json.dumps(obj, separators=(",", ":")).encode()


def create(data: bytes = b"", ttl: int | None = None, *, replicas: int = 0, timeout: float | None = None) -> Call[str]:
    """Create a blob store; returns its ID. ``ttl`` in seconds (default: the daemon's)."""
    return Call("POST", "/api/v1/create", _text, _write_headers(ttl, replicas), data, replicas, timeout)


def create_by_name(
    name: str,
    data: bytes = b"",
    ttl: int | None = None,
    reuse: bool = False,
    json: bool = False,
    *,
    replicas: int = 0,
    timeout: float | None = None,
) -> Call[str]:
    """Create a store bound to ``name``; returns its ID. ``reuse``: return the existing store's ID instead
    of ``NameExists``; ``json``: the body is a JSON document (e.g. a counter spec)."""
    extra = {"BigBunny-Reuse-If-Exists": "true"} if reuse else {}
    if json:
        extra["Content-Type"] = "application/json"
    headers = _write_headers(ttl, replicas, extra)
    return Call("POST", f"/api/v1/create-by-name/{_seg(name)}", _text, headers, data, replicas, timeout)


def create_counter(
    value: int = 0,
    min: int | None = None,
    max: int | None = None,
    ttl: int | None = None,
    name: str | None = None,
    reuse: bool = False,
    *,
    replicas: int = 0,
    timeout: float | None = None,
) -> Call[str]:
    """Create a counter (optionally bounded, optionally named); returns its ID."""
    spec: dict[str, Any] = {"type": "counter", "value": value}
    if min is not None:
        spec["min"] = min
    if max is not None:
        spec["max"] = max
    if name is not None:
        return create_by_name(name, dumps(spec), ttl, reuse, True, replicas=replicas, timeout=timeout)
    headers = _write_headers(ttl, replicas, {"Content-Type": "application/json"})
    return Call("POST", "/api/v1/create", _text, headers, dumps(spec), replicas, timeout)


def snapshot(id: str, *, timeout: float | None = None) -> Call[Snapshot]:
    """Read a store: its body, remaining TTL and content type."""
    return Call("POST", f"/api/v1/snapshot/{_seg(id)}", _snapshot, timeout=timeout)


def begin_modify(id: str, *, timeout: float | None = None) -> Call[Modify]:
    """Lock a store for a read-modify-write; returns the lock ID, the body and the TTL."""
    return Call("POST", f"/api/v1/begin-modify/{_seg(id)}", _modify, timeout=timeout)


def complete_modify(
    id: str, lock_id: str, data: bytes, ttl: int | None = None, *, replicas: int = 0, timeout: float | None = None
) -> Call[None]:
    """Write the new body under the lock from :func:`begin_modify`, and release it."""
    headers = _write_headers(ttl, replicas, {"BigBunny-Lock-ID": lock_id})
    return Call("POST", f"/api/v1/complete-modify/{_seg(id)}", _none, headers, data, replicas, timeout)


def cancel_modify(id: str, lock_id: str, *, timeout: float | None = None) -> Call[None]:
    """Release the lock without writing (idempotent)."""
    headers = {"BigBunny-Lock-ID": lock_id}
    return Call("POST", f"/api/v1/cancel-modify/{_seg(id)}", _none, headers, timeout=timeout)


def update(
    id: str, data: bytes, ttl: int | None = None, *, replicas: int = 0, timeout: float | None = None
) -> Call[None]:
    """Replace a store's body (or a counter's value, as ``{"value": N}``) without a lock."""
    headers = _write_headers(ttl, replicas)
    return Call("POST", f"/api/v1/update/{_seg(id)}", _none, headers, data, replicas, timeout)


def set_counter(
    id: str, value: int, ttl: int | None = None, *, replicas: int = 0, timeout: float | None = None
) -> Call[None]:
    """Set a counter's value."""
    return update(id, dumps({"value": value}), ttl, replicas=replicas, timeout=timeout)


def _counter_step(op: str, id: str, delta: int, ttl: int | None, replicas: int, timeout: float | None) -> Call[Any]:
    headers = _write_headers(ttl, replicas)
    return Call("POST", f"/api/v1/{op}/{_seg(id)}", _json_object, headers, dumps({"delta": delta}), replicas, timeout)


def increment(
    id: str, delta: int = 1, ttl: int | None = None, *, replicas: int = 0, timeout: float | None = None
) -> Call[dict[str, Any]]:
    """Add ``delta`` to a counter; returns the counter (``value``, ``version``, bounds)."""
    return _counter_step("increment", id, delta, ttl, replicas, timeout)


def decrement(
    id: str, delta: int = 1, ttl: int | None = None, *, replicas: int = 0, timeout: float | None = None
) -> Call[dict[str, Any]]:
    """Subtract ``delta`` from a counter; returns the counter (``value``, ``version``, bounds)."""
    return _counter_step("decrement", id, delta, ttl, replicas, timeout)


def delete(id: str, *, replicas: int = 0, timeout: float | None = None) -> Call[None]:
    """Delete a store (idempotent)."""
    headers = _write_headers(None, replicas)
    return Call("POST", f"/api/v1/delete/{_seg(id)}", _none, headers, b"", replicas, timeout)


def delete_by_name(name: str, *, replicas: int = 0, timeout: float | None = None) -> Call[None]:
    """Delete a named store and its name."""
    headers = _write_headers(None, replicas)
    return Call("POST", f"/api/v1/delete-by-name/{_seg(name)}", _none, headers, b"", replicas, timeout)


def lookup(name: str, *, timeout: float | None = None) -> Call[str]:
    """The store ID bound to ``name``."""
    return Call("POST", f"/api/v1/lookup-id-by-name/{_seg(name)}", _text, timeout=timeout)


def status(*, timeout: float | None = None) -> Call[dict[str, Any]]:
    """The node's ``GET /status`` document."""
    return Call("GET", "/status", _json_object, timeout=timeout)


def customers(top: int = 10, *, timeout: float | None = None) -> Call[dict[str, Any]]:
    """Operator view: the customers with the most memory, stores, tombstones, rate-limit rejections."""
    return Call("GET", f"/internal/customers?top={int(top)}", _json_object, timeout=timeout)


def promote(*, timeout: float | None = None) -> Call[str]:
    """Operator: make this node PRIMARY."""
    return Call("POST", "/internal/promote", _text, timeout=timeout)


def release_lock(id: str, *, timeout: float | None = None) -> Call[str]:
    """Operator: release a stuck modify lock."""
    return Call("POST", f"/internal/release-lock/{_seg(id)}", _text, timeout=timeout)


def _report_error(resp: Response) -> str:
    try:
        return str(_json.loads(resp.body)["error"])
    except (ValueError, KeyError, TypeError):
        return resp.text.rstrip("\r\n")


def reload(*, timeout: float | None = None) -> Call[dict[str, Any]]:
    """Operator: re-read the daemon's config file and apply what can change live; returns the report. A
    refused reload raises with the reason (``InvalidRequest`` ``InvalidConfig``, ``Conflict`` ``NoConfigFile``)."""
    return Call("POST", "/internal/reload", _json_object, timeout=timeout, error_message=_report_error)


# The public calls, in the order the clients list them.
CALLS = (
    create,
    create_by_name,
    create_counter,
    snapshot,
    begin_modify,
    complete_modify,
    cancel_modify,
    update,
    set_counter,
    increment,
    decrement,
    delete,
    delete_by_name,
    lookup,
    status,
    customers,
    promote,
    release_lock,
    reload,
)
