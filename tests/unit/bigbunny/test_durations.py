"""Go-compatible duration parsing (SPEC §8 flags) and formatting (SPEC §3 /status)."""

from __future__ import annotations

import pytest

from bigbunny.durations import (
    NEVER_NS,
    format_duration,
    format_ttl,
    parse_duration,
    parse_duration_ns,
    parse_ttl_seconds,
)

S = 1_000_000_000


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_000, "1µs"),
        (1_500, "1.5µs"),
        (1_001, "1.001µs"),
        (999_999, "999.999µs"),
        (1_000_000, "1ms"),
        (1_500_000, "1.5ms"),
        (64_746_123, "64.746123ms"),
        (64_745_470, "64.74547ms"),
        (999_999_999, "999.999999ms"),
        (S, "1s"),
        (2_021_107_375, "2.021107375s"),
        (59 * S, "59s"),
        (60 * S, "1m0s"),
        (61 * S, "1m1s"),
        (3600 * S, "1h0m0s"),
        (3 * 3600 * S + 5_000_000, "3h0m0.005s"),
        (120 * S, "2m0s"),
        (NEVER_NS, "2562047h47m16.854775807s"),
        (-1_500, "-1.5µs"),
        (-61 * S, "-1m1s"),
    ],
)
def test_format(ns: int, text: str) -> None:
    assert format_duration(ns) == text
    if ns >= 0:
        assert parse_duration_ns(text) == ns  # the formats round-trip


def test_never_value() -> None:
    assert NEVER_NS == 2**63 - 1
    assert format_duration(2**63 - 1) == "2562047h47m16.854775807s"


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("-0", 0),
        ("+0", 0),
        ("0s", 0),
        ("5s", 5 * S),
        ("+5s", 5 * S),
        ("-5s", -5 * S),
        ("1h2m3.5s", 3723 * S + S // 2),
        ("1.5h", 5400 * S),
        ("2h45m", 9900 * S),
        ("300ms", 300_000_000),
        ("500ms", 500_000_000),
        ("1ns", 1),
        ("1us", 1_000),
        ("1µs", 1_000),  # U+00B5
        ("1μs", 1_000),  # U+03BC
        (".5s", S // 2),
        ("5.s", 5 * S),
        ("1.0000000001s", S),  # sub-ns fraction truncated
        ("1s500ms", 1_500_000_000),
        ("1m1m", 120 * S),
        ("9223372036854775807ns", NEVER_NS),
        ("-9223372036854775808ns", -(2**63)),
        ("2562047h47m16.854775807s", NEVER_NS),
    ],
)
def test_parse(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert parse_duration(text) == pytest.approx(ns / 1e9)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "1",
        "10",
        ".s",
        ".",
        "-",
        "+",
        "1.5",
        "1e3s",
        "1sec",
        "1S",
        "1 s",
        " 1s",
        "1s ",
        "1d",
        "--1s",
        "1..5s",
        "9223372036854775808ns",
        "2562048h",
        "1h-1m",
        "0x10s",
        "１s",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_returns_seconds() -> None:
    assert parse_duration("30s") == 30.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0


# --- TTL flags: Go durations plus days, in whole seconds ------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("14d", 1_209_600),
        ("1d12h", 129_600),
        ("36h", 129_600),
        ("90m", 5400),
        ("3600s", 3600),
        ("0", 0),
        ("1.5d", 129_600),
        ("1500ms", None),
        ("1x", None),
        ("", None),
        ("d", None),
    ],
)
def test_parse_ttl_seconds(text: str, seconds: int | None) -> None:
    if seconds is None:
        with pytest.raises(ValueError):
            parse_ttl_seconds(text)
    else:
        assert parse_ttl_seconds(text) == seconds


@pytest.mark.parametrize(("seconds", "text"), [(1_209_600, "14d"), (90_061, "1d1h1m1s"), (3600, "1h"), (0, "0")])
def test_format_ttl(seconds: int, text: str) -> None:
    assert format_ttl(seconds) == text
    assert parse_ttl_seconds(text) == seconds


def test_plain_durations_still_have_no_days() -> None:
    with pytest.raises(ValueError, match="unknown unit 'd'"):
        parse_duration("1d")
