"""Fixtures of the unit tests: the fake daemon of the client and CLI tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from fakedaemon import FakeDaemon


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="bbt")
    daemon = FakeDaemon(os.path.join(tmp, "s"))
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
