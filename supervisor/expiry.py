"""Periodic housekeeping driven by the supervisor (SPEC §6).

Primary only, every ``interval`` (30 s), skipped while the join barrier is held:
1. expired, unlocked stores are removed by their shards; the supervisor tombstones them, drops their
   memory, and removes active names that pointed at them;
2. orphans — stores still marked pending-name 10 s after creation — are removed unless an active name
   points at exactly that ID (then only the marker is cleared);
3. ``creating`` names older than 5 s are aborted;
4. ``deleting`` names whose store is gone or expired are removed.
Every role, every ``tomb_interval`` (60 s): tombstones older than 24 h go, idle rate buckets go.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bigbunny import wire
from bigbunny.records import DELETE, DeleteRecord
from bigbunny.supervisor.pool.channel import ShardDown
from bigbunny.supervisor.state.node import Node
from bigbunny.supervisor.state.registry import ACTIVE, CREATING, DELETING, NameEntry, delete_record

log = logging.getLogger("bbd.gc")
ORPHAN_AGE = 10.0


class Collector:
    def __init__(self, node: Node, interval: float = 30.0, tomb_interval: float = 60.0) -> None:
        self.node = node
        self.interval = interval
        self.tomb_interval = tomb_interval

    async def run(self) -> None:
        """Both periodic jobs, each on its own cadence."""
        await asyncio.gather(self._collect_loop(), self._sweep_loop())

    async def _collect_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.node.role.is_primary and not self.node.role.barrier:
                    await self.collect_once()
            except Exception:  # housekeeping must never take the daemon down
                log.exception("gc round failed")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tomb_interval)
            try:
                self.sweep_once()
            except Exception:
                log.exception("tombstone sweep failed")

    def sweep_once(self) -> None:
        gone = self.node.tombstones.sweep()
        self.node.limiter.prune()
        if gone:
            log.info("swept %d expired tombstones", gone)

    def _remove_name(self, entry: NameEntry) -> None:
        self.node.registry.remove(entry)
        self.node.replicate(delete_record(entry), registry=True)

    async def _call(self, shard: int, op: int, sid: str = "", extra: object = None) -> Any:
        """The reply's payload (its msgpack shape depends on ``op``), or None if the shard failed it."""
        try:
            res = await self.node.channels[shard].call(op, sid=sid, extra=extra)
        except ShardDown:
            return None
        return res.a if res.err == wire.OK else None

    async def collect_once(self) -> int:
        node, removed = self.node, 0
        expired: set[str] = set()
        for shard in range(node.nshards):
            for sid, customer, growth in await self._call(shard, wire.OP_GC) or ():
                node.accounting.apply(shard, customer, growth)
                node.tombstones.add(sid, customer)
                node.replicate(DeleteRecord(DELETE, None, sid, customer))
                expired.add(sid)
        for entry in node.registry.pointing_at(expired):
            self._remove_name(entry)
        removed += len(expired)
        for shard in range(node.nshards):
            for sid, customer, name in await self._call(shard, wire.OP_ORPHANS, extra=ORPHAN_AGE) or ():
                named = node.registry.get(customer, name)
                if named is not None and named.state == ACTIVE and named.store_id == sid:
                    await self._call(shard, wire.OP_CLEAR_PENDING, sid)
                    continue
                res = await self._call(shard, wire.OP_FORCE_DELETE, sid)
                if isinstance(res, list):  # [customer, growth]; None if it was gone already
                    owner, growth = res
                    node.accounting.apply(shard, owner, growth)
                node.tombstones.add(sid, customer)
                node.replicate(DeleteRecord(DELETE, None, sid, customer))
                removed += 1
        for entry in list(node.registry.entries.values()):
            if entry.state == CREATING and node.registry.reservation_expired(entry):
                self._remove_name(entry)
            elif entry.state == DELETING:
                alive = await self._call(node.shard_for(entry.store_id), wire.OP_ALIVE, entry.store_id)
                if not alive:
                    self._remove_name(entry)
        if removed:
            log.info("gc removed %d stores", removed)
        return removed
