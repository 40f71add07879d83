"""Export a stream's entries as JSON Lines, page by page.

Memory stays bounded by one page (``page_size`` entries) whatever the stream's length: each
page is fetched with ``XRANGE <topic> <start> <end> COUNT <page_size>``, written out, and the
next page starts just after the last id written (an exclusive ``(<id>`` start). Entries added
while the export runs are included when they fall inside the range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

from redis.asyncio import Redis

from shared.tools.replay.records import entry_record, record_line
from shared.transports.redis import redis_errors_as_transport

__all__ = ["DEFAULT_PAGE_SIZE", "export_topic"]

DEFAULT_PAGE_SIZE = 1000


async def export_topic(
    redis: Redis,
    topic: str,
    out: IO[bytes],
    *,
    start: str = "-",
    end: str = "+",
    page_size: int = DEFAULT_PAGE_SIZE,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the entries of ``topic`` between ``start`` and ``end`` (XRANGE bounds, inclusive)
    to ``out`` as records; returns how many were written.

    ``progress(n)`` is called after each page with the number of entries in it. A missing
    stream exports nothing. Raises :class:`~shared.errors.TransportError` when Redis is
    unreachable; what was written before stays written.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    written = 0
    lower = start
    while True:
        async with redis_errors_as_transport(f"XRANGE {topic}"):
            page: Any = await redis.xrange(topic, min=lower, max=end, count=page_size)
        if not page:
            return written
        for entry_id, fields in page:
            out.write(record_line(entry_record(topic, entry_id, fields)))
        written += len(page)
        if progress is not None:
            progress(len(page))
        if len(page) < page_size:
            return written
        last = page[-1][0]
        lower = "(" + (last.decode() if isinstance(last, bytes) else str(last))
