"""The bbd CLI (client commands, daemon-mode flags, argv normalisation) against the fake daemon."""

from __future__ import annotations

import json
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from fakedaemon import FakeDaemon

from bigbunny import cli
from bigbunny.supervisor import daemon, entry

pytestmark = pytest.mark.timeout(30)


# --- running the CLI --------------------------------------------------------------------------
class _Entry(click.Command):
    """Lets CliRunner drive ``entry.main`` (which dispatches to its own click commands)."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        entry.main(list(args or []))


def bbd(*args: str, input: str | bytes | None = None, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(_Entry("bbd"), list(args), input=input, env=env, catch_exceptions=False)


# --- argv normalisation -----------------------------------------------------------------------
TABLE = {"uds": False, "data": False, "dev": True, "ttl": False, "help": True}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-uds=/x", "-dev"], ["--uds=/x", "--dev"]),
        (["-uds", "/x", "id"], ["--uds", "/x", "id"]),
        (["--data", "-uds=/y"], ["--data", "-uds=/y"]),  # a value is never rewritten
        (["--dev", "--dev=false"], []),
        (["--dev=false", "-dev=true"], ["--dev"]),
        (["--dev=maybe"], ["--dev=maybe"]),
        (["-x", "-h", "-help", "--", "-uds"], ["-x", "-h", "--help", "--", "-uds"]),
        (["id", "-ttl", "-5"], ["id", "--ttl", "-5"]),
    ],
)
def test_normalise(argv: list[str], expected: list[str]) -> None:
    assert cli.normalise(argv, TABLE) == expected


# --- CLI: top level ---------------------------------------------------------------------------
@pytest.mark.parametrize("args", [[], ["help"], ["-h"], ["--help"], ["-help"]])
def test_usage_exits_zero(args: list[str]) -> None:
    result = bbd(*args)
    assert result.exit_code == 0
    assert "Usage:" in result.stdout and "counter-increment" in result.stdout and "--lock-timeout" in result.stdout


@pytest.mark.parametrize("flag", ["--version", "-version"])
def test_version(flag: str) -> None:
    from importlib.metadata import version

    result = bbd(flag)
    assert result.exit_code == 0 and result.stdout == f"bbd {version('bigbunny')}\n"
    assert "bbd --version" in bbd("--help").stdout


def test_unknown_subcommand_is_usage_error() -> None:
    result = bbd("frobnicate")
    assert result.exit_code == 2 and "No such command" in result.stderr


def test_bad_option_value_is_usage_error(fake: FakeDaemon) -> None:
    assert bbd("counter-increment", "C", "--delta", "abc", "--uds", fake.path).exit_code == 2
    assert bbd("get", "S", "--bogus").exit_code == 2
    assert fake.requests == []


# --- CLI: daemon mode -------------------------------------------------------------------------
@pytest.fixture
def daemon_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:

    calls: dict[str, Any] = {"rc": 0}

    def build_config(opts: Any, env: Any, file: Any = None) -> str:
        calls["opts"], calls["file"] = dict(opts), file
        return "CFG"

    def run(cfg: Any, reloader: Any = None, warnings: Any = ()) -> int:
        calls["cfg"], calls["reloader"] = cfg, reloader
        return int(calls["rc"])

    monkeypatch.setattr(daemon, "build_config", build_config)
    monkeypatch.setattr(daemon, "run", run)
    return calls


def test_daemon_flags_reach_build_config(daemon_calls: dict[str, Any]) -> None:
    result = bbd(
        "-uds=/tmp/x.sock", "-host-id", "node1", "--dev", "--lock-timeout=250ms", "--shards", "3",
        "--rate-limit=2.5", "--http-idle-timeout", "1m30s", "--log-format=json", "-disable-site-verification=true",
        "--peers=node2@10.0.0.2:8080",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    opts = daemon_calls["opts"]
    assert daemon_calls["cfg"] == "CFG"
    assert opts["uds"] == "/tmp/x.sock" and opts["host_id"] == "node1" and opts["dev"] is True
    assert opts["lock_timeout"] == 0.25 and opts["shards"] == 3 and opts["rate_limit"] == 2.5
    assert opts["http_idle_timeout"] == 90.0 and opts["log_format"] == "json"
    assert opts["disable_site_verification"] is True and opts["peers"] == "node2@10.0.0.2:8080"
    # untouched flags arrive with their §8 defaults
    assert opts["http_read_timeout"] == 30.0 and opts["http_read_header_timeout"] == 10.0
    assert opts["max_store_size"] == 2048 and opts["memory_limit"] == 0 and opts["burst_size"] == 200
    assert opts["site"] == "local" and opts["tcp"] == ":8080" and opts["log_level"] == "info"
    assert opts["store_keys"] == "" and opts["http_max_header_bytes"] == 1048576


def test_daemon_defaults_and_bool_false(daemon_calls: dict[str, Any]) -> None:
    daemon_calls["rc"] = 3
    result = bbd("--dev", "--dev=false")
    assert result.exit_code == 3
    opts = daemon_calls["opts"]
    assert opts["dev"] is False and opts["shards"] is None and opts["lock_timeout"] == 0.5
    assert opts["uds"] == "/tmp/bbd.sock" and opts["host_id"] == "host1" and opts["rate_limit"] == 100.0


@pytest.mark.parametrize(
    "args",
    [["--memory-limit=abc"], ["--lock-timeout=5x"], ["--dev=maybe"], ["--bogus"], ["--dev", "extra"],
     ["--log-format=xml"], ["--http-read-timeout", "30"]],
)  # fmt: skip
def test_daemon_unparsable_flags_exit_2(daemon_calls: dict[str, Any], args: list[str]) -> None:
    result = bbd(*args)
    assert result.exit_code == 2
    assert "opts" not in daemon_calls


def test_daemon_config_error_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"SERIALD_STORE_KEYS": None, "SERIALD_ROUTING_SECRET": None, "SERIALD_INTERNAL_TOKEN": None}
    result = bbd("--uds", "/tmp/never-used.sock", env=env)
    assert result.exit_code == 1
    assert result.stderr == "production mode requires --store-keys or SERIALD_STORE_KEYS (use --dev for dev mode)\n"


# --- CLI: client commands ---------------------------------------------------------------------
def test_create_with_data_ttl_name_reuse(fake: FakeDaemon) -> None:
    fake.answer(body="SID")
    result = bbd(
        "create", "--uds", fake.path, "--customer", "c1", "--data", "hi", "--ttl", "60", "--name", "n1", "--reuse"
    )
    assert (result.exit_code, result.stdout, result.stderr) == (0, "SID\n", "")
    req = fake.last
    assert (req.path, req.body) == ("/api/v1/create-by-name/n1", b"hi")
    assert req.headers["x-customer-id"] == "c1" and req.headers["bigbunny-not-valid-after"] == "60"
    assert req.headers["bigbunny-reuse-if-exists"] == "true" and "content-type" not in req.headers


def test_create_reads_stdin_and_defaults(fake: FakeDaemon) -> None:
    fake.answer(body="SID", BigBunny_Warning="DegradedWrite")
    result = bbd("create", f"-uds={fake.path}", input=b"from stdin\x00")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "SID\n", "warning: DegradedWrite\n")
    req = fake.last
    assert (req.path, req.body, req.headers["x-customer-id"]) == ("/api/v1/create", b"from stdin\x00", "default")
    assert "bigbunny-not-valid-after" not in req.headers and "bigbunny-reuse-if-exists" not in req.headers


def test_get_prints_raw_body_and_ttl(fake: FakeDaemon) -> None:
    fake.answer(body=b"raw\xffbytes", BigBunny_Not_Valid_After="42")
    result = bbd("get", "ID/1", "-ttl", "-uds", fake.path, "--customer=c2")  # options after the positional
    assert result.exit_code == 0
    assert result.stdout_bytes == b"raw\xffbytes" and result.stderr == "TTL: 42 seconds\n"
    assert fake.last.path == "/api/v1/snapshot/ID%2F1" and fake.last.headers["x-customer-id"] == "c2"


def test_store_error_output(fake: FakeDaemon) -> None:
    fake.error(404, "store not found", "NotFound")
    result = bbd("get", "S", "--uds", fake.path)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "get failed (404): store not found\nerror code: NotFound\n"
    fake.error(400, "invalid store ID")
    result = bbd("counter-set", "S", "--value", "1", "--uds", fake.path)
    assert (result.exit_code, result.stderr) == (1, "counter-set failed (400): invalid store ID\n")


def test_connection_error_output(fake: FakeDaemon) -> None:
    result = bbd("lookup", "n", "--uds", fake.path + "-nope")
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "No such file" in result.stderr


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["get"], "usage: bbd get <id> [--ttl]\n"),
        (["delete", "a", "b"], "usage: bbd delete <id>\n"),
        (["counter-increment"], "usage: bbd counter-increment <id> [--delta N] [--ttl N]\n"),
        (["release-lock"], "usage: bbd release-lock <id>\n"),
    ],
)
def test_wrong_positional_count(fake: FakeDaemon, args: list[str], usage: str) -> None:
    result = bbd(*args, "--uds", fake.path)
    assert (result.exit_code, result.stderr) == (1, usage)
    assert fake.requests == []


def test_simple_commands(fake: FakeDaemon) -> None:
    u = ("--uds", fake.path)
    assert bbd("delete", "S1", *u).stdout == "deleted\n"
    assert bbd("delete-named", "n 1", *u).stdout == "deleted\n"
    fake.answer(body="SID9")
    assert bbd("lookup", "n1", *u).stdout == "SID9\n"
    assert [r.path for r in fake.requests] == [
        "/api/v1/delete/S1",
        "/api/v1/delete-by-name/n%201",
        "/api/v1/lookup-id-by-name/n1",
    ]


def test_begin_modify_prints_lock_on_stdout(fake: FakeDaemon) -> None:
    fake.answer(body=b"current", BigBunny_Lock_ID="abcdefghijklmnopqrstuv", BigBunny_Not_Valid_After="100")
    result = bbd("begin-modify", "S", "--data", "--uds", fake.path)
    assert (result.exit_code, result.stdout) == (0, "abcdefghijklmnopqrstuv\n")
    assert result.stderr == "TTL: 100 seconds\nData: current\n"


def test_complete_and_cancel_modify(fake: FakeDaemon) -> None:
    result = bbd("complete-modify", "S", "-lock", "L1", "-ttl=30", "--uds", fake.path, input=b"body")
    assert (result.exit_code, result.stdout) == (0, "modified\n")
    req = fake.last
    assert (req.path, req.body, req.headers["bigbunny-lock-id"]) == ("/api/v1/complete-modify/S", b"body", "L1")
    assert req.headers["bigbunny-not-valid-after"] == "30"
    result = bbd("cancel-modify", "S", "--lock=L1", "--uds", fake.path)
    assert (result.exit_code, result.stdout) == (0, "cancelled\n")
    assert fake.last.headers["bigbunny-lock-id"] == "L1"


@pytest.mark.parametrize("cmd", ["complete-modify", "cancel-modify"])
def test_modify_requires_lock(fake: FakeDaemon, cmd: str) -> None:
    result = bbd(cmd, "S", "--data", "x", "--uds", fake.path) if cmd == "complete-modify" else bbd(cmd, "S")
    assert (result.exit_code, result.stderr) == (1, "error: -lock is required\n")
    assert fake.requests == []


def test_counter_create(fake: FakeDaemon) -> None:
    fake.answer(body="CID")
    result = bbd("counter-create", "--value", "-5", "--with-min", "--max", "10", "--uds", fake.path)
    assert (result.exit_code, result.stdout) == (0, "CID\n")
    req = fake.last
    assert req.path == "/api/v1/create" and req.headers["content-type"] == "application/json"
    assert json.loads(req.body) == {"type": "counter", "value": -5, "min": 0, "max": 10}
    bbd("counter-create", "--name", "hits", "--reuse", "--ttl", "9", "--uds", fake.path)
    req = fake.last
    assert req.path == "/api/v1/create-by-name/hits" and json.loads(req.body) == {"type": "counter", "value": 0}
    assert req.headers["bigbunny-reuse-if-exists"] == "true" and req.headers["bigbunny-not-valid-after"] == "9"


def test_counter_get_pretty_exact(fake: FakeDaemon) -> None:
    fake.answer(body='{"version":1,"value":9007199254740993,"max":9223372036854775807}\n')
    result = bbd("counter-get", "C", "--uds", fake.path)
    assert result.stdout == '{\n  "max": 9223372036854775807,\n  "value": 9007199254740993,\n  "version": 1\n}\n'
    fake.answer(body="not json")
    assert bbd("counter-get", "C", "--uds", fake.path).stdout == "not json\n"


def test_counter_increment_decrement_set(fake: FakeDaemon) -> None:
    fake.answer(body='{"value":7,"version":3,"bounded":false}\n')
    result = bbd("counter-increment", "C", "--delta", "-3", "--ttl", "5", "--uds", fake.path)
    assert result.stdout == '{\n  "bounded": false,\n  "value": 7,\n  "version": 3\n}\n'
    assert (fake.last.path, fake.last.body) == ("/api/v1/increment/C", b'{"delta":-3}')
    assert fake.last.headers["bigbunny-not-valid-after"] == "5"
    fake.answer(body='{"value":6,"version":4,"bounded":false}\n')
    bbd("counter-decrement", "C", "--uds", fake.path)
    assert (fake.last.path, fake.last.body) == ("/api/v1/decrement/C", b'{"delta":1}')
    assert "bigbunny-not-valid-after" not in fake.last.headers
    result = bbd("counter-set", "C", "--value", "12", "--uds", fake.path)
    assert result.stdout == "ok\n"
    assert (fake.last.path, fake.last.body) == ("/api/v1/update/C", b'{"value":12}')


def test_promote_and_release_lock(fake: FakeDaemon) -> None:
    fake.answer(body="promoted")
    result = bbd("promote", f"-uds={fake.path}")
    assert (result.exit_code, result.stdout) == (0, "promoted to PRIMARY\n")
    assert fake.last.path == "/internal/promote"
    fake.error(503, "primary syncing to secondary", "JoinSyncing", retry_after=1)
    result = bbd("promote", "--uds", fake.path)
    assert (result.exit_code, result.stderr) == (1, "promote failed: primary syncing to secondary\n")
    fake.answer(body="lock released")
    result = bbd("release-lock", "S", "--uds", fake.path)
    assert (result.exit_code, result.stdout) == (0, "lock released on S\n")
    assert fake.last.path == "/internal/release-lock/S"


STATUS = {
    "host_id": "node2",
    "last_leader_seen": "64.74547ms",
    "last_replication_fail": "",
    "leader_epoch": 1,
    "memory_usage": 12345678,
    "peers": {"node1": "64.746123ms"},
    "queue_length": 0,
    "registry_count": 3,
    "registry_queue_length": 0,
    "registry_states": {"active": 2, "creating": 1},
    "replication_fail_count": 0,
    "role": "SECONDARY",
    "store_count": 10000000,
    "tombstone_count": 4,
    "uptime": "1h2m3s",
    "version": "9.8.7",
    "shards": [
        {"id": 0, "pid": 4242, "up": True, "stores": 6000000, "memory": 7000000, "restarts": 0},
        {"id": 1, "pid": 4243, "up": False, "stores": 4000000, "memory": 5345678, "restarts": 1},
    ],
}


def test_status_human(fake: FakeDaemon) -> None:
    fake.answer(body=json.dumps(STATUS, sort_keys=True, separators=(",", ":")) + "\n")
    result = bbd("status", "--uds", fake.path)
    assert result.exit_code == 0
    assert result.stdout == (
        "Host ID:        node2\n"
        "Role:           SECONDARY\n"
        "Leader Epoch:   1\n"
        "Last Leader:    64.74547ms ago\n"
        "Store Count:    10000000\n"
        "Memory Usage:   12345678 bytes\n"
        "Queue Length:   0\n"
        "Tombstones:     4\n"
        "Registry Count: 3\n"
        "Uptime:         1h2m3s\n"
        "Version:        9.8.7\n"
        "Peers:\n"
        "  node1: 64.746123ms ago\n"
        "Registry States:\n"
        "  active: 2\n"
        "  creating: 1\n"
        "Shards:\n"
        "  0: pid 4242, stores 6000000, memory 7000000 bytes, restarts 0\n"
        "  1: pid 4243, stores 4000000, memory 5345678 bytes, restarts 1, down\n"
    )
    assert (fake.last.method, fake.last.path) == ("GET", "/status")


def test_status_minimal_and_json(fake: FakeDaemon) -> None:
    minimal = {k: v for k, v in STATUS.items() if k not in ("uptime", "version", "shards")}
    minimal |= {"peers": {}, "registry_states": {}}
    fake.answer(body=json.dumps(minimal) + "\n")
    out = bbd("status", "--uds", fake.path).stdout
    assert out.endswith("Registry Count: 3\n") and "Peers" not in out
    raw = '{"host_id":"h","memory_usage":12345678}\n'
    fake.answer(body=raw)
    assert bbd("status", "--json", "--uds", fake.path).stdout == raw


def test_status_shows_the_write_gate_on_a_pair(fake: FakeDaemon) -> None:
    fake.answer(body=json.dumps({**STATUS, "replica_lag_ms": 850, "writes_refused_no_replicas": 12}) + "\n")
    out = bbd("status", "--uds", fake.path).stdout
    assert "Replica Lag:    850 ms\n" in out and "Lag Refusals:   12\n" in out
    fake.answer(body=json.dumps({**STATUS, "replica_lag_ms": None, "writes_refused_no_replicas": 0}) + "\n")
    assert "Replica Lag" not in bbd("status", "--uds", fake.path).stdout  # a single node has no replica


# --- CLI: --replicas on writes ----------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["create", "--data", "x"],
        ["create", "--data", "x", "--name", "n"],
        ["delete", "S"],
        ["delete-named", "n"],
        ["complete-modify", "S", "--lock", "L", "--data", "x"],
        ["counter-create"],
        ["counter-increment", "C"],
        ["counter-decrement", "C"],
        ["counter-set", "C", "--value", "2"],
    ],
)
def test_write_commands_send_replicas(fake: FakeDaemon, args: list[str]) -> None:
    fake.answer(body='{"value":1}')
    result = bbd(*args, "--replicas", "1", "--uds", fake.path)
    assert result.exit_code == 0, result.output
    assert fake.last.headers.get("bigbunny-replicas") == "1"
    fake.answer(body='{"value":1}')
    assert bbd(*args, "--uds", fake.path).exit_code == 0
    assert "bigbunny-replicas" not in fake.last.headers


def test_not_replicated_prints_the_result_warns_and_exits_3(fake: FakeDaemon) -> None:
    fake.answer(body="SID5", BigBunny_Warning="NotReplicated")
    result = bbd("create", "--data", "x", "--replicas", "1", "--uds", fake.path)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "SID5\n", "warning: NotReplicated\n")
    fake.answer(BigBunny_Warning="NotReplicated")
    result = bbd("delete", "S", "-replicas=1", "-uds", fake.path)  # single-dash form, as every option
    assert (result.exit_code, result.stdout) == (3, "deleted\n")


def test_replicas_takes_only_0_or_1(fake: FakeDaemon) -> None:
    result = bbd("delete", "S", "--replicas", "2", "--uds", fake.path)
    assert result.exit_code == 2 and "--replicas" in result.stderr and fake.requests == []
    assert bbd("get", "S", "--replicas", "1", "--uds", fake.path).exit_code == 2  # reads have no --replicas
