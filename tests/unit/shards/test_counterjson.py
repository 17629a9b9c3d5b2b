"""Unit tests for shards.counterjson (SPEC §2.6, §2.7, §13 fixes 2/3, §14)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bigbunny import errors
from bigbunny.shards import counterjson as cj
from bigbunny.shards.counterjson import (
    parse_counter_spec,
    parse_delta,
    parse_set,
    render_add,
    render_internal,
    render_snapshot,
)

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


def plain(body: bytes):
    return parse_counter_spec(body, False, False)


def named(body: bytes, json_ct: bool = True):
    return parse_counter_spec(body, True, json_ct)


# --- counter detection: plain create ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello",
        b"counter",
        b"5",
        b'"counter"',
        b"null",
        b"[]",
        b'[{"type":"counter","value":1}]',
        b'[["type","counter"],["value",1]]',
        b"{}",
        b'{"value":5}',
        b'{"type":"blob","value":5}',
        b'{"type":"Counter","value":5}',
        b'{"type":"COUNTER","value":5}',
        b'{"type":" counter","value":5}',
        b'{"type":"counter ","value":5}',
        b'{"type":"","value":5}',
        b'{"type":null,"value":5}',
        b'{"type":5,"value":5}',
        b'{"type":["counter"],"value":5}',
        b'{"type":{"x":"counter"},"value":5}',
        b'{"data":"counter"}',
        b'{"type":"counter","value":5}x',  # trailing garbage: not JSON
        b'{"type":"counter","value":5',  # truncated
        b'\xef\xbb\xbf{"type":"counter","value":5}',  # BOM: not JSON (as in Go)
        b'{"type":"counter",}',
        b'{"nested":{"type":"counter","value":1}}',
        b"\xff\xfe binary counter",
    ],
)
def test_blob_bodies(body: bytes) -> None:
    assert plain(body) is None


def test_deeply_nested_body_is_a_blob() -> None:
    assert plain(b'{"type":"counter","value":1,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}") is None
    assert plain(b'{"type":"counter","value":1,' + b'"a":{' * 50_000 + b"}" * 50_001) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"type":"counter","value":5}', (5, None, None)),
        (b'{"type":"counter","value":0}', (0, None, None)),
        (b'{"type":"counter","value":-7,"min":-10,"max":10}', (-7, -10, 10)),
        (b'{"type":"counter","value":5,"min":null,"max":null}', (5, None, None)),
        (b'{"type":"counter","value":5,"min":1}', (5, 1, None)),
        (b'{"type":"counter","value":5,"max":9}', (5, None, 9)),
        (b'{"TYPE":"counter","Value":3,"MIN":1,"mAx":5}', (3, 1, 5)),
        (b' \n\t{ "type" : "counter" , "value" : 3 } \r\n', (3, None, None)),
        (b'{"type":"\\u0063ounter","value":3}', (3, None, None)),  # escapes decode
        (b'{"\\u0074ype":"counter","value":3}', (3, None, None)),
        (b'{"type":"counter","value":1,"extra":1.5,"data":[true,null,1e9]}', (1, None, None)),
        (b'{"type":"counter","value":1,"value":2}', (2, None, None)),  # last duplicate wins
        (b'{"type":"counter","value":1,"VALUE":2}', (2, None, None)),
        (b'{"type":"blob","TYPE":"counter","value":4}', (4, None, None)),
        (b'{"type":"counter","value":"x","value":4}', (4, None, None)),  # overwritten bad value
        (b'{"type":"counter","value":-0}', (0, None, None)),
        (b'{"type":"counter","value":%d}' % I64_MAX, (I64_MAX, None, None)),
        (b'{"type":"counter","value":%d}' % I64_MIN, (I64_MIN, None, None)),
        (b'{"type":"counter","value":0,"min":%d,"max":%d}' % (I64_MIN, I64_MAX), (0, I64_MIN, I64_MAX)),
        # bounds are not validated here (the engine answers InvalidBounds / ValueOutOfBounds)
        (b'{"type":"counter","value":50,"min":10,"max":1}', (50, 10, 1)),
        (b'{"type":"counter","value":1,"x":"\xff"}', (1, None, None)),  # invalid UTF-8 in a string
    ],
)
def test_counter_specs(body: bytes, expected: tuple) -> None:
    assert plain(body) == expected
    assert named(body) == expected


def test_duplicate_type_last_wins() -> None:
    assert plain(b'{"type":"counter","Type":"blob","value":1}') is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"counter"}',
        b'{"type":"counter","value":null}',
        b'{"type":"counter","min":1,"max":5}',
        b'{"type":"counter","min":"x"}',  # value is checked first
        b'{"type":"counter","value":1,"value":null}',
    ],
)
def test_missing_value_plain(body: bytes) -> None:
    with pytest.raises(errors.ApiError) as ei:
        plain(body)
    assert ei.value == errors.MISSING_COUNTER_VALUE


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"counter","value":"5"}',
        b'{"type":"counter","value":5.0}',
        b'{"type":"counter","value":5.5}',
        b'{"type":"counter","value":1e3}',
        b'{"type":"counter","value":1E3}',
        b'{"type":"counter","value":-0.0}',
        b'{"type":"counter","value":true}',
        b'{"type":"counter","value":false}',
        b'{"type":"counter","value":[]}',
        b'{"type":"counter","value":{}}',
        b'{"type":"counter","value":NaN}',
        b'{"type":"counter","value":Infinity}',
        b'{"type":"counter","value":-Infinity}',
        b'{"type":"counter","value":%d}' % (I64_MAX + 1),
        b'{"type":"counter","value":%d}' % (I64_MIN - 1),
        b'{"type":"counter","value":' + b"9" * 5000 + b"}",
        b'{"type":"counter","value":1,"min":1.5}',
        b'{"type":"counter","value":1,"min":"0"}',
        b'{"type":"counter","value":1,"max":true}',
        b'{"type":"counter","value":1,"max":%d}' % (I64_MAX + 1),
        b'{"type":"counter","value":1,"min":[0]}',
    ],
)
def test_ill_typed_spec(body: bytes) -> None:
    for fn in (plain, named):
        with pytest.raises(errors.ApiError) as ei:
            fn(body)
        assert ei.value == errors.INVALID_COUNTER_SPEC


# --- counter detection: create-by-name ----------------------------------------------------------------


def test_named_needs_json_content_type() -> None:
    assert named(b'{"type":"counter","value":5}', json_ct=False) is None
    assert named(b'{"type":"counter"}', json_ct=False) is None
    assert named(b'{"type":"counter","value":"x"}', json_ct=False) is None


def test_named_missing_value_is_zero() -> None:
    assert named(b'{"type":"counter"}') == (0, None, None)
    assert named(b'{"type":"counter","value":null,"min":-1}') == (0, -1, None)


@pytest.mark.parametrize("body", [b"", b"   ", b"x", b"[1]", b"{}", b'{"type":"blob"}', b'{"type":"Counter"}'])
def test_named_blobs(body: bytes) -> None:
    assert named(body) is None


def test_plain_ignores_content_type_flag() -> None:
    assert parse_counter_spec(b'{"type":"counter","value":5}', False, True) == (5, None, None)
    assert parse_counter_spec(b"xyz", False, True) is None


def test_errors_have_no_accumulating_traceback() -> None:
    for _ in range(3):
        with pytest.raises(errors.ApiError):
            plain(b'{"type":"counter"}')
    tb = errors.MISSING_COUNTER_VALUE.__traceback__
    depth = 0
    while tb is not None:
        depth += 1
        tb = tb.tb_next
    assert depth <= 3
    assert errors.MISSING_COUNTER_VALUE.__context__ is None


# --- delta ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"delta":5}', 5),
        (b'{"delta":-5}', -5),
        (b'{"delta":0}', 0),
        (b'{"delta":-0}', 0),
        (b"{}", 0),
        (b" { } ", 0),
        (b'{"other":1}', 0),
        (b'{"DELTA":7}', 7),
        (b'{"Delta":7,"delta":8}', 8),
        (b'{"delta":"x","delta":9}', 9),
        (b'{"delta":1,"x":1.5}', 1),
        (b' {\n"delta" :\t12 }\r\n', 12),
        (b'{"delta":%d}' % I64_MAX, I64_MAX),
        (b'{"delta":%d}' % I64_MIN, I64_MIN),
        (b'{"\\u0064elta":3}', 3),
    ],
)
def test_parse_delta(body: bytes, expected: int) -> None:
    assert parse_delta(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" ",
        b"5",
        b"null",
        b"true",
        b'"x"',
        b"[]",
        b'[{"delta":1}]',
        b"not json",
        b'{"delta":1.0}',
        b'{"delta":1.5}',
        b'{"delta":1e3}',
        b'{"delta":true}',
        b'{"delta":false}',
        b'{"delta":null}',
        b'{"delta":"5"}',
        b'{"delta":[1]}',
        b'{"delta":{}}',
        b'{"delta":NaN}',
        b'{"delta":%d}' % (I64_MAX + 1),
        b'{"delta":%d}' % (I64_MIN - 1),
        b'{"delta":' + b"1" * 3000 + b"}",
        b'{"delta":01}',
        b'{"delta":1}x',
        b'{"delta":1',
        b"[" * 100_000,
        b"\xef\xbb\xbf{}",
    ],
)
def test_parse_delta_invalid(body: bytes) -> None:
    with pytest.raises(errors.ApiError) as ei:
        parse_delta(body)
    assert ei.value == errors.INVALID_JSON_REQUEST


@given(st.integers(min_value=I64_MIN - 10, max_value=I64_MAX + 10), st.sampled_from(["", " ", "\n", "\t ", "\r\n"]))
def test_parse_delta_fast_path_agrees_with_parser(v: int, ws: str) -> None:
    body = f'{ws}{{{ws}"delta"{ws}:{ws}{v}{ws}}}{ws}'.encode()
    if I64_MIN <= v <= I64_MAX:
        assert parse_delta(body) == v
        assert parse_set(body.replace(b"delta", b"value")) == v
        # The full parser (forced by an extra key) agrees with the fast path.
        assert parse_delta(f'{{"x":0,"delta":{v}}}'.encode()) == v
    else:
        with pytest.raises(errors.ApiError):
            parse_delta(body)
        with pytest.raises(errors.ApiError):
            parse_set(body.replace(b"delta", b"value"))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
        max_leaves=8,
    )
)
def test_parse_delta_against_reference_model(doc: object) -> None:
    body = json.dumps(doc).encode()
    expected: int | None
    if isinstance(doc, dict):
        d = {k.lower(): v for k, v in doc.items()}
        if "delta" not in d:
            expected = 0
        else:
            v = d["delta"]
            ok = type(v) is int and I64_MIN <= v <= I64_MAX
            expected = v if ok else None
    else:
        expected = None
    if expected is None:
        with pytest.raises(errors.ApiError):
            parse_delta(body)
    else:
        assert parse_delta(body) == expected


# --- set ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"value":5}', 5),
        (b'{"VALUE":-5}', -5),
        (b'{"value":0,"min":3}', 0),
        (b'{"value":1,"Value":2}', 2),
        (b'{"value":%d}' % I64_MAX, I64_MAX),
        (b'{"value":%d}' % I64_MIN, I64_MIN),
    ],
)
def test_parse_set(body: bytes, expected: int) -> None:
    assert parse_set(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"delta":1}',
        b'{"value":null}',
        b'{"value":5.0}',
        b'{"value":1e1}',
        b'{"value":"5"}',
        b'{"value":true}',
        b"[5]",
        b"5",
        b"null",
        b'{"value":%d}' % (I64_MAX + 1),
        b'{"value":%d}' % (I64_MIN - 1),
    ],
)
def test_parse_set_invalid(body: bytes) -> None:
    with pytest.raises(errors.ApiError) as ei:
        parse_set(body)
    assert ei.value == errors.INVALID_JSON_COUNTER_UPDATE


# --- rendering ------------------------------------------------------------------------------------------


def test_render_internal() -> None:
    assert render_internal(0, None, None) == b'{"value":0}'
    assert len(render_internal(0, None, None)) == 11
    assert render_internal(50, 0, 100) == b'{"value":50,"min":0,"max":100}'
    assert render_internal(-3, -5, None) == b'{"value":-3,"min":-5}'
    assert render_internal(3, None, 5) == b'{"value":3,"max":5}'
    assert render_internal(I64_MIN, I64_MIN, I64_MAX) == (
        b'{"value":-9223372036854775808,"min":-9223372036854775808,"max":9223372036854775807}'
    )


def test_render_snapshot() -> None:
    assert render_snapshot(0, 1, None, None) == b'{"value":0,"version":1}\n'
    assert render_snapshot(5, 3, 0, 10) == b'{"value":5,"version":3,"min":0,"max":10}\n'
    assert render_snapshot(5, 3, 0, None) == b'{"value":5,"version":3,"min":0}\n'
    assert render_snapshot(5, 3, None, 10) == b'{"value":5,"version":3,"max":10}\n'


def test_render_add() -> None:
    assert render_add(1, 2, False, None, None) == b'{"value":1,"version":2,"bounded":false}\n'
    assert render_add(10, 2, True, 0, 10) == b'{"value":10,"version":2,"bounded":true,"min":0,"max":10}\n'
    assert render_add(0, 9, True, 0, None) == b'{"value":0,"version":9,"bounded":true,"min":0}\n'
    assert render_add(-1, 9, False, None, 5) == b'{"value":-1,"version":9,"bounded":false,"max":5}\n'


@given(
    st.integers(I64_MIN, I64_MAX),
    st.integers(1, 2**40),
    st.booleans(),
    st.none() | st.integers(I64_MIN, I64_MAX),
    st.none() | st.integers(I64_MIN, I64_MAX),
)
def test_rendered_json_is_valid_and_ordered(v: int, n: int, b: bool, lo: int | None, hi: int | None) -> None:
    want = {"value": v}
    if lo is not None:
        want["min"] = lo
    if hi is not None:
        want["max"] = hi
    internal = render_internal(v, lo, hi)
    assert list(json.loads(internal).items()) == list(want.items())
    assert b" " not in internal
    snap = render_snapshot(v, n, lo, hi)
    assert snap.endswith(b"\n") and snap.count(b"\n") == 1
    assert list(json.loads(snap)) == ["value", "version", *[k for k in ("min", "max") if k in want]]
    add = json.loads(render_add(v, n, b, lo, hi))
    assert list(add) == ["value", "version", "bounded", *[k for k in ("min", "max") if k in want]]
    assert add["bounded"] is b and add["value"] == v and add["version"] == n
    # The internal representation round-trips through the spec parser.
    spec = b'{"type":"counter",' + internal[1:]
    assert plain(spec) == (v, lo, hi)


def test_module_constants() -> None:
    assert cj.INT64_MIN == I64_MIN and cj.INT64_MAX == I64_MAX
