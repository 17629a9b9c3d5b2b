"""Join (SPEC §7.6), both sides: a component the ``Cluster`` owns, given what it needs explicitly.

Joiner: ``request`` (at most one in flight, retried every ``JOIN_RETRY`` s, abandoned after
``JOIN_STALL`` s) → chunks arrive in order → on the last one the snapshot is checked (site, epoch not
older than ours, registry present, no store ID bound to two active names) and applied atomically:
every shard replaced, registry and tombstones adopted, the role turns SECONDARY at the snapshot's
epoch (``RoleState.joined``), and replication resumes after the snapshot's sequence number
(``on_joined``).

Primary: one join at a time; the write barrier is held only while the snapshot is captured (in-flight
mutations drain first, new ones get ``503 JoinSyncing``); chunks then go out ahead of every later
replication record, which carry higher sequence numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bigbunny import wire
from bigbunny.records import FullRecord, full_record, name_row
from bigbunny.sharding import shard_of
from bigbunny.supervisor.cluster.messages import JoinChunk, JoinRefuse, JoinRequest, Message, Origin
from bigbunny.supervisor.pool.channel import ShardDown
from bigbunny.supervisor.state.role import JOINING

if TYPE_CHECKING:
    from bigbunny.supervisor.state.node import Node

log = logging.getLogger("bbd.cluster")
JOIN_RETRY = 1.0
JOIN_STALL = 15.0
CHUNK = 1000


class JoinProtocol:
    """Both sides of a join. ``send`` stamps a message with our current epoch, ``send_at`` with a given
    one; ``position`` is the primary's replication ``(stream, seq)``; ``on_joined(stream, base_seq)``
    is called once the snapshot is applied and the role is SECONDARY."""

    def __init__(
        self,
        node: Node,
        peer_id: str,
        verify_site: bool,
        send: Callable[[Message], bool],
        send_at: Callable[[int, Message], bool],
        position: Callable[[], tuple[str, int]],
        on_joined: Callable[[str, int], None],
    ) -> None:
        self.node = node
        self.role = node.role
        self.peer_id = peer_id
        self.verify_site = verify_site
        self.send = send
        self.send_at = send_at
        self.position = position
        self.on_joined = on_joined
        self.attempt = 0.0  # monotonic time of the last request
        self.join_id: str | None = None  # the request in flight
        self.chunks: list[list[Any]] = []
        self.serving = False
        self._ids = itertools.count(1)

    # --- join: joiner side -----------------------------------------------------------------------
    def may_ask(self, now: float) -> bool:
        """No request in flight and the last one at least ``JOIN_RETRY`` s ago."""
        return self.join_id is None and now - self.attempt >= JOIN_RETRY

    def check_stall(self, now: float) -> None:
        if self.join_id is not None and now - self.attempt > JOIN_STALL:
            log.warning("join %s stalled; retrying", self.join_id)
            self.join_id = None

    def abandon(self) -> None:
        """Forget the request in flight (we took over): its snapshot would not be applied."""
        self.join_id = None

    # --- join: joiner side ---------------------------------------------------------------------------
    def request(self) -> None:
        self.attempt = self.role.clock()
        self.join_id = f"{self.node.cfg.host_id}-{next(self._ids)}"
        self.chunks = []
        log.info("asking %s for a join snapshot (%s)", self.peer_id, self.join_id)
        if not self.send(JoinRequest(self.join_id)):
            self.join_id = None

    def on_refuse(self, origin: Origin, msg: JoinRefuse) -> None:
        if msg.join_id == self.join_id:
            log.info("join %s refused: %s", self.join_id, msg.reason)
            self.join_id = None

    def on_chunk(self, origin: Origin, msg: JoinChunk) -> None:
        if msg.join_id != self.join_id or self.role.role != JOINING or msg.part != len(self.chunks):
            return
        self.chunks.append(msg.stores)
        if msg.last:
            asyncio.get_running_loop().create_task(self._apply(origin.epoch, msg.meta or {}))

    async def _apply(self, epoch: int, meta: dict[str, Any]) -> None:
        join_id, chunks = self.join_id, self.chunks
        self.chunks = []
        why = self._refusal(epoch, meta)
        if why:
            log.warning("refusing join snapshot %s: %s", join_id, why)
            self.join_id = None
            return
        node = self.node
        per_shard: list[list[FullRecord]] = [[] for _ in range(node.nshards)]
        tombstoned = {row[0] for row in meta["tombstones"]}
        count = 0
        for chunk in chunks:
            for rec in map(full_record, chunk):
                if rec.sid not in tombstoned:
                    per_shard[shard_of(rec.sid, node.nshards)].append(rec)
                    count += 1
        for i, records in enumerate(per_shard):
            try:
                res = await node.channels[i].call(wire.OP_LOAD, extra=[True, records])
            except ShardDown:
                log.warning("join %s: shard %d is down; retrying later", join_id, i)
                self.join_id = None
                return
            node.accounting.drop_shard(i)
            for customer, used in (res.a or {}).items():  # a = usage by customer
                node.accounting.apply(i, customer, used)
        # Something may have changed while we were loading (no longer JOINING, a newer epoch, a new
        # attempt): then nothing is adopted and the next attempt starts over.
        if self.join_id != join_id or self.role.joined(self.peer_id, epoch) is None:
            return
        node.registry.load(meta["registry"])
        node.tombstones.replace(meta["tombstones"])
        self.join_id = None
        self.on_joined(meta["stream"], meta["base_seq"])
        log.warning("role SECONDARY (epoch %d): joined %s with %d stores", epoch, self.peer_id, count)

    def _refusal(self, epoch: int, meta: dict[str, Any]) -> str:
        if self.verify_site and meta.get("site") and meta["site"] != self.node.cfg.site:
            return f"site {meta['site']!r} is not ours"
        if epoch < self.role.epoch:
            return f"epoch {epoch} is older than ours ({self.role.epoch})"
        if not meta.get("has_registry"):
            return "snapshot has no registry"
        seen: set[str] = set()
        for row in map(name_row, meta["registry"]):
            if row.state == "active" and row.store_id:
                if row.store_id in seen:
                    return f"two active names share store {row.store_id}"
                seen.add(row.store_id)
        return ""

    # --- join: primary side --------------------------------------------------------------------------
    def on_request(self, origin: Origin, msg: JoinRequest) -> None:
        join_id = msg.join_id
        if not self.role.is_primary:
            self.send(JoinRefuse(join_id, "not primary", 1))
            return
        if self.serving:
            self.send(JoinRefuse(join_id, "another join is in progress", 2))
            return
        self.serving = True
        asyncio.get_running_loop().create_task(self._serve(join_id))

    async def _serve(self, join_id: str) -> None:
        node, role = self.node, self.role
        # new mutations → 503 JoinSyncing; in-flight ones finish first. Released once the snapshot is
        # captured: later records have higher sequence numbers.
        with role.snapshot_barrier():
            deadline = time.monotonic() + 5.0
            while node.inflight_calls and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            dumps: list[list[Any]] = []
            for i in range(node.nshards):
                try:
                    res = await node.channels[i].call(wire.OP_DUMP)
                    dumps.extend(res.a or [])  # a = every store as a FullRecord
                except ShardDown:
                    log.warning("join %s: shard %d is down, its stores are not in the snapshot", join_id, i)
            meta: dict[str, Any] = {
                "site": node.cfg.site,
                "has_registry": True,
                "registry": node.registry.snapshot(),
                "tombstones": node.tombstones.snapshot(),
            }
            meta["stream"], meta["base_seq"] = self.position()
            epoch = role.epoch
        try:
            chunks = [dumps[i : i + CHUNK] for i in range(0, len(dumps), CHUNK)] or [[]]
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                if not self.send_at(epoch, JoinChunk(join_id, i, last, chunk, meta if last else None)):
                    log.warning("join %s: peer unreachable while sending the snapshot", join_id)
                    return
                if not last and i % 10 == 9:
                    await asyncio.sleep(0)  # let other work run between big chunks
            log.info("join %s: sent %d stores in %d chunks", join_id, len(dumps), len(chunks))
        finally:
            self.serving = False
