"""Store IDs (SPEC §4).

A store ID is ``v1:<key_id>:<ct>`` where ``ct`` is base64url-nopad of AES-SIV(``<shard_id>:<unique_id>``)
under a key derived per (master key, site, customer). The ID therefore only opens for the customer and
site it was minted for, and hides which shard holds the store. All crypto comes from ``cryptography``
(HKDF-SHA256 and AES-SIV, the §4.3 recipe); nothing is hand-rolled.

``StoreIdCodec.open`` runs on every ID-taking request, so it caches the derived cipher per
(key_id, customer) and rejects malformed IDs with a single precompiled regex before touching crypto.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "CUSTOMER_RE",
    "KEY_ID_RE",
    "SHARD_ID_RE",
    "SITE_RE",
    "UNIQUE_ID_RE",
    "KeySet",
    "MintedId",
    "OpenedId",
    "StoreIdCodec",
    "StoreIdError",
    "associated_data",
    "derive_key",
    "hkdf_info",
    "valid_customer",
]


class OpenedId(NamedTuple):
    """What a store ID seals (SPEC §4.2): the shard id and the unique id."""

    shard_id: str
    unique_id: str


class MintedId(NamedTuple):
    """A freshly minted ID with the parts it seals, so the minter need not open it again."""

    store_id: str
    shard_id: str
    unique_id: str


# --- formats (SPEC §4.1); always used with fullmatch -------------------------------------------
CUSTOMER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SITE_RE = re.compile(r"[a-z0-9-]{1,16}")
KEY_ID_RE = re.compile(r"[0-9a-z][0-9a-z_-]{0,15}")
SHARD_ID_RE = re.compile(r"[A-Za-z0-9_-]{11}")
UNIQUE_ID_RE = re.compile(r"[A-Za-z0-9_-]{16}")

# The whole Open rule set for the string part in one pass: exactly "v1", a well-formed key id, and a
# ct of the base64url alphabet without "=". A valid plaintext is always 28 bytes, so a valid ct is
# always 44 bytes = exactly 59 characters; any other length could only fail later (AES-SIV auth or the
# plaintext split), so rejecting it here accepts exactly the same set of IDs (and implies the
# ``len(ct) % 4 != 1`` rule). Neither the key id nor ct can hold ":", so this equals "split at the
# first two colons".
_ID_RE = re.compile(r"v1:([0-9a-z][0-9a-z_-]{0,15}):([A-Za-z0-9_-]{59})")
# Plaintext: split at the first ":" into an 11-char shard id and a 16-char unique id (bytes, so any
# non-ASCII byte fails too, which covers "ASCII-decode").
_PT_RE = re.compile(rb"([A-Za-z0-9_-]{11}):([A-Za-z0-9_-]{16})")

_TO_STD_B64 = bytes.maketrans(b"-_", b"+/")
_TO_URL_B64 = bytes.maketrans(b"+/", b"-_")
_INFO_PREFIX = b"storeid:v1:enc:"
_AAD_PREFIX = b"storeid:v1:"
_DEFAULT_CACHE_LIMIT = 50_000
# Minting draws 20 random bytes per ID; getrandom() is a syscall that costs more than the AES-SIV seal
# in a VM, so the bytes come from one os.urandom() call per 256 IDs (still the OS CSPRNG, never reused).
_RANDOM_CHUNK = 20 * 256


class StoreIdError(ValueError):
    """A store ID could not be sealed or opened; for ``open`` the message is deliberately opaque."""


def valid_customer(customer: str) -> bool:
    """True if ``customer`` is a well-formed tenant ID (``^[A-Za-z0-9_-]{1,64}$``)."""
    return CUSTOMER_RE.fullmatch(customer) is not None


@dataclass(frozen=True)
class KeySet:
    """The configured master keys (id → 32 bytes) and the id used to seal new IDs.

    Old keys stay here after rotation so IDs sealed with them keep opening.
    """

    keys: dict[str, bytes]
    current: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise StoreIdError("key set is empty")
        for key_id, key in self.keys.items():
            if KEY_ID_RE.fullmatch(key_id) is None:
                raise StoreIdError(f"invalid key ID {key_id!r}")
            if len(key) != 32:
                raise StoreIdError(f"key {key_id!r} has invalid length {len(key)} bytes, expected 32")
        if self.current not in self.keys:
            raise StoreIdError(f"current key ID {self.current!r} not found in key set")
        # Private copy: a caller mutating its dict later must not change the key set under us.
        object.__setattr__(self, "keys", dict(self.keys))

    @classmethod
    def dev(cls) -> KeySet:
        """The public dev key set (id ``0`` = bytes 0..31): dev IDs interoperate across implementations."""
        return cls({"0": bytes(range(32))}, "0")

    def __hash__(self) -> int:
        return hash((self.current, tuple(sorted(self.keys.items()))))

    def __repr__(self) -> str:
        # Never show key material (this object ends up inside Config, which gets logged).
        return f"KeySet(ids={sorted(self.keys)!r}, current={self.current!r})"


def hkdf_info(customer: str, site: str, verify_site: bool = True) -> bytes:
    """HKDF info: ``storeid:v1:enc:<site>:<customer>``, or without the site when verification is off."""
    if verify_site:
        return _INFO_PREFIX + site.encode() + b":" + customer.encode()
    return _INFO_PREFIX + customer.encode()


def derive_key(master: bytes, info: bytes) -> bytes:
    """HKDF-SHA256(master, no salt, info) → the 32-byte AES-SIV key (AES-128-SIV)."""
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(master)


def associated_data(customer: str) -> bytes:
    """The single AES-SIV associated-data item: ``storeid:v1:<customer>``."""
    return _AAD_PREFIX + customer.encode()


_INVALID = "invalid store ID"


class StoreIdCodec:
    """Seals, mints and opens store IDs for one site with one key set (SPEC §4.1).

    ``verify_site=False`` (``--disable-site-verification``) leaves the site out of the key derivation.
    Thread-safe under the GIL: the cache is a plain dict and a racing clear only costs a re-derivation.
    """

    __slots__ = ("keys", "site", "verify_site", "_site_b", "_cache", "_cache_limit", "_rand", "_rand_pos")

    def __init__(self, keys: KeySet, site: str, verify_site: bool = True, cache_limit: int = _DEFAULT_CACHE_LIMIT):
        if SITE_RE.fullmatch(site) is None:
            raise StoreIdError(f"invalid site {site!r}")
        self.keys = keys
        self.site = site
        self.verify_site = verify_site
        self._site_b = site.encode()
        self._cache: dict[tuple[str, str], tuple[AESSIV, list[bytes]]] = {}
        self._cache_limit = max(1, cache_limit)
        self._rand = b""
        self._rand_pos = 0

    def _cipher(self, key_id: str, customer: str) -> tuple[AESSIV, list[bytes]]:
        """Derived cipher + AD list for (key_id, customer); validates the customer on a cache miss."""
        entry = self._cache.get((key_id, customer))
        if entry is not None:
            return entry
        master = self.keys.keys.get(key_id)
        if master is None:
            raise StoreIdError(_INVALID)
        if CUSTOMER_RE.fullmatch(customer) is None:
            raise StoreIdError(_INVALID)
        info = hkdf_info(customer, self.site, self.verify_site)
        entry = (AESSIV(derive_key(master, info)), [associated_data(customer)])
        cache = self._cache
        if len(cache) >= self._cache_limit:
            cache.clear()
        cache[(key_id, customer)] = entry
        return entry

    def _seal_plaintext(self, customer: str, plaintext: bytes) -> str:
        current = self.keys.current
        entry = self._cache.get((current, customer))
        if entry is None:
            try:
                entry = self._cipher(current, customer)
            except StoreIdError:
                raise StoreIdError(f"cannot seal store ID: invalid customer {customer!r}") from None
        sealed = binascii.b2a_base64(entry[0].encrypt(plaintext, entry[1]), newline=False)
        return f"v1:{current}:{sealed.translate(_TO_URL_B64)[:59].decode('ascii')}"  # 44 bytes → 59 chars + "="

    def seal(self, customer: str, shard_id: str, unique_id: str) -> str:
        """Seal (shard_id, unique_id) for ``customer`` with the current key; StoreIdError on bad input."""
        if SHARD_ID_RE.fullmatch(shard_id) is None:
            raise StoreIdError(f"cannot seal store ID: invalid shard ID {shard_id!r}")
        if UNIQUE_ID_RE.fullmatch(unique_id) is None:
            raise StoreIdError(f"cannot seal store ID: invalid unique ID {unique_id!r}")
        return self._seal_plaintext(customer, f"{shard_id}:{unique_id}".encode("ascii"))

    def mint_parts(self, customer: str) -> MintedId:
        """Mint a fresh ID with the parts it seals, so callers need not re-open it."""
        pos = self._rand_pos
        if pos + 20 > len(self._rand):
            self._rand, pos = os.urandom(_RANDOM_CHUNK), 0
        self._rand_pos = pos + 20
        raw = self._rand[pos : pos + 20]
        shard = base64.urlsafe_b64encode(raw[:8])[:11]  # 8 bytes → 11 chars + one "="
        unique = base64.urlsafe_b64encode(raw[8:])  # 12 bytes → 16 chars, no padding
        store_id = self._seal_plaintext(customer, shard + b":" + unique)
        return MintedId(store_id, shard.decode("ascii"), unique.decode("ascii"))

    def mint(self, customer: str) -> str:
        """Mint a fresh store ID: random 8-byte shard id and 12-byte unique id, sealed for ``customer``."""
        return self.mint_parts(customer).store_id

    def open(self, store_id: str, customer: str) -> OpenedId:
        """Open ``store_id`` for ``customer`` on this site.

        Raises StoreIdError("invalid store ID") on any failure, without saying which rule failed.
        """
        m = _ID_RE.fullmatch(store_id)
        if m is None:
            raise StoreIdError(_INVALID)
        key_id, ct = m.group(1, 2)
        entry = self._cache.get((key_id, customer))
        cipher, aad = entry if entry is not None else self._cipher(key_id, customer)
        try:
            # 59 chars + one "=" is a multiple of 4; non-canonical trailing bits are tolerated. The regex
            # already limited ct to ASCII base64url, so translating to the standard alphabet is safe.
            pt = cipher.decrypt(binascii.a2b_base64((ct + "=").encode("ascii").translate(_TO_STD_B64)), aad)
        except (InvalidTag, ValueError, binascii.Error):
            raise StoreIdError(_INVALID) from None
        p = _PT_RE.fullmatch(pt)
        if p is None:
            raise StoreIdError(_INVALID)
        return OpenedId(p.group(1).decode("ascii"), p.group(2).decode("ascii"))

    def is_valid(self, store_id: str, customer: str) -> bool:
        """True if ``store_id`` opens for ``customer`` here."""
        try:
            self.open(store_id, customer)
        except StoreIdError:
            return False
        return True
