"""Role and epoch state of this node (SPEC §7.1–7.3, §2.12).

A single node starts PRIMARY at epoch 1 with no lock-state-unknown window. A promotion (operator or,
with a peer, lease expiry) bumps the epoch; coming from a non-primary role it opens the
lock-state-unknown window of ``lock_timeout`` seconds, during which lock-taking and counter-mutating
requests get ``409 LockStateUnknown``: a lock granted by the old primary may still be live.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PRIMARY, SECONDARY, JOINING = "PRIMARY", "SECONDARY", "JOINING"


class RoleState:
    def __init__(self, lock_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock_timeout = lock_timeout
        self.role = JOINING
        self.epoch = 0
        self.last_leader_seen: float | None = None
        self.lock_unknown_until = 0.0
        self.barrier = False  # join write barrier (held by the primary while snapshotting)

    def start_primary(self) -> None:
        """Initial leadership: epoch 0 → 1, no lock-unknown window."""
        self.role = PRIMARY
        self.epoch = max(self.epoch, 1)
        self.last_leader_seen = self.clock()

    def promote(self) -> None:
        """Forced or lease promotion: always PRIMARY, epoch + 1."""
        was_primary = self.role == PRIMARY
        self.role = PRIMARY
        self.epoch += 1
        self.last_leader_seen = self.clock()
        if not was_primary:
            self.lock_unknown_until = self.clock() + self.lock_timeout

    def lock_unknown(self) -> bool:
        return self.lock_unknown_until > 0 and self.clock() < self.lock_unknown_until

    @property
    def is_primary(self) -> bool:
        return self.role == PRIMARY
