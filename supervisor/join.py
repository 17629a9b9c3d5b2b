"""Join (SPEC §7.6), both sides; mixed into ``supervisor.cluster.Cluster``, whose state it uses.

Joiner: ``request_join`` (at most one in flight, retried every ``JOIN_RETRY`` s, abandoned after
``JOIN_STALL`` s) → chunks arrive in order → on the last one the snapshot is checked (site, epoch not
older than ours, registry present, no store ID bound to two active names) and applied atomically:
every shard replaced, registry and tombstones adopted, epoch adopted, role SECONDARY, replication
resumes after the snapshot's sequence number.

Primary: one join at a time; the write barrier is held only while the snapshot is captured (in-flight
mutations drain first, new ones get ``503 JoinSyncing``); chunks then go out ahead of every later
replication record, which carry higher sequence numbers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bigbunny import wire
from bigbunny.records import FullRecord, full_record, name_row
from bigbunny.sharding import shard_of
from bigbunny.supervisor import peerlink
from bigbunny.supervisor.channel import ShardDown
from bigbunny.supervisor.role import JOINING, SECONDARY

if TYPE_CHECKING:
    from bigbunny.config import Peer
    from bigbunny.supervisor.node import Node
    from bigbunny.supervisor.replication import Receiver, Sender
    from bigbunny.supervisor.role import RoleState

log = logging.getLogger("bbd.cluster")
JOIN_RETRY = 1.0
JOIN_STALL = 15.0
CHUNK = 1000


class ClusterState:
    """What ``JoinProtocol`` uses of its host ``Cluster``, declared for the type checker.

    Annotations only: ``Cluster.__init__`` sets the attributes and ``Cluster`` defines the methods, so
    nothing here exists at run time.
    """

    node: Node
    role: RoleState
    peer: Peer
    verify_site: bool
    link: peerlink.PeerLink
    sender: Sender
    receiver: Receiver
    leader: str | None
    ever_saw_primary: bool
    join_attempt: float
    join_id: str | None
    join_chunks: list[list[Any]]
    serving_join: bool
    _join_ids: Iterator[int]

    if TYPE_CHECKING:

        def send(self, kind: str, fields: list[Any], body: bytes = b"") -> bool: ...

        def _ack(self) -> None: ...


class JoinProtocol(ClusterState):
    """The join half of the cluster protocol (methods only; state lives on the Cluster)."""

    # --- join: joiner side ---------------------------------------------------------------------------
    def request_join(self) -> None:
        self.join_attempt = time.monotonic()
        self.join_id = f"{self.node.cfg.host_id}-{next(self._join_ids)}"
        self.join_chunks = []
        log.info("asking %s for a join snapshot (%s)", self.peer.id, self.join_id)
        if not self.send(peerlink.JOIN_REQ, [self.join_id, True]):
            self.join_id = None

    def on_join_refuse(self, hdr: list[Any], body: bytes) -> None:
        if hdr[5] == self.join_id:
            log.info("join %s refused: %s", self.join_id, hdr[6])
            self.join_id = None

    def on_join_chunk(self, hdr: list[Any], body: bytes) -> None:
        join_id, index, last, stores, meta = hdr[5], hdr[6], hdr[7], hdr[8], hdr[9]
        if join_id != self.join_id or self.role.role != JOINING or index != len(self.join_chunks):
            return
        self.join_chunks.append(stores)
        if last:
            asyncio.get_running_loop().create_task(self._apply_join(hdr[3], meta))

    async def _apply_join(self, epoch: int, meta: dict[str, Any]) -> None:
        join_id, chunks = self.join_id, self.join_chunks
        self.join_chunks = []
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
        if self.role.role != JOINING or self.join_id != join_id or epoch < self.role.epoch:
            return  # something changed while we were loading: the next attempt starts over
        node.registry.load(meta["registry"])
        node.tombstones.replace(meta["tombstones"])
        self.role.epoch = epoch
        self.role.role = SECONDARY
        self.role.last_leader_seen = time.monotonic()
        self.leader = self.peer.id
        self.ever_saw_primary = True
        self.join_id = None
        self.receiver.start_stream(meta["stream"], meta["base_seq"])
        self._ack()
        log.warning("role SECONDARY (epoch %d): joined %s with %d stores", epoch, self.peer.id, count)

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
    def on_join_request(self, hdr: list[Any], body: bytes) -> None:
        join_id = hdr[5]
        if not self.role.is_primary:
            self.send(peerlink.JOIN_REFUSE, [join_id, "not primary", 1])
            return
        if self.serving_join:
            self.send(peerlink.JOIN_REFUSE, [join_id, "another join is in progress", 2])
            return
        self.serving_join = True
        asyncio.get_running_loop().create_task(self._serve_join(join_id))

    async def _serve_join(self, join_id: str) -> None:
        node, role = self.node, self.role
        try:
            role.barrier = True  # new mutations → 503 JoinSyncing; in-flight ones finish first
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
            meta = {
                "site": node.cfg.site,
                "has_registry": True,
                "registry": node.registry.snapshot(),
                "tombstones": node.tombstones.snapshot(),
                "stream": self.sender.stream,
                "base_seq": self.sender.seq,
            }
            epoch = role.epoch
        finally:
            role.barrier = False  # the snapshot is captured; later records have higher sequence numbers
        try:
            chunks = [dumps[i : i + CHUNK] for i in range(0, len(dumps), CHUNK)] or [[]]
            for i, chunk in enumerate(chunks):
                last = i == len(chunks) - 1
                if not self.link.send(peerlink.JOIN_CHUNK, epoch, [join_id, i, last, chunk, meta if last else None]):
                    log.warning("join %s: peer unreachable while sending the snapshot", join_id)
                    return
                if not last and i % 10 == 9:
                    await asyncio.sleep(0)  # let other work run between big chunks
            log.info("join %s: sent %d stores in %d chunks", join_id, len(dumps), len(chunks))
        finally:
            self.serving_join = False
