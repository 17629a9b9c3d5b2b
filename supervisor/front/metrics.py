"""Prometheus metrics at ``GET /metrics``: one registry in the supervisor, fed from state it already
keeps (role, accounting, tombstones, registry, replication) and from the shards' last ping answers.

The hot path only touches ``supervisor.state.requeststats`` — two list/dict increments and a ``bisect`` per
request — and everything else is computed when ``/metrics`` is scraped, by a custom collector. We
do not use prometheus-client's multiprocess mode: shards report over ZeroMQ like everything else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from bigbunny.supervisor.state.node import Node
from bigbunny.supervisor.state.reload import Reloader
from bigbunny.supervisor.state.requeststats import BOUNDS, RequestStats
from bigbunny.supervisor.state.role import JOINING, PRIMARY, SECONDARY

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeCollector:
    def __init__(self, node: Node, stats: RequestStats, reloader: Reloader | None = None) -> None:
        self.node = node
        self.stats = stats
        self.reloader = reloader  # with --config: its counters

    def collect(self) -> Iterator[Metric]:
        node = self.node
        role = node.role
        g = GaugeMetricFamily("bbd_role", "1 for the node's current role", labels=["role"])
        for r in (PRIMARY, SECONDARY, JOINING):
            g.add_metric([r], 1.0 if role.role == r else 0.0)
        yield g
        yield GaugeMetricFamily("bbd_epoch", "leader epoch", value=role.epoch)
        yield GaugeMetricFamily("bbd_stores", "stores held", value=sum(s.store_count for s in node.pool.slots))
        yield GaugeMetricFamily("bbd_tombstones", "live tombstones", value=len(node.tombstones))
        yield GaugeMetricFamily(
            "bbd_memory_bytes", "accounted store memory (body + 256 each)", value=node.accounting.total
        )
        yield GaugeMetricFamily(
            "bbd_memory_limit_bytes", "--memory-limit (0 = none)", value=node.accounting.memory_limit
        )
        yield from self._shards()
        yield from self._requests()
        rl = CounterMetricFamily("bbd_rate_limited", "requests refused by the per-customer rate limit")
        rl.add_metric([], node.limiter.rejected)
        yield rl
        rej = CounterMetricFamily("bbd_limit_rejections", "requests refused by a limit", labels=["reason"])
        for reason, n in node.accounting.rejections.items():
            rej.add_metric([reason], n)
        yield rej
        reg = GaugeMetricFamily("bbd_registry_entries", "named-store entries by state", labels=["state"])
        states = node.registry.states()
        for state in ("creating", "active", "deleting"):
            reg.add_metric([state], states.get(state, 0))
        yield reg
        yield from self._replication()
        yield from self._reloads()

    def _reloads(self) -> Iterator[Metric]:
        r = self.reloader
        reloads = CounterMetricFamily(
            "bbd_config_reloads", "config file reloads (SIGHUP, bbd reload) by result", labels=["result"]
        )
        for result in ("applied", "refused"):
            reloads.add_metric([result], r.results[result] if r is not None else 0)
        yield reloads
        yield GaugeMetricFamily(
            "bbd_config_last_reload_timestamp_seconds",
            "when a reload was last applied (0 = never)",
            value=r.last_applied if r else 0.0,
        )
        yield GaugeMetricFamily(
            "bbd_customer_memory_quota_bytes",
            "--customer-memory-quota (0 = none)",
            value=self.node.accounting.customer_quota,
        )

    def _shards(self) -> Iterator[Metric]:
        node = self.node
        stores = GaugeMetricFamily("bbd_shard_stores", "stores held by a shard", labels=["shard"])
        mem = GaugeMetricFamily("bbd_shard_memory_bytes", "accounted memory of a shard", labels=["shard"])
        up = GaugeMetricFamily("bbd_shard_up", "1 if the shard answers", labels=["shard"])
        restarts = CounterMetricFamily("bbd_shard_restarts", "shard process restarts", labels=["shard"])
        calls = CounterMetricFamily("bbd_shard_calls", "requests sent to a shard (since its start)", labels=["shard"])
        batches = CounterMetricFamily(
            "bbd_shard_batches", "ZeroMQ messages those requests travelled in", labels=["shard"]
        )
        for s in node.pool.slots:
            label = [str(s.index)]
            stores.add_metric(label, s.store_count)
            mem.add_metric(label, node.accounting.shard_total[s.index])
            up.add_metric(label, 1.0 if s.up else 0.0)
            restarts.add_metric(label, s.restarts)
            ch = s.channel
            calls.add_metric(label, ch.batched if ch is not None else 0)
            batches.add_metric(label, ch.batches if ch is not None else 0)
        yield from (stores, mem, up, restarts, calls, batches)
        rss = GaugeMetricFamily("bbd_process_rss_bytes", "resident memory per process", labels=["process"])
        cpu = GaugeMetricFamily("bbd_process_cpu_percent", "CPU use per process", labels=["process"])
        for p in node.procinfo.report():
            rss.add_metric([p["role"]], p["rss"])
            cpu.add_metric([p["role"]], p["cpu_percent"])
        yield from (rss, cpu)

    def _requests(self) -> Iterator[Metric]:
        st = self.stats
        c = CounterMetricFamily("bbd_requests", "API requests by endpoint and status", labels=["endpoint", "status"])
        for (endpoint, status), n in sorted(st.counts.items()):
            c.add_metric([endpoint, str(status)], n)
        yield c
        h = HistogramMetricFamily("bbd_request_duration_seconds", "API request latency", labels=["endpoint"])
        for endpoint, counts in sorted(st.buckets.items()):
            acc, buckets = 0, []
            for bound, n in zip((*BOUNDS, float("inf")), counts):
                acc += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), acc))
            h.add_metric([endpoint], buckets, st.sums[endpoint])
        yield h

    def _replication(self) -> Iterator[Metric]:
        cl = self.node.cluster
        q = GaugeMetricFamily("bbd_replication_queue_length", "records not yet acknowledged", labels=["kind"])
        lag = GaugeMetricFamily("bbd_replication_lag_seconds", "age of the oldest unacknowledged record")
        fails = GaugeMetricFamily("bbd_replication_fail_count", "consecutive failed replication rounds")
        dropped = CounterMetricFamily("bbd_replication_dropped", "records dropped on window overflow")
        peer = GaugeMetricFamily("bbd_peer_last_contact_seconds", "since the peer was last heard", labels=["peer"])
        if cl is None:
            q.add_metric(["store"], 0)
            q.add_metric(["registry"], 0)
            lag.add_metric([], 0)
            fails.add_metric([], 0)
            dropped.add_metric([], 0)
        else:
            snd = cl.sender
            q.add_metric(["store"], snd.store_pending)
            q.add_metric(["registry"], snd.registry_pending)
            lag.add_metric([], snd.oldest_pending_age() or 0.0)
            fails.add_metric([], snd.fail_count)
            dropped.add_metric([], snd.dropped)
            for pid, seen in cl.peers_status().items():
                peer.add_metric([pid], -1.0 if seen is None else time.monotonic() - seen)
        yield from (q, lag, fails, dropped, peer)
        # §15: the write gate; the families exist on a single node too (no samples), like the replication ones
        refused = CounterMetricFamily("bbd_writes_refused_no_replicas", "writes refused by --min-replicas-max-lag")
        rlag = GaugeMetricFamily(
            "bbd_replica_lag_seconds", "since the secondary last caught up (-1: not primary or never acknowledged)"
        )
        if cl is not None:
            refused.add_metric([], cl.gate.refused)
            ms = cl.gate.lag_ms()
            rlag.add_metric([], -1.0 if ms is None else ms / 1000)
        yield from (refused, rlag)


def build_registry(node: Node, stats: RequestStats, reloader: Reloader | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, stats, reloader))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
