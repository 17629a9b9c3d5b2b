"""The process model (SPEC §7.7, §8, §14): signals, shard crashes and hangs, the socket, start-up errors.

Every test drives a real ``bbd`` (supervisor + shard worker processes) over its real Unix socket.
Waiting is always a bounded poll; no fixed sleep is used for synchronisation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import psutil
import pytest
from conftest import Daemon
from helpers import gone, wait_until

from bigbunny.client import BBClient, BBConnectionError, BBError
from bigbunny.sharding import shard_of

ENV_KEY = "ab" * 32  # a 32-byte production key (hex) for the env-configured daemons


# --- helpers ---------------------------------------------------------------------------------------
def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def shard_up(d: Daemon, index: int, old_pid: int) -> dict | None:
    """The slot's status once it is up again with a new process, else None."""
    s = d.status()["shards"][index]
    return s if s["up"] and s["pid"] not in (0, old_pid) else None


def populate(d: Daemon, customer: str, n: int = 40) -> tuple[BBClient, dict[int, dict[str, bytes]]]:
    """Create ``n`` blobs; returns the client and {shard: {store ID: body}} (placement via shard_of)."""
    c = d.client(customer)
    by_shard: dict[int, dict[str, bytes]] = {0: {}, 1: {}}
    for i in range(n):
        body = f"{customer}-{i}".encode()
        sid = c.create(body)
        by_shard[shard_of(sid, 2)][sid] = body
    assert by_shard[0] and by_shard[1], "round-robin placement should use both shards"
    return c, by_shard


def assert_intact(c: BBClient, stores: dict[str, bytes]) -> None:
    for sid, body in stores.items():
        assert c.snapshot(sid).body == body


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SERIALD_")}


def run_bbd(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``bbd`` expecting it to exit on its own (start-up errors); socket in a fresh temp dir."""
    d = tempfile.mkdtemp(prefix="bbf", dir="/tmp")
    sock = os.path.join(d, "s")
    try:
        res = subprocess.run(
            [sys.executable, "-m", "bigbunny", f"--uds={sock}", "--tcp=127.0.0.1:0", "--shards=2", *flags],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env() if env is None else env,
        )
        assert not os.path.exists(sock), "a refused start must not leave a socket behind"
        return res
    finally:
        os.rmdir(d)


# --- signals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(daemon_factory, sig: signal.Signals) -> None:
    d = daemon_factory("--rate-limit=0")
    kids = descendants(d.proc.pid)
    shard_pids = set(d.shard_pids())
    assert shard_pids <= {k.pid for k in kids} and len(shard_pids) == 2
    idle = d.client("sig")
    idle.create(b"x")  # leaves an idle keep-alive connection open: it must not hold up shutdown
    assert stat.S_ISSOCK(os.lstat(d.sock).st_mode)

    t0 = time.monotonic()
    d.proc.send_signal(sig)
    rc = d.proc.wait(10)
    elapsed = time.monotonic() - t0
    idle.close()
    assert rc == 0, d.log()[-2000:]
    assert elapsed < 10
    assert not os.path.exists(d.sock), "socket file must be removed at exit"
    assert [k.pid for k in kids if not gone(k)] == [], "children outlived the daemon"


def marked(mark: str) -> list[psutil.Process]:
    """Live processes (any parent) whose environment carries ``BBT_MARK=mark``."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("BBT_MARK") == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_sigterm_during_startup(daemon_factory) -> None:
    """Once the socket is bound, a SIGTERM must still lead to a clean exit, even before the daemon is ready."""
    mark = f"startup-{os.getpid()}-{time.monotonic_ns()}"
    d = daemon_factory("--rate-limit=0", ready=False, env={**os.environ, "BBT_MARK": mark})
    wait_until(lambda: os.path.exists(d.sock) or d.proc.poll() is not None, 20, "the socket to be bound", 0.001)
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(10)
    assert rc == 0, d.log()[-2000:]
    assert not os.path.exists(d.sock)
    assert marked(mark) == [], "a process of the stopped daemon is still running"


def test_sigterm_while_a_shard_is_stopped(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=0")
    _, by_shard = populate(d, "stopped", 10)
    kids = descendants(d.proc.pid)
    victim = psutil.Process(d.shard_pids()[0])
    outcome: list[object] = []

    def in_flight() -> None:  # a request stuck on the stopped shard when SIGTERM arrives
        cl = BBClient(d.sock, customer="stopped", timeout=15.0)
        try:
            outcome.append(cl.snapshot(next(iter(by_shard[0]))))
        except (BBError, BBConnectionError) as e:
            outcome.append(e)

    os.kill(victim.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: victim.status() == psutil.STATUS_STOPPED, 5, "the shard to be stopped")
        th = threading.Thread(target=in_flight)
        th.start()
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(10)
        assert time.monotonic() - t0 < 10
        assert rc == 0, d.log()[-2000:]
        assert not os.path.exists(d.sock)
        assert [k.pid for k in kids if not gone(k)] == [], "children (the stopped shard?) outlived the daemon"
        th.join(5)
        assert not th.is_alive() and outcome, "the in-flight request was left hanging"
        # answered 503, or the connection closed at shutdown: never any other error
        assert not isinstance(outcome[0], BBError) or outcome[0].status in (0, 503), outcome
    finally:
        if not gone(victim):
            os.kill(victim.pid, signal.SIGCONT)


def test_supervisor_sigkill_shards_exit_on_their_own() -> None:
    d = Daemon("--rate-limit=0").wait_ready()
    rc = None
    rundirs: set[str] = set()
    try:
        kids = descendants(d.proc.pid)
        shards = [k for k in kids if k.pid in set(d.shard_pids())]
        assert len(shards) == 2
        # The shards' private ipc directory: it cannot be cleaned up by a SIGKILLed supervisor.
        rundirs = {
            os.path.dirname(c.laddr) for k in shards for c in k.net_connections("unix") if "/bbd-" in (c.laddr or "")
        }
        d.proc.kill()
        rc = d.proc.wait(5)
        wait_until(lambda: all(gone(k) for k in kids), 5, "orphaned shards to exit on their own")
    finally:
        stop_rc = d.stop()  # raises if any child was still alive (and kills it)
        for r in rundirs:
            shutil.rmtree(r, ignore_errors=True)
    assert rc == stop_rc == -signal.SIGKILL


# --- shard crashes and hangs ---------------------------------------------------------------------------
def test_shard_sigkill_is_restarted_and_other_shard_intact(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=0")
    c, by_shard = populate(d, "crash")
    before = d.status()
    old_pid = before["shards"][0]["pid"]
    other_pid = before["shards"][1]["pid"]
    assert before["store_count"] == 40

    os.kill(old_pid, signal.SIGKILL)
    # Meanwhile: requests for the dead shard's stores answer promptly (503 StoreUnavailable while it is
    # down, 404 once the fresh, empty shard serves: a shard's stores die with it), never hang.
    probe = BBClient(d.sock, customer="crash", timeout=5.0)
    victim_ids = list(by_shard[0])
    deadline = time.monotonic() + 10
    i = 0
    while True:
        t = time.monotonic()
        resp = probe.request("POST", f"/api/v1/snapshot/{victim_ids[i % len(victim_ids)]}", {"X-Customer-ID": "crash"})
        assert time.monotonic() - t < 4.0
        if resp.status == 503:
            assert resp.headers.get("bigbunny-error-code") == "StoreUnavailable"
            assert resp.headers.get("retry-after") == "1"
        else:
            assert resp.status == 404 and resp.headers.get("bigbunny-error-code") == "NotFound", resp
            break
        assert time.monotonic() < deadline, "the shard was not restarted in 10 s"
        i += 1

    st = wait_until(lambda: shard_up(d, 0, old_pid), 10, "shard 0 to be up with a new pid")
    assert st["restarts"] == before["shards"][0]["restarts"] + 1
    assert not psutil.pid_exists(old_pid) or gone(psutil.Process(old_pid))
    log = d.log()
    assert re.search(rf"shard 0 \(pid {old_pid}\) exited", log), log[-2000:]

    after = d.status()
    assert after["shards"][1]["pid"] == other_pid and after["shards"][1]["restarts"] == 0
    # The lost shard's stores and bytes are no longer accounted; the other shard's are.
    survivors = by_shard[1]
    assert after["store_count"] == len(survivors)
    assert after["memory_usage"] == sum(len(b) + 256 for b in survivors.values())
    assert after["shards"][0]["memory"] == 0
    assert_intact(c, survivors)
    for sid in victim_ids[:5]:
        with pytest.raises(BBError) as e:
            c.snapshot(sid)
        assert e.value.status == 404

    # The replacement serves new stores.
    new_on_0 = {}
    for i in range(10):
        sid = c.create(f"new-{i}".encode())
        if shard_of(sid, 2) == 0:
            new_on_0[sid] = f"new-{i}".encode()
    assert new_on_0
    assert_intact(c, new_on_0)


def test_shard_sigstop_fails_fast_and_is_replaced(daemon_factory) -> None:
    d = daemon_factory("--rate-limit=0")
    c, by_shard = populate(d, "hang")
    before = d.status()
    old_pid = before["shards"][0]["pid"]
    other_pid = before["shards"][1]["pid"]
    victim = psutil.Process(old_pid)
    victim_id = next(iter(by_shard[0]))

    result: dict[str, Any] = {}

    def hung_request() -> None:
        t = time.monotonic()
        cl = BBClient(d.sock, customer="hang", timeout=10.0)
        result["resp"] = cl.request("POST", f"/api/v1/snapshot/{victim_id}", {"X-Customer-ID": "hang"})
        result["elapsed"] = time.monotonic() - t
        cl.close()

    os.kill(old_pid, signal.SIGSTOP)
    try:
        wait_until(lambda: victim.status() == psutil.STATUS_STOPPED, 5, "the shard to be stopped")
        th = threading.Thread(target=hung_request)
        th.start()
        # While shard 0 is stalled (its request still pending), shard 1 keeps serving promptly.
        for sid, body in by_shard[1].items():
            t = time.monotonic()
            assert c.snapshot(sid).body == body
            assert time.monotonic() - t < 1.0
        assert th.is_alive(), "the stalled shard's request answered before the shard was declared hung?"
        th.join(10)
        assert not th.is_alive(), "a request to a stopped shard hung"
        resp = result["resp"]
        assert resp.status == 503, resp
        assert resp.headers.get("bigbunny-error-code") == "StoreUnavailable"
        assert resp.headers.get("retry-after") == "1"
        assert result["elapsed"] < 4.0, f"failing took {result['elapsed']:.2f} s"

        st = wait_until(lambda: shard_up(d, 0, old_pid), 10, "shard 0 to be replaced by a new process")
        assert st["restarts"] == before["shards"][0]["restarts"] + 1
        wait_until(lambda: gone(victim), 5, "the hung shard to be killed")
        assert re.search(rf"shard 0 \(pid {old_pid}\) did not answer", d.log())
        after = d.status()
        assert after["shards"][1]["pid"] == other_pid and after["shards"][1]["restarts"] == 0
        assert after["store_count"] == len(by_shard[1])
        assert_intact(c, by_shard[1])
        sid = c.create(b"after")
        assert c.snapshot(sid).body == b"after"
    finally:
        if not gone(victim):
            os.kill(old_pid, signal.SIGCONT)


# --- the socket ------------------------------------------------------------------------------------------
def test_socket_mode_0600(daemon_factory) -> None:
    d = daemon_factory()
    st = os.lstat(d.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_second_daemon_on_same_socket_refuses(daemon_factory) -> None:
    first = daemon_factory("--rate-limit=0")
    c = first.client("twice")
    sid = c.create(b"first")
    second = subprocess.run(
        [sys.executable, "-m", "bigbunny", "--dev", f"--uds={first.sock}", "--tcp=127.0.0.1:0", "--shards=2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1, second
    assert re.search(rf"^failed to listen on UDS {re.escape(first.sock)}: \S", second.stderr, re.M), second.stderr
    # The first daemon is untouched: same socket file, still serving.
    assert stat.S_ISSOCK(os.lstat(first.sock).st_mode)
    assert c.snapshot(sid).body == b"first"
    assert first.client("twice-b").create(b"y")


def test_stale_socket_file_is_replaced(daemon_factory) -> None:
    tmp = tempfile.mkdtemp(prefix="bbs", dir="/tmp")
    path = os.path.join(tmp, "s")
    try:
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)  # a socket file nobody listens on (like one left by a killed daemon)
        stale.close()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with pytest.raises(ConnectionRefusedError):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            finally:
                probe.close()

        d = daemon_factory("--rate-limit=0", f"--uds={path}", ready=False)
        d.sock = path
        d.wait_ready()
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        c = d.client("stale")
        assert c.snapshot(c.create(b"fresh")).body == b"fresh"
        assert d.proc.poll() is None
        d.stop()
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(tmp)


# --- start-up -----------------------------------------------------------------------------------------------
def test_first_status_answers_promptly(daemon_factory) -> None:
    t0 = time.monotonic()
    d = daemon_factory(ready=False)

    def answered() -> dict | None:
        assert d.proc.poll() is None, d.log()
        try:
            return BBClient(d.sock, timeout=1.0).status()
        except Exception:  # noqa: BLE001 - not listening yet
            return None

    st = wait_until(answered, 10, "the first /status answer")
    assert time.monotonic() - t0 < 10
    assert st["role"] == "PRIMARY" and len(st["shards"]) == 2
    d.wait_ready(10)


@pytest.mark.parametrize(
    ("env_extra", "missing"),
    [
        ({}, ("store-keys", "SERIALD_STORE_KEYS")),
        ({"SERIALD_STORE_KEYS": f"k1:{ENV_KEY}"}, ("routing-secret", "SERIALD_ROUTING_SECRET")),
        (
            {"SERIALD_STORE_KEYS": f"k1:{ENV_KEY}", "SERIALD_ROUTING_SECRET": "rs"},
            ("internal-token", "SERIALD_INTERNAL_TOKEN"),
        ),
    ],
    ids=["no-keys", "no-secret", "no-token"],
)
def test_production_mode_requires_secrets(env_extra: dict[str, str], missing: tuple[str, str]) -> None:
    res = run_bbd(env={**clean_env(), **env_extra})
    assert res.returncode == 1, res
    flag, env = missing
    assert res.stderr.strip().splitlines()[-1] == (
        f"production mode requires --{flag} or {env} (use --dev for dev mode)"
    ), res.stderr


def test_unparsable_flag_is_usage_error() -> None:
    res = run_bbd("--dev", "--memory-limit=abc")
    assert res.returncode == 2, res
    assert "memory-limit" in res.stderr


def test_invalid_site_refused() -> None:
    res = run_bbd("--dev", "--site=UPPER")
    assert res.returncode == 1, res
    assert "invalid site" in res.stderr and '"UPPER"' in res.stderr, res.stderr


def test_secrets_from_environment(daemon_factory) -> None:
    env = {
        **clean_env(),
        "SERIALD_STORE_KEYS": f"k1:{ENV_KEY}",
        "SERIALD_ROUTING_SECRET": "env-secret",
        "SERIALD_INTERNAL_TOKEN": "env-token",
    }
    d = daemon_factory("--rate-limit=0", dev=False, env=env)
    c = d.client("envy")
    sid = c.create(b"from env")
    assert sid.startswith("v1:k1:"), sid  # minted with the key from SERIALD_STORE_KEYS
    assert c.snapshot(sid).body == b"from env"
    # A flag beats the environment.
    d2 = daemon_factory("--rate-limit=0", f"--store-keys=k2:{'cd' * 32}", dev=False, env=env)
    sid2 = d2.client("envy").create(b"from flag")
    assert sid2.startswith("v1:k2:"), sid2


@pytest.mark.parametrize("how", ["flag", "env"])
def test_min_replicas_max_lag_needs_peers(how: str) -> None:
    """§15: the lag rule guards a pair; on a lone node it would only stop every write."""
    if how == "flag":
        res = run_bbd("--dev", "--min-replicas-max-lag=1s", env=clean_env())
    else:
        res = run_bbd("--dev", env={**clean_env(), "SERIALD_MIN_REPLICAS_MAX_LAG": "500ms"})
    assert res.returncode == 1, res
    assert res.stderr.strip().splitlines()[-1] == "--min-replicas-max-lag needs a peer (--peers)", res.stderr


def _shard_lines(d: Daemon) -> list[dict[str, Any]] | None:
    """The shards' log lines (they share the daemon's stderr), each parsed as JSON, once both shards have
    logged; else None. A shard line that is not JSON fails the test."""
    lines = []
    for line in d.log().splitlines():
        if "bbd.shard." in line:
            lines.append(json.loads(line))
    return lines if {x["logger"] for x in lines} == {"bbd.shard.0", "bbd.shard.1"} else None


def test_shards_log_in_the_configured_format(daemon_factory) -> None:
    """``--log-format json`` reaches the shard processes: their lines (start-up ones here) are JSON too."""
    d = daemon_factory("--log-format=json", shards=2)
    lines = wait_until(lambda: _shard_lines(d), 10, "both shards' start-up lines")
    assert {x["msg"] for x in lines} >= {f"shard {i} up (pid {pid})" for i, pid in enumerate(d.shard_pids())}
    assert all(x["level"] == "info" and x["ts"].endswith("Z") for x in lines)


def test_shards_log_at_the_configured_level(daemon_factory) -> None:
    d = daemon_factory("--log-level=warning", shards=2)
    d.client("c1").create(b"x")  # the shards are serving
    assert "bbd.shard." not in d.log()  # their info start-up lines are below the level
