"""Node-wide memory accounting and limits (SPEC §6), exact under concurrency across shards.

Shards report the real growth of every write; the supervisor keeps the totals (per shard and
customer, so a restarted shard's bytes can be dropped exactly). With a limit configured, a growing
request first *reserves* budget here — at most the largest growth it could cause — and the shard
refuses the write if its real growth exceeds the reservation. Budget reserved by requests in flight
is unavailable to others, so concurrent writes on different shards can never jointly pass a limit.
"""

from __future__ import annotations

from collections import defaultdict

_UNLIMITED = 1 << 62


class Accounting:
    def __init__(self, shards: int, memory_limit: int, customer_quota: int) -> None:
        self.set_limits(memory_limit, customer_quota)
        self.total = 0
        self.customer: defaultdict[str, int] = defaultdict(int)
        self.shard_customer: list[defaultdict[str, int]] = [defaultdict(int) for _ in range(shards)]
        self.shard_total = [0] * shards
        self.reserved_total = 0
        self.reserved_customer: defaultdict[str, int] = defaultdict(int)
        # refusals actually answered, by error code (the metrics and logs count what clients saw)
        self.rejections = {"CustomerQuotaExceeded": 0, "CapacityExceeded": 0, "TombstoneLimitExceeded": 0}

    def set_limits(self, memory_limit: int, customer_quota: int) -> None:
        """Apply new limits (a reload). Reservations in flight stay valid: ``release`` returns exactly what
        ``reserve`` took, whatever the limits are now. Usage above a lowered limit stays; only growth is refused."""
        self.memory_limit = memory_limit if memory_limit > 0 else 0
        self.customer_quota = customer_quota if customer_quota > 0 else 0
        self.limited = bool(self.memory_limit or self.customer_quota)

    def reserve(self, customer: str, need: int) -> list[int] | None:
        """Reserve up to ``need`` bytes of growth; returns the wire allowance or None if no limit is set."""
        if not self.limited:
            return None
        if self.customer_quota:
            c = self.customer_quota - self.customer[customer] - self.reserved_customer[customer]
            c = 0 if c < 0 else (need if c > need else c)
        else:
            c = need
        if self.memory_limit:
            g = self.memory_limit - self.total - self.reserved_total
            g = 0 if g < 0 else (need if g > need else g)
        else:
            g = need
        self.reserved_customer[customer] += c
        self.reserved_total += g
        return [c, g]

    def release(self, customer: str, allow: list[int] | None) -> None:
        """Give back a reservation (after the shard answered, whatever it answered)."""
        if allow is None:
            return
        self.reserved_total -= allow[1]
        left = self.reserved_customer[customer] - allow[0]
        if left:
            self.reserved_customer[customer] = left
        else:
            del self.reserved_customer[customer]

    def apply(self, shard: int, customer: str, growth: int) -> None:
        """Record real growth (negative for shrink/delete) reported by ``shard``."""
        if not growth:
            return
        self.total += growth
        self.shard_total[shard] += growth
        left = self.customer[customer] + growth
        if left:
            self.customer[customer] = left
        else:
            del self.customer[customer]
        sc = self.shard_customer[shard]
        left = sc[customer] + growth
        if left:
            sc[customer] = left
        else:
            del sc[customer]

    def drop_shard(self, shard: int) -> int:
        """Forget everything a lost shard held; returns the bytes released."""
        released = self.shard_total[shard]
        for customer, used in self.shard_customer[shard].items():
            left = self.customer[customer] - used
            if left:
                self.customer[customer] = left
            else:
                del self.customer[customer]
        self.total -= released
        self.shard_total[shard] = 0
        self.shard_customer[shard] = defaultdict(int)
        return released

    def count_rejection(self, code: str | None) -> None:
        if code in self.rejections:
            self.rejections[code] += 1
