"""bind_uds applies the socket's group and mode without a window: the file is born 0600, gets its group
while still 0600, then its mode, and nobody can connect before all of that is done."""

from __future__ import annotations

import grp
import os
import socket
import stat
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bigbunny.supervisor.front import uds
from bigbunny.supervisor.front.uds import BindError, bind_uds


@pytest.fixture
def path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    p = os.path.join(str(tmp_path_factory.mktemp("u")), "s")
    yield p
    uds.remove_uds(p)


def connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return False
        return True


def spy(monkeypatch: pytest.MonkeyPatch, name: str, seen: list[tuple[str, int, bool]]) -> None:
    """Record, before each real call, the file's mode and whether a client could connect yet."""
    real: Callable[..., Any] = getattr(os, name)

    def wrapper(p: str, *args: Any) -> Any:
        seen.append((name, stat.S_IMODE(os.lstat(p).st_mode), connectable(p)))
        return real(p, *args)

    monkeypatch.setattr(uds.os, name, wrapper)


def test_group_then_mode_then_listen(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    seen: list[tuple[str, int, bool]] = []
    spy(monkeypatch, "chown", seen)
    spy(monkeypatch, "chmod", seen)
    gid = os.getgid()  # always allowed; what matters here is the order
    sock = bind_uds(path, 0o660, gid)
    try:
        assert seen == [("chown", 0o600, False), ("chmod", 0o600, False)]
        st = os.lstat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, gid)
        assert connectable(path)
    finally:
        sock.close()


def test_default_is_0600_and_no_chown(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    seen: list[tuple[str, int, bool]] = []
    spy(monkeypatch, "chown", seen)
    sock = bind_uds(path)
    try:
        assert seen == []
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    finally:
        sock.close()


def test_failure_to_set_permissions_is_fatal_and_leaves_no_socket(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    def denied(p: str, *args: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(uds.os, "chown", denied)
    gid = grp.getgrgid(os.getgid()).gr_gid
    with pytest.raises(BindError, match=f"^cannot set group {gid}: Operation not permitted$"):
        bind_uds(path, 0o660, gid)
    assert not os.path.exists(path)
