"""Requests by endpoint and status, with a latency histogram per endpoint: the only metrics work on the
hot path (two list/dict increments and a ``bisect`` per request); ``supervisor.front.metrics`` reads it when
``/metrics`` is scraped."""

from __future__ import annotations

import bisect
from collections import defaultdict

# upper bounds of the latency histogram's buckets, seconds
BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RequestStats:
    """Requests by endpoint and status, and a latency histogram per endpoint (cheap to update)."""

    def __init__(self) -> None:
        self.counts: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = {}
        self.sums: defaultdict[str, float] = defaultdict(float)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.counts[(endpoint, status)] += 1
        b = self.buckets.get(endpoint)
        if b is None:
            b = self.buckets[endpoint] = [0] * (len(BOUNDS) + 1)
        b[bisect.bisect_left(BOUNDS, seconds)] += 1
        self.sums[endpoint] += seconds
