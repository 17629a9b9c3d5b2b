"""Plain helpers shared by the test modules (fixtures live in ``conftest.py``).

Import as ``from helpers import ...``: pytest puts ``tests/`` (the rootdir conftest's folder, which has
no ``__init__.py``) on ``sys.path``, the same way the modules already ``from conftest import Daemon``.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from bigbunny.client import BBClient, Response

REPO = Path(__file__).resolve().parents[1]  # the repository's root
SID_RE = re.compile(r"v1:0:[A-Za-z0-9_-]{59}")
T0 = 1_000_000.0


class FakeClock:
    """A wall clock the test moves by hand (``StoreEngine(clock=...)``)."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# --- polling ---------------------------------------------------------------------------------------------
def wait_until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    """Poll ``pred`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def wait_for_status(fn: Callable[[], Response], status: int, timeout: float = 4.0) -> Response:
    """Poll ``fn()`` until it answers ``status`` (bounded); returns the last answer either way."""
    deadline = time.monotonic() + timeout
    while True:
        r = fn()
        if r.status == status or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def gone(p: psutil.Process) -> bool:
    """The process has exited (or is a zombie)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- HTTP API requests through the client (any status) -------------------------------------------------
def call(
    node,
    path: str,
    customer: str | None = None,
    body: bytes = b"",
    headers: dict | None = None,
    method: str = "POST",
    timeout: float = 5.0,
) -> Response:
    """One request on a fresh connection to ``node.sock``; ``customer`` None sends no X-Customer-ID."""
    h = {} if customer is None else {"X-Customer-ID": customer}
    h.update(headers or {})
    with BBClient(node.sock, timeout=timeout) as c:
        return c.request(method, path, h, body)


def seg(s: str) -> str:
    """Percent-encode a path segment (store ID or name)."""
    return quote(s, safe="")


def snap(node, customer: str, sid: str, headers: dict | None = None) -> Response:
    return call(node, f"/api/v1/snapshot/{seg(sid)}", customer, headers=headers)


def assert_error(
    r: Response, status: int, message: str, code: str | None = None, retry_after: int | None = None
) -> None:
    """Exact error format (§2.1): text/plain; charset=utf-8, nosniff, body = message + newline."""
    got = (r.status, r.body, r.headers.get("bigbunny-error-code"), r.headers.get("retry-after"))
    want = (status, (message + "\n").encode(), code, None if retry_after is None else str(retry_after))
    assert got == want, f"{got!r} != {want!r}"
    assert r.headers.get("content-type") == "text/plain; charset=utf-8"
    assert r.headers.get("x-content-type-options") == "nosniff"


def assert_empty_ok(r: Response) -> None:
    """Empty 200 (§2.1): Content-Length 0, no Content-Type."""
    assert (r.status, r.body, r.headers.get("content-length")) == (200, b"", "0"), (r.status, r.body)
    assert "content-type" not in r.headers


def assert_sid(r: Response) -> str:
    """Store-ID 200 (§2.1): text/plain, no trailing newline; returns the ID."""
    assert r.status == 200, (r.status, r.body)
    assert r.headers.get("content-type") == "text/plain"
    assert SID_RE.fullmatch(r.text), r.body
    return r.text


# --- raw HTTP/1.1 on the Unix socket ----------------------------------------------------------------------
def raw_exchange(sock_path: str, data: bytes, timeout: float = 5.0, close_write: bool = False) -> bytes:
    """Send raw bytes and read until the server closes (or the timeout: then whatever arrived)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    out = b""
    try:
        try:
            s.sendall(data)
            if close_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed (e.g. 413 on a huge body): read the answer
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return out


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream into HTTP responses (Content-Length framed; 1xx skipped)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"truncated response: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.setdefault(k.strip().lower(), v.strip())
        n = int(headers.get("content-length", "0"))
        body, data = rest[:n], rest[n:]
        if status >= 200:
            out.append((status, headers, body))
    return out


def raw_one(sock_path: str, data: bytes, **kw) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the one response (status, lower-cased headers, body)."""
    responses = parse_responses(raw_exchange(sock_path, data, **kw))
    assert len(responses) == 1, responses
    return responses[0]


def req(
    method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", close: bool = True, length: bool = True
) -> bytes:
    """A raw request: headers as given (repeats allowed), then Content-Length and Connection: close."""
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *(f"{k}: {v}" for k, v in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(method: str, path: str, headers: list[tuple[str, str]], chunks: list[bytes]) -> bytes:
    """A raw request with a chunked body, one chunk per item (an empty item would end the body)."""
    head = req(method, path, [*headers, ("Transfer-Encoding", "chunked")], length=False)
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


# --- ops/ scripts ----------------------------------------------------------------------------------------
def run_script(argv: list[str], timeout: float, cwd: str) -> subprocess.CompletedProcess[str]:
    """Run a script to completion; fail the test, showing the tail of its output, unless it exits 0."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p
