"""One store's in-memory record and its accounted size (SPEC §6: body + 256)."""

from __future__ import annotations

from sys import intern


class Store:
    """One store. Lean on purpose (≈ 88 bytes + body + key per store).

    * ``customer``  owner (interned str)
    * ``body``      blob bytes, or a counter's internal JSON (§2.7), always current
    * ``counter``   None for a blob, else ``(value, min, max)`` with None = unbounded
    * ``expiry``    wall-clock seconds (float); expired ⇔ now > expiry
    * ``version``   1 on create, +1 per mutation
    * ``lock``      None or ``(lock_id, expires_at)``; the lock is live ⇔ now <= expires_at
    * ``pending``   None or ``(pending_name, created_at)`` (create-by-name in flight)
    * ``verified``  its ID is known to open under ``customer`` with our keys (minted here, or opened
                    once): later requests for it skip the AES-SIV decryption
    """

    __slots__ = ("customer", "body", "counter", "expiry", "version", "lock", "pending", "verified")

    customer: str
    body: bytes
    counter: tuple[int, int | None, int | None] | None
    expiry: float
    version: int
    lock: tuple[str, float] | None
    pending: tuple[str, float] | None
    verified: bool

    def __init__(
        self,
        customer: str,
        body: bytes,
        counter: tuple[int, int | None, int | None] | None,
        expiry: float,
        version: int,
        lock: tuple[str, float] | None = None,
        pending: tuple[str, float] | None = None,
        verified: bool = True,
    ) -> None:
        self.customer = intern(customer)  # one string object per customer, however many stores
        self.body = body
        self.counter = counter
        self.expiry = expiry
        self.version = version
        self.lock = lock
        self.pending = pending
        self.verified = verified

    def __repr__(self) -> str:
        kind = "counter" if self.counter is not None else "blob"
        return (
            f"Store({kind}, customer={self.customer!r}, body={self.body!r}, version={self.version}, "
            f"expiry={self.expiry}, lock={self.lock!r}, pending={self.pending!r})"
        )
