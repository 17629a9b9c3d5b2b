"""Daemon configuration: flag values + environment → a validated, immutable :class:`Config` (SPEC §8, §14).

``build_config`` is the single place where start-up policy lives (env fallbacks, dev-mode defaults,
production guardrails, key parsing, peers). Every refusal is a :class:`ConfigError` whose text is the
exact one-line fatal message of SPEC §8, so the CLI only prints ``str(err)`` to stderr and exits 1.
"""

from __future__ import annotations

import grp
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, TypedDict

from bigbunny.durations import format_duration, format_ttl, parse_duration, parse_ttl_seconds
from bigbunny.storeid import KEY_ID_RE, SITE_RE, KeySet

__all__ = [
    "ConfigError",
    "Config",
    "Peer",
    "build_config",
    "format_addr",
    "parse_host_port",
    "parse_peers",
    "parse_store_keys",
]

log = logging.getLogger("bbd.config")

ENV_STORE_KEYS = "SERIALD_STORE_KEYS"
ENV_STORE_KEY_CURRENT = "SERIALD_STORE_KEY_CURRENT"
ENV_ROUTING_SECRET = "SERIALD_ROUTING_SECRET"
ENV_INTERNAL_TOKEN = "SERIALD_INTERNAL_TOKEN"
ENV_ADMIN_UDS = "SERIALD_ADMIN_UDS"

# The option behind each environment variable build_config reads (a reload reports a file value they override).
OPTION_ENV = {
    "store_keys": ENV_STORE_KEYS,
    "store_key_current": ENV_STORE_KEY_CURRENT,
    "routing_secret": ENV_ROUTING_SECRET,
    "internal_token": ENV_INTERNAL_TOKEN,
    "admin_uds": ENV_ADMIN_UDS,
}
ENV_MIN_REPLICAS_MAX_LAG = "SERIALD_MIN_REPLICAS_MAX_LAG"
MAX_REPLICA_WAIT = 4.0  # a write relayed by the secondary must be answered before its 5 s relay timeout

LOG_LEVELS = ("debug", "info", "warn", "warning", "error")
LOG_FORMATS = ("text", "json")
MAX_TTL = 9_223_372_036  # the largest TTL a request may carry (supervisor.front.requests.MAX_TTL)


class ConfigError(Exception):
    """A fatal start-up error; ``str()`` is exactly the message the daemon prints before exiting 1."""


@dataclass(frozen=True)
class Peer:
    """The other node: its host ID and its inter-node ``host:port``."""

    id: str
    address: str


def _default_shards() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Config:
    """Validated daemon settings. Defaults are SPEC §8's (durations in seconds) with the public dev keys.

    Secrets are excluded from ``repr`` so a logged Config never leaks them; use :meth:`summary` for logs.
    """

    host_id: str = "host1"
    site: str = "local"
    uds: str = "/tmp/bbd.sock"
    uds_mode: int = 0o600
    uds_group: int | None = None  # gid of --uds-group; None = the daemon's own group
    admin_uds: str = ""  # "" = the admin routes stay on the data socket
    metrics_addr: tuple[str, int] | None = None  # (host, port) of --metrics-addr; None = off
    tcp: str = ":8080"
    peers: tuple[Peer, ...] = ()
    memory_limit: int = 0
    customer_memory_quota: int = 0
    keys: KeySet = field(default_factory=KeySet.dev)
    routing_secret: bytes = field(default=b"dev", repr=False)
    internal_token: str = field(default="", repr=False)
    dev: bool = False
    rate_limit: float = 100.0
    burst_size: int = 200
    tombstone_customer_limit: int = 0
    tombstone_global_limit: int = 0
    disable_site_verification: bool = False
    http_read_timeout: float = 30.0
    http_read_header_timeout: float = 10.0
    http_write_timeout: float = 30.0
    http_idle_timeout: float = 120.0
    http_max_header_bytes: int = 1_048_576
    shards: int = field(default_factory=_default_shards)
    lock_timeout: float = 0.5
    max_store_size: int = 2048
    log_level: str = "info"
    log_format: str = "text"
    gc_interval: float = 30.0
    default_ttl: int = 1_209_600  # seconds (14 d): a create without a TTL header
    max_ttl: int = 0  # seconds; 0 = no bound beyond the int64 wrap (requests.MAX_TTL)
    min_replicas_max_lag: float = 0.0  # §15: 0 = off
    replica_wait_timeout: float = 1.0

    @property
    def verify_site(self) -> bool:
        """Whether the site takes part in store-ID key derivation and inter-node checks."""
        return not self.disable_site_verification

    def summary(self) -> str:
        """One line for the start-up log. Shows key *ids* only; never key bytes, the secret or the token."""

        def dur(seconds: float) -> str:
            return format_duration(round(seconds * 1e9))

        peers = ",".join(p.address if p.id == p.address else f"{p.id}@{p.address}" for p in self.peers) or "-"
        parts = [
            f"host_id={self.host_id}",
            f"site={self.site}",
            f"uds={self.uds}",
            f"uds_mode={self.uds_mode:04o}",
            f"uds_group={'-' if self.uds_group is None else self.uds_group}",
            f"admin_uds={self.admin_uds or '-'}",
            f"metrics_addr={format_addr(self.metrics_addr) if self.metrics_addr else '-'}",
            f"tcp={self.tcp}",
            f"peers={peers}",
            f"dev={str(self.dev).lower()}",
            f"site_verification={'off' if self.disable_site_verification else 'on'}",
            f"keys={','.join(sorted(self.keys.keys))}",
            f"current_key={self.keys.current}",
            f"routing_secret={'set' if self.routing_secret else 'empty'}",
            f"internal_token={'set' if self.internal_token else 'empty'}",
            f"shards={self.shards}",
            f"memory_limit={self.memory_limit}",
            f"customer_memory_quota={self.customer_memory_quota}",
            f"rate_limit={self.rate_limit:g}",
            f"burst_size={self.burst_size}",
            f"tombstone_limits={self.tombstone_customer_limit}/{self.tombstone_global_limit}",
            f"lock_timeout={dur(self.lock_timeout)}",
            f"max_store_size={self.max_store_size}",
            f"ttl=default:{self.default_ttl}s,max:{f'{self.max_ttl}s' if self.max_ttl else 'off'}",
            f"http_timeouts=read:{dur(self.http_read_timeout)},header:{dur(self.http_read_header_timeout)},"
            f"write:{dur(self.http_write_timeout)},idle:{dur(self.http_idle_timeout)}",
            f"http_max_header_bytes={self.http_max_header_bytes}",
            f"log={self.log_level}/{self.log_format}",
            f"min_replicas_max_lag={dur(self.min_replicas_max_lag)}",
            f"replica_wait_timeout={dur(self.replica_wait_timeout)}",
        ]
        return " ".join(parts)


# --- helpers -----------------------------------------------------------------------------------
_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}


def _q(s: str) -> str:
    """Quote like Go's ``%q`` (the reference's messages use it): printable text verbatim, the rest escaped."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 0xDC80 <= o <= 0xDCFF:  # undecodable argv byte (surrogateescape) → Go's \xNN for bad UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def _go_rune(b: int) -> str:
    """Go's ``%#U`` of a byte value, as in ``encoding/hex: invalid byte: U+0067 'g'``."""
    ch = chr(b)
    return f"U+{b:04X} '{ch}'" if ch.isprintable() else f"U+{b:04X}"


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _decode_hex(text: str) -> bytes:
    """Decode hex like Go's ``hex.DecodeString`` (no whitespace, either case), with Go's error texts."""
    src = text.encode("utf-8", "surrogateescape")
    j = 1
    while j < len(src):
        for b in (src[j - 1], src[j]):
            if b not in _HEX:
                raise ValueError(f"encoding/hex: invalid byte: {_go_rune(b)}")
        j += 2
    if len(src) % 2 == 1:
        if src[j - 1] not in _HEX:
            raise ValueError(f"encoding/hex: invalid byte: {_go_rune(src[j - 1])}")
        raise ValueError("encoding/hex: odd length hex string")
    return bytes.fromhex(src.decode("ascii"))


def parse_store_keys(spec: str, current: str = "") -> KeySet:
    """Parse ``id:hex,…`` (SPEC §4.2) into a KeySet; ConfigError with the §8 message on the first problem.

    Entries are trimmed and empty ones skipped; later duplicates win. The current key is ``current``
    (trimmed, must exist) or else the lexicographically greatest id.
    """
    prefix = "failed to parse store keys: "
    keys: dict[str, bytes] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        key_id, sep, hex_key = entry.partition(":")
        if not sep:
            raise ConfigError(f"{prefix}invalid key format: {_q(entry)} (expected 'id:hexkey')")
        if KEY_ID_RE.fullmatch(key_id) is None:
            raise ConfigError(f"{prefix}invalid key ID: {_q(key_id)} (must be 1-16 chars: 0-9, a-z, _, -)")
        try:
            key = _decode_hex(hex_key)
        except ValueError as exc:
            raise ConfigError(f"{prefix}invalid hex key for ID {_q(key_id)}: {exc}") from None
        if len(key) != 32:
            raise ConfigError(f"{prefix}key {_q(key_id)} has invalid length {len(key)} bytes, expected 32")
        keys[key_id] = key
    if not keys:
        raise ConfigError(f"{prefix}no valid keys parsed")
    return KeySet(keys, _current_key(keys, current))


def _current_key(keys: Mapping[str, bytes], current: str) -> str:
    prefix = "failed to parse store keys: "
    current = current.strip()
    if not current:
        return max(keys)  # ids are ASCII, so str order is byte order ("b" > "a" > "10")
    if KEY_ID_RE.fullmatch(current) is None:
        raise ConfigError(f"{prefix}invalid current key ID: {_q(current)}")
    if current not in keys:
        raise ConfigError(f"{prefix}current key ID {_q(current)} not found in key set")
    return current


def parse_peers(spec: str | Iterable[str]) -> tuple[Peer, ...]:
    """Parse ``id@host:port`` / ``host:port`` entries (comma lists); malformed ones are skipped with a warning."""
    items = [spec] if isinstance(spec, str) else list(spec)
    peers: list[Peer] = []
    for item in items:
        for raw in item.split(","):
            entry = raw.strip()
            if not entry:
                continue
            if "@" in entry:
                peer_id, _, address = entry.partition("@")
                if not peer_id or not address:
                    log.warning("malformed peer %s (empty id or address), skipping", _q(entry))
                    continue
            else:
                peer_id = address = entry
            peers.append(Peer(peer_id, address))
    return tuple(peers)


def parse_host_port(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``[v6]:PORT`` / ``:PORT`` (all interfaces) → ``(host, port)``; ValueError if malformed."""
    host, sep, port = spec.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError("want HOST:PORT with a port of 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 host goes in brackets: [::1]:9100")
    return host, int(port)


def format_addr(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _socket_mode(value: Any) -> int:
    """``--uds-mode``: octal text (``0660``, ``660``) or an int; the owner must keep read and write."""
    text = str(value).strip() if not isinstance(value, int) else f"{value:o}"
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"invalid --uds-mode {_q(str(value))} (octal permission bits, e.g. 0660)")
    if mode & 0o600 != 0o600:
        raise ConfigError(f"invalid --uds-mode {mode:04o} (the owner needs read and write: 06xx)")
    return mode


def _group_id(name: str) -> int | None:
    """``--uds-group``: a group name or a numeric gid that exists on this host; "" = keep the daemon's."""
    name = name.strip()
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    if name.isascii() and name.isdigit():
        try:
            return grp.getgrgid(int(name)).gr_gid
        except (KeyError, OverflowError):
            pass
    raise ConfigError(f"unknown group {_q(name)} (--uds-group)")


def _ttl(value: Any, flag: str) -> int:
    """A TTL flag's value in whole seconds: from the flag parser (int) or text such as ``14d``."""
    if isinstance(value, int | float):
        seconds = value
    else:
        try:
            seconds = parse_ttl_seconds(str(value).strip())
        except ValueError as e:
            raise ConfigError(f"invalid {flag} {_q(str(value))}: {e}") from None
    if seconds != int(seconds) or not 0 <= seconds <= MAX_TTL:
        raise ConfigError(f"invalid {flag} {_q(str(value))} (whole seconds, 0 to {MAX_TTL})")
    return int(seconds)


def _listen_settings(opt: Any, uds: str, admin: str) -> dict[str, Any]:
    """The admin socket (``admin``: flag, else environment, else file), the data socket's permissions and
    the metrics listener (issue 13)."""
    admin = admin.strip()
    if admin:
        if os.path.abspath(admin) == os.path.abspath(uds):
            raise ConfigError(f"--admin-uds must differ from --uds (both are {_q(admin)})")
        if os.path.isdir(admin):
            raise ConfigError(f"invalid --admin-uds {_q(admin)}: is a directory")
        parent = os.path.dirname(os.path.abspath(admin))
        if not os.path.isdir(parent):
            raise ConfigError(f"invalid --admin-uds {_q(admin)}: directory {_q(parent)} does not exist")
    metrics_addr = None
    raw = str(opt("metrics_addr") or "").strip()
    if raw:
        try:
            metrics_addr = parse_host_port(raw)
        except ValueError as e:
            raise ConfigError(f"invalid --metrics-addr {_q(raw)}: {e}") from None
    return {
        "admin_uds": admin,
        "uds_mode": _socket_mode(opt("uds_mode")),
        "uds_group": _group_id(str(opt("uds_group") or "")),
        "metrics_addr": metrics_addr,
    }


class _TtlSettings(TypedDict):
    default_ttl: int
    max_ttl: int


def _ttl_settings(opt: Any) -> _TtlSettings:
    default_ttl = _ttl(opt("default_ttl"), "--default-ttl")
    max_ttl = _ttl(opt("max_ttl"), "--max-ttl")
    if default_ttl < 1:
        raise ConfigError("invalid --default-ttl 0 (must be at least 1s)")
    if max_ttl and default_ttl > max_ttl:
        raise ConfigError(f"--default-ttl {format_ttl(default_ttl)} is above --max-ttl {format_ttl(max_ttl)}")
    return {"default_ttl": default_ttl, "max_ttl": max_ttl}


def _production_error(flag: str, env: str) -> ConfigError:
    return ConfigError(f"production mode requires --{flag} or {env} (use --dev for dev mode)")


# --- the builder -------------------------------------------------------------------------------
def build_config(opts: Mapping[str, Any], env: Mapping[str, str], file: Mapping[str, Any] | None = None) -> Config:
    """Turn parsed flag values (missing/None = default), the environment and the ``--config`` file's
    values (see ``bigbunny.configfile``) into a Config: a flag wins over its variable, which wins
    over the file.

    Fatal problems raise ConfigError in SPEC §8's order, then the §14 additions (site, peers, ...).
    """
    file = file or {}

    def opt(name: str) -> Any:
        value = opts.get(name)
        if value is not None:
            return value
        if file.get(name) is not None:
            return file[name]
        f = Config.__dataclass_fields__[name]
        return f.default if f.default_factory is MISSING else f.default_factory()

    def text(name: str, env_name: str) -> str:
        value = opts.get(name)
        value = "" if value is None else str(value)
        return value or env.get(env_name, "") or str(file.get(name) or "")

    dev = bool(opt("dev"))
    store_keys = text("store_keys", ENV_STORE_KEYS)
    key_current = text("store_key_current", ENV_STORE_KEY_CURRENT)
    secret = text("routing_secret", ENV_ROUTING_SECRET)
    token = text("internal_token", ENV_INTERNAL_TOKEN)
    dev_keys = store_keys.strip() == "dev" or (dev and not store_keys)

    # 1. production guardrails (lifted by --dev, and by --store-keys=dev except for the secret, below)
    if not dev and not store_keys:
        raise _production_error("store-keys", ENV_STORE_KEYS)
    if not dev and not dev_keys:
        if not secret:
            raise _production_error("routing-secret", ENV_ROUTING_SECRET)
        if not token:
            raise _production_error("internal-token", ENV_INTERNAL_TOKEN)

    # 2. keys
    if dev_keys:
        dev_set = KeySet.dev()
        keys = KeySet(dev_set.keys, _current_key(dev_set.keys, key_current))
    else:
        keys = parse_store_keys(store_keys, key_current)

    # 3. routing secret: --dev defaults it, dev keys alone do not
    if not secret:
        if not dev:
            raise ConfigError("routing secret required: use --routing-secret or --dev")
        secret = "dev"
    if not token:
        log.warning("internal token is empty: inter-node messages are unauthenticated (dev only)")

    # 4. §14 additions: identity, site (§13 #19), peers, engine limits
    host_id = str(opt("host_id"))
    if not host_id:
        raise ConfigError("host ID must not be empty (--host-id)")
    site = str(opt("site"))
    if SITE_RE.fullmatch(site) is None:
        raise ConfigError(f"invalid site {_q(site)} (must match ^[a-z0-9-]{{1,16}}$)")
    peers = parse_peers(opt("peers") or "")
    if len(peers) > 1:
        raise ConfigError(f"only one peer is supported (got {len(peers)})")
    shards = int(opt("shards"))
    if shards < 1:
        raise ConfigError(f"invalid shard count {shards} (--shards must be at least 1)")
    lock_timeout = float(opt("lock_timeout"))
    if not lock_timeout > 0:
        raise ConfigError(f"invalid lock timeout {format_duration(round(lock_timeout * 1e9))} (must be > 0)")
    max_store_size = int(opt("max_store_size"))
    if max_store_size < 1:
        raise ConfigError(f"invalid max store size {max_store_size} (must be at least 1)")
    log_level = str(opt("log_level")).lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"invalid log level {_q(log_level)} (must be one of {', '.join(LOG_LEVELS)})")
    log_format = str(opt("log_format")).lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"invalid log format {_q(log_format)} (must be one of {', '.join(LOG_FORMATS)})")

    for name in ("http_read_timeout", "http_read_header_timeout", "http_write_timeout", "http_idle_timeout"):
        if not float(opt(name)) > 0:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"invalid {flag} {format_duration(round(float(opt(name)) * 1e9))} (must be > 0)")
    if int(opt("http_max_header_bytes")) < 1:
        raise ConfigError(f"invalid --http-max-header-bytes {opt('http_max_header_bytes')} (must be at least 1)")
    gc_interval = float(opt("gc_interval"))
    if not gc_interval > 0:
        raise ConfigError(f"invalid gc interval {format_duration(round(gc_interval * 1e9))} (must be > 0)")

    min_lag, wait = _durability(opts, env, peers)

    disable_site_verification = bool(opt("disable_site_verification"))
    if disable_site_verification:
        log.warning("site verification disabled: store IDs and inter-node messages are not bound to the site")
    uds = str(opt("uds"))

    return Config(
        host_id=host_id,
        site=site,
        uds=uds,
        **_listen_settings(opt, uds, text("admin_uds", ENV_ADMIN_UDS)),
        **_ttl_settings(opt),
        tcp=str(opt("tcp")),
        peers=peers,
        memory_limit=int(opt("memory_limit")),
        customer_memory_quota=int(opt("customer_memory_quota")),
        keys=keys,
        routing_secret=secret.encode("utf-8", "surrogateescape"),
        internal_token=token,
        dev=dev,
        rate_limit=float(opt("rate_limit")),
        burst_size=int(opt("burst_size")),
        tombstone_customer_limit=int(opt("tombstone_customer_limit")),
        tombstone_global_limit=int(opt("tombstone_global_limit")),
        disable_site_verification=disable_site_verification,
        http_read_timeout=float(opt("http_read_timeout")),
        http_read_header_timeout=float(opt("http_read_header_timeout")),
        http_write_timeout=float(opt("http_write_timeout")),
        http_idle_timeout=float(opt("http_idle_timeout")),
        http_max_header_bytes=int(opt("http_max_header_bytes")),
        shards=shards,
        lock_timeout=lock_timeout,
        max_store_size=max_store_size,
        log_level=log_level,
        log_format=log_format,
        gc_interval=gc_interval,
        min_replicas_max_lag=min_lag,
        replica_wait_timeout=wait,
    )


def _durability(opts: Mapping[str, Any], env: Mapping[str, str], peers: tuple[Peer, ...]) -> tuple[float, float]:
    """§15: ``--min-replicas-max-lag`` (or its env var; 0 = off, needs a peer) and ``--replica-wait-timeout``."""
    raw = opts.get("min_replicas_max_lag")
    if raw is None and env.get(ENV_MIN_REPLICAS_MAX_LAG):
        try:
            raw = parse_duration(env[ENV_MIN_REPLICAS_MAX_LAG])
        except ValueError as e:
            raise ConfigError(f"invalid {ENV_MIN_REPLICAS_MAX_LAG}: {e}") from None
    min_lag = float(raw or 0.0)
    if min_lag < 0:
        raise ConfigError(f"invalid --min-replicas-max-lag {format_duration(round(min_lag * 1e9))} (must be >= 0)")
    if min_lag and not peers:
        raise ConfigError("--min-replicas-max-lag needs a peer (--peers)")
    wait = opts.get("replica_wait_timeout")
    wait = 1.0 if wait is None else float(wait)
    if not 0 < wait <= MAX_REPLICA_WAIT:
        raise ConfigError(
            f"invalid --replica-wait-timeout {format_duration(round(wait * 1e9))} "
            "(must be > 0 and at most 4s, below the 5 s relay timeout)"
        )
    return min_lag, wait
