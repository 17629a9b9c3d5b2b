"""Cluster parts over one keep-alive connection per node: replication lag (``lag``) and
``BigBunny-Replicas: 1`` against plain writes (``replicas``)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import NamedTuple

from .http1 import ConnClosed, ProtocolError, SyncConn, build_req, exc_kind, now_ns, qid, status_kind
from .runner import lat_stats
from .workloads import blob, ttl_header


class ProbeStore(NamedTuple):
    """A store a probe writes on the primary and reads on the secondary."""

    snapshot: bytes  # the complete snapshot request
    update_path: str


def probe_store(failed: str, cust: str, st: int, hd: dict[bytes, bytes], rb: bytes) -> ProbeStore:
    """The probe store from the primary's answer to its create; RuntimeError ``failed`` + why if it failed."""
    if st != 200 or not rb.startswith(b"v1:"):
        raise RuntimeError(failed + status_kind(st, hd, rb))
    sid = qid(rb.decode())
    return ProbeStore(build_req(f"/api/v1/snapshot/{sid}", cust), f"/api/v1/update/{sid}")


class Ack(NamedTuple):
    sent: int  # now_ns() before the request
    answered: int  # now_ns() after the 200
    headers: dict[bytes, bytes]


def timed_write(cp: SyncConn, req: bytes, errors: Counter[str]) -> Ack | None:
    """One write on the primary; its Ack if answered 200, else None with the error counted in ``errors``."""
    t0 = now_ns()
    try:
        st, hd, rb = cp.request(req)
    except (OSError, ConnClosed, ProtocolError) as e:
        errors["write: " + exc_kind(e)] += 1
        return None
    t1 = now_ns()
    if st != 200:
        errors["write: " + status_kind(st, hd, rb)] += 1
        return None
    return Ack(t0, t1, hd)


def lag_probe(a: argparse.Namespace, prim: str, sec: str) -> dict:
    cp, cs = SyncConn(prim, a.timeout), SyncConn(sec, a.timeout)
    cust = f"{a.customer_prefix}-lag"
    ttl = ttl_header(a.ttl)
    tail = blob(max(0, a.size - 12), 3)
    body0 = b"%012d" % 0 + tail
    try:
        st, hd, rb = cp.request(build_req("/api/v1/create", cust, body0, ttl))
        snap, upd = probe_store("lag: create on the primary failed: ", cust, st, hd, rb)
        t = time.monotonic()
        while True:  # the store itself must reach the secondary first
            try:
                st, hd, rb = cs.request(snap)
                if st == 200 and rb[:12] == body0[:12]:
                    break
            except (OSError, ConnClosed, ProtocolError):
                pass
            if time.monotonic() - t > 10:
                raise RuntimeError("lag: the new store never became visible on the secondary in 10 s")
            time.sleep(0.001)
        create_visible_ms = round((time.monotonic() - t) * 1000, 2)
        wait_ns = int(a.lag_wait * 1e9)
        lag, from_send, wlat, rtt = [], [], [], []
        errors: Counter = Counter()
        missed = first_poll_hits = older_reads = 0
        hard_end = time.monotonic() + a.lag_writes * (a.lag_wait + a.lag_pause + 2 * a.timeout)
        done = 0
        for i in range(1, a.lag_writes + 1):
            if time.monotonic() > hard_end:
                errors["run out of time"] += a.lag_writes - i + 1
                break
            stamp, prev = b"%012d" % i, b"%012d" % (i - 1)
            ack = timed_write(cp, build_req(upd, cust, stamp + tail), errors)
            if ack is None:
                continue
            t0, t1 = ack.sent, ack.answered
            done += 1
            seen, polls, p1 = False, 0, t1
            while True:
                p0 = now_ns()
                try:
                    st, hd, rb = cs.request(snap)
                except (OSError, ConnClosed, ProtocolError) as e:
                    errors["read: " + exc_kind(e)] += 1
                    time.sleep(0.001)
                    if now_ns() - t1 > wait_ns:
                        break
                    continue
                p1 = now_ns()
                rtt.append(p1 - p0)
                polls += 1
                if st == 200 and rb[:12] == stamp:
                    seen = True
                    break
                if st != 200:
                    errors["read: " + status_kind(st, hd, rb)] += 1
                elif rb[:12] != prev:
                    older_reads += 1  # neither the new value nor the one before: an older state
                if p1 - t1 > wait_ns:
                    break
            if seen:
                lag.append(p1 - t1)
                from_send.append(p1 - t0)
                wlat.append(t1 - t0)
                first_poll_hits += polls == 1
            else:
                missed += 1
            if a.lag_pause > 0:
                time.sleep(a.lag_pause)
    finally:
        cp.close()
        cs.close()
    return {
        "writes": a.lag_writes,
        "acked": done,
        "measured": len(lag),
        "missed": missed,
        "wait_bound_s": a.lag_wait,
        "lag_from_ack_us": lat_stats(lag),
        "lag_from_send_us": lat_stats(from_send),
        "write_latency_us": lat_stats(wlat),
        "poll_rtt_us": lat_stats(rtt),
        "seen_on_first_poll": first_poll_hits,
        "older_value_reads": older_reads,
        "create_visible_ms": create_visible_ms,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common()),
    }


# --- BigBunny-Replicas: 1 against plain writes ---
def replicas_probe(a: argparse.Namespace, prim: str, sec: str) -> dict:
    cp, cs = SyncConn(prim, a.timeout), SyncConn(sec, a.timeout)
    cust = f"{a.customer_prefix}-rep"
    tail = blob(max(0, a.size - 12), 5)
    lat: dict[str, list[int]] = {"plain": [], "replicas": []}
    errors: Counter = Counter()
    not_visible = not_replicated = 0
    try:
        st, hd, rb = cp.request(build_req("/api/v1/create", cust, b"%012d" % 0 + tail, ttl_header(a.ttl)))
        snap, upd = probe_store("replicas: create on the primary failed: ", cust, st, hd, rb)
        n = 0
        for blk in range(a.rep_blocks):
            kinds = ("plain", "replicas") if blk % 2 == 0 else ("replicas", "plain")
            for kind in kinds:
                extra = "BigBunny-Replicas: 1\r\n" if kind == "replicas" else ""
                for _ in range(a.rep_block):
                    n += 1
                    stamp = b"%012d" % n
                    ack = timed_write(cp, build_req(upd, cust, stamp + tail, extra), errors)
                    if ack is None:
                        continue
                    lat[kind].append(ack.answered - ack.sent)
                    if kind == "replicas":
                        not_replicated += ack.headers.get(b"bigbunny-warning") == b"NotReplicated"
                        st, hd, rb = cs.request(snap)
                        not_visible += not (st == 200 and rb[:12] == stamp)
    finally:
        cp.close()
        cs.close()
    return {
        "plain_us": lat_stats(lat["plain"]),
        "replicas_us": lat_stats(lat["replicas"]),
        "not_visible": not_visible,
        "not_replicated": not_replicated,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common()),
    }
