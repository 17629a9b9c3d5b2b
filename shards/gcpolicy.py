"""The shard's garbage-collector policy: keep full collections proportional to recent work.

A shard's heap is mostly stores: long-lived objects that never form reference cycles. CPython's
automatic full collection walks *every* tracked object whenever the old generation has grown by a
quarter, so its pause grows with the number of stores (measured: ~38 ms at ~130k stores per shard,
seconds at millions) and lands on whatever requests are in flight. Freezing moves the objects that
survived so far into the permanent generation, which collections skip; freed stores are still
released at once by reference counting. Each tick first collects what is not frozen yet (cheap: only
objects created since the previous tick), so young cyclic garbage is reclaimed, not frozen.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FREEZE_EVERY = 1.0  # seconds between freezes


class GcPolicy:
    def __init__(self, every: float = FREEZE_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.next = clock() + every

    def tick(self) -> bool:
        """Call from the serve loop; collects and freezes at most once per ``every`` seconds."""
        now = self.clock()
        if now < self.next:
            return False
        self.next = now + self.every
        gc.collect()
        gc.freeze()
        return True
