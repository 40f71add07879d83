"""Redis helpers every fleet component shares (the transport, the client, the claim store, the
CLI, replay and bench): one way to connect, one way to turn connection errors into
:class:`~shared.errors.TransportError`, one way to stop a task blocked in a command."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from shared.errors import TransportError

__all__ = ["cancel_and_wait", "connect", "redis_errors_as_transport", "server_of"]


def server_of(redis: Any) -> tuple[Any, ...]:
    """Which server (and database) a client talks to: host, port, unix path, db."""
    kwargs = redis.connection_pool.connection_kwargs
    return kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db", 0)


_CONNECTION_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    ConnectionError,
    OSError,
)


async def cancel_and_wait(task: asyncio.Task[Any], attempts: int = 50) -> None:
    """Cancel ``task`` and wait for it to end. redis-py can swallow a cancellation that lands
    inside a command (the call returns normally), so cancel again until the task is done;
    loops that own such calls also check a closing flag."""
    for _ in range(attempts):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: a failure at close is not worth an "exception never retrieved"


def connect(url: str) -> Redis:
    """A client for ``url`` with the options every fleet component uses (bytes in and out)."""
    return Redis.from_url(url, decode_responses=False, health_check_interval=30)


class redis_errors_as_transport(contextlib.AbstractAsyncContextManager[None]):
    """``async with redis_errors_as_transport("what"):`` turns connection-level Redis errors
    into :class:`TransportError` (the runtime backs off and retries those)."""

    def __init__(self, what: str) -> None:
        self._what = what

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None and isinstance(exc, _CONNECTION_ERRORS):
            raise TransportError(f"{self._what}: {exc}") from exc
