"""Big Bunny (bbd): shared core — config, store IDs, wire codec, errors, client and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bigbunny")  # one source of truth: pyproject.toml's [project] version
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
