"""psutil memory/CPU reports of the daemon's processes (``/status`` ``processes``, metrics, ``bbd status``).

``psutil.Process`` objects are kept between calls because ``cpu_percent`` measures since the
previous call on the same object. RSS of a process tree double-counts shared pages (see docs); quotas
never use these numbers — they come from the shards' byte accounting.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from supervisor.shardpool import ShardPool


class ProcessReporter:
    def __init__(self, pool: ShardPool) -> None:
        self.pool = pool
        self._procs: dict[int, psutil.Process] = {}

    def _proc(self, pid: int) -> psutil.Process | None:
        p = self._procs.get(pid)
        if p is None:
            try:
                p = self._procs[pid] = psutil.Process(pid)
                p.cpu_percent()  # first call only primes the measurement
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
                with p.oneshot():
                    out.append({"pid": pid, "role": role, "rss": p.memory_info().rss,
                                "cpu_percent": round(p.cpu_percent(), 1)})
            except psutil.Error:
                self._procs.pop(pid, None)
        live = {pid for pid, _ in wanted}
        for pid in list(self._procs):
            if pid not in live:
                del self._procs[pid]
        return out
