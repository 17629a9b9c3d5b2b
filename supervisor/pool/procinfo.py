"""psutil memory/CPU reports of the daemon's processes (``/status`` ``processes``, metrics, ``bbd status``).

``psutil.Process`` objects are kept between calls because ``cpu_percent`` measures since the
previous call on the same object. RSS of a process tree double-counts shared pages (see docs); quotas
never use these numbers — they come from the shards' byte accounting.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from bigbunny.supervisor.pool.shardpool import ShardPool


# psutil's cpu_percent over a few milliseconds is mostly clock-tick noise (it read 336 % on 2 cores
# once): a process sampled again sooner than this keeps its previous figure.
_MIN_INTERVAL = 0.5
_MAX_PERCENT = 100.0 * (os.cpu_count() or 1)


class _Sampled:
    """One process and its last CPU figure (``cpu_percent`` measures since the previous call)."""

    __slots__ = ("proc", "at", "percent")

    def __init__(self, proc: psutil.Process) -> None:
        proc.cpu_percent()  # the first call only primes the measurement
        self.proc, self.at, self.percent = proc, time.monotonic(), 0.0

    def cpu_percent(self) -> float:
        now = time.monotonic()
        if now - self.at >= _MIN_INTERVAL:
            self.percent = min(max(self.proc.cpu_percent(), 0.0), _MAX_PERCENT)
            self.at = now
        return round(self.percent, 1)


class ProcessReporter:
    def __init__(self, pool: ShardPool) -> None:
        self.pool = pool
        self._procs: dict[int, _Sampled] = {}

    def _proc(self, pid: int) -> _Sampled | None:
        p = self._procs.get(pid)
        if p is None:
            try:
                p = self._procs[pid] = _Sampled(psutil.Process(pid))
            except psutil.Error:
                return None
        return p

    def report(self) -> list[dict[str, Any]]:
        """``[{pid, role, rss, cpu_percent}]`` for the supervisor and every live shard."""
        shards = [(s.pid, f"shard-{s.index}") for s in self.pool.slots if s.up and s.pid]
        wanted = [(os.getpid(), "supervisor"), *shards]
        out = []
        for pid, role in wanted:
            p = self._proc(pid)
            if p is None:
                continue
            try:
                with p.proc.oneshot():
                    out.append(
                        {"pid": pid, "role": role, "rss": p.proc.memory_info().rss, "cpu_percent": p.cpu_percent()}
                    )
            except psutil.Error:
                self._procs.pop(pid, None)
        live = {pid for pid, _ in wanted}
        for pid in list(self._procs):
            if pid not in live:
                del self._procs[pid]
        return out
