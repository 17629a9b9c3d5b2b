"""Cluster results: targets, the median-of-rounds summary, which rounds failed, and the text report."""

from __future__ import annotations

TARGET_GATE_RATIO = 0.98
TARGET_LAG_P99_US = 2000.0
TARGET_UNAVAILABLE_S = 4.0
TARGET_TP_RATIO = 0.9


def med(xs: list) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def per_op(side: dict, node: str) -> float | None:
    cpu, ops = side["cpu_share"].get(node), side["ops_per_s"]
    return round(cpu / ops * 1e6, 1) if cpu is not None and ops else None


def tp_summary(rows: list[dict], part: str, target: float) -> list[dict]:
    """Median over rounds of each (workload, conns) cell of a pair-vs-baseline part (throughput, gate)."""
    cells: dict[tuple, list] = {}
    for r in rows:
        for c in r.get(part, []):
            cells.setdefault((c["workload"], c["conns"]), []).append(c)
    tp: list[dict] = []
    for (wl, c), xs in cells.items():
        tp.append(
            {
                "workload": wl,
                "conns": c,
                "rounds": len(xs),
                "pair_ops_per_s": med([x["pair"]["ops_per_s"] for x in xs]),
                "single_ops_per_s": med([x["single"]["ops_per_s"] for x in xs]),
                "pair_p99_us": med([x["pair"]["latency_us"]["p99"] for x in xs]),
                "single_p99_us": med([x["single"]["latency_us"]["p99"] for x in xs]),
                "ratio": med([x["ratio"] for x in xs]),
                "ratios": [x["ratio"] for x in xs],
                "drain_s": med([x["replication"]["drain_s"] for x in xs]),
                "replication_dropped": sum(x["replication"].get("replication_dropped", 0) for x in xs),
                "errors": sum(x["pair"]["errors"] + x["single"]["errors"] for x in xs),
                # the primary's (or the single node's) CPU µs per request: steadier than ops/s on a busy machine
                "pair_cpu_us_per_op": med([per_op(x["pair"], "primary") for x in xs]),
                "single_cpu_us_per_op": med([per_op(x["single"], "single") for x in xs]),
                "cpu_share": {
                    "primary": med([x["pair"]["cpu_share"].get("primary") for x in xs]),
                    "secondary": med([x["pair"]["cpu_share"].get("secondary") for x in xs]),
                    "single": med([x["single"]["cpu_share"].get("single") for x in xs]),
                },
            }
        )
        tp[-1]["target_met"] = tp[-1]["ratio"] is not None and tp[-1]["ratio"] >= target
    return tp


def summarize(rows: list[dict]) -> dict:
    summ: dict = {}
    lags = [r["lag"] for r in rows if "lag" in r]
    if lags:
        summ["lag"] = {
            "rounds": len(lags),
            "p50_us": med([x["lag_from_ack_us"]["p50"] for x in lags]),
            "p99_us": med([x["lag_from_ack_us"]["p99"] for x in lags]),
            "p99_us_worst": max(x["lag_from_ack_us"]["p99"] for x in lags),
            "max_us": max(x["lag_from_ack_us"]["max"] for x in lags),
            "poll_rtt_p50_us": med([x["poll_rtt_us"]["p50"] for x in lags]),
            "write_p50_us": med([x["write_latency_us"]["p50"] for x in lags]),
            "measured": sum(x["measured"] for x in lags),
            "missed": sum(x["missed"] for x in lags),
        }
        summ["lag"]["target_met"] = summ["lag"]["p99_us"] is not None and summ["lag"]["p99_us"] <= TARGET_LAG_P99_US
    tp = tp_summary(rows, "throughput", TARGET_TP_RATIO)
    if tp:
        summ["throughput"] = tp
    gate = tp_summary(rows, "gate", TARGET_GATE_RATIO)
    if gate:
        summ["gate"] = gate
    reps = [r["replicas"] for r in rows if "replicas" in r]
    if reps:
        summ["replicas"] = {
            "rounds": len(reps),
            **{
                f"{k}_{q}_us": med([x[f"{k}_us"][q] for x in reps])
                for k in ("plain", "replicas")
                for q in ("p50", "p99")
            },
            "writes": sum(x["replicas_us"]["n"] for x in reps),
            "not_visible": sum(x["not_visible"] for x in reps),
            "not_replicated": sum(x["not_replicated"] for x in reps),
            "errors": sum(x["errors"] for x in reps),
        }
    fos = [r["failover"] for r in rows if "failover" in r and "killed_pids" in r["failover"]]
    if fos:
        worst_k2s = max(
            (f["kill_to_first_success_ms"] for f in fos if f["kill_to_first_success_ms"] is not None), default=None
        )
        summ["failover"] = {
            "rounds": len(fos),
            "recovered": sum(1 for f in fos if f["recovered"]),
            "kill_to_first_success_ms": med([f["kill_to_first_success_ms"] for f in fos]),
            "kill_to_first_success_ms_worst": worst_k2s,
            "unavailable_ms": med([f["unavailable_ms"] for f in fos]),
            "unavailable_ms_worst": max(
                (f["unavailable_ms"] for f in fos if f["unavailable_ms"] is not None), default=None
            ),
            "first_error_ms": med([f["first_error_ms"] for f in fos]),
            "stable_after_ms": med([f["stable_after_ms"] for f in fos]),
            "acked_before_kill": sum(f["acked_before_kill"] for f in fos),
            "lost": {k: sum(f["lost"][k] for f in fos) for k in fos[0]["lost"]},
            "checked": {k: sum(f["checked"][k] for f in fos) for k in fos[0]["checked"]},
            "new_primary": [f["new_primary"] for f in fos],
            "lost_acked_before_kill": sum(f["lost_acked_before_kill"] for f in fos),
            "oldest_lost_ms_before_kill": max((f["oldest_lost_ms_before_kill"] or 0) for f in fos),
            "backlog_50ms_before_kill": [(f["primary_50ms_before_kill"] or {}).get("queue_length") for f in fos],
            "fence_visible_p50_us": med([f["fence_visible_us"]["p50"] for f in fos if f["fence_visible_us"]["n"]]),
        }
        F = summ["failover"]
        F["target_met"] = (
            F["recovered"] == len(fos)
            and worst_k2s is not None
            and worst_k2s <= TARGET_UNAVAILABLE_S * 1000
            and F["lost"]["replicated"] == 0
        )
    return summ


def round_failed(r: dict) -> bool:
    if "error" in r or not r.get("daemons_ok", True):
        return True
    lag = r.get("lag")
    if lag and (lag["missed"] or lag["errors"]):
        return True
    for c in r.get("throughput", []):
        if c["pair"]["errors"] or c["single"]["errors"] or not c["replication"]["drained"]:
            return True
    rp = r.get("replicas")
    if rp and (rp["errors"] or rp["not_visible"]):
        return True
    for c in r.get("gate", []):
        if c["pair"]["errors"] or c["single"]["errors"]:
            return True
    fo = r.get("failover")
    if fo and "killed_pids" in fo:
        # in_flight (sent before the kill, 200 after it) may be lost like the last window: not a failure
        if not fo["recovered"] or fo["lost"]["replicated"] or fo["lost"]["after_kill"]:
            return True
        if not fo["new_primary"] or fo["new_primary"].get("role") != "PRIMARY" or not fo["epoch_advanced"]:
            return True
    return False


def yes(b: bool | None) -> str:
    return "MET" if b else "NOT MET"


def print_cluster_report(rows: list[dict], summ: dict, generator: str) -> None:
    fps = sorted({str(r.get("source_sha256")) for r in rows})
    print(f"cluster bench: {len(rows)} round(s); daemon sources sha256 {', '.join(fps)}")
    if "lag" in summ:
        L = summ["lag"]
        print(
            f"\nReplication lag, primary ack -> visible on the secondary ({L['measured']} writes, "
            f"{L['missed']} missed):"
        )
        print(
            f"  {'round':>5} {'p50µs':>8} {'p90µs':>8} {'p99µs':>8} {'maxµs':>8} {'pollRTTµs':>10} {'writeµs':>8} "
            f"{'1st-poll':>8} {'missed':>6}"
        )
        for r in rows:
            if "lag" in r:
                x = r["lag"]
                L1 = x["lag_from_ack_us"]
                print(
                    f"  {r['round']:>5} {L1['p50']:>8.0f} {L1['p90']:>8.0f} {L1['p99']:>8.0f} {L1['max']:>8.0f} "
                    f"{x['poll_rtt_us']['p50']:>10.0f} {x['write_latency_us']['p50']:>8.0f} "
                    f"{x['seen_on_first_poll']:>8} {x['missed']:>6}"
                )
        print(
            f"  median p99 {L['p99_us']:.0f} µs (worst {L['p99_us_worst']:.0f}) vs target <= "
            f"{TARGET_LAG_P99_US:.0f} µs: "
            f"{yes(L['target_met'])}"
        )
    if "throughput" in summ:
        print(
            "\nWrite throughput, primary with a live secondary vs a single node (median of rounds; "
            f"load generator: {generator}):"
        )
        print(
            f"  {'workload':<8} {'C':>3} {'pair ops/s':>11} {'single ops/s':>12} {'ratio':>6} {'pair p99µs':>10} "
            f"{'single p99µs':>12} {'catch-up s':>10} {'dropped':>7} {'errors':>6} {'CPU prim/sec/single':>19}  "
            f"target >= {TARGET_TP_RATIO}"
        )

        def f2(x: float | None) -> str:
            return "?" if x is None else f"{x:.2f}"

        for c in summ["throughput"]:
            cpu = c["cpu_share"]
            print(
                f"  {c['workload']:<8} {c['conns']:>3} {c['pair_ops_per_s']:>11.0f} {c['single_ops_per_s']:>12.0f} "
                f"{c['ratio']:>6.2f} {c['pair_p99_us']:>10.0f} {c['single_p99_us']:>12.0f} {c['drain_s']:>10.2f} "
                f"{c['replication_dropped']:>7} {c['errors']:>6} "
                f"{f2(cpu['primary']) + '/' + f2(cpu['secondary']) + '/' + f2(cpu['single']):>19}  "
                f"{yes(c['target_met'])} (ratios {c['ratios']})"
            )
        print(
            "  (catch-up s = after the cell, until the secondary applied everything; CPU = cores used by each "
            "node's process tree during the cell)"
        )
    if "replicas" in summ:
        R = summ["replicas"]
        print(
            f"\nBigBunny-Replicas: 1 against plain updates on the same primary, one connection (median of "
            f"rounds, {R['writes']} replicated writes):"
        )
        print(
            f"  plain p50 {R['plain_p50_us']:.0f} µs p99 {R['plain_p99_us']:.0f} µs; BigBunny-Replicas: 1 p50 "
            f"{R['replicas_p50_us']:.0f} µs p99 {R['replicas_p99_us']:.0f} µs; not yet on the secondary after "
            f"the 200: {R['not_visible']} (must be 0); NotReplicated {R['not_replicated']}; errors {R['errors']}"
        )
    if "gate" in summ:
        print(
            "\nWrite throughput of a pair with " + " ".join(rows[0].get("gate_arg", [])) + " against one without "
            "(median of rounds):"
        )
        for c in summ["gate"]:
            print(
                f"  {c['workload']:<8} C={c['conns']:>3} with {c['pair_ops_per_s']:>7.0f} ops/s, without "
                f"{c['single_ops_per_s']:>7.0f} ops/s, ratio {c['ratio']:.3f} (ratios {c['ratios']}), p99 "
                f"{c['pair_p99_us']:.0f} / {c['single_p99_us']:.0f} µs, primary CPU {c['pair_cpu_us_per_op']} / "
                f"{c['single_cpu_us_per_op']} µs per request, errors {c['errors']}: "
                f"target >= {TARGET_GATE_RATIO} {yes(c['target_met'])}"
            )
    if "failover" in summ:
        F = summ["failover"]
        print(
            f"\nFailover (writes via the secondary, primary tree SIGKILLed), {F['recovered']}/{F['rounds']} recovered:"
        )
        print(
            f"  {'round':>5} {'1st err ms':>10} {'1st ok ms':>9} {'unavail ms':>10} {'stable ms':>9} {'flaps':>5} "
            f"{'acked<kill':>10} {'lost repl':>9} {'lost last':>9} {'lost other':>10} {'lost after':>10}  "
            "new primary"
        )
        for r in rows:
            fo = r.get("failover")
            if not fo or "killed_pids" not in fo:
                continue
            lost, chk, np_ = fo["lost"], fo["checked"], fo["new_primary"] or {}
            print(
                f"  {r['round']:>5} {fo['first_error_ms']!s:>10} {fo['kill_to_first_success_ms']!s:>9} "
                f"{fo['unavailable_ms']!s:>10} {fo['stable_after_ms']!s:>9} {fo['flaps']:>5} "
                f"{fo['acked_before_kill']:>10} "
                f"{lost['replicated']:>4}/{chk['replicated']:<4} {lost['last_window']:>4}/{chk['last_window']:<4} "
                f"{lost['unconfirmed']:>5}/{chk['unconfirmed']:<4} {lost['after_kill']:>5}/{chk['after_kill']:<4}  "
                f"{np_.get('host_id')} {np_.get('role')} epoch {np_.get('leader_epoch')} "
                f"stores {np_.get('store_count')}"
            )
            qk = (fo.get("primary_50ms_before_kill") or {}).get("queue_length")
            print(
                f"        replication backlog on the primary 50 ms before the kill: {qk} records; "
                "fence visible on the "
                f"secondary p50 {fo['fence_visible_us']['p50']:.0f} µs max {fo['fence_visible_us']['max']:.0f} µs "
                f"({fo['fences_confirmed']} fences); lost acked-before-kill {fo['lost_acked_before_kill']}/"
                f"{fo['acked_before_kill']}, oldest {fo['oldest_lost_ms_before_kill']} ms before the kill, by age "
                f"{fo['lost_by_age_ms']}"
            )
            if fo["error_kinds_after_kill"]:
                kinds = fo["error_kinds_after_kill"].items()
                print("        errors after the kill: " + "; ".join(f"{k} x{v}" for k, v in kinds))
        print(
            f"  (ms after the kill; unavail = first error -> first success after it; lost X/Y = not readable on the "
            f"new primary / checked; 'last' = acked in the last "
            f"{rows[-1].get('failover', {}).get('last_window_ms', '?')} ms)"
        )
        print(
            f"  worst kill -> first success {F['kill_to_first_success_ms_worst']} ms vs target <= "
            f"{TARGET_UNAVAILABLE_S * 1000:.0f} ms, replicated writes lost {F['lost']['replicated']}: "
            f"{yes(F['target_met'])}"
        )
    for r in rows:
        for name, lg in sorted(r.get("logs", {}).items()):
            bad = [ln for ln in lg["lines"] if "WARNING" not in ln or "role " not in ln]
            if bad:
                print(f"\nround {r['round']} {name} log ({lg['counts']}):")
                for ln in bad[:15]:
                    print("    " + ln)
        if "error" in r:
            print(f"\nround {r['round']} ERROR: {r['error']}")
