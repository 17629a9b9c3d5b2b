"""Per-customer token buckets (SPEC §2.10): lazy refill on a monotonic clock, no timers."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Bucket starts full at ``burst``, refills at ``rate``/s; an admitted request costs one token."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.set_limits(rate, burst)
        self.buckets: dict[str, list[float]] = {}  # customer -> [tokens, last refill time]
        self.rejected = 0
        self.rejected_by: dict[str, int] = {}  # per customer, for the operator view (bounded below)

    def set_limits(self, rate: float, burst: int) -> None:
        """Apply a new rate and bucket size (a reload): existing buckets keep their tokens, capped at the
        new size on their next request; buckets start full when limiting is switched on."""
        self.rate = float(rate)
        self.burst = float(burst)
        self.enabled = rate > 0

    def allow(self, customer: str) -> bool:
        """Take a token for ``customer``; False (and nothing taken) when the bucket is empty."""
        if not self.enabled:
            return True
        now = self.clock()
        b = self.buckets.get(customer)
        if b is None:
            b = self.buckets[customer] = [self.burst, now]
        else:
            tokens = b[0] + (now - b[1]) * self.rate
            b[0] = tokens if tokens < self.burst else self.burst
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        self.rejected += 1
        if customer in self.rejected_by or len(self.rejected_by) < 100_000:
            self.rejected_by[customer] = self.rejected_by.get(customer, 0) + 1
        return False

    def prune(self) -> int:
        """Forget buckets that have refilled completely: they behave exactly like a new one."""
        now, removed = self.clock(), 0
        for customer, (tokens, last) in list(self.buckets.items()):
            if tokens + (now - last) * self.rate >= self.burst:
                del self.buckets[customer]
                removed += 1
        return removed
