"""--config FILE: TOML keyed by the long flag names, typed by each flag's own type, and its precedence
(command line > environment variable > file > default)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO
from test_cli import bbd

from bigbunny.config import ConfigError, build_config
from bigbunny.configfile import ConfigFile, layer, read_config_file
from bigbunny.storeid import KeySet
from bigbunny.supervisor import daemon
from bigbunny.supervisor.flags import PARAMS

OPTIONS = PARAMS  # the daemon's click options
K1, K2 = "11" * 32, "22" * 32


def write(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "bbd.toml"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def read(tmp_path: Path, text: str) -> dict[str, Any]:
    return read_config_file(write(tmp_path, text), OPTIONS).values


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        read(tmp_path, text)
    return str(info.value)


def test_values_take_each_flags_type(tmp_path: Path) -> None:
    values = read(
        tmp_path,
        """
        rate-limit = 50            # float flag, integer in TOML
        burst-size = 10
        memory-limit = 1048576
        lock-timeout = "750ms"     # durations as on the command line
        gc-interval = 12           # or seconds
        log-level = "DEBUG"        # choices ignore case, as on the command line
        dev = true
        peers = "node2@10.0.0.2:8081"
    """,
    )
    assert values == {
        "rate_limit": 50.0,
        "burst_size": 10,
        "memory_limit": 1048576,
        "lock_timeout": 0.75,
        "gc_interval": 12.0,
        "log_level": "debug",
        "dev": True,
        "peers": "node2@10.0.0.2:8081",
    }
    assert isinstance(values["rate_limit"], float)


def test_every_daemon_flag_is_a_valid_key(tmp_path: Path) -> None:
    """Generic over the flags: a key exists for each one (a flag added later needs no edit)."""
    names = [o.opts[0][2:] for o in OPTIONS if o.opts[0][2:] != "config"]
    samples = {"a boolean": "true", "an integer": "1", "a number": "1.5", "a string": '"x"'}
    from bigbunny.configfile import _expected

    lines = []
    for o in OPTIONS:
        name = o.opts[0][2:]
        if name == "config":
            continue
        want = _expected(o)[0]
        value = {"log-level": '"info"', "log-format": '"json"'}.get(name) or samples.get(want, '"1s"')
        lines.append(f"{name} = {value}")
    values = read(tmp_path, "\n".join(lines))
    assert len(values) == len(names)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1", "unknown key 'bogus'"),
        ("rate_limit = 5", "unknown key 'rate_limit' (did you mean 'rate-limit'? keys are the long flag names)"),
        ('config = "/etc/other.toml"', "unknown key 'config'"),
        ("[limits]\nrate-limit = 5", "unknown key 'limits'"),
        ("burst-size = 1.5", "key 'burst-size': expected an integer, got float"),
        ('burst-size = "10"', "key 'burst-size': expected an integer, got string"),
        ("memory-limit = true", "key 'memory-limit': expected an integer, got boolean"),
        ("rate-limit = false", "key 'rate-limit': expected a number, got boolean"),
        ('dev = "yes"', "key 'dev': expected a boolean, got string"),
        ("site = 5", "key 'site': expected a string, got integer"),
        ("peers = ['a@b:1']", "key 'peers': expected a string, got array"),
        ('lock-timeout = "5x"', "key 'lock-timeout': unknown unit 'x' in duration '5x'"),
        ('log-level = "trace"', "key 'log-level': 'trace' is not one of"),
        ("rate-limit = ", "invalid TOML: "),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    msg = refused(tmp_path, text)
    assert msg.startswith(f"config file {tmp_path / 'bbd.toml'}: "), msg
    assert message in msg and "\n" not in msg


def test_missing_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config file /nonexistent/bbd.toml: No such file or directory$"):
        read_config_file("/nonexistent/bbd.toml", OPTIONS)
    with pytest.raises(ConfigError, match="Is a directory"):
        read_config_file(str(tmp_path), OPTIONS)


def test_secrets_in_a_readable_file_warn(tmp_path: Path) -> None:
    path = write(tmp_path, f'store-keys = "1:{K1}"', 0o644)
    warnings = read_config_file(path, OPTIONS).warnings
    assert warnings == (f"config file {path} holds store-keys but is readable by others (mode 0644); use 0600 or 0640",)
    os.chmod(path, 0o600)
    assert read_config_file(path, OPTIONS).warnings == ()
    assert ConfigFile(write(tmp_path, "rate-limit = 1", 0o644), OPTIONS).read().warnings == ()  # no secret


def test_precedence_flag_then_env_then_file_then_default() -> None:
    file = {
        "rate_limit": 5.0,
        "burst_size": 7,
        "store_keys": f"1:{K1}",
        "routing_secret": "file-secret",
        "internal_token": "file-token",
    }
    defaults = {
        "rate_limit": 100.0,
        "burst_size": 200,
        "store_keys": "",
        "routing_secret": "",
        "internal_token": "",
        "memory_limit": 0,
    }
    given = {"burst_size": 9}
    opts = layer(given, defaults, file)
    assert opts["rate_limit"] is None and opts["burst_size"] == 9 and opts["memory_limit"] == 0
    cfg = build_config(opts, {}, file)
    assert (cfg.rate_limit, cfg.burst_size, cfg.memory_limit) == (5.0, 9, 0)  # file, flag, default
    assert cfg.keys == KeySet({"1": bytes.fromhex(K1)}, "1") and cfg.routing_secret == b"file-secret"
    env = {"SERIALD_STORE_KEYS": f"2:{K2}", "SERIALD_INTERNAL_TOKEN": "env-token"}
    cfg = build_config(opts, env, file)
    assert cfg.keys == KeySet({"2": bytes.fromhex(K2)}, "2") and cfg.internal_token == "env-token"
    assert cfg.routing_secret == b"file-secret"  # no variable: the file's value
    flag = build_config(layer({"store_keys": f"3:{K1}"}, defaults, file), env, file)
    assert sorted(flag.keys.keys) == ["3"]  # a flag beats both


def test_file_values_are_validated_like_flags() -> None:
    with pytest.raises(ConfigError, match=r'^invalid site "UPPER"'):
        build_config(layer({"dev": True}, {}, {"site": "UPPER"}), {}, {"site": "UPPER"})
    with pytest.raises(ConfigError, match="production mode requires --store-keys"):
        build_config(layer({}, {}, {"rate_limit": 1.0}), {}, {"rate_limit": 1.0})


# --- through the CLI -------------------------------------------------------------------------------------
@pytest.fixture
def daemon_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: dict[str, Any] = {}

    def run(cfg: Any, reloader: Any = None, warnings: Any = ()) -> int:
        calls.update(cfg=cfg, reloader=reloader, warnings=warnings)
        return 0

    monkeypatch.setattr(daemon, "run", run)
    return calls


def test_cli_reads_the_file_and_flags_win(tmp_path: Path, daemon_calls: dict[str, Any]) -> None:
    path = write(tmp_path, 'rate-limit = 5\nburst-size = 7\nlock-timeout = "2s"\nsite = "nyc01"')
    result = bbd("--dev", f"--config={path}", "--burst-size=9")
    assert result.exit_code == 0, result.output
    cfg = daemon_calls["cfg"]
    assert (cfg.rate_limit, cfg.burst_size, cfg.lock_timeout, cfg.site) == (5.0, 9, 2.0, "nyc01")
    reloader = daemon_calls["reloader"]
    assert reloader is not None and reloader.source.path == path and reloader.given["burst_size"] == 9


def test_cli_without_config_has_no_reloader(daemon_calls: dict[str, Any]) -> None:
    assert bbd("--dev").exit_code == 0
    assert daemon_calls["reloader"] is None and daemon_calls["cfg"].rate_limit == 100.0


def test_cli_bad_file_exits_1(tmp_path: Path, daemon_calls: dict[str, Any]) -> None:
    path = write(tmp_path, "burst-size = 1.5")
    result = bbd("--dev", f"--config={path}")
    assert result.exit_code == 1 and not daemon_calls
    assert result.output == f"config file {path}: key 'burst-size': expected an integer, got float\n"
    result = bbd("--dev", "--config=/nonexistent.toml")
    assert (result.exit_code, result.output) == (1, "config file /nonexistent.toml: No such file or directory\n")


# --- the shipped examples ---------------------------------------------------------------------------------
ROOT = REPO


def _example_config(text: str, tmp_path: Path) -> Any:
    """Build the Config an example file gives (its key placeholder replaced by a real key)."""
    path = write(tmp_path, text.replace("<64 hex digits>", K1))
    values = read_config_file(path, OPTIONS).values
    env = {"SERIALD_ROUTING_SECRET": "s", "SERIALD_INTERNAL_TOKEN": "t"}
    return build_config(layer({}, {}, values), env, values), values


def test_ops_example_file_is_valid(tmp_path: Path) -> None:
    cfg, values = _example_config((ROOT / "ops" / "bbd.toml.example").read_text(), tmp_path)
    assert (cfg.memory_limit, cfg.customer_memory_quota, cfg.site) == (4294967296, 104857600, "prod")
    assert cfg.keys == KeySet({"1": bytes.fromhex(K1)}, "1")
    from bigbunny.supervisor.state.reload import LIVE_FIELDS  # the file's first part is exactly what a reload applies

    live = (ROOT / "ops" / "bbd.toml.example").read_text().split("# --- read at start only")[0]
    live_keys = {line.split("=")[0].strip() for line in live.splitlines() if "=" in line and line[0] != "#"}
    assert {k.replace("-", "_") for k in live_keys} == {*LIVE_FIELDS, "store_key_current"} - {"keys"} | {"store_keys"}


def test_configuration_doc_example_is_the_ops_file(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    blocks = doc.split("```toml\n")[1:]
    assert len(blocks) == 1
    text = blocks[0].split("```")[0]
    assert (
        _example_config(text, tmp_path)[1]
        == _example_config((ROOT / "ops" / "bbd.toml.example").read_text(), tmp_path)[1]
    )


def test_socket_and_ttl_flags_in_the_file(tmp_path: Path) -> None:
    admin = str(tmp_path / "admin.sock")
    values = read(
        tmp_path,
        f'admin-uds = "{admin}"\nuds-mode = "0660"\nmetrics-addr = "127.0.0.1:9464"\n'
        'max-ttl = "30d"\ndefault-ttl = 3600\n',
    )
    assert values == {
        "admin_uds": admin,
        "uds_mode": "0660",
        "metrics_addr": "127.0.0.1:9464",
        "max_ttl": 2_592_000,
        "default_ttl": 3600,
    }
    cfg = build_config(layer({}, {}, values), {}, {**values, "dev": True})
    assert (cfg.admin_uds, cfg.uds_mode, cfg.metrics_addr, cfg.max_ttl, cfg.default_ttl) == (
        admin,
        0o660,
        ("127.0.0.1", 9464),
        2_592_000,
        3600,
    )
    # flag > SERIALD_ADMIN_UDS > file, as for the secrets
    env = {"SERIALD_ADMIN_UDS": str(tmp_path / "env.sock")}
    assert build_config(layer({}, {}, values), env, {**values, "dev": True}).admin_uds == env["SERIALD_ADMIN_UDS"]
    flag = {"admin_uds": str(tmp_path / "flag.sock")}
    assert build_config(layer(flag, {}, values), env, {**values, "dev": True}).admin_uds == flag["admin_uds"]
    assert refused(tmp_path, "max-ttl = 1.5\n").endswith(
        "key 'max-ttl': expected a TTL string (\"14d\") or whole seconds, got float"
    )
    assert "key 'max-ttl': " in refused(tmp_path, 'max-ttl = "3x"\n')
    assert refused(tmp_path, "uds-mode = 0o660\n").endswith("key 'uds-mode': expected a string, got integer")
    with pytest.raises(ConfigError, match="above --max-ttl"):
        vals = read(tmp_path, 'max-ttl = "1h"\ndefault-ttl = "2h"\n')
        build_config(layer({}, {}, vals), {}, {**vals, "dev": True})
