"""Cluster failover part: writes through the secondary while the primary's process tree is SIGKILLed, the
replication fence, and the read-back of every acknowledged write on the new primary."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import NamedTuple

from .http1 import Conn, ConnClosed, ProtocolError, SyncConn, build_req, connect, exc_kind, now_ns, qid, status_kind
from .probes import probe_store
from .proctree import kill_tree, process_tree
from .report import log
from .runner import lat_stats, pick_loop
from .status import status_brief, try_status, wait_role
from .workloads import blob, ttl_header


class WriteRec(NamedTuple):
    """One create sent through the secondary during the failover run (times from ``now_ns``)."""

    sent: int
    answered: int
    error: str | None  # None: 200 with a store ID
    customer: str
    store_id: str | None


async def failover_run(a: argparse.Namespace, prim: str, sec: str, prim_pid: int) -> dict:
    loop = asyncio.get_running_loop()
    timeout = a.fo_timeout
    ttl = ttl_header(a.ttl)
    body = blob(a.fo_size, 11)
    # the fence store: created on the primary, visible on the secondary before writes start
    fcust = f"{a.customer_prefix}-fence"
    cp = await connect(loop, prim, a.timeout)
    cs = await connect(loop, sec, a.timeout)
    st, hd, rb, _ = await asyncio.wait_for(cp.request(build_req("/api/v1/create", fcust, b"%012d" % 0, ttl)), a.timeout)
    fsnap, fupd = probe_store("failover: fence create failed: ", fcust, st, hd, rb)
    t = time.monotonic()
    while True:
        st, hd, rb, _ = await asyncio.wait_for(cs.request(fsnap), a.timeout)
        if st == 200 and rb[:12] == b"%012d" % 0:
            break
        if time.monotonic() - t > 10:
            raise RuntimeError("failover: the fence store never reached the secondary")
        await asyncio.sleep(0.001)

    recs: list[WriteRec] = []
    t_start = now_ns()
    hard_end = t_start + int((a.fo_kill_after + a.fo_bound) * 1e9)
    state = {"kill": 0, "stop": False, "confirmed": 0, "fences": 0, "fence_fail": 0}
    fence_lag: list[int] = []

    async def writer(k: int) -> None:
        cust = f"{a.customer_prefix}-fo-{k}"
        req = build_req("/api/v1/create", cust, body, ttl)
        conn: Conn | None = None
        while not state["stop"] and now_ns() < hard_end:
            t0 = now_ns()
            if conn is None or conn.closed:
                try:
                    conn = await connect(loop, sec, timeout)
                except (OSError, TimeoutError) as e:
                    recs.append(WriteRec(t0, now_ns(), "connect: " + exc_kind(e), cust, None))
                    await asyncio.sleep(0.002)
                    continue
            err: str | None = None
            sid = None
            try:
                st, hd, rb, _ = await asyncio.wait_for(conn.request(req), timeout)
                if st != 200:
                    err = status_kind(st, hd, rb)
                elif not rb.startswith(b"v1:"):
                    err = "bad store ID in body"
                else:
                    sid = rb.decode()
            except (OSError, TimeoutError, ConnClosed, ProtocolError) as e:
                err = f"timeout (no answer in {timeout:g} s)" if isinstance(e, TimeoutError) else exc_kind(e)
                conn.abort()
            recs.append(WriteRec(t0, now_ns(), err, cust, sid))
            if err is not None:
                await asyncio.sleep(0.002)
        if conn is not None:
            conn.abort()

    async def fencer() -> None:
        seq = 0
        while not state["kill"] and not state["stop"]:
            seq += 1
            stamp = b"%012d" % seq
            tf = now_ns()
            try:
                st, hd, rb, _ = await asyncio.wait_for(cp.request(build_req(fupd, fcust, stamp)), timeout)
            except (OSError, TimeoutError, ConnClosed, ProtocolError):
                return  # the primary is gone
            if st != 200 or state["kill"]:
                state["fence_fail"] += st != 200
                return
            ta = now_ns()
            while now_ns() - ta < 1e9:
                try:
                    st, hd, rb, _ = await asyncio.wait_for(cs.request(fsnap), timeout)
                except (OSError, TimeoutError, ConnClosed, ProtocolError):
                    return
                if st == 200 and rb[:12] == stamp:
                    state["confirmed"] = tf  # every write acked before tf is applied on the secondary
                    state["fences"] += 1
                    fence_lag.append(now_ns() - ta)
                    break
                await asyncio.sleep(0.001)  # light polling: the secondary is busy relaying and applying
            await asyncio.sleep(a.fo_fence_every)

    tasks = [asyncio.ensure_future(writer(k)) for k in range(a.fo_conns)]
    ftask = asyncio.ensure_future(fencer())
    sec_before = try_status(sec)
    prim_before = try_status(prim)
    await asyncio.sleep(max(0.0, a.fo_kill_after - 0.05 - (now_ns() - t_start) / 1e9))
    prim_at_kill = await loop.run_in_executor(None, try_status, prim, 1.0)
    sec_at_kill = await loop.run_in_executor(None, try_status, sec, 1.0)
    await asyncio.sleep(max(0.0, a.fo_kill_after - (now_ns() - t_start) / 1e9))
    tree = process_tree(prim_pid)
    t_kill = now_ns()
    killed = kill_tree(tree)
    state["kill"] = t_kill
    log(f"failover: SIGKILLed the primary's tree {sorted(killed)} at {(t_kill - t_start) / 1e9:.2f} s")
    recovered_at = None
    settle_ns = int(a.fo_settle * 1e9)
    while now_ns() < hard_end:
        await asyncio.sleep(0.05)
        last_err = max((r.answered for r in recs if r.error is not None and r.answered >= t_kill), default=t_kill)
        ok_after = [r.answered for r in recs if r.error is None and r.sent >= last_err]
        if ok_after:
            recovered_at = min(ok_after)
            if now_ns() - recovered_at >= settle_ns:
                break
    state["stop"] = True
    await asyncio.gather(*tasks, return_exceptions=True)
    ftask.cancel()
    await asyncio.gather(ftask, return_exceptions=True)
    cp.abort()
    cs.abort()
    return {
        "recs": recs,
        "t_start": t_start,
        "t_kill": t_kill,
        "killed": sorted(killed),
        "tree": sorted(tree),
        "confirmed": state["confirmed"],
        "fences": state["fences"],
        "fence_lag": fence_lag,
        "sec_before": sec_before,
        "prim_before": prim_before,
        "prim_at_kill": prim_at_kill,
        "sec_at_kill": sec_at_kill,
    }


def failover_probe(a: argparse.Namespace, prim: str, sec: str, prim_pid: int) -> dict:
    with asyncio.Runner(loop_factory=pick_loop(a.loop)) as r:
        raw = r.run(failover_run(a, prim, sec, prim_pid))
    recs, t_kill, t_start = raw["recs"], raw["t_kill"], raw["t_start"]

    def ms(t: int | None) -> float | None:
        return None if t is None else round((t - t_kill) / 1e6, 1)

    post = [r for r in recs if r.answered >= t_kill and not (r.error is None and r.answered < t_kill)]
    pre_ok = [r for r in recs if r.error is None and r.answered < t_kill]
    inflight_ok = [r for r in recs if r.error is None and r.sent < t_kill <= r.answered]
    after_ok = [r for r in recs if r.error is None and r.sent >= t_kill]
    post_errs = [r for r in recs if r.error is not None and r.answered >= t_kill]
    first_err = min((r.answered for r in post_errs), default=None)
    last_err = max((r.answered for r in post_errs), default=None)
    first_ok_after_kill = min((r.answered for r in after_ok), default=None)
    first_ok_after_err = (
        min((r.answered for r in after_ok if r.answered > first_err), default=None) if first_err is not None else None
    )
    stable = first_ok_after_kill
    if last_err is not None:
        stable = min((r.answered for r in after_ok if r.sent >= last_err), default=None)
    seq = sorted(post, key=lambda r: r.answered)
    flaps = sum(1 for x, y in zip(seq, seq[1:]) if x.error is not None and y.error is None)
    pre_errs = Counter(r.error for r in recs if r.error is not None and r.answered < t_kill)
    res: dict = {
        "killed_pids": raw["killed"],
        "kill_at_s": round((t_kill - t_start) / 1e9, 3),
        "conns": a.fo_conns,
        "acked_before_kill": len(pre_ok),
        "write_rate_before_kill": round(len(pre_ok) / max(1e-9, (t_kill - t_start) / 1e9), 1),
        "errors_before_kill": dict(pre_errs.most_common()),
        "first_error_ms": ms(first_err),
        "kill_to_first_success_ms": ms(first_ok_after_kill),
        "unavailable_ms": (
            round((first_ok_after_err - first_err) / 1e6, 1)
            if first_ok_after_err is not None and first_err is not None
            else None
        ),
        "stable_after_ms": ms(stable),
        "last_error_ms": ms(last_err),
        "recovered": first_ok_after_kill is not None,
        "flaps": flaps,
        "errors_after_kill": len(post_errs),
        "error_kinds_after_kill": dict(Counter(r.error for r in post_errs).most_common()),
        "acked_after_kill": len(after_ok),
        "acked_in_flight_at_kill": len(inflight_ok),
        "fences_confirmed": raw["fences"],
        "fence_visible_us": lat_stats(raw["fence_lag"]),
        "replication_confirmed_until_ms": ms(raw["confirmed"]) if raw["confirmed"] else None,
        "secondary_before": status_brief(raw["sec_before"]),
        "primary_before": status_brief(raw["prim_before"]),
        "primary_50ms_before_kill": status_brief(raw["prim_at_kill"]),
        "secondary_50ms_before_kill": status_brief(raw["sec_at_kill"]),
    }
    st: dict | None
    try:
        st = wait_role(sec, "PRIMARY", 10)
    except RuntimeError as e:
        log(f"failover: {e}")
        st = try_status(sec)
    res["new_primary"] = status_brief(st)
    before_epoch = (raw["sec_before"] or {}).get("leader_epoch")
    res["epoch_advanced"] = bool(st and before_epoch is not None and st.get("leader_epoch", 0) > before_epoch)
    # read back on the new primary
    window_ns = int(a.fo_last_window * 1e9)
    lost: Counter[str] = Counter()
    unverified: Counter[str] = Counter()
    checked: Counter[str] = Counter()
    lost_ages: list[float] = []
    if st is not None and st.get("role") == "PRIMARY":
        sc = SyncConn(sec, a.timeout)
        deadline = time.monotonic() + a.verify_timeout

        def check(r: WriteRec, cls: str) -> None:
            if time.monotonic() > deadline:
                unverified[cls] += 1
                return
            sid = r.store_id or ""  # an acknowledged create always carries its ID
            try:
                s2, hd, rb = sc.request(build_req(f"/api/v1/snapshot/{qid(sid)}", r.customer))
            except (OSError, ConnClosed, ProtocolError):
                unverified[cls] += 1
                return
            checked[cls] += 1
            if s2 == 404:
                lost[cls] += 1
                if cls != "after_kill" and cls != "in_flight":
                    lost_ages.append(round((t_kill - r.answered) / 1e6, 1))
            elif s2 != 200 or len(rb) != a.fo_size:
                unverified[cls] += 1

        for r in pre_ok:
            if raw["confirmed"] and r.answered < raw["confirmed"]:
                cls = "replicated"
            elif r.answered >= t_kill - window_ns:
                cls = "last_window"
            else:
                cls = "unconfirmed"
            check(r, cls)
        for r in inflight_ok:
            check(r, "in_flight")
        for r in after_ok:
            check(r, "after_kill")
        sc.close()
    else:
        for r in pre_ok:
            unverified["no new primary"] += 1
    classes = ("replicated", "unconfirmed", "last_window", "in_flight", "after_kill")
    res.update(
        {
            "last_window_ms": round(a.fo_last_window * 1000),
            "checked": {k: checked[k] for k in classes},
            "lost": {k: lost[k] for k in classes},
            "unverified": dict(unverified),
            "lost_acked_before_kill": sum(lost[k] for k in ("replicated", "unconfirmed", "last_window")),
            "oldest_lost_ms_before_kill": max(lost_ages) if lost_ages else None,
            "lost_by_age_ms": {
                "<100": sum(1 for x in lost_ages if x < 100),
                "100-500": sum(1 for x in lost_ages if 100 <= x < 500),
                "500-1000": sum(1 for x in lost_ages if 500 <= x < 1000),
                ">=1000": sum(1 for x in lost_ages if x >= 1000),
            },
        }
    )
    return res
