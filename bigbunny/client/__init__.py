"""Clients for the public HTTP API (SPEC §2) over the daemon's Unix socket.

:class:`BBClient` (blocking, thread-safe) and :class:`bigbunny.aio.AsyncBBClient` (asyncio) make the same
calls with the same results and raise the same exceptions (:mod:`bigbunny.client.errors`); see
``docs/client.md``.
"""

from bigbunny.client.calls import Modify, Response, Snapshot
from bigbunny.client.errors import (
    BBError,
    Conflict,
    ConnectionFailed,
    Expired,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotReplicated,
    PoolTimeout,
    Refused,
    RetryLater,
    ServerError,
)
from bigbunny.client.retry import RetryPolicy
from bigbunny.client.sync import BBClient

BBConnectionError = ConnectionFailed  # the name before the hierarchy; kept for existing callers

__all__ = [
    "BBClient",
    "BBConnectionError",
    "BBError",
    "Conflict",
    "ConnectionFailed",
    "Expired",
    "Forbidden",
    "InvalidRequest",
    "Modify",
    "NotFound",
    "NotReplicated",
    "PoolTimeout",
    "Refused",
    "Response",
    "RetryLater",
    "RetryPolicy",
    "ServerError",
    "Snapshot",
]
