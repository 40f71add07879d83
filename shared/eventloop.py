"""Which event loop a fleet process runs on (``FLEET_EVENT_LOOP``).

``auto`` (the default) picks uvloop when it is installed (a dependency everywhere but Windows)
and asyncio's own loop otherwise; ``uvloop`` insists on it (a :class:`~shared.errors.ConfigError`
when it is missing); ``asyncio`` keeps the standard loop, for debugging with asyncio's tools.
Measured with ``fleet bench`` on a 2-core machine, uvloop cut the worker's CPU per request by
about a quarter and its p50 latency by a third (docs/performance.md); nothing in the fleet
depends on which loop runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from shared.errors import ConfigError

__all__ = ["EventLoop", "loop_factory", "loop_name", "run"]

T = TypeVar("T")
EventLoop = Literal["auto", "uvloop", "asyncio"]


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` names; ``None`` for asyncio's default loop.

    Raises :class:`ConfigError` when ``choice`` is ``uvloop`` and uvloop is not installed.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("FLEET_EVENT_LOOP=uvloop but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T], choice: EventLoop = "auto") -> T:
    """Run ``coro`` to completion on a new loop of the kind ``choice`` names (like
    :func:`asyncio.run`: the loop is closed after its async generators and executor)."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        coro.close()  # never started: no "never awaited" warning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``uvloop`` or ``asyncio``: what runs ``loop`` (default: the running loop); for logs and
    ``fleet_build_info``-like reporting."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
