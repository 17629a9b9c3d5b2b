"""The README's quick examples, run as written against a real dev node.

The "Try it" curl block runs verbatim except for the socket path (``S=…``); the CLI block runs
verbatim with ``bbd`` wrapped in a shell function that appends ``--uds=<the test node's socket>``
(the README relies on the default ``/tmp/bbd.sock``, which a test must not touch). Each block runs
under ``set -euo pipefail``: a command that fails fails the test, and what the README says a command
prints is checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def readme_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def run_block(script: str, sock: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), BBD_TEST_SOCK=sock)
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_try_it_curl_block(node) -> None:
    block = next(b for b in readme_blocks() if "curl" in b and "S=/tmp/bbd.sock" in b)
    p = run_block(block.replace("S=/tmp/bbd.sock", 'S="$BBD_TEST_SOCK"'), node.sock)
    assert p.returncode == 0, p.stderr
    out = p.stdout  # curl prints the bodies back to back
    assert out.startswith("hello"), out  # the snapshot, as the README's comment says
    assert '{"value":5,"version":2,' in out  # the counter after +5
    ids = re.findall(r"v1:\d+:[A-Za-z0-9_-]{59}", out)  # store IDs are 64 characters
    assert len(ids) == 2 and ids[0] == ids[1], out  # create-by-name, then the lookup of the same name
    assert out.rstrip().endswith("}") and '"role":"PRIMARY"' in out  # GET /status


def test_cli_block(node) -> None:
    block = next(b for b in readme_blocks() if "bbd status" in b and "bbd create" in b)
    p = run_block('bbd() { command bbd "$@" --uds="$BBD_TEST_SOCK"; }\n' + block, node.sock)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "Role:" in out and "PRIMARY" in out  # bbd status
    assert re.search(r"^bbd \d+\.\d+", out, re.M)  # bbd --version
    assert "promoted" in out and "lock released" in out
