"""Two real nodes on loopback (SPEC §7, §2.12, §3, §14): roles, replication, forwarding, failover,
join, fencing, the lock-state-unknown window, DegradedWrite, link authentication.

node1 is the first host (initial PRIMARY), node2 its SECONDARY. Nodes are killed with SIGKILL,
partitioned with SIGSTOP/SIGCONT and restarted on the same host ID and port. Every wait is a bounded
poll; the only sleeps that are not polls are the behaviour under test (a partition's length, or a
window in which something must *not* happen).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ClusterNode, ClusterRig
from helpers import wait_until

from bigbunny.client import BBClient, BBConnectionError, BBError
from bigbunny.durations import NEVER_NS, format_duration, parse_duration

NEVER = format_duration(NEVER_NS)
FLAGS = ("--rate-limit=0",)
ENV_KEY = "cd" * 32


# --- helpers ---------------------------------------------------------------------------------------
def role_of(n: ClusterNode) -> tuple[str, int]:
    st = n.status()
    return st["role"], st["leader_epoch"]


def has(c: BBClient, sid: str, body: bytes) -> bool:
    try:
        return c.snapshot(sid).body == body
    except BBError:
        return False


def has_json(c: BBClient, sid: str, doc: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(c.snapshot(sid).body) == doc)
    except BBError:
        return False


def is_404(c: BBClient, sid: str) -> bool:
    try:
        c.snapshot(sid)
    except BBError as e:
        return e.status == 404
    return False


def raw(
    n: ClusterNode, path: str, body: bytes = b"", customer: str = "c1", headers: dict[str, str] | None = None
) -> Any:
    """One POST, any status: the client's Response (status, lower-cased headers, body)."""
    with BBClient(n.d.sock) as c:
        return c.request("POST", path, {"X-Customer-ID": customer, **(headers or {})}, body)


def expect_error(fn: Callable[[], Any], status: int, code: str | None) -> BBError:
    with pytest.raises(BBError) as e:
        fn()
    assert (e.value.status, e.value.code) == (status, code), repr(e.value)
    return e.value


def populate(n: ClusterNode, customer: str, blobs: int = 10) -> dict[str, Any]:
    """Blobs, a counter and a named store on ``n``; returns what to check later."""
    c = n.client(customer)
    data: dict[str, Any] = {"blobs": {}}
    for i in range(blobs):
        body = f"{customer}-{i}".encode()
        data["blobs"][c.create(body)] = body
    data["counter"] = c.create_counter(10, min=0, max=1000)
    c.increment(data["counter"], 5)
    data["named"] = c.create_by_name(f"{customer}-name", b"named body")
    return data


def intact(n: ClusterNode, customer: str, data: dict[str, Any]) -> bool:
    """All of ``populate``'s data readable on ``n`` (served locally on any non-JOINING role)."""
    c = n.client(customer)
    try:
        if any(c.snapshot(sid).body != body for sid, body in data["blobs"].items()):
            return False
        if json.loads(c.snapshot(data["counter"]).body)["value"] != 15:
            return False
        return c.lookup(f"{customer}-name") == data["named"] and c.snapshot(data["named"]).body == b"named body"
    except BBError:
        return False


def replicated(rig: ClusterRig, customer: str, data: dict[str, Any], timeout: float = 5.0) -> None:
    """``data`` held by node2 itself (a JOINING node would relay the reads: role checked around them)."""

    def secondary() -> bool:
        return role_of(rig.n2)[0] == "SECONDARY"

    def held() -> bool:
        return secondary() and intact(rig.n2, customer, data) and secondary()

    wait_until(held, timeout, "replication to node2")


def exactly_one_primary(rig: ClusterRig) -> tuple[dict, dict]:
    s1, s2 = rig.n1.status(), rig.n2.status()
    assert sorted([s1["role"], s2["role"]]) == ["PRIMARY", "SECONDARY"], (s1["role"], s2["role"])
    assert s1["leader_epoch"] == s2["leader_epoch"]
    return s1, s2


def prod_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERIALD_")}
    env.update(
        SERIALD_STORE_KEYS=f"k1:{ENV_KEY}", SERIALD_ROUTING_SECRET="cluster-secret", SERIALD_INTERNAL_TOKEN=token
    )
    return env


# --- a steady pair, shared by the tests that don't change roles ------------------------------------
@pytest.fixture(scope="class")
def pair() -> Iterator[ClusterRig]:
    rig = ClusterRig(*FLAGS).start()
    yield rig
    failures = rig.close()
    assert not failures, "\n".join(failures)


class TestSteadyPair:
    """node1 PRIMARY, node2 SECONDARY throughout (one pair for the class)."""

    def test_initial_roles_and_status(self, pair: ClusterRig) -> None:
        s1, s2 = pair.n1.status(), pair.n2.status()
        assert (s1["role"], s1["leader_epoch"]) == ("PRIMARY", 1)
        assert (s2["role"], s2["leader_epoch"]) == ("SECONDARY", 1)
        for st, peer in ((s1, "node2"), (s2, "node1")):
            assert list(st["peers"]) == [peer], st["peers"]  # §14: listed on the primary too
            assert st["peers"][peer] != NEVER and parse_duration(st["peers"][peer]) < 1.5, st["peers"]
            assert st["queue_length"] == 0 and st["registry_queue_length"] == 0
            assert st["replication_fail_count"] == 0 and st["last_replication_fail"] == ""
            assert st["replication_dropped"] == 0
            assert parse_duration(st["last_leader_seen"]) < 60
        assert s1["host_id"] == "node1" and s2["host_id"] == "node2"
        assert parse_duration(s2["last_leader_seen"]) < 1.5  # heartbeats every 200 ms

    def test_write_on_primary_readable_on_secondary(self, pair: ClusterRig) -> None:
        p, s = pair.n1.client("repl"), pair.n2.client("repl")
        sid = p.create(b"v1")
        assert p.last_warning is None
        wait_until(lambda: has(s, sid, b"v1"), 5, "the create on node2")
        p.update(sid, b"v2")
        wait_until(lambda: has(s, sid, b"v2"), 5, "the update on node2")
        ctr = p.create_counter(0)
        p.increment(ctr, 7)
        wait_until(lambda: has_json(s, ctr, {"value": 7, "version": 2}), 5, "the counter on node2")
        p.delete(sid)
        wait_until(lambda: is_404(s, sid), 5, "the delete on node2")
        wait_until(lambda: pair.n1.status()["queue_length"] == 0, 5, "the primary's window to empty")

    def test_secondary_forwards_writes_verbatim(self, pair: ClusterRig) -> None:
        n1, n2 = pair.n1, pair.n2
        p = n1.client("fwd")
        # create
        r = raw(n2, "/api/v1/create", b"hello", "fwd")
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain"), r
        sid = r.text
        assert p.snapshot(sid).body == b"hello"  # executed on the primary: there at once
        # update
        r = raw(n2, f"/api/v1/update/{sid}", b"bye", "fwd")
        assert (r.status, r.body, r.headers.get("content-length")) == (200, b"", "0")
        assert p.snapshot(sid).body == b"bye"
        # increment (and a forwarded error keeps status, code and body)
        ctr = p.create_counter(1, min=0, max=5)
        r = raw(n2, f"/api/v1/increment/{ctr}", b'{"delta":10}', "fwd")
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        assert json.loads(r.body) == {"value": 5, "version": 2, "bounded": True, "min": 0, "max": 5}
        r = raw(n2, f"/api/v1/increment/{sid}", b'{"delta":1}', "fwd")
        assert (r.status, r.headers.get("bigbunny-error-code")) == (400, "TypeMismatch")
        assert r.body == b"store type mismatch\n"
        # delete
        r = raw(n2, f"/api/v1/delete/{sid}", b"", "fwd")
        assert r.status == 200
        assert is_404(p, sid)
        # create-by-name, then a conflicting one (409 from the primary, verbatim), then delete-by-name
        r = raw(n2, "/api/v1/create-by-name/fwd-name", b"named", "fwd")
        assert r.status == 200
        named = r.text
        assert p.lookup("fwd-name") == named and p.snapshot(named).body == b"named"
        r = raw(n2, "/api/v1/create-by-name/fwd-name", b"again", "fwd")
        assert (r.status, r.body) == (409, b"name already exists\n"), r
        r = raw(n2, "/api/v1/delete-by-name/fwd-name", b"", "fwd")
        assert r.status == 200
        expect_error(lambda: p.lookup("fwd-name"), 404, "NotFound")
        # the secondary converges on all of it
        s = n2.client("fwd")
        ctr_doc = {"value": 5, "version": 2, "min": 0, "max": 5}
        wait_until(
            lambda: is_404(s, sid) and is_404(s, named) and has_json(s, ctr, ctr_doc),
            5,
            "forwarded writes to replicate back to node2",
        )

    def test_no_forward_header_on_secondary(self, pair: ClusterRig) -> None:
        r = raw(pair.n2, "/api/v1/create", b"x", "nofwd", {"X-BB-No-Forward": "true"})
        assert r.status == 503
        assert r.body == b"not primary (forwarding disabled)\n"
        assert r.headers.get("bigbunny-error-code") == "LeaderChanged" and r.headers.get("retry-after") == "1"
        # ignored on the primary
        r = raw(pair.n1, "/api/v1/create", b"x", "nofwd", {"X-BB-No-Forward": "true"})
        assert r.status == 200

    def test_reads_served_locally_on_secondary(self, pair: ClusterRig) -> None:
        """Snapshot and lookup on the secondary work while the primary is frozen: they are not relayed."""
        p, s = pair.n1.client("local"), pair.n2.client("local", timeout=1.0)
        sid = p.create_by_name("local-name", b"here")
        wait_until(lambda: has(s, sid, b"here"), 5, "the named store on node2")
        pair.n1.pause()
        try:
            for _ in range(3):
                assert s.snapshot(sid).body == b"here"
                assert s.lookup("local-name") == sid
            r = raw(pair.n2, "/api/v1/snapshot/" + sid, b"", "local")
            assert r.status == 200 and r.headers["content-type"] == "application/octet-stream"
        finally:
            pair.n1.resume()


# --- failover ---------------------------------------------------------------------------------------
def test_kill9_failover_lock_window_and_rejoin(cluster) -> None:
    rig = cluster(*FLAGS, "--lock-timeout=2s")
    data = populate(rig.n1, "fo")
    replicated(rig, "fo", data)
    c2 = rig.n2.client("fo")
    locked = rig.n1.client("fo").create(b"lockme")
    wait_until(lambda: has(c2, locked, b"lockme"), 5, "replication")

    t0 = time.monotonic()
    rig.n1.kill()
    wait_until(lambda: rig.n2.status()["role"] == "PRIMARY", 8, "node2 to promote", every=0.01)
    failover = time.monotonic() - t0
    # --- the lock-state-unknown window (2 s here): lock-taking and counter writes are refused
    for fn in (
        lambda: c2.begin_modify(locked),
        lambda: c2.update(locked, b"x"),
        lambda: c2.increment(data["counter"], 1),
    ):
        e = expect_error(fn, 409, "LockStateUnknown")
        assert e.retry_after == 1 and e.headers.get("bigbunny-lock-state") == "unknown"
        assert e.message == "lock state unknown"
    fresh = c2.create(b"during the window")  # create and delete are unaffected
    c2.delete(fresh)
    assert failover < 6.0, f"failover took {failover:.2f} s"
    st = rig.n2.status()
    assert st["role"] == "PRIMARY" and st["leader_epoch"] == 2
    assert intact(rig.n2, "fo", data)
    # the window closes (bounded) and locks work again
    m = wait_until(lambda: _try(lambda: c2.begin_modify(locked)), 4, "the lock window to close")
    c2.complete_modify(locked, m.lock_id, b"after")
    print(f"failover after SIGKILL: {failover:.2f} s")

    # --- the old primary comes back: it joins as SECONDARY with everything
    rig.n1.start()
    wait_until(lambda: role_of(rig.n1) == ("SECONDARY", 2), 10, "node1 to rejoin as SECONDARY")
    assert intact(rig.n1, "fo", data)
    c1 = rig.n1.client("fo")
    assert c1.snapshot(locked).body == b"after" and is_404(c1, fresh)
    exactly_one_primary(rig)


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BBError:
        return None


def test_quick_restart_of_primary_loses_nothing(cluster) -> None:
    rig = cluster(*FLAGS)
    data = populate(rig.n1, "qr")
    late = rig.n1.client("qr").create(b"just before the restart")  # not waited for: SIGTERM flushes it
    t0 = time.monotonic()
    rig.n1.restart()  # SIGTERM (exit 0 required), then the same node again at once
    # node2 sees its leader come back empty and takes over at once, well within the 4 s lease
    wait_until(lambda: role_of(rig.n2) == ("PRIMARY", 2), 10, "node2 to take over")
    wait_until(lambda: role_of(rig.n1) == ("SECONDARY", 2), 10, "node1 to join node2")
    took = time.monotonic() - t0
    for n in (rig.n1, rig.n2):
        assert intact(n, "qr", data), n.host_id
        assert n.client("qr").snapshot(late).body == b"just before the restart"
    exactly_one_primary(rig)
    print(f"quick restart: roles swapped {took:.2f} s after the SIGTERM")


def test_tombstones_never_resurrect(cluster) -> None:
    rig = cluster(*FLAGS)
    p, s = rig.n1.client("tomb"), rig.n2.client("tomb")
    a, b = p.create(b"a"), p.create(b"b")
    wait_until(lambda: has(s, a, b"a") and has(s, b, b"b"), 5, "replication")
    p.delete(a)
    wait_until(lambda: is_404(s, a), 5, "the delete on node2")
    # restart the secondary: it rejoins (a full snapshot) and `a` stays gone
    rig.n2.restart()
    wait_until(lambda: role_of(rig.n2) == ("SECONDARY", 1), 10, "node2 to rejoin")
    s = rig.n2.client("tomb")
    assert has(s, b, b"b") and is_404(s, a) and is_404(p, a)
    # delete while the secondary is down, then let it come back
    rig.n2.kill()
    p.delete(b)
    rig.n2.start()
    wait_until(lambda: role_of(rig.n2) == ("SECONDARY", 1), 10, "node2 to rejoin")
    s = rig.n2.client("tomb")
    for sid in (a, b):
        assert is_404(p, sid) and is_404(s, sid)
    assert rig.n2.status()["tombstone_count"] >= 2  # the tombstones came with the snapshot


def test_secondary_rejoins_under_write_load(cluster) -> None:
    """Writes keep flowing while node2 restarts and joins: whatever the join snapshot misses comes by
    the stream (records refused while JOINING are re-sent), and no gap forces another join."""
    rig = cluster(*FLAGS)
    bulk = {
        rig.n1.client("load").create(b"x" * 100 + str(i).encode()): b"x" * 100 + str(i).encode() for i in range(1200)
    }  # more than one join chunk
    acked: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def writer() -> None:
        c = rig.n1.client("load", retries=10)  # JoinSyncing (the barrier) is retried
        i = 0
        while not stop.is_set():
            body = f"w{i}".encode()
            acked.append((c.create(body), body))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_until(lambda: len(acked) >= 50, 10, "writes before the restart")
        rig.n2.restart()
        wait_until(lambda: role_of(rig.n2) == ("SECONDARY", 1), 10, "node2 to rejoin")
        n = len(acked)
        wait_until(lambda: len(acked) >= n + 100, 10, "writes after the join")
    finally:
        stop.set()
        t.join(10)
    s = rig.n2.client("load")
    wait_until(lambda: rig.n1.status()["queue_length"] == 0, 5, "the primary's window to empty")
    missing = [sid for sid, body in [*acked, *bulk.items()] if not has(s, sid, body)]
    assert not missing, f"{len(missing)} writes missing on node2"
    assert rig.n2.d.log().count("role SECONDARY") == 1, "joined more than once"


def test_sigterm_of_primary_flushes_replication(cluster) -> None:
    rig = cluster(*FLAGS)
    acked: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def writer() -> None:
        c = rig.n1.client("flush", timeout=5.0)
        i = 0
        while not stop.is_set():
            body = f"w{i}".encode()
            try:
                acked.append((c.create(body), body))
            except (BBError, BBConnectionError):
                return  # the node is going away: everything acknowledged so far must survive
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    wait_until(lambda: len(acked) >= 300, 20, "a burst of writes")
    rig.n1.d.proc.send_signal(signal.SIGTERM)  # while the writer is still going
    rc = rig.n1.d.proc.wait(10)
    stop.set()
    t.join(10)
    assert rc == 0, rig.n1.d.log()[-3000:]
    assert "replication flush on shutdown: incomplete" not in rig.n1.d.log()
    wait_until(lambda: rig.n2.status()["role"] == "PRIMARY", 8, "node2 to promote")
    s = rig.n2.client("flush")
    missing = [sid for sid, body in acked if not has(s, sid, body)]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost"


def test_operator_promote_on_secondary(cluster) -> None:
    rig = cluster(*FLAGS)
    data = populate(rig.n1, "op")
    replicated(rig, "op", data)
    with BBClient(rig.n2.d.sock) as c:
        assert c.promote() == "promoted"
    assert role_of(rig.n2) == ("PRIMARY", 2)
    # the old primary sees the higher epoch, steps down and re-joins from node2
    wait_until(lambda: role_of(rig.n1) == ("SECONDARY", 2), 10, "node1 to step down and rejoin")
    exactly_one_primary(rig)
    assert intact(rig.n1, "op", data) and intact(rig.n2, "op", data)
    # writes now go to node2, directly or forwarded by node1, and replicate back
    sid = rig.n1.client("op").create(b"via node1")
    assert rig.n2.client("op").snapshot(sid).body == b"via node1"
    wait_until(lambda: has(rig.n1.client("op"), sid, b"via node1"), 5, "replication to node1")


def test_long_partition_resolves_to_one_primary(cluster) -> None:
    rig = cluster(*FLAGS)
    data = populate(rig.n1, "part")
    replicated(rig, "part", data)
    gone_sid = next(iter(data["blobs"]))
    rig.n1.pause()  # a partition: node1 hears and says nothing
    t0 = time.monotonic()
    try:
        wait_until(lambda: rig.n2.status()["role"] == "PRIMARY", 6, "node2 to promote during the partition")
        c2 = rig.n2.client("part")
        during = c2.create(b"written during the partition")
        c2.delete(gone_sid)
        time.sleep(max(0.0, 6.0 - (time.monotonic() - t0)))  # the partition's length is the behaviour under test
    finally:
        rig.n1.resume()
    # node1 comes back believing it is PRIMARY at epoch 1; node2 leads at epoch 2
    wait_until(lambda: role_of(rig.n1) == ("SECONDARY", 2), 10, "node1 to step down and rejoin")
    s1, s2 = exactly_one_primary(rig)
    assert s2["role"] == "PRIMARY" and s2["leader_epoch"] == 2
    c1 = rig.n1.client("part")
    assert c1.snapshot(during).body == b"written during the partition"
    assert is_404(c1, gone_sid) and is_404(rig.n2.client("part"), gone_sid)
    del data["blobs"][gone_sid]
    assert intact(rig.n1, "part", data) and intact(rig.n2, "part", data)


def test_degraded_write_while_secondary_is_down(cluster) -> None:
    rig = cluster(*FLAGS)
    p = rig.n1.client("deg")
    p.create(b"healthy")
    assert p.last_warning is None
    rig.n2.kill()
    written: dict[str, bytes] = {}

    def flagged() -> bool:
        body = f"d{len(written)}".encode()
        written[p.create(body)] = body
        return p.last_warning == "DegradedWrite"

    wait_until(flagged, 8, "writes on the primary to carry DegradedWrite", every=0.1)
    st = rig.n1.status()
    assert st["replication_fail_count"] > 0 and st["last_replication_fail"] != "", st
    # the secondary comes back: it re-joins and gets everything written meanwhile; the warning stops
    rig.n2.start()
    wait_until(lambda: role_of(rig.n2) == ("SECONDARY", 1), 10, "node2 to rejoin")
    s = rig.n2.client("deg")
    assert all(has(s, sid, body) for sid, body in written.items())

    def clean() -> bool:
        p.create(b"after")
        return p.last_warning is None

    wait_until(clean, 10, "the DegradedWrite warning to stop", every=0.1)
    assert rig.n1.status()["replication_fail_count"] == 0


def test_frozen_secondary_does_not_take_over(cluster) -> None:
    """A secondary frozen past its lease must not promote on resume: the primary is healthy and
    the secondary missed its writes (they arrive by re-send instead)."""
    rig = cluster(*FLAGS)
    p = rig.n1.client("frz")
    written: dict[str, bytes] = {}
    rig.n2.pause()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 5.0:  # frozen past the 4 s lease: the behaviour under test
            body = f"f{len(written)}".encode()
            written[p.create(body)] = body
            time.sleep(0.05)
        assert p.last_warning == "DegradedWrite"
    finally:
        rig.n2.resume()
    s = rig.n2.client("frz")
    wait_until(lambda: all(has(s, sid, body) for sid, body in written.items()), 5, "node2 to catch up")
    assert role_of(rig.n1) == ("PRIMARY", 1) and role_of(rig.n2) == ("SECONDARY", 1)
    assert "lease expired" not in rig.n2.d.log()
    wait_until(lambda: rig.n1.status()["queue_length"] == 0, 5, "the primary's window to empty")


# --- link authentication ------------------------------------------------------------------------------
def test_wrong_token_peer_is_refused(cluster) -> None:
    rig = cluster(*FLAGS, dev=False, env=prod_env("the-right-token"), env2=prod_env("a-wrong-token"), converge=False)
    n1, n2 = rig.n1, rig.n2
    wait_until(lambda: n1.status()["role"] == "PRIMARY", 10, "node1 to lead on its own")
    good = n1.client("auth")
    sid = good.create(b"good data")
    before = n1.status()
    # node2 can't reach node1: forced to lead, at a HIGHER epoch — if its heartbeats got through,
    # node1 would step down and join it (losing its data)
    with BBClient(n2.d.sock) as c:
        while role_of(n2)[1] < 2:  # it may already have led on its own (never saw a primary)
            c.promote()
    assert role_of(n2)[0] == "PRIMARY"
    bad = n2.client("auth")
    injected = bad.create(b"injected")
    deadline = time.monotonic() + 2.0  # a window in which nothing may cross: the behaviour under test
    while time.monotonic() < deadline:
        assert role_of(n1) == ("PRIMARY", 1)
        assert role_of(n2)[0] != "SECONDARY"
        time.sleep(0.1)
    after = n1.status()
    assert after["store_count"] == before["store_count"]
    assert after["peers"] == {"node2": NEVER}  # nothing from node2 was ever accepted
    assert n2.status()["peers"] == {"node1": NEVER}
    assert good.snapshot(sid).body == b"good data"
    expect_error(lambda: good.snapshot(injected), 404, "NotFound")
    expect_error(lambda: bad.snapshot(sid), 404, "NotFound")


def test_same_token_production_pair_replicates(cluster) -> None:
    rig = cluster(*FLAGS, dev=False, env=prod_env("shared-token"))
    data = populate(rig.n1, "prod")
    replicated(rig, "prod", data)
    assert next(iter(data["blobs"])).startswith("v1:k1:")
    sid = rig.n2.client("prod").create(b"forwarded")  # the relay works over CURVE too
    wait_until(lambda: has(rig.n2.client("prod"), sid, b"forwarded"), 5, "replication back to node2")
    assert "internal token is empty" not in rig.n1.d.log()
