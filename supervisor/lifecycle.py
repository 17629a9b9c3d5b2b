"""Daemon lifecycle: start-up, the running phase, and bounded, logged shutdown phases.

start: bind the sockets (the data socket, refusing a live daemon's; the admin socket; the metrics port)
→ private 0700 runtime dir for ipc endpoints → spawn shards (requests queue until they bind) → serve
HTTP, one uvicorn server per socket. Signals only set a flag; the main coroutine acts. SIGHUP re-reads
the ``--config`` file in a task (``supervisor.state.reload``) and never stops the daemon.
Shutdown (SIGTERM/SIGINT), total ≤ 10 s:
1. stop accepting and drain in-flight requests (uvicorn graceful shutdown, ≤ 5 s);
2. stop the shards (SIGTERM, ≤ 3 s, then SIGKILL — a hung or stopped shard included) and reap them;
3. remove the sockets and the runtime dir; exit 0.
A second SIGINT/SIGTERM skips the drain.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence

import zmq

from bigbunny.config import Config
from bigbunny.logs import setup_logging
from bigbunny.supervisor.cluster.coordinator import Cluster
from bigbunny.supervisor.expiry import Collector
from bigbunny.supervisor.front.admin import App
from bigbunny.supervisor.front.listeners import Listener, close_listeners, open_listeners
from bigbunny.supervisor.front.server import HttpLimits, make_server
from bigbunny.supervisor.front.uds import BindError
from bigbunny.supervisor.sdnotify import Notifier
from bigbunny.supervisor.state.node import Node
from bigbunny.supervisor.state.reload import Reloader

log = logging.getLogger("bbd.supervisor")
DRAIN_TIMEOUT = 5.0
SHARD_STOP_TIMEOUT = 3.0
TOTAL_STOP_BUDGET = 9.5  # SIGTERM → exit, all phases (the contract is 10 s)
_early_signals: list[int] = []  # SIGTERM/SIGINT received before the event loop's handlers were installed


def _record_signal(signum: int, frame: object) -> None:
    _early_signals.append(signum)  # only record; _main acts once its loop runs (or the cleanup goes on)


def make_rundir(shards: int) -> str:
    """A private 0700 directory for the shard ipc endpoints; short, because ipc paths max out at 107 bytes."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    if not os.path.isdir(base) or len(base) > 60:
        base = "/tmp"
    path = tempfile.mkdtemp(prefix="bbd-", dir=base)
    os.chmod(path, 0o700)
    longest = f"{path}/s{shards}.999999"
    if len(longest) > zmq.IPC_PATH_MAX_LEN:
        shutil.rmtree(path, ignore_errors=True)
        raise RuntimeError(f"runtime dir {path!r} too long for ipc endpoints (max {zmq.IPC_PATH_MAX_LEN} bytes)")
    return path


def run(cfg: Config, reloader: Reloader | None = None, warnings: Sequence[str] = ()) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code. With a ``reloader`` (``--config``)
    SIGHUP re-reads the file; ``warnings`` are the file's, logged once logging is set up."""
    setup_logging(cfg.log_level, cfg.log_format)
    for warning in warnings:
        log.warning("%s", warning)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # from the bind on, a signal must never skip the cleanup
        signal.signal(sig, _record_signal)
    try:
        listeners = open_listeners(cfg)
    except BindError as e:
        print(e, file=sys.stderr)
        return 1
    rundir = None
    try:
        rundir = make_rundir(cfg.shards)
        log.info("starting: %s", cfg.summary())
        try:
            import uvloop

            return uvloop.run(_main(cfg, listeners, rundir, reloader))
        except ImportError:
            return asyncio.run(_main(cfg, listeners, rundir, reloader))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        close_listeners(listeners)
        if rundir:
            shutil.rmtree(rundir, ignore_errors=True)
        log.info("stopped")


async def _systemd(notifier: Notifier, node: Node) -> None:
    """READY=1 once the socket is bound and every shard answers; WATCHDOG=1 only while they answer."""
    while not await node.pool.wait_ready(1.0):
        pass
    notifier.notify(f"READY=1\nSTATUS=serving on {node.cfg.uds} as {node.role.role}\nMAINPID={os.getpid()}")
    if not notifier.watchdog_interval:
        return
    while True:
        await asyncio.sleep(notifier.watchdog_interval)
        if node.healthy():
            notifier.notify("WATCHDOG=1")


def _on_hangup(reloader: Reloader | None, node: Node, tasks: set[asyncio.Task[object]]) -> None:
    """SIGHUP: reload in a task (its outcome is logged by the reloader); without --config, say so."""
    if reloader is None:
        log.warning("SIGHUP ignored: no --config file to reload")
        return
    task: asyncio.Task[object] = asyncio.get_running_loop().create_task(reloader.reload(node, "SIGHUP"))
    tasks.add(task)  # the loop keeps only a weak reference to a task
    task.add_done_callback(tasks.discard)


async def _main(cfg: Config, listeners: list[Listener], rundir: str, reloader: Reloader | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hits = 0

    def on_signal(signum: int) -> None:
        nonlocal hits
        hits += 1
        stop.set()  # only record; the coroutine below acts
        if hits > 1:
            for server in servers:
                server.force_exit = True

    node = Node(cfg, rundir)
    app = App(node, listeners[0].surface, reloader=reloader)  # the data socket: the one that serves the API
    apps = [app] + [App(node, lst.surface, reloader=reloader) for lst in listeners[1:]]
    if cfg.peers:
        node.cluster = Cluster(node)
        node.cluster.forwarder.api = app.api
        node.cluster.start()  # binds --tcp now: a bad address fails start-up
    else:
        node.role.start_primary()  # a single node is PRIMARY at epoch 1
    limits = HttpLimits(
        cfg.http_max_header_bytes, cfg.http_read_header_timeout, cfg.http_read_timeout, cfg.http_write_timeout
    )
    servers = [make_server(a, limits, cfg.http_idle_timeout, DRAIN_TIMEOUT, cfg.max_store_size) for a in apps]
    for term in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(term, on_signal, term)
    reloads: set[asyncio.Task[object]] = set()
    loop.add_signal_handler(signal.SIGHUP, _on_hangup, reloader, node, reloads)
    for sig in _early_signals:  # a signal that arrived during start-up acts now
        if sig == signal.SIGHUP:
            _on_hangup(reloader, node, reloads)  # the file may have changed after it was read
        else:
            on_signal(sig)
    node.pool.start()
    serves = [loop.create_task(server.serve(sockets=[lst.sock])) for server, lst in zip(servers, listeners)]
    for _ in range(1000):  # listeners first (≤ 1 s), then the shard processes
        if all(server.started for server in servers) or any(serve.done() for serve in serves):
            break
        await asyncio.sleep(0.001)
    node.pool.spawn_all()
    # Everything alive now (modules, the app, keys) lives as long as the process: keep it out of every
    # future collection, so the collector only ever walks what requests allocate. No collection first:
    # it would cost start-up ~80 ms here, to reclaim a little import-time garbage.
    gc.freeze()
    notifier = Notifier()
    systemd = loop.create_task(_systemd(notifier, node)) if notifier.enabled else None
    expiry = loop.create_task(Collector(node, cfg.gc_interval).run())
    waiter = loop.create_task(stop.wait())
    await asyncio.wait([*serves, waiter], return_when=asyncio.FIRST_COMPLETED)
    stopping_at = time.monotonic()
    if systemd is not None:
        systemd.cancel()
    notifier.notify("STOPPING=1")
    log.info("shutting down: draining requests (≤ %.0f s)", DRAIN_TIMEOUT)
    for server in servers:
        server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.gather(*serves), DRAIN_TIMEOUT + 1)
    except (TimeoutError, Exception) as e:  # noqa: BLE001 - shutdown must go on whatever happened
        log.warning("HTTP drain ended early: %r", e)
    expiry.cancel()
    waiter.cancel()
    if node.cluster is not None:
        budget = max(0.5, TOTAL_STOP_BUDGET - SHARD_STOP_TIMEOUT - (time.monotonic() - stopping_at))
        log.info("shutting down: flushing replication to the peer (≤ %.1f s)", budget)
        await node.cluster.stop(budget)
    log.info("shutting down: stopping shards (≤ %.0f s)", SHARD_STOP_TIMEOUT)
    await node.pool.stop(SHARD_STOP_TIMEOUT)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
        signal.signal(sig, _record_signal)  # already stopping: a late signal must not cut the cleanup short
    return 0
