"""``GET /status`` (SPEC §3 + §14 additions): one compact JSON object, keys sorted, then a newline."""

from __future__ import annotations

import json
import time
from typing import Any

from bigbunny.durations import format_duration
from supervisor.node import Node

NEVER = (1 << 63) - 1


def _since(t: float | None, now: float) -> str:
    return format_duration(NEVER) if t is None else format_duration(int((now - t) * 1e9))


async def status_document(node: Node) -> dict[str, Any]:
    await node.pool.refresh()
    now = time.monotonic()
    role = node.role
    slots = node.pool.slots
    return {
        "host_id": node.cfg.host_id,
        "last_leader_seen": _since(role.last_leader_seen, now),
        "last_replication_fail": "",
        "leader_epoch": role.epoch,
        "memory_usage": node.accounting.total,
        "peers": {},
        "queue_length": 0,
        "registry_count": len(node.registry.entries),
        "registry_queue_length": 0,
        "registry_states": node.registry.states(),
        "replication_fail_count": 0,
        "replication_dropped": 0,
        "role": role.role,
        "store_count": sum(s.store_count for s in slots),
        "tombstone_count": len(node.tombstones),
        "shards": [
            {
                "id": s.index,
                "pid": s.pid,
                "up": s.up,
                "stores": s.store_count,
                "memory": node.accounting.shard_total[s.index],
                "restarts": s.restarts,
            }
            for s in slots
        ],
        "uptime": format_duration(int((now - node.started) * 1e9)),
    }


def encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
