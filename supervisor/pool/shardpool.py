"""The one module that creates processes: spawns shard workers, checks they answer, replaces them.

Lifecycle per shard slot: ``starting`` (process spawned with the ``spawn`` method, channel connected,
requests queue in ZeroMQ) → ``up`` (a ping came back) → on death (process sentinel readable) or hang
(a ping unanswered for ``HANG_AFTER`` s, then SIGKILL) the channel is closed — every waiting request
fails fast with ``503 StoreUnavailable`` — the slot's accounting is dropped, and a new generation is
spawned on a fresh endpoint after a short backoff. ``stop`` sends SIGTERM, waits, then SIGKILLs
whatever is left (a stopped or hung shard included) and reaps every child.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import zmq

from bigbunny import wire
from bigbunny.shards.worker import shard_main
from bigbunny.supervisor.pool.channel import STALE_AFTER, ShardChannel, ShardDown

log = logging.getLogger("bbd.shards")
PING_EVERY = 0.5
HANG_AFTER = 2.0
_MP = multiprocessing.get_context("spawn")


@dataclass
class Slot:
    index: int
    generation: int = 0
    proc: BaseProcess | None = None
    channel: ShardChannel | None = None
    up: bool = False
    restarts: int = 0
    ping_sent: float | None = None
    store_count: int = 0
    bytes: int = 0
    pid: int = 0
    backoff: float = 0.0
    started: float = field(default_factory=time.monotonic)


class ShardPool:
    def __init__(
        self,
        shards: int,
        rundir: str,
        settings: dict[str, Any],
        on_lost: Callable[[int], object],  # its result, if any, is ignored
    ) -> None:
        self.n = shards
        self.rundir = rundir
        self.settings = settings
        self.on_lost = on_lost
        self.slots = [Slot(i) for i in range(shards)]
        self.channels: list[ShardChannel] = []
        self.ctx = zmq.Context(1)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self._monitor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def endpoint(self, slot: Slot) -> str:
        return f"ipc://{self.rundir}/s{slot.index}.{slot.generation}"

    # --- start / replace ------------------------------------------------------------------
    def start(self) -> None:
        """Open every channel (requests queue in ZeroMQ until the shard binds); ``spawn_all`` starts the
        processes — the supervisor calls it once its HTTP listener is up, so start-up stays short."""
        self.loop = asyncio.get_running_loop()
        for slot in self.slots:
            self._open(slot)
        self.channels = [s.channel for s in self.slots]  # type: ignore[misc]
        self._monitor = self.loop.create_task(self._watch())

    def spawn_all(self) -> None:
        for slot in self.slots:
            if not self.stopping and slot.proc is None:
                self._spawn_process(slot)

    def _open(self, slot: Slot) -> None:
        assert self.loop is not None
        slot.generation += 1
        slot.channel = ShardChannel(self.ctx, self.endpoint(slot), self.loop)
        if self.channels:
            self.channels[slot.index] = slot.channel

    def _spawn(self, slot: Slot) -> None:
        self._open(slot)
        self._spawn_process(slot)

    def _spawn_process(self, slot: Slot) -> None:
        assert self.loop is not None
        proc = _MP.Process(
            target=shard_main,
            args=(slot.index, self.n, self.endpoint(slot), self.settings),
            name=f"bbd-shard-{slot.index}",
            daemon=True,
        )
        proc.start()
        slot.proc, slot.pid, slot.up, slot.ping_sent = proc, proc.pid or 0, False, None
        slot.started = time.monotonic()
        self.loop.add_reader(proc.sentinel, self._on_exit, slot, proc)
        self.loop.create_task(self._ping(slot))

    def _on_exit(self, slot: Slot, proc: BaseProcess) -> None:
        assert self.loop is not None
        self.loop.remove_reader(proc.sentinel)
        proc.join(0.5)  # the sentinel fired: the process is gone, this only reaps it
        if slot.proc is not proc:
            return
        if self.stopping:
            return
        log.error("shard %d (pid %s) exited with code %s; restarting", slot.index, proc.pid, proc.exitcode)
        self._lost(slot)

    def _lost(self, slot: Slot) -> None:
        assert self.loop is not None
        if slot.channel is not None:
            slot.channel.close()
        slot.up = False
        slot.restarts += 1
        slot.store_count = slot.bytes = 0
        self.on_lost(slot.index)
        # Crash loops back off (0.1 s doubling to 5 s); a shard that lived a while restarts at once.
        lived = time.monotonic() - slot.started
        slot.backoff = 0.0 if lived > 10 else min(max(slot.backoff * 2, 0.1), 5.0)
        self.loop.call_later(slot.backoff, self._respawn, slot)

    def _respawn(self, slot: Slot) -> None:
        if not self.stopping:
            self._spawn(slot)

    # --- liveness ---------------------------------------------------------------------------
    async def _ping(self, slot: Slot) -> None:
        channel = slot.channel
        assert channel is not None
        if slot.ping_sent is None:  # the oldest unanswered ping is what hang detection measures
            slot.ping_sent = time.monotonic()
        try:
            err, a, b = (await channel.call(wire.OP_PING))[:3]
        except ShardDown:
            return
        if slot.channel is channel and err == wire.OK:
            if not slot.up:
                log.info("shard %d up (pid %s, %.0f ms)", slot.index, b, (time.monotonic() - slot.started) * 1000)
            slot.up, slot.ping_sent = True, None
            slot.store_count, slot.bytes, slot.pid = a[0], a[1], b
            if all(s.up for s in self.slots):
                self._ready.set()

    async def _watch(self) -> None:
        ticks = 0
        last = time.monotonic()
        while not self.stopping:
            await asyncio.sleep(PING_EVERY)
            ticks += 1
            now = time.monotonic()
            stalled, last = now - last > HANG_AFTER, now
            if stalled:  # our own loop stood still (a frozen process): unanswered pings prove nothing yet
                log.warning("event loop stalled: shard pings are timed afresh")
            for slot in self.slots:
                if stalled and slot.ping_sent is not None:
                    slot.ping_sent = now
                if slot.channel is None or slot.channel.closed:
                    continue
                if ticks % int(STALE_AFTER / PING_EVERY) == 0 and slot.channel.expire_stale():
                    log.error(
                        "shard %d (pid %s) left requests unanswered for %.0f s; failed them",
                        slot.index,
                        slot.pid,
                        STALE_AFTER,
                    )
                if slot.ping_sent is None:
                    assert self.loop is not None
                    self.loop.create_task(self._ping(slot))
                elif now - slot.ping_sent > HANG_AFTER + (0 if slot.up else 10.0):
                    log.error(
                        "shard %d (pid %s) did not answer a ping for %.1f s; killing it",
                        slot.index,
                        slot.pid,
                        now - slot.ping_sent,
                    )
                    proc = slot.proc
                    if proc is not None and proc.pid:
                        try:
                            os.kill(proc.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    # Fail its requests now; the sentinel will fire and respawn.
                    if slot.channel is not None:
                        slot.channel.close()
                    slot.up = False

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def refresh(self, timeout: float = 1.0) -> None:
        """Ping every live shard now (used by /status for exact counts). A shard whose periodic ping is
        simply in flight is pinged too (replies come in order, so the answer is current); one that is
        down, or has owed an answer for longer than a ping period, keeps its last figures: /status
        never waits on a shard that may be hung."""
        now = time.monotonic()
        live = [
            s
            for s in self.slots
            if s.up
            and (s.ping_sent is None or now - s.ping_sent < PING_EVERY)
            and s.channel is not None
            and not s.channel.closed
        ]
        if live:
            await asyncio.wait([asyncio.ensure_future(self._ping(s)) for s in live], timeout=timeout)

    # --- stop -------------------------------------------------------------------------------
    async def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM every shard, wait up to ``timeout``, SIGKILL the rest, reap all, close sockets."""
        self.stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
        procs = [s.proc for s in self.slots if s.proc is not None]
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for p in procs:
            if p.is_alive():
                log.warning("shard pid %s did not stop in %.1f s; killing it", p.pid, timeout)
                p.kill()
        for p in procs:
            p.join(2.0)
            try:
                if self.loop is not None:
                    self.loop.remove_reader(p.sentinel)
            except (ValueError, OSError):
                pass
        for s in self.slots:
            if s.channel is not None:
                s.channel.close()
        self.ctx.term()
        if not any(p.is_alive() for p in procs):
            _stop_resource_tracker()


def _stop_resource_tracker() -> None:
    """Stop and reap the helper process the ``spawn`` method started, so no child outlives us.

    It exits once every holder of its pipe is gone; only call this after all shards were reaped,
    otherwise the wait could block.
    """
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)  # private API: absent on some Pythons
    if stop is not None:
        try:
            stop()
        except OSError as e:
            log.warning("stopping the resource tracker failed: %s", e)
