"""The asyncio client against a real bbd, and the Starlette example app of docs/client.md run under uvicorn."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import uvicorn
from conftest import Daemon
from helpers import wait_until

from bigbunny.aio import AsyncBBClient, Conflict, Expired, NotFound
from bigbunny.client import BBClient

pytestmark = pytest.mark.timeout(60)
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "session_app.py"


def test_async_client_end_to_end(node: Daemon, cust: str) -> None:
    async def main() -> None:
        async with AsyncBBClient(node.sock, customer=cust, max_connections=8) as bb:
            sid = await bb.create(b"hello", ttl=60)
            assert (await bb.snapshot(sid)).body == b"hello"
            lock = await bb.begin_modify(sid)
            with pytest.raises(Conflict) as busy:
                await bb.update(sid, b"x")
            assert busy.value.code == "StoreLocked" and busy.value.retryable
            await bb.complete_modify(sid, lock.lock_id, b"world")
            bodies = await asyncio.gather(*(bb.snapshot(sid) for _ in range(200)))
            assert {s.body for s in bodies} == {b"world"}
            assert len(bb._pool._idle) <= 8
            counter = await bb.create_counter(5, min=0, max=10, name="hits")
            assert await bb.lookup("hits") == counter
            assert (await bb.increment(counter, 3))["value"] == 8
            await bb.delete(sid)
            with pytest.raises(NotFound):
                await bb.snapshot(sid)
            short = await bb.create(b"x", ttl=1)
            await asyncio.sleep(1.3)
            with pytest.raises((Expired, NotFound)):
                await bb.snapshot(short)
            assert (await bb.status())["role"] == "PRIMARY"

    asyncio.run(main())


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("session_app", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example_app(node: Daemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example app served by uvicorn on a Unix socket in a thread; yields the socket's path."""
    monkeypatch.setenv("BBD_SOCKET", node.sock)
    sock = os.path.join(node.dir, "app")
    server = uvicorn.Server(uvicorn.Config(_load_example().app, uds=sock, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "the example app to start")
        yield sock
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive()


def test_example_session_app(example_app: str) -> None:
    with BBClient(example_app) as http:

        def call(method: str, path: str, body: object = None, cookie: str = "") -> tuple[int, dict, str]:
            headers = {"Content-Type": "application/json", **({"Cookie": f"sid={cookie}"} if cookie else {})}
            resp = http.request(method, path, headers, json.dumps(body).encode() if body is not None else b"")
            return resp.status, json.loads(resp.body), resp.headers.get("set-cookie", "")

        assert call("GET", "/me")[0] == 401
        status, body, set_cookie = call("POST", "/login", {"user": "ada"})
        assert status == 200 and body == {"user": "ada"} and "HttpOnly" in set_cookie
        sid = set_cookie.split(";")[0].removeprefix("sid=").strip('"')
        assert call("GET", "/me", cookie=sid)[1] == {"user": "ada", "cart": []}
        for item in ("tea", "scones"):
            assert call("POST", "/cart", {"item": item}, sid)[0] == 200
        assert call("GET", "/me", cookie=sid)[1] == {"user": "ada", "cart": ["tea", "scones"]}
        assert call("POST", "/logout", cookie=sid)[0] == 200
        assert call("GET", "/me", cookie=sid)[0] == 401
        assert call("GET", "/me", cookie="not-a-store-id")[0] == 401


def test_client_md_shows_the_tested_example() -> None:
    doc = (EXAMPLE.parents[1] / "client.md").read_text()
    assert EXAMPLE.read_text().strip() in doc, "docs/client.md must include docs/examples/session_app.py verbatim"


def test_client_bench_reports_calls_per_second(node: Daemon) -> None:
    bench = Path(__file__).resolve().parents[2] / "ops" / "client-bench"
    argv = [sys.executable, str(bench), "--uds", node.sock, "--conns", "8", "--duration", "0.5", "--warmup", "0.1"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)
    assert row["transport"] == "bigbunny" and row["errors"] == 0 and row["ops_per_s"] > 0, row
    assert 0 < row["p50_us"] <= row["p99_us"], row
    if importlib.util.find_spec("aiohttp") is None:
        p = subprocess.run([*argv, "--transport", "aiohttp"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "aiohttp is not installed" in p.stderr
