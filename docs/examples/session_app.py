"""A Starlette app that keeps each user's session in bbd (docs/client.md).

    BBD_SOCKET=/tmp/bbd.sock uvicorn --app-dir docs/examples session_app:app

POST /login {"user": "ada"}  -> sets the "sid" cookie (a bbd store that expires after 30 minutes idle)
GET  /me                     -> {"user": ..., "cart": [...]} for the cookie's session
POST /cart {"item": "tea"}   -> appends to the cart under bbd's modify lock
POST /logout                 -> deletes the session
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bigbunny.aio import AsyncBBClient, Conflict, InvalidRequest, NotFound

SESSION_TTL = 30 * 60  # seconds; every write extends it


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # One client (and connection pool) for the whole app; retries cover failovers and brief locks.
    async with AsyncBBClient(os.environ.get("BBD_SOCKET", "/tmp/bbd.sock"), customer="shop", retries=3) as bb:
        app.state.bb = bb
        yield


def bb(request: Request) -> AsyncBBClient:
    client: AsyncBBClient = request.app.state.bb
    return client


NOT_LOGGED_IN = JSONResponse({"error": "not logged in"}, status_code=401)
GONE = (NotFound, InvalidRequest)  # expired, logged out, or a cookie that is not a store ID of ours


async def login(request: Request) -> Response:
    user = (await request.json())["user"]
    sid = await bb(request).create(json.dumps({"user": user, "cart": []}).encode(), ttl=SESSION_TTL)
    response = JSONResponse({"user": user})
    response.set_cookie("sid", sid, max_age=SESSION_TTL, httponly=True, samesite="strict")
    return response


async def me(request: Request) -> Response:
    try:
        snap = await bb(request).snapshot(request.cookies.get("sid", "-"))
    except GONE:
        return NOT_LOGGED_IN
    return Response(snap.body, media_type="application/json")


async def add_to_cart(request: Request) -> Response:
    item = (await request.json())["item"]
    sid = request.cookies.get("sid", "-")
    try:
        lock = await bb(request).begin_modify(sid)  # StoreLocked is retried by the client's policy
    except GONE:
        return NOT_LOGGED_IN
    except Conflict:
        return JSONResponse({"error": "session busy, try again"}, status_code=409)
    session = json.loads(lock.body)
    session["cart"].append(item)
    await bb(request).complete_modify(sid, lock.lock_id, json.dumps(session).encode(), ttl=SESSION_TTL)
    return JSONResponse(session)


async def logout(request: Request) -> Response:
    try:
        await bb(request).delete(request.cookies.get("sid", "-"))
    except GONE:
        pass  # already gone: logging out is idempotent
    response = JSONResponse({"ok": True})
    response.delete_cookie("sid")
    return response


app = Starlette(
    routes=[
        Route("/login", login, methods=["POST"]),
        Route("/me", me),
        Route("/cart", add_to_cart, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ],
    lifespan=lifespan,
)
