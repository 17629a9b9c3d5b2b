"""Starting and stopping a bbd the bench owns (temp socket, free loopback port, its own session), finding
the executable, and scanning its log afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

from .status import sync_status

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout holding ops/


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def find_bbd(explicit: str | None) -> str:
    if explicit:
        return explicit
    cands = [
        os.path.join(os.path.dirname(sys.executable), "bbd"),
        os.path.join(REPO, ".venv", "bin", "bbd"),
    ]
    w = shutil.which("bbd")
    if w:
        cands.append(w)
    for c in cands:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise SystemExit("bench: bbd not found (use --bbd PATH)")


class StartedDaemon:
    """A bbd we start, stdout and stderr to a log file beside its socket.

    By default in its own session, so stopping it can sweep its whole process group and a Ctrl-C in the
    terminal reaches only the bench. With scheduler autogroups (Linux) a session is also its own CPU-share
    group: ``own_session=False`` keeps the daemon in the caller's group, as ``ops/cost`` measures it.
    """

    def __init__(
        self,
        bbd: str,
        shards: int,
        extra: list[str],
        host_id: str | None = None,
        port: int | None = None,
        peers: str | None = None,
        workdir: str | None = None,
        own_session: bool = True,
    ) -> None:
        """``port`` None: a free loopback port (0: the daemon picks one); ``workdir`` None: a fresh temp dir
        for its socket and log."""
        self.dir = workdir or tempfile.mkdtemp(prefix="bbb", dir="/tmp")  # short: UDS paths max out at 107 bytes
        self.sock = os.path.join(self.dir, "s")
        self.log_path = os.path.join(self.dir, "log")
        if port is None:
            port = free_ports(1)[0]
        self.host_id = host_id
        self.own_session = own_session
        self.argv = [
            bbd,
            "--dev",
            "--rate-limit=0",
            f"--shards={shards}",
            f"--uds={self.sock}",
            f"--tcp=127.0.0.1:{port}",
        ]
        if host_id:
            self.argv.append(f"--host-id={host_id}")
        if peers:
            self.argv.append(f"--peers={peers}")
        self.argv += extra
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=own_session
        )

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bbd exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                st = sync_status(self.sock, 1.0)
                shards = st.get("shards")
                if not isinstance(shards, list) or (shards and all(s.get("up") for s in shards)):
                    return st
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"bbd not ready in {timeout:g} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        rc: int | None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.sweep()
            self.proc.wait(5)
            rc = None
        self._log.close()
        return rc

    def sweep(self) -> None:
        """SIGKILL whatever is left of this daemon's process group (its own session: only what we started);
        outside its own session, the supervisor alone."""
        try:
            if self.own_session:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def scan_log(path: str, limit: int = 40) -> dict:
    lines: list[str] = []
    n: Counter[str] = Counter()
    try:
        with open(path, "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                for lvl in ("ERROR", "CRITICAL", "WARNING", "Traceback"):
                    if lvl in line:
                        n[lvl] += 1
                        if len(lines) < limit:
                            lines.append(line)
                        break
    except OSError:
        pass
    return {"counts": dict(n), "lines": lines}
