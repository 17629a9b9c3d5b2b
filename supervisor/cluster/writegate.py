"""When a primary with a peer may acknowledge a write (SPEC §15): leadership re-confirmed after
silence, the replica-lag bound (``--min-replicas-max-lag``) and per-request replica waits
(``BigBunny-Replicas: 1``).

The hot path pays one float compare per write: ``Node.write_until`` (and, on a mutation's reply,
``Node.lead_until``) are deadlines on the ``perf_counter`` clock, recomputed here on every
acknowledgement and cluster tick. Past ``lead_until`` the lead is in doubt: the peer has not answered
for ``LEAD_LEASE`` (a partition, a dead peer) or our own event loop stalled that long (a frozen or
starved process) — the peer may have taken over meanwhile. A write then waits for one confirmation:
the peer is probed; an answer from a leader at a higher epoch (or a primary winning the equal-epoch
tie) makes us step down, so the write is relayed to the new primary (not applied yet) or answered
``503 LeaderChanged`` (applied here, to be discarded at our re-join). Silence for ``LEAD_PROBE``
lets us go on alone. A primary that stays alone re-confirms in the background before its
confirmation runs out, so only a stall makes writes wait.

Past ``write_until`` but not ``lead_until`` the secondary lags more than ``--min-replicas-max-lag``:
writes are refused (``503 NoReplicas``) before they are applied. The lag is the age of the last
acknowledgement on our stream or of the oldest unacknowledged record, whichever is older. The rule
guards against being superseded, so it holds only while the peer could take over from us: from the
initial election on, and after a takeover once the peer has rejoined as our secondary.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from bigbunny import errors
from bigbunny.supervisor.cluster.replication import Sender
from bigbunny.supervisor.front.requests import ApiRequest, Responder
from bigbunny.supervisor.front.responses import DEGRADED, NOT_REPLICATED
from bigbunny.supervisor.state.role import PRIMARY, PeerAnswer

if TYPE_CHECKING:
    from bigbunny.supervisor.state.node import Node

log = logging.getLogger("bbd.cluster")
LEAD_LEASE = 2.0  # no peer contact (or loop tick) for longer: the lead must be re-confirmed
LEAD_PROBE = 0.25  # silence for this long after a probe: go on alone
STALL_SLACK = 0.25  # a probe that took this much longer than LEAD_PROBE spanned a stall: ask again
REFRESH_BEFORE = 0.5  # a lone primary re-confirms this long before its confirmation runs out
INF = float("inf")


class Leadership(Protocol):
    """What the gate needs of the cluster: the node, its replication sender, a probe of the peer and
    the step-down to perform when the answer shows that the peer leads."""

    node: Node
    sender: Sender

    async def probe(self, timeout: float) -> PeerAnswer | None: ...

    def lost_lead(self, sender: str, epoch: int) -> None: ...


class WriteGate:
    def __init__(self, cluster: Leadership) -> None:
        self.cluster = cluster
        self.node = cluster.node
        cfg = self.node.cfg
        self.max_lag: float = cfg.min_replicas_max_lag
        self.wait_timeout: float = cfg.replica_wait_timeout
        now = perf_counter()
        self.contact = now  # last acknowledgement from the peer at an epoch not above ours
        self.tick_at = now  # last cluster tick, unless a stall is still unconfirmed
        self.confirmed = now  # last confirmation by probe (or becoming primary)
        self.repl_ack = -INF  # last acknowledgement on our current stream
        self.lag_until = INF
        self.lag_rule = False  # the peer could take over from us (see module doc)
        self.refused = 0  # writes_refused_no_replicas
        self._last_tick = now
        self._stalled = False
        self._check: asyncio.Task[bool] | None = None
        self._waits: deque[tuple[int, asyncio.Future[bool]]] = deque()

    # --- role changes and acknowledgements ---------------------------------------------------------
    def became_primary(self, initial: bool) -> None:
        """Elected at start-up: the peer could still take over (rule on). A takeover: the peer can
        only come back under us, so the rule waits until it has rejoined (``acked``)."""
        self.confirmed = self.tick_at = perf_counter()
        self._stalled = False
        self.repl_ack = -INF
        self.lag_rule = initial
        self.fail_waits()
        self.refresh()

    def stepped_down(self) -> None:
        self.lag_rule = False
        self.fail_waits()
        self.refresh()

    def acked(self, epoch: int, stream: str, seq: int) -> None:
        """An acknowledgement from the peer (heartbeat or replication) has been applied by the Sender."""
        now = perf_counter()
        if epoch <= self.node.role.epoch:
            self.contact = now
        if stream and stream == self.cluster.sender.stream:
            self.repl_ack = now
            self.lag_rule = True  # the peer follows our stream: it is our secondary
            w = self._waits
            while w and w[0][0] <= seq:
                fut = w.popleft()[1]
                if not fut.done():
                    fut.set_result(True)
        self.refresh()

    def refresh(self) -> None:
        node = self.node
        if node.role.role != PRIMARY:
            node.lead_until = node.write_until = -INF
            return
        lead = max(min(self.contact, self.tick_at), self.confirmed) + LEAD_LEASE
        node.lead_until = lead
        if self.lag_rule and self.max_lag:
            self.lag_until = self._lag_basis() + self.max_lag
            node.write_until = min(lead, self.lag_until)
        else:
            self.lag_until = INF
            node.write_until = lead

    def _lag_basis(self) -> float:
        """perf_counter time the lag is measured from (older of last ack and oldest pending record)."""
        age = self.cluster.sender.oldest_pending_age()
        return self.repl_ack if age is None else min(self.repl_ack, perf_counter() - age)

    def lag_ms(self) -> int | None:
        """Replication lag for ``/status`` (None: not primary, or never acknowledged on this stream)."""
        if self.node.role.role != PRIMARY:
            return None
        basis = self._lag_basis()
        return None if basis == -INF else max(0, round((perf_counter() - basis) * 1000))

    def tick(self) -> None:
        """Every cluster tick (100 ms, any role): notice a stalled loop, keep a lone primary confirmed."""
        now = perf_counter()
        gap, self._last_tick = now - self._last_tick, now
        if self.node.role.role != PRIMARY:
            return
        if gap > LEAD_LEASE:
            log.warning("event loop stalled for %.1f s: re-confirming the lead before acknowledging writes", gap)
            self._stalled = True
        if not self._stalled:
            self.tick_at = now
        self.refresh()
        if self._stalled or now > self.node.lead_until - REFRESH_BEFORE:
            self.lead_check()

    # --- the lead check ----------------------------------------------------------------------------
    def lead_check(self) -> asyncio.Task[bool]:
        """One confirmation shared by every write waiting for it: True while we still lead."""
        if self._check is None:
            self._check = asyncio.get_running_loop().create_task(self._confirm())
        return self._check

    async def _confirm(self) -> bool:
        cl, role = self.cluster, self.node.role
        try:
            while role.role == PRIMARY:
                start = perf_counter()
                reply = await cl.probe(LEAD_PROBE)
                if role.role != PRIMARY:
                    return False  # a heartbeat from a newer leader came meanwhile
                if reply is None and perf_counter() - start > LEAD_PROBE + STALL_SLACK:
                    continue  # we stalled during the probe: its silence proves nothing
                if reply is not None and role.yields_to(reply.sender, reply.epoch, reply.role):
                    cl.lost_lead(reply.sender, reply.epoch)
                    return False
                now = perf_counter()
                self.confirmed = self.tick_at = now
                self._stalled = False
                self.refresh()
                return True
            return False
        finally:
            self._check = None

    # --- replica waits -----------------------------------------------------------------------------
    async def replica_acked(self, seq: int) -> bool:
        """True once the peer has acknowledged record ``seq`` of the current stream, False on timeout
        or when the stream ends (a promotion, a step-down)."""
        snd = self.cluster.sender
        if snd.acked >= seq:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waits.append((seq, fut))
        try:
            return await asyncio.wait_for(fut, self.wait_timeout)
        except TimeoutError:
            return False

    def fail_waits(self) -> None:
        while self._waits:
            fut = self._waits.popleft()[1]
            if not fut.done():
                fut.set_result(False)

    async def settle(self, req: ApiRequest, seq: int) -> bytes | None:
        """After a write was applied (and its record queued as ``seq``): None if it must not be
        acknowledged (we lost the lead), else the warning header to add (``b""`` for none)."""
        if perf_counter() > self.node.lead_until and not await self.lead_check():
            return None
        if req.replicas and not await self.replica_acked(seq):
            return None if self.node.role.role != PRIMARY else NOT_REPLICATED
        return b""

    def hold(self, req: ApiRequest) -> None:
        """Keep the answer of a write just applied until ``settle`` allows it."""
        held = HeldAnswer(req.out)
        req.out = held
        if req.replicas:  # the batch about to leave asks the secondary to acknowledge once applied
            self.cluster.sender.urgent_until = perf_counter() + self.wait_timeout
        asyncio.get_running_loop().create_task(self._release(req, held, self.cluster.sender.seq))

    async def _release(self, req: ApiRequest, held: HeldAnswer, seq: int) -> None:
        try:
            warning = await self.settle(req, seq)
        except Exception:  # never leave the request unanswered
            log.exception("settling a write failed")
            warning = None
        held.release(req, warning)


class HeldAnswer:
    """A write's success answer, kept until the write may be acknowledged; errors pass at once."""

    __slots__ = ("out", "answer")

    def __init__(self, out: Responder) -> None:
        self.out = out
        self.answer: tuple[bytes, bytes, bytes] | None = None

    def ok(self, req: ApiRequest, body: bytes, ctype: bytes, extra: bytes) -> None:
        self.answer = (body, ctype, extra)

    def error(self, req: ApiRequest, err: Any, extra: bytes = b"") -> None:
        self.out.error(req, err, extra)

    def raw(self, req: ApiRequest, status: int, headers: list[Any], body: bytes) -> None:
        self.out.raw(req, status, headers, body)

    def release(self, req: ApiRequest, warning: bytes | None) -> None:
        req.out = self.out
        if self.answer is None:
            return  # answered with an error already
        if warning is None:
            self.out.error(req, errors.LEAD_LOST)
            return
        body, ctype, extra = self.answer
        if warning:  # one warning: NotReplicated says more than DegradedWrite
            extra = extra.replace(DEGRADED, b"") + warning
        self.out.ok(req, body, ctype, extra)
