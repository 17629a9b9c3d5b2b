"""Shared fixtures: real ``bbd`` daemons on short temporary sockets, always stopped and checked.

A daemon is started as its own process (``python -m bigbunny``), waited for with a bounded poll of
``/status``, and stopped with SIGTERM: a test fails if the daemon does not exit 0 within 10 s or
leaves any child process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import psutil
import pytest

from bigbunny.client import BBClient, BBConnectionError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, *flags: str, shards: int = 2, dev: bool = True, env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="bbt", dir="/tmp")  # short: UDS paths max out at 107 bytes
        self.sock = os.path.join(self.dir, "s")
        self.log_path = os.path.join(self.dir, "log")
        argv = [sys.executable, "-m", "bigbunny"]
        if dev:
            argv.append("--dev")
        argv += [f"--uds={self.sock}", f"--tcp=127.0.0.1:{free_port()}", f"--shards={shards}", *flags]
        self.argv = argv
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.children: list[psutil.Process] = []

    def wait_ready(self, timeout: float = 20.0) -> Daemon:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bbd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                st = BBClient(self.sock, timeout=1.0).status()
                if st.get("shards") and all(s["up"] for s in st["shards"]):
                    self.children = psutil.Process(self.proc.pid).children(recursive=True)
                    return self
            except (BBConnectionError, OSError, ValueError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"bbd not ready in {timeout} s:\n{self.log()}")

    def client(self, customer: str = "c1", **kw: object) -> BBClient:
        return BBClient(self.sock, customer=customer, **kw)  # type: ignore[arg-type]

    def status(self) -> dict:
        return BBClient(self.sock).status()

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def shard_pids(self) -> list[int]:
        return [s["pid"] for s in self.status()["shards"]]

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM; returns the exit code. Kills (and reports) anything that outlives the timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            rc = -999
        alive = [c for c in self.children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        for c in alive:
            c.kill()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if alive:
            raise AssertionError(f"children left after shutdown: {[c.pid for c in alive]}")
        return rc


@pytest.fixture
def daemon_factory() -> Iterator:
    """Start daemons with custom flags; each must exit 0 on SIGTERM with no children left."""
    started: list[Daemon] = []

    def make(*flags: str, ready: bool = True, **kw: object) -> Daemon:
        d = Daemon(*flags, **kw)  # type: ignore[arg-type]
        started.append(d)
        return d.wait_ready() if ready else d

    yield make
    failures = []
    for d in started:
        rc = d.stop()
        if rc != 0:
            failures.append(f"bbd exited {rc} on SIGTERM:\n{d.log()[-3000:]}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture(scope="module")
def node() -> Iterator[Daemon]:
    """One shared dev daemon per test module (rate limit off); tests use distinct customers."""
    d = Daemon("--rate-limit=0").wait_ready()
    yield d
    rc = d.stop()
    assert rc == 0, f"bbd exited {rc} on SIGTERM:\n{d.log()[-3000:]}"
