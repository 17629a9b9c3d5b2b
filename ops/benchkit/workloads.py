"""The workloads: request bytes built ahead of time and the per-connection operation that sends and
verifies them (``make_op``)."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable

from .http1 import Conn, build_req, qid, status_kind

WORKLOADS = ("create", "snapshot", "update", "modify", "incr", "mixed")
NEEDS_STORES = {"snapshot", "update", "modify", "mixed"}
NEEDS_COUNTERS = {"incr"}
REQS_PER_OP = {"modify": 2}

Op = Callable[[Conn], Awaitable[str | None]]  # None: a verified success; else the error kind


def ttl_header(ttl: int) -> str:
    """The request header giving a new store ``ttl`` seconds (nothing for 0: the server's default)."""
    return f"BigBunny-Not-Valid-After: {ttl}\r\n" if ttl > 0 else ""


def blob(size: int, seed: int) -> bytes:
    pat = bytes((seed + i) % 26 + 97 for i in range(26))
    return (pat * (size // 26 + 1))[:size]


def make_op(wl: str, cfg: dict, gidx: int) -> Op:
    """The operation connection ``gidx`` runs for workload ``wl``: its requests built here from ``cfg`` (its
    own slice of the prefilled stores or counters), every answer verified."""
    size = cfg["size"]
    conns = cfg["conns"]
    customers = cfg["customers_list"]
    rng = random.Random(cfg["seed"] * 1000003 + gidx)
    bodies = (blob(size, 1), blob(size, 2))

    def my_slice(items: list) -> list:
        if len(items) >= conns:
            return items[gidx::conns]
        return items[gidx % len(items) :: conns] or [items[gidx % len(items)]]

    create_reqs = [build_req("/api/v1/create", c, bodies[0], cfg["ttl_header"]) for c in customers]
    create_state = [gidx % len(create_reqs)]

    async def op_create(conn: Conn) -> str | None:
        i = create_state[0]
        create_state[0] = (i + 1) % len(create_reqs)
        st, hd, body, _ = await conn.request(create_reqs[i])
        if st != 200:
            return "create: " + status_kind(st, hd, body)
        if not body.startswith(b"v1:") or not 60 <= len(body) <= 100:
            return "create: bad store ID in body"
        return None

    if wl == "create":
        return op_create

    if wl == "incr":
        counters = my_slice(cfg["counters_list"])
        reqs = [build_req(f"/api/v1/increment/{qid(sid)}", c, b'{"delta":1}') for c, sid in counters]
        last = [0] * len(reqs)  # prefilled at value 0
        state = [rng.randrange(len(reqs))]

        async def op_incr(conn: Conn) -> str | None:
            i = state[0]
            state[0] = (i + 1) % len(reqs)
            st, hd, body, _ = await conn.request(reqs[i])
            if st != 200:
                return "incr: " + status_kind(st, hd, body)
            try:
                v = json.loads(body)["value"]
            except (ValueError, KeyError, TypeError):
                return "incr: bad JSON body"
            if not isinstance(v, int) or v <= last[i]:
                return "incr: value did not increase"
            last[i] = v
            return None

        return op_incr

    stores = my_slice(cfg["stores_list"])
    snap_reqs = [build_req(f"/api/v1/snapshot/{qid(sid)}", c) for c, sid in stores]
    upd_reqs = [
        (build_req(f"/api/v1/update/{qid(sid)}", c, bodies[0]), build_req(f"/api/v1/update/{qid(sid)}", c, bodies[1]))
        for c, sid in stores
    ]
    n = len(stores)
    state = [rng.randrange(n), 0]

    async def op_snapshot(conn: Conn) -> str | None:
        i = state[0]
        state[0] = (i + 1) % n
        st, hd, body, _ = await conn.request(snap_reqs[i])
        if st != 200:
            return "snapshot: " + status_kind(st, hd, body)
        if len(body) != size:
            return f"snapshot: body length {len(body)} != {size}"
        return None

    async def op_update(conn: Conn) -> str | None:
        i = state[0]
        state[0] = (i + 1) % n
        state[1] ^= 1
        st, hd, body, _ = await conn.request(upd_reqs[i][state[1]])
        if st != 200:
            return "update: " + status_kind(st, hd, body)
        if body:
            return "update: non-empty body"
        return None

    if wl == "snapshot":
        return op_snapshot
    if wl == "update":
        return op_update

    if wl == "modify":
        begin_reqs = [build_req(f"/api/v1/begin-modify/{qid(sid)}", c) for c, sid in stores]
        tails = [(f"Content-Length: {size}\r\n\r\n").encode() + bodies[k] for k in (0, 1)]
        complete_heads = [
            f"POST /api/v1/complete-modify/{qid(sid)} HTTP/1.1\r\nHost: bbd\r\nX-Customer-ID: {c}\r\n"
            "BigBunny-Lock-ID: ".encode()
            for c, sid in stores
        ]

        async def op_modify(conn: Conn) -> str | None:
            i = state[0]
            state[0] = (i + 1) % n
            state[1] ^= 1
            st, hd, body, _ = await conn.request(begin_reqs[i])
            if st != 200:
                return "begin-modify: " + status_kind(st, hd, body)
            lock = hd.get(b"bigbunny-lock-id")
            if not lock:
                return "begin-modify: no BigBunny-Lock-ID"
            if len(body) != size:
                return f"begin-modify: body length {len(body)} != {size}"
            st, hd, body, _ = await conn.request(complete_heads[i] + lock + b"\r\n" + tails[state[1]])
            if st != 200:
                return "complete-modify: " + status_kind(st, hd, body)
            if body:
                return "complete-modify: non-empty body"
            return None

        return op_modify

    if wl == "mixed":
        rnd = rng.random

        async def op_mixed(conn: Conn) -> str | None:
            r = rnd()
            if r < 0.80:
                return await op_snapshot(conn)
            if r < 0.95:
                return await op_update(conn)
            return await op_create(conn)

        return op_mixed

    raise ValueError(f"unknown workload {wl}")
