"""systemd readiness and watchdog over ``$NOTIFY_SOCKET`` (sd_notify protocol, a few datagrams).

``READY=1`` once the Unix socket is bound and every shard answers; ``WATCHDOG=1`` every
``WATCHDOG_USEC``/2 but only while every shard answers (a wedged node gets restarted by systemd);
``STOPPING=1`` when shutdown starts. Without ``$NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("bbd.systemd")


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        self.address = env.get("NOTIFY_SOCKET", "")
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, message: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(message.encode(), addr)
            return True
        except OSError as e:
            log.warning("sd_notify %r failed: %s", message.split("\n", 1)[0], e)
            return False
