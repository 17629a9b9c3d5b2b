"""The compiled load generator (``--loadgen``: the yardstick's ``loadgen`` CLI) as an alternative driver of
the cluster throughput cells."""

from __future__ import annotations

import argparse
import json
import os
import subprocess


class CompiledLoad:
    """The throughput cells driven by a compiled load generator (``--loadgen``, e.g. the yardstick's
    ``loadgen``) instead of the built-in Python one: on a small machine the Python clients' own CPU
    competes with both nodes and blurs the pair/single ratio."""

    def __init__(self, a: argparse.Namespace, tmp: str) -> None:
        self.a, self.tmp = a, tmp

    def _cmd(self, *args: str) -> list[str]:
        a = self.a
        return [a.loadgen, *args, "-size", str(a.size), "-customers", str(a.customers)]

    def prefill(self, tag: str, uds: str) -> str:
        ids = os.path.join(self.tmp, f"ids-{tag}")
        subprocess.run(
            self._cmd("prefill", "-uds", uds, "-out", ids, "-stores", str(self.a.stores), "-conns", "8"),
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )
        return ids

    def run(self, uds: str, wl: str, conns: int, ids: str | None) -> dict:
        a = self.a
        args = [
            "run",
            "-uds",
            uds,
            "-workload",
            wl,
            "-conns",
            str(conns),
            "-duration",
            f"{a.duration}s",
            "-warmup",
            f"{a.warmup}s",
            "-timeout",
            f"{a.timeout}s",
            "-seed",
            str(a.seed),
        ]
        if ids:
            args += ["-ids", ids]
        out = subprocess.run(
            self._cmd(*args), check=True, capture_output=True, text=True, timeout=a.duration + a.warmup + 60
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
