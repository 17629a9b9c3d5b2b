"""Turn each call builder of :mod:`bigbunny.client.calls` into a client method, once for both clients.

``create = blocking(calls.create)`` gives ``BBClient.create(self, data=b"", ttl=None, *, replicas=0,
timeout=None) -> str``; ``awaitable`` gives the same as a coroutine for ``AsyncBBClient``. Type checkers see
the builder's parameters (``ParamSpec``); ``help()`` and ``inspect.signature`` see them too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from bigbunny.client.calls import Call

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def blocking(builder: Callable[P, Call[T]]) -> Callable[Concatenate[Any, P], T]:
    def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = self.run(builder(*args, **kwargs))
        return result

    return _named(method, builder)


def awaitable(builder: Callable[P, Call[T]]) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    async def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = await self.run(builder(*args, **kwargs))
        return result

    return _named(method, builder)


def _named(method: F, builder: Callable[..., Any]) -> F:
    """Give ``method`` the builder's name, docstring and signature (with ``self``, returning the result)."""
    sig = inspect.signature(builder)
    returns = sig.return_annotation
    if isinstance(returns, str) and returns.startswith("Call[") and returns.endswith("]"):
        returns = returns[len("Call[") : -1]
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    target: Any = method  # function attributes that Callable does not declare
    target.__name__ = target.__qualname__ = builder.__name__
    target.__doc__ = builder.__doc__
    target.__signature__ = sig.replace(parameters=[self_param, *sig.parameters.values()], return_annotation=returns)
    return method
