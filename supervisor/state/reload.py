"""Reload: re-read the ``--config`` file (SIGHUP, ``POST /internal/reload``) and apply what can change live.

A reload is all or nothing. The file is read and validated exactly as at start (same layering: flags
and environment variables still win over the file); a key removal is checked against the stores and
tombstones this node holds; only then is anything applied, in one event-loop turn:

* rate limit and burst → the supervisor's ``RateLimiter``;
* memory limit and customer quota → ``Accounting`` (the allowance travels with each request, so the
  shards need nothing);
* tombstone limits → ``Tombstones``;
* log level → this process, and every shard (``OP_RECONFIGURE``);
* store keys and the current key → the supervisor's minter and every shard (``OP_RECONFIGURE``), and
  the settings a restarted shard is spawned with. The shards' messages are queued before the minter
  switches, so a shard always knows a key before it sees an ID sealed with it.

Every other setting is compared too and, if it differs, reported as needing a restart. Each change is
logged on its own line; a refused reload logs one error line and changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bigbunny import wire
from bigbunny.config import OPTION_ENV, Config, ConfigError, build_config, format_addr
from bigbunny.configfile import ConfigFile, layer
from bigbunny.durations import format_duration
from bigbunny.logs import set_level
from bigbunny.storeid import KeySet, StoreIdCodec
from bigbunny.supervisor.pool.channel import ShardDown
from bigbunny.supervisor.state.node import Node

log = logging.getLogger("bbd.reload")

# Config fields a reload applies without a restart; every other field needs one.
LIVE_FIELDS = (
    "rate_limit",
    "burst_size",
    "memory_limit",
    "customer_memory_quota",
    "tombstone_customer_limit",
    "tombstone_global_limit",
    "log_level",
    "keys",
)
SHARD_TIMEOUT = 5.0  # for the key-use count; a shard that does not answer makes a key removal wait


@dataclass(frozen=True)
class ReloadReport:
    """The answer of one reload: what changed live, what differs but needs a restart, what the file sets
    that a flag or environment variable overrides, or why nothing was applied."""

    applied: bool
    file: str
    trigger: str
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    restart_required: dict[str, dict[str, Any]] = field(default_factory=dict)
    overridden: list[str] = field(default_factory=list)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        if self.applied:
            del doc["error"]
        return doc


def _text(value: Any) -> str:
    """A reported value in a log line (key sets as ``ids 1,2 current 2``)."""
    if isinstance(value, dict):
        return f"ids {','.join(value['ids'])} current {value['current']}"
    return str(value)


def _flag(name: str) -> str:
    return "store-keys" if name == "keys" else name.replace("_", "-")


class Reloader:
    """Holds what start-up knew (the file, the command-line values, the environment) to redo it later."""

    def __init__(
        self, source: ConfigFile, given: Mapping[str, Any], defaults: Mapping[str, Any], env: Mapping[str, str]
    ) -> None:
        self.source = source
        self.given = dict(given)
        self.defaults = dict(defaults)
        self.env = dict(env)
        self.durations = {o.name for o in source.options if o.type.name == "duration"}
        self.results = {"applied": 0, "refused": 0}  # bbd_config_reloads_total
        self.last_applied: float = 0.0  # wall clock of the last applied reload (0 = none)
        self._lock = asyncio.Lock()  # one reload at a time: a second waits and then reads the file again

    async def reload(self, node: Node, trigger: str) -> ReloadReport:
        async with self._lock:
            path = self.source.path
            try:
                file = self.source.read()
                new = build_config(layer(self.given, self.defaults, file.values), self.env, file.values)
                await _check_key_removal(node, node.cfg.keys, new.keys)
            except ConfigError as e:
                self.results["refused"] += 1
                log.error("reload (%s) refused, nothing changed: %s", trigger, e)
                return ReloadReport(False, path, trigger, error=str(e))
            for warning in file.warnings:
                log.warning("%s", warning)
            report = ReloadReport(True, path, trigger, overridden=self._overridden(file.values))
            old = node.cfg
            for f in dataclasses.fields(Config):
                before, after = getattr(old, f.name), getattr(new, f.name)
                if before == after:
                    continue
                shown = {"from": self._show(f, before), "to": self._show(f, after)}
                (report.changed if f.name in LIVE_FIELDS else report.restart_required)[_flag(f.name)] = shown
            await _apply(node, new)
            self.results["applied"] += 1
            self.last_applied = time.time()
            for name, change in report.changed.items():
                log.warning(
                    "reload (%s): %s changed from %s to %s", trigger, name, _text(change["from"]), _text(change["to"])
                )
            for name, change in report.restart_required.items():
                log.warning(
                    "reload (%s): %s differs (running %s, file %s): needs a restart to apply",
                    trigger,
                    name,
                    _text(change["from"]),
                    _text(change["to"]),
                )
            for name in report.overridden:
                log.info("reload (%s): %s in the file is overridden by a flag or environment variable", trigger, name)
            log.warning(
                "reload (%s) applied from %s: %d changed live, %d need a restart",
                trigger,
                path,
                len(report.changed),
                len(report.restart_required),
            )
            return report

    def _overridden(self, values: Mapping[str, Any]) -> list[str]:
        return sorted(
            _flag(name)
            for name in values
            if self.given.get(name) not in (None, "") or self.env.get(OPTION_ENV.get(name, ""), "")
        )

    def _show(self, f: dataclasses.Field[Any], value: Any) -> Any:
        if not f.repr:
            return "(secret)"
        if isinstance(value, KeySet):
            return {"ids": sorted(value.keys), "current": value.current}
        if f.name in self.durations:
            return format_duration(round(float(value) * 1e9))
        if f.name == "metrics_addr":
            return format_addr(value) if value else ""
        if f.name == "uds_mode":
            return f"{value:04o}"
        if isinstance(value, tuple):  # peers
            return ",".join(f"{p.id}@{p.address}" for p in value)
        return value if isinstance(value, bool | int | float | str) or value is None else str(value)


async def _check_key_removal(node: Node, old: KeySet, new: KeySet) -> None:
    """A key is *in use* while it is the current key, or while it seals the ID of a store this node holds
    (in any shard; expired but not yet collected included). Such a key may not be removed, nor its bytes
    replaced under the same id: the IDs it sealed would stop opening. Tombstones do not count: they
    work on the ID string, never opened."""
    gone = sorted(k for k in old.keys if new.keys.get(k) != old.keys[k])
    if not gone:
        return
    if old.current in gone:
        raise ConfigError(
            f"store key {old.current!r} is the current key and cannot be removed or replaced: "
            "make another key current first, and remove this one in a later reload"
        )
    stores = dict.fromkeys(gone, 0)
    calls = [ch.call(wire.OP_KEY_USE, extra=gone) for ch in node.channels]  # all shards count at once
    try:
        for index, call in enumerate(calls):
            try:
                res = await asyncio.wait_for(call, SHARD_TIMEOUT)
            except (ShardDown, TimeoutError):
                raise ConfigError(
                    f"cannot check whether store key {gone[0]!r} is in use: shard {index} is not answering; try again"
                ) from None
            if res.err != wire.OK:
                raise ConfigError(f"cannot check whether store key {gone[0]!r} is in use: shard {index} failed")
            for k, n in res.a.items():  # a = {key_id: stores sealed with it}
                stores[k] += n
    finally:
        for call in calls:  # after an early refusal: no late answer is left unread
            if not call.done():
                call.cancel()
            elif not call.cancelled():
                call.exception()
    for k in gone:
        if stores[k]:
            raise ConfigError(
                f"store key {k!r} is still in use ({stores[k]} stores sealed with it) and cannot be removed or replaced"
            )


async def _apply(node: Node, new: Config) -> None:
    """Apply every live field of ``new`` (no await until the shards have their messages queued)."""
    old = node.cfg
    node.limiter.set_limits(new.rate_limit, new.burst_size)
    node.accounting.set_limits(new.memory_limit, new.customer_memory_quota)
    node.tombstones.set_limits(new.tombstone_customer_limit, new.tombstone_global_limit)
    update: dict[str, Any] = {}
    if new.log_level != old.log_level:
        set_level(new.log_level)
        update["log_level"] = new.log_level
    if new.keys != old.keys:
        update["keys"] = {k: v.hex() for k, v in new.keys.keys.items()}
        update["current"] = new.keys.current
    node.cfg = dataclasses.replace(old, **{name: getattr(new, name) for name in LIVE_FIELDS})
    if not update:
        return
    node.pool.settings.update(update)  # a shard spawned from now on starts with them
    calls = [ch.call(wire.OP_RECONFIGURE, extra=update) for ch in node.channels if not ch.closed]
    if "keys" in update:  # only now: every live shard has the new keys queued ahead of any new ID
        node.minter.codec = StoreIdCodec(new.keys, old.site, old.verify_site)
    if not calls:
        return
    # A shard that dies or hangs instead of answering is replaced, and its successor starts with the
    # new settings: nothing to retry here.
    done, pending = await asyncio.wait(calls, timeout=SHARD_TIMEOUT)
    for fut in pending:
        fut.cancel()
    for fut in done:
        if fut.exception() is None and fut.result().err != wire.OK:
            log.error("a shard refused the reloaded settings (error %s)", fut.result().err)
