"""The shard's GC policy (``shards.gcpolicy``): collect + freeze at most once per interval."""

from __future__ import annotations

import gc

from bigbunny.shards.gcpolicy import GcPolicy


def test_gc_policy_collects_and_freezes_once_per_interval() -> None:
    now = [100.0]
    policy = GcPolicy(every=1.0, clock=lambda: now[0])
    try:
        before = gc.get_freeze_count()
        assert policy.tick() is False  # not yet due
        now[0] += 1.0
        survivor = [[] for _ in range(100)]  # tracked objects alive at the freeze
        assert policy.tick() is True
        assert gc.get_freeze_count() >= before + len(survivor)
        assert policy.tick() is False  # at most once per interval
    finally:
        gc.unfreeze()


def test_settle_freezes_the_start_up_heap() -> None:
    try:
        GcPolicy.settle()
        assert gc.get_freeze_count() > 1000  # the interpreter's own modules at least
        assert gc.collect() >= 0  # and a collection afterwards still works
    finally:
        gc.unfreeze()
