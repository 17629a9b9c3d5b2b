"""``from bigbunny.aio import AsyncBBClient``: the asyncio client (see :mod:`bigbunny.client.aio`), beside
the results and exceptions it shares with the sync client (one list, in :mod:`bigbunny.client`)."""

from bigbunny import client
from bigbunny.client import *  # noqa: F403
from bigbunny.client.aio import AsyncBBClient

__all__ = ["AsyncBBClient", *(name for name in client.__all__ if name not in ("BBClient", "BBConnectionError"))]
