"""Go-style flags for click, and the client half of the ``bbd`` command line (SPEC §8, §9, §14).

The ``bbd`` console script is :func:`bigbunny.supervisor.entry.main`, which picks the mode from the
first argument; a client subcommand comes here (:func:`run_client`, commands in
:mod:`bigbunny.cli_client`), so the shared core never imports the daemon.

Before click parses anything, :func:`normalise` rewrites the Go-flag spellings the reference accepted
into click's: ``-name`` → ``--name``, ``-name=v`` → ``--name=v``, and for boolean flags
``--flag=true`` → ``--flag`` and ``--flag=false`` → nothing (cancelling any earlier ``--flag``).
Only names the command actually defines are rewritten, and a token that is the value of a preceding
option (``--data -x``) is never touched, so options may come before or after positionals.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from bigbunny.cli_client import client_group

HELP = frozenset({"help", "-h", "-help", "--help"})
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go strconv.ParseBool
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def option_table(cmd: click.Command) -> dict[str, bool]:
    """Long option names of ``cmd`` (without dashes) → whether the option is a boolean flag."""
    table = {"help": True}
    for param in cmd.params:
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                if opt.startswith("--"):
                    table[opt[2:]] = param.is_flag
    return table


def normalise(args: Sequence[str], table: dict[str, bool]) -> list[str]:
    """Rewrite Go-style flags in ``args`` to click's spelling (see the module docstring)."""
    out: list[str | None] = []
    flag_at: dict[str, list[int]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1 :])
            break
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else arg[1:].partition("=")
        if not arg.startswith("-") or name not in table:
            out.append(arg)
        elif not table[name]:
            out.append(f"--{name}{eq}{value}")
            if not eq and i < len(args):
                out.append(args[i])  # the option's value, verbatim
                i += 1
        elif eq and value in _FALSE:
            for at in flag_at.pop(name, []):
                out[at] = None
        elif eq and value not in _TRUE:
            out.append(f"--{name}={value}")  # click rejects it: a usage error, exit 2
        else:
            flag_at.setdefault(name, []).append(len(out))
            out.append(f"--{name}")
    return [a for a in out if a is not None]


def run_client(args: Sequence[str]) -> None:
    """Run the client subcommand ``args[0]`` with its options; an unknown one is a usage error (exit 2)."""
    cmd = client_group.commands.get(args[0])
    rest = normalise(args[1:], option_table(cmd)) if cmd is not None else list(args[1:])
    client_group.main([args[0], *rest], prog_name="bbd")
    sys.exit(0)  # click's main() exits itself in standalone mode; this is only a safety net
