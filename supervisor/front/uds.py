"""Binding a Unix socket: never steal a live daemon's socket, never open it wider than asked, not even briefly.

Permissions are applied without a window: the socket file is born 0600 (bound under umask 0177), then
gets its group (``--uds-group``) and only then its final mode (``--uds-mode``), and ``listen()`` comes
last. Until ``listen()`` nobody can connect at all (``connect`` is refused), and the group is set before
the mode widens, so at no moment can anyone outside the final owner and group reach the daemon. Any
failure to apply them is fatal: a socket with other permissions than configured is never served.
"""

from __future__ import annotations

import os
import socket
import stat


class BindError(Exception):
    pass


def bind_uds(path: str, mode: int = 0o600, gid: int | None = None, backlog: int = 4096) -> socket.socket:
    """Bind ``path`` with ``mode`` (and group ``gid``), then listen. An existing socket that answers is a
    live daemon: refuse."""
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
    step = ""
    try:
        if gid is not None:
            step = f"set group {gid}"
            os.chown(path, -1, gid)  # still 0600 here: the group gains access only with the mode below
        step = f"set mode {mode:04o}"
        os.chmod(path, mode)
    except OSError as e:
        sock.close()
        remove_uds(path)
        raise BindError(f"cannot {step}: {e.strerror or e}") from e
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
