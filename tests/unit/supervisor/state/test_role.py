"""Unit tests for the role state machine (supervisor.state.role) and the cluster that drives it
(supervisor.cluster.coordinator), against a fake clock and a fake peer link: no processes, no sockets.

Every transition of SPEC §7 (with §13's fixes, adopted by §14): start-up election, join, lease
expiry, a closed link, an empty leader, a higher-epoch heartbeat, equal-epoch primaries, the
operator's promote, the lone node, and the lock-state-unknown window a takeover opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from bigbunny import wire
from bigbunny.config import Peer
from bigbunny.supervisor.cluster import coordinator as cluster_mod
from bigbunny.supervisor.cluster.coordinator import Cluster
from bigbunny.supervisor.cluster.messages import (
    Heartbeat,
    HeartbeatAck,
    JoinChunk,
    JoinRequest,
    Message,
    Origin,
    Probe,
    ProbeReply,
    ReplAck,
    ReplBatch,
)
from bigbunny.supervisor.pool.channel import Result
from bigbunny.supervisor.state.registry import Registry
from bigbunny.supervisor.state.role import JOINING, LEASE, PRIMARY, SECONDARY, PeerAnswer, RoleState
from bigbunny.supervisor.state.tombstones import Tombstones

LOCK_TIMEOUT = 0.5


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --- the state machine alone ------------------------------------------------------------------------


def role_at(host_id: str = "node1") -> tuple[RoleState, Clock]:
    clock = Clock()
    return RoleState(LOCK_TIMEOUT, clock, host_id), clock


def secondary(host_id: str = "node2", epoch: int = 1) -> tuple[RoleState, Clock]:
    role, clock = role_at(host_id)
    role.start_joining()
    assert role.joined("node1", epoch) is not None
    return role, clock


def test_a_node_starts_joining_at_epoch_0_and_its_state_is_read_only() -> None:
    role, _ = role_at()
    assert (role.role, role.epoch, role.leader, role.last_leader_seen) == (JOINING, 0, None, None)
    for field in ("role", "epoch", "leader", "last_leader_seen", "lock_unknown_until", "barrier"):
        with pytest.raises(AttributeError):
            setattr(role, field, None)


def test_initial_election_is_epoch_1_above_the_peer_without_a_lock_window() -> None:
    role, clock = role_at()
    change = role.start_primary()
    assert (change.before, change.role, change.epoch) == (JOINING, PRIMARY, 1)
    assert role.leader == "node1" and role.last_leader_seen == clock.t and not role.lock_unknown()
    role, _ = role_at()
    assert role.start_primary(peer_epoch=4).epoch == 5  # a JOINING peer that had reached epoch 4


def test_join_completes_as_secondary_at_the_snapshots_epoch() -> None:
    role, clock = role_at("node2")
    role.start_joining()
    role.begin_join("node1")
    assert role.leader == "node1" and role.role == JOINING
    change = role.joined("node1", 3)
    assert change is not None and (change.before, change.role, change.epoch) == (JOINING, SECONDARY, 3)
    assert role.last_leader_seen == clock.t and role.ever_saw_primary
    assert role.joined("node1", 4) is None  # only from JOINING


def test_a_join_snapshot_older_than_our_epoch_is_not_adopted() -> None:
    role, _ = role_at("node2")
    role.heartbeat("node1", 5)  # adopted epoch 5 while JOINING
    assert role.joined("node1", 4) is None and role.role == JOINING and role.epoch == 5


def test_lease_expiry_takes_over_at_epoch_plus_1_with_a_lock_window() -> None:
    role, clock = secondary(epoch=2)
    seen = role.last_leader_seen
    clock.t += LEASE + 0.1
    assert role.following(seen)  # no heartbeat since: the lease check may act
    change = role.promote("lease expired")
    assert (change.before, change.role, change.epoch) == (SECONDARY, PRIMARY, 3)
    assert role.leader == "node2" and role.last_leader_seen == clock.t
    assert role.lock_unknown()  # a lock granted by the old primary may still be live
    clock.t += LOCK_TIMEOUT - 0.01
    assert role.lock_unknown()
    clock.t += 0.02
    assert not role.lock_unknown()


def test_a_heartbeat_renews_the_lease() -> None:
    role, clock = secondary(epoch=2)
    seen = role.last_leader_seen
    clock.t += 1.0
    change = role.heartbeat("node1", 2)
    assert change is not None and change.role == SECONDARY
    assert role.last_leader_seen == clock.t and not role.following(seen)


def test_a_leader_answering_its_probe_restarts_the_lease() -> None:
    role, clock = secondary(epoch=2)
    assert role.leader_answers(PeerAnswer("node1", 2, PRIMARY))
    assert not role.leader_answers(PeerAnswer("node1", 1, PRIMARY))  # a stale primary is no leader
    assert not role.leader_answers(PeerAnswer("node1", 2, JOINING))
    assert not role.leader_answers(None)
    clock.t += 3.9
    role.leader_alive()
    assert role.last_leader_seen == clock.t and role.role == SECONDARY


def test_a_higher_epoch_heartbeat_makes_a_primary_step_down() -> None:
    role, clock = role_at("node1")
    role.start_primary()
    role.promote("operator request")  # epoch 2, window open
    change = role.heartbeat("node2", 7)
    assert change is not None and (change.before, change.role, change.epoch) == (PRIMARY, JOINING, 7)
    assert role.leader == "node2" and role.last_leader_seen == clock.t
    assert not role.lock_unknown() and role.lock_unknown_until == 0.0


def test_a_higher_epoch_heartbeat_makes_a_secondary_rejoin() -> None:
    role, _ = secondary("node2", epoch=1)
    change = role.heartbeat("node1", 2)
    assert change is not None and (change.before, change.role, change.epoch) == (SECONDARY, JOINING, 2)


def test_a_lower_epoch_heartbeat_is_ignored() -> None:
    role, _ = role_at("node1")
    role.start_primary(peer_epoch=3)  # epoch 4
    assert role.heartbeat("node2", 3) is None
    assert (role.role, role.epoch, role.leader) == (PRIMARY, 4, "node1")


def test_equal_epoch_primaries_the_larger_host_id_steps_down() -> None:
    big, _ = role_at("node2")
    big.start_primary()
    change = big.heartbeat("node1", 1)
    assert change is not None and (change.before, change.role) == (PRIMARY, JOINING)
    assert big.leader == "node1" and big.epoch == 1
    small, _ = role_at("node1")
    small.start_primary()
    assert small.heartbeat("node2", 1) is None and small.role == PRIMARY
    assert small.yields_to("node0", 1, PRIMARY) and not small.yields_to("node2", 1, PRIMARY)
    assert small.yields_to("node2", 2, JOINING)  # any higher epoch fences us
    assert not small.yields_to("node0", 1, SECONDARY)


def test_a_probe_answer_from_the_leader_makes_us_follow() -> None:
    role, clock = role_at("node2")
    role.start_primary()
    change = role.follow("node1", 4)
    assert (change.before, change.role, change.epoch) == (PRIMARY, JOINING, 4)
    assert role.leader == "node1" and role.last_leader_seen == clock.t


def test_operator_promote_always_bumps_the_epoch() -> None:
    role, _ = role_at()
    role.start_primary()
    change = role.promote("operator request")
    assert (change.before, change.role, change.epoch) == (PRIMARY, PRIMARY, 2)
    assert not role.lock_unknown()  # already primary: no lock of another leader to wait out
    joining, _ = role_at()
    assert joining.promote("operator request").epoch == 1 and joining.lock_unknown()


def test_the_snapshot_barrier_is_released_even_on_error() -> None:
    role, _ = role_at()
    with pytest.raises(RuntimeError), role.snapshot_barrier():
        assert role.barrier
        raise RuntimeError
    assert not role.barrier


def test_a_step_down_restarts_the_joining_clock() -> None:
    role, clock = secondary()
    clock.t += 10
    role.step_down("records dropped")
    assert role.role == JOINING and role.joining_since == clock.t


# --- the cluster driving it, over a fake link ----------------------------------------------------------


class FakeLink:
    """Records what the cluster sends; ``deliver`` hands it a message from the peer. With ``answer``
    set, a probe is answered (as that role, at ``answer_epoch``) on the next loop turn."""

    def __init__(self) -> None:
        self.handlers: dict[type, Callable[[Origin, Any], None]] = {}
        self.on_link_down: Callable[[], None] | None = None
        self.sent: list[tuple[int, Message]] = []
        self.answer: str | None = None
        self.answer_epoch = 0
        self.peer = "node2"  # the sender of what ``deliver`` hands over, unless told

    def on(self, kind: type, handler: Callable[[Origin, Any], None]) -> None:
        self.handlers[kind] = handler

    def send(self, epoch: int, msg: Message) -> bool:
        self.sent.append((epoch, msg))
        if isinstance(msg, Probe) and self.answer is not None:
            reply = ProbeReply(self.answer)
            asyncio.get_running_loop().call_soon(self.deliver, reply, self.answer_epoch)
        return True

    def deliver(self, msg: Message, epoch: int, sender: str = "", site: str = "local") -> None:
        self.handlers[type(msg)](Origin(sender or self.peer, site, epoch, 0.0), msg)

    def of(self, kind: type) -> list[Any]:
        return [m for _, m in self.sent if isinstance(m, kind)]

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeChannel:
    async def call(self, op: int, *args: Any, extra: Any = None) -> Result:
        return Result(wire.OK, {}, None, b"", None)


def make_cluster(host_id: str = "node1", peer: str = "node2") -> tuple[Cluster, FakeLink, Clock]:
    clock = Clock()
    cfg = SimpleNamespace(
        host_id=host_id,
        peers=[Peer(peer, "127.0.0.1:9")],
        disable_site_verification=False,
        site="local",
        min_replicas_max_lag=0.0,
        replica_wait_timeout=1.0,
    )
    node = SimpleNamespace(
        cfg=cfg,
        role=RoleState(LOCK_TIMEOUT, clock, host_id),
        pool=SimpleNamespace(slots=[SimpleNamespace(store_count=2)]),
        accounting=SimpleNamespace(total=10, drop_shard=lambda i: None, apply=lambda *a: None),
        registry=Registry(),
        tombstones=Tombstones(100, 1000),
        nshards=1,
        channels=[FakeChannel()],
        inflight_calls=0,
        lead_until=0.0,
        write_until=0.0,
    )
    link = FakeLink()
    link.peer = peer
    cl = Cluster(node, link)  # type: ignore[arg-type]
    cl.role.start_joining()
    return cl, link, clock


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def joined(cl: Cluster, link: FakeLink, epoch: int = 1) -> None:
    """Take a JOINING cluster through a join from its peer (a one-chunk, empty snapshot)."""
    cl.join.request()
    join_id = link.of(JoinRequest)[-1].join_id
    meta = {"site": "local", "has_registry": True, "registry": [], "tombstones": [], "stream": "node2:1"}
    link.deliver(JoinChunk(join_id, 0, True, [], meta | {"base_seq": 0}), epoch)
    await settle()


async def secondary_cluster(epoch: int) -> tuple[Cluster, FakeLink, Clock]:
    """node2, joined to its leader node1 at ``epoch``."""
    cl, link, clock = make_cluster("node2", "node1")
    await joined(cl, link, epoch)
    return cl, link, clock


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_start_up_with_a_silent_peer_elects_the_first_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_mod, "PROBE_WINDOW", 0.05)

    async def go() -> None:
        cl, link, _ = make_cluster("node1")
        await cl._startup()
        assert (cl.role.role, cl.role.epoch, cl.role.leader) == (PRIMARY, 1, "node1")
        assert not cl.role.lock_unknown() and cl.sender.stream == "node1:1"
        assert link.of(Heartbeat) == [Heartbeat(2, 10)]  # announced at once
        second, _, _ = make_cluster("node2", "node1")
        await second._startup()  # the second host waits for a primary
        assert second.role.role == JOINING and second.role.leader is None

    run(go())


async def started_beside(peer_role: str, peer_epoch: int) -> tuple[Cluster, FakeLink, Clock]:
    """node1 after its start-up probe, answered by a peer in ``peer_role`` at ``peer_epoch``."""
    cl, link, clock = make_cluster("node1")
    link.answer, link.answer_epoch = peer_role, peer_epoch
    await cl._startup()
    return cl, link, clock


def test_start_up_beside_a_joining_peer_leads_above_its_epoch() -> None:
    async def go() -> None:
        cl, _, _ = await started_beside(JOINING, 4)
        assert (cl.role.role, cl.role.epoch) == (PRIMARY, 5)

    run(go())


def test_start_up_beside_a_primary_joins_it_and_becomes_secondary() -> None:
    async def go() -> None:
        cl, link, clock = await started_beside(PRIMARY, 3)
        assert cl.role.role == JOINING and cl.role.leader == "node2" and len(link.of(JoinRequest)) == 1
        join_id = link.of(JoinRequest)[0].join_id
        meta = {"site": "local", "has_registry": True, "registry": [], "tombstones": []}
        link.deliver(JoinChunk(join_id, 0, True, [], meta | {"stream": "node2:3", "base_seq": 12}), 3)
        await settle()
        assert (cl.role.role, cl.role.epoch, cl.role.last_leader_seen) == (SECONDARY, 3, clock.t)
        assert (cl.receiver.stream, cl.receiver.applied) == ("node2:3", 12)
        assert link.of(ReplAck)[-1] == ReplAck("node2:3", 12)  # the primary learns our position at once

    run(go())


def test_a_snapshot_from_another_site_is_refused_and_we_stay_joining() -> None:
    async def go() -> None:
        cl, link, _ = make_cluster()
        cl.join.request()
        join_id = link.of(JoinRequest)[0].join_id
        meta = {"site": "elsewhere", "has_registry": True, "registry": [], "tombstones": []}
        link.deliver(JoinChunk(join_id, 0, True, [], meta | {"stream": "node2:1", "base_seq": 0}), 1)
        await settle()
        assert cl.role.role == JOINING and cl.join.join_id is None

    run(go())


def test_secondary_lease_expiry_takes_over_at_epoch_plus_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_mod, "LEASE_PROBE", 0.05)

    async def go() -> None:
        cl, link, clock = await secondary_cluster(2)
        assert cl.role.role == SECONDARY
        clock.t += LEASE - 0.2
        cl._tick(1)
        await settle()
        assert cl.role.role == SECONDARY  # the lease has not run out
        clock.t += 0.3
        cl._tick(2)  # the leader stays silent, also to the probe (asked every 0.1 s)
        await asyncio.sleep(0.3)
        assert (cl.role.role, cl.role.epoch, cl.role.leader) == (PRIMARY, 3, "node2")
        assert cl.role.lock_unknown() and cl.sender.stream == "node2:3"
        assert link.of(Heartbeat)  # announced at once
        clock.t += LOCK_TIMEOUT + 0.01
        assert not cl.role.lock_unknown()

    run(go())


def test_a_silent_leader_that_answers_its_probe_keeps_us_secondary(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        cl, link, clock = await secondary_cluster(2)
        clock.t += LEASE + 1  # we were frozen: the lease ran out while we did not read
        link.answer, link.answer_epoch = PRIMARY, 2
        cl._tick(1)
        await asyncio.sleep(0.05)
        assert cl.role.role == SECONDARY and cl.role.last_leader_seen == clock.t

    run(go())


def test_a_closed_link_takes_over_when_the_leader_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_mod, "FAST_CHECK", 0.05)

    async def go() -> None:
        cl, link, _ = await secondary_cluster(1)
        assert link.on_link_down is not None
        link.on_link_down()
        await asyncio.sleep(0.3)  # the probe is asked every 0.1 s
        assert (cl.role.role, cl.role.epoch) == (PRIMARY, 2) and cl.role.lock_unknown()

    run(go())


def test_a_leader_back_without_its_data_is_taken_over_at_once() -> None:
    async def go() -> None:
        cl, link, _ = await secondary_cluster(1)
        link.deliver(Probe(JOINING), 0, sender="node1")
        assert link.of(ProbeReply)[-1] == ProbeReply(SECONDARY)  # answered before the takeover
        assert (cl.role.role, cl.role.epoch) == (PRIMARY, 2)

    run(go())


def test_a_higher_epoch_heartbeat_makes_the_primary_step_down_and_rejoin() -> None:
    async def go() -> None:
        cl, link, clock = make_cluster("node1")
        cl._became_primary(cl.role.start_primary(), initial=True)
        link.deliver(Heartbeat(0, 0), 4)
        assert link.of(HeartbeatAck)[-1].role == PRIMARY  # acknowledged with the role it found
        assert (cl.role.role, cl.role.epoch, cl.role.leader) == (JOINING, 4, "node2")
        assert cl.sender.stream == "" and cl.receiver.stream == ""
        assert link.of(JoinRequest) == []  # relays the writes it held first: the join waits for a tick
        clock.t += 0.1
        cl._tick(1)
        assert len(link.of(JoinRequest)) == 1

    run(go())


def test_equal_epoch_primaries_resolve_by_host_id() -> None:
    async def go() -> None:
        big, link, _ = make_cluster("node2", "node1")
        big._became_primary(big.role.start_primary(), initial=True)
        link.deliver(Heartbeat(0, 0), 1, sender="node1")
        assert (big.role.role, big.role.leader) == (JOINING, "node1")
        small, link, _ = make_cluster("node1", "node2")
        small._became_primary(small.role.start_primary(), initial=True)
        link.deliver(Heartbeat(0, 0), 1, sender="node2")
        assert (small.role.role, small.role.epoch, small.sender.stream) == (PRIMARY, 1, "node1:1")

    run(go())


def test_a_joining_node_asks_to_join_on_a_heartbeat_at_most_once_a_second() -> None:
    async def go() -> None:
        cl, link, clock = make_cluster("node2", "node1")
        link.deliver(Heartbeat(0, 0), 1, sender="node1")
        assert len(link.of(JoinRequest)) == 1 and cl.role.leader == "node1"
        cl.join.abandon()  # (refused, say)
        clock.t += 0.5
        link.deliver(Heartbeat(0, 0), 1, sender="node1")
        assert len(link.of(JoinRequest)) == 1
        clock.t += 0.6
        link.deliver(Heartbeat(0, 0), 1, sender="node1")
        assert len(link.of(JoinRequest)) == 2

    run(go())


def test_operator_promote_from_joining_opens_the_lock_window() -> None:
    async def go() -> None:
        cl, link, _ = make_cluster("node2", "node1")
        cl.join.request()
        cl.promote("operator request")
        assert (cl.role.role, cl.role.epoch) == (PRIMARY, 1) and cl.role.lock_unknown()
        assert cl.join.join_id is None and cl.sender.stream == "node2:1"
        cl.promote("operator request")
        assert cl.role.epoch == 2 and cl.sender.stream == "node2:2"

    run(go())


def test_a_lone_node_promotes_itself_after_the_lease() -> None:
    async def go() -> None:
        cl, _, clock = make_cluster("node2", "node1")
        clock.t += LEASE - 0.1
        cl._tick(1)
        assert cl.role.role == JOINING
        clock.t += 0.2
        cl._tick(2)
        assert (cl.role.role, cl.role.epoch) == (PRIMARY, 1)

    run(go())


def test_replication_is_refused_while_joining_or_from_a_lower_epoch() -> None:
    async def go() -> None:
        cl, link, _ = make_cluster("node2", "node1")
        link.deliver(ReplBatch("node1:1", [[1, ["R"], 0.0]], 0), 1, sender="node1")
        assert cl.receiver.received == 0  # JOINING applies nothing
        await joined(cl, link, epoch=3)
        link.deliver(ReplBatch("node2:1", [[1, ["R"], 0.0]], 0), 2)
        assert cl.receiver.received == 0  # a lower epoch is fenced

    run(go())


def test_messages_from_another_site_or_host_are_dropped() -> None:
    async def go() -> None:
        cl, link, _ = make_cluster("node2", "node1")
        link.deliver(Heartbeat(0, 0), 5, sender="node1", site="elsewhere")
        link.deliver(Heartbeat(0, 0), 5, sender="intruder")
        assert cl.role.epoch == 0 and cl.peer_seen is None and link.sent == []

    run(go())
