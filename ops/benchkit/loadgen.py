"""The compiled load generator (the yardstick's ``loadgen`` CLI): its command lines, and the driver of the
cluster throughput cells built on it (``--loadgen``)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess


def prefill_argv(exe: str, uds: str, out: str, stores: int, extra: list[str]) -> list[str]:
    """``loadgen prefill``: create ``stores`` blob stores on the node at ``uds``, their IDs written to ``out``."""
    return [exe, "prefill", "-uds", uds, "-out", out, "-stores", str(stores), *extra]


def run_argv(
    exe: str, uds: str, workload: str, conns: int, duration: float, warmup: float, extra: list[str]
) -> list[str]:
    """``loadgen run``: one closed-loop workload; prints one JSON object (ops, ops_per_s, lat_us, ...)."""
    return [
        exe,
        "run",
        "-uds",
        uds,
        "-workload",
        workload,
        "-conns",
        str(conns),
        "-duration",
        f"{duration}s",
        "-warmup",
        f"{warmup}s",
        *extra,
    ]


class CompiledLoad:
    """The throughput cells driven by a compiled load generator (``--loadgen``, e.g. the yardstick's
    ``loadgen``) instead of the built-in Python one: on a small machine the Python clients' own CPU
    competes with both nodes and blurs the pair/single ratio."""

    def __init__(self, a: argparse.Namespace, tmp: str) -> None:
        self.a, self.tmp = a, tmp

    def _shape(self) -> list[str]:
        return ["-size", str(self.a.size), "-customers", str(self.a.customers)]

    def prefill(self, tag: str, uds: str) -> str:
        ids = os.path.join(self.tmp, f"ids-{tag}")
        subprocess.run(
            prefill_argv(self.a.loadgen, uds, ids, self.a.stores, ["-conns", "8", *self._shape()]),
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )
        return ids

    def run(self, uds: str, wl: str, conns: int, ids: str | None) -> dict:
        a = self.a
        extra = ["-timeout", f"{a.timeout}s", "-seed", str(a.seed)]
        if ids:
            extra += ["-ids", ids]
        argv = run_argv(a.loadgen, uds, wl, conns, a.duration, a.warmup, extra + self._shape())
        out = subprocess.run(
            argv, check=True, capture_output=True, text=True, timeout=a.duration + a.warmup + 60
        ).stdout
        d = json.loads(out)
        return {
            "ops": d["ops"],
            "ops_per_s": d["ops_per_s"],
            "errors": d["error_total"],
            "error_kinds": d.get("errors", {}),
            "duration_s": d.get("window_s", a.duration),
            "latency_us": d["lat_us"],
        }
