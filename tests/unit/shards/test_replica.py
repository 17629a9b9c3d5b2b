"""shards.replica.Replica: records of a store's state, applied idempotently, join snapshots (SPEC §7.4, §7.6)."""

from __future__ import annotations

import pytest
from helpers import T0, FakeClock

from bigbunny import records
from bigbunny.limits import STORE_OVERHEAD
from bigbunny.records import FullRecord, PutRecord
from bigbunny.shards.engine import StoreEngine
from bigbunny.shards.replica import Replica


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rep(clock: FakeClock) -> Replica:
    return Replica(StoreEngine(lock_timeout=0.5, clock=clock))


@pytest.fixture
def eng(rep: Replica) -> StoreEngine:
    return rep.engine


def put(kind: str = records.CREATE, version: int = 1, body: bytes = b"data", customer: str = "alice") -> PutRecord:
    return PutRecord(kind, None, "s1", customer, None, body, T0 + 60, version, None)


def test_put_record_is_the_store_state_after_a_write(eng: StoreEngine, rep: Replica) -> None:
    eng.create("s1", "alice", b"data", None, 60, "nm", None)
    eng.update("s1", "alice", b"new", None, None)
    rec = rep.put_record(records.UPDATE, "shard", "s1")
    assert rec == PutRecord("U", "shard", "s1", "alice", None, b"new", T0 + 60, 2, "nm")
    assert rep.put_record(records.UPDATE, None, "absent") is None


def test_counter_state_travels_as_a_list(eng: StoreEngine, rep: Replica) -> None:
    eng.create("c1", "alice", b"", (3, None, 9), 60, None, None)
    rec = rep.put_record(records.CREATE, None, "c1")
    assert rec is not None and rec.counter == [3, None, 9]


def test_apply_put_inserts_then_ignores_replays_and_older_versions(eng: StoreEngine, rep: Replica) -> None:
    assert rep.apply_put(put(), True) == 4 + STORE_OVERHEAD
    assert eng.total_bytes == 4 + STORE_OVERHEAD and eng.count == 1
    assert rep.apply_put(put(), True) == 0  # a duplicate
    assert rep.apply_put(put(records.UPDATE, 3, b"longer"), False) == 2
    assert rep.apply_put(put(records.UPDATE, 2, b"older"), False) == 0
    assert eng.snapshot("s1", "alice")[0] == b"longer"
    assert eng.usage() == {"alice": 6 + STORE_OVERHEAD}


def test_a_replicated_create_never_takes_another_customers_store(eng: StoreEngine, rep: Replica) -> None:
    rep.apply_put(put(), True)
    assert rep.apply_put(put(version=5, customer="mallory"), True) == 0
    assert eng.usage() == {"alice": 4 + STORE_OVERHEAD}


def test_an_update_clears_the_lock(eng: StoreEngine, rep: Replica) -> None:
    rep.apply_put(put(), True)
    rep.apply_lock("s1", "L1", T0)
    rep.apply_put(put(records.UPDATE, 2), False)
    assert eng.get("s1").lock is None


def test_replicated_locks_respect_a_different_live_lock(eng: StoreEngine, rep: Replica, clock: FakeClock) -> None:
    rep.apply_put(put(), True)
    rep.apply_lock("s1", "L1", T0)
    assert eng.get("s1").lock == ("L1", T0 + 0.5)
    rep.apply_lock("s1", "L2", T0)  # L1 still live: kept
    assert eng.get("s1").lock[0] == "L1"
    rep.apply_unlock("s1", "L2")  # not ours, not expired: kept
    assert eng.get("s1").lock is not None
    clock.t += 1
    rep.apply_lock("s1", "L2", clock.t)  # L1 expired: replaced
    assert eng.get("s1").lock[0] == "L2"
    rep.apply_unlock("s1", "L2")
    assert eng.get("s1").lock is None
    rep.apply_lock("absent", "L", T0)  # unknown stores are ignored


def test_dump_then_load_rebuilds_the_stores_and_the_totals(eng: StoreEngine, rep: Replica, clock: FakeClock) -> None:
    eng.create("s1", "alice", b"data", None, 60, "nm", None)
    eng.create("c1", "bob", b"", (1, 0, 5), 60, None, None)
    eng.begin_modify("s1", "alice")
    dump = rep.dump()
    assert all(isinstance(r, FullRecord) for r in dump)
    other = StoreEngine(lock_timeout=0.5, clock=clock)
    assert Replica(other).load(dump) == eng.total_bytes
    assert other.usage() == eng.usage() and other.count == 2
    assert Replica(other).dump() == dump
    assert other.pending_older_than(-1) == [("s1", "alice", "nm")]


def test_load_replaces_a_store_of_the_same_id(eng: StoreEngine, rep: Replica) -> None:
    eng.create("s1", "alice", b"a long old body", None, 60, None, None)
    rep.load([FullRecord("s1", "bob", None, b"x", T0 + 9, 4, None, None, None, None)])
    assert eng.usage() == {"bob": 1 + STORE_OVERHEAD} and eng.count == 1
    assert not eng.verified_owner("s1", "bob")  # a snapshot's IDs are checked on first use
