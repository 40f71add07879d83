"""Collect the results of requests being replayed: one XREAD reader of the results topic.

The reader starts at the results stream's current end (noted by :meth:`ResultCollector.start`
before anything is published, so no result can slip past it) and matches each result to an
awaited request by its ``executionid``. It reads without a consumer group: results are
broadcast, and a replay must not take them from anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from shared.tools.replay.capture import current_ends
from shared.tools.replay.records import entry_record, is_result, result_execution_id
from shared.transports.redis import redis_errors_as_transport

__all__ = ["ResultCollector"]

_READ_COUNT = 500
_BLOCK_MS = 200


class ResultCollector:
    """Waits for the results of awaited execution ids and hands each to ``sink``.

    ``sink(record)`` gets the result's record (:mod:`shared.tools.replay.records`) with
    ``replay = {"original_id", "execution_id", "outcome": "result"}`` added. An execution id
    awaited twice (the same request replayed twice with ``--same-ids``) takes two results,
    matched in order. Results for ids nobody awaits are skipped.
    """

    def __init__(self, redis: Redis, results_topic: str, sink: Callable[[dict[str, Any]], None]) -> None:
        self._redis = redis
        self._topic = results_topic
        self._sink = sink
        self._pending: dict[str, deque[str]] = {}
        self._outstanding = 0
        self._deadline: float | None = None
        self._position = "0-0"
        self._task: asyncio.Task[None] | None = None
        self.answered = 0

    async def start(self) -> None:
        """Note where the results stream ends now and start reading after it."""
        self._position = (await current_ends(self._redis, [self._topic]))[self._topic]
        self._task = asyncio.create_task(self._read(), name="fleet-replay-results")

    def expect(self, execution_id: str, original_id: str) -> None:
        """Await one result for ``execution_id`` (call it before publishing the request)."""
        self._pending.setdefault(execution_id, deque()).append(original_id)
        self._outstanding += 1

    def raise_if_failed(self) -> None:
        """Re-raise the reader's error now, if it died (so a replay stops publishing)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if error is not None:
                raise error

    @property
    def outstanding(self) -> int:
        """Awaited results not yet seen."""
        return self._outstanding

    async def finish(self, timeout: float) -> list[tuple[str, str]]:
        """Wait up to ``timeout`` seconds for the outstanding results; returns the
        ``(execution_id, original_id)`` pairs that got none. Re-raises a reader failure."""
        if self._task is None:
            raise RuntimeError("ResultCollector.start() was not called")
        self._deadline = time.monotonic() + timeout
        await self._task
        left = [(eid, original) for eid, originals in self._pending.items() for original in originals]
        self._pending.clear()
        self._outstanding = 0
        return left

    async def close(self) -> None:
        """Stop reading (idempotent)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> None:
        while True:
            block = _BLOCK_MS
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if self._outstanding == 0 or left <= 0:
                    return
                block = max(1, min(block, int(left * 1000)))
            async with redis_errors_as_transport(f"XREAD {self._topic}"):
                response: Any = await self._redis.xread(
                    {self._topic: self._position}, count=_READ_COUNT, block=block
                )
            for _, entries in response or ():
                for entry_id, fields in entries:
                    self._position = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    self._match(entry_id, fields)

    def _match(self, entry_id: bytes | str, fields: dict[bytes, bytes]) -> None:
        record = entry_record(self._topic, entry_id, fields)
        event = record["event"]
        if not is_result(event):
            return
        execution_id = result_execution_id(event)
        originals = self._pending.get(execution_id or "")
        if not originals or execution_id is None:
            return
        original = originals.popleft()
        if not originals:
            del self._pending[execution_id]
        self._outstanding -= 1
        self.answered += 1
        record["replay"] = {"original_id": original, "execution_id": execution_id, "outcome": "result"}
        self._sink(record)
