"""Counters against a real daemon (SPEC §2.6, §2.7 with §13 fixes 1, 2, 3, 15 and §14).

Counter JSON parsing (case-insensitive keys, unknown keys ignored, last duplicate wins, int64 JSON
integers only), bounds, clamping with ``bounded`` always present, exact overflow at both ends
(``value + delta`` checked before clamping), decrement of −2⁶³, TypeMismatch both ways, counter set
via update, TTL on increment/decrement, and the memory accounting of the internal representation.
"""

from __future__ import annotations

import json

import pytest
from helpers import assert_empty_ok, assert_error, call, seg, snap, wait_for_status

from bigbunny.client import Response

I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)


# --- helpers ------------------------------------------------------------------------------------
def assert_json(r: Response, expected: bytes) -> None:
    """Exact JSON 200: application/json, compact, trailing newline."""
    assert (r.status, r.body) == (200, expected), (r.status, r.body)
    assert r.headers.get("content-type") == "application/json"


def create_raw(node, customer: str, body: bytes, headers: dict | None = None) -> Response:
    return call(node, "/api/v1/create", customer, body, headers)


def counter(
    node, customer: str, value: int = 0, vmin: int | None = None, vmax: int | None = None, ttl: str | None = None
) -> str:
    spec: dict = {"type": "counter", "value": value}
    if vmin is not None:
        spec["min"] = vmin
    if vmax is not None:
        spec["max"] = vmax
    r = create_raw(
        node, customer, json.dumps(spec).encode(), None if ttl is None else {"BigBunny-Not-Valid-After": ttl}
    )
    assert r.status == 200, r.body
    return r.text


def add(node, customer: str, sid: str, body: bytes | int, op: str = "increment", ttl: str | None = None) -> Response:
    if isinstance(body, int):
        body = b'{"delta":%d}' % body
    return call(
        node, f"/api/v1/{op}/{seg(sid)}", customer, body, None if ttl is None else {"BigBunny-Not-Valid-After": ttl}
    )


def inc(node, customer: str, sid: str, body: bytes | int, ttl: str | None = None) -> Response:
    return add(node, customer, sid, body, "increment", ttl)


def dec(node, customer: str, sid: str, body: bytes | int, ttl: str | None = None) -> Response:
    return add(node, customer, sid, body, "decrement", ttl)


def setv(node, customer: str, sid: str, body: bytes | int, ttl: str | None = None) -> Response:
    if isinstance(body, int):
        body = b'{"value":%d}' % body
    return call(
        node, f"/api/v1/update/{seg(sid)}", customer, body, None if ttl is None else {"BigBunny-Not-Valid-After": ttl}
    )


# --- create: counter detection (§2.7, fix 3) --------------------------------------------------------
@pytest.mark.parametrize(
    "spec,snapshot",
    [
        (b'{"type":"counter","value":5}', b'{"value":5,"version":1}\n'),
        (b'{"type":"counter","value":0}', b'{"value":0,"version":1}\n'),
        (b'{"type":"counter","value":-7}', b'{"value":-7,"version":1}\n'),
        (b'{"type":"counter","value":50,"min":0,"max":100}', b'{"value":50,"version":1,"min":0,"max":100}\n'),
        (b'{"type":"counter","value":5,"min":5}', b'{"value":5,"version":1,"min":5}\n'),
        (b'{"type":"counter","value":5,"max":5}', b'{"value":5,"version":1,"max":5}\n'),
        (b'{"type":"counter","value":3,"min":3,"max":3}', b'{"value":3,"version":1,"min":3,"max":3}\n'),
        (b'{"type":"counter","value":1,"min":null,"max":null}', b'{"value":1,"version":1}\n'),
        (b'{"max":9,"value":2,"type":"counter","min":-9}', b'{"value":2,"version":1,"min":-9,"max":9}\n'),
        (b'{"TYPE":"counter","Value":3,"MiN":1,"mAx":4}', b'{"value":3,"version":1,"min":1,"max":4}\n'),
        (b'{"type":"counter","value":1,"value":2}', b'{"value":2,"version":1}\n'),
        (b'{"type":"counter","value":1,"VALUE":8}', b'{"value":8,"version":1}\n'),
        (b'{"type":"counter","value":4,"data":"ignored","extra":[1,{"x":null}]}', b'{"value":4,"version":1}\n'),
        (b'  \n{ "type" : "counter" , "value" : 6 }\t', b'{"value":6,"version":1}\n'),
        (b'{"type":"\\u0063ounter","value":9}', b'{"value":9,"version":1}\n'),
        (b'{"type":"counter","value":9223372036854775807}', b'{"value":9223372036854775807,"version":1}\n'),
        (b'{"type":"counter","value":-9223372036854775808}', b'{"value":-9223372036854775808,"version":1}\n'),
        (
            b'{"type":"counter","value":0,"min":-9223372036854775808,"max":9223372036854775807}',
            b'{"value":0,"version":1,"min":-9223372036854775808,"max":9223372036854775807}\n',
        ),
    ],
)
def test_create_counter(node, cust, spec, snapshot) -> None:
    r = create_raw(node, cust, spec)
    assert r.status == 200 and r.headers["content-type"] == "text/plain"
    assert_json(snap(node, cust, r.text), snapshot)


def test_create_counter_content_type_irrelevant(node, cust) -> None:
    for ct in ("text/plain", "application/octet-stream", "application/json; charset=utf-8"):
        r = create_raw(node, cust, b'{"type":"counter","value":1}', {"Content-Type": ct})
        assert_json(snap(node, cust, r.text), b'{"value":1,"version":1}\n')


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"Counter","value":1}',
        b'{"type":"blob","value":1}',
        b'{"type":"","value":1}',
        b'{"value":1}',
        b'{"type":null,"value":1}',
        b'{"type":1,"value":1}',
        b'[{"type":"counter","value":1}]',
        b'"counter"',
        b'{"type":"counter","value":1',  # not JSON at all: cannot be a counter spec
        b'{"type":"counter ","value":1}',
        b"counter",
        b"",
    ],
)
def test_create_non_counter_specs_are_blobs(node, cust, body) -> None:
    r = create_raw(node, cust, body)
    assert r.status == 200
    s = snap(node, cust, r.text)
    assert (s.status, s.body) == (200, body)
    if body:
        assert s.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    "body", [b'{"type":"counter"}', b'{"type":"counter","value":null}', b'{"type":"counter","min":0,"max":3}']
)
def test_create_counter_missing_value(node, cust, body) -> None:
    assert_error(create_raw(node, cust, body), 400, "missing value for counter")


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"counter","value":"5"}',
        b'{"type":"counter","value":5.0}',
        b'{"type":"counter","value":5.5}',
        b'{"type":"counter","value":1e3}',
        b'{"type":"counter","value":true}',
        b'{"type":"counter","value":[1]}',
        b'{"type":"counter","value":{}}',
        b'{"type":"counter","value":9223372036854775808}',
        b'{"type":"counter","value":-9223372036854775809}',
        b'{"type":"counter","value":1,"min":"0"}',
        b'{"type":"counter","value":1,"max":2.0}',
        b'{"type":"counter","value":1,"min":false}',
        b'{"type":"counter","value":1,"max":99999999999999999999}',
    ],
)
def test_create_ill_typed_counter_spec_is_400(node, cust, body) -> None:
    """§13 fix 3: ill-typed specs are refused (plain 400), not stored as blobs."""
    before = node.status()["store_count"]
    r = create_raw(node, cust, body)
    assert r.status == 400, (r.status, r.body)
    assert r.headers.get("content-type") == "text/plain; charset=utf-8"
    assert r.body.endswith(b"\n") and "bigbunny-error-code" not in r.headers
    assert node.status()["store_count"] == before


def test_create_counter_bounds_validation(node, cust) -> None:
    assert_error(
        create_raw(node, cust, b'{"type":"counter","value":5,"min":10,"max":1}'), 400, "invalid bounds", "InvalidBounds"
    )
    # min > max wins over out of bounds
    assert_error(
        create_raw(node, cust, b'{"type":"counter","value":50,"min":10,"max":1}'),
        400,
        "invalid bounds",
        "InvalidBounds",
    )
    for spec in (
        b'{"type":"counter","value":-1,"min":0,"max":10}',
        b'{"type":"counter","value":11,"min":0,"max":10}',
        b'{"type":"counter","value":-1,"min":0}',
        b'{"type":"counter","value":1,"max":0}',
    ):
        assert_error(create_raw(node, cust, spec), 400, "value out of bounds", "ValueOutOfBounds")


# --- increment / decrement -----------------------------------------------------------------------
def test_increment_decrement_responses(node, cust) -> None:
    sid = counter(node, cust, 5)
    r = inc(node, cust, sid, 3)
    assert_json(r, b'{"value":8,"version":2,"bounded":false}\n')
    assert "bigbunny-not-valid-after" not in r.headers  # no TTL header on counter ops
    assert_json(dec(node, cust, sid, 10), b'{"value":-2,"version":3,"bounded":false}\n')
    assert_json(inc(node, cust, sid, -3), b'{"value":-5,"version":4,"bounded":false}\n')
    assert_json(dec(node, cust, sid, -6), b'{"value":1,"version":5,"bounded":false}\n')
    assert_json(snap(node, cust, sid), b'{"value":1,"version":5}\n')


@pytest.mark.parametrize(
    "body,delta",
    [
        (b"{}", 0),
        (b'{"delta":0}', 0),
        (b'{"delta":2}', 2),
        (b'{"DELTA":2}', 2),
        (b'{"Delta":-2}', -2),
        (b'{"delta":1,"delta":4}', 4),
        (b'{"delta":1,"DELTA":5}', 5),
        (b'{"delta":3,"other":"x","n":null}', 3),
        (b' \n{ "delta" : 7 }\r\n', 7),
        (b'{"x":1}', 0),
    ],
)
def test_delta_json_forms(node, cust, body, delta) -> None:
    sid = counter(node, cust, 100)
    assert_json(inc(node, cust, sid, body), b'{"value":%d,"version":2,"bounded":false}\n' % (100 + delta))
    assert_json(dec(node, cust, sid, body), b'{"value":100,"version":3,"bounded":false}\n')


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" ",
        b"abc",
        b"[]",
        b'[{"delta":1}]',
        b'"5"',
        b"5",
        b"null",
        b'{"delta":"1"}',
        b'{"delta":1.0}',
        b'{"delta":1.5}',
        b'{"delta":1e3}',
        b'{"delta":true}',
        b'{"delta":null}',
        b'{"delta":[1]}',
        b'{"delta":9223372036854775808}',
        b'{"delta":-9223372036854775809}',
        b'{"delta":1',
        b'{"delta":01}',
        b'{"delta":-}',
    ],
)
def test_invalid_delta_is_400(node, cust, body) -> None:
    sid = counter(node, cust, 1)
    assert_error(inc(node, cust, sid, body), 400, "invalid JSON request")
    assert_error(dec(node, cust, sid, body), 400, "invalid JSON request")
    assert_json(snap(node, cust, sid), b'{"value":1,"version":1}\n')  # nothing applied


def test_clamping_bounded_always_present(node, cust) -> None:
    sid = counter(node, cust, 50, 0, 100)
    assert_json(inc(node, cust, sid, 25), b'{"value":75,"version":2,"bounded":false,"min":0,"max":100}\n')
    assert_json(inc(node, cust, sid, 25), b'{"value":100,"version":3,"bounded":false,"min":0,"max":100}\n')
    assert_json(inc(node, cust, sid, 1), b'{"value":100,"version":4,"bounded":true,"min":0,"max":100}\n')
    assert_json(inc(node, cust, sid, 1000), b'{"value":100,"version":5,"bounded":true,"min":0,"max":100}\n')
    assert_json(dec(node, cust, sid, 1000), b'{"value":0,"version":6,"bounded":true,"min":0,"max":100}\n')
    assert_json(dec(node, cust, sid, 0), b'{"value":0,"version":7,"bounded":false,"min":0,"max":100}\n')
    assert_json(inc(node, cust, sid, -1), b'{"value":0,"version":8,"bounded":true,"min":0,"max":100}\n')
    assert_json(snap(node, cust, sid), b'{"value":0,"version":8,"min":0,"max":100}\n')
    only_min = counter(node, cust, 0, vmin=-2)
    assert_json(dec(node, cust, only_min, 5), b'{"value":-2,"version":2,"bounded":true,"min":-2}\n')
    assert_json(
        inc(node, cust, only_min, I64_MAX), b'{"value":%d,"version":3,"bounded":false,"min":-2}\n' % (I64_MAX - 2)
    )
    only_max = counter(node, cust, 0, vmax=2)
    assert_json(inc(node, cust, only_max, 5), b'{"value":2,"version":2,"bounded":true,"max":2}\n')


def test_overflow_at_the_top(node, cust) -> None:
    sid = counter(node, cust, I64_MAX - 1)
    assert_json(inc(node, cust, sid, 1), b'{"value":%d,"version":2,"bounded":false}\n' % I64_MAX)
    assert_error(inc(node, cust, sid, 1), 409, "counter overflow", "Overflow")
    assert_error(dec(node, cust, sid, -1), 409, "counter overflow", "Overflow")
    assert_error(inc(node, cust, sid, I64_MAX), 409, "counter overflow", "Overflow")
    assert_json(snap(node, cust, sid), b'{"value":%d,"version":2}\n' % I64_MAX)  # unchanged


def test_overflow_at_the_bottom(node, cust) -> None:
    sid = counter(node, cust, I64_MIN + 1)
    assert_json(dec(node, cust, sid, 1), b'{"value":%d,"version":2,"bounded":false}\n' % I64_MIN)
    assert_error(dec(node, cust, sid, 1), 409, "counter overflow", "Overflow")
    assert_error(inc(node, cust, sid, -1), 409, "counter overflow", "Overflow")
    assert_error(inc(node, cust, sid, I64_MIN), 409, "counter overflow", "Overflow")
    assert_json(snap(node, cust, sid), b'{"value":%d,"version":2}\n' % I64_MIN)  # unchanged


def test_overflow_is_checked_before_clamping(node, cust) -> None:
    top = counter(node, cust, 100, 0, 100)
    assert_error(inc(node, cust, top, I64_MAX), 409, "counter overflow", "Overflow")
    assert_json(snap(node, cust, top), b'{"value":100,"version":1,"min":0,"max":100}\n')
    # no overflow: plain clamping
    assert_json(inc(node, cust, top, I64_MAX - 100), b'{"value":100,"version":2,"bounded":true,"min":0,"max":100}\n')
    bottom = counter(node, cust, -100, -100, 0)
    assert_error(dec(node, cust, bottom, I64_MAX), 409, "counter overflow", "Overflow")
    assert_error(inc(node, cust, bottom, I64_MIN), 409, "counter overflow", "Overflow")
    assert_json(snap(node, cust, bottom), b'{"value":-100,"version":1,"min":-100,"max":0}\n')


def test_decrement_by_int64_min_is_exact(node, cust) -> None:
    """§13 fix 2: decrementing by −2⁶³ adds 2⁶³ exactly (no wrap to −2⁶³)."""
    zero = counter(node, cust, 0)
    assert_error(dec(node, cust, zero, I64_MIN), 409, "counter overflow", "Overflow")
    assert_json(snap(node, cust, zero), b'{"value":0,"version":1}\n')
    minus_one = counter(node, cust, -1)
    assert_json(dec(node, cust, minus_one, I64_MIN), b'{"value":%d,"version":2,"bounded":false}\n' % I64_MAX)
    lowest = counter(node, cust, I64_MIN)
    assert_json(dec(node, cust, lowest, I64_MIN), b'{"value":0,"version":2,"bounded":false}\n')
    # with bounds: no overflow, so it clamps
    bounded = counter(node, cust, -5, -10, 10)
    assert_json(dec(node, cust, bounded, I64_MIN), b'{"value":10,"version":2,"bounded":true,"min":-10,"max":10}\n')
    # increment by −2⁶³ is plain addition
    z2 = counter(node, cust, 0)
    assert_json(inc(node, cust, z2, I64_MIN), b'{"value":%d,"version":2,"bounded":false}\n' % I64_MIN)


# --- type mismatch both ways (fix 1) --------------------------------------------------------------
def test_counter_ops_on_blob_are_type_mismatch(node, cust) -> None:
    blob = create_raw(node, cust, b"text").text
    assert_error(inc(node, cust, blob, 1), 400, "store type mismatch", "TypeMismatch")
    assert_error(dec(node, cust, blob, 1), 400, "store type mismatch", "TypeMismatch")
    s = snap(node, cust, blob)
    assert (s.status, s.body) == (200, b"text")


def test_modify_on_counter_is_type_mismatch(node, cust) -> None:
    sid = counter(node, cust, 3)
    r = call(node, f"/api/v1/begin-modify/{seg(sid)}", cust)
    assert_error(r, 400, "store type mismatch", "TypeMismatch")
    assert "bigbunny-lock-id" not in r.headers
    r = call(node, f"/api/v1/complete-modify/{seg(sid)}", cust, b"corrupt", {"BigBunny-Lock-ID": "A" * 22})
    assert_error(r, 400, "store type mismatch", "TypeMismatch")
    # the counter is intact and not locked
    assert_json(inc(node, cust, sid, 1), b'{"value":4,"version":2,"bounded":false}\n')
    assert_json(snap(node, cust, sid), b'{"value":4,"version":2}\n')


# --- set via update (fix 3, fix 15) --------------------------------------------------------------
def test_set_via_update(node, cust) -> None:
    sid = counter(node, cust, 1, -10, 10)
    assert_empty_ok(setv(node, cust, sid, 7))
    assert_json(snap(node, cust, sid), b'{"value":7,"version":2,"min":-10,"max":10}\n')
    assert_empty_ok(setv(node, cust, sid, b'{"VALUE":-3,"junk":true}'))
    assert_json(snap(node, cust, sid), b'{"value":-3,"version":3,"min":-10,"max":10}\n')
    assert_empty_ok(setv(node, cust, sid, b'{"value":1,"value":10}'))
    assert_json(snap(node, cust, sid), b'{"value":10,"version":4,"min":-10,"max":10}\n')
    # out of bounds: refused, no clamping
    assert_error(setv(node, cust, sid, 11), 400, "value out of bounds", "ValueOutOfBounds")
    assert_error(setv(node, cust, sid, -11), 400, "value out of bounds", "ValueOutOfBounds")
    assert_json(snap(node, cust, sid), b'{"value":10,"version":4,"min":-10,"max":10}\n')
    # extremes on an unbounded counter
    free = counter(node, cust, 0)
    assert_empty_ok(setv(node, cust, free, I64_MIN))
    assert_json(snap(node, cust, free), b'{"value":%d,"version":2}\n' % I64_MIN)
    assert_empty_ok(setv(node, cust, free, I64_MAX))
    assert_json(inc(node, cust, free, 0), b'{"value":%d,"version":4,"bounded":false}\n' % I64_MAX)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"x":1}',
        b"",
        b"7",
        b"[]",
        b"null",
        b'{"value":null}',
        b'{"value":"1"}',
        b'{"value":1.0}',
        b'{"value":1e2}',
        b'{"value":true}',
        b'{"value":9223372036854775808}',
        b'{"value":-9223372036854775809}',
        b'{"value":1',
        b"garbage",
        b'{"delta":1}',
    ],
)
def test_invalid_counter_set_is_400(node, cust, body) -> None:
    sid = counter(node, cust, 2)
    assert_error(setv(node, cust, sid, body), 400, "invalid JSON for counter update")
    assert_json(snap(node, cust, sid), b'{"value":2,"version":1}\n')


# --- TTL, expiry, missing ---------------------------------------------------------------------------
def test_counter_ttl_rules(node, cust) -> None:
    sid = counter(node, cust, 0, ttl="1000")
    s = snap(node, cust, sid)
    assert 997 <= int(s.headers["bigbunny-not-valid-after"]) < 1000
    assert inc(node, cust, sid, 1, ttl="nope").status == 200  # unparsable: unchanged
    assert 997 <= int(snap(node, cust, sid).headers["bigbunny-not-valid-after"]) < 1000
    assert inc(node, cust, sid, 1, ttl="60").status == 200
    assert 57 <= int(snap(node, cust, sid).headers["bigbunny-not-valid-after"]) < 60
    assert dec(node, cust, sid, 1, ttl="30").status == 200
    assert 27 <= int(snap(node, cust, sid).headers["bigbunny-not-valid-after"]) < 30
    assert_empty_ok(setv(node, cust, sid, 5, ttl="20"))
    assert 17 <= int(snap(node, cust, sid).headers["bigbunny-not-valid-after"]) < 20
    # too large: plain 400, nothing applied (JSON is checked first)
    assert_error(inc(node, cust, sid, 1, ttl="9223372037"), 400, "invalid TTL")
    assert_error(dec(node, cust, sid, 1, ttl="9223372037"), 400, "invalid TTL")
    assert_error(setv(node, cust, sid, 1, ttl="9223372037"), 400, "invalid TTL")
    assert_error(inc(node, cust, sid, b"bad", ttl="9223372037"), 400, "invalid JSON request")
    assert_json(snap(node, cust, sid), b'{"value":5,"version":5}\n')
    # ≤ 0 on increment expires the counter at once
    assert_json(inc(node, cust, sid, 1, ttl="0"), b'{"value":6,"version":6,"bounded":false}\n')
    r = wait_for_status(lambda: snap(node, cust, sid), 410)
    assert_error(r, 410, "store expired", "StoreExpired")
    assert_error(inc(node, cust, sid, 1), 410, "store expired", "StoreExpired")
    assert_error(dec(node, cust, sid, 1), 410, "store expired", "StoreExpired")
    assert_error(setv(node, cust, sid, 1), 410, "store expired", "StoreExpired")


def test_counter_set_with_negative_ttl_expires(node, cust) -> None:
    sid = counter(node, cust, 0)
    assert_empty_ok(setv(node, cust, sid, 3, ttl="-1"))
    assert_error(snap(node, cust, sid), 410, "store expired", "StoreExpired")
    sid2 = counter(node, cust, 0)
    assert dec(node, cust, sid2, 1, ttl="-100").status == 200
    assert_error(inc(node, cust, sid2, 1), 410, "store expired", "StoreExpired")


def test_counter_create_ttl_rules(node, cust) -> None:
    body = b'{"type":"counter","value":1}'
    for bad in ("0", "-5", "9223372037"):
        assert_error(create_raw(node, cust, body, {"BigBunny-Not-Valid-After": bad}), 400, "invalid TTL")
    r = create_raw(node, cust, body, {"BigBunny-Not-Valid-After": "45"})
    assert 42 <= int(snap(node, cust, r.text).headers["bigbunny-not-valid-after"]) < 45


def test_counter_ops_on_deleted_and_check_order(node, cust) -> None:
    sid = counter(node, cust, 1)
    assert_empty_ok(call(node, f"/api/v1/delete/{seg(sid)}", cust))
    assert_error(inc(node, cust, sid, 1), 404, "store not found", "NotFound")
    assert_error(dec(node, cust, sid, 1), 404, "store not found", "NotFound")
    assert_error(setv(node, cust, sid, 1), 404, "store not found", "NotFound")
    # increment order: ID → body 413 → JSON 400 → TTL → 404
    assert_error(inc(node, cust, sid, b"not json"), 400, "invalid JSON request")
    assert_error(inc(node, cust, sid, 1, ttl="9223372037"), 400, "invalid TTL")
    assert_error(inc(node, cust, sid, b" " * 2049), 413, "body too large")
    assert_error(inc(node, cust, "garbage", b" " * 2049), 400, "invalid store ID")
    # other customers cannot touch it
    other = counter(node, cust, 1)
    assert_error(inc(node, cust + "z", other, 1), 400, "invalid store ID")
    assert_error(setv(node, cust + "z", other, 9), 400, "invalid store ID")
    assert_json(snap(node, cust, other), b'{"value":1,"version":1}\n')


def test_delta_body_limit(node, cust) -> None:
    sid = counter(node, cust, 0)
    body = b'{"delta":1}'
    assert_json(inc(node, cust, sid, body + b" " * (2048 - len(body))), b'{"value":1,"version":2,"bounded":false}\n')
    assert_error(inc(node, cust, sid, body + b" " * (2049 - len(body))), 413, "body too large")
    assert_error(dec(node, cust, sid, body + b" " * (2049 - len(body))), 413, "body too large")
    assert_json(snap(node, cust, sid), b'{"value":1,"version":2}\n')


# --- memory accounting and quota on counters (§6) ----------------------------------------------
def test_counter_memory_accounting_and_quota(daemon_factory) -> None:
    """A fresh {"value":0} counter costs 267; growing digit counts grow it; growth is quota-checked."""
    d = daemon_factory("--rate-limit=0", "--customer-memory-quota=268")
    c = "cmem"
    sid = counter(d, c, 0)
    assert d.status()["memory_usage"] == 267
    assert_json(inc(d, c, sid, 9), b'{"value":9,"version":2,"bounded":false}\n')  # same size
    assert d.status()["memory_usage"] == 267
    assert_json(inc(d, c, sid, 1), b'{"value":10,"version":3,"bounded":false}\n')  # +1: quota reached exactly
    assert d.status()["memory_usage"] == 268
    assert_error(inc(d, c, sid, 90), 507, "customer quota exceeded", "CustomerQuotaExceeded")  # +1 more
    assert_error(setv(d, c, sid, 100), 507, "customer quota exceeded", "CustomerQuotaExceeded")
    assert_error(dec(d, c, sid, 20), 507, "customer quota exceeded", "CustomerQuotaExceeded")  # "-10" is longer
    assert_json(snap(d, c, sid), b'{"value":10,"version":3}\n')
    assert_empty_ok(setv(d, c, sid, 99))  # same size
    assert_json(dec(d, c, sid, 95), b'{"value":4,"version":5,"bounded":false}\n')  # shrinking is never refused
    assert d.status()["memory_usage"] == 267
    assert_empty_ok(call(d, f"/api/v1/delete/{seg(sid)}", c))
    assert d.status()["memory_usage"] == 0
