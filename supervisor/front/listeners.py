"""The sockets the daemon serves and what each one answers (SPEC §15, issue 13).

* the **data** socket (``--uds``, mode ``--uds-mode``, group ``--uds-group``): the API, ``/status``,
  ``/healthz``, ``/readyz`` — and, when no admin socket is configured, the admin routes as well;
* the **admin** socket (``--admin-uds``, always 0600): ``/internal/*``, ``/metrics``, ``/status``,
  ``/healthz``, ``/readyz``; no API;
* the **metrics** listener (``--metrics-addr``, TCP): ``/metrics``, ``/healthz``, ``/readyz`` only.

Admin routes are recognised by path prefix (every ``/internal/`` route, whatever is added there later),
not by a list, so a new operator endpoint can never leak onto the data socket by omission.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from bigbunny.config import Config, format_addr
from bigbunny.supervisor.front.uds import BindError, bind_uds, remove_uds

__all__ = ["ADMIN", "DATA", "EVERYTHING", "METRICS", "Listener", "Surface", "close_listeners", "open_listeners"]

log = logging.getLogger("bbd.listeners")

_PROBES = frozenset({"/metrics", "/healthz", "/readyz"})


def admin_only(path: str) -> bool:
    """Routes that move to ``--admin-uds`` when it is set: every ``/internal/`` route, and ``/metrics``."""
    return path.startswith("/internal/") or path == "/metrics"


@dataclass(frozen=True)
class Surface:
    """What one listener answers: the ``/api/v1`` API or not, and which of the other routes."""

    name: str
    api: bool
    keep: Callable[[str], bool]


EVERYTHING = Surface("data", True, lambda path: True)  # the data socket without --admin-uds
DATA = Surface("data", True, lambda path: not admin_only(path))
ADMIN = Surface("admin", False, lambda path: True)
METRICS = Surface("metrics", False, lambda path: path in _PROBES)


@dataclass(frozen=True)
class Listener:
    """A bound, listening socket and its surface; ``path`` is the Unix socket file to remove at exit."""

    sock: socket.socket
    surface: Surface
    path: str | None


def bind_tcp(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host:port`` ("" = every interface); BindError if it cannot be bound."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BindError(e.strerror or str(e)) from e
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise BindError(e.strerror or str(e)) from e
    sock.setblocking(False)
    return sock


def open_listeners(cfg: Config) -> list[Listener]:
    """Bind every configured socket, data socket first. On a failure, close what was bound and raise
    BindError with the one-line start-up message."""
    out: list[Listener] = []
    try:
        try:
            sock = bind_uds(cfg.uds, cfg.uds_mode, cfg.uds_group)
        except BindError as e:
            raise BindError(f"failed to listen on UDS {cfg.uds}: {e}") from e
        out.append(Listener(sock, DATA if cfg.admin_uds else EVERYTHING, cfg.uds))
        if cfg.admin_uds:
            try:
                sock = bind_uds(cfg.admin_uds)
            except BindError as e:
                raise BindError(f"failed to listen on admin UDS {cfg.admin_uds}: {e}") from e
            out.append(Listener(sock, ADMIN, cfg.admin_uds))
        if cfg.metrics_addr:
            try:
                sock = bind_tcp(*cfg.metrics_addr)
            except BindError as e:
                raise BindError(f"failed to listen on metrics address {format_addr(cfg.metrics_addr)}: {e}") from e
            out.append(Listener(sock, METRICS, None))
            log.info("metrics on http://%s/metrics", format_addr(sock.getsockname()[:2]))
    except BindError:
        close_listeners(out)
        raise
    return out


def close_listeners(listeners: list[Listener]) -> None:
    """Close every socket and remove the socket files (idempotent)."""
    for lst in listeners:
        lst.sock.close()
        if lst.path is not None:
            remove_uds(lst.path)
