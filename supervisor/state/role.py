"""The role state machine of a node (SPEC §7.1–7.3, §7.6, §7.7, §2.12): role, epoch, lease, known
leader and lock-state-unknown window, and every transition between them. Nothing else writes them:
the fields are read-only properties, each transition is a method that logs the change and returns it
(``Change``, or None when nothing changed), and the caller (``supervisor.cluster.coordinator``) performs the side
effects — replication stream renewed, write gate told, heartbeat sent, join asked for.

States and transitions (all in the supervisor's event loop, so no locks):

* A single node: ``start_primary`` → PRIMARY at epoch 1, no lock-unknown window.
* With a peer: start → JOINING (epoch 0, ``start_joining``). The first host (smaller host ID)
  *probes* the peer before leading (§13 fix 11): no answer within the probe window or a JOINING peer
  → PRIMARY (``start_primary``: epoch ≥ 1 and above the peer's, no lock-unknown window); a PRIMARY
  peer → join it (``begin_join``); a SECONDARY peer still holds our old data → wait for it to take
  over (it promotes at once when it sees its old leader come back empty).
* JOINING → SECONDARY (``joined``): after a join snapshot from the primary was applied; the snapshot's
  epoch is adopted and the lease starts.
* SECONDARY → PRIMARY (``promote``): lease expiry (no accepted heartbeat for ``LEASE`` = 2 s + 2 s
  grace), or — when the leader's connection closes (a crashed process) — ``FAST_CHECK`` s without a
  heartbeat or an answer to a probe, or the leader coming back empty, or ``promote`` by the operator;
  epoch + 1, lock-state-unknown window opened (a lock granted by the old primary may still be live:
  lock-taking and counter-mutating requests get ``409 LockStateUnknown`` for ``lock_timeout``). The
  last ``LEASE_PROBE`` of the lease is spent asking the leader directly: if it answers as PRIMARY
  (``leader_answers``), the silence was ours (a frozen or starved process), and we stay SECONDARY
  (``leader_alive``).
* JOINING → PRIMARY (``promote``): a lone node that never saw a primary promotes itself after the
  lease (§13 fix 12), or the operator's ``promote``. PRIMARY → PRIMARY: the operator's ``promote``
  (epoch + 1, no window).
* PRIMARY/SECONDARY → JOINING: a heartbeat with a higher epoch (adopted, ``heartbeat``), records the
  primary dropped from the replication stream (``step_down``), or — with equal epochs and two
  primaries — the larger host ID steps down (§13 fix 10, ``yields_to``); a probe answer showing
  that the peer leads (``follow``). A demoted node re-joins from the winner.

The primary sends a heartbeat every 200 ms; every receiver acknowledges it (with its replication
position), which is also how the primary knows the link is alive. The join barrier is held by the
primary only while it captures the snapshot (``snapshot_barrier``); the snapshot then goes out ahead
of all later replication records, which carry higher sequence numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

log = logging.getLogger("bbd.cluster")
PRIMARY, SECONDARY, JOINING = "PRIMARY", "SECONDARY", "JOINING"
LEASE = 2.0 + 2.0  # SECONDARY takes over after this long without a heartbeat (§7.2)
LEASE_PROBE = 0.5  # the end of the lease spent asking the leader directly
FAST_CHECK = 1.0  # after the leader's connection closed: take over after this long without an answer


class Change(NamedTuple):
    """What a transition changed."""

    before: str  # role before
    role: str  # role after
    epoch: int  # epoch after
    why: str


class PeerAnswer(NamedTuple):
    """The peer's answer to a probe: who it is, its epoch and its role."""

    sender: str
    epoch: int
    role: str


class RoleState:
    def __init__(self, lock_timeout: float, clock: Callable[[], float] = time.monotonic, host_id: str = "") -> None:
        self.clock = clock
        self.lock_timeout = lock_timeout
        self.host_id = host_id
        self._role = JOINING
        self._epoch = 0
        self._last_leader_seen: float | None = None
        self._leader: str | None = None
        self._ever_saw_primary = False
        self._joining_since = clock()
        self._lock_unknown_until = 0.0
        self._barrier = False

    # --- reading ---------------------------------------------------------------------------------
    @property
    def role(self) -> str:
        return self._role

    @property
    def epoch(self) -> int:
        """0 at process start, never lowered while the process lives (§7.3)."""
        return self._epoch

    @property
    def last_leader_seen(self) -> float | None:
        """Clock time of the last accepted heartbeat (or of becoming leader / secondary): the lease."""
        return self._last_leader_seen

    @property
    def leader(self) -> str | None:
        """Host ID of the known leader (ourselves when PRIMARY), None before any was seen."""
        return self._leader

    @property
    def ever_saw_primary(self) -> bool:
        return self._ever_saw_primary

    @property
    def joining_since(self) -> float:
        return self._joining_since

    @property
    def lock_unknown_until(self) -> float:
        return self._lock_unknown_until

    @property
    def barrier(self) -> bool:
        """The join write barrier, held by the primary while it captures a snapshot."""
        return self._barrier

    @property
    def is_primary(self) -> bool:
        return self._role == PRIMARY

    def lock_unknown(self) -> bool:
        return self._lock_unknown_until > 0 and self.clock() < self._lock_unknown_until

    def yields_to(self, sender: str, epoch: int, their_role: str) -> bool:
        """Whether a peer at ``epoch`` in ``their_role`` outranks us: a higher epoch, or an equal-epoch
        primary with the smaller host ID (§13 fix 10: the larger host ID steps down)."""
        return epoch > self._epoch or (epoch == self._epoch and their_role == PRIMARY and self.host_id > sender)

    def leader_answers(self, answer: PeerAnswer | None) -> bool:
        """A probe answer from a primary at least at our epoch: the leader is alive."""
        return answer is not None and answer.role == PRIMARY and answer.epoch >= self._epoch

    def following(self, seen: float | None) -> bool:
        """Still SECONDARY with no heartbeat since ``seen``: a lease check may act."""
        return self._role == SECONDARY and self._last_leader_seen == seen

    # --- transitions -----------------------------------------------------------------------------
    def _change(self, role: str, why: str) -> Change:
        before, self._role = self._role, role
        return Change(before, role, self._epoch, why)

    def start_joining(self) -> Change:
        """A node with a peer starts JOINING (epoch 0 at process start)."""
        self._joining_since = self.clock()
        return self._change(JOINING, "start-up")

    def start_primary(self, peer_epoch: int = 0) -> Change:
        """Initial leadership: epoch 0 → 1 (and above the peer's), no lock-unknown window."""
        self._epoch = max(self._epoch, 1, peer_epoch + 1)
        self._last_leader_seen = self.clock()
        self._leader = self.host_id
        change = self._change(PRIMARY, "initial leader")
        log.warning("role PRIMARY (epoch %d): initial leader", self._epoch)
        return change

    def promote(self, why: str) -> Change:
        """Take over (lease, closed link, empty leader, lone node, operator): always PRIMARY, epoch + 1;
        the lock-unknown window opens when we were not primary."""
        was_primary = self._role == PRIMARY
        self._epoch += 1
        now = self.clock()
        self._last_leader_seen = now
        self._leader = self.host_id
        self._ever_saw_primary = True
        if not was_primary:
            self._lock_unknown_until = now + self.lock_timeout
        change = self._change(PRIMARY, why)
        log.warning("role PRIMARY (epoch %d): %s", self._epoch, why)
        return change

    def step_down(self, why: str) -> Change:
        """→ JOINING (from any role): the lock-unknown window closes, a re-join follows."""
        if self._role != JOINING:
            log.warning("role JOINING (epoch %d): %s", self._epoch, why)
        self._lock_unknown_until = 0.0
        self._joining_since = self.clock()
        return self._change(JOINING, why)

    def begin_join(self, leader: str) -> None:
        """Start-up found a PRIMARY peer: it is the leader to join (the role stays JOINING)."""
        self._leader = leader

    def follow(self, sender: str, epoch: int) -> Change:
        """A probe answer shows that ``sender`` leads at ``epoch``: adopt it and step down."""
        self._epoch = max(self._epoch, epoch)
        self._saw_leader(sender)
        return self.step_down(f"{sender} leads at epoch {epoch}")

    def heartbeat(self, sender: str, epoch: int) -> Change | None:
        """§7.2 step 3–4 for a heartbeat from ``sender`` at ``epoch``.

        A lower epoch is ignored (None: our own heartbeats make a stale leader step down). An equal
        epoch while PRIMARY is two primaries: the larger host ID steps down, the other ignores it.
        Otherwise the lease is renewed and ``sender`` becomes the known leader; a higher epoch is
        adopted and a PRIMARY or SECONDARY steps down to JOINING. Returns the resulting state (its
        ``before`` is the role the heartbeat found)."""
        own, before = self._epoch, self._role
        if epoch < own:
            return None
        if epoch == own and before == PRIMARY:
            if not self.yields_to(sender, epoch, PRIMARY):
                return None
            self.step_down(f"two primaries at epoch {epoch}; {sender} keeps the lead")
        self._saw_leader(sender)
        if epoch > own:
            self._epoch = epoch
            if self._role != JOINING:
                self.step_down(f"{sender} leads at higher epoch {epoch}")
        return Change(before, self._role, self._epoch, "heartbeat")

    def leader_alive(self) -> None:
        """The silent leader answered a probe as PRIMARY: the lease starts again."""
        self._last_leader_seen = self.clock()

    def joined(self, leader: str, epoch: int) -> Change | None:
        """JOINING → SECONDARY once a snapshot at ``epoch`` from ``leader`` is applied; None (nothing
        changed) if we are no longer JOINING or the snapshot is older than our epoch."""
        if self._role != JOINING or epoch < self._epoch:
            return None
        self._epoch = epoch
        self._saw_leader(leader)
        return self._change(SECONDARY, f"joined {leader}")

    @contextmanager
    def snapshot_barrier(self) -> Iterator[None]:
        """Hold the join write barrier (new mutations → ``503 JoinSyncing``) for the block."""
        self._barrier = True
        try:
            yield
        finally:
            self._barrier = False

    def _saw_leader(self, leader: str) -> None:
        self._last_leader_seen = self.clock()
        self._leader = leader
        self._ever_saw_primary = True
