"""Blocking GETs over a node's Unix socket, chiefly ``/status`` and what the bench derives from it (role
waits, shard restarts, a short summary for reports)."""

from __future__ import annotations

import json
import socket
import time

from .http1 import Response, parse_response


def sync_get(path: str, target: str, timeout: float = 2.0) -> Response:
    """GET ``target`` over a fresh connection to the Unix socket ``path`` (blocking).
    Raises OSError or ValueError, ProtocolError on a malformed answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: bbd\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = parse_response(buf)
            if r is not None:
                return r
            chunk = s.recv(65536)
            if not chunk:
                r = parse_response(buf)
                if r is None:
                    raise ValueError(f"{target}: connection closed early")
                continue
            buf += chunk
        raise ValueError(f"{target}: timeout")


def sync_status(path: str, timeout: float = 2.0) -> dict:
    """GET /status over a fresh connection (blocking). Raises OSError/ValueError."""
    st, _, body, _ = sync_get(path, "/status", timeout)
    if st != 200:
        raise ValueError(f"/status answered {st}")
    return json.loads(body)


def shard_restarts(st: dict) -> int | None:
    shards = st.get("shards")
    if not isinstance(shards, list):
        return None
    return sum(int(s.get("restarts", 0)) for s in shards if isinstance(s, dict))


def try_status(path: str, timeout: float = 2.0) -> dict | None:
    try:
        return sync_status(path, timeout)
    except (OSError, ValueError):
        return None


def status_brief(st: dict | None) -> dict | None:
    if st is None:
        return None
    return {
        k: st.get(k)
        for k in (
            "host_id",
            "role",
            "leader_epoch",
            "store_count",
            "queue_length",
            "replication_dropped",
            "replication_fail_count",
        )
    }


def wait_role(path: str, want: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = try_status(path, 1.0)
        if st is not None and st.get("role") == want:
            return st
        time.sleep(0.02)
    raise RuntimeError(f"{path}: role never became {want} in {timeout:g} s (last status: {status_brief(st)})")
