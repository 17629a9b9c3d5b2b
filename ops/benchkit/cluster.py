"""One cluster round: start (or use) a pair, run the chosen parts, stop and check the daemons."""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import time
from multiprocessing.context import SpawnContext

from .daemon import REPO, StartedDaemon, find_bbd, free_ports, scan_log
from .failover import failover_probe
from .probes import lag_probe, replicas_probe
from .report import log
from .status import status_brief, try_status, wait_role
from .throughput import throughput_compare, wait_drained


def start_pair(
    a: argparse.Namespace, bbd: str, started: list[StartedDaemon], extra: list[str] | None = None
) -> tuple[StartedDaemon, StartedDaemon, float]:
    p1, p2 = free_ports(2)
    args = a.daemon_arg + (extra or [])
    n1 = StartedDaemon(bbd, a.shards, args, host_id="node1", port=p1, peers=f"node2@127.0.0.1:{p2}")
    started.append(n1)
    n1.wait_ready()
    n2 = StartedDaemon(bbd, a.shards, args, host_id="node2", port=p2, peers=f"node1@127.0.0.1:{p1}")
    started.append(n2)
    n2.wait_ready()
    wait_role(n1.sock, "PRIMARY", 30)
    t = time.monotonic()
    wait_role(n2.sock, "SECONDARY", 60)
    return n1, n2, round((time.monotonic() - t) * 1000, 1)


def cluster_round(a: argparse.Namespace, rnd: int, last: bool, ctx: SpawnContext) -> dict:
    row: dict = {"round": rnd + 1}
    started: list[StartedDaemon] = []
    names: dict[int, str] = {}
    try:
        pids: dict[str, int | None] = {}
        if a.primary:
            prim, sec, prim_pid = a.primary, a.secondary, a.primary_pid
            pids["primary"] = prim_pid
        else:
            bbd = find_bbd(a.bbd)
            n1, n2, join_ms = start_pair(a, bbd, started)
            names.update({id(n1): "node1", id(n2): "node2"})
            prim, sec, prim_pid = n1.sock, n2.sock, n1.proc.pid
            pids.update(primary=n1.proc.pid, secondary=n2.proc.pid)
            row["secondary_join_ms"] = join_ms
            row["argv"] = {"node1": n1.argv, "node2": n2.argv}
            log(
                f"round {rnd + 1}: pair up (node1 pid {n1.proc.pid} PRIMARY, node2 pid {n2.proc.pid} "
                f"SECONDARY {join_ms} ms after)"
            )
        sp, ss = try_status(prim), try_status(sec)
        row["primary"], row["secondary"] = status_brief(sp), status_brief(ss)
        if not sp or sp.get("role") != "PRIMARY" or not ss or ss.get("role") != "SECONDARY":
            raise RuntimeError(f"not a PRIMARY/SECONDARY pair: {status_brief(sp)} / {status_brief(ss)}")
        if "lag" in a.parts:
            lag = lag_probe(a, prim, sec)
            row["lag"] = lag
            L = lag["lag_from_ack_us"]
            log(
                f"  lag from ack: p50 {L['p50']:.0f} p99 {L['p99']:.0f} max {L['max']:.0f} µs over {lag['measured']} "
                f"writes (poll RTT p50 {lag['poll_rtt_us']['p50']:.0f} µs, write p50 "
                f"{lag['write_latency_us']['p50']:.0f} µs, missed {lag['missed']})"
            )
        if "throughput" in a.parts:
            if a.single:
                single = a.single
            else:
                sd = StartedDaemon(find_bbd(a.bbd), a.shards, a.daemon_arg, host_id="node1")
                started.append(sd)
                names[id(sd)] = "single"
                sd.wait_ready()
                single = sd.sock
                pids["single"] = sd.proc.pid
            row["throughput"] = throughput_compare(a, prim, sec, single, rnd, ctx, pids)
            if not a.single:
                rc = sd.stop()
                row.setdefault("exit_codes", {})["single"] = rc
        if "replicas" in a.parts:
            row["replicas"] = rp = replicas_probe(a, prim, sec)
            log(
                f"  replicas: plain p50 {rp['plain_us']['p50']:.0f} p99 {rp['plain_us']['p99']:.0f} µs; "
                f"BigBunny-Replicas: 1 p50 {rp['replicas_us']['p50']:.0f} p99 {rp['replicas_us']['p99']:.0f} µs; "
                f"not on the secondary {rp['not_visible']}, NotReplicated {rp['not_replicated']}, "
                f"errors {rp['errors']}"
            )
        if "gate" in a.parts:
            g1, g2, _ = start_pair(a, find_bbd(a.bbd), started, a.gate_arg)
            names.update({id(g1): "gate-node1", id(g2): "gate-node2"})
            gpids = {"primary": g1.proc.pid, "secondary": g2.proc.pid, "single": pids.get("primary")}
            row["gate_arg"] = a.gate_arg
            row["gate"] = throughput_compare(a, g1.sock, g2.sock, prim, rnd, ctx, gpids, base_sec=sec)
            for d in (g2, g1):
                row.setdefault("exit_codes", {})[names[id(d)]] = d.stop()
        if "failover" in a.parts:
            if prim_pid is None:
                row["failover"] = {"skipped": "existing pair without --primary-pid"}
            elif a.primary and not last:
                row["failover"] = {"skipped": "existing pair: failover only in the last round"}
            else:
                drained = wait_drained(prim, sec, a.drain_timeout)
                fo = failover_probe(a, prim, sec, prim_pid)
                fo["drained_before"] = drained["drained"]
                row["failover"] = fo
                lost = fo["lost"]
                log(
                    f"  failover: first error {fo['first_error_ms']} ms, first success "
                    f"{fo['kill_to_first_success_ms']} ms "
                    f"after the kill (unavailable {fo['unavailable_ms']} ms from first error); new primary "
                    f"{status_brief(fo['new_primary'])}; lost acked: replicated {lost['replicated']}/"
                    f"{fo['checked']['replicated']}, last {fo['last_window_ms']} ms {lost['last_window']}/"
                    f"{fo['checked']['last_window']}, other {lost['unconfirmed']}/{fo['checked']['unconfirmed']}, "
                    f"after kill {lost['after_kill']}/{fo['checked']['after_kill']}"
                )
    except (RuntimeError, OSError, ValueError, queue.Empty) as e:
        row["error"] = f"{type(e).__name__}: {e}"
        log(f"round {rnd + 1}: {row['error']}")
    finally:
        for d in reversed(started):
            rc = d.stop()
            d.sweep()
            name = names.get(id(d), d.host_id or "node")
            row.setdefault("exit_codes", {}).setdefault(name, rc)
            row.setdefault("logs", {})[name] = scan_log(d.log_path)
            row["logs"][name]["path"] = d.log_path
        odd = False
        for name, rc in row.get("exit_codes", {}).items():
            killed = name == "node1" and "failover" in row and "killed_pids" in row["failover"]
            if not killed and rc != 0:
                odd = True
                log(f"round {rnd + 1}: {name} exit status {rc} (expected 0)")
        row["daemons_ok"] = not odd
        for d in started:
            if a.keep_logs or odd or "error" in row:
                row["logs_kept"] = True
            else:
                d.cleanup()
        if row.get("logs_kept"):
            log(f"round {rnd + 1}: daemon logs kept: " + ", ".join(sorted({d.log_path for d in started})))
    return row


def source_fingerprint() -> str | None:
    """Short SHA-256 over the daemon's Python sources of this checkout (the tree may change between runs)."""
    h = hashlib.sha256()
    n = 0
    for pkg in ("bigbunny", "supervisor", "shards"):
        for dirpath, dirnames, files in sorted(os.walk(os.path.join(REPO, pkg))):
            dirnames.sort()
            for f in sorted(files):
                if f.endswith(".py"):
                    try:
                        with open(os.path.join(dirpath, f), "rb") as fh:
                            h.update(f.encode() + b"\0" + fh.read())
                        n += 1
                    except OSError:
                        pass
    return h.hexdigest()[:12] if n else None
