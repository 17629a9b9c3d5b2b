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
    from supervisor.shardpool import ShardPool


# psutil's cpu_percent over a few milliseconds is mostly clock-tick noise (it read 336 % on 2 cores
# once): a process sampled again sooner than this keeps its previous figure.
_MIN_INTERVAL = 0.5
_MAX_PERCENT = 100.0 * (os.cpu_count() or 1)


class ProcessReporter:
    def __init__(self, pool: ShardPool) -> None:
        self.pool = pool
        self._procs: dict[int, psutil.Process] = {}
        self._cpu: dict[int, tuple[float, float]] = {}  # pid -> (monotonic time sampled, percent)

    def _proc(self, pid: int) -> psutil.Process | None:
        p = self._procs.get(pid)
        if p is None:
            try:
                p = self._procs[pid] = psutil.Process(pid)
                p.cpu_percent()  # first call only primes the measurement
                self._cpu[pid] = (time.monotonic(), 0.0)
            except psutil.Error:
                return None
        return p

    def _cpu_percent(self, pid: int, p: psutil.Process) -> float:
        now = time.monotonic()
        last, value = self._cpu.get(pid, (0.0, 0.0))
        if now - last >= _MIN_INTERVAL:
            value = min(max(p.cpu_percent(), 0.0), _MAX_PERCENT)
            self._cpu[pid] = (now, value)
        return round(value, 1)

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
                with p.oneshot():
                    out.append({"pid": pid, "role": role, "rss": p.memory_info().rss,
                                "cpu_percent": self._cpu_percent(pid, p)})
            except psutil.Error:
                self._procs.pop(pid, None)
        live = {pid for pid, _ in wanted}
        for pid in list(self._procs):
            if pid not in live:
                del self._procs[pid]
                self._cpu.pop(pid, None)
        return out
