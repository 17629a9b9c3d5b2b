"""Cluster throughput cells: closed-loop writes against a pair's primary and a baseline node, alternated
cell by cell, with the secondary let catch up (``wait_drained``) after each pair cell."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from multiprocessing.context import SpawnContext

from .loadgen import CompiledLoad
from .proctree import tree_cpu_s
from .report import log
from .runner import pick_loop, prefill, run_workload
from .status import status_brief, try_status
from .workloads import ttl_header


def bench_cfg(a: argparse.Namespace, uds: str, conns: int, tag: str) -> dict:
    return {
        "uds": uds,
        "conns": conns,
        "procs": min(conns, a.procs),
        "duration": a.duration,
        "warmup": a.warmup,
        "requests": None,
        "size": a.size,
        "timeout": a.timeout,
        "seed": a.seed,
        "loop": a.loop,
        "customers_list": [f"{a.customer_prefix}-{tag}-{k}" for k in range(a.customers)],
        "stores_list": [],
        "counters_list": [],
        "ttl_header": ttl_header(a.ttl),
    }


def wait_drained(prim: str, sec: str, timeout: float) -> dict:
    """Until the primary has nothing unacknowledged and both hold the same store count (bounded)."""
    t0 = time.monotonic()
    max_q = 0
    roles: Counter[str] = Counter()
    sp = ss = None
    while True:
        sp, ss = try_status(prim), try_status(sec)
        if sp is not None and ss is not None:
            q = int(sp.get("queue_length", 0)) + int(sp.get("registry_queue_length", 0))
            max_q = max(max_q, q)
            roles[str(ss.get("role"))] += 1
            if q == 0 and ss.get("role") == "SECONDARY" and ss.get("store_count") == sp.get("store_count"):
                return {
                    "drained": True,
                    "drain_s": round(time.monotonic() - t0, 3),
                    "max_queue": max_q,
                    "secondary_roles_seen": dict(roles),
                    "store_count": sp.get("store_count"),
                }
        if time.monotonic() - t0 > timeout:
            return {
                "drained": False,
                "drain_s": round(time.monotonic() - t0, 3),
                "max_queue": max_q,
                "secondary_roles_seen": dict(roles),
                "primary": status_brief(sp),
                "secondary": status_brief(ss),
            }
        time.sleep(0.05)


def throughput_compare(
    a: argparse.Namespace,
    prim: str,
    sec: str,
    single: str,
    rnd: int,
    ctx: SpawnContext,
    pids: dict[str, int | None],
    base_sec: str | None = None,
) -> list[dict]:
    """Cells alternating "pair" (prim) and "single" (the baseline; with ``base_sec`` another pair's
    primary, whose secondary is also let catch up after each of its cells)."""
    with tempfile.TemporaryDirectory(prefix="bbd-bench-lg-") as tmp:  # the loadgen's ID files
        compiled = CompiledLoad(a, tmp) if a.loadgen else None
        loop_factory = pick_loop(a.loop)
        stores: dict[str, list] = {}
        ids: dict[str, str] = {}
        if "update" in a.tp_workloads:
            for tag, uds in (("pair", prim), ("single", single)):
                if compiled is not None:
                    ids[tag] = compiled.prefill(tag, uds)
                    continue
                cfg = bench_cfg(a, uds, max(a.tp_conns), tag)
                with asyncio.Runner(loop_factory=loop_factory) as r:
                    stores[tag] = r.run(prefill(cfg, "stores", a.stores))
            d = wait_drained(prim, sec, a.drain_timeout)
            if base_sec is not None:
                wait_drained(single, base_sec, a.drain_timeout)
            log(f"prefilled {a.stores} stores on each; pair drained in {d['drain_s']} s")
        cells: list[dict] = []
        for wl in a.tp_workloads:
            for c in a.tp_conns:
                row: dict = {"workload": wl, "conns": c}
                order = ("pair", "single") if (rnd + len(cells)) % 2 == 0 else ("single", "pair")
                for tag in order:
                    uds = prim if tag == "pair" else single
                    cfg = bench_cfg(a, uds, c, tag)
                    cfg["stores_list"] = stores.get(tag, [])
                    before = try_status(prim) if tag == "pair" else None
                    nodes = ("primary", "secondary") if tag == "pair" else ("single",)
                    cpu0 = {n: tree_cpu_s(pids.get(n)) for n in nodes}
                    t_cell = time.monotonic()
                    if compiled is not None:
                        res = compiled.run(uds, wl, c, ids.get(tag) if wl == "update" else None)
                    else:
                        res = run_workload(cfg, wl, ctx)
                    wall = time.monotonic() - t_cell
                    keep = ("ops", "ops_per_s", "errors", "error_kinds", "duration_s", "latency_us")
                    row[tag] = {k: res[k] for k in keep}
                    cpu1 = {n: tree_cpu_s(pids.get(n)) for n in nodes}
                    row[tag]["cpu_share"] = {  # CPU seconds per wall second of the whole cell (warm-up included)
                        n: round((cpu1[n] - cpu0[n]) / wall, 2)  # type: ignore[operator]
                        for n in nodes
                        if cpu0[n] is not None and cpu1[n] is not None
                    }
                    if tag == "single" and base_sec is not None:
                        wait_drained(single, base_sec, a.drain_timeout)
                    if tag == "pair":
                        d = wait_drained(prim, sec, a.drain_timeout)
                        if before is not None:
                            after = try_status(prim) or {}
                            d["replication_dropped"] = int(after.get("replication_dropped", 0)) - int(
                                before.get("replication_dropped", 0)
                            )
                        row["replication"] = d
                ps, ss = row["pair"]["ops_per_s"], row["single"]["ops_per_s"]
                row["ratio"] = round(ps / ss, 3) if ss > 0 else None
                cells.append(row)
                rep = row["replication"]
                log(
                    f"  {wl} C={c}: pair {ps:.0f} ops/s, single {ss:.0f} ops/s, ratio {row['ratio']}; CPU pair "
                    f"{row['pair']['cpu_share']} single {row['single']['cpu_share']}; "
                    f"secondary caught up {rep['drain_s']} s after (max queue {rep['max_queue']}"
                    + (f", {rep['replication_dropped']} records DROPPED" if rep.get("replication_dropped") else "")
                    + ("" if rep["drained"] else ", NOT drained")
                    + ")"
                )
        return cells
