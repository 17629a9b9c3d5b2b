"""ops/cost end to end: it starts its own node, drives it with the yardstick's compiled load generator
and reports every process's CPU per request. Skipped where that load generator is not present."""

from __future__ import annotations

import json
import os
import sys

import pytest
from helpers import REPO, run_script

pytestmark = pytest.mark.timeout(90)

ROOT = str(REPO)
COST = os.path.join(ROOT, "ops", "cost")
LOADGEN = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "bin", "loadgen"))
BBD = os.path.join(os.path.dirname(sys.executable), "bbd")


@pytest.mark.skipif(not os.access(LOADGEN, os.X_OK), reason="the yardstick's load generator is not here")
def test_cost_reports_cpu_per_request_of_every_process() -> None:
    argv = [
        sys.executable,
        COST,
        "--bbd",
        BBD,
        "--shards",
        "2",
        "--conns",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--stores",
        "200",
        "--json",
    ]
    p = run_script(argv, timeout=60, cwd=ROOT)
    row = json.loads(p.stdout.strip().splitlines()[-1])
    assert row["workload"] == "snapshot" and row["errors"] == 0 and row["ops_per_s"] > 0, row
    assert len(row["shards_us"]) == 2 and all(v > 0 for v in row["shards_us"]), row
    assert row["supervisor_us"] >= row["supervisor_main_user_us"] > 0, row
    assert row["loadgen_us"] > 0 and row["requests_per_batch"] >= 1, row
