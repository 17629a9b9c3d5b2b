"""Named-store endpoints (SPEC §2.8 as amended by §14): create-by-name, lookup, delete-by-name.

The registry lives in the supervisor; the stores live in shards. A check and the state change it
guards always happen in the same event-loop turn (no ``await`` between them); after an ``await`` the
entry is re-read, because another request may have changed it meanwhile.
"""

from __future__ import annotations

import time
from typing import Protocol, Unpack

from bigbunny import errors, wire
from bigbunny.limits import STORE_OVERHEAD
from bigbunny.records import DELETE, DeleteRecord
from bigbunny.supervisor.front.requests import ApiRequest
from bigbunny.supervisor.front.responses import NONE, TEXT
from bigbunny.supervisor.pool.channel import Result
from bigbunny.supervisor.state.node import Node
from bigbunny.supervisor.state.registry import (
    ACTIVE,
    CREATING,
    DELETING,
    NameEntry,
    delete_record,
    entry_record,
    valid_name,
)
from bigbunny.wire import RequestArgs


class StoreCalls(Protocol):
    """What the named-store endpoints use of ``supervisor.front.api.StoreApi``, which builds them: its node,
    its shard calls and its answers (so this module needs nothing from that one)."""

    node: Node

    async def call(self, shard: int, op: int, **args: Unpack[RequestArgs]) -> Result: ...

    def create_ttl(self, raw: bytes | None) -> int | None: ...

    def ok(self, req: ApiRequest, body: bytes, ctype: bytes, extra: bytes = b"") -> None: ...

    def warning(self, req: ApiRequest) -> bytes: ...

    async def settled(self, req: ApiRequest, warn: bytes) -> bytes: ...


def _name(param: str) -> str:
    name = param.strip()
    if not name:
        raise errors.MISSING_NAME
    if not valid_name(name):
        raise errors.INVALID_NAME
    return name


def _is_json(content_type: bytes | None) -> bool:
    # §13 fix 16: parameters such as "; charset=utf-8" are allowed.
    return content_type is not None and content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class NamesApi:
    def __init__(self, api: StoreCalls) -> None:
        self.api = api
        self.node = api.node

    async def _alive(self, sid: str) -> bool:
        res = await self.api.call(self.node.shard_for(sid), wire.OP_ALIVE, sid=sid)
        return bool(res.a)  # a = alive

    async def _force_delete(self, sid: str, customer: str) -> None:
        """Remove a store by ID without a customer check, tombstoning it (no limit)."""
        shard = self.node.shard_for(sid)
        res = await self.api.call(shard, wire.OP_FORCE_DELETE, sid=sid)
        if res.a is not None:  # a = [customer, growth]
            owner, growth = res.a
            self.node.accounting.apply(shard, owner, growth)
        self.node.tombstones.add(sid, customer)
        self.node.replicate(DeleteRecord(DELETE, None, sid, customer))

    def _put(self, entry: NameEntry) -> None:
        self.node.replicate(entry_record(entry), registry=True)

    def _remove(self, entry: NameEntry) -> None:
        self.node.registry.remove(entry)
        self.node.replicate(delete_record(entry), registry=True)

    async def create_by_name(self, req: ApiRequest, customer: str, param: str) -> None:
        name = _name(param)
        reg = self.node.registry
        entry = reg.get(customer, name)
        reuse = req.reuse
        if entry is not None and entry.state == ACTIVE and reuse:
            alive = await self._alive(entry.store_id)
            if alive and reg.get(customer, name) is entry and entry.state == ACTIVE:
                return self.api.ok(req, entry.store_id.encode(), TEXT)
            if reg.get(customer, name) is entry and entry.state == ACTIVE:
                self._remove(entry)  # §13 fix 7: an expired target is free; create anew
        if req.too_large:
            raise errors.BODY_TOO_LARGE
        body = req.body
        ttl = self.api.create_ttl(req.ttl)
        if self.node.role.barrier:
            raise errors.JOIN_SYNCING
        self._check_free(reg.get(customer, name), reuse)  # §2.4: the reservation step comes last
        warn = self.api.warning(req)  # §13 fix 17: named writes report it too
        entry = reg.reserve(customer, name)
        self._put(entry)
        flags = wire.F_NAMED | (wire.F_JSON if _is_json(req.content_type) else 0)
        new_sid, shard_id, shard = self.node.minter.mint(customer)
        allow = self.node.accounting.reserve(customer, len(body) + STORE_OVERHEAD)
        try:
            res = await self.api.call(
                shard,
                wire.OP_CREATE,
                sid=new_sid,
                customer=customer,
                ttl=ttl,
                flags=flags,
                lock=shard_id,
                allow=allow,
                extra=name,
                body=body,
            )
        except BaseException:
            self._remove(entry)  # abort the reservation
            raise
        self.node.accounting.apply(shard, customer, res.a)  # a = growth; body = the new ID
        sid = res.body.decode()
        if not reg.commit(entry, sid, time.time() + (self.node.cfg.default_ttl if ttl is None else ttl)):
            await self._force_delete(sid, customer)
            raise errors.NAME_CREATING  # another request took the name over meanwhile
        self._put(entry)
        await self.api.call(shard, wire.OP_CLEAR_PENDING, sid=sid)
        warn = await self.api.settled(req, warn)
        return self.api.ok(req, res.body, TEXT, warn)

    def _check_free(self, entry: NameEntry | None, reuse: bool) -> None:
        if entry is None:
            return
        if entry.state == ACTIVE:
            raise errors.NAME_EXISTS
        if entry.state == CREATING:
            if reuse or not self.node.registry.reservation_expired(entry):
                raise errors.NAME_CREATING
            return  # a stale reservation is taken over
        raise errors.NAME_DELETING

    async def lookup(self, req: ApiRequest, customer: str, param: str) -> None:
        name = _name(param)
        reg = self.node.registry
        entry = reg.get(customer, name)
        if entry is None:
            raise errors.NOT_FOUND_NAME
        if entry.state == CREATING:
            raise errors.NAME_CREATING
        if entry.state == DELETING:
            raise errors.NAME_DELETING
        if await self._alive(entry.store_id):
            return self.api.ok(req, entry.store_id.encode(), TEXT)
        # §13 fix 9: only the primary cleans up, and not while a join snapshot is being taken.
        role = self.node.role
        if role.is_primary and not role.barrier and reg.get(customer, name) is entry and entry.state == ACTIVE:
            self._remove(entry)
        raise errors.NOT_FOUND_NAME

    async def delete_by_name(self, req: ApiRequest, customer: str, param: str) -> None:
        name = _name(param)
        reg = self.node.registry
        entry = reg.get(customer, name)
        if entry is None:
            return self.api.ok(req, b"", NONE)  # §14: idempotent
        if entry.state == CREATING:
            raise errors.NAME_CREATING
        if self.node.role.barrier:
            raise errors.JOIN_SYNCING
        warn = self.api.warning(req)
        reg.set_state(entry, DELETING)
        self._put(entry)
        sid = entry.store_id
        tombs = self.node.tombstones
        admitted = tombs.admit(sid, customer)
        if admitted is False:
            reg.set_state(entry, ACTIVE)
            self._put(entry)
            self.node.accounting.count_rejection(errors.TOMBSTONE_LIMIT.code)
            raise errors.TOMBSTONE_LIMIT
        try:
            await self._force_delete(sid, customer)
        finally:
            tombs.finish(customer, admitted)
        self._remove(entry)
        warn = await self.api.settled(req, warn)
        return self.api.ok(req, b"", NONE, warn)
