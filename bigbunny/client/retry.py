"""Opt-in retries for answers that mean "not applied, try again" (SPEC §2.11), shared by both clients."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bigbunny.client.errors import BBError


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``retries`` more attempts after a retryable answer (``BBError.retryable``).

    The wait before attempt *n* (0-based) is an exponential back-off, ``base * 2**n`` with "equal jitter"
    (between half and all of it, so that clients refused together do not come back together), never
    shorter than the answer's ``Retry-After``, and never longer than ``cap`` seconds. Failures with an
    unknown outcome (``ConnectionFailed``, ``ServerError``) are never retried: the write may have been applied.
    """

    retries: int = 0
    base: float = 0.05  # a StoreLocked answer clears within a lock's lifetime (500 ms by default)
    cap: float = 2.0
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.base < 0 or self.cap < 0:
            raise ValueError("retries, base and cap must be >= 0")

    def delay(self, err: BBError, attempt: int) -> float | None:
        """Seconds to wait before retrying after ``err`` on ``attempt``, or ``None`` to give up."""
        if attempt >= self.retries or not err.retryable:
            return None
        backoff = self.base * 2.0**attempt
        backoff *= 0.5 + 0.5 * self.jitter()
        if err.retry_after is not None:
            backoff = max(backoff, float(err.retry_after))
        return min(backoff, self.cap)


def policy(retries: int | RetryPolicy) -> RetryPolicy:
    return retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries)
