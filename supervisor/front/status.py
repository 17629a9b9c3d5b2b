"""``GET /status`` (SPEC §3 + §14 additions): one compact JSON object, keys sorted, then a newline."""

from __future__ import annotations

import json
import time
from typing import Any

from bigbunny import __version__
from bigbunny.durations import format_duration
from bigbunny.supervisor.state.node import Node

NEVER = (1 << 63) - 1


def _since(t: float | None, now: float) -> str:
    return format_duration(NEVER) if t is None else format_duration(int((now - t) * 1e9))


async def status_document(node: Node) -> dict[str, Any]:
    await node.pool.refresh()
    now = time.monotonic()
    role = node.role
    slots = node.pool.slots
    cl = node.cluster
    peers: dict[str, str] = {}
    repl: dict[str, Any] = {
        "queue_length": 0,
        "registry_queue_length": 0,
        "replication_fail_count": 0,
        "last_replication_fail": "",
        "replication_dropped": 0,
        "writes_refused_no_replicas": 0,
        "replica_lag_ms": None,
    }
    if cl is not None:
        peers = {pid: _since(seen, now) for pid, seen in cl.peers_status().items()}  # §14: listed on every role
        snd = cl.sender
        repl = {
            "queue_length": snd.store_pending,
            "registry_queue_length": snd.registry_pending,
            "replication_fail_count": snd.fail_count,
            "last_replication_fail": "" if snd.last_fail is None else _since(snd.last_fail, now),
            "replication_dropped": snd.dropped,
            "writes_refused_no_replicas": cl.gate.refused,  # §15
            "replica_lag_ms": cl.gate.lag_ms(),
        }
    return {
        "host_id": node.cfg.host_id,
        "last_leader_seen": _since(role.last_leader_seen, now),
        "leader_epoch": role.epoch,
        "memory_usage": node.accounting.total,
        "peers": peers,
        "registry_count": len(node.registry.entries),
        "registry_states": node.registry.states(),
        **repl,
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
        "version": __version__,
        "processes": node.procinfo.report(),
    }


def encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
