"""--config and reload against real daemons over the real socket: SIGHUP, ``POST /internal/reload`` and
``bbd reload`` re-read the file and apply what can change live; an invalid file changes nothing; store
keys rotate with the old IDs still readable, and a key still in use cannot be removed.

Waiting is always a bounded poll; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import assert_error, call, snap, wait_until
from prometheus_client.parser import text_string_to_metric_families

from bigbunny.client import BBClient, BBConnectionError, BBError
from bigbunny.sharding import shard_of

K1, K2, K3 = "11" * 32, "22" * 32, "33" * 32


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".new")  # replace atomically, as an editor or a deploy tool would
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def metric(d, name: str, **labels: str) -> float | None:
    text = call(d, "/metrics", method="GET").text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def refused(d, match: str) -> BBError:
    with pytest.raises(BBError) as info:
        d.client().reload()
    err = info.value
    assert (err.status, err.code) == (422, "InvalidConfig"), err
    assert match in err.message, err.message
    return err


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return tmp_path / "bbd.toml"


# --- rate limit under traffic -----------------------------------------------------------------------------
def test_reload_changes_the_rate_limit_under_traffic_without_dropping_a_request(daemon_factory, conf) -> None:
    write(conf, "rate-limit = 100000\nburst-size = 100000\n")
    d = daemon_factory(f"--config={conf}")
    sid = d.client("flood").create(b"x")
    results: list[tuple[float, int]] = []  # (sent at, status)
    failures: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        with BBClient(d.sock, "flood", timeout=10) as c:  # one keep-alive connection, as an app would
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = c.request("POST", f"/api/v1/snapshot/{sid}", {"X-Customer-ID": "flood"})
                except (BBConnectionError, OSError) as e:
                    failures.append(e)
                    return
                results.append((sent, r.status))

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) > 200, 20, "traffic before the reload")
        write(conf, "rate-limit = 5\nburst-size = 5\n")
        began = time.monotonic()
        report = d.client().reload()
        done = time.monotonic()
        count_at_reload = len(results)
        wait_until(lambda: len(results) > count_at_reload + 200, 20, "traffic after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not failures, failures
    assert report["applied"] is True
    assert report["changed"] == {"rate-limit": {"from": 100000.0, "to": 5.0}, "burst-size": {"from": 100000, "to": 5}}
    assert report["restart_required"] == {}
    before = [st for sent, st in results if sent < began]
    after = [st for sent, st in results if sent > done]
    assert before and set(before) == {200}
    assert set(after) <= {200, 429} and after.count(429) > len(after) // 2  # the new limit, no other answer
    assert "reload (POST /internal/reload): rate-limit changed from 100000.0 to 5.0" in d.log()


# --- an invalid file changes nothing ----------------------------------------------------------------------
def test_an_invalid_reload_changes_nothing(daemon_factory, conf) -> None:
    good = f'store-keys = "1:{K1}"\nrate-limit = 1000\nburst-size = 1000\nmemory-limit = 0\n'
    write(conf, good)
    d = daemon_factory(f"--config={conf}")
    sid = d.client("keep").create(b"kept")
    bad = {
        "rate-limit = 1\nbogus = 2\n": "unknown key 'bogus'",
        "rate-limit = 1\nburst-size = 2.5\n": "key 'burst-size': expected an integer, got float",
        'rate-limit = 1\nsite = "NOT VALID"\n': 'invalid site "NOT VALID"',
        "rate-limit = 1\nburst-size = \n": "invalid TOML",
        f'rate-limit = 1\nstore-keys = "2:{K2}"\n': "store key '1' is the current key",
        f'rate-limit = 1\nstore-keys = "1:{K2}"\n': "store key '1' is the current key",  # new bytes, same id
        'rate-limit = 1\nstore-keys = "1:abc"\n': "failed to parse store keys",
    }
    for text, reason in bad.items():
        write(conf, text)
        err = refused(d, reason)
        assert f"reload (POST /internal/reload) refused, nothing changed: {err.message}" in d.log()
    conf.unlink()
    refused(d, "No such file or directory")
    # nothing was applied: the rate limit still admits a burst, the key still opens the store
    with d.client("keep") as c:
        for _ in range(30):
            assert c.snapshot(sid).body == b"kept"
    assert metric(d, "bbd_config_reloads_total", result="refused") == len(bad) + 1
    assert metric(d, "bbd_config_reloads_total", result="applied") == 0
    write(conf, good)
    report = d.client().reload()  # the same file again: nothing differs from what runs
    assert (report["changed"], report["restart_required"]) == ({}, {})
    assert metric(d, "bbd_config_reloads_total", result="applied") == 1


# --- store keys -------------------------------------------------------------------------------------------
def test_key_rotation_by_reload_keeps_old_ids_readable(daemon_factory, conf, cust) -> None:
    write(conf, f'store-keys = "1:{K1}"\n')
    d = daemon_factory(f"--config={conf}")
    c = d.client(cust)
    old = c.create(b"old")
    assert old.startswith("v1:1:")

    # 1. add key 2 and make it current
    write(conf, f'store-keys = "1:{K1},2:{K2}"\nstore-key-current = "2"\n')
    report = c.reload()
    assert report["changed"] == {
        "store-keys": {"from": {"ids": ["1"], "current": "1"}, "to": {"ids": ["1", "2"], "current": "2"}}
    }
    new = c.create(b"new")
    assert new.startswith("v1:2:")
    assert (c.snapshot(old).body, c.snapshot(new).body) == (b"old", b"new")

    # 2. a shard restarted after the reload starts with the new keys
    victim = 1 - shard_of(old, 2)
    pid = d.status()["shards"][victim]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: (s := d.status()["shards"][victim])["up"] and s["pid"] != pid, 20, "the shard's replacement")
    d.children = psutil.Process(d.proc.pid).children(recursive=True)
    ids = [c.create(b"%d" % i) for i in range(16)]
    assert {shard_of(i, 2) for i in ids} == {0, 1}
    assert [c.snapshot(i).body for i in ids] == [b"%d" % i for i in range(16)]
    assert c.snapshot(old).body == b"old"
    new = ids[0]  # created after the restart: still there whichever shard went

    # 3. key 1 seals a live store: it cannot go, and nothing else in that file is applied
    write(conf, f'store-keys = "2:{K2}"\nrate-limit = 1\n')
    refused(d, "store key '1' is still in use (1 stores sealed with it)")
    assert c.snapshot(old).body == b"old"

    # 4. a key that seals nothing can be added and removed
    write(conf, f'store-keys = "1:{K1},2:{K2},3:{K3}"\nstore-key-current = "2"\n')
    assert c.reload()["changed"]["store-keys"]["to"] == {"ids": ["1", "2", "3"], "current": "2"}
    write(conf, f'store-keys = "1:{K1},2:{K2}"\nstore-key-current = "2"\n')
    assert c.reload()["changed"]["store-keys"]["to"] == {"ids": ["1", "2"], "current": "2"}
    assert c.snapshot(new).body == b"0"

    # 5. once its last store is gone, key 1 can be retired; its IDs stop opening
    c.delete(old)
    write(conf, f'store-keys = "2:{K2}"\n')
    assert c.reload()["changed"]["store-keys"]["to"] == {"ids": ["2"], "current": "2"}
    assert snap(d, cust, old).body == b"invalid store ID\n"
    assert c.snapshot(new).body == b"0"


def test_key_removal_waits_for_every_shard(daemon_factory, conf) -> None:
    """Whether a key is in use is known only when every shard has counted: a shard that does not answer
    refuses the reload (nothing changes), and the reload works once its replacement is up."""
    write(conf, f'store-keys = "1:{K1},2:{K2}"\nstore-key-current = "2"\n')
    d = daemon_factory(f"--config={conf}")
    pid = d.shard_pids()[0]
    write(conf, f'store-keys = "2:{K2}"\nrate-limit = 1\n')
    os.kill(pid, signal.SIGSTOP)  # hung: the pool kills and replaces it after 2 s without a ping answer
    try:
        refused(d, "cannot check whether store key '1' is in use: shard 0 is not answering; try again")
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    wait_until(lambda: (s := d.status()["shards"][0])["up"] and s["pid"] != pid, 20, "the shard's replacement")
    d.children = psutil.Process(d.proc.pid).children(recursive=True)
    assert d.client().reload()["changed"] == {
        "store-keys": {"from": {"ids": ["1", "2"], "current": "2"}, "to": {"ids": ["2"], "current": "2"}},
        "rate-limit": {"from": 100.0, "to": 1.0},
    }


def test_keys_from_the_environment_override_the_file(daemon_factory, conf) -> None:
    write(conf, f'store-keys = "1:{K1}"\nrate-limit = 7\n')
    env = {**os.environ, "SERIALD_STORE_KEYS": f"9:{K2}"}
    d = daemon_factory(f"--config={conf}", env=env)
    assert d.client().create(b"x").startswith("v1:9:")
    write(conf, f'store-keys = "1:{K1},2:{K2}"\nrate-limit = 8\n')
    report = d.client().reload()
    assert report["overridden"] == ["store-keys"]
    assert report["changed"] == {"rate-limit": {"from": 7.0, "to": 8.0}}


# --- SIGHUP -----------------------------------------------------------------------------------------------
def test_sighup_applies_limits_live(daemon_factory, conf, cust) -> None:
    write(conf, "rate-limit = 0\n")
    d = daemon_factory(f"--config={conf}")
    c = d.client(cust)
    ids = [c.create(b"x" * 100) for _ in range(3)]
    write(
        conf,
        "rate-limit = 0\nmemory-limit = 1200\ncustomer-memory-quota = 100000\n"
        'tombstone-global-limit = 1\nlog-level = "debug"\n',
    )
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: metric(d, "bbd_config_reloads_total", result="applied") == 1, 10, "the SIGHUP reload")
    assert metric(d, "bbd_memory_limit_bytes") == 1200
    assert metric(d, "bbd_customer_memory_quota_bytes") == 100000
    assert metric(d, "bbd_config_last_reload_timestamp_seconds") > time.time() - 60
    r = call(d, "/api/v1/create", cust, b"y" * 500)  # 3 × 356 bytes used, 1200 allowed
    assert (r.status, r.headers.get("bigbunny-error-code")) == (507, "CapacityExceeded")
    c.delete(ids[0])
    r = call(d, f"/api/v1/delete/{ids[1]}", cust)
    assert (r.status, r.headers.get("bigbunny-error-code")) == (429, "TombstoneLimitExceeded")
    log = d.log()
    for line in (
        "reload (SIGHUP): memory-limit changed from 0 to 1200",
        "reload (SIGHUP): customer-memory-quota changed from 0 to 100000",
        "reload (SIGHUP): tombstone-global-limit changed from 0 to 1",
        "reload (SIGHUP): log-level changed from info to debug",
        "reload (SIGHUP) applied from",
    ):
        assert line in log, line


def test_sighup_reports_what_needs_a_restart(daemon_factory, conf) -> None:
    write(conf, 'lock-timeout = "500ms"\n')
    d = daemon_factory(f"--config={conf}")
    write(conf, 'lock-timeout = "2s"\nmax-store-size = 100\nrouting-secret = "other"\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP) applied" in d.log(), 10, "the SIGHUP reload")
    log = d.log()
    assert "reload (SIGHUP): lock-timeout differs (running 500ms, file 2s): needs a restart to apply" in log
    assert "reload (SIGHUP): max-store-size differs (running 2048, file 100): needs a restart to apply" in log
    assert "reload (SIGHUP): routing-secret differs (running (secret), file (secret))" in log
    assert "other" not in log.split("reload (SIGHUP)", 1)[1]  # never a secret's value
    assert call(d, "/api/v1/create", "c1", b"z" * 500).status == 200  # still the running 2048


def test_sighup_without_config_and_on_shards_is_harmless(daemon_factory) -> None:
    d = daemon_factory()
    shards = d.shard_pids()
    d.proc.send_signal(signal.SIGHUP)
    for pid in shards:  # a HUP for the whole process group reaches them too: they ignore it
        os.kill(pid, signal.SIGHUP)
    wait_until(lambda: "SIGHUP ignored: no --config file to reload" in d.log(), 10, "the SIGHUP log line")
    assert d.proc.poll() is None and d.shard_pids() == shards
    assert all(s["up"] for s in d.status()["shards"])


# --- the CLI and the endpoint -----------------------------------------------------------------------------
def bbd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bigbunny", *args], capture_output=True, text=True, timeout=30)


def test_bbd_reload_cli(daemon_factory, conf) -> None:
    write(conf, "rate-limit = 10\n")
    d = daemon_factory(f"--config={conf}")
    r = bbd_cli("reload", f"--uds={d.sock}")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"reloaded {conf}\n  no changes\n", "")
    write(conf, "rate-limit = 20\nmax-store-size = 100\nshards = 4\n")  # --shards=2 is on the command line
    r = bbd_cli("reload", f"-uds={d.sock}")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"reloaded {conf}\n  changed: rate-limit 10.0 -> 20.0\n"
        "  needs a restart: max-store-size 2048 -> 100\n"
        "  ignored: shards (set by a flag or environment variable)\n"
    )
    r = bbd_cli("reload", "--json", f"--uds={d.sock}")
    assert r.stdout.startswith('{"applied":true,') and '"changed":{}' in r.stdout
    write(conf, "rate-limit = fast\n")
    r = bbd_cli("reload", f"--uds={d.sock}")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.startswith(f"reload failed: config file {conf}: invalid TOML: ")


def test_reload_endpoint_without_config(daemon_factory) -> None:
    d = daemon_factory()
    r = call(d, "/internal/reload")
    assert (r.status, r.headers.get("bigbunny-error-code"), r.headers.get("content-type")) == (
        409,
        "NoConfigFile",
        "application/json",
    )
    assert r.body == b'{"applied":false,"error":"no config file to reload (start bbd with --config)"}\n'
    assert call(d, "/internal/reload", method="GET").status == 405
    r = bbd_cli("reload", f"--uds={d.sock}")
    assert (r.returncode, r.stderr) == (1, "reload failed: no config file to reload (start bbd with --config)\n")


def test_bad_config_file_stops_the_start(conf) -> None:
    write(conf, "rate-limit = 5\nburst_size = 3\n")
    r = bbd_cli("--dev", f"--config={conf}", "--uds=/tmp/bbd-never.sock")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"config file {conf}: unknown key 'burst_size' (did you mean 'burst-size'? keys are the long flag names)"
    )


# --- a pair -----------------------------------------------------------------------------------------------
def test_key_rotation_across_a_pair(cluster, conf, cust) -> None:
    """The documented order: add the key on both nodes, then make it current on both; replicated IDs sealed
    with the new key open on the secondary, and its replicas keep the old key in use there too."""
    write(conf, f'store-keys = "1:{K1}"\n')
    rig = cluster(f"--config={conf}")
    p, s = rig.n1.client(cust), rig.n2.client(cust)
    old = p.create(b"old")
    wait_until(lambda: snap(rig.n2.d, cust, old).status == 200, 10, "the old store on the secondary")
    write(conf, f'store-keys = "1:{K1},2:{K2}"\nstore-key-current = "1"\n')  # 1. add, on both
    for c in (s, p):
        assert c.reload()["changed"]["store-keys"]["to"] == {"ids": ["1", "2"], "current": "1"}
    write(conf, f'store-keys = "1:{K1},2:{K2}"\nstore-key-current = "2"\n')  # 2. switch, on both
    for c in (s, p):
        assert c.reload()["changed"]["store-keys"]["to"] == {"ids": ["1", "2"], "current": "2"}
    new = p.create(b"new")
    assert new.startswith("v1:2:")
    wait_until(lambda: snap(rig.n2.d, cust, new).status == 200, 10, "the new store on the secondary")
    assert (s.snapshot(old).body, s.snapshot(new).body) == (b"old", b"new")
    write(conf, f'store-keys = "2:{K2}"\n')  # 3. too early: the secondary's replica still uses key 1
    refused(rig.n2.d, "store key '1' is still in use (1 stores sealed with it)")


# --- the socket and TTL flags in the file (issue 13: 1, 2, 5 with 4) ---------------------------------------
@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="bbr", dir="/tmp")  # short: UDS paths max out at 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_socket_and_ttl_flags_from_the_file_and_reload_on_the_admin_socket(daemon_factory, conf, sockdir) -> None:
    admin = os.path.join(sockdir, "admin")
    write(conf, f'admin-uds = "{admin}"\nuds-mode = "0660"\nmax-ttl = "1h"\ndefault-ttl = 1800\nrate-limit = 10\n')
    d = daemon_factory(f"--config={conf}")
    assert stat.S_IMODE(os.lstat(d.sock).st_mode) == 0o660
    assert stat.S_IMODE(os.lstat(admin).st_mode) == 0o600
    long = {"BigBunny-Not-Valid-After": "3601"}
    assert_error(
        call(d, "/api/v1/create", "ttl", b"x", long), 400, "TTL above the maximum of 3600 seconds", "TTLTooLong"
    )
    sid = d.client("ttl").create(b"x")
    assert 1790 <= int(snap(d, "ttl", sid).headers["bigbunny-not-valid-after"]) <= 1800
    # /internal/reload (like every /internal/ route) is on the admin socket only; bbd reload goes there.
    assert_error(call(d, "/internal/reload"), 404, "page not found")
    r = bbd_cli("reload", f"--uds={d.sock}")
    assert (r.returncode, r.stderr) == (1, "reload failed: page not found\n")
    write(conf, f'admin-uds = "{admin}2"\nuds-mode = "0600"\nmax-ttl = "2h"\ndefault-ttl = 1800\nrate-limit = 20\n')
    r = bbd_cli("reload", "--json", f"--uds={d.sock}", f"--admin-uds={admin}")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["changed"] == {"rate-limit": {"from": 10.0, "to": 20.0}}
    assert report["restart_required"] == {
        "admin-uds": {"from": admin, "to": f"{admin}2"},
        "uds-mode": {"from": "0660", "to": "0600"},
        "max-ttl": {"from": 3600, "to": 7200},
    }
    # The running sockets and bound stay until a restart.
    assert stat.S_IMODE(os.lstat(d.sock).st_mode) == 0o660 and not os.path.exists(f"{admin}2")
    assert_error(
        call(d, "/api/v1/create", "ttl", b"x", long), 400, "TTL above the maximum of 3600 seconds", "TTLTooLong"
    )
    assert "reload (POST /internal/reload): max-ttl differs (running 3600, file 7200): needs a restart" in d.log()
