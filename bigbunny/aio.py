"""``from bigbunny.aio import AsyncBBClient``: the asyncio client (see :mod:`bigbunny.client.aio`)."""

from bigbunny.client import (
    BBError,
    Conflict,
    ConnectionFailed,
    Expired,
    Forbidden,
    InvalidRequest,
    Modify,
    NotFound,
    NotReplicated,
    PoolTimeout,
    Refused,
    Response,
    RetryLater,
    RetryPolicy,
    ServerError,
    Snapshot,
)
from bigbunny.client.aio import AsyncBBClient

__all__ = [
    "AsyncBBClient",
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
