"""What both clients share around the transport: settings, the warning of the last call, and how an answer
settles a call — its result, its error, or a retry after a back-off."""

from __future__ import annotations

import contextvars
from typing import TypeVar

import bigbunny.client.calls as calls
from bigbunny.client.calls import Call, Response
from bigbunny.client.errors import BBError
from bigbunny.client.retry import RetryPolicy, policy

T = TypeVar("T")


class Backoff(Exception):
    """The answer is retryable and the policy allows another attempt after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


class ClientBase:
    def __init__(self, uds: str, customer: str, timeout: float, retries: int | RetryPolicy) -> None:
        self.uds = uds
        self.customer = customer
        self.timeout = timeout
        self.retry = policy(retries)
        # per thread and per task: a shared client's calls do not overwrite each other's warning
        self._warning: contextvars.ContextVar[str | None] = contextvars.ContextVar("bb_last_warning", default=None)

    @property
    def last_warning(self) -> str | None:
        """The ``BigBunny-Warning`` of this thread's (or task's) most recent successful call, if any."""
        return self._warning.get()

    def headers_for(self, call: Call[T]) -> dict[str, str]:
        if call.path.startswith("/api/"):
            return {**call.headers, "X-Customer-ID": self.customer}
        return call.headers

    def settle(self, call: Call[T], resp: Response, attempt: int) -> T:
        """The call's result; raises its :class:`BBError`, or :class:`Backoff` when the policy retries it."""
        try:
            result = calls.outcome(call, resp)
        except BBError as err:
            delay = self.retry.delay(err, attempt)
            if delay is not None:
                raise Backoff(delay) from err
            if 200 <= err.status < 300:  # NotReplicated: applied, so its warning is the call's too
                self._warning.set(resp.headers.get("bigbunny-warning"))
            raise
        self._warning.set(resp.headers.get("bigbunny-warning"))
        return result
