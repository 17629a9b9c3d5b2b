"""Daemon mode (SPEC §8 + §14): ``bbd --flag …`` parses the flags into an ``opts`` mapping, builds the
config (``bigbunny.config.build_config``) and runs the supervisor until it is signalled. With
``--config FILE`` the file's values (``bigbunny.configfile``) sit below the flags given on the
command line and the environment; the supervisor keeps both layers to redo this on a reload.

Semantic checks (keys, secrets, site …) are fatal errors, exit 1, with ``build_config``'s one-line
message on stderr.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from bigbunny.config import ConfigError, build_config
from bigbunny.configfile import ConfigFile, FileValues, layer
from bigbunny.logs import setup_logging
from bigbunny.supervisor.flags import PARAMS
from bigbunny.supervisor.lifecycle import run
from bigbunny.supervisor.state.reload import Reloader


def _run_daemon(**opts: Any) -> None:
    ctx = click.get_current_context()
    given = {k: v for k, v in opts.items() if ctx.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    defaults = {k: v for k, v in opts.items() if k not in given}
    # absolute: a reload must read the same file whatever the working directory is by then
    path = os.path.abspath(opts["config"]) if opts["config"] else ""
    source = ConfigFile(path, PARAMS) if path else None
    try:
        file = source.read() if source is not None else FileValues({}, ())
        opts = layer(given, defaults, file.values)
        # before build_config, whose warnings (an empty token, …) then come out in the configured format
        setup_logging(str(opts["log_level"]), str(opts["log_format"]))
        cfg = build_config(opts, os.environ, file.values)
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    reloader = Reloader(source, given, defaults, dict(os.environ)) if source is not None else None
    sys.exit(run(cfg, reloader, file.warnings))


daemon_command = click.Command(
    "bbd",
    params=list(PARAMS),
    callback=_run_daemon,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Run the bbd daemon.",
)
