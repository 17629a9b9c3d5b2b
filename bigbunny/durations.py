"""Go-style durations: the flag grammar (SPEC §8) and the ``/status`` format (SPEC §3).

The reference is a Go program, so operators and clients already know Go's ``time.ParseDuration`` input
(``1h2m3.5s``) and ``Duration.String`` output (``2.021107375s``); we reproduce both exactly.
"""

from __future__ import annotations

import re

__all__ = ["NEVER_NS", "format_duration", "format_ttl", "parse_duration", "parse_duration_ns", "parse_ttl_seconds"]

NEVER_NS = 2**63 - 1
"""Largest Go duration; ``/status`` shows it for "never" (``2562047h47m16.854775807s``)."""

_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ MICRO SIGN
    "\u03bcs": 1_000,  # μ GREEK SMALL LETTER MU (Go accepts both)
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# TTL flags also take days (``14d``): a TTL of weeks in hours (``336h``) is hard to read.
_TTL_UNITS: dict[str, int] = {**_UNITS, "d": 86_400_000_000_000}
# One component: digits, optional fraction, then the unit = everything up to the next digit or dot.
_COMPONENT_RE = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def parse_duration_ns(text: str, units: dict[str, int] = _UNITS) -> int:
    """Parse a Go duration into integer nanoseconds (fractions below 1 ns are truncated, as in Go)."""
    s = text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(s):
        m = _COMPONENT_RE.match(s, pos)
        assert m is not None  # every group may be empty, so the pattern always matches
        whole, frac, unit = m.group(1, 2, 3)
        if not whole and not frac:
            raise ValueError(f"invalid duration {text!r}")
        if not unit:
            raise ValueError(f"missing unit in duration {text!r}")
        scale = units.get(unit)
        if scale is None:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        if total > 2**63:
            raise ValueError(f"invalid duration {text!r}")
        pos = m.end()
    if neg:
        return -total
    if total > NEVER_NS:
        raise ValueError(f"invalid duration {text!r}")
    return total


def parse_duration(text: str) -> float:
    """Parse a Go duration (``1h2m3.5s``, ``500ms``, ``0``) into seconds; ValueError if malformed."""
    return parse_duration_ns(text) / 1e9


def parse_ttl_seconds(text: str) -> int:
    """A TTL flag (``14d``, ``36h``, ``90m``, ``0``): a Go duration that may also use ``d``, in whole seconds."""
    ns = parse_duration_ns(text, _TTL_UNITS)
    if ns % 1_000_000_000:
        raise ValueError(f"TTL {text!r} is not a whole number of seconds")
    return ns // 1_000_000_000


def format_ttl(seconds: int) -> str:
    """``1209600`` → ``14d``, ``90000`` → ``1d1h``: the TTL flags' own notation, for messages and logs."""
    if seconds <= 0:
        return "0"
    out = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def _frac(value: int, prec: int) -> tuple[int, str]:
    """Split ``value`` into (value // 10**prec, ".digits" without trailing zeros, or "")."""
    whole, rest = divmod(value, 10**prec)
    if not rest:
        return whole, ""
    return whole, "." + f"{rest:0{prec}d}".rstrip("0")


def format_duration(ns: int) -> str:
    """Format nanoseconds like Go's ``Duration.String`` (``0s``, ``999ns``, ``1.5µs``, ``3h0m0.005s``)."""
    ns = int(ns)
    sign = "-" if ns < 0 else ""
    u = -ns if ns < 0 else ns
    if u == 0:
        return "0s"
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        whole, frac = _frac(u, 3)
        return f"{sign}{whole}{frac}\u00b5s"
    if u < 1_000_000_000:
        whole, frac = _frac(u, 6)
        return f"{sign}{whole}{frac}ms"
    secs, frac = _frac(u, 9)
    out = f"{secs % 60}{frac}s"
    mins = secs // 60
    if mins:
        out = f"{mins % 60}m{out}"
        hours = mins // 60
        if hours:
            out = f"{hours}h{out}"
    return sign + out
