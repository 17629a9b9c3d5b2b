"""Client subcommands of the CLI (SPEC §9 + §14), each a thin shell over :class:`bigbunny.client.BBClient`.

Conventions (§9): success → exit 0; wrong positional count → ``usage: bbd …`` on stderr, exit 1;
connection failure → ``error: <detail>``, exit 1; an HTTP error → ``<cmd> failed (<status>): <body>``
and ``error code: <code>`` (operator commands: ``<cmd> failed: <body>``), exit 1; a
``BigBunny-Warning`` on success → ``warning: <value>`` on stderr. Integers are printed exactly.
Write commands take ``--replicas 1`` (SPEC §15): the answer waits for the secondary; a write applied on the
primary but not confirmed in time prints its usual output, then ``warning: NotReplicated``, and exits 3.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import click

from bigbunny.cli_status import format_customers, format_reload, format_status
from bigbunny.client import BBClient, BBConnectionError, BBError, NotReplicated

# command → (synopsis, one-line description); the synopsis is also the wrong-positional-count usage.
COMMANDS: dict[str, tuple[str, str]] = {
    "status": ("status [--json]", "show node status"),
    "promote": ("promote", "force this node to become PRIMARY"),
    "release-lock": ("release-lock <id>", "release a stuck modify lock"),
    "reload": ("reload [--json]", "re-read the daemon's --config file and apply what can change live"),
    "customers": ("customers [--top N] [--json]", "customers using the most memory, stores, tombstones, rate limit"),
    "create": (
        "create [--data S] [--ttl N] [--name S] [--reuse]",
        "create a blob store (body: --data or stdin)",
    ),
    "get": ("get <id> [--ttl]", "print a store's contents"),
    "delete": ("delete <id>", "delete a store"),
    "delete-named": ("delete-named <name>", "delete a named store"),
    "lookup": ("lookup <name>", "print the store ID bound to a name"),
    "begin-modify": ("begin-modify <id> [--data]", "lock a store; prints the lock ID"),
    "complete-modify": ("complete-modify <id> --lock L [--data S] [--ttl N]", "write and unlock"),
    "cancel-modify": ("cancel-modify <id> --lock L", "unlock without writing"),
    "counter-create": (
        "counter-create [--value N] [--min N] [--max N] [--with-min] [--with-max] [--name S] [--reuse] [--ttl N]",
        "create a counter",
    ),
    "counter-get": ("counter-get <id>", "print a counter"),
    "counter-increment": ("counter-increment <id> [--delta N] [--ttl N]", "add to a counter"),
    "counter-decrement": ("counter-decrement <id> [--delta N] [--ttl N]", "subtract from a counter"),
    "counter-set": ("counter-set <id> [--value N] [--ttl N]", "set a counter's value"),
}
_OPS_COMMANDS = frozenset({"promote", "release-lock", "reload"})

client_group = click.Group("bbd", context_settings={"help_option_names": ["-h", "--help"]})

Deco = Callable[[Callable[..., Any]], Callable[..., Any]]
T = TypeVar("T")
EXIT_NOT_REPLICATED = 3


def _command(
    name: str, *, store: bool = True, positional: bool = True, write: bool = False, admin: bool = False
) -> Deco:
    """Register a subcommand with the shared ``--uds`` (and ``--customer``) options and ``ARGS...``; writes
    also take ``--replicas``; ``admin`` commands also take ``--admin-uds``, which replaces ``--uds`` when set."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if admin:
            fn = _on_admin_socket(fn)
        if write:
            fn = click.option(
                "--replicas",
                type=click.IntRange(0, 1),
                default=0,
                show_default=True,
                help="1: answer only once the secondary has the write",
            )(fn)
        if positional:
            fn = click.argument("args", nargs=-1)(fn)
        if store:
            fn = click.option("--customer", default="default", show_default=True, help="customer ID")(fn)
        fn = click.option("--uds", default="/tmp/bbd.sock", show_default=True, help="daemon socket")(fn)
        return client_group.command(name, help=COMMANDS[name][1])(fn)

    return wrap


def _on_admin_socket(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def command(uds: str, admin_uds: str, **kw: Any) -> Any:
        return fn(uds=admin_uds or uds, **kw)

    return click.option(
        "--admin-uds", default="", envvar="SERIALD_ADMIN_UDS", help="the daemon's admin socket (default: --uds)"
    )(command)


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(1)


def _one(args: tuple[str, ...], cmd: str) -> str:
    if len(args) != 1:
        _fail(f"usage: bbd {COMMANDS[cmd][0]}")
    return args[0]


@contextmanager
def _session(cmd: str, uds: str, customer: str = "default") -> Iterator[BBClient]:
    """Yield a client; turn its errors into §9 messages and exit 1; print a warning after success."""
    client = BBClient(uds, customer)
    try:
        yield client
    except BBConnectionError as e:
        _fail(f"error: {e.detail}")
    except BBError as e:
        if cmd in _OPS_COMMANDS:
            _fail(f"{cmd} failed: {e.message}")
        click.echo(f"{cmd} failed ({e.status}): {e.message}", err=True)
        if e.code:
            click.echo(f"error code: {e.code}", err=True)
        sys.exit(1)
    finally:
        client.close()
    if client.last_warning:
        click.echo(f"warning: {client.last_warning}", err=True)
        if client.last_warning == "NotReplicated":
            sys.exit(EXIT_NOT_REPLICATED)


def _applied(call: Callable[[], T]) -> T:
    """Run a write; one the secondary did not confirm in time was still applied: return its result
    (``_session`` then warns and exits 3)."""
    try:
        return call()
    except NotReplicated as e:
        return cast(T, e.result)


def _body(data: str) -> bytes:
    return os.fsencode(data) if data else sys.stdin.buffer.read()


def _ttl(n: int) -> int | None:
    return n if n > 0 else None


def _write_bytes(data: bytes, err: bool = False) -> None:
    text = sys.stderr if err else sys.stdout
    text.flush()
    text.buffer.write(data)
    text.buffer.flush()


def _pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)


# --- node and operator commands ---------------------------------------------------------------
@_command("status", store=False, positional=False)
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON")
def status_cmd(uds: str, as_json: bool) -> None:
    with _session("status", uds) as client:
        resp = client.request("GET", "/status")
        if not 200 <= resp.status < 300:
            raise BBError(resp.status, resp.text.rstrip("\r\n"), resp.headers.get("bigbunny-error-code"))
    if as_json:
        _write_bytes(resp.body if resp.body.endswith(b"\n") else resp.body + b"\n")
        return
    try:
        status = json.loads(resp.body)
    except ValueError as e:
        _fail(f"error: invalid status JSON: {e}")

    click.echo(format_status(status), nl=False)


@_command("promote", store=False, positional=False, admin=True)
def promote_cmd(uds: str) -> None:
    with _session("promote", uds) as client:
        client.promote()
        click.echo("promoted to PRIMARY")


@_command("reload", store=False, positional=False, admin=True)
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON report")
def reload_cmd(uds: str, as_json: bool) -> None:
    with _session("reload", uds) as client:
        report = client.reload()
    if as_json:
        click.echo(json.dumps(report, separators=(",", ":")))
        return

    click.echo(format_reload(report), nl=False)


@_command("customers", store=False, positional=False, admin=True)
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 100_000), help="rows per table")
@click.option("--json", "as_json", is_flag=True, help="print the raw JSON")
def customers_cmd(uds: str, top: int, as_json: bool) -> None:
    with _session("customers", uds) as client:
        report = client.customers(top)
    if as_json:
        click.echo(json.dumps(report, separators=(",", ":")))
        return

    click.echo(format_customers(report), nl=False)


@_command("release-lock", store=False, admin=True)
def release_lock_cmd(uds: str, args: tuple[str, ...]) -> None:
    sid = _one(args, "release-lock")
    with _session("release-lock", uds) as client:
        client.release_lock(sid)
        click.echo(f"lock released on {sid}")


# --- blob stores ------------------------------------------------------------------------------
@_command("create", positional=False, write=True)
@click.option("--ttl", type=int, default=0, help="TTL in seconds (sent only if > 0)")
@click.option("--data", default="", help="store contents (default: read stdin)")
@click.option("--name", default="", help="create by name")
@click.option("--reuse", is_flag=True, help="with --name: return the existing store")
def create_cmd(uds: str, customer: str, replicas: int, ttl: int, data: str, name: str, reuse: bool) -> None:
    body = _body(data)
    with _session("create", uds, customer) as client:
        if name:
            sid = _applied(lambda: client.create_by_name(name, body, _ttl(ttl), reuse=reuse, replicas=replicas))
        else:
            sid = _applied(lambda: client.create(body, _ttl(ttl), replicas=replicas))
        click.echo(sid)


@_command("get")
@click.option("--ttl", "show_ttl", is_flag=True, help="print the remaining TTL on stderr")
def get_cmd(uds: str, customer: str, args: tuple[str, ...], show_ttl: bool) -> None:
    sid = _one(args, "get")
    with _session("get", uds, customer) as client:
        snap = client.snapshot(sid)
        _write_bytes(snap.body)
        if show_ttl and snap.ttl is not None:
            click.echo(f"TTL: {snap.ttl} seconds", err=True)


def _one_arg_command(cmd: str, method: str, done: str | None = None, write: bool = False) -> Callable[..., Any]:
    """Register ``cmd <arg>``: call ``client.<method>(arg)``, then print ``done`` (None: what it returned)."""

    @_command(cmd, write=write)
    def command(uds: str, customer: str, args: tuple[str, ...], **write_options: int) -> None:
        arg = _one(args, cmd)
        with _session(cmd, uds, customer) as client:
            out = _applied(lambda: getattr(client, method)(arg, **write_options))
            click.echo(out if done is None else done)

    return command


delete_cmd = _one_arg_command("delete", "delete", "deleted", write=True)
delete_named_cmd = _one_arg_command("delete-named", "delete_by_name", "deleted", write=True)
lookup_cmd = _one_arg_command("lookup", "lookup")


@_command("begin-modify")
@click.option("--data", "show_data", is_flag=True, help="print the current contents on stderr")
def begin_modify_cmd(uds: str, customer: str, args: tuple[str, ...], show_data: bool) -> None:
    sid = _one(args, "begin-modify")
    with _session("begin-modify", uds, customer) as client:
        mod = client.begin_modify(sid)
        click.echo(mod.lock_id)
        if mod.ttl is not None:
            click.echo(f"TTL: {mod.ttl} seconds", err=True)
        if show_data:
            _write_bytes(b"Data: " + mod.body + b"\n", err=True)


@_command("complete-modify", write=True)
@click.option("--lock", default="", help="lock ID from begin-modify (required)")
@click.option("--ttl", type=int, default=0, help="new TTL in seconds (sent only if > 0)")
@click.option("--data", default="", help="new contents (default: read stdin)")
def complete_modify_cmd(
    uds: str, customer: str, args: tuple[str, ...], replicas: int, lock: str, ttl: int, data: str
) -> None:
    sid = _one(args, "complete-modify")
    if not lock:
        _fail("error: -lock is required")
    body = _body(data)
    with _session("complete-modify", uds, customer) as client:
        _applied(lambda: client.complete_modify(sid, lock, body, _ttl(ttl), replicas=replicas))
        click.echo("modified")


@_command("cancel-modify")
@click.option("--lock", default="", help="lock ID from begin-modify (required)")
def cancel_modify_cmd(uds: str, customer: str, args: tuple[str, ...], lock: str) -> None:
    sid = _one(args, "cancel-modify")
    if not lock:
        _fail("error: -lock is required")
    with _session("cancel-modify", uds, customer) as client:
        client.cancel_modify(sid, lock)
        click.echo("cancelled")


# --- counters ---------------------------------------------------------------------------------
@_command("counter-create", positional=False, write=True)
@click.option("--value", type=int, default=0, help="initial value")
@click.option("--min", "lo", type=int, default=None, help="lower bound (implies --with-min)")
@click.option("--max", "hi", type=int, default=None, help="upper bound (implies --with-max)")
@click.option("--with-min", is_flag=True, help="send min (0 unless --min)")
@click.option("--with-max", is_flag=True, help="send max (0 unless --max)")
@click.option("--name", default="", help="create by name")
@click.option("--reuse", is_flag=True, help="with --name: return the existing store")
@click.option("--ttl", type=int, default=0, help="TTL in seconds (sent only if > 0)")
def counter_create_cmd(
    uds: str,
    customer: str,
    replicas: int,
    value: int,
    lo: int | None,
    hi: int | None,
    with_min: bool,
    with_max: bool,
    name: str,
    reuse: bool,
    ttl: int,
) -> None:
    lo = lo if lo is not None else (0 if with_min else None)
    hi = hi if hi is not None else (0 if with_max else None)
    with _session("counter-create", uds, customer) as client:
        click.echo(
            _applied(lambda: client.create_counter(value, lo, hi, _ttl(ttl), name or None, reuse, replicas=replicas))
        )


@_command("counter-get")
def counter_get_cmd(uds: str, customer: str, args: tuple[str, ...]) -> None:
    sid = _one(args, "counter-get")
    with _session("counter-get", uds, customer) as client:
        body = client.snapshot(sid).body
        try:
            click.echo(_pretty(json.loads(body)))
        except ValueError:
            _write_bytes(body + b"\n")


def _counter_step_command(cmd: str, method: str) -> Callable[..., Any]:
    """Register ``cmd <id> [--delta N] [--ttl N]``: ``client.<method>`` and print the counter's JSON."""

    @_command(cmd, write=True)
    @click.option("--delta", type=int, default=1, show_default=True)
    @click.option("--ttl", type=int, default=0, help="new TTL in seconds (sent only if > 0)")
    def command(uds: str, customer: str, args: tuple[str, ...], replicas: int, delta: int, ttl: int) -> None:
        sid = _one(args, cmd)
        with _session(cmd, uds, customer) as client:
            click.echo(_pretty(_applied(lambda: getattr(client, method)(sid, delta, _ttl(ttl), replicas=replicas))))

    return command


counter_increment_cmd = _counter_step_command("counter-increment", "increment")
counter_decrement_cmd = _counter_step_command("counter-decrement", "decrement")


@_command("counter-set", write=True)
@click.option("--value", type=int, default=0, help="new value")
@click.option("--ttl", type=int, default=0, help="new TTL in seconds (sent only if > 0)")
def counter_set_cmd(uds: str, customer: str, args: tuple[str, ...], replicas: int, value: int, ttl: int) -> None:
    sid = _one(args, "counter-set")
    with _session("counter-set", uds, customer) as client:
        _applied(lambda: client.set_counter(sid, value, _ttl(ttl), replicas=replicas))
        click.echo("ok")
