"""The ``bbd`` console script: one binary, two modes, chosen by the first argument (SPEC §8, §9).

* no argument, ``help``, ``-h``, ``-help``, ``--help`` → usage on stdout, exit 0;
* ``--version`` / ``-version`` → the version, exit 0;
* first argument starts with ``-`` → daemon mode (:mod:`bigbunny.supervisor.daemon`);
* otherwise a client subcommand (:func:`bigbunny.cli.run_client`); an unknown one is a usage error (exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from bigbunny import __version__
from bigbunny.cli import HELP, normalise, option_table, run_client
from bigbunny.cli_client import COMMANDS
from bigbunny.supervisor.flags import PARAMS


def usage() -> str:
    ctx = click.Context(click.Command("bbd", params=list(PARAMS)), info_name="bbd")
    formatter = click.HelpFormatter(width=110, max_width=110)
    with formatter.section("Daemon flags (also -flag, -flag=value; booleans --flag=true|false)"):
        formatter.write_dl([rec for p in PARAMS if (rec := p.get_help_record(ctx))])
    with formatter.section(
        "Client commands (all take --uds; store commands also --customer, default 'default'; "
        "promote, release-lock, reload, customers also --admin-uds)"
    ):
        formatter.write_dl([(synopsis, help_) for synopsis, help_ in COMMANDS.values()])
    return (
        "Big Bunny: an in-memory session store.\\n\\n"
        "Usage:\\n  bbd [flags]                  run the daemon\\n"
        "  bbd --version                print the version\\n"
        "  bbd <command> [options]      talk to a running daemon over its Unix socket\\n\\n" + formatter.getvalue()
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``bbd`` console script; always exits via ``SystemExit``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in HELP:
        click.echo(usage(), nl=False)
        sys.exit(0)
    if args[0] in ("--version", "-version"):
        click.echo(f"bbd {__version__}")
        sys.exit(0)
    if not args[0].startswith("-"):
        run_client(args)
    # Imported only to run the daemon: a client command does not load the server stack (~130 ms).
    from bigbunny.supervisor.daemon import daemon_command

    daemon_command.main(normalise(args, option_table(daemon_command)), prog_name="bbd")
    sys.exit(0)  # click's main() exits itself in standalone mode; this is only a safety net
