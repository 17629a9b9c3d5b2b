"""Shared fixtures: real ``bbd`` daemons on short temporary sockets, always stopped and checked.

A daemon is started as its own process (``python -m bigbunny``), waited for with a bounded poll of
``/status``, and stopped with SIGTERM: a test fails if the daemon does not exit 0 within 10 s or
leaves any child process behind.
"""

from __future__ import annotations

import itertools
import os
import re
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
from fakedaemon import FakeDaemon
from helpers import gone

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
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def shard_pids(self) -> list[int]:
        return [s["pid"] for s in self.status()["shards"]]

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self, timeout: float = 10.0, keep_log: bool = False) -> int:
        """SIGTERM; returns the exit code. Kills (and reports) anything that outlives the timeout.
        ``keep_log`` leaves the temp dir (and the log) for the caller to read, then ``cleanup``."""
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
        if not keep_log:
            self.cleanup()
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
        rc = d.stop(keep_log=True)
        if rc != 0:
            failures.append(f"bbd exited {rc} on SIGTERM:\n{d.log()[-3000:]}")
        d.cleanup()
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture(scope="module")
def node() -> Iterator[Daemon]:
    """One shared dev daemon per test module (rate limit off); tests use distinct customers."""
    d = Daemon("--rate-limit=0").wait_ready()
    yield d
    rc = d.stop(keep_log=True)
    log = d.log()
    d.cleanup()
    assert rc == 0, f"bbd exited {rc} on SIGTERM:\n{log[-3000:]}"


@pytest.fixture(scope="module")
def lnode() -> Iterator[Daemon]:
    """A second shared dev daemon whose modify locks last 30 s, for tests that need a lock to stay live
    across several requests (the default 500 ms could run out on a loaded machine)."""
    d = Daemon("--rate-limit=0", "--lock-timeout=30s").wait_ready()
    yield d
    rc = d.stop()
    assert rc == 0, f"bbd exited {rc} on SIGTERM:\n{d.log()[-3000:]}"


_cust_seq = itertools.count()


@pytest.fixture
def cust(request: pytest.FixtureRequest) -> str:
    """A customer ID unique to this test (valid per ^[A-Za-z0-9_-]{1,64}$)."""
    return f"c{next(_cust_seq)}_{re.sub(r'[^A-Za-z0-9_-]', '_', request.node.name)}"[:64]


# --- two-node clusters ---------------------------------------------------------------------------------


class ClusterNode:
    """One node of a two-node loopback cluster: fixed host ID and inter-node port, so it can be
    killed, paused and restarted as the same cluster member. ``d`` is the current daemon process."""

    def __init__(
        self, host_id: str, port: int, peer: str, flags: tuple[str, ...], dev: bool, env: dict[str, str] | None
    ) -> None:
        self.host_id = host_id
        self.port = port
        self.peer = peer  # "id@127.0.0.1:port"
        self.flags = flags
        self.dev = dev
        self.env = env
        self.history: list[Daemon] = []  # every process started for this node, for teardown
        self.killed: set[int] = set()  # pids ended by the test on purpose (no clean exit expected)
        self.stopped: set[int] = set()  # pids already stopped (and checked) through stop()
        self.rundirs: set[str] = set()

    @property
    def d(self) -> Daemon:
        return self.history[-1]

    def start(self, ready: bool = True, env: dict[str, str] | None = None) -> ClusterNode:
        if env is not None:
            self.env = env
        d = Daemon(
            f"--host-id={self.host_id}",
            f"--tcp=127.0.0.1:{self.port}",
            f"--peers={self.peer}",
            *self.flags,
            dev=self.dev,
            env=self.env,
        )
        self.history.append(d)
        if ready:
            d.wait_ready()
        return self

    def running(self) -> bool:
        return bool(self.history) and self.d.proc.poll() is None

    def status(self) -> dict:
        return self.d.status()

    def client(self, customer: str = "c1", **kw: object) -> BBClient:
        return self.d.client(customer, **kw)

    def kill(self) -> None:
        """SIGKILL the supervisor; its shards exit on their own (bounded wait, then killed)."""
        d = self.d
        kids = psutil.Process(d.proc.pid).children(recursive=True)
        for k in kids:  # the shards' ipc directory cannot be removed by a SIGKILLed supervisor
            try:
                self.rundirs |= {
                    os.path.dirname(c.laddr) for c in k.net_connections("unix") if "/bbd-" in (c.laddr or "")
                }
            except psutil.Error:
                pass
        self.killed.add(d.proc.pid)
        d.proc.kill()
        d.proc.wait(5)
        deadline = time.monotonic() + 5
        while not all(gone(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for k in kids:
            if not gone(k):
                k.kill()

    def pause(self) -> None:
        self.d.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.d.proc.send_signal(signal.SIGCONT)

    def stop(self) -> tuple[int, str]:
        """SIGTERM the current process (see Daemon.stop): its exit code (0 = clean) and its log."""
        self.stopped.add(self.d.proc.pid)
        log = self.d.log()  # Daemon.stop removes the log file
        return self.d.stop(), log

    def restart(self, env: dict[str, str] | None = None) -> ClusterNode:
        if self.running():
            rc, log = self.stop()
            assert rc == 0, f"{self.host_id} exited {rc} on SIGTERM:\n{log[-3000:]}"
        return self.start(env=env)

    def close(self) -> list[str]:
        """Teardown: every process that the test did not kill must exit 0 on SIGTERM."""
        failures = []
        for d in self.history:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)  # a paused node must be able to shut down
            if d.proc.pid in self.stopped:
                continue
            log = d.log()
            rc = d.stop()
            if rc != 0 and d.proc.pid not in self.killed:
                failures.append(f"{self.host_id} exited {rc} on SIGTERM:\n{log[-3000:]}")
        for r in self.rundirs:
            shutil.rmtree(r, ignore_errors=True)
        return failures


class ClusterRig:
    """node1 (the first host: initial PRIMARY) and node2 on loopback, each peering the other."""

    def __init__(
        self, *flags: str, dev: bool = True, env: dict[str, str] | None = None, env2: dict[str, str] | None = None
    ) -> None:
        p1, p2 = free_port(), free_port()
        self.n1 = ClusterNode("node1", p1, f"node2@127.0.0.1:{p2}", flags, dev, env)
        self.n2 = ClusterNode("node2", p2, f"node1@127.0.0.1:{p1}", flags, dev, env if env2 is None else env2)

    def start(self, converge: bool = True, timeout: float = 20.0) -> ClusterRig:
        """Start both (node1 first); with ``converge``, wait for node1 PRIMARY and node2 SECONDARY."""
        self.n1.start(ready=False)
        self.n2.start(ready=False)
        self.n1.d.wait_ready()
        self.n2.d.wait_ready()
        if converge:
            self.wait_roles("PRIMARY", "SECONDARY", timeout)
        return self

    def wait_roles(self, r1: str, r2: str, timeout: float) -> tuple[dict, dict]:
        deadline = time.monotonic() + timeout
        while True:
            s1, s2 = self.n1.status(), self.n2.status()
            if s1["role"] == r1 and s2["role"] == r2:
                return s1, s2
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"roles not {r1}/{r2} after {timeout} s: {s1['role']}/{s2['role']}\n"
                    f"--- node1\n{self.n1.d.log()[-2000:]}\n--- node2\n{self.n2.d.log()[-2000:]}"
                )
            time.sleep(0.02)

    def close(self) -> list[str]:
        return self.n1.close() + self.n2.close()


@pytest.fixture
def cluster() -> Iterator:
    """Start two-node clusters: ``cluster(*flags, dev=True, env=None, env2=None, converge=True)``.
    Teardown SIGTERMs every process the test did not kill on purpose and requires exit 0."""
    rigs: list[ClusterRig] = []

    def make(*flags: str, converge: bool = True, **kw: object) -> ClusterRig:
        rig = ClusterRig(*flags, **kw)  # type: ignore[arg-type]
        rigs.append(rig)
        return rig.start(converge)

    yield make
    failures = [f for rig in rigs for f in rig.close()]
    if failures:
        pytest.fail("\n".join(failures))


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    """The fake daemon of the client and CLI unit tests (tests/fakedaemon.py) on a short temporary socket."""
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="bbt")
    daemon = FakeDaemon(os.path.join(tmp, "s"))
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
