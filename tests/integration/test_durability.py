"""What an acknowledged write can lose (SPEC §15), on two real nodes: the lead re-confirmed after a
freeze, ``--min-replicas-max-lag``, ``BigBunny-Replicas: 1``, and every request answered within a
bound while the primary freezes.

node1 is the first host (initial PRIMARY), node2 its SECONDARY. A node is frozen with SIGSTOP of its
whole process tree (supervisor and shards), which also cuts it off: it neither hears nor answers.
The sleeps that are not polls are the behaviour under test (a freeze's length).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
from conftest import ClusterNode, ClusterRig, Daemon
from helpers import wait_until

from bigbunny.client import BBClient, BBConnectionError, Response

FLAGS = ("--rate-limit=0",)
REPLICAS = {"BigBunny-Replicas": "1"}
RELAY_BOUND = 5.5  # a request relayed by a live node is answered within the 5 s relay timeout


def post(
    sock: str,
    path: str,
    body: bytes = b"",
    customer: str = "c1",
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> Response:
    """One POST on a fresh connection (never retried: a write must not be sent twice)."""
    with BBClient(sock, timeout=timeout) as c:
        return c.request("POST", path, {"X-Customer-ID": customer, **(headers or {})}, body)


def role_of(n: ClusterNode) -> tuple[str, int]:
    st = n.status()
    return st["role"], st["leader_epoch"]


def tree(n: ClusterNode) -> list[psutil.Process]:
    p = psutil.Process(n.d.proc.pid)
    return [p, *p.children(recursive=True)]


def freeze(procs: list[psutil.Process]) -> None:
    for p in procs:
        p.send_signal(signal.SIGSTOP)


def thaw(procs: list[psutil.Process]) -> None:
    for p in reversed(procs):  # shards first: a reply they hold is waiting when the supervisor resumes
        p.send_signal(signal.SIGCONT)


def held_by(n: ClusterNode, customer: str, sid: str, body: bytes) -> bool:
    r = post(n.d.sock, f"/api/v1/snapshot/{sid}", customer=customer)
    return r.status == 200 and r.body == body


# --- BigBunny-Replicas: 1 -----------------------------------------------------------------------------
@pytest.fixture(scope="class")
def rig() -> Iterator[ClusterRig]:
    rig = ClusterRig(*FLAGS).start()
    yield rig
    failures = rig.close()
    assert not failures, "\n".join(failures)


class TestReplicasHeader:
    def test_every_write_is_on_the_secondary_when_answered(self, rig: ClusterRig) -> None:
        p, s = rig.n1.d.sock, rig.n2.d.sock
        r = post(p, "/api/v1/create", b"one", "rep", REPLICAS)
        assert r.status == 200 and "bigbunny-warning" not in r.headers, r
        sid = r.text
        assert held_by(rig.n2, "rep", sid, b"one")  # no wait: visible on the secondary right away
        assert post(p, f"/api/v1/update/{sid}", b"two", "rep", REPLICAS).status == 200
        assert held_by(rig.n2, "rep", sid, b"two")
        lock = post(p, f"/api/v1/begin-modify/{sid}", customer="rep").headers["bigbunny-lock-id"]
        r = post(p, f"/api/v1/complete-modify/{sid}", b"three", "rep", {**REPLICAS, "BigBunny-Lock-ID": lock})
        assert r.status == 200, r
        assert held_by(rig.n2, "rep", sid, b"three")
        cnt = post(p, "/api/v1/create", b'{"type":"counter","value":1}', "rep", REPLICAS).text
        assert post(p, f"/api/v1/increment/{cnt}", b'{"delta":4}', "rep", REPLICAS).status == 200
        assert json.loads(post(s, f"/api/v1/snapshot/{cnt}", customer="rep").body)["value"] == 5
        assert post(p, f"/api/v1/decrement/{cnt}", b'{"delta":2}', "rep", REPLICAS).status == 200
        assert json.loads(post(s, f"/api/v1/snapshot/{cnt}", customer="rep").body)["value"] == 3
        assert post(p, f"/api/v1/delete/{sid}", b"", "rep", REPLICAS).status == 200
        assert post(s, f"/api/v1/snapshot/{sid}", customer="rep").status == 404
        r = post(p, "/api/v1/create-by-name/cart", b"named", "rep", REPLICAS)
        assert r.status == 200 and "bigbunny-warning" not in r.headers, r
        assert post(s, "/api/v1/lookup-id-by-name/cart", customer="rep").text == r.text
        assert held_by(rig.n2, "rep", r.text, b"named")
        assert post(p, "/api/v1/delete-by-name/cart", b"", "rep", REPLICAS).status == 200
        assert post(s, "/api/v1/lookup-id-by-name/cart", customer="rep").status == 404

    def test_relayed_write_carries_the_header(self, rig: ClusterRig) -> None:
        r = post(rig.n2.d.sock, "/api/v1/create", b"via node2", "rep", REPLICAS)
        assert r.status == 200 and "bigbunny-warning" not in r.headers, r
        assert held_by(rig.n2, "rep", r.text, b"via node2")  # node2's own replica, read right after

    def test_invalid_values_are_refused_and_not_applied(self, rig: ClusterRig) -> None:
        for value in ("2", "yes", "", "-1"):
            r = post(rig.n1.d.sock, "/api/v1/create", b"x", "rep", {"BigBunny-Replicas": value})
            assert (r.status, r.text, r.headers.get("bigbunny-error-code")) == (
                400,
                "invalid BigBunny-Replicas\n",
                None,
            ), r
        assert post(rig.n1.d.sock, "/api/v1/create", b"x", "rep", {"BigBunny-Replicas": "0"}).status == 200

    def test_frozen_secondary_bounds_the_wait(self, rig: ClusterRig) -> None:
        procs = tree(rig.n2)
        freeze(procs)
        try:
            t0 = time.monotonic()
            r = post(rig.n1.d.sock, "/api/v1/create", b"lonely", "rep", REPLICAS)
            waited = time.monotonic() - t0
            plain = post(rig.n1.d.sock, "/api/v1/create", b"plain", "rep")
        finally:
            thaw(procs)
        assert r.status == 200 and r.headers.get("bigbunny-warning") == "NotReplicated", r
        assert 0.9 <= waited < 2.5, waited  # --replica-wait-timeout, default 1 s
        assert plain.status == 200 and plain.headers.get("bigbunny-warning") != "NotReplicated"
        # the write stayed applied and reaches the secondary once it is back
        wait_until(lambda: held_by(rig.n2, "rep", r.text, b"lonely"), 10, "the write to reach node2")


def test_no_peer_answers_not_replicated_at_once(daemon_factory) -> None:
    d: Daemon = daemon_factory("--rate-limit=0")
    t0 = time.monotonic()
    r = post(d.sock, "/api/v1/create", b"alone", "solo", REPLICAS)
    assert r.status == 200 and r.headers.get("bigbunny-warning") == "NotReplicated", r
    assert time.monotonic() - t0 < 0.5
    assert post(d.sock, "/api/v1/create", b"x", "solo", {"BigBunny-Replicas": "maybe"}).status == 400


# --- a primary frozen past the lease -------------------------------------------------------------------
def test_frozen_primary_never_acknowledges_a_write_it_then_loses(cluster) -> None:
    """Writes queued at a primary frozen for 6 s: each is kept (answered 200 and readable on both
    nodes afterwards) or refused (503) — never 200 and gone. One was already at its shard when the
    supervisor froze (applied there, answered only after the resume); the others arrive while frozen.
    Meanwhile requests to node2 are answered within the relay bound."""
    rig = cluster(*FLAGS)
    sup, shards = tree(rig.n1)[0], tree(rig.n1)[1:]
    answers: dict[str, Response | Exception] = {}
    answered_at: dict[str, float] = {}

    def send(key: str, sock: str) -> None:
        try:
            answers[key] = post(sock, "/api/v1/create", key.encode(), "frz")
        except (BBConnectionError, OSError) as e:
            answers[key] = e
        answered_at[key] = time.monotonic()

    freeze(shards)  # the first write reaches its shard, which holds it ...
    first = threading.Thread(target=send, args=("at-shard", rig.n1.d.sock))
    first.start()
    time.sleep(0.3)
    freeze([sup])  # ... and then the whole node freezes
    t0 = time.monotonic()
    late = [threading.Thread(target=send, args=(f"queued-{i}", rig.n1.d.sock)) for i in range(3)]
    for t in late:
        t.start()
    waits = []
    try:
        while time.monotonic() - t0 < 6.0:  # the freeze's length is the behaviour under test
            t = time.monotonic()
            r = post(rig.n2.d.sock, "/api/v1/create", b"node2", "frz", timeout=RELAY_BOUND + 2)
            waits.append((time.monotonic() - t, r.status))
            time.sleep(0.2)
    finally:
        thaw([sup, *shards])
        resumed = time.monotonic()
    assert max(w for w, _ in waits) < RELAY_BOUND, waits
    assert any(status == 200 for _, status in waits), waits  # node2 took over and served writes
    for t in (first, *late):
        t.join(10)
    assert not any(t.is_alive() for t in (first, *late)), "a write to the resumed node was not answered"
    assert max(answered_at.values()) - resumed < RELAY_BOUND, {k: t - resumed for k, t in answered_at.items()}
    wait_until(lambda: role_of(rig.n1) == ("SECONDARY", 2), 15, "node1 to step down and rejoin")
    assert role_of(rig.n2) == ("PRIMARY", 2)
    for key, r in answers.items():
        assert isinstance(r, Response), (key, r)
        assert r.status in (200, 503), (key, r)
        if r.status == 200:
            assert held_by(rig.n2, "frz", r.text, key.encode()), f"{key}: acknowledged, then lost"
            assert held_by(rig.n1, "frz", r.text, key.encode())
        else:
            # refused, to retry: by node1 having lost the lead, or relayed to node2 while node1's join
            # snapshot is taken there
            assert r.headers.get("bigbunny-error-code") in ("LeaderChanged", "JoinSyncing"), (key, r)
            assert r.headers.get("retry-after") == "1", (key, r)
    at_shard = answers["at-shard"]  # applied on node1 alone, which then lost the lead: not acknowledged
    assert isinstance(at_shard, Response) and at_shard.status == 503, at_shard
    assert at_shard.text == "not primary (leadership lost)\n", at_shard


# --- --min-replicas-max-lag ----------------------------------------------------------------------------
def test_lagging_secondary_stops_writes_not_reads(cluster) -> None:
    rig = cluster(*FLAGS, "--min-replicas-max-lag=1s")
    p = rig.n1.d.sock
    keep = post(p, "/api/v1/create", b"before", "lag").text
    cnt = post(p, "/api/v1/create", b'{"type":"counter","value":0}', "lag").text
    acked: dict[str, bytes] = {}
    procs = tree(rig.n2)
    freeze(procs)  # the secondary stops acknowledging (a partition, seen from the primary)
    t0 = time.monotonic()
    refused = None
    try:
        while time.monotonic() - t0 < 5.0:
            body = f"w{len(acked)}".encode()
            r = post(p, "/api/v1/create", body, "lag")
            if r.status == 200:
                acked[r.text] = body
            else:
                refused = r, time.monotonic() - t0
                break
            time.sleep(0.05)
        assert refused is not None, "writes were never refused"
        r, after = refused
        assert (r.status, r.text, r.headers.get("bigbunny-error-code"), r.headers.get("retry-after")) == (
            503,
            "not enough replicas\n",
            "NoReplicas",
            "1",
        ), r
        assert 0.9 <= after < 2.0, after
        inc = post(p, f"/api/v1/increment/{cnt}", b'{"delta":1}', "lag")
        assert inc.headers.get("bigbunny-error-code") == "NoReplicas", inc
        assert held_by(rig.n1, "lag", keep, b"before")  # reads go on
        st = rig.n1.status()
        assert st["writes_refused_no_replicas"] >= 2 and st["replica_lag_ms"] >= 1000, st
        metrics = BBClient(p).request("GET", "/metrics").text
        assert "bbd_writes_refused_no_replicas_total " in metrics and "bbd_replica_lag_seconds " in metrics
    finally:
        thaw(procs)
    # the secondary comes back under the same primary: writes flow again, nothing acknowledged is lost
    wait_until(lambda: post(p, "/api/v1/create", b"after", "lag").status == 200, 10, "writes to be taken again")
    assert role_of(rig.n1) == ("PRIMARY", 1) and role_of(rig.n2) == ("SECONDARY", 1)
    assert json.loads(post(p, f"/api/v1/snapshot/{cnt}", customer="lag").body)["value"] == 0  # refused: not applied
    for sid, body in acked.items():
        wait_until(lambda sid=sid, body=body: held_by(rig.n2, "lag", sid, body), 5, "acknowledged writes on node2")
    # the lag falls back under the bound (bounded wait: a just-thawed secondary may be slow to ack on a busy host)
    wait_until(lambda: rig.n1.status()["replica_lag_ms"] < 1000, 5, "the replica lag to fall under the bound")


def test_takeover_keeps_writing_until_the_peer_rejoins(cluster) -> None:
    """A crash of the primary fails over to a writable node: the rule applies again once the old
    primary is back as its secondary."""
    rig = cluster(*FLAGS, "--min-replicas-max-lag=1s")
    rig.n1.kill()
    wait_until(lambda: rig.n2.status()["role"] == "PRIMARY", 8, "node2 to take over")
    time.sleep(1.5)  # longer than the bound: the peer is away, and writes still go on
    r = post(rig.n2.d.sock, "/api/v1/create", b"alone", "tk")
    assert r.status == 200, r
    rig.n1.start()
    wait_until(lambda: role_of(rig.n1) == ("SECONDARY", 2), 15, "node1 to rejoin")
    assert held_by(rig.n1, "tk", r.text, b"alone")
    procs = tree(rig.n1)
    freeze(procs)
    try:
        wait_until(
            lambda: post(rig.n2.d.sock, "/api/v1/create", b"x", "tk").status == 503,
            4,
            "the rule to apply again",
            every=0.1,
        )
    finally:
        thaw(procs)
