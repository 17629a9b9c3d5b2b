"""Operations features against a real daemon over its real socket: ``/metrics``, ``/healthz``,
``/readyz``, ``processes`` in ``/status``, ``bbd status`` / ``bbd customers`` and the systemd
notify protocol (READY=1, WATCHDOG=1, STOPPING=1).

Waiting is always a bounded poll; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
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
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from conftest import Daemon
from helpers import wait_until
from prometheus_client.parser import text_string_to_metric_families

from bigbunny.client import BBClient, Response

QUOTA = 3000
MEMORY_LIMIT = 1_000_000
TOMBSTONE_LIMIT = 2
FLOOD = 80
BURST = 60


def api(c: BBClient, customer: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
    return c.request("POST", f"/api/v1/{path}", {"X-Customer-ID": customer, **(headers or {})}, body)


def bbd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bigbunny", *args], capture_output=True, text=True, timeout=30)


# --- one daemon with a known history of requests -------------------------------------------------
@dataclass
class Scenario:
    d: Daemon
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, status) -> count
    rate_limited: int = 0

    def count(self, endpoint: str, resp: Response) -> Response:
        key = (endpoint, str(resp.status))
        self.requests[key] = self.requests.get(key, 0) + 1
        return resp


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    """Four customers, each standing out in one ranking of ``bbd customers``:

    * ``heavy``   two 1100-byte blobs (2 × 1356 = 2712 bytes), then a third → 507 CustomerQuotaExceeded
    * ``many``    eight empty stores, one of them named (8 × 256 = 2048 bytes)
    * ``deleter`` three 1-byte blobs, two deleted (2 tombstones), the third delete → 429 at the limit
    * ``flood``   80 back-to-back requests against a burst of 60 → some 429 RateLimited
    """
    d = Daemon(
        "--rate-limit=2",
        f"--burst-size={BURST}",
        f"--customer-memory-quota={QUOTA}",
        f"--memory-limit={MEMORY_LIMIT}",
        f"--tombstone-customer-limit={TOMBSTONE_LIMIT}",
        "--gc-interval=1h",
    ).wait_ready()
    try:
        s = Scenario(d)
        c = BBClient(d.sock)
        heavy = [s.count("create", api(c, "heavy", "create", b"h" * 1100)) for _ in range(3)]
        assert [r.status for r in heavy] == [200, 200, 507]
        assert heavy[2].headers["bigbunny-error-code"] == "CustomerQuotaExceeded"
        assert s.count("snapshot", api(c, "heavy", f"snapshot/{heavy[0].text}")).body == b"h" * 1100

        for _ in range(7):
            assert s.count("create", api(c, "many", "create")).status == 200
        assert s.count("create-by-name", api(c, "many", "create-by-name/cart:1")).status == 200

        ids = [s.count("create", api(c, "deleter", "create", b"x")).text for _ in range(3)]
        assert [s.count("delete", api(c, "deleter", f"delete/{sid}")).status for sid in ids[:2]] == [200, 200]
        refused = s.count("delete", api(c, "deleter", f"delete/{ids[2]}"))
        assert (refused.status, refused.headers["bigbunny-error-code"]) == (429, "TombstoneLimitExceeded")

        for _ in range(FLOOD):
            r = s.count("snapshot", api(c, "flood", "snapshot/not-an-id"))
            if r.status == 429:
                assert r.headers["bigbunny-error-code"] == "RateLimited" and r.headers["retry-after"] == "1"
                s.rate_limited += 1
            else:
                assert r.status == 400 and r.text == "invalid store ID\n"
        assert 0 < s.rate_limited <= FLOOD - BURST
        c.close()
        yield s
    finally:
        rc = d.stop()
    assert rc == 0, f"bbd exited {rc} on SIGTERM:\n{d.log()[-3000:]}"


def scrape(sock: str) -> tuple[Response, dict[str, Any]]:
    resp = BBClient(sock).request("GET", "/metrics")
    assert resp.status == 200, resp
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    return resp, families


def samples(family: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted label items: value} of the family's samples named ``<family><suffix>``."""
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == family.name + suffix}


def value(family: Any, suffix: str = "", **labels: str) -> float:
    return samples(family, suffix)[tuple(sorted(labels.items()))]


# --- /metrics ---------------------------------------------------------------------------------------
def test_metrics_families_and_values(scenario: Scenario) -> None:
    d = scenario.d
    st = d.status()
    resp, fam = scrape(d.sock)
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"

    types = {name: f.type for name, f in fam.items()}
    expected = {
        "bbd_role": "gauge",
        "bbd_epoch": "gauge",
        "bbd_stores": "gauge",
        "bbd_tombstones": "gauge",
        "bbd_memory_bytes": "gauge",
        "bbd_memory_limit_bytes": "gauge",
        "bbd_shard_stores": "gauge",
        "bbd_shard_memory_bytes": "gauge",
        "bbd_shard_up": "gauge",
        "bbd_shard_restarts": "counter",
        "bbd_shard_calls": "counter",
        "bbd_shard_batches": "counter",
        "bbd_process_rss_bytes": "gauge",
        "bbd_process_cpu_percent": "gauge",
        "bbd_requests": "counter",
        "bbd_request_duration_seconds": "histogram",
        "bbd_rate_limited": "counter",
        "bbd_limit_rejections": "counter",
        "bbd_registry_entries": "gauge",
        "bbd_replication_queue_length": "gauge",
        "bbd_replication_lag_seconds": "gauge",
        "bbd_replication_fail_count": "gauge",
        "bbd_replication_dropped": "counter",
        "bbd_writes_refused_no_replicas": "counter",
        "bbd_replica_lag_seconds": "gauge",
        "bbd_peer_last_contact_seconds": "gauge",
        "bbd_config_reloads": "counter",
        "bbd_config_last_reload_timestamp_seconds": "gauge",
        "bbd_customer_memory_quota_bytes": "gauge",
    }
    assert types == expected

    # node state: the same figures as /status (nothing changes between the two calls)
    assert samples(fam["bbd_role"]) == {
        (("role", "PRIMARY"),): 1.0,
        (("role", "SECONDARY"),): 0.0,
        (("role", "JOINING"),): 0.0,
    }
    assert value(fam["bbd_epoch"]) == st["leader_epoch"] == 1
    assert value(fam["bbd_stores"]) == st["store_count"] == 2 + 8 + 1
    assert value(fam["bbd_memory_bytes"]) == st["memory_usage"] == 2 * 1356 + 8 * 256 + 257
    assert value(fam["bbd_memory_limit_bytes"]) == MEMORY_LIMIT
    assert value(fam["bbd_tombstones"]) == st["tombstone_count"] == 2
    assert samples(fam["bbd_registry_entries"]) == {
        (("state", "active"),): 1.0,
        (("state", "creating"),): 0.0,
        (("state", "deleting"),): 0.0,
    }

    # per shard
    for sh in st["shards"]:
        label = str(sh["id"])
        assert value(fam["bbd_shard_stores"], shard=label) == sh["stores"]
        assert value(fam["bbd_shard_memory_bytes"], shard=label) == sh["memory"]
        assert value(fam["bbd_shard_up"], shard=label) == 1.0
        assert value(fam["bbd_shard_restarts"], "_total", shard=label) == 0.0
        # every shard got calls (pings at least); a batch carries one or more of them
        calls, batches = (
            value(fam["bbd_shard_calls"], "_total", shard=label),
            value(fam["bbd_shard_batches"], "_total", shard=label),
        )
        assert calls >= batches > 0
    assert sum(samples(fam["bbd_shard_stores"]).values()) == st["store_count"]
    assert sum(samples(fam["bbd_shard_memory_bytes"]).values()) == st["memory_usage"]
    rss = samples(fam["bbd_process_rss_bytes"])
    assert set(rss) == {(("process", p),) for p in ("supervisor", "shard-0", "shard-1")}
    assert all(v > 1 << 20 for v in rss.values()), rss
    cpu = samples(fam["bbd_process_cpu_percent"])
    assert set(cpu) == set(rss) and all(v >= 0 for v in cpu.values())

    # requests by endpoint and status: exactly what the scenario sent
    got = {(dict(k)["endpoint"], dict(k)["status"]): v for k, v in samples(fam["bbd_requests"], "_total").items()}
    assert got == scenario.requests
    assert got[("snapshot", "429")] == scenario.rate_limited

    # latency histogram: one series per endpoint, cumulative buckets, +Inf = count = requests
    hist = fam["bbd_request_duration_seconds"]
    for endpoint in {e for e, _ in scenario.requests}:
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in hist.samples
            if s.name.endswith("_bucket") and s.labels["endpoint"] == endpoint
        ]
        bounds = [b for b, _ in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == float("inf") and len(bounds) == 16
        counts = [n for _, n in buckets]
        assert counts == sorted(counts), f"{endpoint}: buckets not cumulative"
        total = sum(n for (e, _), n in scenario.requests.items() if e == endpoint)
        assert counts[-1] == value(hist, "_count", endpoint=endpoint) == total
        assert 0 < value(hist, "_sum", endpoint=endpoint) < total * 5.0

    # limits
    assert value(fam["bbd_rate_limited"], "_total") == scenario.rate_limited
    rej = {dict(k)["reason"]: v for k, v in samples(fam["bbd_limit_rejections"], "_total").items()}
    assert rej == {"CustomerQuotaExceeded": 1.0, "CapacityExceeded": 0.0, "TombstoneLimitExceeded": 1.0}

    # replication (single node: all zero, no peer)
    assert samples(fam["bbd_replication_queue_length"]) == {(("kind", "store"),): 0.0, (("kind", "registry"),): 0.0}
    assert value(fam["bbd_replication_lag_seconds"]) == 0.0
    assert value(fam["bbd_replication_fail_count"]) == 0.0
    assert value(fam["bbd_replication_dropped"], "_total") == 0.0
    assert samples(fam["bbd_peer_last_contact_seconds"]) == {}

    # no --config: no reload yet (test_reload.py covers them); the quota as configured
    assert samples(fam["bbd_config_reloads"], "_total") == {
        (("result", "applied"),): 0.0,
        (("result", "refused"),): 0.0,
    }
    assert value(fam["bbd_config_last_reload_timestamp_seconds"]) == 0.0
    assert value(fam["bbd_customer_memory_quota_bytes"]) == QUOTA


def test_metrics_methods(scenario: Scenario) -> None:
    c = BBClient(scenario.d.sock)
    head = c.request("HEAD", "/metrics")
    assert head.status == 200 and head.body == b""
    post = c.request("POST", "/metrics")
    assert post.status == 405 and post.headers["allow"] == "GET, HEAD"
    assert c.request("GET", "/metrics/").status == 404  # no trailing-slash normalisation


# --- /status processes, bbd status ------------------------------------------------------------------
def test_status_processes(scenario: Scenario) -> None:
    d = scenario.d
    st = d.status()
    procs = st["processes"]
    assert [p["role"] for p in procs] == ["supervisor", "shard-0", "shard-1"]
    assert procs[0]["pid"] == d.proc.pid
    assert [p["pid"] for p in procs[1:]] == [s["pid"] for s in st["shards"]]
    for p in procs:
        assert set(p) == {"pid", "role", "rss", "cpu_percent"}
        assert isinstance(p["rss"], int) and isinstance(p["cpu_percent"], float)
        real = psutil.Process(p["pid"]).memory_info().rss
        assert 0.5 * real < p["rss"] < 2 * real, (p, real)
        assert 0.0 <= p["cpu_percent"] <= 100.0 * (os.cpu_count() or 1)


def test_bbd_status_process_table(scenario: Scenario) -> None:
    d = scenario.d
    res = bbd_cli("status", f"--uds={d.sock}")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("Host ID:        host1")
    at = lines.index("Processes:")
    assert lines[at + 1].split() == ["ROLE", "PID", "RSS", "CPU%"]
    rows = [ln.split() for ln in lines[at + 2 :]]
    assert [r[0] for r in rows] == ["supervisor", "shard-0", "shard-1", "total"]
    pids = [int(r[1]) for r in rows[:3]]
    assert pids[0] == d.proc.pid and sorted(pids[1:]) == sorted(d.shard_pids())
    assert rows[3][1] == "3"  # process count
    mib = [float(r[2]) for r in rows]
    assert all(r[3] == "MiB" for r in rows)
    assert abs(sum(mib[:3]) - mib[3]) <= 0.2, rows  # each figure rounded to 0.1 MiB
    assert all(re.fullmatch(r"\d+\.\d", r[4]) for r in rows), rows  # CPU% with one decimal everywhere


def test_bbd_status_json_is_raw(scenario: Scenario) -> None:
    res = bbd_cli("status", "--json", f"--uds={scenario.d.sock}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1 and res.stdout.endswith("\n")
    doc = json.loads(res.stdout)
    # compact, keys sorted: exactly the daemon's own encoding
    assert res.stdout == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    assert {p["role"] for p in doc["processes"]} == {"supervisor", "shard-0", "shard-1"}
    assert doc["store_count"] == 11


# --- bbd customers ----------------------------------------------------------------------------------
def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if not line.startswith("  "):
            current = line.split(":")[0]
            out[current] = []
        elif line.strip() != "(none)":
            out[current].append(line.split()[0])
    return out


def test_customers_report(scenario: Scenario) -> None:
    d = scenario.d
    res = bbd_cli("customers", f"--uds={d.sock}", "--top", "2", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["customers"] == 4

    def row(name: str, memory: int, stores: int, tombstones: int, rate_limited: int) -> dict[str, Any]:
        return {
            "customer": name,
            "memory": memory,
            "stores": stores,
            "tombstones": tombstones,
            "rate_limited": rate_limited,
        }

    heavy, many = row("heavy", 2712, 2, 0, 0), row("many", 2048, 8, 0, 0)
    deleter, flood = row("deleter", 257, 1, 2, 0), row("flood", 0, 0, 0, scenario.rate_limited)
    assert rep["top_memory"] == [heavy, many]
    assert rep["top_stores"] == [many, heavy]
    assert rep["top_tombstones"] == [deleter]
    assert rep["top_rate_limited"] == [flood]

    full = BBClient(d.sock).customers(100)
    assert full["top_memory"] == [heavy, many, deleter] and full["top_stores"] == [many, heavy, deleter]
    st = d.status()
    assert sum(r["memory"] for r in full["top_memory"]) == st["memory_usage"]
    assert sum(r["stores"] for r in full["top_stores"]) == st["store_count"]

    res = bbd_cli("customers", f"--uds={d.sock}", "--top", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "Customers:      4"
    assert _sections(res.stdout) == {
        "Customers": [],
        "By memory": ["heavy", "many"],
        "By stores": ["many", "heavy"],
        "By tombstones": ["deleter"],
        "By rate-limit rejections": ["flood"],
    }
    assert f"flood{' ' * 35} memory 0 B, stores 0, tombstones 0, rate-limited {scenario.rate_limited}" in res.stdout


def test_customers_top_validation(scenario: Scenario) -> None:
    c = BBClient(scenario.d.sock)
    for bad in ("0", "-1", "abc", "100001", "", "%C2%B2", "%E0%A5%A8", "1.5"):  # ² and Devanagari 2 included
        r = c.request("GET", f"/internal/customers?top={bad}")
        assert (r.status, r.text) == (400, "invalid top (1-100000)\n"), (bad, r)
    assert c.request("GET", "/internal/customers").status == 200  # default top
    assert bbd_cli("customers", f"--uds={scenario.d.sock}", "--top", "0").returncode == 2  # usage error


# --- /healthz, /readyz -----------------------------------------------------------------------------
def test_health_endpoints_follow_shard_liveness(daemon_factory) -> None:
    """200 on a healthy node; 503 (StoreUnavailable, Retry-After 1) on both once the supervisor has
    declared a SIGSTOPped shard hung, until its replacement answers; then 200 again."""
    d = daemon_factory("--rate-limit=0")  # fresh: a young shard restarts after a 0.1 s back-off
    c = BBClient(d.sock)
    for path, body in (("/healthz", "ok"), ("/readyz", "ready")):
        r = c.request("GET", path)
        assert (r.status, r.text, r.headers["content-type"]) == (200, body, "text/plain; charset=utf-8")
        head = c.request("HEAD", path)
        assert head.status == 200 and head.body == b""

    victim = d.status()["shards"][0]["pid"]
    os.kill(victim, signal.SIGSTOP)
    seen: dict[str, Response] = {}
    try:
        deadline = time.monotonic() + 8.0  # hang detection takes 2 s
        while len(seen) < 2 and time.monotonic() < deadline:
            for path in ("/healthz", "/readyz"):
                r = c.request("GET", path)
                if r.status != 200:
                    seen.setdefault(path, r)
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass  # already killed and replaced
    assert set(seen) == {"/healthz", "/readyz"}, f"503 not seen on {set(seen) ^ {'/healthz', '/readyz'}}"
    for path, text in (("/healthz", "a shard is not answering\n"), ("/readyz", "not ready: a shard is down\n")):
        r = seen[path]
        assert (r.status, r.text) == (503, text)
        assert r.headers["bigbunny-error-code"] == "StoreUnavailable" and r.headers["retry-after"] == "1"
        assert r.headers["x-content-type-options"] == "nosniff"

    wait_until(lambda: c.request("GET", "/healthz").status == 200, 10, "/healthz to recover")
    assert c.request("GET", "/readyz").status == 200
    st = d.status()
    assert st["shards"][0]["pid"] != victim and st["shards"][0]["restarts"] == 1
    d.children = psutil.Process(d.proc.pid).children(recursive=True)  # the replacement, for the teardown check


# --- systemd notify ---------------------------------------------------------------------------------
class NotifyListener:
    """The systemd side: an AF_UNIX datagram socket that records every message with its arrival time."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bbn", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def wait_for(self, key: str, timeout: float) -> dict[str, str]:
        """The next message carrying ``key``; messages received on the way are kept."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key} within {timeout} s; got {[m for _, m in self.messages]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            msg = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), msg))
            if key in msg:
                return msg

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_systemd_notify_ready_watchdog_stopping() -> None:
    listener = NotifyListener()
    env = {**os.environ, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000"}
    env.pop("WATCHDOG_PID", None)
    d = Daemon("--rate-limit=0", env=env)
    try:
        ready = listener.wait_for("READY", 20)
        assert ready["READY"] == "1" and ready["MAINPID"] == str(d.proc.pid)
        assert ready["STATUS"] == f"serving on {d.sock} as PRIMARY"
        # READY=1 only once the API answers and every shard is up
        st = BBClient(d.sock, timeout=2.0).status()
        assert len(st["shards"]) == 2 and all(s["up"] for s in st["shards"]), st["shards"]
        assert len(listener.messages) == 1, "something was sent before READY=1"

        # WATCHDOG=1 every WATCHDOG_USEC / 2 = 100 ms
        first = listener.wait_for("WATCHDOG", 5)
        for _ in range(4):
            listener.wait_for("WATCHDOG", 5)
        assert first == {"WATCHDOG": "1"}
        beats = [t for t, m in listener.messages if "WATCHDOG" in m]
        assert len(beats) == 5
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        assert all(0.05 < g < 1.0 for g in gaps), gaps

        d.children = psutil.Process(d.proc.pid).children(recursive=True)
        d.proc.send_signal(signal.SIGTERM)
        assert listener.wait_for("STOPPING", 10) == {"STOPPING": "1"}
        assert d.proc.wait(10) == 0
    finally:
        rc = d.stop()
        listener.close()
    assert rc == 0, d.log()[-3000:]
    assert "READY" not in {k for _, m in listener.messages[1:] for k in m}, "READY=1 sent twice"
