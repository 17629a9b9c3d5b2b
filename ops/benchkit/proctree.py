"""Process trees from Linux /proc: a daemon's supervisor and its children, their CPU time, and killing
exactly those processes (start times guard against reused PIDs)."""

from __future__ import annotations

import os
import signal


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live PID, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        fields = raw[raw.rfind(b")") + 2 :].split()
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
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
            fields = raw[raw.rfind(b")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
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
