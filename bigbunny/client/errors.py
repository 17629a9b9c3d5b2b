"""The exceptions of both clients (:mod:`bigbunny.client` and :mod:`bigbunny.aio`), one hierarchy by meaning.

Every failure is a :class:`BBError` with ``status`` (0 when no answer arrived), ``code`` (the
``BigBunny-Error-Code``, or ``None``), ``message`` (one line), ``retry_after`` (seconds, or ``None``)
and ``headers``. Catch the subclass that says what to do about it:

=====================  =============================================================  ============
class                  answers                                                        applied?
=====================  =============================================================  ============
``InvalidRequest``     400, 401, 413, 422 (malformed request, bad bounds, bad config) no
``Forbidden``          403 ``Unauthorized`` (the ID belongs to another customer)      no
``NotFound``           404 ``NotFound``; its subclass ``Expired``: 410 ``StoreExpired``  no
``Conflict``           409 ``StoreLocked``, ``LockMismatch``, ``LockStateUnknown``,   no
                       ``Overflow``, ``NameExists``
``RetryLater``         503 (``LeaderChanged``, ``JoinSyncing``, ``NameCreating``,       no
                       ``StoreUnavailable``, ``NoReplicas``)
``Refused``            429 ``RateLimited``, ``TombstoneLimitExceeded``; 507 quotas      no
``ServerError``        500 and any other status                                       unknown
``ConnectionFailed``   no answer (socket missing, refused, reset, timed out)          unknown
``NotReplicated``      200 with ``BigBunny-Warning: NotReplicated`` on a write sent   **yes**
                       with ``replicas=1``: applied on the primary, not confirmed by
                       the secondary in time; ``result`` holds what the call returns
=====================  =============================================================  ============

``retryable`` is true exactly for the answers that mean "not applied, try again" (SPEC §2.11): the
clients' opt-in retries use it, and so can callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bigbunny.errors import ErrorAnswer

# Codes whose answer means "not applied, try again"; a 429 that carries Retry-After is retryable too.
RETRYABLE_CODES = frozenset(
    {
        "StoreLocked",
        "LockStateUnknown",
        "LeaderChanged",
        "JoinSyncing",
        "NameCreating",
        "StoreUnavailable",
        "RateLimited",
        "NoReplicas",
    }
)


class BBError(ErrorAnswer):
    """A request that did not succeed as asked; see the module docstring for the subclasses. ``headers``
    are the answer's (lower-case names)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, code, retry_after)
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES or (self.status == 429 and self.retry_after is not None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r}, code={self.code!r})"


class InvalidRequest(BBError):
    """The request itself is wrong (400, 401, 413): fix it, do not retry."""


class Forbidden(BBError):
    """403: the store ID belongs to another customer."""


class NotFound(BBError):
    """404: no such store or name."""


class Expired(NotFound):
    """410: the store's TTL has passed."""


class Conflict(BBError):
    """409: the store's state forbids the call (locked, wrong lock ID, counter overflow, name taken)."""


class RetryLater(BBError):
    """503: the node cannot serve the call right now (failover, join, recovery); ``retry_after`` says when."""


class Refused(BBError):
    """A limit or quota refused the call (429, 507)."""


class ServerError(BBError):
    """500 or an unexpected status: the outcome is unknown."""


class ConnectionFailed(BBError):
    """No answer: the daemon could not be reached, or the connection failed or timed out mid-request."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, detail)
        self.detail = detail


class PoolTimeout(ConnectionFailed):
    """Every pooled connection stayed busy for longer than ``pool_timeout``; nothing was sent."""


class NotReplicated(BBError):
    """A ``replicas=1`` write was applied on the primary but the secondary did not confirm it in time.

    ``result`` is what the call would have returned (the new store ID for a create, the counter for an
    increment, ``None`` otherwise)."""

    def __init__(self, result: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(200, "write applied but not confirmed by the secondary", "NotReplicated", None, headers)
        self.result = result


_BY_STATUS: dict[int, type[BBError]] = {
    400: InvalidRequest,
    401: InvalidRequest,
    413: InvalidRequest,
    422: InvalidRequest,
    403: Forbidden,
    404: NotFound,
    410: Expired,
    409: Conflict,
    503: RetryLater,
    429: Refused,
    507: Refused,
}


def error_for(
    status: int, message: str, code: str | None, retry_after: int | None, headers: Mapping[str, str]
) -> BBError:
    """The exception for a non-2xx answer, by status (the code refines only the message and retryability)."""
    return _BY_STATUS.get(status, ServerError)(status, message, code, retry_after, headers)
