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
from helpers import REPO, run_script

pytestmark = pytest.mark.timeout(90)

ROOT = str(REPO)
BENCH = os.path.join(ROOT, "ops", "bench")
WORKLOADS = ["create", "snapshot", "update", "modify", "incr", "mixed"]


def bench_cluster(flags: str, *more: str) -> dict:
    """``ops/bench cluster FLAGS MORE --json`` (FLAGS split on spaces), which must exit 0; its JSON document."""
    p = run_script([sys.executable, BENCH, "cluster", *flags.split(), *more, "--json"], timeout=75, cwd=ROOT)
    return json.loads(p.stdout)


def test_bench_all_workloads_against_started_daemon() -> None:
    argv = [
        sys.executable,
        BENCH,
        "--start-daemon",
        "--workload",
        ",".join(WORKLOADS),
        "--duration",
        "0.5",
        "--conns",
        "4",
        "--stores",
        "50",
        "--counters",
        "10",
        "--json",
    ]
    p = run_script(argv, timeout=60, cwd=ROOT)
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
    p = subprocess.run(
        [sys.executable, BENCH, "--uds", sock, "--duration", "0.2"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 2, p.stderr
    assert "cannot reach bbd" in p.stderr


def test_bench_cluster_mode_lag_throughput_failover() -> None:
    """`ops/bench cluster` starts a pair (and a single node), measures all three parts and verifies them."""
    # small enough that the primary's replication window (10,000 records) cannot overflow in a cell
    doc = bench_cluster(
        "--lag-writes 20 --duration 0.5 --warmup 0.1 --tp-conns 2 --stores 20"
        " --fo-kill-after 1 --fo-settle 0.5 --fo-bound 20"
    )
    assert doc["mode"] == "cluster" and doc["parts"] == ["lag", "throughput", "failover"]
    (rnd,) = doc["rounds"]
    assert "error" not in rnd, rnd.get("error")
    assert rnd["primary"]["role"] == "PRIMARY" and rnd["secondary"]["role"] == "SECONDARY"
    assert rnd["daemons_ok"], rnd.get("exit_codes")

    lag = rnd["lag"]
    assert lag["writes"] == 20 and lag["measured"] == 20 and lag["missed"] == 0 and lag["errors"] == 0, lag
    L = lag["lag_from_ack_us"]
    assert 0 < L["p50"] <= L["p99"] <= L["max"] < lag["wait_bound_s"] * 1e6, lag
    assert lag["poll_rtt_us"]["n"] >= 20

    cells = rnd["throughput"]
    assert [(c["workload"], c["conns"]) for c in cells] == [("create", 2), ("update", 2)]
    for c in cells:
        for tag in ("pair", "single"):
            assert c[tag]["ops"] > 0 and c[tag]["errors"] == 0, c
        assert c["ratio"] > 0 and c["replication"]["drained"], c

    fo = rnd["failover"]
    assert fo["killed_pids"] and fo["recovered"], fo
    assert fo["new_primary"]["role"] == "PRIMARY" and fo["new_primary"]["host_id"] == "node2", fo
    assert fo["epoch_advanced"], fo
    assert fo["acked_before_kill"] > 0 and fo["acked_after_kill"] > 0, fo
    assert fo["kill_to_first_success_ms"] is not None and 0 < fo["kill_to_first_success_ms"] < 20_000, fo
    # acknowledged AND proven replicated (fence) before the kill: never lost; writes acked by the new primary neither
    assert fo["lost"]["replicated"] == 0 and fo["lost"]["after_kill"] == 0, fo
    assert sum(fo["checked"].values()) >= fo["acked_before_kill"], fo

    summ = doc["summary"]
    assert set(summ) == {"lag", "throughput", "failover"}
    assert isinstance(summ["lag"]["target_met"], bool) and isinstance(summ["failover"]["target_met"], bool)


def test_bench_cluster_replicas_and_gate() -> None:
    """The write-gate parts: BigBunny-Replicas: 1 against plain writes (each read back on the secondary), and
    a pair with --min-replicas-max-lag against one without."""
    doc = bench_cluster(
        "--parts replicas,gate --rep-blocks 2 --rep-block 5 --tp-workloads create --tp-conns 2"
        " --duration 0.3 --warmup 0.1"
    )
    (rnd,) = doc["rounds"]
    assert "error" not in rnd and rnd["daemons_ok"], rnd
    rep = rnd["replicas"]
    assert rep["plain_us"]["n"] == rep["replicas_us"]["n"] == 10 and rep["not_visible"] == rep["errors"] == 0, rep
    (cell,) = rnd["gate"]
    assert rnd["gate_arg"] == ["--min-replicas-max-lag=1s"]
    assert cell["pair"]["ops"] > 0 and cell["single"]["ops"] > 0 and cell["pair"]["errors"] == 0, cell
    assert set(doc["summary"]) == {"replicas", "gate"}


def test_bench_cluster_args() -> None:
    p = subprocess.run([sys.executable, BENCH, "cluster", "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "--primary-pid" in p.stdout and "--lag-writes" in p.stdout
    p = subprocess.run(
        [sys.executable, BENCH, "cluster", "--primary", "/tmp/x"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 2 and "go together" in p.stderr
    p = subprocess.run(
        [sys.executable, BENCH, "cluster", "--parts", "nope"], capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 2 and "--parts" in p.stderr
    p = subprocess.run(
        [sys.executable, BENCH, "cluster", "--loadgen", "/nonexistent/loadgen"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2 and "--loadgen" in p.stderr


FAKE_LOADGEN = """#!{python}
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[0] == "prefill":
    with open(args[args.index("-out") + 1], "w") as f:
        f.write("blob\\tc\\tid\\n")
else:
    print(json.dumps({{"ops": 42, "ops_per_s": 84.0, "error_total": 0, "errors": {{}}, "window_s": 0.5,
                      "lat_us": {{"p50": 10.0, "p90": 20.0, "p99": 30.0, "p999": 40.0, "max": 50.0}}}}))
"""


def test_bench_cluster_throughput_with_a_compiled_load_generator(tmp_path) -> None:
    """--loadgen hands the throughput cells to an external generator (the yardstick's `loadgen` CLI):
    prefill once per node for update, one `run` per cell against the right socket, its JSON mapped."""
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "loadgen"
    fake.write_text(FAKE_LOADGEN.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    doc = bench_cluster(
        "--parts throughput --duration 0.5 --warmup 0.1 --tp-conns 3 --stores 20", "--loadgen", str(fake)
    )
    assert doc["throughput_load_generator"] == str(fake)
    (rnd,) = doc["rounds"]
    cells = rnd["throughput"]
    assert [(c["workload"], c["conns"]) for c in cells] == [("create", 3), ("update", 3)]
    for c in cells:
        assert c["pair"]["ops"] == c["single"]["ops"] == 42 and c["ratio"] == 1.0, c
        assert c["pair"]["latency_us"]["p99"] == 30.0, c
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    prefills = [c for c in calls if c[0] == "prefill"]
    runs = [c for c in calls if c[0] == "run"]
    assert len(prefills) == 2 and len(runs) == 4, calls
    socks = {c[c.index("-uds") + 1] for c in prefills}
    assert socks == {c[c.index("-uds") + 1] for c in runs} and len(socks) == 2, calls  # pair primary + single
    for c in runs:
        assert c[c.index("-conns") + 1] == "3" and c[c.index("-duration") + 1] == "0.5s", c
        assert ("-ids" in c) == (c[c.index("-workload") + 1] == "update"), c
