"""Two-node clustering: roles, heartbeats, lease and epoch fencing (SPEC §7.1–7.3); join is in
``supervisor.join``, mixed in.

States and transitions (all in the supervisor's event loop, so no locks):

* start → JOINING (epoch 0). The first host (smaller host ID) *probes* the peer before leading
  (§13 fix 11): no answer within ``PROBE_WINDOW`` or a JOINING peer → PRIMARY (epoch ≥ 1, no
  lock-unknown window); a PRIMARY peer → join it; a SECONDARY peer still holds our old data → wait
  for it to take over (it promotes at once when it sees its old leader come back empty).
* JOINING → SECONDARY: after a join snapshot from the primary was applied (see ``supervisor.join``).
* SECONDARY → PRIMARY: lease expiry (no accepted heartbeat for 2 s + 2 s grace), or — when the
  leader's connection closes (a crashed process) — ``FAST_CHECK`` s without a heartbeat or an answer
  to a probe, or ``promote``;
  epoch + 1, replication stream renewed, lock-state-unknown window opened. The last
  ``LEASE_PROBE`` of the lease is spent asking the leader directly: if it answers as PRIMARY, the
  silence was ours (a frozen or starved process), and we stay SECONDARY.
* JOINING → PRIMARY: a lone node that never saw a primary promotes itself after the lease
  (§13 fix 12), or ``promote``.
* PRIMARY/SECONDARY → JOINING: a heartbeat with a higher epoch (adopted), records the primary dropped from the
  replication stream, or — with equal epochs and two primaries — the larger host ID steps down
  (§13 fix 10). A demoted node re-joins from the winner.

The primary sends a heartbeat every 200 ms; every receiver acknowledges it (with its replication
position), which is also how the primary knows the link is alive. The join barrier is held by the
primary only while it captures the snapshot; the snapshot then goes out ahead of all later
replication records, which carry higher sequence numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bigbunny.supervisor import peerlink, replication
from bigbunny.supervisor.forwarding import Forwarder
from bigbunny.supervisor.join import JOIN_RETRY, JOIN_STALL, JoinProtocol
from bigbunny.supervisor.role import JOINING, PRIMARY, SECONDARY
from bigbunny.supervisor.writegate import WriteGate

if TYPE_CHECKING:
    from bigbunny.supervisor.node import Node

log = logging.getLogger("bbd.cluster")
HEARTBEAT_EVERY = 0.2
TICK = 0.1
LEASE = 2.0 + 2.0
LEASE_PROBE = 0.5
FAST_CHECK = 1.0
PROBE_WINDOW = 1.0


class Cluster(JoinProtocol):
    def __init__(self, node: Node) -> None:
        cfg = node.cfg
        self.node = node
        self.role = node.role
        self.peer = cfg.peers[0]
        self.first = cfg.host_id <= self.peer.id
        self.verify_site = not cfg.disable_site_verification
        self.link = peerlink.PeerLink(cfg.host_id, cfg.site, cfg.tcp, self.peer.address, cfg.internal_token, cfg.dev)
        self.sender = replication.Sender(node, self.link.send)
        self.receiver = replication.Receiver(node, self.request_rejoin, self._ack)
        self.forwarder = Forwarder(node, self)
        self.gate = WriteGate(self)
        self.peer_seen: float | None = None  # monotonic: last message of any kind from the peer
        self.leader: str | None = None
        self.ever_saw_primary = False
        self.joining_since = time.monotonic()
        self.join_attempt = 0.0
        self.join_id: str | None = None
        self.join_chunks: list[list[Any]] = []
        self.serving_join = False
        self._probe: asyncio.Future[list[Any]] | None = None
        self._lease_check: asyncio.Task[None] | None = None
        self._join_ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        for kind, fn in (
            (peerlink.HB, self.on_heartbeat),
            (peerlink.HB_ACK, self.on_heartbeat_ack),
            (peerlink.PROBE, self.on_probe),
            (peerlink.PROBE_REPLY, self.on_probe_reply),
            (peerlink.REPL, self.on_repl),
            (peerlink.REPL_ACK, self.on_repl_ack),
            (peerlink.JOIN_REQ, self.on_join_request),
            (peerlink.JOIN_REFUSE, self.on_join_refuse),
            (peerlink.JOIN_CHUNK, self.on_join_chunk),
            (peerlink.RELAY, self.forwarder.on_relay),
            (peerlink.RELAY_REPLY, self.forwarder.on_relay_reply),
        ):
            self.link.on(kind, self._guard(fn))
        self.link.on("link_down", lambda hdr, body: self.on_link_down())
        self.link.on("link_up", lambda hdr, body: None)
        self._fast_check: asyncio.Task[None] | None = None
        self._ack_scheduled = False

    # --- plumbing --------------------------------------------------------------------------------
    def _guard(self, fn: Any) -> Any:
        """Site verification and peer bookkeeping for every message, then the handler."""

        def handle(hdr: list[Any], body: bytes) -> None:
            sender, site = hdr[1], hdr[2]
            # A peer configured as bare host:port has its address as ID (§7.1 ordering) and may
            # call itself anything; one configured as id@host:port must be that host.
            if sender != self.peer.id and self.peer.id != self.peer.address:
                log.warning("dropped a %s from unknown host %r", hdr[0], sender)
                return
            if self.verify_site and site and site != self.node.cfg.site:
                log.warning("dropped a %s from %s: site %r is not ours", hdr[0], sender, site)
                return
            self.peer_seen = time.monotonic()
            fn(hdr, body)

        return handle

    def send(self, kind: str, fields: list[Any], body: bytes = b"") -> bool:
        return self.link.send(kind, self.role.epoch, fields, body)

    def start(self) -> None:
        self.role.role = JOINING
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
        peer_role = reply[5] if reply else None
        peer_epoch = reply[3] if reply else 0
        if peer_role == PRIMARY:
            log.info("peer %s is PRIMARY (epoch %d): joining it", self.peer.id, peer_epoch)
            self.leader = self.peer.id
            if self.role.role == JOINING and self.join_id is None:  # a heartbeat may have started one already
                self.request_join()
        elif self.first and peer_role is None:
            self._become_initial_primary(0)
        elif self.first and peer_role == JOINING:
            self._become_initial_primary(peer_epoch)
        else:
            log.info("waiting for a primary (peer %s is %s)", self.peer.id, peer_role or "silent")

    def _become_initial_primary(self, peer_epoch: int) -> None:
        self.role.start_primary()
        if peer_epoch >= self.role.epoch:
            self.role.epoch = peer_epoch + 1
        self.leader = self.node.cfg.host_id
        self.sender.reset(f"{self.node.cfg.host_id}:{self.role.epoch}")
        self.gate.became_primary(True)
        log.warning("role PRIMARY (epoch %d): initial leader", self.role.epoch)
        self._heartbeat()

    def _tick(self, beat: int) -> None:
        self.gate.tick()
        now = time.monotonic()
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
            if self.join_id is not None and now - self.join_attempt > JOIN_STALL:
                log.warning("join %s stalled; retrying", self.join_id)
                self.join_id = None
            if self.leader is not None and self.join_id is None and now - self.join_attempt >= JOIN_RETRY:
                self.request_join()
            elif not self.ever_saw_primary and now - self.joining_since > LEASE and self.join_id is None:
                self.promote("no primary seen since start-up")

    async def _check_lease(self, seen: float) -> None:
        """The leader has been silent for most of the lease: ask it before taking over.

        A node that was itself frozen (SIGSTOP, a VM or GC stall, a starved host) finds its lease
        expired the moment it resumes, before it has read the heartbeats waiting for it. Promoting
        then would make the healthy primary step down and join us — and lose every write we missed.
        """
        try:
            reply = await self.probe(max(seen + LEASE - time.monotonic(), LEASE_PROBE))
            if self.role.role != SECONDARY or self.role.last_leader_seen != seen:
                return  # a heartbeat (or a role change) came meanwhile
            if reply is not None and reply[5] == PRIMARY and reply[3] >= self.role.epoch:
                log.info(
                    "leader %s silent for %.1f s but answers: staying SECONDARY", reply[1], time.monotonic() - seen
                )
                self.role.last_leader_seen = time.monotonic()
                return
            await asyncio.sleep(max(0.0, seen + LEASE - time.monotonic()))
            if self.role.role == SECONDARY and self.role.last_leader_seen == seen:
                log.warning("lease expired: no heartbeat from %s for %.1f s", self.leader, time.monotonic() - seen)
                self.promote("lease expired")
        finally:
            self._lease_check = None

    def _heartbeat(self) -> None:
        st = self.node.pool.slots
        self.send(peerlink.HB, [sum(s.store_count for s in st), self.node.accounting.total])

    # --- role changes ------------------------------------------------------------------------------
    def promote(self, why: str) -> None:
        self.forwarder.fail_all()  # relays to the old leader will not be answered
        self.role.promote()
        self.leader = self.node.cfg.host_id
        self.ever_saw_primary = True
        self.join_id = None
        self.sender.reset(f"{self.node.cfg.host_id}:{self.role.epoch}")
        self.gate.became_primary(False)
        log.warning("role PRIMARY (epoch %d): %s", self.role.epoch, why)
        self._heartbeat()

    def step_down(self, why: str) -> None:
        if self.role.role != JOINING:
            log.warning("role JOINING (epoch %d): %s", self.role.epoch, why)
        self.role.role = JOINING
        self.role.lock_unknown_until = 0.0
        self.joining_since = time.monotonic()
        self.sender.reset("")
        self.receiver.start_stream("", 0)
        self.gate.stepped_down()

    def lost_lead(self, sender: str, epoch: int) -> None:
        """A probe answer shows that ``sender`` leads (higher epoch, or it wins the tie): follow it."""
        self.role.epoch = max(self.role.epoch, epoch)
        self.leader = sender
        self.ever_saw_primary = True
        self.role.last_leader_seen = time.monotonic()
        self.step_down(f"{sender} leads at epoch {epoch}")  # the tick asks for the join (see on_heartbeat)

    def request_rejoin(self, why: str) -> None:
        if self.role.role == SECONDARY:
            self.step_down(why)
        if self.role.role == JOINING and self.join_id is None and time.monotonic() - self.join_attempt >= JOIN_RETRY:
            self.request_join()

    # --- heartbeats and probes ---------------------------------------------------------------------
    def on_heartbeat(self, hdr: list[Any], body: bytes) -> None:
        sender, epoch = hdr[1], hdr[3]
        self.send(peerlink.HB_ACK, [self.receiver.stream, self.receiver.applied, self.role.role])
        own = self.role.epoch
        if epoch < own:
            return  # stale leader: our own heartbeats will make it step down
        role = self.role.role
        if epoch == own and role == PRIMARY:
            if self.node.cfg.host_id > sender:  # §13 fix 10: the larger host ID steps down
                self.step_down(f"two primaries at epoch {epoch}; {sender} keeps the lead")
            else:
                return
        self.role.last_leader_seen = time.monotonic()
        self.leader = sender
        self.ever_saw_primary = True
        if epoch > own:
            self.role.epoch = epoch
            if self.role.role != JOINING:
                self.step_down(f"{sender} leads at higher epoch {epoch}")
        # A former primary asks for its join on the next tick (≤ 100 ms): the writes it was holding
        # are relayed first, before the new primary raises the join barrier and would refuse them.
        if (
            role != PRIMARY
            and self.role.role == JOINING
            and self.join_id is None
            and time.monotonic() - self.join_attempt >= JOIN_RETRY
        ):
            self.request_join()

    def on_link_down(self) -> None:
        """Our connection to the peer closed: a crashed process closes its sockets at once."""
        log.info("connection to %s closed", self.peer.id)
        self.forwarder.fail_all()  # relays in flight will never be answered: 503 LeaderChanged now
        if self.role.role == PRIMARY:
            self.sender.last_ack_time = 0.0  # replication is failing from now on (DegradedWrite)
        elif (
            self.role.role == SECONDARY
            and self.leader == self.peer.id
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
            if self.role.role != SECONDARY or self.role.last_leader_seen != seen:
                return  # a heartbeat came: the leader is alive
            if reply is not None and reply[5] == PRIMARY and reply[3] >= self.role.epoch:
                return
            self.promote(f"leader {self.peer.id} closed its connection and does not answer")
        finally:
            self._fast_check = None

    def on_heartbeat_ack(self, hdr: list[Any], body: bytes) -> None:
        stream, seq = hdr[5], hdr[6]
        self.sender.on_ack(stream, seq)
        self.gate.acked(hdr[3], stream, seq)

    async def probe(self, timeout: float) -> list[Any] | None:
        """Ask the peer for its role (resent every 100 ms); None if it stays silent."""
        loop = asyncio.get_running_loop()
        self._probe = loop.create_future()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.send(peerlink.PROBE, [self.role.role])
                try:
                    return await asyncio.wait_for(asyncio.shield(self._probe), 0.1)
                except TimeoutError:
                    continue
            return None
        finally:
            self._probe = None

    def on_probe(self, hdr: list[Any], body: bytes) -> None:
        sender, their_role = hdr[1], hdr[5]
        self.send(peerlink.PROBE_REPLY, [self.role.role])
        # Our leader is back but empty (it restarted within the lease): take over now, with its data
        # still here, rather than letting clients wait for the lease.
        if self.role.role == SECONDARY and self.leader == sender and their_role == JOINING:
            self.promote(f"leader {sender} restarted without its data")

    def on_probe_reply(self, hdr: list[Any], body: bytes) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.set_result(hdr)

    # --- replication ---------------------------------------------------------------------------------
    def replicate(self, record: Sequence[Any], registry: bool = False) -> None:
        if self.role.role == PRIMARY:
            self.sender.enqueue(record, registry)

    def on_repl(self, hdr: list[Any], body: bytes) -> None:
        epoch, stream, items, dropped_upto = hdr[3], hdr[5], hdr[6], hdr[7]
        if self.role.role == JOINING or epoch < self.role.epoch:
            return  # refused (§7.3): unacknowledged, the primary will resend after our join
        if self.role.role == PRIMARY:
            return
        self.receiver.on_batch(stream, items, dropped_upto, len(hdr) > 8 and hdr[8])
        if not self._ack_scheduled:  # one acknowledgement per burst, not per message
            self._ack_scheduled = True
            asyncio.get_running_loop().call_later(0.005, self._ack)

    def _ack(self) -> None:
        self._ack_scheduled = False
        if self.role.role == SECONDARY:
            self.send(peerlink.REPL_ACK, [self.receiver.stream, self.receiver.applied])

    def on_repl_ack(self, hdr: list[Any], body: bytes) -> None:
        self.sender.on_ack(hdr[5], hdr[6])
        self.gate.acked(hdr[3], hdr[5], hdr[6])

    # --- status ----------------------------------------------------------------------------------------
    def peers_status(self) -> dict[str, float | None]:
        return {self.peer.id: self.peer_seen}
