"""Unit tests for supervisor.cluster.replication's window and receiver with a fake transport and clock.

The cluster tests (tests/integration/test_cluster.py) drive the same code over real sockets; these pin
the two rules that are hard to provoke there on purpose: a record lost in transit is waited for (not a
re-join), and an unacknowledged record counts as a failed round after 5 s even while heartbeats flow.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from bigbunny.supervisor.cluster import replication
from bigbunny.supervisor.cluster.replication import FAIL_AFTER, Receiver, Sender


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(replication.time, "monotonic", c)
    return c


def fake_node() -> Any:
    return SimpleNamespace(role=SimpleNamespace(epoch=1))


def make_receiver(monkeypatch: pytest.MonkeyPatch) -> tuple[Receiver, list[Any], list[str]]:
    applied: list[Any] = []
    gaps: list[str] = []

    def apply(node: Any, record: Any, held_since: float) -> None:
        applied.append(record)  # applied at once; nothing to await

    monkeypatch.setattr(replication, "start_apply", apply)
    r = Receiver(fake_node(), gaps.append)
    r.start_stream("n1:1", 0)
    return r, applied, gaps


def test_receiver_waits_for_a_record_lost_in_transit(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        r, applied, gaps = make_receiver(monkeypatch)
        r.on_batch("n1:1", [[1, "a", 0.0]])
        r.on_batch("n1:1", [[3, "c", 0.0]])  # 2 was lost (e.g. refused while we were joining)
        await asyncio.sleep(0)
        assert (applied, r.applied, gaps) == (["a"], 1, [])
        r.on_batch("n1:1", [[2, "b", 0.0], [3, "c", 0.0]])  # the sender re-sends in order
        await asyncio.sleep(0)
        assert (applied, r.applied, gaps) == (["a", "b", "c"], 3, [])
        r.on_batch("n1:1", [[3, "c", 0.0]])  # a duplicate is skipped
        await asyncio.sleep(0)
        assert applied == ["a", "b", "c"]

    asyncio.run(run())


def test_receiver_rejoins_on_dropped_records_or_unknown_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        r, applied, gaps = make_receiver(monkeypatch)
        r.on_batch("n1:1", [[1, "a", 0.0]], 0)
        await asyncio.sleep(0)
        r.on_batch("n1:1", [[2, "b", 0.0]], 1)  # dropped ≤ applied: nothing we need is gone
        await asyncio.sleep(0)
        assert gaps == [] and applied == ["a", "b"]
        r.on_batch("n1:1", [[4, "d", 0.0]], 3)  # 3 was dropped by the sender: never coming
        assert len(gaps) == 1 and "dropped" in gaps[0]
        r.on_batch("n2:2", [[1, "x", 0.0]])
        assert len(gaps) == 2 and "unknown stream" in gaps[1]

    asyncio.run(run())


def test_sender_counts_an_unacknowledged_record_as_failed_while_heartbeats_flow(clock: Clock) -> None:
    sent: list[list[Any]] = []

    def send(epoch: int, batch: Any) -> bool:
        sent.append(batch)
        return True

    async def run() -> None:
        s = Sender(fake_node(), send)
        s.reset("n1:1")
        s.on_ack("", 0)  # a heartbeat ack: the link is alive
        s.enqueue(["C"])
        await asyncio.sleep(0)
        assert len(sent) == 1 and s.fail_count == 0
        for _ in range(int(FAIL_AFTER / 0.1) - 1):  # re-sent every 0.5 s, heartbeats acknowledged, never applied
            clock.t += 0.1
            s.on_ack("", 0)
            s.tick()
        assert s.fail_count == 0
        clock.t += 0.2
        s.on_ack("", 0)
        s.tick()
        assert s.fail_count == 1 and s.degraded()
        clock.t += 0.1
        s.tick()
        assert s.fail_count == 1  # once per FAIL_AFTER, not once per tick
        s.on_ack("n1:1", 1)
        assert s.fail_count == 0 and not s.window

    asyncio.run(run())


def test_sender_overflow_announces_the_dropped_records(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[Any]] = []
    monkeypatch.setattr(replication, "WINDOW_STORE", 2)

    async def run() -> None:
        s = Sender(fake_node(), lambda epoch, batch: sent.append(batch) or True)
        s.reset("n1:1")
        for i in range(3):
            s.enqueue(["C", i])
        await asyncio.sleep(0)
        assert s.dropped == 1 and s.dropped_upto == 1
        stream, batch, dropped_upto, urgent = sent[-1]
        assert [e[0] for e in batch] == [2, 3] and dropped_upto == 1 and urgent is False

    asyncio.run(run())


def test_records_arriving_while_a_batch_is_applied_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-order records that arrive while earlier ones are still being applied are queued, not
    mistaken for a gap (which would leave them to the sender's re-send, 0.5 s later)."""

    async def run() -> None:
        gate = asyncio.get_running_loop().create_future()
        applied: list[Any] = []

        def apply(node: Any, record: Any, held_since: float) -> Any:
            applied.append(record)
            return 0 if record == "a" else None  # "a" goes to shard 0, whose answer we hold back

        async def shard_apply(node: Any, shard: int, batch: Any) -> None:
            await gate

        monkeypatch.setattr(replication, "start_apply", apply)
        monkeypatch.setattr(replication, "_apply_batch", shard_apply)
        r = Receiver(fake_node(), lambda why: pytest.fail(why))
        r.start_stream("n1:1", 0)
        r.on_batch("n1:1", [[1, "a", 0.0]])
        await asyncio.sleep(0)  # "a" is being applied: out of the queue, not yet counted as applied
        r.on_batch("n1:1", [[2, "b", 0.0], [3, "c", 0.0]])
        gate.set_result(None)
        for _ in range(5):
            await asyncio.sleep(0)
        assert (applied, r.applied) == (["a", "b", "c"], 3)

    asyncio.run(run())


def test_gathering_adapts_to_load(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle primary sends a record at once; a busy one gathers GATHER_BUSY worth of records."""
    assert replication.gather_interval(1) == replication.FLUSH_DELAY
    assert replication.gather_interval(replication.BUSY_BATCH) == replication.GATHER_BUSY > replication.FLUSH_DELAY

    async def run() -> None:
        sent: list[int] = []
        s = Sender(fake_node(), lambda epoch, batch: sent.append(len(batch.records)) or True)
        s.reset("n1:1")
        waits: list[float] = []
        loop = asyncio.get_running_loop()
        with monkeypatch.context() as m:  # the scheduled flush runs at once; we record the wait asked for
            m.setattr(loop, "call_later", lambda delay, fn: waits.append(delay) or fn())
            m.setattr(loop, "call_soon", lambda fn: waits.append(0.0) or fn())
            s.enqueue(["U", None, "id"])  # idle: goes out at once
            assert sent == [1] and waits == [0.0]
            clock.t += 1.0
            s._flush_scheduled = True  # a burst of writes within one loop turn joins one message
            for _ in range(replication.BUSY_BATCH):
                s.enqueue(["U", None, "id"])
            s.flush()
            assert sent == [1, replication.BUSY_BATCH]
            s.enqueue(["U", None, "id"])  # right after a full message: wait out the busy interval
            assert waits[-1] == pytest.approx(replication.GATHER_BUSY)

    asyncio.run(run())
