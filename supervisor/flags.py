"""The daemon's flags (SPEC §8 + §14): names, types, defaults and help, as click options.

Light on purpose: the usage text and the config-file reader need the flags without loading the
server stack (:mod:`bigbunny.supervisor.daemon` builds the command that runs it). Flag values are
typed by click, so an unparsable value (``--memory-limit=abc``, ``--lock-timeout=5x``) is a usage
error, exit 2; semantic checks belong to ``bigbunny.config.build_config``.
"""

from __future__ import annotations

from typing import Any

import click

from bigbunny.durations import parse_duration, parse_ttl_seconds


class Duration(click.ParamType):
    """A Go-style duration (``1h2m3.5s``, ``500ms``, bare ``0``) converted to float seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


DURATION = Duration()


class Ttl(click.ParamType):
    """A TTL in whole seconds: a Go-style duration that may also use days (``14d``, ``1d12h``, ``0``)."""

    name = "ttl"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_ttl_seconds(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


TTL = Ttl()

# (flag, type, default, help) — names and defaults as in SPEC §8, plus the §14 additions.
_FLAGS: list[tuple[str, Any, Any, str]] = [
    ("host-id", str, "host1", "node identity"),
    ("site", str, "local", "key-derivation site, ^[a-z0-9-]{1,16}$"),
    ("uds", str, "/tmp/bbd.sock", "client API Unix socket path"),
    ("uds-mode", str, "0600", "permission bits of the --uds socket (octal)"),
    ("uds-group", str, "", "group owning the --uds socket (default: the daemon's)"),
    ("admin-uds", str, "", "socket for /internal/* and /metrics, mode 0600 (env SERIALD_ADMIN_UDS)"),
    ("metrics-addr", str, "", "HOST:PORT serving /metrics, /healthz, /readyz over TCP (default: off)"),
    ("tcp", str, ":8080", "inter-node bind host:port"),
    ("peers", str, "", "comma list of id@host:port or host:port"),
    ("memory-limit", int, 0, "global memory limit in bytes (<= 0: none)"),
    ("customer-memory-quota", int, 0, "per-customer memory quota in bytes (<= 0: none)"),
    ("store-keys", str, "", "store keys id:hex,... or 'dev' (env SERIALD_STORE_KEYS)"),
    ("store-key-current", str, "", "current key id (env SERIALD_STORE_KEY_CURRENT)"),
    ("routing-secret", str, "", "routing secret or 'dev' (env SERIALD_ROUTING_SECRET)"),
    ("internal-token", str, "", "inter-node secret (env SERIALD_INTERNAL_TOKEN)"),
    ("dev", bool, False, "dev mode: dev keys and routing secret, no guardrails"),
    ("rate-limit", float, 100.0, "requests/s per customer (<= 0: off)"),
    ("burst-size", int, 200, "rate-limit bucket size"),
    ("tombstone-customer-limit", int, 0, "tombstones per customer (0: none)"),
    ("tombstone-global-limit", int, 0, "tombstones in total (0: none)"),
    ("disable-site-verification", bool, False, "leave the site out of key derivation and peer checks"),
    ("http-read-timeout", DURATION, "30s", "request read timeout"),
    ("http-read-header-timeout", DURATION, "10s", "header read timeout"),
    ("http-write-timeout", DURATION, "30s", "response write timeout"),
    ("http-idle-timeout", DURATION, "120s", "keep-alive idle timeout"),
    ("http-max-header-bytes", int, 1048576, "request header size cap"),
    ("shards", int, None, "shard worker processes (default: CPU count)"),
    ("lock-timeout", DURATION, "500ms", "modify lock duration"),
    ("max-store-size", int, 2048, "largest store/request body in bytes"),
    ("default-ttl", TTL, "14d", "TTL of a store created without a TTL header"),
    ("max-ttl", TTL, "0", "largest TTL a request may set; above it: 400 (0: no bound)"),
    ("gc-interval", DURATION, "30s", "expired-store collection period (primary)"),
    (
        "min-replicas-max-lag",
        DURATION,
        None,
        "refuse writes while the secondary lags more (0: off; env SERIALD_MIN_REPLICAS_MAX_LAG)",
    ),
    ("replica-wait-timeout", DURATION, "1s", "longest wait of a BigBunny-Replicas: 1 write"),
    (
        "log-level",
        click.Choice(["debug", "info", "warn", "warning", "error"], case_sensitive=False),
        "info",
        "log level",
    ),
    ("log-format", click.Choice(["text", "json"], case_sensitive=False), "text", "log format"),
    ("config", str, "", "TOML file of daemon flags (long names as keys), re-read on SIGHUP and bbd reload"),
]


_METAVARS: dict[Any, str] = {str: "string", int: "int", float: "float", DURATION: "duration", TTL: "ttl"}


def _option(name: str, type_: Any, default: Any, help_: str) -> click.Option:
    if type_ is bool:
        return click.Option([f"--{name}"], is_flag=True, default=default, help=help_)
    shown = default not in ("", None)
    metavar = _METAVARS.get(type_)
    return click.Option([f"--{name}"], type=type_, default=default, help=help_, show_default=shown, metavar=metavar)


PARAMS: tuple[click.Option, ...] = tuple(_option(*flag) for flag in _FLAGS)
