"""Two-node clustering: the peer link's handlers, heartbeats, lease checks and the side effects of role
changes (SPEC §7.1–7.3). The role state machine — every state and transition — is
``supervisor.state.role``; join is the ``supervisor.cluster.join`` component, relay the
``supervisor.cluster.forwarding`` one, the write gate ``supervisor.cluster.writegate``: the Cluster owns
them and wires them to the link.

A transition is asked of ``RoleState`` and its ``Change`` drives what follows here: becoming PRIMARY
renews the replication stream, tells the write gate and sends a heartbeat at once; stepping down
ends the stream, fails waiting writes and asks for a join on the next tick (≤ 100 ms): the writes a
former primary was holding are relayed first, before the new primary raises the join barrier.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bigbunny.supervisor.cluster import replication
from bigbunny.supervisor.cluster.forwarding import Forwarder
from bigbunny.supervisor.cluster.join import JoinProtocol
from bigbunny.supervisor.cluster.link import M, PeerLink
from bigbunny.supervisor.cluster.messages import (
    Heartbeat,
    HeartbeatAck,
    JoinChunk,
    JoinRefuse,
    JoinRequest,
    Message,
    Origin,
    Probe,
    ProbeReply,
    RelayAnswer,
    RelayRequest,
    ReplAck,
    ReplBatch,
    kind_of,
)
from bigbunny.supervisor.cluster.writegate import WriteGate
from bigbunny.supervisor.state.role import (
    FAST_CHECK,
    JOINING,
    LEASE,
    LEASE_PROBE,
    PRIMARY,
    SECONDARY,
    Change,
    PeerAnswer,
)

if TYPE_CHECKING:
    from bigbunny.supervisor.state.node import Node

log = logging.getLogger("bbd.cluster")
HEARTBEAT_EVERY = 0.2
TICK = 0.1
PROBE_WINDOW = 1.0


class Cluster:
    def __init__(self, node: Node, link: PeerLink | None = None) -> None:
        cfg = node.cfg
        self.node = node
        self.role = node.role
        self.peer = cfg.peers[0]
        self.first = cfg.host_id <= self.peer.id
        self.verify_site = not cfg.disable_site_verification
        self.link = link or PeerLink(cfg.host_id, cfg.site, cfg.tcp, self.peer.address, cfg.internal_token, cfg.dev)
        self.sender = replication.Sender(node, self.link.send)
        self.receiver = replication.Receiver(node, self.request_rejoin, self._ack)
        self.forwarder = Forwarder(node, self)
        self.gate = WriteGate(self)
        self.join = JoinProtocol(
            node,
            self.peer.id,
            self.verify_site,
            self.send,
            self.link.send,
            lambda: (self.sender.stream, self.sender.seq),
            self._joined,
        )
        self.peer_seen: float | None = None  # monotonic: last message of any kind from the peer
        self._probe: asyncio.Future[PeerAnswer] | None = None
        self._lease_check: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._on(Heartbeat, self.on_heartbeat)
        self._on(HeartbeatAck, self.on_heartbeat_ack)
        self._on(Probe, self.on_probe)
        self._on(ProbeReply, self.on_probe_reply)
        self._on(ReplBatch, self.on_repl)
        self._on(ReplAck, self.on_repl_ack)
        self._on(JoinRequest, self.join.on_request)
        self._on(JoinRefuse, self.join.on_refuse)
        self._on(JoinChunk, self.join.on_chunk)
        self._on(RelayRequest, self.forwarder.on_relay)
        self._on(RelayAnswer, self.forwarder.on_relay_reply)
        self.link.on_link_down = self.on_link_down
        self._fast_check: asyncio.Task[None] | None = None
        self._ack_scheduled = False

    # --- plumbing --------------------------------------------------------------------------------
    def _on(self, kind: type[M], fn: Callable[[Origin, M], None]) -> None:
        """Site verification and peer bookkeeping for every message, then the handler."""

        def handle(origin: Origin, msg: M) -> None:
            sender = origin.sender
            # A peer configured as bare host:port has its address as ID (§7.1 ordering) and may
            # call itself anything; one configured as id@host:port must be that host.
            if sender != self.peer.id and self.peer.id != self.peer.address:
                log.warning("dropped a %s from unknown host %r", kind_of(msg), sender)
                return
            if self.verify_site and origin.site and origin.site != self.node.cfg.site:
                log.warning("dropped a %s from %s: site %r is not ours", kind_of(msg), sender, origin.site)
                return
            self.peer_seen = time.monotonic()
            fn(origin, msg)

        self.link.on(kind, handle)

    def send(self, msg: Message) -> bool:
        return self.link.send(self.role.epoch, msg)

    def start(self) -> None:
        self.role.start_joining()
        self.gate.refresh()
        self.link.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, flush_timeout: float) -> None:
        """Shutdown: flush unacknowledged replication to the peer (bounded), then close the link."""
        for task in (self._task, self._lease_check, self._fast_check):  # no promotion while we shut down
            if task is not None:
                task.cancel()
        if self.role.is_primary and self.sender.window:
            ok = await self.sender.drain(flush_timeout)
            outcome = "complete" if ok else "incomplete (timeout or peer unreachable)"
            log.info("replication flush on shutdown: %s", outcome)
        self.forwarder.fail_all()
        self.link.close()

    # --- main loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        await self._startup()
        beat = 0
        while True:
            await asyncio.sleep(TICK)
            try:
                beat += 1
                self._tick(beat)
            except Exception:  # the cluster loop must survive a bug in one tick
                log.exception("cluster tick failed")

    async def _startup(self) -> None:
        reply = await self.probe(PROBE_WINDOW)
        peer_role = reply.role if reply else None
        peer_epoch = reply.epoch if reply else 0
        if peer_role == PRIMARY:
            log.info("peer %s is PRIMARY (epoch %d): joining it", self.peer.id, peer_epoch)
            self.role.begin_join(self.peer.id)
            if self.role.role == JOINING and self.join.join_id is None:  # a heartbeat may have started one already
                self.join.request()
        elif self.first and peer_role is None:
            self._became_primary(self.role.start_primary(0), initial=True)
        elif self.first and peer_role == JOINING:
            self._became_primary(self.role.start_primary(peer_epoch), initial=True)
        else:
            log.info("waiting for a primary (peer %s is %s)", self.peer.id, peer_role or "silent")

    def _tick(self, beat: int) -> None:
        self.gate.tick()
        now = self.role.clock()
        role = self.role.role
        if role == PRIMARY:
            if beat % int(HEARTBEAT_EVERY / TICK) == 0:
                self._heartbeat()
            self.sender.tick()
        elif role == SECONDARY:
            seen = self.role.last_leader_seen
            if (
                seen is not None
                and now - seen > LEASE - LEASE_PROBE
                and self._lease_check is None
                and self._fast_check is None
            ):
                self._lease_check = asyncio.get_running_loop().create_task(self._check_lease(seen))
        else:  # JOINING
            self.join.check_stall(now)
            if self.role.leader is not None and self.join.may_ask(now):
                self.join.request()
            elif not self.role.ever_saw_primary and now - self.role.joining_since > LEASE and self.join.join_id is None:
                self.promote("no primary seen since start-up")

    async def _check_lease(self, seen: float) -> None:
        """The leader has been silent for most of the lease: ask it before taking over.

        A node that was itself frozen (SIGSTOP, a VM or GC stall, a starved host) finds its lease
        expired the moment it resumes, before it has read the heartbeats waiting for it. Promoting
        then would make the healthy primary step down and join us — and lose every write we missed.
        """
        try:
            reply = await self.probe(max(seen + LEASE - self.role.clock(), LEASE_PROBE))
            if not self.role.following(seen):
                return  # a heartbeat (or a role change) came meanwhile
            if reply is not None and self.role.leader_answers(reply):
                log.info(
                    "leader %s silent for %.1f s but answers: staying SECONDARY", reply.sender, self.role.clock() - seen
                )
                self.role.leader_alive()
                return
            await asyncio.sleep(max(0.0, seen + LEASE - self.role.clock()))
            if self.role.following(seen):
                log.warning(
                    "lease expired: no heartbeat from %s for %.1f s", self.role.leader, self.role.clock() - seen
                )
                self.promote("lease expired")
        finally:
            self._lease_check = None

    def _heartbeat(self) -> None:
        st = self.node.pool.slots
        self.send(Heartbeat(sum(s.store_count for s in st), self.node.accounting.total))

    # --- role changes: the transition, then its side effects --------------------------------------
    def promote(self, why: str) -> None:
        self.forwarder.fail_all()  # relays to the old leader will not be answered
        self.join.abandon()
        self._became_primary(self.role.promote(why), initial=False)

    def _became_primary(self, change: Change, initial: bool) -> None:
        self.sender.reset(f"{self.node.cfg.host_id}:{change.epoch}")  # a new stream per term
        self.gate.became_primary(initial)
        self._heartbeat()

    def step_down(self, why: str) -> None:
        self.role.step_down(why)
        self._stepped_down()

    def _stepped_down(self) -> None:
        self.sender.reset("")
        self.receiver.start_stream("", 0)
        self.gate.stepped_down()

    def lost_lead(self, sender: str, epoch: int) -> None:
        """A probe answer shows that ``sender`` leads (higher epoch, or it wins the tie): follow it."""
        self.role.follow(sender, epoch)
        self._stepped_down()  # the tick asks for the join (see on_heartbeat)

    def request_rejoin(self, why: str) -> None:
        if self.role.role == SECONDARY:
            self.step_down(why)
        if self.role.role == JOINING and self.join.may_ask(self.role.clock()):
            self.join.request()

    def _joined(self, stream: str, base_seq: int) -> None:
        """JOINING → SECONDARY happened (``supervisor.cluster.join``): follow the primary's stream from here."""
        self.receiver.start_stream(stream, base_seq)
        self._ack()

    # --- heartbeats and probes ---------------------------------------------------------------------
    def on_heartbeat(self, origin: Origin, hb: Heartbeat) -> None:
        self.send(HeartbeatAck(self.receiver.stream, self.receiver.applied, self.role.role))
        change = self.role.heartbeat(origin.sender, origin.epoch)
        if change is None:
            return  # a stale leader, or the equal-epoch primary that steps down
        if change.before != JOINING and change.role == JOINING:
            self._stepped_down()
        # A former primary asks for its join on the next tick (≤ 100 ms): the writes it was holding
        # are relayed first, before the new primary raises the join barrier and would refuse them.
        if change.before != PRIMARY and change.role == JOINING and self.join.may_ask(self.role.clock()):
            self.join.request()

    def on_link_down(self) -> None:
        """Our connection to the peer closed: a crashed process closes its sockets at once."""
        log.info("connection to %s closed", self.peer.id)
        self.forwarder.fail_all()  # relays in flight will never be answered: 503 LeaderChanged now
        if self.role.role == PRIMARY:
            self.sender.last_ack_time = 0.0  # replication is failing from now on (DegradedWrite)
        elif (
            self.role.role == SECONDARY
            and self.role.leader == self.peer.id
            and self._fast_check is None
            and self._lease_check is None
        ):
            seen = self.role.last_leader_seen or 0.0
            self._fast_check = asyncio.get_running_loop().create_task(self._check_leader_gone(seen))

    async def _check_leader_gone(self, seen: float) -> None:
        """After the leader's connection closed, take over if it neither heartbeats nor answers a
        probe for ``FAST_CHECK`` s — a crash is handled in about a second instead of the 4 s lease.
        A live leader (a network blip, a reconnect) answers or heartbeats, and nothing changes."""
        try:
            reply = await self.probe(FAST_CHECK)
            if not self.role.following(seen):
                return  # a heartbeat came: the leader is alive
            if self.role.leader_answers(reply):
                return
            self.promote(f"leader {self.peer.id} closed its connection and does not answer")
        finally:
            self._fast_check = None

    def on_heartbeat_ack(self, origin: Origin, ack: HeartbeatAck) -> None:
        self.sender.on_ack(ack.stream, ack.applied)
        self.gate.acked(origin.epoch, ack.stream, ack.applied)

    async def probe(self, timeout: float) -> PeerAnswer | None:
        """Ask the peer for its role (resent every 100 ms); None if it stays silent."""
        loop = asyncio.get_running_loop()
        self._probe = loop.create_future()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.send(Probe(self.role.role))
                try:
                    return await asyncio.wait_for(asyncio.shield(self._probe), 0.1)
                except TimeoutError:
                    continue
            return None
        finally:
            self._probe = None

    def on_probe(self, origin: Origin, probe: Probe) -> None:
        sender = origin.sender
        self.send(ProbeReply(self.role.role))
        # Our leader is back but empty (it restarted within the lease): take over now, with its data
        # still here, rather than letting clients wait for the lease.
        if self.role.role == SECONDARY and self.role.leader == sender and probe.role == JOINING:
            self.promote(f"leader {sender} restarted without its data")

    def on_probe_reply(self, origin: Origin, reply: ProbeReply) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.set_result(PeerAnswer(origin.sender, origin.epoch, reply.role))

    # --- replication ---------------------------------------------------------------------------------
    def replicate(self, record: Sequence[Any], registry: bool = False) -> None:
        if self.role.role == PRIMARY:
            self.sender.enqueue(record, registry)

    def on_repl(self, origin: Origin, batch: ReplBatch) -> None:
        if self.role.role == JOINING or origin.epoch < self.role.epoch:
            return  # refused (§7.3): unacknowledged, the primary will resend after our join
        if self.role.role == PRIMARY:
            return
        self.receiver.on_batch(batch.stream, batch.records, batch.dropped_upto, batch.urgent)
        if not self._ack_scheduled:  # one acknowledgement per burst, not per message
            self._ack_scheduled = True
            asyncio.get_running_loop().call_later(0.005, self._ack)

    def _ack(self) -> None:
        self._ack_scheduled = False
        if self.role.role == SECONDARY:
            self.send(ReplAck(self.receiver.stream, self.receiver.applied))

    def on_repl_ack(self, origin: Origin, ack: ReplAck) -> None:
        self.sender.on_ack(ack.stream, ack.applied)
        self.gate.acked(origin.epoch, ack.stream, ack.applied)

    # --- status ----------------------------------------------------------------------------------------
    def peers_status(self) -> dict[str, float | None]:
        return {self.peer.id: self.peer_seen}
