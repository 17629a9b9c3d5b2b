"""The ``--config FILE`` layer: a TOML file whose keys are the daemon's long flag names.

The file is generic over the daemon's flags: every key is looked up in the click command's options
and its value converted by that option's own type, so a flag added later is accepted in the file
without an edit here. Values are written as on the command line (``rate-limit = 50``,
``lock-timeout = "750ms"``, ``dev = true``), with TOML types checked first so that ``1.5`` is not
silently truncated to an integer.

Precedence, highest first: a flag given on the command line, its environment variable (the secrets),
the file, the flag's default. :func:`layer` builds the opts mapping for ``build_config`` from the
command-line values and the file; ``build_config`` consults the environment before the file.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import click

from bigbunny.config import ConfigError

__all__ = ["ConfigFile", "FileValues", "layer", "read_config_file"]

# Keys that make no sense inside the file itself.
_NOT_IN_FILE = frozenset({"config"})
# Flags whose value is a secret: a file holding one should not be readable by others.
SECRET_FLAGS = frozenset({"store-keys", "routing-secret", "internal-token"})


@dataclass(frozen=True)
class FileValues:
    """One successful read: converted values by option name (``rate_limit``) and the warnings to log."""

    values: dict[str, Any]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class ConfigFile:
    """Where the file is and which flags it may set (the daemon command's options)."""

    path: str
    options: tuple[click.Option, ...]

    def read(self) -> FileValues:
        return read_config_file(self.path, self.options)


def _toml_kind(value: Any) -> str:
    for kind, types in (("boolean", bool), ("integer", int), ("float", float), ("string", str)):
        if isinstance(value, types):
            return kind
    return {"dict": "table", "list": "array"}.get(type(value).__name__, type(value).__name__)


def _expected(option: click.Option) -> tuple[str, tuple[type, ...]]:
    """What a key's TOML value must be, checked before click's conversion: booleans only for boolean
    flags, no float for an integer flag (click would truncate it), a string or a number for a duration."""
    if option.is_flag:
        return "a boolean", (bool,)
    if isinstance(option.type, click.types.IntParamType):
        return "an integer", (int,)
    if isinstance(option.type, click.types.FloatParamType):
        return "a number", (int, float)
    if option.type.name == "duration":
        return 'a duration string ("500ms") or seconds', (str, int, float)
    if option.type.name == "ttl":
        return 'a TTL string ("14d") or whole seconds', (str, int)
    return "a string", (str,)


def read_config_file(path: str, options: Iterable[click.Option]) -> FileValues:
    """Parse and convert ``path``; any problem is a one-line ConfigError naming the file and the key."""
    by_key = {opt[2:]: o for o in options for opt in o.opts if opt.startswith("--") and o.name}
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: invalid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: invalid TOML: not UTF-8") from None
    values: dict[str, Any] = {}
    for key, raw in doc.items():
        option = by_key.get(key)
        if option is None or key in _NOT_IN_FILE:
            dashed = key.replace("_", "-")
            hint = f" (did you mean {dashed!r}? keys are the long flag names)" if dashed in by_key else ""
            raise ConfigError(f"config file {path}: unknown key {key!r}{hint}")
        want, types = _expected(option)
        if not isinstance(raw, types) or (isinstance(raw, bool) and not option.is_flag):
            raise ConfigError(f"config file {path}: key {key!r}: expected {want}, got {_toml_kind(raw)}")
        try:
            values[str(option.name)] = option.type.convert(raw, option, None)
        except click.BadParameter as e:
            raise ConfigError(f"config file {path}: key {key!r}: {e.message}") from None
    warnings = []
    secrets = sorted(SECRET_FLAGS & doc.keys())
    if secrets and stat.S_IMODE(mode) & 0o077:
        warnings.append(
            f"config file {path} holds {', '.join(secrets)} but is readable by others "
            f"(mode {stat.S_IMODE(mode):04o}); use 0600 or 0640"
        )
    return FileValues(values, tuple(warnings))


def layer(given: Mapping[str, Any], defaults: Mapping[str, Any], file: Mapping[str, Any]) -> dict[str, Any]:
    """Opts for ``build_config``: each flag given on the command line (or by its click env var) keeps its
    value; a flag the file sets is left to the file (None, so ``build_config`` can look at the
    environment first); every other flag gets its default."""
    out = dict(defaults)
    for name in file:
        out[name] = None
    out.update(given)
    return out
