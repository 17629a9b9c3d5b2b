"""The shard's garbage-collector policy: no collection ever walks the whole store heap.

A shard's heap is mostly stores: long-lived objects that never form reference cycles. CPython's
automatic full collection walks *every* tracked object whenever the old generation has grown by a
quarter, so its pause grows with the number of stores (measured: ~38 ms at ~130k stores per shard,
157 ms at 1M) and lands on whatever requests are in flight. Freezing moves the objects alive so far
into the permanent generation, which collections skip; freed stores are still released at once by
reference counting.

``settle`` collects and freezes the start-up heap before the shard serves. Each ``tick`` (once a
second) collects the two young generations — cheap, they hold only the last few thousand objects —
and freezes the rest. A full collection at every tick would walk a second's worth of survivors
(1–5 ms per second under create load, measured); the price of not doing one is that a reference
cycle which survives two young collections and dies within the same second stays frozen. The
shard's code makes no such cycles (errors drop their tracebacks before replies are built).
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

    @staticmethod
    def settle() -> None:
        """Once before serving: collect and freeze the start-up heap (modules, keys: ~24k objects,
        ~6 ms), so no tick ever pays for it while requests wait."""
        gc.collect()
        gc.freeze()

    def tick(self) -> bool:
        """Call from the serve loop; collects and freezes at most once per ``every`` seconds."""
        now = self.clock()
        if now < self.next:
            return False
        self.next = now + self.every
        gc.collect(1)
        gc.freeze()
        return True
