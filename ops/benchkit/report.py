"""Output of the single-node bench: the table header and rows, and progress lines on stderr."""

from __future__ import annotations

import sys

HEADER = (
    f"{'workload':<9} {'conns':>5} {'procs':>5} {'ops':>9} {'ops/s':>10} {'p50µs':>8} {'p90µs':>8} "
    f"{'p99µs':>8} {'p99.9µs':>8} {'maxµs':>9} {'errors':>7}"
)


def table_row(r: dict) -> str:
    L = r["latency_us"]
    return (
        f"{r['workload']:<9} {r['conns']:>5} {r['procs']:>5} {r['ops']:>9} {r['ops_per_s']:>10.1f} "
        f"{L['p50']:>8.0f} {L['p90']:>8.0f} {L['p99']:>8.0f} {L['p99.9']:>8.0f} {L['max']:>9.0f} {r['errors']:>7}"
    )


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)
