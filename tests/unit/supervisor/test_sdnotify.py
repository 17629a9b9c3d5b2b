"""``supervisor.sdnotify``: the sd_notify datagrams bbd sends to systemd (READY/WATCHDOG/STOPPING)."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator

import pytest

from bigbunny.supervisor.sdnotify import Notifier


@pytest.fixture
def path_socket() -> Iterator[tuple[str, socket.socket]]:
    d = tempfile.mkdtemp(prefix="bbn", dir="/tmp")  # short: AF_UNIX paths max out at 107 bytes
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2.0)
    try:
        yield path, s
    finally:
        s.close()
        os.unlink(path)
        os.rmdir(d)


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert n.notify("READY=1") is False
    assert n.watchdog_interval == 0.0
    # A watchdog without a socket still sends nothing.
    n = Notifier(env={"WATCHDOG_USEC": "200000"})
    assert not n.enabled and n.notify("WATCHDOG=1") is False


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    assert Notifier().address == "/run/systemd/notify"


def test_path_socket_receives_the_datagram(path_socket: tuple[str, socket.socket]) -> None:
    path, s = path_socket
    n = Notifier(env={"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.notify("READY=1\nSTATUS=serving") is True
    assert s.recv(4096) == b"READY=1\nSTATUS=serving"
    assert n.notify("STOPPING=1") is True
    assert s.recv(4096) == b"STOPPING=1"


def test_abstract_address() -> None:
    name = f"bbd-test-{os.getpid()}-{os.urandom(4).hex()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)  # systemd writes abstract addresses as "@name"
    s.settimeout(2.0)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert n.notify("WATCHDOG=1") is True
        assert s.recv(4096) == b"WATCHDOG=1"
    finally:
        s.close()


def test_unreachable_socket_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": "/nonexistent/bbd-notify"})
    with caplog.at_level(logging.WARNING, logger="bbd.systemd"):
        assert n.notify("READY=1\nSTATUS=x") is False
    assert "READY=1" in caplog.text and "STATUS" not in caplog.text  # only the first line is logged


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.1),  # every half of WATCHDOG_USEC
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "<own>"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "<other>"}, 0.0),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, 0.0),
        ({"WATCHDOG_USEC": ""}, 0.0),
        ({"WATCHDOG_USEC": "abc"}, 0.0),
        ({"WATCHDOG_USEC": "-5"}, 0.0),
        ({}, 0.0),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float) -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", **env}
    if env.get("WATCHDOG_PID") == "<own>":
        env["WATCHDOG_PID"] = str(os.getpid())
    elif env.get("WATCHDOG_PID") == "<other>":
        env["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert Notifier(env=env).watchdog_interval == pytest.approx(interval)
