"""uvicorn, in-process, on the Unix socket we bound ourselves, with our own HTTP protocol.

uvicorn owns the listening socket, the connection set and the graceful shutdown; each connection is
a ``supervisor.front.protocol.HttpProtocol`` (handed over through uvicorn's ``http=`` setting), which
answers ``/api/v1`` itself and runs every other path through the Starlette app. The daemon's
Go-style HTTP flags map onto it (documented in docs/configuration.md):

* ``--http-max-header-bytes`` → request line + headers above the cap get ``431`` and the connection closes
* ``--http-read-header-timeout`` → a connection that has not sent complete headers in time is closed
  (also an idle new connection that sends nothing: slowloris protection)
* ``--http-read-timeout`` → a request (headers + body) not fully read in time is closed
* ``--http-write-timeout`` → a response the client does not drain in time aborts the connection
* ``--http-idle-timeout`` → uvicorn's ``timeout_keep_alive``

``BbdServer`` keeps uvicorn from installing signal handlers: the supervisor's loop owns signals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import uvicorn

from bigbunny.supervisor.front.protocol import HttpLimits, make_protocol

__all__ = ["BbdServer", "HttpLimits", "make_server"]


class BbdServer(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the supervisor's loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Any, limits: HttpLimits, idle_timeout: float, graceful: float, max_body: int) -> BbdServer:
    """``app`` is ``supervisor.front.admin.App``: its ``api`` answers /api/v1, the app itself the rest."""
    config = uvicorn.Config(
        app,
        http=make_protocol(limits, app.api, max_body),
        loop="none",
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=True,  # RFC 9110 §6.6.1; the /api/v1 answers carry the same value (responses.clock)
        proxy_headers=False,
        timeout_keep_alive=max(1, int(idle_timeout)),
        timeout_graceful_shutdown=max(1, int(graceful)),
        backlog=4096,
    )
    return BbdServer(config)
