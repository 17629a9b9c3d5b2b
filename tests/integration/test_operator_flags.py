"""Operator flags of issue 13 against real daemons over their real sockets: the admin socket
(``--admin-uds``), the data socket's mode and group (``--uds-mode``, ``--uds-group``), Prometheus over
TCP (``--metrics-addr``), the TTL bounds (``--default-ttl``, ``--max-ttl``) and their start-up errors.
"""

from __future__ import annotations

import grp
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Daemon, free_port
from helpers import assert_error, call, snap, wait_until
from prometheus_client.parser import text_string_to_metric_families

from bigbunny.client import BBClient, Response

MAX_TTL = 3600
DEFAULT_TTL = 1800
TOO_LONG = f"TTL above the maximum of {MAX_TTL} seconds"
ADMIN_ROUTES = [
    ("GET", "/metrics"),
    ("GET", "/internal/customers"),
    ("POST", "/internal/promote"),
    ("POST", "/internal/release-lock/v1:0:x"),
    ("POST", "/internal/reload"),
]


def bbd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bigbunny", *args], capture_output=True, text=True, timeout=30, env=env
    )


def tcp_get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@dataclass
class Node:
    d: Daemon
    admin: str
    metrics_port: int

    def on_admin(self, method: str, path: str, customer: str | None = None, body: bytes = b"") -> Response:
        with BBClient(self.admin, timeout=5.0) as c:
            return c.request(method, path, {"X-Customer-ID": customer} if customer else {}, body)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """One daemon with every issue-13 flag of this module set (rate limit off)."""
    tmp = tempfile.mkdtemp(prefix="bba", dir="/tmp")
    admin = os.path.join(tmp, "a")
    port = free_port()
    d = Daemon(
        "--rate-limit=0",
        f"--admin-uds={admin}",
        f"--metrics-addr=127.0.0.1:{port}",
        f"--max-ttl={MAX_TTL}s",
        "--default-ttl=30m",
    ).wait_ready()
    try:
        yield Node(d, admin, port)
    finally:
        rc = d.stop(keep_log=True)
        log = d.log()
        d.cleanup()
        assert not os.path.exists(admin), "the admin socket outlived the daemon"
        shutil.rmtree(tmp, ignore_errors=True)
        assert rc == 0, log[-3000:]


# --- the admin socket ------------------------------------------------------------------------------------
def test_admin_routes_are_404_on_the_data_socket(node: Node) -> None:
    for method, path in ADMIN_ROUTES:
        assert_error(call(node.d, path, method=method), 404, "page not found")
    assert node.d.status()["role"] == "PRIMARY"  # the refused promote changed nothing; /status stays


def test_admin_socket_serves_operators_not_the_api(node: Node) -> None:
    r = node.on_admin("GET", "/metrics")
    assert r.status == 200 and b"bbd_role" in r.body
    assert node.on_admin("GET", "/internal/customers").status == 200
    assert node.on_admin("POST", "/internal/promote").text == "promoted"
    assert node.on_admin("GET", "/status").status == 200
    assert node.on_admin("GET", "/healthz").text == "ok"
    assert_error(node.on_admin("POST", "/api/v1/create", "admin", b"x"), 404, "page not found")
    assert_error(node.on_admin("GET", "/internal/no-such-route"), 404, "page not found")


def test_socket_modes(node: Node) -> None:
    for path in (node.d.sock, node.admin):
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, (path, oct(st.st_mode))


def test_cli_admin_commands_take_admin_uds(node: Node) -> None:
    sid = node.d.client("cli-admin").create(b"x")
    ok = bbd("customers", f"--admin-uds={node.admin}", f"--uds={node.d.sock}", "--json")
    assert ok.returncode == 0 and '"customers":' in ok.stdout, ok
    env = {**os.environ, "SERIALD_ADMIN_UDS": node.admin}
    assert bbd("release-lock", f"--uds={node.d.sock}", sid, env=env).stdout == f"lock released on {sid}\n"
    refused = bbd("promote", f"--uds={node.d.sock}", env={k: v for k, v in env.items() if k != "SERIALD_ADMIN_UDS"})
    assert (refused.returncode, refused.stderr) == (1, "promote failed: page not found\n")


# --- Prometheus over TCP -----------------------------------------------------------------------------------
def test_metrics_over_tcp_parse_as_prometheus(node: Node) -> None:
    node.d.client("scraped").create(b"m")
    status, headers, body = tcp_get(node.metrics_port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    role = {s.labels["role"]: s.value for s in families["bbd_role"].samples}
    assert role == {"PRIMARY": 1.0, "SECONDARY": 0.0, "JOINING": 0.0}
    assert [s.value for s in families["bbd_shard_up"].samples] == [1.0, 1.0]
    created = [
        s
        for s in families["bbd_requests"].samples
        if s.name == "bbd_requests_total" and s.labels == {"endpoint": "create", "status": "200"}
    ]
    assert created and created[0].value >= 1
    assert families["bbd_stores"].samples[0].value >= 1


def test_metrics_port_serves_probes_and_nothing_else(node: Node) -> None:
    assert tcp_get(node.metrics_port, "/healthz")[::2] == (200, b"ok")
    assert tcp_get(node.metrics_port, "/readyz")[::2] == (200, b"ready")
    assert tcp_get(node.metrics_port, "/metrics", "HEAD")[0] == 200
    for method, path in [("GET", "/status"), *ADMIN_ROUTES[1:], ("POST", "/api/v1/create")]:
        if path == "/metrics":
            continue
        status, _, body = tcp_get(node.metrics_port, path, method)
        assert (status, body) == (404, b"page not found\n"), (method, path)


# --- TTL bounds ----------------------------------------------------------------------------------------------
def ttl_of(node: Node, customer: str, sid: str) -> int:
    r = snap(node.d, customer, sid)
    assert r.status == 200, r.body
    return int(r.headers["bigbunny-not-valid-after"])


def test_default_ttl_applies_to_creates_without_one(node: Node) -> None:
    c = node.d.client("ttl-default")
    assert DEFAULT_TTL - 5 <= ttl_of(node, "ttl-default", c.create(b"x")) <= DEFAULT_TTL
    assert ttl_of(node, "ttl-default", c.create(b"y", ttl=MAX_TTL)) > DEFAULT_TTL  # the maximum itself is fine


def test_ttl_above_the_maximum_is_refused_on_create(node: Node) -> None:
    long = {"BigBunny-Not-Valid-After": str(MAX_TTL + 1)}
    assert_error(call(node.d, "/api/v1/create", "ttl-max", b"x", long), 400, TOO_LONG, "TTLTooLong")
    assert_error(call(node.d, "/api/v1/create-by-name/n1", "ttl-max", b"x", long), 400, TOO_LONG, "TTLTooLong")
    assert call(node.d, "/api/v1/lookup-id-by-name/n1", "ttl-max").status == 404  # no reservation left behind
    # Above int64 seconds × 10⁹ it stays the plain "invalid TTL" of §13 fix 8.
    huge = {"BigBunny-Not-Valid-After": "9223372037"}
    assert_error(call(node.d, "/api/v1/create", "ttl-max", b"x", huge), 400, "invalid TTL")


def test_ttl_above_the_maximum_is_refused_on_writes_and_changes_nothing(node: Node) -> None:
    cust = "ttl-writes"
    c = node.d.client(cust)
    sid = c.create(b"before", ttl=600)
    counter = c.create_counter(5)
    long = {"BigBunny-Not-Valid-After": str(MAX_TTL + 1)}
    assert_error(call(node.d, f"/api/v1/update/{sid}", cust, b"after", long), 400, TOO_LONG, "TTLTooLong")
    lock = c.begin_modify(sid).lock_id
    r = call(node.d, f"/api/v1/complete-modify/{sid}", cust, b"after", {**long, "BigBunny-Lock-ID": lock})
    assert_error(r, 400, TOO_LONG, "TTLTooLong")
    c.cancel_modify(sid, lock)
    for op in ("increment", "decrement"):
        r = call(node.d, f"/api/v1/{op}/{counter}", cust, b'{"delta":1}', long)
        assert_error(r, 400, TOO_LONG, "TTLTooLong")
    assert c.snapshot(sid).body == b"before" and ttl_of(node, cust, sid) <= 600
    assert json.loads(c.snapshot(counter).body)["value"] == 5
    c.update(sid, b"after", ttl=MAX_TTL)  # at the maximum: accepted
    assert ttl_of(node, cust, sid) > 600


def test_ttl_check_keeps_its_place_in_the_check_order(node: Node) -> None:
    cust = "ttl-order"
    long = {"BigBunny-Not-Valid-After": str(MAX_TTL + 1)}
    assert_error(call(node.d, "/api/v1/update/v1:0:nope", cust, b"x", long), 400, "invalid store ID")
    counter = node.d.client(cust).create_counter(0)
    assert_error(call(node.d, f"/api/v1/increment/{counter}", cust, b"{", long), 400, "invalid JSON request")
    r = call(node.d, "/api/v1/create", cust, b"x" * 3000, long)
    assert_error(r, 413, "body too large")


def test_cli_reports_the_ttl_refusal(node: Node) -> None:
    res = bbd("create", f"--uds={node.d.sock}", "--customer=ttl-cli", "--data=x", f"--ttl={MAX_TTL + 1}")
    assert res.returncode == 1
    assert res.stderr == f"create failed (400): {TOO_LONG}\nerror code: TTLTooLong\n", res.stderr
    ok = bbd("create", f"--uds={node.d.sock}", "--customer=ttl-cli", "--data=x", f"--ttl={MAX_TTL}")
    assert ok.returncode == 0, ok
    assert ttl_of(node, "ttl-cli", ok.stdout.strip()) > DEFAULT_TTL


# --- data socket mode and group --------------------------------------------------------------------------
def other_group() -> grp.struct_group | None:
    """A group this process may hand its socket to, other than its own: any group for root, else one
    of its supplementary groups."""
    mine = os.getgid()
    if os.geteuid() == 0:
        candidates = sorted(grp.getgrall(), key=lambda g: g.gr_gid)
    else:
        candidates = [grp.getgrgid(g) for g in os.getgroups()]
    return next((g for g in candidates if g.gr_gid != mine), None)


def test_uds_mode_and_group(daemon_factory) -> None:
    group = other_group()
    if group is None:
        pytest.skip("no second group on this host to hand the socket to")
    d = daemon_factory("--uds-mode=0660", f"--uds-group={group.gr_name}")
    st = os.lstat(d.sock)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, group.gr_gid)
    assert f"uds_mode=0660 uds_group={group.gr_gid}" in d.log()
    d2 = daemon_factory(f"--uds-group={group.gr_gid}", "--uds-mode=666")  # numeric gid, mode without the 0
    st = os.lstat(d2.sock)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o666, group.gr_gid)
    assert d2.client("g").create(b"x")


# --- start-up errors ----------------------------------------------------------------------------------------
@pytest.fixture
def sockdir() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="bbe", dir="/tmp")
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def refused(sockdir: str, *flags: str) -> str:
    """Start bbd with ``flags``: it must exit 1 with one line on stderr and leave no socket behind."""
    data = os.path.join(sockdir, "s")
    res = bbd("--dev", f"--uds={data}", "--tcp=127.0.0.1:0", "--shards=1", *flags)
    assert res.returncode == 1, res
    assert sorted(os.listdir(sockdir)) == [], os.listdir(sockdir)
    return res.stderr.strip().splitlines()[-1]


def test_admin_uds_start_up_errors(sockdir: str) -> None:
    data = os.path.join(sockdir, "s")
    assert refused(sockdir, f"--admin-uds={data}") == f'--admin-uds must differ from --uds (both are "{data}")'
    missing = os.path.join(sockdir, "nodir", "a")
    assert refused(sockdir, f"--admin-uds={missing}") == (
        f'invalid --admin-uds "{missing}": directory "{os.path.dirname(missing)}" does not exist'
    )
    assert refused(sockdir, f"--admin-uds={sockdir}") == f'invalid --admin-uds "{sockdir}": is a directory'


def test_metrics_addr_start_up_errors(sockdir: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert refused(sockdir, f"--metrics-addr=127.0.0.1:{port}") == (
            f"failed to listen on metrics address 127.0.0.1:{port}: Address already in use"
        )
    assert refused(sockdir, "--metrics-addr=localhost") == (
        'invalid --metrics-addr "localhost": want HOST:PORT with a port of 0-65535'
    )


def test_uds_mode_group_and_ttl_start_up_errors(sockdir: str) -> None:
    assert refused(sockdir, "--uds-mode=0400") == "invalid --uds-mode 0400 (the owner needs read and write: 06xx)"
    assert refused(sockdir, "--uds-mode=rw") == 'invalid --uds-mode "rw" (octal permission bits, e.g. 0660)'
    assert refused(sockdir, "--uds-group=no-such-group-x") == 'unknown group "no-such-group-x" (--uds-group)'
    assert refused(sockdir, "--max-ttl=1d") == "--default-ttl 14d is above --max-ttl 1d"
    assert refused(sockdir, "--default-ttl=0") == "invalid --default-ttl 0 (must be at least 1s)"
    usage = bbd("--dev", "--max-ttl=1.5s")
    assert usage.returncode == 2 and "whole number of seconds" in usage.stderr, usage


# --- a pair: the primary applies the TTL bounds to writes a secondary relays ---------------------------
def test_ttl_bounds_on_writes_relayed_by_the_secondary(cluster) -> None:
    rig = cluster("--rate-limit=0", "--shards=1", f"--max-ttl={MAX_TTL}s", "--default-ttl=30m")
    secondary = rig.n2.d
    long = {"BigBunny-Not-Valid-After": str(MAX_TTL + 1)}
    assert_error(call(secondary, "/api/v1/create", "pair-ttl", b"x", long), 400, TOO_LONG, "TTLTooLong")
    sid = secondary.client("pair-ttl").create(b"relayed")  # no TTL: the primary's --default-ttl

    def replicated_ttl() -> int | None:
        r = snap(secondary, "pair-ttl", sid)  # served from node2's own replica
        return int(r.headers["bigbunny-not-valid-after"]) if r.status == 200 else None

    ttl = wait_until(replicated_ttl, 5, "the store on the secondary")
    assert DEFAULT_TTL - 10 <= ttl <= DEFAULT_TTL
