"""Binding the public Unix socket: never steal a live daemon's socket, never leave it world-writable."""

from __future__ import annotations

import logging
import os
import socket
import stat

log = logging.getLogger("bbd.uds")


class BindError(Exception):
    pass


def bind_uds(path: str, backlog: int = 4096) -> socket.socket:
    """Bind ``path`` with mode 0600. An existing socket that answers is a live daemon: refuse."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISSOCK(st.st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(0.5)
            try:
                probe.connect(path)
            except OSError:
                pass  # stale: nobody listens
            else:
                raise BindError("address already in use (a running daemon answers on it)")
            finally:
                probe.close()
        elif stat.S_ISDIR(st.st_mode):
            raise BindError("is a directory")
        try:
            os.unlink(path)
        except OSError as e:
            raise BindError(str(e)) from e
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # born 0600: no window in which others could connect
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise BindError(e.strerror or str(e)) from e
    finally:
        os.umask(old)
    try:
        os.chmod(path, 0o600)
    except OSError as e:
        log.warning("chmod 0600 %s failed: %s", path, e)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def remove_uds(path: str) -> None:
    """Unlink our socket file at exit (a non-socket file there is not ours: leave it)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass
