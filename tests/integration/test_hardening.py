"""Hardening against hostile clients, on a real daemon over its real socket (bounded, in the normal suite).

* Generated requests (hypothesis, derandomized): random methods, paths built from the daemon's own
  route table with garbage segments (percent-escapes, non-UTF-8, over-long, empty), random headers
  (customer, TTL, lock, reuse, content type), random bodies up to 3 KB including JSON-ish counter
  specs, sometimes chunked; a third are well-formed requests on the generator's own stores. No answer
  may be a 5xx other than a coded 503, every error keeps the error format, nothing crashes, and the
  stores created beforehand (by a customer the generator never uses) stay intact while ``/status``
  stays consistent with the stores that really exist.
* Slowloris: 500 connections trickle request headers one byte at a time; a normal client is served
  promptly meanwhile, and the server closes every slow connection after ``--http-read-header-timeout``.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import resource
import selectors
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from conftest import Daemon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bigbunny.client import BBClient
from bigbunny.config import build_config
from bigbunny.supervisor.front.admin import App
from bigbunny.supervisor.state.node import Node

KEEPER = "keeper"


@functools.cache
def route_templates() -> list[bytes]:
    """Every path the daemon routes, ``{}`` standing for the parameter segment, read from the app
    itself (built in-process: nothing is spawned and no socket is bound)."""
    rundir = tempfile.mkdtemp(prefix="bbr", dir="/tmp")
    node = Node(build_config({"dev": True, "shards": 2}, {}), rundir)
    try:
        app = App(node)
        out = [b"/api/v1/" + seg + (b"/{}" if takes else b"") for seg, (_, takes, _, _) in app.api.routes.items()]
        out += [re.sub(r"\{[^}]*\}", "{}", r.path).encode() for r in app.admin.routes]  # type: ignore[attr-defined]
        return out
    finally:
        node.pool.ctx.term()
        os.rmdir(rundir)


# --- a raw HTTP/1.1 client: any bytes on the wire, one connection per request -------------------------
def raw_request(sock_path: str, data: bytes, method: str, timeout: float = 10.0) -> http.client.HTTPResponse:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(data)
        resp = http.client.HTTPResponse(s, method=method.upper())  # HEAD: no body to read
        resp.begin()
        resp.body = resp.read()  # type: ignore[attr-defined]
        return resp
    finally:
        s.close()


def encode_request(
    method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, chunks: list[int] | None
) -> bytes:
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: localhost"]
    head += [k + b": " + v for k, v in headers]
    if chunks is None:
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    else:
        head.append(b"Transfer-Encoding: chunked")
        parts, at = [], 0
        for n in chunks:
            if at >= len(body):
                break
            piece = body[at : at + n]
            at += len(piece)
            parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        if at < len(body):
            parts.append(b"%x\r\n%s\r\n" % (len(body) - at, body[at:]))
        payload = b"".join(parts) + b"0\r\n\r\n"
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


# --- strategies ------------------------------------------------------------------------------------------
_seg_text = st.text(st.characters(codec="utf-8", exclude_characters="/ ?#\r\n"), max_size=80)


OWN = re.compile(rb"\x00own(\d+)\x00")


def own_ids(target: bytes, own: list[str], ids: list[str]) -> bytes:
    """Replace the placeholders ``segments`` leaves for "a store the generator created" (strategies must
    not depend on state outside hypothesis, so the choice is an index resolved here)."""
    pool = own or ids

    def pick(m: re.Match[bytes]) -> bytes:
        return quote_from_bytes(pool[int(m.group(1)) % len(pool)].encode(), safe=":").encode()

    return OWN.sub(pick, target)


@st.composite
def segments(draw: Any, ids: list[str]) -> bytes:
    kind = draw(st.sampled_from(["id", "own", "own", "own", "name", "name", "text", "escaped", "raw", "long", "odd"]))
    if kind == "own":  # a store the generator created: real operations on it
        return b"\x00own%d\x00" % draw(st.integers(0, 1000))
    if kind == "id":  # a keeper's store ID, but never with its owner's customer
        return quote_from_bytes(draw(st.sampled_from(ids)).encode(), safe=":").encode()
    if kind == "name":
        return draw(st.sampled_from([b"cart:1", b"cart:2", b"n", b"keeper:cart", b"%20cart:1%09"]))
    if kind == "text":
        return quote_from_bytes(draw(_seg_text).encode(), safe=":@!$&'()*+,;=-._~").encode()
    if kind == "escaped":  # percent-escapes of arbitrary bytes, non-UTF-8 included
        return quote_from_bytes(draw(st.binary(max_size=40)), safe="").encode()
    if kind == "raw":  # raw bytes on the wire, mostly outside ASCII
        return draw(st.binary(min_size=1, max_size=20).filter(lambda b: not set(b) & set(b" \r\n/?#")))
    if kind == "long":
        return b"a" * draw(st.integers(65, 3000))
    return draw(
        st.sampled_from(
            [
                b"",
                b"%",
                b"%zz",
                b"%2F",
                b"%00",
                b"%20%20",
                b"..",
                b".",
                b"%ff%fe",
                b"v1:0:" + b"A" * 59,
                b"%C0%AF",
                b"cart:42",
                b"%E2%80%AE",
            ]
        )
    )


@st.composite
def paths(draw: Any, ids: list[str]) -> bytes:
    if draw(st.integers(0, 19)) == 0:  # sometimes anything at all
        return b"/" + draw(st.binary(max_size=60).filter(lambda b: not set(b) & set(b" \r\n")))
    template = draw(st.sampled_from(route_templates()))
    path = template.replace(b"{}", draw(segments(ids))) if b"{}" in template else template
    tweak = draw(st.sampled_from(["", "", "", "", "", "", "", "", "slash", "extra", "query", "case", "double"]))
    if tweak == "slash":
        path += b"/"
    elif tweak == "extra":
        path += b"/" + draw(segments(ids))
    elif tweak == "query":
        path += b"?" + draw(st.sampled_from([b"top=2", b"top=%C2%B2", b"top=0", b"top=abc", b"x=%ff", b"top=99999999"]))
    elif tweak == "case":
        path = path.upper()
    elif tweak == "double":
        path = path.replace(b"/", b"//", 1)
    return path


_value_bytes = st.binary(max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)
_customers = st.one_of(
    st.sampled_from([b"fz1", b"fz2", b"fz_3"]),
    st.sampled_from([b"", b" ", b"bad customer", b"a" * 65, b"\xff\xfe", b"fz1\t", b"Keeper", b"keeper-", b"x" * 64]),
)
_ttls = st.one_of(
    st.sampled_from(
        [
            b"",
            b"0",
            b"-1",
            b"1",
            b"60",
            b"+7",
            b" 5 ",
            b"abc",
            b"60.5",
            b"9223372036",
            b"9223372037",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"1e3",
        ]
    ),
    st.integers(-(1 << 70), 1 << 70).map(lambda n: str(n).encode()),
)


@st.composite
def headers(draw: Any) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 9)):  # usually a customer, occasionally none or two
        out.append((draw(st.sampled_from([b"X-Customer-ID", b"x-customer-id", b"X-CUSTOMER-ID"])), draw(_customers)))
        if draw(st.integers(0, 9)) == 0:
            out.append((b"X-Customer-ID", draw(_customers)))
    optional = [
        (b"BigBunny-Not-Valid-After", _ttls),
        (b"BigBunny-Lock-ID", st.one_of(st.sampled_from([b"", b"AAAAAAAAAAAAAAAAAAAAAA"]), _value_bytes)),
        (b"BigBunny-Reuse-If-Exists", st.sampled_from([b"true", b"1", b"YES", b" on ", b"no", b"", b"\xff"])),
        (
            b"Content-Type",
            st.sampled_from(
                [
                    b"application/json",
                    b"application/json; charset=utf-8",
                    b"APPLICATION/JSON",
                    b"text/plain",
                    b"application/jsonx",
                    b"",
                ]
            ),
        ),
        (b"X-BB-No-Forward", st.sampled_from([b"true", b"false", b"TRUE"])),
        (b"Accept", _value_bytes),
    ]
    for name, values in optional:
        if draw(st.booleans()):
            out.append((name, draw(values)))
    if draw(st.integers(0, 4)) == 0:  # an unknown header with an arbitrary token name
        name = draw(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)).encode()
        out.append((b"X-" + name, draw(_value_bytes)))
    return draw(st.permutations(out)) if out else out


_ints = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(-(1 << 70), 1 << 70),
    st.sampled_from([0, 1, -1, (1 << 63) - 1, -(1 << 63), 1 << 63]),
)
_json_scalars = st.one_of(_ints, st.floats(allow_nan=False), st.text(max_size=10), st.none(), st.booleans())
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_counter_keys = st.sampled_from(["type", "value", "min", "max", "delta", "Type", "VALUE", "Delta", "data"])


@st.composite
def bodies(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["empty", "binary", "big", "counter", "delta", "json"]))
    if kind == "empty":
        return b""
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "big":
        return draw(st.binary(min_size=1900, max_size=3072))
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    spec: dict[str, Any] = draw(st.dictionaries(_counter_keys, st.one_of(_ints, _json_scalars), max_size=4))
    if kind == "counter" and draw(st.booleans()):
        spec["type"] = "counter"
    if kind == "delta" and draw(st.booleans()):
        spec = {"delta": draw(_ints)}
    text = json.dumps(spec)
    if draw(st.integers(0, 5)) == 0:
        text = text.replace("}", "", 1)  # truncated JSON
    return text.encode()


@st.composite
def well_formed(draw: Any, created: list[str], customers: dict[str, str]) -> tuple[Any, ...]:
    """A valid request (create, or an operation on a store the generator created, as its owner): the
    garbage above rarely gets that far, and how often it does depends on what hypothesis picks, so
    these keep every run exercising the success paths (and the stores the final checks count)."""
    op = draw(st.sampled_from(["create", "create", "snapshot", "update", "begin-modify", "delete"]))
    body = draw(st.binary(max_size=200))
    if op == "create" or not created:
        customer = draw(st.sampled_from([b"fz1", b"fz2", b"fz_3"]))
        return "POST", b"/api/v1/create", [(b"X-Customer-ID", customer)], body, None
    sid = created[draw(st.integers(0, 1000)) % len(created)]
    target = b"/api/v1/%s/%s" % (op.encode(), quote_from_bytes(sid.encode(), safe=":").encode())
    return "POST", target, [(b"X-Customer-ID", customers[sid].encode())], body, None


_methods = st.sampled_from(["POST"] * 16 + ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "post", "BREW"])
_chunks = st.one_of(st.none(), st.lists(st.integers(1, 700), min_size=1, max_size=6))


# --- the node under test and its protected stores ---------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_node() -> Iterator[dict[str, Any]]:
    d = Daemon(
        "--rate-limit=0", "--gc-interval=1h", "--customer-memory-quota=60000", "--tombstone-customer-limit=25"
    ).wait_ready()
    try:
        c = d.client(KEEPER)
        blobs = {
            c.create(b"keep-%d" % i + bytes(range(i * 7 % 200))): b"keep-%d" % i + bytes(range(i * 7 % 200))
            for i in range(12)
        }
        counters = {c.create_counter(i, -5, 1000): i for i in range(4)}
        for sid in counters:
            c.increment(sid, 1)
        named = c.create_by_name("keeper:cart", b"named")
        yield {
            "d": d,
            "blobs": blobs,
            "counters": counters,
            "named": named,
            "created": {},
            "pids": d.shard_pids(),
            "stats": {},
        }
    finally:
        rc = d.stop()
    assert rc == 0, f"bbd exited {rc} on SIGTERM:\n{d.log()[-3000:]}"


_FORMAT_EXEMPT = (200,)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(data=st.data())
def _fuzz(fuzz: dict[str, Any], data: st.DataObject) -> None:
    d: Daemon = fuzz["d"]
    ids = [*fuzz["blobs"], *fuzz["counters"], fuzz["named"]]
    created = list(fuzz["created"])  # creation order: IDs are random, sorting them would vary the run
    if data.draw(st.integers(0, 2), "well-formed") == 0:
        method, target, hdrs, body, chunks = data.draw(well_formed(created, fuzz["created"]), "request")
    else:
        method = data.draw(_methods, "method")
        target = own_ids(data.draw(paths(ids), "path"), created, ids)
        hdrs = data.draw(headers(), "headers")
        body = data.draw(bodies(), "body")
        chunks = data.draw(_chunks, "chunks")
    raw = encode_request(method, target, hdrs, body, chunks)
    resp = raw_request(d.sock, raw, method)
    status = resp.status
    stats = fuzz["stats"]
    stats[status] = stats.get(status, 0) + 1
    code = resp.getheader("BigBunny-Error-Code")
    assert status < 500 or (status == 503 and code), f"{status} {code} {resp.body!r} for {raw[:300]!r}"
    # every error is one line of text, but a refused reload, whose answer is its JSON report (docs/api.md)
    if status >= 400 and not target.startswith(b"/internal/reload"):
        assert resp.getheader("Content-Type") == "text/plain; charset=utf-8", raw[:300]
        assert resp.getheader("X-Content-Type-Options") == "nosniff", raw[:300]
        if method.upper() != "HEAD":
            assert resp.body.endswith(b"\n") and resp.body.count(b"\n") == 1, (resp.body, raw[:300])
    # remember every store the generator managed to create, to check the store count afterwards
    if status == 200 and method == "POST" and re.fullmatch(rb"/api/v1/create(-by-name/[^/?]+)?(\?.*)?", target):
        customer = next((v for k, v in hdrs if k.lower() == b"x-customer-id"), b"").strip(b" \t").decode()
        assert customer != KEEPER
        fuzz["created"][resp.body.decode()] = customer


def test_generated_requests(fuzz_node: dict[str, Any]) -> None:
    d: Daemon = fuzz_node["d"]
    _fuzz(fuzz_node)  # type: ignore[call-arg]
    stats = fuzz_node["stats"]
    assert sum(stats.values()) >= 300
    print(f"statuses of the generated requests: {dict(sorted(stats.items()))}")
    assert stats.get(200, 0) >= 15 and stats.get(400, 0) >= 30 and stats.get(404, 0) >= 30, stats

    # no crash: same processes, nothing restarted
    assert d.proc.poll() is None
    st_ = d.status()
    assert [s["pid"] for s in st_["shards"]] == fuzz_node["pids"]
    assert all(s["up"] and s["restarts"] == 0 for s in st_["shards"]), st_["shards"]

    # the keeper's stores are untouched
    c = d.client(KEEPER)
    for sid, body in fuzz_node["blobs"].items():
        assert c.snapshot(sid).body == body
    for sid, value in fuzz_node["counters"].items():
        assert json.loads(c.snapshot(sid).body) == {"value": value + 1, "version": 2, "min": -5, "max": 1000}
    assert c.lookup("keeper:cart") == fuzz_node["named"]
    assert c.snapshot(fuzz_node["named"]).body == b"named"

    # /status agrees with itself, with the per-customer view, and with the stores that really exist
    admin = BBClient(d.sock)
    exists = [
        sid
        for sid in fuzz_node["created"]
        if admin.request("POST", "/internal/release-lock/" + quote_from_bytes(sid.encode(), safe=":")).status == 200
    ]
    st_ = d.status()
    keeper_count = len(fuzz_node["blobs"]) + len(fuzz_node["counters"]) + 1
    assert st_["store_count"] == keeper_count + len(exists)
    assert st_["store_count"] == sum(s["stores"] for s in st_["shards"])
    assert st_["memory_usage"] == sum(s["memory"] for s in st_["shards"])
    assert st_["registry_count"] == sum(st_["registry_states"].values())
    report = admin.customers(100_000)
    assert sum(r["stores"] for r in report["top_stores"]) == st_["store_count"]
    assert sum(r["memory"] for r in report["top_memory"]) == st_["memory_usage"]
    assert sum(r["tombstones"] for r in report["top_tombstones"]) == st_["tombstone_count"]
    assert {r["customer"] for r in report["top_stores"]} <= {KEEPER, *fuzz_node["created"].values()}


# --- slowloris -------------------------------------------------------------------------------------------
SLOW_CONNS = 500
HEADER_TIMEOUT = 2.0


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if new < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def test_slowloris(daemon_factory) -> None:
    _raise_nofile(4 * SLOW_CONNS)  # before the daemon starts: it inherits the limit
    d = daemon_factory("--rate-limit=0", f"--http-read-header-timeout={HEADER_TIMEOUT:g}s")
    prefix = b"POST /api/v1/create HTTP/1.1\r\nHost: x\r\nX-Customer-ID: slow\r\nX-Pad: "
    payload = prefix + b"a" * 4096  # never completes at one byte per round
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    opened: list[float] = []
    closed: dict[int, float] = {}
    answered: dict[int, bytes] = {}
    sent = [0] * SLOW_CONNS
    latencies: list[float] = []
    failures: list[BaseException] = []

    def normal_client() -> None:
        try:
            c = d.client("fast")
            for i in range(50):
                t = time.monotonic()
                sid = c.create(b"%d" % i)
                assert c.snapshot(sid).body == b"%d" % i
                latencies.append(time.monotonic() - t)
                time.sleep(0.02)  # pacing, so the 50 requests overlap the slow connections' lifetime
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            failures.append(e)

    def mark_closed(i: int) -> None:
        if i not in closed:
            closed[i] = time.monotonic()
            sel.unregister(socks[i])

    try:
        for i in range(SLOW_CONNS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(5)
            s.connect(d.sock)
            opened.append(time.monotonic())
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        th = threading.Thread(target=normal_client)
        th.start()
        deadline = opened[-1] + HEADER_TIMEOUT + 5.0
        next_round = time.monotonic()
        while len(closed) < SLOW_CONNS and time.monotonic() < deadline:
            for i, s in enumerate(socks):  # one more byte on every open connection
                if i in closed:
                    continue
                try:
                    sent[i] += s.send(payload[sent[i] : sent[i] + 1])
                except BlockingIOError:
                    pass
                except OSError:  # EPIPE / ECONNRESET: the server closed it
                    mark_closed(i)
            next_round += 0.1
            while (left := next_round - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    i = key.data
                    try:
                        chunk = socks[i].recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        answered[i] = answered.get(i, b"") + chunk
                    else:
                        mark_closed(i)
        th.join(30)
    finally:
        for s in socks:
            s.close()
        sel.close()

    assert not failures, failures
    assert len(latencies) == 50 and max(latencies) < 1.0, f"normal client: max {max(latencies, default=0):.3f} s"
    assert len(closed) == SLOW_CONNS, f"{SLOW_CONNS - len(closed)} slow connections still open"
    assert not answered, f"slow connections got data: {list(answered.items())[:3]}"
    assert max(sent) < len(payload) and min(sent) > 5  # they trickled, and never finished their headers
    lifetimes = [closed[i] - opened[i] for i in range(SLOW_CONNS)]
    assert min(lifetimes) >= HEADER_TIMEOUT - 0.05, f"closed too early: {min(lifetimes):.3f} s"
    assert max(lifetimes) < HEADER_TIMEOUT + 3.0, f"closed too late: {max(lifetimes):.3f} s"
    # the daemon is unharmed
    c = d.client("after")
    assert c.snapshot(c.create(b"ok")).body == b"ok"
    assert d.status()["store_count"] == 51
