"""Non-hot routes on Starlette: ``/status`` and the operator endpoints under ``/internal/``.

Starlette handles routing, HEAD and 405s here; its HTTP errors are rendered by the same error
format as the API (plain text, nosniff) so every answer of the daemon looks alike. Each listener gets
its own :class:`App`, whose surface (``supervisor.front.listeners``) decides which routes it has: a route it
lacks answers ``404 page not found``, exactly like a path the daemon never had.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal, TypedDict

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bigbunny import errors, wire
from bigbunny.errors import ApiError
from bigbunny.supervisor.front import metrics, status
from bigbunny.supervisor.front.api import StoreApi
from bigbunny.supervisor.front.listeners import EVERYTHING, Surface
from bigbunny.supervisor.front.requests import ApiHandler, ApiRequest, decode_segment
from bigbunny.supervisor.front.responses import error_parts
from bigbunny.supervisor.pool.channel import ShardDown
from bigbunny.supervisor.state.node import Node
from bigbunny.supervisor.state.reload import Reloader

log = logging.getLogger("bbd.admin")


class _CustomerRow(TypedDict):
    customer: str
    memory: int
    stores: int
    tombstones: int
    rate_limited: int


_RANKED: tuple[Literal["memory", "stores", "tombstones", "rate_limited"], ...] = (
    "memory",
    "stores",
    "tombstones",
    "rate_limited",
)

_SET_BY_STARLETTE = (b"content-type", b"content-length")


def _error(err: ApiError, headers: dict[str, str] | None = None) -> Response:
    """The API's error answer (``responses.error_parts``: the same headers and body) through Starlette."""
    parts = error_parts(err)
    h = {k.decode(): v.decode() for k, v in parts.headers if k not in _SET_BY_STARLETTE}
    h.update(headers or {})
    return Response(parts.body, err.status, h, media_type="text/plain; charset=utf-8")


def _json(doc: dict[str, Any], err: ApiError | None = None) -> Response:
    """A JSON answer: 200, or ``err``'s status and code (the document says what went wrong)."""
    headers = {"BigBunny-Error-Code": err.code} if err is not None and err.code else None
    body = json.dumps(doc, separators=(",", ":")) + "\n"
    return Response(body, 200 if err is None else err.status, headers, media_type="application/json")


def _text(body: str) -> Response:
    return Response(body, 200, media_type="text/plain")


async def customer_report(node: Node, top: int) -> dict[str, Any]:
    """Customers with the most memory, stores, tombstones and rate-limit rejections (operator view)."""
    stores: dict[str, int] = {}
    for ch in node.channels:
        try:
            res = await ch.call(wire.OP_CUSTOMERS)
        except ShardDown:
            continue
        for customer, n in (res.a or {}).items():  # a = {customer: store count}
            stores[customer] = stores.get(customer, 0) + n
    names = set(stores) | set(node.accounting.customer) | set(node.tombstones.per_customer)
    names |= set(node.limiter.rejected_by)
    rows: list[_CustomerRow] = [
        {
            "customer": c,
            "memory": node.accounting.customer.get(c, 0),
            "stores": stores.get(c, 0),
            "tombstones": node.tombstones.per_customer.get(c, 0),
            "rate_limited": node.limiter.rejected_by.get(c, 0),
        }
        for c in names
    ]
    out: dict[str, Any] = {"customers": len(rows)}
    for key in _RANKED:
        out[f"top_{key}"] = sorted((r for r in rows if r[key]), key=lambda r: (-r[key], r["customer"]))[:top]
    return out


def build_admin(node: Node, surface: Surface = EVERYTHING, reloader: Reloader | None = None) -> Starlette:
    """The Starlette app of one listener: the routes below that ``surface`` keeps."""

    async def get_status(request: Request) -> Response:
        body = status.encode(await status.status_document(node))
        return Response(body, 200, media_type="application/json")

    async def promote(request: Request) -> Response:
        if node.role.barrier:
            return _error(errors.JOIN_SYNCING)
        if node.cluster is not None:
            node.cluster.promote("operator request")
        else:
            node.role.promote("operator request")
        return _text("promoted")

    async def release_lock(request: Request) -> Response:
        raw = request.scope["raw_path"].split(b"/", 3)[3]
        sid = decode_segment(raw)
        try:
            res = await node.channels[node.shard_for(sid)].call(wire.OP_RELEASE_LOCK, sid=sid)
        except ShardDown:
            return _error(errors.SHARD_UNAVAILABLE)
        if res.err != wire.OK:
            return _error(errors.ERRORS[res.err])
        log.info("lock released by operator request")
        return _text("lock released")

    registry = metrics.build_registry(node, node.stats, reloader)

    async def get_metrics(request: Request) -> Response:
        await node.pool.refresh()
        return Response(metrics.render(registry), 200, media_type=metrics.CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        if node.healthy():
            return _text("ok")
        return _error(ApiError(503, "a shard is not answering", "StoreUnavailable", 1))

    async def readyz(request: Request) -> Response:
        why = node.ready()
        if not why:
            return _text("ready")
        return _error(ApiError(503, f"not ready: {why}", "StoreUnavailable", 1))

    async def customers(request: Request) -> Response:
        raw = request.query_params.get("top", "20")
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= 100_000:  # str.isdigit alone takes "²"
            return _error(ApiError(400, "invalid top (1-100000)"))
        return Response(
            json.dumps(await customer_report(node, int(raw)), separators=(",", ":")) + "\n",
            200,
            media_type="application/json",
        )

    async def reload(request: Request) -> Response:
        if reloader is None:
            return _json({"applied": False, "error": errors.NO_CONFIG_FILE.message}, errors.NO_CONFIG_FILE)
        report = await reloader.reload(node, "POST /internal/reload")
        return _json(report.to_json(), None if report.applied else errors.INVALID_CONFIG)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            headers = dict(exc.headers or {})
            if "Allow" in headers:  # Starlette joins a set: make the order stable ("GET, HEAD")
                headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
            return _error(ApiError(405, "Method Not Allowed"), headers)
        return _error(errors.PAGE_NOT_FOUND if exc.status_code == 404 else ApiError(exc.status_code, exc.detail))

    async def internal_error(request: Request, exc: Exception) -> Response:
        return _error(errors.INTERNAL)  # a bug: same format as the API's 500 (Starlette logs the traceback)

    routes = [
        Route("/status", get_status, methods=["GET", "HEAD"]),
        Route("/metrics", get_metrics, methods=["GET", "HEAD"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/internal/customers", customers, methods=["GET"]),
        Route("/internal/promote", promote, methods=["POST"]),
        Route("/internal/release-lock/{id:str}", release_lock, methods=["POST"]),
        Route("/internal/reload", reload, methods=["POST"]),
    ]
    routes = [r for r in routes if surface.keep(r.path)]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: internal_error})
    app.router.redirect_slashes = False  # §2.1: no trailing-slash normalisation ("/status/" is 404)
    return app


class NoApi:
    """``/api/v1`` on a listener that does not serve the API (admin socket, metrics port): 404."""

    def handle(self, req: ApiRequest) -> None:
        req.out.error(req, errors.PAGE_NOT_FOUND)


class App:
    """One listener's HTTP handlers: ``api`` answers ``/api/v1/*`` (called by the HTTP protocol directly,
    without ASGI); the app itself is the ASGI app for every other path. Listeners that serve the API
    share one ``StoreApi`` (pass ``api``)."""

    def __init__(
        self, node: Node, surface: Surface = EVERYTHING, api: StoreApi | None = None, reloader: Reloader | None = None
    ) -> None:
        self.surface = surface
        self.api: ApiHandler = (api or StoreApi(node)) if surface.api else NoApi()
        self.admin = build_admin(node, surface, reloader)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.admin(scope, receive, send)
