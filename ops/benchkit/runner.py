"""Running one workload: worker processes (spawned) with their asyncio clients, the prefill of stores and
counters, and the merged latency statistics."""

from __future__ import annotations

import asyncio
import math
import os
import queue
import signal
import time
from array import array
from collections import Counter
from collections.abc import Callable
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue

from .http1 import Conn, ConnClosed, ProtocolError, build_req, connect, now_ns, status_kind
from .workloads import REQS_PER_OP, blob, make_op

try:  # optional: roughly halves the client's CPU per request
    import uvloop
except ImportError:
    uvloop = None  # type: ignore[assignment]


MAX_TRANSPORT_FAILS = 3  # consecutive connection-level failures before a connection gives up


# --- one worker process -----------------------------------------------------------------------------
async def worker_async(cfg: dict, wl: str, gidxs: list[int], ready_q: Queue[int], go_q: Queue[int]) -> dict:
    loop = asyncio.get_running_loop()
    timeout = cfg["timeout"]
    errors: Counter = Counter()
    lat = array("q")
    ok = [0]
    conns: list[Conn | None] = []
    for _ in gidxs:
        try:
            conns.append(await connect(loop, cfg["uds"], timeout))
        except (TimeoutError, OSError) as e:
            errors[f"connect: {type(e).__name__}: {e}"] += 1
            conns.append(None)
    ready_q.put(os.getpid())
    t0 = await loop.run_in_executor(None, go_q.get, True, 120.0)  # blocking get off the loop
    t_measure = t0 + int(cfg["warmup"] * 1e9)
    t_end = t_measure + int(cfg["duration"] * 1e9) if cfg["requests"] is None else None
    live: list[Conn] = []

    async def watchdog() -> None:
        tick = min(0.1, timeout / 4)
        while True:
            await asyncio.sleep(tick)
            dl = now_ns() - int(timeout * 1e9)
            for c in live:
                c.expire(dl)

    async def run_conn(slot: int, gidx: int, quota: int | None) -> None:
        conn = conns[slot]
        if conn is None:
            return
        live.append(conn)
        op = make_op(wl, cfg, gidx)
        fails = 0
        append = lat.append
        while True:
            # wait until the start barrier (all processes connected)
            now = now_ns()
            if now < t0:
                await asyncio.sleep((t0 - now) / 1e9)
                continue
            break
        while True:
            start = now_ns()
            if t_end is not None and start >= t_end:
                break
            measuring = start >= t_measure
            if quota is not None and measuring and quota <= 0:
                break
            if conn.closed:
                live.remove(conn)
                try:
                    conn = await connect(loop, cfg["uds"], timeout)
                except (TimeoutError, OSError) as e:
                    if measuring:
                        errors[f"connect: {type(e).__name__}: {e}"] += 1
                    errors["connection abandoned (reconnect failed)"] += 1
                    return
                live.append(conn)
            try:
                err = await op(conn)
                fails = 0
            except TimeoutError:
                err = f"timeout (no answer in {timeout:g} s)"
                fails += 1
            except ConnClosed as e:
                err = str(e)
                fails += 1
            except ProtocolError as e:
                err = f"protocol error: {e}"
                fails += 1
            except OSError as e:
                err = f"{type(e).__name__}: {e}"
                fails += 1
            if fails:
                conn.abort()
            end = now_ns()
            if measuring and (t_end is None or end <= t_end):
                if quota is not None:
                    quota -= 1
                if err is None:
                    ok[0] += 1
                    append(end - start)
                else:
                    errors[err] += 1
            if fails >= MAX_TRANSPORT_FAILS:
                errors[f"connection abandoned after {fails} consecutive failures"] += 1
                break
        if conn in live:
            live.remove(conn)
        conn.abort()

    quotas: list[int | None]
    if cfg["requests"] is None:
        quotas = [None] * len(gidxs)
    else:
        total, nconn = cfg["requests"], cfg["conns"]
        quotas = [total // nconn + (1 if g < total % nconn else 0) for g in gidxs]
    wd = asyncio.ensure_future(watchdog())
    try:
        await asyncio.gather(*(run_conn(i, g, q) for i, (g, q) in enumerate(zip(gidxs, quotas))))
    finally:
        wd.cancel()
    for c in conns:
        if c is not None:
            c.abort()
    return {
        "ok": ok[0],
        "errors": dict(errors),
        "lat": lat.tobytes(),
        "t_measure": t_measure,
        "t_last": now_ns(),
    }


def worker_main(
    cfg: dict, wl: str, gidxs: list[int], ready_q: Queue[int], go_q: Queue[int], result_q: Queue[dict]
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates us
    try:
        new_loop = pick_loop(cfg["loop"])
        with asyncio.Runner(loop_factory=new_loop) as runner:
            res = runner.run(worker_async(cfg, wl, gidxs, ready_q, go_q))
    except BaseException as e:  # report, never hang the parent
        res = {"fatal": f"{type(e).__name__}: {e}"}
    result_q.put(res)


def loop_name(choice: str) -> str:
    return "uvloop" if pick_loop(choice) is not asyncio.new_event_loop else "asyncio"


def pick_loop(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if choice in ("auto", "uvloop"):
        if uvloop is not None:
            return uvloop.new_event_loop
        if choice == "uvloop":
            raise ImportError("No module named 'uvloop'")
    return asyncio.new_event_loop


# --- prefill (in the main process) ------------------------------------------------------------------
async def prefill(cfg: dict, kind: str, count: int) -> list[tuple[str, str]]:
    """Create `count` blob stores (kind='stores') or counters at value 0; returns [(customer, id)]."""
    loop = asyncio.get_running_loop()
    customers = cfg["customers_list"]
    body = blob(cfg["size"], 0) if kind == "stores" else b'{"type":"counter","value":0}'
    reqs = [build_req("/api/v1/create", c, body, cfg["ttl_header"]) for c in customers]
    out: list[tuple[str, str] | None] = [None] * count
    errors: Counter = Counter()
    nxt = [0]
    timeout = cfg["timeout"]

    async def one() -> None:
        conn = await connect(loop, cfg["uds"], timeout)
        try:
            while nxt[0] < count and not errors:
                i = nxt[0]
                nxt[0] += 1
                c = customers[i % len(customers)]
                if conn.closed:
                    conn = await connect(loop, cfg["uds"], timeout)
                st, hd, rb, _ = await asyncio.wait_for(conn.request(reqs[i % len(reqs)]), timeout)
                if st != 200 or not rb.startswith(b"v1:"):
                    errors[status_kind(st, hd, rb)] += 1
                    return
                out[i] = (c, rb.decode())
        finally:
            conn.abort()

    try:
        await asyncio.gather(*(one() for _ in range(max(1, min(16, cfg["conns"], count)))))
    except (TimeoutError, OSError, ConnClosed, ProtocolError) as e:
        errors[f"{type(e).__name__}: {e}"] += 1
    if errors:
        raise RuntimeError(f"prefill of {kind} failed: " + "; ".join(f"{k} x{v}" for k, v in errors.items()))
    return out  # type: ignore[return-value]


# --- one workload over P processes ------------------------------------------------------------------
def percentile(sorted_us: list[float], p: float) -> float:
    if not sorted_us:
        return 0.0
    k = max(0, math.ceil(p / 100 * len(sorted_us)) - 1)
    return sorted_us[k]


def run_workload(cfg: dict, wl: str, ctx: SpawnContext) -> dict:
    conns, procs = cfg["conns"], cfg["procs"]
    groups = [list(range(p, conns, procs)) for p in range(procs)]
    ready_q, go_q, result_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    workers = [ctx.Process(target=worker_main, args=(cfg, wl, g, ready_q, go_q, result_q), daemon=True) for g in groups]
    results: list[dict] = []
    try:
        for w in workers:
            w.start()
        for _ in workers:
            ready_q.get(timeout=60 + cfg["timeout"] * max(len(g) for g in groups))
        t0 = now_ns() + 20_000_000
        for _ in workers:
            go_q.put(t0)
        if cfg["requests"] is None:
            slack = cfg["timeout"] * (MAX_TRANSPORT_FAILS + 1) + 30
            deadline = time.monotonic() + cfg["warmup"] + cfg["duration"] + slack
        else:
            deadline = None
        while len(results) < len(workers):
            try:
                results.append(result_q.get(timeout=0.5))
                continue
            except queue.Empty:
                pass
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError("workers did not finish in time")
            dead = [w for w in workers if not w.is_alive() and w.exitcode not in (0, None)]
            if dead:
                raise RuntimeError(f"worker process died (exit code {dead[0].exitcode})")
        for w in workers:
            w.join(10)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join(5)
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        raise RuntimeError("worker failed: " + fatal[0])
    errors: Counter = Counter()
    lat = array("q")
    ok = 0
    for r in results:
        ok += r["ok"]
        errors.update(r["errors"])
        a = array("q")
        a.frombytes(r["lat"])
        lat.extend(a)
    if cfg["requests"] is None:
        # the planned window, or less if every connection gave up early (dead daemon)
        ran = (max(r["t_last"] for r in results) - min(r["t_measure"] for r in results)) / 1e9
        elapsed = max(1e-9, min(cfg["duration"], ran))
    else:
        elapsed = max(1e-9, (max(r["t_last"] for r in results) - min(r["t_measure"] for r in results)) / 1e9)
    us = sorted(x / 1000 for x in lat)
    nerr = sum(errors.values())
    return {
        "workload": wl,
        "ops": ok,
        "errors": nerr,
        "error_kinds": dict(errors.most_common()),
        "ops_per_s": round(ok / elapsed, 1),
        "requests_per_op": REQS_PER_OP.get(wl, 1),
        "duration_s": round(elapsed, 3),
        "conns": conns,
        "procs": procs,
        "size": cfg["size"],
        "customers": len(cfg["customers_list"]),
        "loop": loop_name(cfg["loop"]),
        "latency_us": {
            "p50": round(percentile(us, 50), 1),
            "p90": round(percentile(us, 90), 1),
            "p99": round(percentile(us, 99), 1),
            "p99.9": round(percentile(us, 99.9), 1),
            "max": round(us[-1], 1) if us else 0.0,
            "mean": round(sum(us) / len(us), 1) if us else 0.0,
        },
    }


def lat_stats(ns: list[int]) -> dict:
    us = sorted(x / 1000 for x in ns)
    return {
        "n": len(us),
        "p50": round(percentile(us, 50), 1),
        "p90": round(percentile(us, 90), 1),
        "p99": round(percentile(us, 99), 1),
        "max": round(us[-1], 1) if us else 0.0,
        "mean": round(sum(us) / len(us), 1) if us else 0.0,
    }
