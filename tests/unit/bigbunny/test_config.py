"""build_config: fatal messages and their order (SPEC §8), env fallbacks, dev mode, keys (§4.2), peers, §14."""

from __future__ import annotations

import logging
import os

import pytest

from bigbunny.config import Config, ConfigError, Peer, build_config, parse_peers, parse_store_keys
from bigbunny.storeid import KeySet

K1 = "11" * 32
K2 = "22" * 32
PROD = {"store_keys": f"a:{K1}", "routing_secret": "rs-SECRET-value", "internal_token": "tok-SECRET-value"}


def err(opts: dict, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(opts, env or {})
    return str(info.value)


# --- defaults ------------------------------------------------------------------------------------
def test_config_defaults() -> None:
    c = Config()
    assert (c.host_id, c.site, c.uds, c.tcp, c.peers) == ("host1", "local", "/tmp/bbd.sock", ":8080", ())
    assert (c.memory_limit, c.customer_memory_quota, c.dev) == (0, 0, False)
    assert c.keys == KeySet.dev() and c.routing_secret == b"dev" and c.internal_token == ""
    assert (c.rate_limit, c.burst_size) == (100.0, 200)
    assert (c.tombstone_customer_limit, c.tombstone_global_limit, c.disable_site_verification) == (0, 0, False)
    assert (c.http_read_timeout, c.http_read_header_timeout, c.http_write_timeout, c.http_idle_timeout) == (
        30.0,
        10.0,
        30.0,
        120.0,
    )
    assert c.http_max_header_bytes == 1_048_576
    assert c.shards == max(1, os.cpu_count() or 1)
    assert (c.lock_timeout, c.max_store_size, c.log_level, c.log_format) == (0.5, 2048, "info", "text")
    assert c.verify_site


def test_production_config_all_options() -> None:
    opts = {
        **PROD,
        "host_id": "node1",
        "site": "nyc-01",
        "uds": "/run/bbd.sock",
        "tcp": "10.0.0.1:8081",
        "peers": "node2@10.0.0.2:8081",
        "memory_limit": 1 << 30,
        "customer_memory_quota": 1 << 20,
        "rate_limit": 5.5,
        "burst_size": 7,
        "tombstone_customer_limit": 3,
        "tombstone_global_limit": 9,
        "disable_site_verification": False,
        "http_read_timeout": 1.0,
        "http_read_header_timeout": 2.0,
        "http_write_timeout": 3.0,
        "http_idle_timeout": 4.0,
        "http_max_header_bytes": 4096,
        "shards": 3,
        "lock_timeout": 0.25,
        "max_store_size": 4096,
        "log_level": "DEBUG",
        "log_format": "json",
    }
    c = build_config(opts, {})
    assert c.host_id == "node1" and c.site == "nyc-01" and c.uds == "/run/bbd.sock" and c.tcp == "10.0.0.1:8081"
    assert c.peers == (Peer("node2", "10.0.0.2:8081"),)
    assert c.keys == KeySet({"a": bytes.fromhex(K1)}, "a")
    assert c.routing_secret == b"rs-SECRET-value" and c.internal_token == "tok-SECRET-value"
    assert (c.memory_limit, c.customer_memory_quota, c.rate_limit, c.burst_size) == (1 << 30, 1 << 20, 5.5, 7)
    assert (c.tombstone_customer_limit, c.tombstone_global_limit) == (3, 9)
    assert (c.http_read_timeout, c.http_read_header_timeout, c.http_write_timeout, c.http_idle_timeout) == (1, 2, 3, 4)
    assert (c.http_max_header_bytes, c.shards, c.lock_timeout, c.max_store_size) == (4096, 3, 0.25, 4096)
    assert (c.log_level, c.log_format, c.dev) == ("debug", "json", False)


def test_none_values_mean_default() -> None:
    c = build_config({**PROD, "host_id": None, "site": None, "shards": None, "peers": None}, {})
    assert c.host_id == "host1" and c.site == "local" and c.shards >= 1 and c.peers == ()


# --- fatal errors in §8 order --------------------------------------------------------------------
def test_production_guardrails_in_order() -> None:
    assert err({}) == "production mode requires --store-keys or SERIALD_STORE_KEYS (use --dev for dev mode)"
    # keys present (even malformed): the secret is checked next, before the keys are parsed
    assert err({"store_keys": "garbage"}) == (
        "production mode requires --routing-secret or SERIALD_ROUTING_SECRET (use --dev for dev mode)"
    )
    assert err({"store_keys": "garbage", "routing_secret": "x"}) == (
        "production mode requires --internal-token or SERIALD_INTERNAL_TOKEN (use --dev for dev mode)"
    )
    # then key parsing
    assert err({"store_keys": "garbage", "routing_secret": "x", "internal_token": "t"}) == (
        "failed to parse store keys: invalid key format: \"garbage\" (expected 'id:hexkey')"
    )


def test_all_fatal_messages() -> None:
    base = {"routing_secret": "x", "internal_token": "t"}
    p = "failed to parse store keys: "
    cases = {
        "nocolon": p + "invalid key format: \"nocolon\" (expected 'id:hexkey')",
        f"Bad:{K1}": p + 'invalid key ID: "Bad" (must be 1-16 chars: 0-9, a-z, _, -)',
        f":{K1}": p + 'invalid key ID: "" (must be 1-16 chars: 0-9, a-z, _, -)',
        f"{'a' * 17}:{K1}": p + f'invalid key ID: "{"a" * 17}" (must be 1-16 chars: 0-9, a-z, _, -)',
        f"_a:{K1}": p + 'invalid key ID: "_a" (must be 1-16 chars: 0-9, a-z, _, -)',
        "a:zz": p + "invalid hex key for ID \"a\": encoding/hex: invalid byte: U+007A 'z'",
        "a:0": p + 'invalid hex key for ID "a": encoding/hex: odd length hex string',
        "a:00 11": p + "invalid hex key for ID \"a\": encoding/hex: invalid byte: U+0020 ' '",
        "a:0x00": p + "invalid hex key for ID \"a\": encoding/hex: invalid byte: U+0078 'x'",
        "a:00": p + 'key "a" has invalid length 1 bytes, expected 32',
        "a:": p + 'key "a" has invalid length 0 bytes, expected 32',
        f"a:{K1}00": p + 'key "a" has invalid length 33 bytes, expected 32',
        " , ,": p + "no valid keys parsed",
        ",": p + "no valid keys parsed",
        f"a:{K1},b:{K2},c": p + "invalid key format: \"c\" (expected 'id:hexkey')",
    }
    for keys, message in cases.items():
        assert err({**base, "store_keys": keys}) == message, keys
    good = {**base, "store_keys": f"a:{K1}"}
    assert err({**good, "store_key_current": "B"}) == p + 'invalid current key ID: "B"'
    assert err({**good, "store_key_current": "b"}) == p + 'current key ID "b" not found in key set'


def test_dev_keys_without_dev_need_a_secret() -> None:
    assert err({"store_keys": "dev"}) == "routing secret required: use --routing-secret or --dev"
    # dev keys lift the token guardrail
    c = build_config({"store_keys": "dev", "routing_secret": "rs"}, {})
    assert c.keys == KeySet.dev() and c.routing_secret == b"rs" and c.internal_token == "" and not c.dev


def test_site_and_peer_and_engine_errors() -> None:
    assert err({**PROD, "site": "NYC"}) == 'invalid site "NYC" (must match ^[a-z0-9-]{1,16}$)'
    assert err({**PROD, "site": "a" * 17}) == f'invalid site "{"a" * 17}" (must match ^[a-z0-9-]{{1,16}}$)'
    assert err({**PROD, "site": ""}) == 'invalid site "" (must match ^[a-z0-9-]{1,16}$)'
    assert err({**PROD, "peers": "a@h:1,b@h:2"}) == "only one peer is supported (got 2)"
    assert err({**PROD, "peers": "h:1, h:2 ,h:3"}) == "only one peer is supported (got 3)"
    assert "host ID" in err({**PROD, "host_id": ""})
    assert "shard" in err({**PROD, "shards": 0})
    assert "lock timeout" in err({**PROD, "lock_timeout": 0})
    assert "lock timeout" in err({**PROD, "lock_timeout": -1.0})
    assert "max store size" in err({**PROD, "max_store_size": 0})
    assert "log level" in err({**PROD, "log_level": "loud"})
    assert "log format" in err({**PROD, "log_format": "xml"})


def test_messages_are_single_line() -> None:
    msg = err({"routing_secret": "x", "internal_token": "t", "store_keys": "a\nb"})
    assert "\n" not in msg and msg == "failed to parse store keys: invalid key format: \"a\\nb\" (expected 'id:hexkey')"


# --- env fallback ----------------------------------------------------------------------------------
ENV = {
    "SERIALD_STORE_KEYS": f"e:{K2}",
    "SERIALD_STORE_KEY_CURRENT": "e",
    "SERIALD_ROUTING_SECRET": "env-secret",
    "SERIALD_INTERNAL_TOKEN": "env-token",
}


def test_env_fallback_when_flags_empty() -> None:
    c = build_config({}, ENV)
    assert c.keys == KeySet({"e": bytes.fromhex(K2)}, "e")
    assert c.routing_secret == b"env-secret" and c.internal_token == "env-token"
    c = build_config({"store_keys": "", "routing_secret": "", "internal_token": "", "store_key_current": ""}, ENV)
    assert c.routing_secret == b"env-secret"


def test_flags_win_over_env() -> None:
    env = {k: v for k, v in ENV.items() if k != "SERIALD_STORE_KEY_CURRENT"}
    c = build_config(PROD, env)
    assert c.keys.current == "a" and set(c.keys.keys) == {"a"}
    c = build_config({**PROD, "store_key_current": "a"}, ENV)  # flag current wins over env current
    assert c.keys.current == "a"
    assert c.routing_secret == b"rs-SECRET-value" and c.internal_token == "tok-SECRET-value"


def test_env_current_applies_to_flag_keys() -> None:
    # each value falls back independently; an env current that doesn't exist in the flag keys is fatal
    with pytest.raises(ConfigError, match='current key ID "e" not found'):
        build_config({**PROD, "store_key_current": ""}, {"SERIALD_STORE_KEY_CURRENT": "e"})


def test_env_each_guardrail() -> None:
    env = {"SERIALD_STORE_KEYS": f"a:{K1}"}
    assert "--routing-secret" in err({}, env)
    env["SERIALD_ROUTING_SECRET"] = "s"
    assert "--internal-token" in err({}, env)
    env["SERIALD_INTERNAL_TOKEN"] = "t"
    assert build_config({}, env).internal_token == "t"


# --- dev mode --------------------------------------------------------------------------------------
def test_dev_mode_defaults(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bbd.config"):
        c = build_config({"dev": True}, {})
    assert c.dev and c.keys == KeySet.dev() and c.routing_secret == b"dev" and c.internal_token == ""
    assert any("token" in r.getMessage() for r in caplog.records)


def test_dev_mode_with_explicit_values() -> None:
    c = build_config({"dev": True, "store_keys": f"a:{K1}", "routing_secret": "s", "internal_token": "t"}, {})
    assert set(c.keys.keys) == {"a"} and c.routing_secret == b"s" and c.internal_token == "t"
    c = build_config({"dev": True}, {"SERIALD_STORE_KEYS": f"x:{K1}"})
    assert set(c.keys.keys) == {"x"}  # env keys count as given
    c = build_config({"dev": True, "store_keys": "dev"}, {})
    assert c.keys == KeySet.dev()


def test_dev_mode_still_validates() -> None:
    assert (
        err({"dev": True, "store_keys": "a:00"})
        == 'failed to parse store keys: key "a" has invalid length 1 bytes, expected 32'
    )
    assert err({"dev": True, "site": "Bad"}).startswith('invalid site "Bad"')
    assert (
        err({"dev": True, "store_key_current": "k"})
        == 'failed to parse store keys: current key ID "k" not found in key set'
    )
    assert build_config({"dev": True, "store_key_current": "0"}, {}).keys.current == "0"


# --- key parsing (§4.2) ------------------------------------------------------------------------------
def test_key_parsing_edge_cases() -> None:
    ks = parse_store_keys(f" a:{K1} ,, b:{K2.upper()} ,")
    assert ks.keys == {"a": bytes.fromhex(K1), "b": bytes.fromhex(K2)} and ks.current == "b"
    # later duplicate wins
    ks = parse_store_keys(f"a:{K1},a:{K2}")
    assert ks.keys == {"a": bytes.fromhex(K2)}
    # greatest id in byte order: of b, a, 10 → b
    ks = parse_store_keys(f"10:{K1},b:{K1},a:{K1}")
    assert ks.current == "b"
    assert parse_store_keys(f"10:{K1},9:{K1}").current == "9"
    assert parse_store_keys(f"k-1:{K1},k_1:{K1}").current == "k_1"
    # explicit current is trimmed
    assert parse_store_keys(f"a:{K1},b:{K2}", "  a ").current == "a"
    # split at the first colon only: the rest is the hex (which then fails)
    with pytest.raises(ConfigError, match="invalid byte: U\\+003A ':'"):
        parse_store_keys(f"a:{K1[:10]}:{K1[11:]}")
    # mixed case hex
    assert parse_store_keys("a:" + "aB" * 32).keys["a"] == bytes([0xAB]) * 32


def test_rotation_config() -> None:
    c = build_config({**PROD, "store_keys": f"2024:{K1},2025:{K2}"}, {})
    assert c.keys.current == "2025" and set(c.keys.keys) == {"2024", "2025"}
    c = build_config({**PROD, "store_keys": f"2024:{K1},2025:{K2}", "store_key_current": "2024"}, {})
    assert c.keys.current == "2024"


# --- peers ---------------------------------------------------------------------------------------
def test_peers_parsing(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_peers("") == ()
    assert parse_peers(" node2@10.0.0.2:8081 ") == (Peer("node2", "10.0.0.2:8081"),)
    assert parse_peers("10.0.0.2:8081") == (Peer("10.0.0.2:8081", "10.0.0.2:8081"),)
    assert parse_peers(["a@h:1", "b@h:2,c@h:3"]) == (Peer("a", "h:1"), Peer("b", "h:2"), Peer("c", "h:3"))
    with caplog.at_level(logging.WARNING, logger="bbd.config"):
        peers = parse_peers(" , @x, y@ ,node2@h:1,")
    assert peers == (Peer("node2", "h:1"),)
    warnings = [r.getMessage() for r in caplog.records if r.name == "bbd.config"]
    assert warnings == [
        'malformed peer "@x" (empty id or address), skipping',
        'malformed peer "y@" (empty id or address), skipping',
    ]


def test_malformed_peers_are_never_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bbd.config"):
        c = build_config({**PROD, "peers": "@x,node2@h:1,y@"}, {})
    assert c.peers == (Peer("node2", "h:1"),)
    assert sum("malformed peer" in r.getMessage() for r in caplog.records) == 2


# --- summary ---------------------------------------------------------------------------------------
def test_summary_hides_secrets() -> None:
    c = build_config({**PROD, "store_keys": f"old:{K1},new:{K2}", "peers": "node2@h:1", "host_id": "node1"}, {})
    line = c.summary()
    assert "\n" not in line
    assert "node1" in line and "node2@h:1" in line and "old" in line and "new" in line
    for secret in ("rs-SECRET-value", "tok-SECRET-value", K1, K2, K1.upper(), repr(bytes.fromhex(K1))):
        assert secret not in line
        assert secret not in repr(c)
        assert secret not in str(c)


def test_summary_dev() -> None:
    line = build_config({"dev": True}, {}).summary()
    assert "dev=true" in line and "internal_token=empty" in line
    assert bytes(range(32)).hex() not in line


def test_config_error_is_plain_exception() -> None:
    e = ConfigError("boom")
    assert str(e) == "boom" and not isinstance(e, ValueError)


# --- issue 13: sockets, metrics listener, TTL bounds ----------------------------------------------------
def test_issue13_defaults() -> None:
    c = build_config({"dev": True}, {})
    assert (c.uds_mode, c.uds_group, c.admin_uds, c.metrics_addr) == (0o600, None, "", None)
    assert (c.default_ttl, c.max_ttl) == (1_209_600, 0)
    assert "uds_mode=0600 uds_group=- admin_uds=- metrics_addr=-" in c.summary()
    assert "ttl=default:1209600s,max:off" in c.summary()


def test_admin_uds_from_flag_or_environment(tmp_path) -> None:
    flag, env = str(tmp_path / "a"), str(tmp_path / "b")
    assert build_config({"dev": True, "admin_uds": flag}, {"SERIALD_ADMIN_UDS": env}).admin_uds == flag
    assert build_config({"dev": True}, {"SERIALD_ADMIN_UDS": env}).admin_uds == env
    rel = os.path.relpath(Config().uds)  # the same file spelled another way is still the same socket
    assert err({"dev": True, "admin_uds": rel}) == f'--admin-uds must differ from --uds (both are "{rel}")'


@pytest.mark.parametrize(
    ("value", "mode"), [("0660", 0o660), ("660", 0o660), ("0600", 0o600), (0o640, 0o640), ("0666", 0o666)]
)
def test_uds_mode(value: object, mode: int) -> None:
    assert build_config({"dev": True, "uds_mode": value}, {}).uds_mode == mode


@pytest.mark.parametrize("value", ["0400", "0060", "1777", "rw", "08", "-1"])
def test_uds_mode_refused(value: str) -> None:
    assert err({"dev": True, "uds_mode": value}).startswith("invalid --uds-mode")


def test_uds_group_by_name_or_gid() -> None:
    import grp

    g = grp.getgrgid(os.getgid())
    assert build_config({"dev": True, "uds_group": g.gr_name}, {}).uds_group == g.gr_gid
    assert build_config({"dev": True, "uds_group": str(g.gr_gid)}, {}).uds_group == g.gr_gid
    assert err({"dev": True, "uds_group": "no-such-group-x"}) == 'unknown group "no-such-group-x" (--uds-group)'


@pytest.mark.parametrize(
    ("spec", "addr"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        (":9100", ("", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_metrics_addr(spec: str, addr: tuple[str, int]) -> None:
    c = build_config({"dev": True, "metrics_addr": spec}, {})
    assert c.metrics_addr == addr
    assert f"metrics_addr={spec}" in c.summary()


@pytest.mark.parametrize("spec", ["9100", "host:", "host:port", "::1:9100", "h:65536"])
def test_metrics_addr_refused(spec: str) -> None:
    assert err({"dev": True, "metrics_addr": spec}).startswith(f'invalid --metrics-addr "{spec}": ')


def test_ttl_bounds() -> None:
    c = build_config({"dev": True, "default_ttl": 3600, "max_ttl": "1d"}, {})
    assert (c.default_ttl, c.max_ttl) == (3600, 86_400)
    assert build_config({"dev": True, "default_ttl": "2h", "max_ttl": 7200}, {}).default_ttl == 7200
    assert err({"dev": True, "max_ttl": 3600}) == "--default-ttl 14d is above --max-ttl 1h"
    assert err({"dev": True, "default_ttl": 0}) == "invalid --default-ttl 0 (must be at least 1s)"
    assert err({"dev": True, "max_ttl": "soon"}).startswith('invalid --max-ttl "soon": ')
    assert err({"dev": True, "max_ttl": 9_223_372_037}).startswith("invalid --max-ttl")


# --- §15: the replica lag bound and the replica wait ------------------------------------------------------
def test_min_replicas_max_lag_flag_env_and_refusals() -> None:
    pair = {"dev": True, "peers": "n2@127.0.0.1:9"}
    assert build_config(pair, {}).min_replicas_max_lag == 0.0  # off by default
    assert build_config(pair, {"SERIALD_MIN_REPLICAS_MAX_LAG": "1500ms"}).min_replicas_max_lag == 1.5
    flag = {**pair, "min_replicas_max_lag": 0.25}
    assert build_config(flag, {"SERIALD_MIN_REPLICAS_MAX_LAG": "9s"}).min_replicas_max_lag == 0.25  # the flag wins
    assert err(pair, {"SERIALD_MIN_REPLICAS_MAX_LAG": "soon"}).startswith("invalid SERIALD_MIN_REPLICAS_MAX_LAG: ")
    assert err({**pair, "min_replicas_max_lag": -1.0}) == "invalid --min-replicas-max-lag -1s (must be >= 0)"
    assert err({"dev": True, "min_replicas_max_lag": 1.0}) == "--min-replicas-max-lag needs a peer (--peers)"
    assert err({"dev": True}, {"SERIALD_MIN_REPLICAS_MAX_LAG": "1s"}) == "--min-replicas-max-lag needs a peer (--peers)"
    assert build_config({"dev": True}, {"SERIALD_MIN_REPLICAS_MAX_LAG": "0"}).min_replicas_max_lag == 0.0


def test_replica_wait_timeout_bounds() -> None:
    assert build_config({"dev": True}, {}).replica_wait_timeout == 1.0
    assert build_config({"dev": True, "replica_wait_timeout": 4.0}, {}).replica_wait_timeout == 4.0
    for bad in (0.0, 4.5):
        assert err({"dev": True, "replica_wait_timeout": bad}).startswith("invalid --replica-wait-timeout ")
