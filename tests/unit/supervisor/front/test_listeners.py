"""What each listener serves (its surface, applied to the app's real routes) and how binding them
fails: in-process, with no daemon (``Node`` spawns nothing until its pool is started)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from bigbunny.config import build_config
from bigbunny.supervisor.front.admin import App, NoApi
from bigbunny.supervisor.front.api import StoreApi
from bigbunny.supervisor.front.listeners import ADMIN, DATA, EVERYTHING, METRICS, admin_only, open_listeners
from bigbunny.supervisor.front.uds import BindError
from bigbunny.supervisor.state.node import Node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(build_config({"dev": True, "shards": 2}, {}), str(tmp_path_factory.mktemp("run")))
    try:
        yield n
    finally:
        n.pool.ctx.term()


def paths(app: App) -> set[str]:
    return {r.path for r in app.admin.routes}  # type: ignore[attr-defined]


def test_admin_routes_are_matched_by_prefix() -> None:
    assert admin_only("/internal/promote") and admin_only("/internal/reload") and admin_only("/metrics")
    assert not any(admin_only(p) for p in ("/status", "/healthz", "/readyz", "/internals", "/metrics/x"))
    assert not DATA.keep("/internal/anything-added-later") and ADMIN.keep("/internal/anything-added-later")


def test_surfaces_over_the_real_routes(node: Node) -> None:
    everything = paths(App(node))
    assert {"/status", "/metrics", "/healthz", "/readyz", "/internal/promote"} <= everything
    data, admin, metrics = (App(node, s) for s in (DATA, ADMIN, METRICS))
    assert paths(data) == {p for p in everything if not p.startswith("/internal/") and p != "/metrics"}
    assert paths(admin) == everything
    assert paths(metrics) == {"/metrics", "/healthz", "/readyz"}
    assert isinstance(data.api, StoreApi) and isinstance(App(node, EVERYTHING).api, StoreApi)
    assert isinstance(admin.api, NoApi) and isinstance(metrics.api, NoApi)
    shared = App(node, DATA, data.api)
    assert shared.api is data.api  # one StoreApi per node, whatever the number of listeners


def test_a_failed_second_bind_leaves_nothing_behind(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = str(tmp_path_factory.mktemp("l"))
    data, admin = os.path.join(d, "s"), os.path.join(d, "a")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:  # another daemon on the admin path
        live.bind(admin)
        live.listen(1)
        cfg = build_config({"dev": True, "uds": data, "admin_uds": admin}, {})
        with pytest.raises(BindError, match=f"^failed to listen on admin UDS {admin}: address already in use"):
            open_listeners(cfg)
        assert not os.path.exists(data)
        assert os.path.exists(admin)  # the live one is not ours: untouched


def test_metrics_listener_binds_tcp(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = str(tmp_path_factory.mktemp("m"))
    cfg = build_config({"dev": True, "uds": os.path.join(d, "s"), "metrics_addr": "127.0.0.1:0"}, {})
    listeners = open_listeners(cfg)
    try:
        assert [lst.surface for lst in listeners] == [EVERYTHING, METRICS]
        assert listeners[1].path is None and listeners[1].sock.getsockname()[0] == "127.0.0.1"
    finally:
        for lst in listeners:
            lst.sock.close()
        os.unlink(os.path.join(d, "s"))
