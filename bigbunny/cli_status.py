"""Human-readable ``bbd status`` (SPEC §9): labels padded to 16 so values start at column 17.

    Host ID:        node1
    Role:           PRIMARY
    ...
    Peers:
      node2: 12.5ms ago
    Registry States:
      active: 3
    Shards:
      0: pid 4242, stores 12, memory 3072 bytes, restarts 0
      1: pid 4243, stores 9, memory 2048 bytes, restarts 1, down

Numbers are printed exactly (never ``1.2e+07``); the optional §14 additions (``uptime``, ``shards``)
are shown only when the daemon reports them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from bigbunny.durations import format_duration

# (label, status key, suffix)
_FIELDS = (
    ("Host ID:", "host_id", ""),
    ("Role:", "role", ""),
    ("Leader Epoch:", "leader_epoch", ""),
    ("Last Leader:", "last_leader_seen", " ago"),
    ("Store Count:", "store_count", ""),
    ("Memory Usage:", "memory_usage", " bytes"),
    ("Queue Length:", "queue_length", ""),
    ("Tombstones:", "tombstone_count", ""),
    ("Registry Count:", "registry_count", ""),
)


def num(value: Any) -> str:
    """Render a JSON scalar exactly: integral floats lose their ``.0``/exponent, others stay as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _uptime(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_duration(int(round(value * 1_000_000_000)))
    return num(value)


def _first(info: dict[str, Any], *keys: str) -> str:
    for key in keys:
        if key in info:
            return num(info[key])
    return "?"


def _shards(shards: Any) -> Iterable[tuple[Any, dict[str, Any]]]:
    if isinstance(shards, dict):
        return sorted(shards.items(), key=lambda kv: (len(str(kv[0])), str(kv[0])))
    if isinstance(shards, list):
        return ((s.get("id", s.get("shard", i)) if isinstance(s, dict) else i, s) for i, s in enumerate(shards))
    return ()


def format_status(st: dict[str, Any]) -> str:
    lines = [f"{label:<16}{num(st.get(key))}{suffix}" for label, key, suffix in _FIELDS]
    if "uptime" in st:
        lines.append(f"{'Uptime:':<16}{_uptime(st['uptime'])}")
    if "version" in st:
        lines.append(f"{'Version:':<16}{st['version']}")
    if st.get("replica_lag_ms") is not None:  # §15: a pair's write gate (null on a single node)
        lines.append(f"{'Replica Lag:':<16}{num(st['replica_lag_ms'])} ms")
        lines.append(f"{'Lag Refusals:':<16}{num(st.get('writes_refused_no_replicas', 0))}")
    peers = st.get("peers") or {}
    if isinstance(peers, dict) and peers:
        lines.append("Peers:")
        lines += [f"  {peer}: {num(ago)} ago" for peer, ago in sorted(peers.items())]
    states = st.get("registry_states") or {}
    if isinstance(states, dict) and states:
        lines.append("Registry States:")
        lines += [f"  {state}: {num(n)}" for state, n in sorted(states.items())]
    shards = list(_shards(st.get("shards")))
    if shards:
        lines.append("Shards:")
        for sid, info in shards:
            info = info if isinstance(info, dict) else {}
            down = ", down" if info.get("up") is False else ""
            lines.append(
                f"  {num(sid)}: pid {_first(info, 'pid')}, stores {_first(info, 'stores', 'store_count')}, "
                f"memory {_first(info, 'memory', 'memory_usage')} bytes, restarts {_first(info, 'restarts')}{down}"
            )
    procs = st.get("processes")
    if isinstance(procs, list) and procs:
        lines += _process_table(procs)
    return "\n".join(lines) + "\n"


def _mib(n: Any) -> str:
    return f"{n / 1048576:.1f} MiB" if isinstance(n, int | float) else "?"


def _pct(n: Any) -> str:
    return f"{n:.1f}" if isinstance(n, int | float) and not isinstance(n, bool) else "?"


def _process_table(procs: list[Any]) -> list[str]:
    """psutil report: one row per process, then the totals (RSS double-counts shared pages)."""
    rows = [p for p in procs if isinstance(p, dict)]
    out = ["Processes:", f"  {'ROLE':<12}{'PID':>8}{'RSS':>14}{'CPU%':>8}"]
    for p in rows:
        out.append(
            f"  {str(p.get('role', '?')):<12}{num(p.get('pid')):>8}{_mib(p.get('rss')):>14}"
            f"{_pct(p.get('cpu_percent')):>8}"
        )
    rss = sum(p.get("rss", 0) for p in rows if isinstance(p.get("rss"), int | float))
    cpu = sum(p.get("cpu_percent", 0) for p in rows if isinstance(p.get("cpu_percent"), int | float))
    out.append(f"  {'total':<12}{len(rows):>8}{_mib(rss):>14}{_pct(cpu):>8}")
    return out


def format_customers(report: dict[str, Any]) -> str:
    """``bbd customers``: one small table per ranking."""
    lines = [f"{'Customers:':<16}{num(report.get('customers'))}"]
    for key, title in (
        ("memory", "By memory"),
        ("stores", "By stores"),
        ("tombstones", "By tombstones"),
        ("rate_limited", "By rate-limit rejections"),
    ):
        rows = report.get(f"top_{key}") or []
        lines.append(f"{title}:")
        if not rows:
            lines.append("  (none)")
        for r in rows:
            lines.append(
                f"  {str(r.get('customer')):<40} memory {num(r.get('memory'))} B, "
                f"stores {num(r.get('stores'))}, tombstones {num(r.get('tombstones'))}, "
                f"rate-limited {num(r.get('rate_limited'))}"
            )
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, dict) and "ids" in v:
        return f"keys {','.join(map(str, v['ids']))} (current {v.get('current')})"
    return json.dumps(v) if isinstance(v, str | dict | list) else str(v)


def format_reload(report: dict[str, Any]) -> str:
    """``bbd reload``: what changed live, what needs a restart, what the file cannot set."""
    lines = [f"reloaded {report.get('file')}"]
    for key, title in (("changed", "changed"), ("restart_required", "needs a restart")):
        for name, change in sorted((report.get(key) or {}).items()):
            lines.append(f"  {title}: {name} {_value(change.get('from'))} -> {_value(change.get('to'))}")
    if not report.get("changed") and not report.get("restart_required"):
        lines.append("  no changes")
    for name in report.get("overridden") or []:
        lines.append(f"  ignored: {name} (set by a flag or environment variable)")
    return "\n".join(lines) + "\n"
