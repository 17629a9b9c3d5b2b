"""A fake daemon for the client and CLI unit tests: a threaded HTTP/1.1 server on a Unix socket that records
every request and answers canned responses (in order; a plain 200 when none is queued)."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Canned:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    drop_after: bool = False  # close the connection after answering, without announcing it


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake.connections += 1

    def _answer(self) -> None:
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake.requests.append(Req(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        canned = fake.responses.pop(0) if fake.responses else Canned()
        time.sleep(canned.delay)
        self.send_response(canned.status)
        for name, value in canned.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(canned.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(canned.body)
        self.close_connection = canned.drop_after

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    fake: FakeDaemon

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up makes our late answer fail: expected, not news


class FakeDaemon:
    def __init__(self, path: str) -> None:
        self.path = path
        self.requests: list[Req] = []
        self.responses: list[Canned] = []
        self.connections = 0
        self._server = _Server(path, _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def answer(self, status: int = 200, body: bytes | str = b"", **headers: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.responses.append(Canned(status, {k.replace("_", "-"): v for k, v in headers.items()}, data))

    def error(self, status: int, message: str, code: str | None = None, retry_after: int | None = None) -> None:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if code:
            headers["BigBunny-Error-Code"] = code
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.responses.append(Canned(status, headers, message.encode() + b"\n"))

    @property
    def last(self) -> Req:
        return self.requests[-1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()
