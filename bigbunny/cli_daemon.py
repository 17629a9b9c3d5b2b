"""Daemon mode of the CLI (SPEC §8 + §14): ``bbd --flag …`` parses the flags into an ``opts`` mapping,
builds the config (``bigbunny.config.build_config``) and runs the supervisor until it is signalled.
With ``--config FILE`` the file's values (``bigbunny.configfile``) sit below the flags given on the
command line and the environment; the supervisor keeps both layers to redo this on a reload.

Flag values are typed by click, so an unparsable value (``--memory-limit=abc``, ``--lock-timeout=5x``)
is a usage error, exit 2; semantic checks (keys, secrets, site …) belong to ``build_config`` and are
fatal errors, exit 1, with its one-line message on stderr.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click


class Duration(click.ParamType):
    """A Go-style duration (``1h2m3.5s``, ``500ms``, bare ``0``) converted to float seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        from bigbunny.durations import parse_duration

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
        from bigbunny.durations import parse_ttl_seconds

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


def _run_daemon(**opts: Any) -> None:
    from bigbunny.config import ConfigError, build_config
    from bigbunny.configfile import ConfigFile, FileValues, layer

    ctx = click.get_current_context()
    given = {k: v for k, v in opts.items() if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    defaults = {k: v for k, v in opts.items() if k not in given}
    # absolute: a reload must read the same file whatever the working directory is by then
    path = os.path.abspath(opts["config"]) if opts["config"] else ""
    source = ConfigFile(path, tuple(daemon_command.params)) if path else None  # type: ignore[arg-type]
    try:
        file = source.read() if source is not None else FileValues({}, ())
        cfg = build_config(layer(given, defaults, file.values), os.environ, file.values)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    from bigbunny.supervisor.lifecycle import run
    from bigbunny.supervisor.reload import Reloader

    reloader = Reloader(source, given, defaults, dict(os.environ)) if source is not None else None
    sys.exit(run(cfg, reloader, file.warnings))


daemon_command = click.Command(
    "bbd",
    params=[_option(*flag) for flag in _FLAGS],
    callback=_run_daemon,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run the bbd daemon.",
)
