"""Unit tests for supervisor.cluster.writegate against a fake cluster whose link answers probes as scripted.

The durability tests (tests/integration/test_durability.py) freeze real nodes; these pin the rules
of the leadership re-check one answer at a time: who makes us step down, what silence means, that
a probe spanning our own stall proves nothing, and how the lag rule and replica waits follow
acknowledgements and role changes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import perf_counter
from types import SimpleNamespace
from typing import Any

import pytest

from bigbunny import errors
from bigbunny.supervisor.cluster import writegate
from bigbunny.supervisor.cluster.writegate import LEAD_LEASE, HeldAnswer, WriteGate
from bigbunny.supervisor.front.responses import DEGRADED, NOT_REPLICATED
from bigbunny.supervisor.state.role import JOINING, PRIMARY, SECONDARY, PeerAnswer, RoleState


class FakeCluster:
    """What WriteGate uses of the Cluster: the node, the sender, ``probe`` and ``lost_lead``."""

    def __init__(self, host_id: str = "node1", max_lag: float = 0.0, wait: float = 0.2) -> None:
        cfg = SimpleNamespace(host_id=host_id, min_replicas_max_lag=max_lag, replica_wait_timeout=wait)
        self.node = SimpleNamespace(cfg=cfg, role=RoleState(0.5, host_id=host_id), lead_until=0.0, write_until=0.0)
        self.node.role.start_primary(peer_epoch=2)  # PRIMARY at epoch 3
        self.sender = SimpleNamespace(stream="node1:3", seq=0, acked=0, window=deque(), urgent_until=0.0)
        self.sender.oldest_pending_age = lambda: None  # nothing pending: the lag is the age of the last ack
        self.replies: list[tuple[float, PeerAnswer | None]] = []  # (delay, reply) per probe
        self.probes = 0
        self.lost: list[tuple[str, int]] = []
        self.gate = WriteGate(self)  # type: ignore[arg-type]

    async def probe(self, timeout: float) -> PeerAnswer | None:
        self.probes += 1
        delay, reply = self.replies.pop(0)
        await asyncio.sleep(delay)
        return reply

    def lost_lead(self, sender: str, epoch: int) -> None:
        self.lost.append((sender, epoch))
        self.node.role.follow(sender, epoch)
        self.gate.stepped_down()


def answer(sender: str, epoch: int, role: str) -> PeerAnswer:
    return PeerAnswer(sender, epoch, role)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("reply", "leads"),
    [
        (None, True),  # silence for the probe's bound: go on alone
        (answer("node2", 3, SECONDARY), True),
        (answer("node2", 2, PRIMARY), True),  # a stale primary: our heartbeats make it step down
        (answer("node2", 4, PRIMARY), False),  # it took over while we were silent
        (answer("node2", 4, JOINING), False),  # any higher epoch fences us
    ],
)
def test_lead_check_follows_the_peers_answer(reply: PeerAnswer | None, leads: bool) -> None:
    async def go() -> None:
        cl = FakeCluster()
        cl.replies = [(0.0, reply)]
        assert await cl.gate.lead_check() is leads
        if leads:
            assert cl.lost == [] and cl.node.lead_until > perf_counter() + LEAD_LEASE - 0.1
        else:
            assert cl.lost == [("node2", 4)] and cl.node.lead_until == -writegate.INF

    run(go())


def test_equal_epoch_primaries_the_larger_host_id_loses() -> None:
    async def go() -> None:
        big = FakeCluster(host_id="node2")
        big.replies = [(0.0, answer("node1", 3, PRIMARY))]
        assert await big.gate.lead_check() is False and big.lost == [("node1", 3)]
        small = FakeCluster(host_id="node1")
        small.replies = [(0.0, answer("node2", 3, PRIMARY))]
        assert await small.gate.lead_check() is True and small.lost == []

    run(go())


def test_silence_spanning_our_own_stall_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writegate, "LEAD_PROBE", 0.01)
    monkeypatch.setattr(writegate, "STALL_SLACK", 0.01)

    async def go() -> None:
        cl = FakeCluster()
        cl.replies = [(0.1, None), (0.0, answer("node2", 4, PRIMARY))]  # the first "silence" was our stall
        assert await cl.gate.lead_check() is False
        assert cl.probes == 2 and cl.lost == [("node2", 4)]

    run(go())


def test_concurrent_writes_share_one_probe() -> None:
    async def go() -> None:
        cl = FakeCluster()
        cl.replies = [(0.02, None)]
        results = await asyncio.gather(*(cl.gate.lead_check() for _ in range(5)))
        assert results == [True] * 5 and cl.probes == 1

    run(go())


def test_the_lead_lapses_without_contact_or_ticks() -> None:
    async def go() -> None:
        cl = FakeCluster()
        gate, node = cl.gate, cl.node
        gate.refresh()
        assert node.lead_until > perf_counter() + LEAD_LEASE - 0.1
        old = perf_counter() - 10
        gate.contact = gate.confirmed = old  # the peer has been silent for 10 s
        gate.refresh()
        assert node.lead_until == pytest.approx(old + LEAD_LEASE)
        gate.acked(3, "", 0)  # an ack from a JOINING peer: contact, not replication
        assert node.lead_until > perf_counter() + LEAD_LEASE - 0.1
        gate.contact = gate.confirmed = old
        gate.acked(4, "", 0)  # an ack from a higher epoch is no proof that we lead
        assert node.lead_until == pytest.approx(old + LEAD_LEASE)

    run(go())


def test_a_stalled_loop_is_noticed_by_the_tick_and_confirmed_before_writes() -> None:
    async def go() -> None:
        cl = FakeCluster()
        gate, node = cl.gate, cl.node
        gate.contact = gate.confirmed = gate.tick_at = perf_counter() - 6
        gate._last_tick = perf_counter() - 6  # the last tick ran 6 s ago: we were frozen
        gate.acked(3, "node1:3", 0)  # an ack read first after the resume does not restore the lead
        assert node.lead_until < perf_counter()
        cl.replies = [(0.0, None)]
        gate.tick()
        assert gate._check is not None  # the tick started the confirmation itself
        assert node.lead_until < perf_counter()  # ... and the next tick does not lift the doubt
        gate.tick()
        assert node.lead_until < perf_counter()
        assert await gate.lead_check() is True
        assert node.lead_until > perf_counter() + LEAD_LEASE - 0.1

    run(go())


def test_lag_rule_follows_acknowledgements_and_takeovers() -> None:
    async def go() -> None:
        cl = FakeCluster(max_lag=1.0)
        gate, node = cl.gate, cl.node
        gate.became_primary(initial=True)  # elected at start-up: the peer could take over
        assert node.write_until == -writegate.INF and gate.lag_ms() is None  # nothing acknowledged yet
        gate.acked(3, "node1:3", 0)
        assert node.write_until == pytest.approx(perf_counter() + 1.0, abs=0.05)
        assert gate.lag_ms() is not None and gate.lag_ms() < 50
        gate.became_primary(initial=False)  # a takeover: the peer can only come back under us
        assert gate.lag_until == writegate.INF
        assert node.write_until == node.lead_until
        gate.acked(3, "node1:3", 0)  # the peer rejoined and follows our stream: the rule is back
        assert gate.lag_until < writegate.INF

    run(go())


def test_replica_waits_end_on_ack_timeout_or_step_down() -> None:
    async def go() -> None:
        cl = FakeCluster(wait=0.05)
        gate = cl.gate
        cl.sender.seq = 2
        waiting = asyncio.ensure_future(gate.replica_acked(2))
        await asyncio.sleep(0)
        gate.acked(3, "node1:3", 2)
        assert await waiting is True
        assert await gate.replica_acked(5) is False  # never acknowledged: the timeout
        waiting = asyncio.ensure_future(gate.replica_acked(9))
        await asyncio.sleep(0)
        gate.stepped_down()
        assert await waiting is False

    run(go())


class Sink:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def ok(self, req: Any, body: bytes, ctype: bytes, extra: bytes) -> None:
        self.got.append(("ok", body, extra))

    def error(self, req: Any, err: Any, extra: bytes = b"") -> None:
        self.got.append(("error", err))

    def raw(self, req: Any, status: int, headers: list[Any], body: bytes) -> None:
        self.got.append(("raw", status))


def test_held_answer_is_released_as_settled() -> None:
    for warning, expect in (
        (b"", ("ok", b"id", DEGRADED)),
        (NOT_REPLICATED, ("ok", b"id", NOT_REPLICATED)),
        (None, ("error", errors.LEAD_LOST)),
    ):
        sink = Sink()
        req = SimpleNamespace(out=sink)
        held = HeldAnswer(sink)
        req.out = held
        held.ok(req, b"id", b"", DEGRADED)
        assert sink.got == []
        held.release(req, warning)  # type: ignore[arg-type]
        assert sink.got == [expect] and req.out is sink
    sink = Sink()
    held = HeldAnswer(sink)
    held.error(SimpleNamespace(), errors.NOT_FOUND_STORE)  # errors are never held
    assert sink.got == [("error", errors.NOT_FOUND_STORE)]


def test_ticks_on_other_roles_keep_the_stall_clock() -> None:
    """A secondary that ticked normally and is then promoted has not stalled."""

    async def go() -> None:
        cl = FakeCluster()
        gate, role = cl.gate, cl.node.role
        role.step_down("test")
        role.joined("node2", role.epoch)  # SECONDARY
        gate._last_tick = perf_counter() - 30  # start-up long ago
        gate.tick()
        role.promote("test")
        gate.became_primary(initial=False)
        gate.tick()
        assert not gate._stalled and gate._check is None
        assert cl.node.lead_until > perf_counter() + LEAD_LEASE - 0.1

    run(go())
