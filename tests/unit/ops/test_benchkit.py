"""The pure pieces of ops/benchkit (the package behind ops/bench): the HTTP/1.1 response parser fed in
pieces, percentiles and latency summaries, the table row, request bytes, and the /proc process helpers
on a child of the test itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from helpers import REPO

ROOT = str(REPO)
sys.path.insert(0, os.path.join(ROOT, "ops"))  # benchkit is not installed: it lives beside ops/bench

from benchkit.cluster_report import med  # noqa: E402
from benchkit.http1 import ProtocolError, build_req, parse_response, status_kind  # noqa: E402
from benchkit.loadgen import prefill_argv, run_argv  # noqa: E402
from benchkit.proctree import cpu_ticks, kill_tree, process_tree, tree_cpu_s  # noqa: E402
from benchkit.report import HEADER, table_row  # noqa: E402
from benchkit.runner import lat_stats, percentile  # noqa: E402
from benchkit.workloads import blob, ttl_header  # noqa: E402


def feed(data: bytes, step: int) -> list[tuple]:
    """Feed ``data`` ``step`` bytes at a time, parsing after each piece as Conn.data_received does."""
    buf = bytearray()
    out = []
    for i in range(0, len(data), step):
        buf += data[i : i + step]
        while (r := parse_response(buf)) is not None:
            out.append(r)
    assert not buf, bytes(buf)
    return out


# --- parse_response ---------------------------------------------------------------------------------------
def test_parse_response_incomplete_leaves_the_buffer_alone() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"
    buf = bytearray(head)
    assert parse_response(buf) is None
    assert bytes(buf) == head
    buf += b"cdeHTTP/1.1"  # the rest, then the start of the next response
    assert parse_response(buf) == (200, {b"content-length": b"5"}, b"abcde", True)
    assert bytes(buf) == b"HTTP/1.1"


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_parse_response_pipelined_in_any_split(step: int) -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabc"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nT: x\r\n\r\n"
        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    (a, b, c, d) = feed(data, step)
    assert a == (200, {b"content-length": b"3", b"x-a": b"1"}, b"abc", True)  # first value of a header wins
    assert b == (204, {}, b"", True)
    assert c[0] == 200 and c[2] == b"wikipedia" and c[3] is True  # chunk extension and trailer skipped
    assert d[0] == 503 and d[3] is False


def test_parse_response_http10_does_not_keep_alive() -> None:
    assert parse_response(bytearray(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")) == (
        200,
        {b"content-length": b"0"},
        b"",
        False,
    )


@pytest.mark.parametrize(
    "data, why",
    [
        (b"HTTX/1.1 200 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "without Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000, "too large"),
    ],
)
def test_parse_response_rejects_malformed_answers(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        parse_response(bytearray(data))


# --- statistics and rows ----------------------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 101)]
    assert [percentile(xs, p) for p in (50, 90, 99, 99.9, 100)] == [50.0, 90.0, 99.0, 100.0, 100.0]
    assert percentile([7.0], 50) == percentile([7.0], 99.9) == 7.0
    assert percentile([], 99) == 0.0


def test_lat_stats_from_nanoseconds() -> None:
    s = lat_stats([3000, 1000, 2000, 4000])
    assert s == {"n": 4, "p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0, "mean": 2.5}
    assert lat_stats([]) == {"n": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}


def test_med_skips_missing_values() -> None:
    assert med([3, None, 1, 2]) == 2
    assert med([4, 1, 3, 2]) == 2.5
    assert med([None]) is None


def test_table_row_lines_up_with_the_header() -> None:
    row = {
        "workload": "snapshot",
        "conns": 16,
        "procs": 1,
        "ops": 42782,
        "ops_per_s": 21391.04,
        "errors": 0,
        "latency_us": {"p50": 725.4, "p90": 1044.0, "p99": 1391.0, "p99.9": 2302.0, "max": 3922.0},
    }
    line = table_row(row)
    assert line.split() == ["snapshot", "16", "1", "42782", "21391.0", "725", "1044", "1391", "2302", "3922", "0"]
    assert len(line) == len(HEADER)
    ends = [i for i in range(1, len(HEADER) + 1) if i == len(HEADER) or HEADER[i] == " " != HEADER[i - 1]]
    for end in ends[1:]:  # every numeric column is right-aligned under its title
        assert line[end - 1] != " ", (line, end)


# --- request bytes ----------------------------------------------------------------------------------------
def test_build_req_and_headers() -> None:
    assert build_req("/api/v1/create", "c1", b"abc", ttl_header(60)) == (
        b"POST /api/v1/create HTTP/1.1\r\nHost: bbd\r\nX-Customer-ID: c1\r\n"
        b"BigBunny-Not-Valid-After: 60\r\nContent-Length: 3\r\n\r\nabc"
    )
    assert ttl_header(0) == ""
    assert blob(30, 1)[:3] == b"bcd" and len(blob(30, 1)) == 30 and blob(0, 1) == b""


def test_status_kind_names_the_error() -> None:
    hd = {b"bigbunny-error-code": b"RateLimited", b"retry-after": b"1"}
    assert status_kind(429, hd, b"{}") == "429 RateLimited (Retry-After 1)"
    assert status_kind(500, {}, b"  boom \n") == "500 boom"
    assert status_kind(502, {}, b"") == "502 (empty body)"


def test_loadgen_command_lines() -> None:
    assert prefill_argv("lg", "/s", "/ids", 20, ["-conns", "8"]) == [
        "lg",
        "prefill",
        "-uds",
        "/s",
        "-out",
        "/ids",
        "-stores",
        "20",
        "-conns",
        "8",
    ]
    argv = run_argv("lg", "/s", "update", 3, 0.5, 0.1, ["-ids", "/ids"])
    assert argv[:2] == ["lg", "run"] and argv[-2:] == ["-ids", "/ids"]
    flags = dict(zip(argv[2:-2:2], argv[3:-2:2]))
    assert flags == {"-uds": "/s", "-workload": "update", "-conns": "3", "-duration": "0.5s", "-warmup": "0.1s"}


# --- /proc ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")
def test_process_tree_cpu_and_kill_of_a_grandchild() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\ntime.sleep(30)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    parent = subprocess.Popen([sys.executable, "-c", code])
    tick = os.sysconf("SC_CLK_TCK")
    try:
        deadline = time.monotonic() + 10
        while len(tree := process_tree(parent.pid)) < 2:
            assert time.monotonic() < deadline, tree
            time.sleep(0.02)
        (child,) = set(tree) - {parent.pid}
        while sum(cpu_ticks(child)) < 0.2 * tick:
            assert time.monotonic() < deadline, cpu_ticks(child)
            time.sleep(0.02)
        assert (tree_cpu_s(parent.pid) or 0) >= sum(cpu_ticks(child)) / tick  # the child's CPU counts
        assert sorted(kill_tree(tree)) == sorted(tree)
        assert parent.wait(5) == -9
    finally:
        parent.kill()
        parent.wait()
    assert kill_tree({parent.pid: tree[parent.pid]}) == []  # gone: nothing is signalled
