"""The ``ops/bench`` command line: argument parsing, the single-node run and ``ops/bench cluster``."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from types import FrameType

from .cluster import cluster_round, source_fingerprint
from .cluster_report import print_cluster_report, round_failed, summarize
from .daemon import StartedDaemon, find_bbd
from .report import HEADER, log, table_row
from .runner import loop_name, pick_loop, prefill, run_workload
from .status import shard_restarts, sync_status
from .workloads import NEEDS_COUNTERS, NEEDS_STORES, WORKLOADS, ttl_header

USAGE = """Load generator for a running Big Bunny (bbd) node, over its Unix socket.

Closed loop: each of ``--conns`` HTTP/1.1 keep-alive connections sends its next request as soon as
the previous answer arrived. Connections are spread over ``--procs`` worker processes (spawned), each
running a minimal asyncio.Protocol client with pre-built request bytes; latency samples are merged at
the end. Every response is verified: a wrong status, header or body is an error (counted by kind and
never as a success). Connection and read timeouts bound everything, so a dead or hung daemon ends the
run with errors, never a hang.

Workloads (``--workload``, comma list, run one after another):
  create    POST /api/v1/create with a --size body; expects 200 + a store ID
  snapshot  snapshot of prefilled stores; expects 200 and a --size body
  update    update of prefilled stores with --size bytes; expects 200, empty body
  modify    begin-modify, then complete-modify with the returned BigBunny-Lock-ID (one op = 2 requests)
  incr      increment {"delta":1} on prefilled counters; the returned value must increase
  mixed     80% snapshot, 15% update, 5% create

Stores (``--stores``) and counters (``--counters``) are prefilled before the first workload that needs
them (not counted). Each connection works on its own slice of them (when there are at least as many as
connections), so the benchmark itself does not provoke 409 StoreLocked. Everything the bench creates
carries a TTL (``--ttl``, default 1 h), so pointing it at a real node leaves no permanent garbage.

Examples:
  ops/bench --uds /tmp/bbd.sock --workload snapshot,update --conns 16 --duration 5
  ops/bench --start-daemon --shards 2 --workload mixed --conns 64 --procs 2 --json
  ops/bench --workload incr --requests 100000 --conns 8
  ops/bench cluster --rounds 3 --json      # two-node pair: replication lag, throughput vs single, failover
                                           # (see `ops/bench cluster --help`)

Output: one row per workload (ops/s, latency p50/p90/p99/p99.9/max in µs, errors) or, with --json,
one JSON object per workload per line. Exit status: 0 all verified, 1 some op failed (or the started
daemon did not exit 0), 2 setup failure (daemon unreachable, prefill failed, bad arguments).

Rate limits apply: against a node with rate limiting on, 429s are counted as errors (run the node with
--rate-limit=0 to measure it). 429/503 answers (Retry-After) are errors and the connection keeps going.
Stdlib only; uses uvloop when importable unless --loop=asyncio: run it with the project's venv
(``.venv/bin/python ops/bench ...``) to get uvloop, which roughly halves the client's CPU per request.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--uds", default="/tmp/bbd.sock", help="bbd client socket (default /tmp/bbd.sock)")
    ap.add_argument(
        "--workload", default="snapshot", help="comma list of: " + ",".join(WORKLOADS) + " (default snapshot)"
    )
    ap.add_argument("--conns", type=int, default=16, help="concurrent connections (default 16)")
    ap.add_argument(
        "--procs",
        type=int,
        default=0,
        help="worker processes sharing the connections (default: min(conns, max(1, CPUs/2)))",
    )
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per workload (default 5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each workload (default 1)")
    ap.add_argument(
        "--requests", type=int, default=None, help="measure this many ops per workload instead of --duration"
    )
    ap.add_argument("--customers", type=int, default=16, help="customer IDs spread over requests (default 16)")
    ap.add_argument("--customer-prefix", default="bench", help="customer IDs are PREFIX-0..K-1 (default bench)")
    ap.add_argument("--size", type=int, default=1024, help="blob body bytes (default 1024; the server's cap is 2048)")
    ap.add_argument(
        "--stores", type=int, default=10000, help="stores prefilled for snapshot/update/modify/mixed (default 10000)"
    )
    ap.add_argument("--counters", type=int, default=1024, help="counters prefilled for incr (default 1024)")
    ap.add_argument(
        "--ttl",
        type=int,
        default=3600,
        help="TTL in s of every store the bench creates, so its data goes away (default 3600; 0: server default)",
    )
    ap.add_argument(
        "--timeout", type=float, default=5.0, help="connect/read timeout per request in seconds (default 5)"
    )
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop in workers: auto = uvloop if importable (default auto)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object per workload per line")
    ap.add_argument(
        "--start-daemon",
        action="store_true",
        help="start `bbd --dev --rate-limit=0 --shards N` on a temp socket, run, SIGTERM it, check exit 0",
    )
    ap.add_argument("--shards", type=int, default=2, help="with --start-daemon: shard count (default 2)")
    ap.add_argument(
        "--bbd",
        default=None,
        help="with --start-daemon: bbd executable (default: found next to python, in .venv or PATH)",
    )
    ap.add_argument(
        "--daemon-arg", action="append", default=[], help="with --start-daemon: extra bbd flag (repeatable)"
    )
    a = ap.parse_args(argv)
    a.workloads = [w.strip() for w in a.workload.split(",") if w.strip()]
    bad = [w for w in a.workloads if w not in WORKLOADS]
    if bad or not a.workloads:
        ap.error(f"unknown workload(s) {bad}; choose from {','.join(WORKLOADS)}")
    if a.conns < 1:
        ap.error("--conns must be >= 1")
    if a.procs <= 0:
        a.procs = min(a.conns, max(1, (os.cpu_count() or 2) // 2))
    a.procs = min(a.procs, a.conns)
    if a.duration <= 0 or a.warmup < 0 or a.timeout <= 0:
        ap.error("--duration and --timeout must be > 0, --warmup >= 0")
    if a.requests is not None and a.requests < 1:
        ap.error("--requests must be >= 1")
    if a.customers < 1 or a.size < 0:
        ap.error("--customers must be >= 1 and --size >= 0")
    if any(w in NEEDS_STORES for w in a.workloads) and a.stores < 1:
        ap.error("--stores must be >= 1 for " + ",".join(sorted(NEEDS_STORES)))
    if "incr" in a.workloads and a.counters < 1:
        ap.error("--counters must be >= 1 for incr")
    return a


def run(a: argparse.Namespace, started: list[StartedDaemon]) -> int:
    rc = 0
    if a.start_daemon:
        daemon = StartedDaemon(find_bbd(a.bbd), a.shards, a.daemon_arg)
        started.append(daemon)
        log(f"started {' '.join(daemon.argv)} (pid {daemon.proc.pid})")
        try:
            daemon.wait_ready()
        except RuntimeError as e:
            log(str(e))
            return 2
        a.uds = daemon.sock
    try:
        st = sync_status(a.uds, a.timeout)
    except (OSError, ValueError) as e:
        log(f"cannot reach bbd at {a.uds}: {e}")
        return 2
    restarts = shard_restarts(st)
    log(
        f"target {a.uds}: host {st.get('host_id')} role {st.get('role')}"
        + (f" shards {len(st['shards'])}" if isinstance(st.get("shards"), list) else "")
        + f"; conns {a.conns} procs {a.procs} size {a.size} loop {loop_name(a.loop)}"
    )
    cfg = {
        "uds": a.uds,
        "conns": a.conns,
        "procs": a.procs,
        "duration": a.duration,
        "warmup": a.warmup,
        "requests": a.requests,
        "size": a.size,
        "timeout": a.timeout,
        "seed": a.seed,
        "loop": a.loop,
        "customers_list": [f"{a.customer_prefix}-{k}" for k in range(a.customers)],
        "stores_list": [],
        "counters_list": [],
        "ttl_header": ttl_header(a.ttl),
    }
    loop_factory = pick_loop(a.loop)
    try:
        if any(w in NEEDS_STORES for w in a.workloads):
            t = time.monotonic()
            with asyncio.Runner(loop_factory=loop_factory) as r:
                cfg["stores_list"] = r.run(prefill(cfg, "stores", a.stores))
            log(f"prefilled {a.stores} stores of {a.size} B in {time.monotonic() - t:.2f} s")
        if any(w in NEEDS_COUNTERS for w in a.workloads):
            t = time.monotonic()
            with asyncio.Runner(loop_factory=loop_factory) as r:
                cfg["counters_list"] = r.run(prefill(cfg, "counters", a.counters))
            log(f"prefilled {a.counters} counters in {time.monotonic() - t:.2f} s")
    except RuntimeError as e:
        log(str(e))
        return 2
    if any(w in NEEDS_STORES for w in a.workloads) and a.stores < a.conns:
        log(f"warning: {a.stores} stores < {a.conns} conns: connections share stores, expect 409 StoreLocked")
    ctx = mp.get_context("spawn")
    if not a.json:
        print(HEADER, flush=True)
    for wl in a.workloads:
        try:
            res = run_workload(cfg, wl, ctx)
        except (RuntimeError, queue.Empty) as e:
            log(f"{wl}: {type(e).__name__}: {e}")
            return 2
        try:
            st2 = sync_status(a.uds, a.timeout)
            r2 = shard_restarts(st2)
            if restarts is not None and r2 is not None:
                res["shard_restarts"] = r2 - restarts
                if r2 > restarts:
                    log(f"warning: {r2 - restarts} shard restart(s) during {wl}")
                restarts = r2
        except (OSError, ValueError) as e:
            res["status_after"] = f"unreachable: {e}"
            log(f"warning: /status unreachable after {wl}: {e}")
        if res["errors"]:
            rc = 1
        if a.json:
            print(json.dumps(res, separators=(",", ":")), flush=True)
        else:
            print(table_row(res), flush=True)
            for kind, n in res["error_kinds"].items():
                print(f"    {n:>9} x {kind}", flush=True)
    return rc


CLUSTER_DOC = """Cluster mode: replication lag, write throughput with a live secondary, and failover of a two-node pair.

  ops/bench cluster [--bbd PATH] [--shards N] [--rounds R] [--json] ...
  ops/bench cluster --primary SOCK1 --secondary SOCK2 [--primary-pid PID] [--single SOCK] ...

Without --primary/--secondary, each round starts a fresh pair on temp sockets and free loopback ports:
  bbd --dev --rate-limit=0 --shards N --uds=S1 --tcp=127.0.0.1:P1 --host-id=node1 --peers=node2@127.0.0.1:P2
and the mirror for node2 (node1 becomes PRIMARY, node2 SECONDARY), plus, for the throughput baseline, a
single node started the same way without --peers. With --primary/--secondary it uses that pair; the
baseline is --single SOCK or a node it starts; failover needs --primary-pid (else it is skipped) and, as
it kills the primary, happens in the last round only.

Parts (--parts, default lag,throughput,failover; replicas and gate on request):
  lag         --lag-writes updates of one store on the primary, each with a unique value; right after
              the 200 the secondary is polled (snapshot, tight loop, one keep-alive connection) until it
              returns that value. Lag = ack → first poll answer carrying it (so it over-states the true
              lag by up to one poll round trip, reported as poll RTT). Not seen within --lag-wait = missed.
  throughput  closed-loop create and update (--tp-workloads) at each --tp-conns against the pair's primary
              (live secondary) and against the single node, alternated cell by cell; ratio = pair / single.
              After every pair cell the bench waits (bounded) until the primary's replication queue is
              empty and both nodes hold the same store count, and reports how long that took.
              --loadgen PATH drives these cells with the yardstick's compiled load generator instead
              of the built-in Python clients (on a small machine their CPU competes with both nodes).
  failover    --fo-conns closed-loop connections create stores via the SECONDARY (forwarded to the
              primary); after --fo-kill-after s the primary's whole process tree (supervisor + children,
              from /proc) is SIGKILLed. Measured: first failed write after the kill, the first success
              afterwards (unavailability = first error → that success; also kill → first success, and
              kill → the success after the last error), the secondary's new role/epoch. Every write acked
              before the kill is then read back on the new primary. "Replicated" writes are proven by a
              fence: every --fo-fence-every s a marker update goes to the primary and is polled on the
              secondary; once visible, every write acked before the marker was sent has been applied there
              (replication is applied in order). Lost writes are reported as replicated-and-lost (must be 0),
              acked in the last --fo-last-window s before the kill (async replication may lose them), and
              the rest; writes sent before the kill but answered after it count as "in flight". Writes
              acked after the kill (by the new primary) are read back as well and must all be there.

  replicas    --rep-blocks alternating blocks of --rep-block updates of one store on the primary over one
              keep-alive connection: plain, then with `BigBunny-Replicas: 1` (the order flips every block).
              Latency p50/p99 of each kind; every BigBunny-Replicas write is read back on the secondary
              right after its 200 (must show it) and must carry no NotReplicated warning.
  gate        closed-loop throughput (--tp-workloads x --tp-conns) of a pair started with --gate-arg
              (default --min-replicas-max-lag=1s) against this round's pair without it, alternated cell
              by cell; ratio = with / without (target: the check costs < 2 %, ratio >= 0.98).

Targets shown (not part of the exit status): lag p99 <= 2 ms; kill -> first success <= 4.0 s with 0
acknowledged-and-replicated writes lost; write throughput with a live secondary >= 0.9x single node.
Exit status: 0 all measured and verified, 1 a verification failed (errors, missed lag writes, lost writes
that must survive, no recovery, a started daemon that did not exit 0), 2 setup failure.
"""


CLUSTER_PARTS = ("lag", "throughput", "replicas", "gate", "failover")
DEFAULT_PARTS = ("lag", "throughput", "failover")


def parse_cluster_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench cluster", description=CLUSTER_DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--primary", help="existing pair: the primary's client socket")
    ap.add_argument("--secondary", help="existing pair: the secondary's client socket")
    ap.add_argument(
        "--primary-pid",
        type=int,
        default=None,
        help="existing pair: the primary's supervisor PID (enables failover: its tree is SIGKILLed)",
    )
    ap.add_argument("--single", help="existing single node for the throughput baseline (default: start one)")
    ap.add_argument("--bbd", default=None, help="bbd executable (default: found next to python, in .venv or PATH)")
    ap.add_argument("--shards", type=int, default=2, help="shards of every started node (default 2)")
    ap.add_argument("--daemon-arg", action="append", default=[], help="extra bbd flag for started nodes (repeatable)")
    ap.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help="comma list of lag,throughput,replicas,gate,failover (default lag,throughput,failover)",
    )
    ap.add_argument("--rep-blocks", type=int, default=20, help="replicas: alternating blocks (default 20)")
    ap.add_argument("--rep-block", type=int, default=50, help="replicas: updates per block (default 50)")
    ap.add_argument(
        "--gate-arg",
        action="append",
        default=None,
        help="gate: extra flag of the compared pair (repeatable; default --min-replicas-max-lag=1s)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="rounds (a fresh pair each when started; default 1)")
    ap.add_argument("--lag-writes", type=int, default=200, help="lag: updates measured (default 200)")
    ap.add_argument(
        "--lag-wait", type=float, default=2.0, help="lag: a write not visible after this many s is missed (default 2)"
    )
    ap.add_argument("--lag-pause", type=float, default=0.002, help="lag: pause between writes in s (default 0.002)")
    ap.add_argument(
        "--tp-workloads", default="create,update", help="throughput: comma list of create,update (default both)"
    )
    ap.add_argument("--tp-conns", default="16,64", help="throughput: comma list of connection counts (default 16,64)")
    ap.add_argument("--duration", type=float, default=3.0, help="throughput: measured s per cell (default 3)")
    ap.add_argument("--warmup", type=float, default=0.5, help="throughput: unmeasured s before each cell (default 0.5)")
    ap.add_argument("--procs", type=int, default=0, help="throughput: client processes (default max(1, CPUs/2))")
    ap.add_argument(
        "--loadgen",
        default=None,
        help="throughput: drive the cells with this compiled load generator (the yardstick's "
        "`loadgen`, e.g. ../shared/bench/bin/loadgen) instead of the built-in Python clients",
    )
    ap.add_argument("--stores", type=int, default=2000, help="throughput: stores prefilled for update (default 2000)")
    ap.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="wait at most this long for the secondary to catch up after a cell (default 60)",
    )
    ap.add_argument("--fo-conns", type=int, default=4, help="failover: writing connections (default 4)")
    ap.add_argument(
        "--fo-kill-after", type=float, default=2.0, help="failover: kill the primary after this many s (default 2)"
    )
    ap.add_argument(
        "--fo-bound", type=float, default=30.0, help="failover: give up this many s after the kill (default 30)"
    )
    ap.add_argument(
        "--fo-settle",
        type=float,
        default=1.0,
        help="failover: stop after this long of success after recovery (default 1)",
    )
    ap.add_argument("--fo-timeout", type=float, default=1.0, help="failover: per-request timeout in s (default 1)")
    ap.add_argument(
        "--fo-fence-every", type=float, default=0.05, help="failover: replication fence period in s (default 0.05)"
    )
    ap.add_argument(
        "--fo-last-window",
        type=float,
        default=0.1,
        help="failover: writes acked this close to the kill are reported apart (default 0.1 s)",
    )
    ap.add_argument("--fo-size", type=int, default=256, help="failover: body bytes of each create (default 256)")
    ap.add_argument("--verify-timeout", type=float, default=60.0, help="failover: read-back bound in s (default 60)")
    ap.add_argument("--size", type=int, default=1024, help="lag and throughput body bytes (default 1024)")
    ap.add_argument("--customers", type=int, default=16, help="throughput: customer IDs (default 16)")
    ap.add_argument("--customer-prefix", default="bench", help="customer ID prefix (default bench)")
    ap.add_argument(
        "--ttl", type=int, default=3600, help="TTL in s of every store created (default 3600; 0: server default)"
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="connect/read timeout per request in s (default 5)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument(
        "--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="client event loop (default auto)"
    )
    ap.add_argument("--keep-logs", action="store_true", help="keep started daemons' temp dirs and logs")
    ap.add_argument("--json", action="store_true", help="print one JSON document (rounds + summary)")
    a = ap.parse_args(argv)
    a.parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    a.gate_arg = a.gate_arg or ["--min-replicas-max-lag=1s"]
    if "gate" in a.parts and a.primary:
        ap.error("--parts gate starts its own pairs: not with --primary/--secondary")
    if not a.parts or any(p not in CLUSTER_PARTS for p in a.parts):
        ap.error(f"--parts: choose from {','.join(CLUSTER_PARTS)}")
    if bool(a.primary) != bool(a.secondary):
        ap.error("--primary and --secondary go together")
    if a.primary_pid is not None and not a.primary:
        ap.error("--primary-pid needs --primary/--secondary")
    a.tp_workloads = [w.strip() for w in a.tp_workloads.split(",") if w.strip()]
    if not a.tp_workloads or any(w not in ("create", "update") for w in a.tp_workloads):
        ap.error("--tp-workloads: choose from create,update")
    try:
        a.tp_conns = [int(c) for c in a.tp_conns.split(",") if c.strip()]
    except ValueError:
        ap.error("--tp-conns: comma list of integers")
    if not a.tp_conns or min(a.tp_conns) < 1:
        ap.error("--tp-conns must be >= 1")
    if a.procs <= 0:
        a.procs = max(1, (os.cpu_count() or 2) // 2)
    if a.loadgen and not (os.path.isfile(a.loadgen) and os.access(a.loadgen, os.X_OK)):
        ap.error(f"--loadgen: not an executable file: {a.loadgen}")
    if a.rounds < 1 or a.lag_writes < 1 or a.fo_conns < 1 or a.stores < max(a.tp_conns):
        ap.error("--rounds, --lag-writes, --fo-conns must be >= 1 and --stores >= the largest --tp-conns")
    if min(a.duration, a.timeout, a.fo_timeout, a.lag_wait, a.fo_bound) <= 0 or a.warmup < 0:
        ap.error("durations and timeouts must be > 0")
    if a.size < 12 or a.size > 2048:
        ap.error("--size must be 12..2048 (the first 12 bytes carry a sequence number)")
    return a


def cluster_main(argv: list[str]) -> int:
    a = parse_cluster_args(argv)
    ctx = mp.get_context("spawn")
    rows: list[dict] = []
    t0 = time.monotonic()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        for rnd in range(a.rounds):
            fp = source_fingerprint()
            rows.append(cluster_round(a, rnd, rnd == a.rounds - 1, ctx))
            rows[-1]["source_sha256"] = fp
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    summ = summarize(rows)
    generator = a.loadgen or "built-in (Python)"
    doc = {
        "mode": "cluster",
        "started_at": started_at,
        "parts": a.parts,
        "shards": a.shards,
        "loop": loop_name(a.loop),
        "throughput_load_generator": generator,
        "existing_pair": bool(a.primary),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "summary": summ,
        "rounds": rows,
    }
    if a.json:
        print(json.dumps(doc, separators=(",", ":")), flush=True)
    else:
        print_cluster_report(rows, summ, generator)
    if any("error" in r for r in rows) and not any(k in r for r in rows for k in CLUSTER_PARTS):
        return 2
    return 1 if any(round_failed(r) for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def on_term(signum: int, frame: FrameType | None) -> None:
        # SIGTERM: unwind like Ctrl-C so a started daemon is stopped
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if argv and argv[0] == "cluster":
        return cluster_main(argv[1:])
    a = parse_args(argv)
    started: list[StartedDaemon] = []
    try:
        rc = run(a, started)
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        for daemon in started:
            drc = daemon.stop()
            if drc == 0:
                log("daemon exited 0")
                daemon.cleanup()
            else:
                log(f"daemon exit status {drc} (expected 0); log kept in {daemon.log_path}:\n{daemon.log_tail()}")
    if started and started[0].proc.returncode != 0 and rc == 0:
        rc = 1
    return rc
