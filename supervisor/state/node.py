"""The supervisor's components for one node, wired together (a container, not a god object).

Each concern lives in its own module; handlers receive this container so they can reach the pieces
they need: role/epoch, rate limiter, accounting, tombstones, registry and the shard channels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from bigbunny.config import Config
from bigbunny.sharding import shard_of
from bigbunny.storeid import StoreIdCodec
from bigbunny.supervisor.pool.channel import ShardChannel
from bigbunny.supervisor.pool.procinfo import ProcessReporter
from bigbunny.supervisor.pool.shardpool import ShardPool
from bigbunny.supervisor.state.accounting import Accounting
from bigbunny.supervisor.state.minting import Minter
from bigbunny.supervisor.state.ratelimit import RateLimiter
from bigbunny.supervisor.state.registry import Registry
from bigbunny.supervisor.state.requeststats import RequestStats
from bigbunny.supervisor.state.role import RoleState
from bigbunny.supervisor.state.tombstones import Tombstones


class Node:
    def __init__(self, cfg: Config, rundir: str) -> None:
        self.cfg = cfg
        self.started = time.monotonic()
        self.role = RoleState(cfg.lock_timeout, host_id=cfg.host_id)
        self.limiter = RateLimiter(cfg.rate_limit, cfg.burst_size)
        self.accounting = Accounting(cfg.shards, cfg.memory_limit, cfg.customer_memory_quota)
        self.tombstones = Tombstones(cfg.tombstone_customer_limit, cfg.tombstone_global_limit)
        self.registry = Registry()
        self.pool = ShardPool(cfg.shards, rundir, shard_settings(cfg), self.accounting.drop_shard)
        self.nshards = cfg.shards
        codec = StoreIdCodec(cfg.keys, cfg.site, not cfg.disable_site_verification)
        self.minter = Minter(codec, cfg.shards, lambda i: not self.pool.channels[i].closed)
        self.stats = RequestStats()
        self.procinfo = ProcessReporter(self.pool)
        self.inflight_calls = 0  # shard calls not yet answered; a join snapshot waits for them to drain
        self.cluster: Any = None  # supervisor.cluster.coordinator.Cluster when a peer is configured
        # perf_counter deadlines kept by supervisor.cluster.writegate; without a peer nothing ever gates a write
        self.lead_until = float("inf")  # past it, a write is acknowledged only once the lead is re-confirmed
        self.write_until = float("inf")  # past it, the lead is in doubt or the replica lags (the slow path)

    def replicate(self, record: Sequence[Any], registry: bool = False) -> None:
        """Hand a mutation's record to replication (no-op without a peer or when not primary): a
        ``bigbunny.records`` record, or a shard's as msgpack decoded it (the same fields, in a list)."""
        if self.cluster is not None:
            self.cluster.replicate(record, registry)

    def healthy(self) -> bool:
        """Alive and every shard answering (``/healthz``, systemd watchdog)."""
        return all(s.up for s in self.pool.slots)

    def ready(self) -> str:
        """Empty if ready to serve (``/readyz``), else the reason."""
        if not self.healthy():
            return "a shard is down"
        if self.role.role not in ("PRIMARY", "SECONDARY"):
            return f"role {self.role.role}"
        if self.role.barrier:
            return "join snapshot in progress"
        return ""

    def degraded(self) -> bool:
        """§2.12 DegradedWrite: replication unhealthy on a primary with a peer, judged before this write."""
        c = self.cluster
        return c is not None and self.role.is_primary and c.sender.degraded()

    @property
    def channels(self) -> list[ShardChannel]:
        return self.pool.channels

    def shard_for(self, sid: str) -> int:
        return shard_of(sid, self.nshards)


def shard_settings(cfg: Config) -> dict[str, Any]:
    """Plain, picklable settings handed to every shard process (spawn pickles its arguments)."""
    return {
        "keys": {k: v.hex() for k, v in cfg.keys.keys.items()},
        "current": cfg.keys.current,
        "site": cfg.site,
        "verify_site": not cfg.disable_site_verification,
        "lock_timeout": cfg.lock_timeout,
        "default_ttl": cfg.default_ttl,
        "log_level": cfg.log_level,
        "log_format": cfg.log_format,
        "supervisor_pid": os.getpid(),
        "replicate": bool(cfg.peers),
    }
