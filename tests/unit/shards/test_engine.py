"""Unit tests for shards.engine.StoreEngine (SPEC §2.5–§2.9, §6, §13, §14) with a fake clock."""

from __future__ import annotations

import re

import pytest
from helpers import T0, FakeClock
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

from bigbunny import errors
from bigbunny.limits import STORE_OVERHEAD
from bigbunny.shards.engine import StoreEngine

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
LOCK_RE = re.compile(r"[A-Za-z0-9_-]{22}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def eng(clock: FakeClock) -> StoreEngine:
    return StoreEngine(lock_timeout=0.5, clock=clock)


def raises(err: errors.ApiError):
    """pytest.raises for one specific predefined ApiError."""

    class _Ctx:
        def __enter__(self):
            self._cm = pytest.raises(errors.ApiError)
            self._info = self._cm.__enter__()
            return self._info

        def __exit__(self, *exc):
            res = self._cm.__exit__(*exc)
            assert self._info.value == err, f"expected {err!r}, got {self._info.value!r}"
            return res

    return _Ctx()


def blob(
    eng: StoreEngine,
    sid: str = "s1",
    body: bytes = b"data",
    customer: str = "alice",
    ttl: int | None = 60,
    allow=None,
    pending: str | None = None,
) -> int:
    return eng.create(sid, customer, body, None, ttl, pending, allow)


def counter(
    eng: StoreEngine,
    sid: str = "c1",
    value: int = 0,
    vmin: int | None = None,
    vmax: int | None = None,
    customer: str = "alice",
    ttl: int | None = 60,
    allow=None,
) -> int:
    return eng.create(sid, customer, b"ignored", (value, vmin, vmax), ttl, None, allow)


# --- create ------------------------------------------------------------------------------------------------


def test_create_blob(eng: StoreEngine, clock: FakeClock) -> None:
    assert blob(eng, body=b"0123456789") == 10 + STORE_OVERHEAD
    assert eng.snapshot("s1", "alice") == (b"0123456789", 60, False)
    st_ = eng.get("s1")
    assert st_ is not None and st_.version == 1 and st_.lock is None and st_.pending is None
    assert st_.expiry == T0 + 60
    assert eng.count == 1 and eng.total_bytes == 266 and eng.usage() == {"alice": 266}


def test_create_empty_blob(eng: StoreEngine) -> None:
    assert blob(eng, body=b"") == 256
    assert eng.snapshot("s1", "alice")[0] == b""


def test_create_default_ttl(clock: FakeClock) -> None:
    eng = StoreEngine(clock=clock)
    blob(eng, ttl=None)
    assert eng.get("s1").expiry == T0 + 1_209_600
    assert eng.snapshot("s1", "alice")[1] == 1_209_600
    eng2 = StoreEngine(clock=clock, default_ttl=5)
    blob(eng2, ttl=None)
    assert eng2.snapshot("s1", "alice")[1] == 5


@pytest.mark.parametrize("ttl", [0, -1, -1000])
def test_create_non_positive_ttl_is_expired(eng: StoreEngine, clock: FakeClock, ttl: int) -> None:
    blob(eng, ttl=ttl)
    if ttl == 0:  # expired ⇔ now > expiry: at now == expiry still alive
        assert eng.snapshot("s1", "alice")[1] == 0
        clock.advance(0.001)
    with raises(errors.STORE_EXPIRED):
        eng.snapshot("s1", "alice")


def test_create_counter(eng: StoreEngine) -> None:
    assert counter(eng) == 11 + 256 == 267
    assert eng.get("c1").body == b'{"value":0}'
    assert eng.snapshot("c1", "alice") == (b'{"value":0,"version":1}\n', 60, True)
    assert counter(eng, "c2", 50, 0, 100) == len(b'{"value":50,"min":0,"max":100}') + 256
    assert eng.snapshot("c2", "alice")[0] == b'{"value":50,"version":1,"min":0,"max":100}\n'


def test_create_counter_accepts_list_state(eng: StoreEngine) -> None:
    eng.create("c1", "alice", b"", [3, None, 9], 60, None, None)  # msgpack decodes arrays as lists
    assert eng.get("c1").counter == (3, None, 9)


@pytest.mark.parametrize(
    ("spec", "err"),
    [
        ((0, 10, 1), errors.INVALID_BOUNDS),
        ((50, 10, 1), errors.INVALID_BOUNDS),  # bounds are checked before the value
        ((11, 0, 10), errors.VALUE_OUT_OF_BOUNDS),
        ((-1, 0, 10), errors.VALUE_OUT_OF_BOUNDS),
        ((-1, 0, None), errors.VALUE_OUT_OF_BOUNDS),
        ((11, None, 10), errors.VALUE_OUT_OF_BOUNDS),
    ],
)
def test_create_counter_validation(eng: StoreEngine, spec, err) -> None:
    with raises(err):
        eng.create("c1", "alice", b"", spec, 60, None, (0, 0))  # validation precedes quota
    assert eng.count == 0 and eng.total_bytes == 0


@pytest.mark.parametrize("spec", [(0, 0, 0), (0, 0, 10), (10, 0, 10), (5, 5, 5), (I64_MIN, I64_MIN, I64_MAX)])
def test_create_counter_inclusive_bounds(eng: StoreEngine, spec) -> None:
    eng.create("c1", "alice", b"", spec, 60, None, None)
    assert eng.get("c1").counter == spec


def test_create_existing_id_is_internal(eng: StoreEngine) -> None:
    blob(eng)
    with raises(errors.INTERNAL):
        blob(eng, body=b"other", customer="bob")
    assert eng.snapshot("s1", "alice")[0] == b"data"
    assert eng.count == 1


def test_create_interns_customer(eng: StoreEngine) -> None:
    c1 = "".join(["ali", "ce"])
    c2 = "".join(["al", "ice"])
    assert c1 is not c2
    blob(eng, "a", customer=c1)
    blob(eng, "b", customer=c2)
    assert eng.get("a").customer is eng.get("b").customer


def test_create_pending(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, pending="cart")
    assert eng.get("s1").pending == ("cart", T0)


# --- allowance / quota ------------------------------------------------------------------------------------


def test_allowance_rule(eng: StoreEngine) -> None:
    with raises(errors.CUSTOMER_QUOTA_EXCEEDED):
        blob(eng, body=b"x" * 10, allow=(265, 10_000))
    with raises(errors.CAPACITY_EXCEEDED):
        blob(eng, body=b"x" * 10, allow=(10_000, 265))
    with raises(errors.CUSTOMER_QUOTA_EXCEEDED):  # customer quota is tested first
        blob(eng, body=b"x" * 10, allow=(0, 0))
    assert eng.count == 0
    assert blob(eng, body=b"x" * 10, allow=(266, 266)) == 266  # reaching a limit exactly is allowed
    # growth <= 0 is never refused, even with a negative allowance
    assert eng.update("s1", "alice", b"x" * 10, None, (-5, -5)) == 0
    assert eng.update("s1", "alice", b"x", None, (-5, -5)) == -9
    assert eng.total_bytes == 257


def spec_quota_allow(eng: StoreEngine, customer: str, quota: int = 600) -> tuple[int, int]:
    """What the supervisor passes for --customer-memory-quota=quota and no global limit."""
    return quota - eng.usage().get(customer, 0), 1 << 62


def test_spec_quota_example(eng: StoreEngine) -> None:
    """SPEC §6: quota 600; two 10-byte blobs use 532, a third is refused; growing one to 100 bytes (+90) is
    refused, to 50 (+40) allowed."""
    assert blob(eng, "a", b"x" * 10, allow=spec_quota_allow(eng, "alice")) == 266
    assert blob(eng, "b", b"y" * 10, allow=spec_quota_allow(eng, "alice")) == 266
    assert eng.usage()["alice"] == 532
    with raises(errors.CUSTOMER_QUOTA_EXCEEDED):
        blob(eng, "c", b"z" * 10, allow=spec_quota_allow(eng, "alice"))
    with raises(errors.CUSTOMER_QUOTA_EXCEEDED):
        eng.update("a", "alice", b"x" * 100, None, spec_quota_allow(eng, "alice"))
    assert eng.snapshot("a", "alice")[0] == b"x" * 10 and eng.get("a").version == 1
    assert eng.update("a", "alice", b"x" * 50, None, spec_quota_allow(eng, "alice")) == 40
    assert eng.usage()["alice"] == 572
    # another customer is unaffected by alice's usage
    assert blob(eng, "d", b"z" * 10, customer="bob", allow=spec_quota_allow(eng, "bob")) == 266
    assert eng.total_bytes == 572 + 266


def test_quota_on_complete_modify(eng: StoreEngine) -> None:
    blob(eng, body=b"ab")
    _, _, lock = eng.begin_modify("s1", "alice")
    with raises(errors.CUSTOMER_QUOTA_EXCEEDED):
        eng.complete_modify("s1", "alice", lock, b"abcd", None, (1, 100))
    with raises(errors.CAPACITY_EXCEEDED):
        eng.complete_modify("s1", "alice", lock, b"abcd", None, (100, 1))
    st_ = eng.get("s1")
    assert st_.body == b"ab" and st_.lock is not None and st_.version == 1  # nothing mutated
    assert eng.complete_modify("s1", "alice", lock, b"abcd", None, (2, 2)) == 2
    assert eng.total_bytes == 260


def test_quota_on_counter_growth(eng: StoreEngine) -> None:
    counter(eng, value=9)
    with raises(errors.CUSTOMER_QUOTA_EXCEEDED):
        eng.add("c1", "alice", 1, None, (0, 100))  # 9 -> 10 grows by one byte
    assert eng.get("c1").counter == (9, None, None) and eng.get("c1").version == 1
    with raises(errors.CAPACITY_EXCEEDED):
        eng.update("c1", "alice", b'{"value":100}', None, (100, 1))
    out, g = eng.add("c1", "alice", -9, None, (0, 0))  # shrinking is never refused
    assert g == 0 and out.startswith(b'{"value":0,')
    out, g = eng.add("c1", "alice", 10, None, (1, 1))
    assert g == 1
    assert eng.total_bytes == len(b'{"value":10}') + 256


# --- customer checks ------------------------------------------------------------------------------------


def test_other_customer_is_unauthorized(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng)
    counter(eng)
    _, _, lock = eng.begin_modify("s1", "alice")
    for call in (
        lambda: eng.check_live("s1", "bob"),
        lambda: eng.snapshot("s1", "bob"),
        lambda: eng.begin_modify("s1", "bob"),
        lambda: eng.complete_modify("s1", "bob", lock, b"x", None, None),
        lambda: eng.cancel_modify("s1", "bob", lock),
        lambda: eng.update("s1", "bob", b"x", None, None),
        lambda: eng.add("c1", "bob", 1, None, None),
        lambda: eng.update("c1", "bob", b'{"value":1}', None, None),
        lambda: eng.delete("s1", "bob"),
    ):
        with raises(errors.UNAUTHORIZED):
            call()
    clock.advance(1000)  # 403 comes before 410
    with raises(errors.UNAUTHORIZED):
        eng.snapshot("s1", "bob")
    assert eng.count == 2


def test_missing_store_is_not_found(eng: StoreEngine) -> None:
    for call in (
        lambda: eng.check_live("x", "alice"),
        lambda: eng.snapshot("x", "alice"),
        lambda: eng.begin_modify("x", "alice"),
        lambda: eng.complete_modify("x", "alice", "L", b"x", None, None),
        lambda: eng.update("x", "alice", b"x", None, None),
        lambda: eng.add("x", "alice", 1, None, None),
    ):
        with raises(errors.NOT_FOUND_STORE):
            call()


# --- TTL / expiry -------------------------------------------------------------------------------------------


def test_ttl_remaining_and_expiry_edge(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, ttl=3600)
    assert eng.snapshot("s1", "alice")[1] == 3600
    clock.advance(0.25)
    assert eng.snapshot("s1", "alice")[1] == 3599  # floor
    clock.t = T0 + 3599.75
    assert eng.snapshot("s1", "alice")[1] == 0
    clock.t = T0 + 3600  # now == expiry: not expired
    assert eng.snapshot("s1", "alice")[1] == 0
    eng.check_live("s1", "alice")
    assert eng.alive("s1")
    clock.t = T0 + 3600.000001
    assert not eng.alive("s1")
    for call in (
        lambda: eng.check_live("s1", "alice"),
        lambda: eng.snapshot("s1", "alice"),
        lambda: eng.begin_modify("s1", "alice"),
        lambda: eng.update("s1", "alice", b"x", None, None),
    ):
        with raises(errors.STORE_EXPIRED):
            call()


def test_expired_counter_ops(eng: StoreEngine, clock: FakeClock) -> None:
    counter(eng, ttl=1)
    clock.advance(2)
    with raises(errors.STORE_EXPIRED):
        eng.add("c1", "alice", 1, None, None)
    with raises(errors.STORE_EXPIRED):
        eng.update("c1", "alice", b"garbage", None, None)  # 410 before the JSON check
    with raises(errors.STORE_EXPIRED):
        eng.begin_modify("c1", "alice")  # 410 before TypeMismatch


def test_ttl_reset_by_writes(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, ttl=10)
    counter(eng, ttl=10)
    clock.advance(5)
    eng.update("s1", "alice", b"x", None, None)
    assert eng.get("s1").expiry == T0 + 10  # unchanged without a TTL
    eng.update("s1", "alice", b"y", 100, None)
    assert eng.get("s1").expiry == T0 + 105
    eng.add("c1", "alice", 1, None, None)
    assert eng.get("c1").expiry == T0 + 10
    eng.add("c1", "alice", 1, 7, None)
    assert eng.get("c1").expiry == T0 + 12
    eng.update("c1", "alice", b'{"value":3}', 20, None)
    assert eng.get("c1").expiry == T0 + 25
    _, ttl, lock = eng.begin_modify("s1", "alice")
    assert ttl == 100
    eng.complete_modify("s1", "alice", lock, b"z", None, None)
    assert eng.get("s1").expiry == T0 + 105
    _, _, lock = eng.begin_modify("s1", "alice")
    eng.complete_modify("s1", "alice", lock, b"z", 1, None)
    assert eng.get("s1").expiry == T0 + 6
    # a non-positive TTL expires immediately
    eng.update("s1", "alice", b"w", 0, None)
    clock.advance(0.001)
    with raises(errors.STORE_EXPIRED):
        eng.snapshot("s1", "alice")


def test_reads_do_not_change_expiry(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, ttl=10)
    eng.snapshot("s1", "alice")
    _, _, lock = eng.begin_modify("s1", "alice")
    eng.cancel_modify("s1", "alice", lock)
    assert eng.get("s1").expiry == T0 + 10


# --- snapshot --------------------------------------------------------------------------------------------------


def test_snapshot_ignores_locks(eng: StoreEngine) -> None:
    blob(eng)
    eng.begin_modify("s1", "alice")
    assert eng.snapshot("s1", "alice") == (b"data", 60, False)


# --- modify protocol ----------------------------------------------------------------------------------------


def test_begin_complete(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, body=b"v1")
    body, ttl, lock = eng.begin_modify("s1", "alice")
    assert body == b"v1" and ttl == 60 and LOCK_RE.fullmatch(lock)
    assert eng.get("s1").lock == (lock, T0 + 0.5)
    assert eng.complete_modify("s1", "alice", lock, b"v2-longer", None, None) == 7
    st_ = eng.get("s1")
    assert st_.body == b"v2-longer" and st_.version == 2 and st_.lock is None
    assert eng.total_bytes == 9 + 256
    # the lock is gone: a second complete is a mismatch
    with raises(errors.LOCK_MISMATCH):
        eng.complete_modify("s1", "alice", lock, b"v3", None, None)


def test_lock_ids_are_unique(eng: StoreEngine) -> None:
    blob(eng)
    ids = set()
    for _ in range(200):
        _, _, lock = eng.begin_modify("s1", "alice")
        eng.cancel_modify("s1", "alice", lock)
        ids.add(lock)
    assert len(ids) == 200


def test_begin_on_locked_store(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng)
    _, _, lock1 = eng.begin_modify("s1", "alice")
    with raises(errors.STORE_LOCKED):
        eng.begin_modify("s1", "alice")
    clock.advance(0.5)  # exactly lock_timeout: still held
    with raises(errors.STORE_LOCKED):
        eng.begin_modify("s1", "alice")
    clock.advance(0.001)  # expired lock is replaced
    _, _, lock2 = eng.begin_modify("s1", "alice")
    assert lock2 != lock1
    with raises(errors.LOCK_MISMATCH):
        eng.complete_modify("s1", "alice", lock1, b"late", None, None)
    eng.complete_modify("s1", "alice", lock2, b"ok", None, None)
    assert eng.snapshot("s1", "alice")[0] == b"ok"


def test_begin_on_counter_is_type_mismatch(eng: StoreEngine) -> None:
    counter(eng)
    with raises(errors.TYPE_MISMATCH):
        eng.begin_modify("c1", "alice")
    assert eng.get("c1").lock is None
    eng.get("c1").lock = ("L", T0 + 0.5)  # type is checked before the lock
    with raises(errors.TYPE_MISMATCH):
        eng.begin_modify("c1", "alice")


def test_expired_before_locked(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, ttl=0)
    eng.begin_modify("s1", "alice")  # now == expiry: still alive
    clock.advance(0.25)  # store expired, lock live
    with raises(errors.STORE_EXPIRED):
        eng.begin_modify("s1", "alice")
    with raises(errors.STORE_EXPIRED):
        eng.update("s1", "alice", b"x", None, None)
    assert eng.get("missing") is None


def test_complete_on_counter_is_type_mismatch(eng: StoreEngine) -> None:
    counter(eng)
    eng.get("c1").lock = ("L" * 22, T0 + 10)  # e.g. a replicated lock
    with raises(errors.TYPE_MISMATCH):
        eng.complete_modify("c1", "alice", "L" * 22, b"garbage", None, None)
    assert eng.get("c1").body == b'{"value":0}'


def test_complete_lock_expiry_edge(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng)
    _, _, lock = eng.begin_modify("s1", "alice")
    clock.advance(0.5)  # exactly at the lock's expiry: still valid
    eng.complete_modify("s1", "alice", lock, b"in time", None, None)
    _, _, lock = eng.begin_modify("s1", "alice")
    clock.advance(0.5001)
    with raises(errors.LOCK_MISMATCH):  # §14: a late complete fails even if nobody relocked
        eng.complete_modify("s1", "alice", lock, b"late", None, None)
    assert eng.snapshot("s1", "alice")[0] == b"in time" and eng.get("s1").version == 2


def test_complete_checks(eng: StoreEngine) -> None:
    blob(eng)
    with raises(errors.LOCK_MISMATCH):  # no lock
        eng.complete_modify("s1", "alice", "whatever", b"x", None, None)
    _, _, lock = eng.begin_modify("s1", "alice")
    with raises(errors.LOCK_MISMATCH):  # wrong lock
        eng.complete_modify("s1", "alice", lock + "x", b"x", None, None)
    with raises(errors.LOCK_MISMATCH):  # lock mismatch precedes quota
        eng.complete_modify("s1", "alice", "nope", b"x" * 100, None, (0, 0))
    assert eng.get("s1").lock[0] == lock  # the failed completes left the lock in place


def test_complete_ignores_store_expiry(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, ttl=1)
    _, _, lock = eng.begin_modify("s1", "alice")
    clock.advance(0.25)
    eng.get("s1").expiry = clock.t - 0.1  # store expired while the lock is live
    eng.complete_modify("s1", "alice", lock, b"x", 30, None)
    assert eng.snapshot("s1", "alice") == (b"x", 30, False)


def test_cancel_of_a_missing_store_is_ok(eng: StoreEngine) -> None:
    """SPEC §15: cancel-modify is idempotent like delete — a store that no longer exists is not an error;
    the engine says it was not there (so nothing is replicated)."""
    assert eng.cancel_modify("x", "alice", "L") is False
    eng.create("s1", "alice", b"v", None, None, None, None)
    assert eng.cancel_modify("s1", "alice", "L") is True


def test_cancel_semantics(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng)
    eng.cancel_modify("s1", "alice", "never-taken")  # no lock: OK
    _, _, lock = eng.begin_modify("s1", "alice")
    with raises(errors.LOCK_MISMATCH):  # a different live lock
        eng.cancel_modify("s1", "alice", "other")
    clock.advance(0.5)
    with raises(errors.LOCK_MISMATCH):  # still live at exactly lock_timeout
        eng.cancel_modify("s1", "alice", "other")
    eng.cancel_modify("s1", "alice", lock)  # own lock
    assert eng.get("s1").lock is None
    eng.cancel_modify("s1", "alice", lock)  # second cancel: idempotent
    _, _, lock = eng.begin_modify("s1", "alice")
    clock.advance(0.6)
    eng.cancel_modify("s1", "alice", "other")  # someone else's expired lock: cleared
    assert eng.get("s1").lock is None
    assert eng.get("s1").version == 1  # cancels are not mutations


def test_cancel_works_on_expired_store(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, ttl=0)
    clock.advance(1)
    eng.cancel_modify("s1", "alice", "x")


def test_release_lock(eng: StoreEngine) -> None:
    blob(eng)
    assert not eng.release_lock("nope")
    assert eng.release_lock("s1")  # no lock: fine
    eng.begin_modify("s1", "alice")
    assert eng.release_lock("s1")
    assert eng.get("s1").lock is None
    eng.begin_modify("s1", "alice")


# --- update -----------------------------------------------------------------------------------------------------


def test_update_blob(eng: StoreEngine) -> None:
    blob(eng, body=b"abc")
    assert eng.update("s1", "alice", b"abcdef", None, None) == 3
    assert eng.snapshot("s1", "alice")[0] == b"abcdef"
    assert eng.get("s1").version == 2
    assert eng.update("s1", "alice", b"", None, None) == -6
    assert eng.get("s1").version == 3 and eng.total_bytes == 256


def test_update_blob_locked(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng)
    eng.begin_modify("s1", "alice")
    with raises(errors.STORE_LOCKED):
        eng.update("s1", "alice", b"x", None, None)
    with raises(errors.STORE_LOCKED):  # lock precedes quota
        eng.update("s1", "alice", b"x" * 100, None, (0, 0))
    clock.advance(0.5)
    with raises(errors.STORE_LOCKED):
        eng.update("s1", "alice", b"x", None, None)
    clock.advance(0.01)
    eng.update("s1", "alice", b"x", None, None)  # expired lock doesn't block
    assert eng.get("s1").version == 2


def test_update_counter(eng: StoreEngine) -> None:
    counter(eng, value=5, vmin=0, vmax=100)
    assert eng.update("c1", "alice", b'{"value":42}', None, None) == 1
    assert eng.get("c1").counter == (42, 0, 100)
    assert eng.get("c1").body == b'{"value":42,"min":0,"max":100}'
    assert eng.snapshot("c1", "alice")[0] == b'{"value":42,"version":2,"min":0,"max":100}\n'
    eng.update("c1", "alice", b'{"value":100}', None, None)
    eng.update("c1", "alice", b'{"value":0}', None, None)
    assert eng.get("c1").version == 4
    assert eng.total_bytes == len(b'{"value":0,"min":0,"max":100}') + 256


def test_update_counter_check_order(eng: StoreEngine, clock: FakeClock) -> None:
    counter(eng, value=5, vmin=0, vmax=10)
    eng.get("c1").lock = ("L", T0 + 0.5)  # a live lock (only replication can set one on a counter)
    with raises(errors.INVALID_JSON_COUNTER_UPDATE):  # JSON first
        eng.update("c1", "alice", b"{}", None, None)
    with raises(errors.STORE_LOCKED):  # then the lock (§13 fix 15)
        eng.update("c1", "alice", b'{"value":50}', None, None)
    clock.advance(0.6)
    with raises(errors.VALUE_OUT_OF_BOUNDS):  # no clamping
        eng.update("c1", "alice", b'{"value":11}', None, None)
    with raises(errors.VALUE_OUT_OF_BOUNDS):
        eng.update("c1", "alice", b'{"value":-1}', None, (0, 0))  # bounds before quota
    with raises(errors.CUSTOMER_QUOTA_EXCEEDED):
        eng.update("c1", "alice", b'{"value":10}', None, (0, 0))
    assert eng.get("c1").counter == (5, 0, 10) and eng.get("c1").version == 1
    eng.update("c1", "alice", b'{"value":10}', None, (1, 1))
    assert eng.get("c1").counter == (10, 0, 10)


@pytest.mark.parametrize("body", [b"", b"5", b'{"value":"5"}', b'{"value":5.0}', b'{"value":null}', b"{}"])
def test_update_counter_invalid_json(eng: StoreEngine, body: bytes) -> None:
    counter(eng)
    with raises(errors.INVALID_JSON_COUNTER_UPDATE):
        eng.update("c1", "alice", body, None, None)


# --- add ------------------------------------------------------------------------------------------------------


def test_add_basic(eng: StoreEngine) -> None:
    counter(eng)
    assert eng.add("c1", "alice", 5, None, None) == (b'{"value":5,"version":2,"bounded":false}\n', 0)
    assert eng.add("c1", "alice", -15, None, None) == (b'{"value":-10,"version":3,"bounded":false}\n', 2)
    assert eng.get("c1").body == b'{"value":-10}'
    assert eng.total_bytes == 13 + 256
    # delta 0 still bumps the version
    assert eng.add("c1", "alice", 0, None, None)[0] == b'{"value":-10,"version":4,"bounded":false}\n'
    assert eng.snapshot("c1", "alice")[0] == b'{"value":-10,"version":4}\n'


def test_add_clamps(eng: StoreEngine) -> None:
    counter(eng, value=5, vmin=0, vmax=10)
    assert eng.add("c1", "alice", 3, None, None)[0] == b'{"value":8,"version":2,"bounded":false,"min":0,"max":10}\n'
    assert eng.add("c1", "alice", 2, None, None)[0] == b'{"value":10,"version":3,"bounded":false,"min":0,"max":10}\n'
    assert eng.add("c1", "alice", 1, None, None)[0] == b'{"value":10,"version":4,"bounded":true,"min":0,"max":10}\n'
    assert eng.add("c1", "alice", -100, None, None)[0] == b'{"value":0,"version":5,"bounded":true,"min":0,"max":10}\n'
    assert eng.get("c1").counter == (0, 0, 10)
    counter(eng, "c2", value=0, vmin=-3)
    assert eng.add("c2", "alice", -4, None, None)[0] == b'{"value":-3,"version":2,"bounded":true,"min":-3}\n'
    counter(eng, "c3", value=0, vmax=3)
    assert eng.add("c3", "alice", 4, None, None)[0] == b'{"value":3,"version":2,"bounded":true,"max":3}\n'


def test_add_overflow(eng: StoreEngine) -> None:
    counter(eng, "hi", value=I64_MAX - 1)
    out, _ = eng.add("hi", "alice", 1, None, None)
    assert out.startswith(b'{"value":%d,' % I64_MAX)
    with raises(errors.OVERFLOW):
        eng.add("hi", "alice", 1, None, None)
    with raises(errors.OVERFLOW):
        eng.add("hi", "alice", I64_MAX, None, None)
    assert eng.get("hi").counter[0] == I64_MAX and eng.get("hi").version == 2
    counter(eng, "lo", value=I64_MIN + 1)
    eng.add("lo", "alice", -1, None, None)
    with raises(errors.OVERFLOW):
        eng.add("lo", "alice", -1, None, None)
    with raises(errors.OVERFLOW):
        eng.add("lo", "alice", I64_MIN, None, None)
    assert eng.get("lo").counter[0] == I64_MIN


def test_decrement_of_min_int64(eng: StoreEngine) -> None:
    """Decrement by -2**63 arrives as delta = +2**63 (the ops layer negates); computed exactly (§13 fix 2)."""
    counter(eng, value=0)
    with raises(errors.OVERFLOW):
        eng.add("c1", "alice", 2**63, None, None)
    counter(eng, "c2", value=-1)
    out, _ = eng.add("c2", "alice", 2**63, None, None)
    assert out == b'{"value":%d,"version":2,"bounded":false}\n' % I64_MAX
    counter(eng, "c3", value=I64_MIN)
    eng.add("c3", "alice", 2**63, None, None)
    assert eng.get("c3").counter[0] == 0


def test_overflow_checked_before_clamping(eng: StoreEngine) -> None:
    counter(eng, value=0, vmin=-10, vmax=10)
    eng.update("c1", "alice", b'{"value":10}', None, None)
    with raises(errors.OVERFLOW):
        eng.add("c1", "alice", I64_MAX, None, None)  # 10 + MAX overflows even though it would clamp to 10
    out, _ = eng.add("c1", "alice", I64_MAX - 10, None, None)
    assert b'"value":10,' in out and b'"bounded":true' in out


def test_add_check_order(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng)
    with raises(errors.TYPE_MISMATCH):
        eng.add("s1", "alice", 1, None, None)
    counter(eng, value=I64_MAX, ttl=10)
    eng.get("c1").lock = ("L", T0 + 0.5)
    with raises(errors.STORE_LOCKED):  # lock before overflow
        eng.add("c1", "alice", 1, None, None)
    clock.advance(0.75)
    with raises(errors.OVERFLOW):  # overflow before quota
        eng.add("c1", "alice", 1, None, (0, 0))
    clock.advance(100)
    with raises(errors.STORE_EXPIRED):  # expiry before type
        eng.add("s1", "alice", 1, None, None)
    with raises(errors.STORE_EXPIRED):
        eng.add("c1", "alice", 1, None, None)


# --- delete -------------------------------------------------------------------------------------------------


def test_delete(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, body=b"12345")
    counter(eng, ttl=0)
    blob(eng, "locked")
    eng.begin_modify("locked", "alice")
    assert eng.delete("s1", "alice") == -261
    assert eng.delete("s1", "alice") == 0  # idempotent
    assert eng.delete("never", "alice") == 0
    clock.advance(5)
    assert eng.delete("c1", "alice") == -267  # expired
    assert eng.delete("locked", "alice") == -260  # locked
    assert eng.count == 0 and eng.total_bytes == 0 and eng.usage() == {}
    with raises(errors.NOT_FOUND_STORE):
        eng.snapshot("s1", "alice")


def test_force_delete(eng: StoreEngine) -> None:
    blob(eng, customer="bob", pending="n")
    assert eng.force_delete("s1") == ("bob", -260)
    assert eng.force_delete("s1") is None
    assert eng.pending_older_than(-1) == []
    assert eng.count == 0 and eng.usage() == {}


def test_alive(eng: StoreEngine, clock: FakeClock) -> None:
    assert not eng.alive("s1")
    blob(eng, customer="bob", ttl=1)
    assert eng.alive("s1")
    clock.advance(1)
    assert eng.alive("s1")
    clock.advance(0.5)
    assert not eng.alive("s1")


# --- GC -----------------------------------------------------------------------------------------------------


def test_collect_expired(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, "short", b"x", ttl=10)
    blob(eng, "long", b"y", ttl=100)
    counter(eng, "cnt", ttl=10, customer="bob")
    blob(eng, "edge", b"", ttl=20)
    assert eng.collect_expired() == []
    clock.advance(20)  # "edge": now == expiry, not expired
    got = sorted(eng.collect_expired())
    assert got == [("cnt", "bob", -267), ("short", "alice", -257)]
    assert eng.count == 2 and eng.usage() == {"alice": 257 + 256}
    with raises(errors.NOT_FOUND_STORE):  # 410 until GC, then 404
        eng.snapshot("short", "alice")
    clock.advance(0.001)
    assert eng.collect_expired() == [("edge", "alice", -256)]


def test_gc_skips_locked_expired_stores(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, ttl=1)
    clock.advance(0.75)
    eng.begin_modify("s1", "alice")  # lock until T0 + 1.25
    clock.t = T0 + 1.25  # store expired, lock live (exactly at its expiry)
    assert eng.collect_expired() == []
    assert eng.count == 1
    clock.t = T0 + 1.2501
    assert eng.collect_expired() == [("s1", "alice", -260)]


def test_gc_removes_expired_store_with_expired_lock(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, ttl=1)
    eng.begin_modify("s1", "alice")
    clock.advance(2)
    assert [r[0] for r in eng.collect_expired()] == ["s1"]


def test_pending_orphans(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, "a", pending="cart")
    clock.advance(5)
    blob(eng, "b", pending="other", customer="bob")
    blob(eng, "c")
    assert eng.pending_older_than(10) == []
    clock.advance(5)  # "a" is exactly 10 s old: not older than 10
    assert eng.pending_older_than(10) == []
    clock.advance(0.001)
    assert eng.pending_older_than(10) == [("a", "alice", "cart")]
    assert sorted(eng.pending_older_than(1)) == [("a", "alice", "cart"), ("b", "bob", "other")]
    eng.clear_pending("a")
    eng.clear_pending("a")
    eng.clear_pending("unknown")
    assert eng.get("a").pending is None
    assert eng.pending_older_than(1) == [("b", "bob", "other")]
    assert eng.count == 3  # nothing removed by the query
    eng.delete("b", "bob")
    assert eng.pending_older_than(0) == []


def test_gc_drops_pending_marker(eng: StoreEngine, clock: FakeClock) -> None:
    blob(eng, pending="n", ttl=1)
    clock.advance(20)
    eng.collect_expired()
    assert eng.pending_older_than(0) == []


# --- errors hygiene ---------------------------------------------------------------------------------------


def test_raised_errors_do_not_accumulate_tracebacks(eng: StoreEngine) -> None:
    for _ in range(5):
        with pytest.raises(errors.ApiError):
            eng.snapshot("missing", "alice")
    tb, depth = errors.NOT_FOUND_STORE.__traceback__, 0
    while tb is not None:
        depth += 1
        tb = tb.tb_next
    assert depth <= 4


def test_store_has_no_dict(eng: StoreEngine) -> None:
    blob(eng)
    assert not hasattr(eng.get("s1"), "__dict__")


# --- model-based state machine -------------------------------------------------------------------------


class _M:
    """Model of one store."""

    def __init__(self, customer, body, counter, expiry):
        self.customer = customer
        self.body = body
        self.counter = counter  # None or [value, min, max]
        self.expiry = expiry
        self.version = 1
        self.lock = None  # (id, expires_at)


def _internal(c) -> bytes:
    s = f'{{"value":{c[0]}'
    if c[1] is not None:
        s += f',"min":{c[1]}'
    if c[2] is not None:
        s += f',"max":{c[2]}'
    return (s + "}").encode()


CUSTOMERS = ("alice",) * 7 + ("bob",)  # mostly the owner
TIMESTEPS = (0.0, 0.125, 0.25, 0.5, 0.5 + 2**-10, 0.625, 1.0, 3.0, 10.0)
TTLS = st.none() | st.sampled_from([-1, 0, 0, 1, 1, 2, 5, 20])
small_i64 = st.one_of(st.integers(-20, 20), st.sampled_from([I64_MIN, I64_MIN + 1, I64_MAX - 1, I64_MAX]))


class EngineMachine(RuleBasedStateMachine):
    sids = Bundle("sids")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.eng = StoreEngine(lock_timeout=0.5, clock=self.clock)
        self.model: dict[str, _M] = {}
        self.locks: dict[str, str] = {}  # last lock id handed out per store
        self.n = 0

    @initialize(target=sids)
    def seed_blob(self):
        return self.create_blob(b"seed", None, "alice")

    @initialize(target=sids)
    def seed_counter(self):
        return self.create_counter(0, -5, 5, None, "alice")

    # -- helpers
    def now(self) -> float:
        return self.clock.t

    def _new_sid(self) -> str:
        self.n += 1
        return f"v1:0:{self.n:059d}"

    def expect(self, err, fn):
        if err is None:
            return fn()
        with raises(err):
            fn()
        return None

    def lookup(self, sid, customer, check_expiry=True):
        m = self.model.get(sid)
        if m is None:
            return None, errors.NOT_FOUND_STORE
        if m.customer != customer:
            return m, errors.UNAUTHORIZED
        if check_expiry and self.now() > m.expiry:
            return m, errors.STORE_EXPIRED
        return m, None

    def live_lock(self, m) -> bool:
        return m.lock is not None and self.now() <= m.lock[1]

    # -- rules
    @rule(target=sids, body=st.binary(max_size=40), ttl=TTLS, customer=st.sampled_from(CUSTOMERS))
    def create_blob(self, body, ttl, customer):
        sid = self._new_sid()
        assert self.eng.create(sid, customer, body, None, ttl, None, None) == len(body) + 256
        self.model[sid] = _M(customer, body, None, self.now() + (1_209_600 if ttl is None else ttl))
        return sid

    @rule(
        target=sids,
        value=small_i64,
        lo=st.none() | small_i64,
        hi=st.none() | small_i64,
        ttl=TTLS,
        customer=st.sampled_from(CUSTOMERS),
    )
    def create_counter(self, value, lo, hi, ttl, customer):
        sid = self._new_sid()
        err = None
        if lo is not None and hi is not None and lo > hi:
            err = errors.INVALID_BOUNDS
        elif (lo is not None and value < lo) or (hi is not None and value > hi):
            err = errors.VALUE_OUT_OF_BOUNDS
        res = self.expect(err, lambda: self.eng.create(sid, customer, b"", (value, lo, hi), ttl, None, None))
        if err is None:
            c = [value, lo, hi]
            assert res == len(_internal(c)) + 256
            self.model[sid] = _M(customer, _internal(c), c, self.now() + (1_209_600 if ttl is None else ttl))
        return sid

    @rule(sid=sids, customer=st.sampled_from(CUSTOMERS))
    def snapshot(self, sid, customer):
        m, err = self.lookup(sid, customer)
        res = self.expect(err, lambda: self.eng.snapshot(sid, customer))
        if err is None:
            body, ttl, is_counter = res
            assert ttl == int(max(m.expiry - self.now(), 0))
            assert is_counter == (m.counter is not None)
            if m.counter is None:
                assert body == m.body
            else:
                v, lo, hi = m.counter
                want = b'{"value":%d,"version":%d' % (v, m.version)
                if lo is not None:
                    want += b',"min":%d' % lo
                if hi is not None:
                    want += b',"max":%d' % hi
                assert body == want + b"}\n"

    @rule(
        sid=sids,
        customer=st.sampled_from(CUSTOMERS),
        body=st.binary(max_size=40),
        value=small_i64,
        ttl=TTLS,
        as_json=st.booleans(),
    )
    def update(self, sid, customer, body, value, ttl, as_json):
        m, err = self.lookup(sid, customer)
        newc = None
        if m is not None and m.counter is not None and as_json:
            body = b'{"value":%d}' % value
        if err is None:
            if m.counter is not None:
                if not as_json:
                    body = b"not json"
                    err = errors.INVALID_JSON_COUNTER_UPDATE
                elif self.live_lock(m):
                    err = errors.STORE_LOCKED
                elif (m.counter[1] is not None and value < m.counter[1]) or (
                    m.counter[2] is not None and value > m.counter[2]
                ):
                    err = errors.VALUE_OUT_OF_BOUNDS
                else:
                    newc = [value, m.counter[1], m.counter[2]]
            elif self.live_lock(m):
                err = errors.STORE_LOCKED
        res = self.expect(err, lambda: self.eng.update(sid, customer, body, ttl, None))
        if err is None:
            newbody = _internal(newc) if newc is not None else body
            assert res == len(newbody) - len(m.body)
            m.body, m.counter = newbody, newc
            m.version += 1
            if ttl is not None:
                m.expiry = self.now() + ttl

    @rule(sid=sids, customer=st.sampled_from(CUSTOMERS))
    def begin(self, sid, customer):
        m, err = self.lookup(sid, customer)
        if err is None:
            if m.counter is not None:
                err = errors.TYPE_MISMATCH
            elif self.live_lock(m):
                err = errors.STORE_LOCKED
        res = self.expect(err, lambda: self.eng.begin_modify(sid, customer))
        if err is None:
            body, ttl, lock = res
            assert body == m.body and ttl == int(m.expiry - self.now()) and LOCK_RE.fullmatch(lock)
            m.lock = (lock, self.now() + 0.5)
            self.locks[sid] = lock

    @rule(sid=sids, customer=st.sampled_from(CUSTOMERS), right=st.booleans(), body=st.binary(max_size=40), ttl=TTLS)
    def complete(self, sid, customer, right, body, ttl):
        lock_id = self.locks.get(sid, "no-such-lock") if right else "wrong-lock"
        m, err = self.lookup(sid, customer, check_expiry=False)
        if err is None:
            if m.counter is not None:
                err = errors.TYPE_MISMATCH
            elif m.lock is None or m.lock[0] != lock_id or self.now() > m.lock[1]:
                err = errors.LOCK_MISMATCH
        res = self.expect(err, lambda: self.eng.complete_modify(sid, customer, lock_id, body, ttl, None))
        if err is None:
            assert res == len(body) - len(m.body)
            m.body = body
            m.lock = None
            m.version += 1
            if ttl is not None:
                m.expiry = self.now() + ttl

    @rule(sid=sids, customer=st.sampled_from(CUSTOMERS), right=st.booleans())
    def cancel(self, sid, customer, right):
        lock_id = self.locks.get(sid, "no-such-lock") if right else "wrong-lock"
        m, err = self.lookup(sid, customer, check_expiry=False)
        if err is errors.NOT_FOUND_STORE:
            err = None  # §15: cancelling on a store that no longer exists is OK (idempotent)
        elif err is None and self.live_lock(m) and m.lock[0] != lock_id:
            err = errors.LOCK_MISMATCH
        res = self.expect(err, lambda: self.eng.cancel_modify(sid, customer, lock_id))
        if err is None:
            assert res is (m is not None)
            if m is not None:
                m.lock = None

    @rule(sid=sids, customer=st.sampled_from(CUSTOMERS), delta=st.one_of(small_i64, st.just(2**63)), ttl=TTLS)
    def add(self, sid, customer, delta, ttl):
        m, err = self.lookup(sid, customer)
        if err is None:
            if m.counter is None:
                err = errors.TYPE_MISMATCH
            elif self.live_lock(m):
                err = errors.STORE_LOCKED
            elif not I64_MIN <= m.counter[0] + delta <= I64_MAX:
                err = errors.OVERFLOW
        res = self.expect(err, lambda: self.eng.add(sid, customer, delta, ttl, None))
        if err is None:
            v, lo, hi = m.counter
            nv = v + delta
            bounded = False
            if lo is not None and nv < lo:
                nv, bounded = lo, True
            if hi is not None and nv > hi:
                nv, bounded = hi, True
            newc = [nv, lo, hi]
            out, growth = res
            assert growth == len(_internal(newc)) - len(m.body)
            m.version += 1
            want = b'{"value":%d,"version":%d,"bounded":%s' % (nv, m.version, b"true" if bounded else b"false")
            if lo is not None:
                want += b',"min":%d' % lo
            if hi is not None:
                want += b',"max":%d' % hi
            assert out == want + b"}\n"
            m.counter, m.body = newc, _internal(newc)
            if ttl is not None:
                m.expiry = self.now() + ttl

    @rule(sid=consumes(sids), customer=st.sampled_from(CUSTOMERS))
    def delete(self, sid, customer):
        m = self.model.get(sid)
        if m is not None and m.customer != customer:
            with raises(errors.UNAUTHORIZED):
                self.eng.delete(sid, customer)
            return
        got = self.eng.delete(sid, customer)
        assert got == (0 if m is None else -(len(m.body) + 256))
        self.model.pop(sid, None)

    @rule(
        sid=sids,
        dt=st.sampled_from(TIMESTEPS),
        follow=st.sampled_from(["complete", "complete-wrong", "cancel", "cancel-wrong", "begin", "update", "gc"]),
        body=st.binary(max_size=8),
        ttl=TTLS,
    )
    def lock_scenario(self, sid, dt, follow, body, ttl):
        """begin-modify, let time pass, then one follow-up: makes lock-expiry edges frequent."""
        self.begin(sid, "alice")
        self.advance(dt)
        if follow.startswith("complete"):
            self.complete(sid, "alice", follow == "complete", body, ttl)
        elif follow.startswith("cancel"):
            self.cancel(sid, "alice", follow == "cancel")
        elif follow == "begin":
            self.begin(sid, "alice")
        elif follow == "update":
            self.update(sid, "alice", body, 1, ttl, True)
        else:
            self.gc()

    @rule(dt=st.sampled_from(TIMESTEPS))
    def advance(self, dt):
        self.clock.advance(dt)

    @rule()
    def gc(self):
        now = self.now()
        want = sorted(
            (sid, m.customer, -(len(m.body) + 256))
            for sid, m in self.model.items()
            if now > m.expiry and not (m.lock is not None and now <= m.lock[1])
        )
        assert sorted(self.eng.collect_expired()) == want
        for sid, _, _ in want:
            del self.model[sid]

    @rule(sid=sids)
    def release(self, sid):
        assert self.eng.release_lock(sid) == (sid in self.model)
        if sid in self.model:
            self.model[sid].lock = None

    @invariant()
    def totals_match(self):
        assert self.eng.count == len(self.model)
        usage: dict[str, int] = {}
        for m in self.model.values():
            usage[m.customer] = usage.get(m.customer, 0) + len(m.body) + 256
        assert self.eng.usage() == usage
        assert self.eng.total_bytes == sum(usage.values())
        for sid, m in self.model.items():
            s = self.eng.get(sid)
            assert s.version == m.version and s.body == m.body and s.customer == m.customer
            assert s.expiry == m.expiry and s.lock == m.lock
            assert (s.counter is None) == (m.counter is None)
            if m.counter is not None:
                assert list(s.counter) == m.counter
            assert self.eng.alive(sid) == (not self.now() > m.expiry)


EngineMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestEngineMachine = EngineMachine.TestCase
