"""The one error type of the HTTP API and the table of every error the daemon can answer.

An :class:`ApiError` carries everything the HTTP layer needs (status, one-line message, optional
``BigBunny-Error-Code``, optional ``Retry-After``); it is turned into a response in exactly one place
(``supervisor.front.responses``). Shards raise the same errors; they cross the ZeroMQ hop as the index of
the error in :data:`ERRORS` (see ``bigbunny.wire``), so no message text travels per request.
"""

from __future__ import annotations


class ErrorAnswer(Exception):
    """What an HTTP error answer says: ``status``, a one-line ``message``, the ``BigBunny-Error-Code``
    (``code``) and ``Retry-After`` (``retry_after``) when it has them. The daemon raises
    :class:`ApiError`; the clients raise ``bigbunny.client.BBError`` for the answers they receive."""

    __slots__ = ("status", "message", "code", "retry_after")

    def __init__(self, status: int, message: str, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


class ApiError(ErrorAnswer):
    """An HTTP error answer of the daemon; ``lock_state_unknown`` adds ``BigBunny-Lock-State: unknown``."""

    __slots__ = ("lock_state_unknown",)

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        retry_after: int | None = None,
        lock_state_unknown: bool = False,
    ) -> None:
        super().__init__(status, message, code, retry_after)
        self.lock_state_unknown = lock_state_unknown

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r}, code={self.code!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiError) and (self.status, self.message, self.code) == (
            other.status,
            other.message,
            other.code,
        )

    def __hash__(self) -> int:
        return hash((self.status, self.message, self.code))


# --- coded errors (SPEC §2.11 as amended by §14) ---------------------------------------------
NOT_FOUND_STORE = ApiError(404, "store not found", "NotFound")
NOT_FOUND_NAME = ApiError(404, "name not found", "NotFound")
UNAUTHORIZED = ApiError(403, "unauthorized", "Unauthorized")
STORE_LOCKED = ApiError(409, "store is locked", "StoreLocked")
LOCK_MISMATCH = ApiError(409, "lock mismatch", "LockMismatch")
STORE_EXPIRED = ApiError(410, "store expired", "StoreExpired")
LOCK_STATE_UNKNOWN = ApiError(409, "lock state unknown", "LockStateUnknown", 1, lock_state_unknown=True)
NOT_PRIMARY_NO_FORWARD = ApiError(503, "not primary (forwarding disabled)", "LeaderChanged", 1)
LEADER_UNKNOWN = ApiError(503, "leader unknown", "LeaderChanged", 1)
JOIN_SYNCING = ApiError(503, "primary syncing to secondary", "JoinSyncing", 1)
NAME_CREATING = ApiError(503, "name reservation in progress", "NameCreating", 1)
NAME_DELETING = ApiError(503, "name deletion in progress", "NameCreating", 1)
STORE_UNAVAILABLE = ApiError(503, "recovery in progress", "StoreUnavailable", 1)
SHARD_UNAVAILABLE = ApiError(503, "shard unavailable", "StoreUnavailable", 1)
CAPACITY_EXCEEDED = ApiError(507, "capacity exceeded", "CapacityExceeded")
CUSTOMER_QUOTA_EXCEEDED = ApiError(507, "customer quota exceeded", "CustomerQuotaExceeded")
TOMBSTONE_LIMIT = ApiError(429, "tombstone limit exceeded", "TombstoneLimitExceeded")
TYPE_MISMATCH = ApiError(400, "store type mismatch", "TypeMismatch")
OVERFLOW = ApiError(409, "counter overflow", "Overflow")
VALUE_OUT_OF_BOUNDS = ApiError(400, "value out of bounds", "ValueOutOfBounds")
INVALID_BOUNDS = ApiError(400, "invalid bounds", "InvalidBounds")
NAME_EXISTS = ApiError(409, "name already exists", "NameExists")
# The supervisor answers it with the node's --max-ttl in the message (StoreApi.ttl_too_long).
TTL_TOO_LONG = ApiError(400, "TTL above the maximum", "TTLTooLong")
NO_REPLICAS = ApiError(503, "not enough replicas", "NoReplicas", 1)
LEAD_LOST = ApiError(503, "not primary (leadership lost)", "LeaderChanged", 1)

# --- plain errors: malformed requests and the deliberately opaque invalid store ID ------------
INVALID_STORE_ID = ApiError(400, "invalid store ID")
MISSING_LOCK_ID = ApiError(400, "missing lock ID")
MISSING_NAME = ApiError(400, "missing name")
INVALID_NAME = ApiError(400, "invalid name")
MISSING_STORE_ID = ApiError(400, "missing store ID")
MISSING_COUNTER_VALUE = ApiError(400, "missing value for counter")
INVALID_COUNTER_SPEC = ApiError(400, "invalid counter spec")
INVALID_JSON_REQUEST = ApiError(400, "invalid JSON request")
INVALID_JSON_COUNTER_UPDATE = ApiError(400, "invalid JSON for counter update")
INVALID_TTL = ApiError(400, "invalid TTL")
INVALID_REPLICAS = ApiError(400, "invalid BigBunny-Replicas")
FAILED_READ_BODY = ApiError(400, "failed to read body")
MISSING_CUSTOMER = ApiError(401, "missing customer ID")
INVALID_CUSTOMER = ApiError(400, "invalid customer ID")
BODY_TOO_LARGE = ApiError(413, "body too large")
RATE_LIMITED = ApiError(429, "rate limit exceeded", "RateLimited", 1)
PAGE_NOT_FOUND = ApiError(404, "page not found")
INTERNAL = ApiError(500, "internal error")
# POST /internal/reload: status and code of its JSON answer, whose "error" says what was wrong.
INVALID_CONFIG = ApiError(422, "config file refused, nothing changed", "InvalidConfig")
NO_CONFIG_FILE = ApiError(409, "no config file to reload (start bbd with --config)", "NoConfigFile")

# Every error a shard may raise, in a fixed order: the wire carries the index (one small int).
ERRORS: tuple[ApiError, ...] = (
    INTERNAL,
    NOT_FOUND_STORE,
    NOT_FOUND_NAME,
    STORE_LOCKED,
    LOCK_MISMATCH,
    STORE_EXPIRED,
    LOCK_STATE_UNKNOWN,
    JOIN_SYNCING,
    CAPACITY_EXCEEDED,
    CUSTOMER_QUOTA_EXCEEDED,
    TOMBSTONE_LIMIT,
    TYPE_MISMATCH,
    OVERFLOW,
    VALUE_OUT_OF_BOUNDS,
    INVALID_BOUNDS,
    INVALID_STORE_ID,
    MISSING_COUNTER_VALUE,
    INVALID_COUNTER_SPEC,
    INVALID_JSON_REQUEST,
    INVALID_JSON_COUNTER_UPDATE,
    STORE_UNAVAILABLE,
    BODY_TOO_LARGE,
    UNAUTHORIZED,
    INVALID_TTL,
    TTL_TOO_LONG,
)
ERROR_INDEX: dict[ApiError, int] = {e: i for i, e in enumerate(ERRORS)}
