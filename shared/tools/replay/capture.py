"""Capture live traffic of several topics (``fleet topic record``).

One ``XREAD BLOCK … STREAMS <topic>… <id>…`` loop, no consumer group, so the recording takes
no work from any worker and leaves every group's state alone. Recording starts at each
stream's current end (XREAD's ``$``), resolved once to a concrete id before the first read —
re-sending ``$`` on every call would lose entries added between two calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from redis.asyncio import Redis

from shared.tools.replay.records import entry_record, record_line
from shared.transports.redis import redis_errors_as_transport

__all__ = ["current_ends", "record_topics"]

#: Longest single XREAD BLOCK; bounds how late a stop request is noticed.
MAX_BLOCK_MS = 500
READ_COUNT = 500


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def current_ends(redis: Redis, topics: Sequence[str]) -> dict[str, str]:
    """The id of the newest entry of each topic (``0-0`` for an empty or missing stream):
    reading after it returns exactly what is added from now on."""
    ends: dict[str, str] = {}
    for topic in topics:
        async with redis_errors_as_transport(f"XREVRANGE {topic}"):
            last: Any = await redis.xrevrange(topic, count=1)
        ends[topic] = bytes(last[0][0]).decode() if last else "0-0"
    return ends


async def record_topics(
    redis: Redis,
    topics: Sequence[str],
    out: IO[bytes],
    *,
    stop: asyncio.Event,
    count: int | None = None,
    duration: float | None = None,
    on_ready: Callable[[dict[str, str]], None] | None = None,
    block_ms: int = MAX_BLOCK_MS,
) -> int:
    """Append every entry added to ``topics`` to ``out`` as records, in arrival order per read,
    until ``stop`` is set, ``count`` entries were written, or ``duration`` seconds passed.

    ``on_ready(positions)`` is called once the start positions are fixed: anything added after
    that call is captured. ``out`` is flushed after every batch, so a killed recorder leaves
    whole lines. Returns the number of entries written.
    """
    if not topics:
        raise ValueError("nothing to record: give at least one topic")
    # Any: redis-py's stub wants dict[str | bytes, ...], which a dict[str, str] is not (invariance).
    positions: dict[Any, Any] = dict(await current_ends(redis, topics))
    if on_ready is not None:
        on_ready(dict(positions))
    deadline = None if duration is None else time.monotonic() + duration
    written = 0
    while not stop.is_set() and (count is None or written < count):
        block = block_ms
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            block = max(1, min(block, int(left * 1000)))
        async with redis_errors_as_transport("XREAD"):
            response: Any = await redis.xread(positions, count=READ_COUNT, block=block)
        batch: list[tuple[tuple[int, int], str, str, dict[bytes, bytes]]] = []
        for stream, entries in response or ():
            name = stream.decode() if isinstance(stream, bytes) else str(stream)
            for entry_id, fields in entries:
                text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                positions[name] = text
                batch.append((_id_key(text), name, text, fields))
        # XREAD groups entries by stream; ids are times, so sorting restores one time line.
        batch.sort(key=lambda item: item[0])
        for _, name, entry_id, fields in batch:
            if count is not None and written >= count:
                break
            out.write(record_line(entry_record(name, entry_id, fields)))
            written += 1
        out.flush()
    return written
