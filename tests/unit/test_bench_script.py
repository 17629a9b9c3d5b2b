"""ops/bench end to end: it starts its own daemon, runs every workload briefly and verifies each answer.

Each workload must report successes and no errors, and the daemon it started must exit 0 (the script
exits non-zero otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(90)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "ops", "bench")
WORKLOADS = ["create", "snapshot", "update", "modify", "incr", "mixed"]


def test_bench_all_workloads_against_started_daemon() -> None:
    argv = [
        sys.executable, BENCH, "--start-daemon", "--workload", ",".join(WORKLOADS),
        "--duration", "0.5", "--conns", "4", "--stores", "50", "--counters", "10", "--json",
    ]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert "daemon exited 0" in p.stderr, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert [r["workload"] for r in rows] == WORKLOADS, p.stdout
    for r in rows:
        assert r["ops"] > 0, r
        assert r["errors"] == 0, r
        assert r["error_kinds"] == {}, r
        assert r["ops_per_s"] > 0, r
        lat = r["latency_us"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"], r
    assert rows[WORKLOADS.index("modify")]["requests_per_op"] == 2


def test_bench_help_and_bad_workload() -> None:
    p = subprocess.run([sys.executable, BENCH, "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "--workload" in p.stdout and "--start-daemon" in p.stdout
    p = subprocess.run([sys.executable, BENCH, "--workload", "nope"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "unknown workload" in p.stderr


def test_bench_unreachable_daemon_fails_fast(tmp_path) -> None:
    sock = str(tmp_path / "none.sock")
    p = subprocess.run([sys.executable, BENCH, "--uds", sock, "--duration", "0.2"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stderr
    assert "cannot reach bbd" in p.stderr
