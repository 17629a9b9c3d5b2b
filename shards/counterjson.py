"""Counter JSON: request parsing and response rendering (SPEC §2.6, §2.7 with the §13/§14 fixes).

Parsing rules shared by every counter body (§2.6): the top level must be a JSON object; keys match
case-insensitively (for our ASCII key names ``str.lower`` is exact); unknown keys are ignored; the last
duplicate wins; an integer field must be a JSON integer (no fraction, no exponent) within int64.

Errors are the predefined :mod:`bigbunny.errors` constants. They are raised with a cleared traceback
and never from inside an ``except`` block, so the shared singletons don't accumulate tracebacks or
exception contexts.
"""

from __future__ import annotations

import json
import re
from typing import TypeGuard

from bigbunny import errors

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

Counter = tuple[int, int | None, int | None]


class _Bad:
    """Marker for a JSON number that is not an int64 integer (float, exponent, NaN, huge)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<bad number>"


_BAD = _Bad()


def _parse_int(s: str) -> int | _Bad:
    # int64 has at most 19 digits (+ sign); JSON forbids leading zeros, so longer is out of range.
    # Bounding the length also keeps int() clear of the interpreter's max-digits limit.
    if len(s) > 20:
        return _BAD
    v = int(s)
    if INT64_MIN <= v <= INT64_MAX:
        return v
    return _BAD


def _bad_number(_s: str) -> _Bad:
    return _BAD


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Case-insensitive keys, last duplicate wins (dict assignment in document order).
    return {k.lower(): v for k, v in pairs}


_decode = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_float=_bad_number,
    parse_int=_parse_int,
    parse_constant=_bad_number,
).decode

_WS = b" \t\n\r"


def _load_object(body: bytes) -> dict[str, object] | None:
    """Decode ``body`` as a JSON object (lower-cased keys); None if it is not one."""
    # Invalid UTF-8 is replaced rather than refused (what Go's decoder does inside strings); a BOM
    # stays a character the JSON decoder refuses, as in Go.
    try:
        obj = _decode(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return obj if type(obj) is dict else None


def _is_int(v: object) -> TypeGuard[int]:
    # bool is an int subclass: exclude it. Out-of-range or non-integer numbers are _BAD already.
    return type(v) is int


# --- create --------------------------------------------------------------------------------------


def parse_counter_spec(body: bytes, named: bool, json_content_type: bool) -> Counter | None:
    """Counter detection for create / create-by-name; returns ``(value, min, max)`` or None (a blob).

    A counter spec is a JSON object whose ``type`` is exactly the string ``"counter"``. Plain create
    (``named`` false): ``value`` absent/null → ``MISSING_COUNTER_VALUE``. create-by-name: only with a
    JSON Content-Type and a non-empty body; missing ``value`` → 0. In both, an ill-typed ``value``,
    ``min`` or ``max`` → ``INVALID_COUNTER_SPEC`` (§13 fix 3); null bounds are unbounded. Bounds
    validation (InvalidBounds / ValueOutOfBounds) is the engine's job.
    """
    if named and not json_content_type:
        return None
    # Fast exits: the object must start with '{' and contain the literal "counter" unless some
    # string uses escapes (then the full parse decides).
    stripped = body.lstrip(_WS)
    if not stripped or stripped[0] != 0x7B:  # '{'
        return None
    if b"counter" not in body and b"\\" not in body:
        return None
    obj = _load_object(body)
    if obj is None or obj.get("type") != "counter":
        return None
    value = obj.get("value")
    if value is None:
        if not named:
            raise errors.MISSING_COUNTER_VALUE.with_traceback(None)
        value = 0
    vmin = obj.get("min")
    vmax = obj.get("max")
    if not _is_int(value) or (vmin is not None and not _is_int(vmin)) or (vmax is not None and not _is_int(vmax)):
        raise errors.INVALID_COUNTER_SPEC.with_traceback(None)
    return value, vmin, vmax


# --- increment / decrement / set -----------------------------------------------------------------

# Fast paths for the canonical compact bodies; anything else goes through the full parser.
_FAST = rb'[ \t\n\r]*\{[ \t\n\r]*"%s"[ \t\n\r]*:[ \t\n\r]*(-?(?:0|[1-9][0-9]{0,18}))[ \t\n\r]*\}[ \t\n\r]*'
_DELTA_RE = re.compile(_FAST % b"delta")
_VALUE_RE = re.compile(_FAST % b"value")


def _int_field(body: bytes, fast: re.Pattern[bytes], key: str, empty_ok: bool) -> int | None:
    """The int64 field ``key`` of a JSON object body; None if the body is invalid."""
    m = fast.fullmatch(body)
    if m is not None:
        v = int(m.group(1))
        return v if INT64_MIN <= v <= INT64_MAX else None
    obj = _load_object(body)
    if obj is None:
        return None
    if key not in obj:
        return 0 if empty_ok else None
    field = obj[key]
    return field if _is_int(field) else None


def parse_delta(body: bytes) -> int:
    """``{"delta":int64}`` → delta; ``{}`` → 0. Anything else (incl. null) → ``INVALID_JSON_REQUEST``."""
    v = _int_field(body, _DELTA_RE, "delta", True)
    if v is None:
        raise errors.INVALID_JSON_REQUEST.with_traceback(None)
    return v


def parse_set(body: bytes) -> int:
    """``{"value":int64}`` → value. Anything else, ``{}`` included (§13 fix 3) →
    ``INVALID_JSON_COUNTER_UPDATE``."""
    v = _int_field(body, _VALUE_RE, "value", False)
    if v is None:
        raise errors.INVALID_JSON_COUNTER_UPDATE.with_traceback(None)
    return v


# --- rendering -----------------------------------------------------------------------------------


def render_internal(value: int, vmin: int | None, vmax: int | None) -> bytes:
    """Internal representation (stored, counted for memory): ``{"value":V[,"min":m][,"max":M]}``."""
    if vmin is None:
        if vmax is None:
            return b'{"value":%d}' % value
        return b'{"value":%d,"max":%d}' % (value, vmax)
    if vmax is None:
        return b'{"value":%d,"min":%d}' % (value, vmin)
    return b'{"value":%d,"min":%d,"max":%d}' % (value, vmin, vmax)


def _bounds(vmin: int | None, vmax: int | None) -> bytes:
    if vmin is None:
        return b"}\n" if vmax is None else b',"max":%d}\n' % vmax
    if vmax is None:
        return b',"min":%d}\n' % vmin
    return b',"min":%d,"max":%d}\n' % (vmin, vmax)


def render_snapshot(value: int, version: int, vmin: int | None, vmax: int | None) -> bytes:
    """Snapshot body: ``{"value":V,"version":N[,"min":m][,"max":M]}`` + newline (§2.1, §2.5)."""
    if vmin is None and vmax is None:
        return b'{"value":%d,"version":%d}\n' % (value, version)
    return b'{"value":%d,"version":%d' % (value, version) + _bounds(vmin, vmax)


def render_add(value: int, version: int, bounded: bool, vmin: int | None, vmax: int | None) -> bytes:
    """Increment/decrement body: ``{"value":V,"version":N,"bounded":B[,"min":m][,"max":M]}`` + newline.

    ``bounded`` is always present (§14).
    """
    if bounded:
        head = b'{"value":%d,"version":%d,"bounded":true' % (value, version)
    else:
        head = b'{"value":%d,"version":%d,"bounded":false' % (value, version)
    return head + _bounds(vmin, vmax)
