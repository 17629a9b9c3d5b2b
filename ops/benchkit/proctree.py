"""Processes from Linux /proc: CPU time of a process or thread, a daemon's whole tree (supervisor and
children) and its CPU time, and killing exactly those processes (start times guard against reused PIDs)."""

from __future__ import annotations

import os
import signal


def _stat_fields(path: str) -> list[bytes]:
    """The fields of a /proc stat file after the command name (which may hold spaces and parentheses):
    [0] state, [1] ppid, [11] utime, [12] stime, [19] start time."""
    with open(path, "rb") as f:
        raw = f.read()
    return raw[raw.rfind(b")") + 2 :].split()


def cpu_ticks(pid: int, tid: int | None = None) -> tuple[int, int]:
    """(user, system) CPU clock ticks of a process (all its threads) or of one of its threads.
    Raises OSError (gone), ValueError or IndexError."""
    fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat")
    return int(fields[11]), int(fields[12])


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live PID, or None."""
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def process_tree(root: int) -> dict[int, int | None]:
    """{pid: start time} of root and all its descendants (start time None where /proc is missing)."""
    me = _stat(root)
    if me is None:
        return {root: None} if not os.path.isdir("/proc") else {}
    table: dict[int, tuple[int, int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st is not None:
                table[int(d)] = st
    tree: dict[int, int | None] = {root: me[1]}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in table.items():
            if ppid == parent and pid not in tree:
                tree[pid] = start
                frontier.append(pid)
    return tree


def tree_cpu_s(root: int | None) -> float | None:
    """User + system CPU seconds consumed so far by root and its live descendants (None: unknown)."""
    if root is None:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for pid in process_tree(root):
        try:
            total += sum(cpu_ticks(pid))
        except (OSError, ValueError, IndexError):
            pass
    return total / tick if os.path.isdir("/proc") else None


def kill_tree(tree: dict[int, int | None]) -> list[int]:
    """SIGKILL every PID of the tree that still is the same process (same start time)."""
    killed = []
    for pid, start in tree.items():
        if start is not None:
            st = _stat(pid)
            if st is None or st[1] != start:
                continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed
