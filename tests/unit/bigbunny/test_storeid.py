"""Store IDs and routing against the reference vectors (SPEC §4, §5) plus rotation and mint round trips."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from helpers import REPO

from bigbunny.storeid import (
    CUSTOMER_RE,
    KEY_ID_RE,
    SITE_RE,
    KeySet,
    StoreIdCodec,
    StoreIdError,
    associated_data,
    derive_key,
    hkdf_info,
    valid_customer,
)

_CANDIDATES = [
    os.environ.get("BBD_STOREID_VECTORS", ""),
    str(REPO / "tests" / "data" / "storeid-vectors.json"),  # copy of shared/spec
]
VECTORS_PATH = next((Path(p) for p in _CANDIDATES if p and Path(p).is_file()), None)
VECTORS = (
    json.loads(VECTORS_PATH.read_text())
    if VECTORS_PATH
    else {"seal_vectors": [], "open_cases": [], "routing_vectors": []}
)


def _codec(vec: dict) -> StoreIdCodec:
    keys = KeySet({vec["key_id"]: bytes.fromhex(vec["key_hex"])}, vec["key_id"])
    return StoreIdCodec(keys, vec["site"], verify_site=not vec["disable_site_verification"])


def _ct_bytes(store_id: str) -> bytes:
    ct = store_id.split(":", 2)[2]
    return base64.urlsafe_b64decode(ct + "=" * (-len(ct) % 4))


def test_vector_file_is_complete() -> None:
    assert VECTORS_PATH is not None, f"storeid-vectors.json not found in {_CANDIDATES}"
    assert len(VECTORS["seal_vectors"]) >= 6
    assert len(VECTORS["open_cases"]) >= 11
    assert len(VECTORS["routing_vectors"]) >= 6
    assert bytes.fromhex(VECTORS["dev_key_hex"]) == KeySet.dev().keys["0"]


@pytest.mark.parametrize("vec", VECTORS["seal_vectors"], ids=lambda v: v["name"])
def test_seal_vector(vec: dict) -> None:
    verify = not vec["disable_site_verification"]
    info = hkdf_info(vec["customer"], vec["site"], verify)
    assert info == vec["hkdf_info"].encode()
    assert derive_key(bytes.fromhex(vec["key_hex"]), info).hex() == vec["derived_key_hex"]
    assert associated_data(vec["customer"]) == vec["aad"].encode()

    codec = _codec(vec)
    store_id = codec.seal(vec["customer"], vec["shard_id"], vec["unique_id"])
    assert store_id == vec["store_id"]
    assert len(store_id) == 63 + len(vec["key_id"])
    assert _ct_bytes(store_id).hex() == vec["ciphertext_hex"]
    assert f"{vec['shard_id']}:{vec['unique_id']}" == vec["plaintext"]
    assert vec["open_ok"] is True
    assert codec.open(store_id, vec["customer"]) == (vec["shard_id"], vec["unique_id"])


@pytest.mark.parametrize("case", VECTORS["open_cases"], ids=lambda v: v["name"])
def test_open_case(case: dict) -> None:
    codec = _codec(case)
    if case["open_ok"]:
        shard_id, unique_id = codec.open(case["store_id"], case["customer"])
        assert len(shard_id) == 11 and len(unique_id) == 16
    else:
        with pytest.raises(StoreIdError) as info:
            codec.open(case["store_id"], case["customer"])
        assert str(info.value) == case.get("error", "invalid store ID")
    assert codec.is_valid(case["store_id"], case["customer"]) is case["open_ok"]


# --- behaviour beyond the vectors ---------------------------------------------------------------
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


def test_rotation_old_ids_still_open() -> None:
    old = StoreIdCodec(KeySet({"a": KEY_A}, "a"), "local")
    old_id = old.mint("acme")
    assert old_id.startswith("v1:a:")

    rotated = StoreIdCodec(KeySet({"a": KEY_A, "b": KEY_B}, "b"), "local")
    new_id = rotated.mint("acme")
    assert new_id.startswith("v1:b:")
    assert rotated.open(old_id, "acme") == old.open(old_id, "acme")
    rotated.open(new_id, "acme")
    # the old node cannot open IDs sealed with a key it doesn't have
    with pytest.raises(StoreIdError):
        old.open(new_id, "acme")
    # dropping the old key retires its IDs
    retired = StoreIdCodec(KeySet({"b": KEY_B}, "b"), "local")
    with pytest.raises(StoreIdError):
        retired.open(old_id, "acme")


def test_mint_round_trip() -> None:
    codec = StoreIdCodec(KeySet.dev(), "local")
    seen, parts = set(), set()
    for _ in range(600):  # crosses the buffered-randomness refill (every 256 IDs) twice
        store_id, shard_id, unique_id = codec.mint_parts("test-customer")
        assert len(store_id) == 64
        assert codec.open(store_id, "test-customer") == (shard_id, unique_id)
        seen.add(store_id)
        parts.add(shard_id)
        parts.add(unique_id)
    assert len(seen) == 600
    assert len(parts) == 1200  # no random bytes are ever used twice
    sid = codec.mint("acme")
    shard_id, unique_id = codec.open(sid, "acme")
    assert codec.seal("acme", shard_id, unique_id) == sid  # deterministic (SIV, no nonce)


def test_wrong_customer_and_site_fail() -> None:
    codec = StoreIdCodec(KeySet.dev(), "local")
    sid = codec.mint("acme")
    for customer in ("acme2", "ACME", "", "acme\n", "a" * 65, "acme corp"):
        with pytest.raises(StoreIdError):
            codec.open(sid, customer)
    with pytest.raises(StoreIdError):
        StoreIdCodec(KeySet.dev(), "nyc01").open(sid, "acme")
    # with verification off the site is irrelevant, but a site-bound ID doesn't open
    nosite = StoreIdCodec(KeySet.dev(), "local", verify_site=False)
    with pytest.raises(StoreIdError):
        nosite.open(sid, "acme")
    portable = nosite.mint("acme")
    assert StoreIdCodec(KeySet.dev(), "elsewhere", verify_site=False).open(portable, "acme")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s + "\n",
        lambda s: " " + s,
        lambda s: s[:-1],
        lambda s: s + "A",
        lambda s: s.replace("v1:", "V1:"),
        lambda s: s.replace("v1:", "v1::"),
        lambda s: s.replace(":0:", ":00:"),
        lambda s: s[:10] + "+" + s[11:],
        lambda s: s[:10] + "/" + s[11:],
        lambda s: s[:10] + "=" + s[11:],
        lambda s: s[:10] + "é" + s[11:],
        lambda s: "",
        lambda s: "v1",
        lambda s: "v1:0",
        lambda s: "v1::" + s[5:],
    ],
)
def test_open_rejects_malformed(mutate) -> None:
    codec = StoreIdCodec(KeySet.dev(), "local")
    sid = codec.seal("acme", "AAAAAAAAAAA", "AAAAAAAAAAAAAAAA")
    with pytest.raises(StoreIdError, match="^invalid store ID$"):
        codec.open(mutate(sid), "acme")


def test_open_rejects_bad_plaintext() -> None:
    """A correctly sealed but malformed plaintext (wrong split) is still invalid."""
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    key = derive_key(KeySet.dev().keys["0"], hkdf_info("acme", "local"))
    for pt in (b"AAAAAAAAAAAA:AAAAAAAAAAAAAAA", b"AAAAAAAAAAA.AAAAAAAAAAAAAAAA", b"AAAAAAAAAAA:AAAAAAAAAAAAAAA\xff"):
        ct = AESSIV(key).encrypt(pt, [associated_data("acme")])
        sid = "v1:0:" + base64.urlsafe_b64encode(ct).rstrip(b"=").decode()
        with pytest.raises(StoreIdError):
            StoreIdCodec(KeySet.dev(), "local").open(sid, "acme")


def test_seal_validates_inputs() -> None:
    codec = StoreIdCodec(KeySet.dev(), "local")
    with pytest.raises(StoreIdError):
        codec.seal("acme", "short", "AAAAAAAAAAAAAAAA")
    with pytest.raises(StoreIdError):
        codec.seal("acme", "AAAAAAAAAAA", "AAAAAAAAAAAAAAA=")
    with pytest.raises(StoreIdError):
        codec.seal("bad customer", "AAAAAAAAAAA", "AAAAAAAAAAAAAAAA")
    with pytest.raises(StoreIdError):
        codec.mint("")
    with pytest.raises(StoreIdError):
        StoreIdCodec(KeySet.dev(), "Local")


def test_cache_is_bounded_and_transparent() -> None:
    codec = StoreIdCodec(KeySet.dev(), "local", cache_limit=3)
    ids = {f"c{i}": codec.mint(f"c{i}") for i in range(10)}
    assert len(codec._cache) <= 3
    for customer, sid in ids.items():
        codec.open(sid, customer)
        assert len(codec._cache) <= 3


def test_keyset_validation_and_repr() -> None:
    with pytest.raises(StoreIdError):
        KeySet({"a": b"short"}, "a")
    with pytest.raises(StoreIdError):
        KeySet({"a": KEY_A}, "b")
    with pytest.raises(StoreIdError):
        KeySet({"A": KEY_A}, "A")
    with pytest.raises(StoreIdError):
        KeySet({}, "")
    ks = KeySet({"a": KEY_A, "b": KEY_B}, "b")
    assert KEY_A.hex() not in repr(ks) and repr(KEY_A) not in repr(ks)
    assert hash(ks) == hash(KeySet({"b": KEY_B, "a": KEY_A}, "b"))


def test_validation_patterns() -> None:
    assert valid_customer("Cust_42-x") and valid_customer("a" * 64)
    assert not valid_customer("") and not valid_customer("a" * 65) and not valid_customer("acme\n")
    assert CUSTOMER_RE.fullmatch("acme.corp") is None
    assert SITE_RE.fullmatch("nyc-01") and not SITE_RE.fullmatch("NYC") and not SITE_RE.fullmatch("a" * 17)
    assert KEY_ID_RE.fullmatch("k2024_a-b") and not KEY_ID_RE.fullmatch("_k") and not KEY_ID_RE.fullmatch("a" * 17)
