"""Replay recorded requests (``fleet topic replay``): republish them in order, collect results.

Only request events are republished (see :func:`shared.tools.replay.records.is_request`); results in
the file are the "before" side of a later :mod:`diff` and are skipped here. Each request goes to
``--to`` when given, else to the topic it was dead-lettered from — ``fleet.topic`` metadata, or
for daprd's dead letters (which do not say) the recorded stream without the DLQ suffix — so a
DLQ export replays where it belongs, else to the stream it was recorded on.

Ids:

* new ids (default): each request gets a fresh execution id (the CloudEvent ``id``); the
  results file keeps the mapping ``original_id`` ↔ ``execution_id``;
* same ids: the event is republished unchanged. Where the registry's execution history answers
  duplicates, nothing runs twice (the stored result is published again); without it the
  request simply runs again.

The entry's metadata is republished without ``fleet.*`` keys (a dead letter's bookkeeping) and
without ``pubsubName`` (daprd adds it to dead letters; it sets its own on delivery).

Pacing: as fast as possible (``fast``, published in pipelined batches), at a fixed ``rate``
(requests per second), or with the recorded gaps between requests (``original``, from their
stream ids).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, Literal

import orjson
from redis.asyncio import Redis

from shared.errors import FleetError
from shared.tools.replay.collect import ResultCollector
from shared.tools.replay.records import is_request, record_line, request_id
from shared.transports.redis import redis_errors_as_transport

__all__ = ["ReplayError", "ReplayOptions", "ReplaySummary", "replay_metadata", "replay_requests"]

#: XADDs sent in one pipeline when pacing is ``fast``.
FAST_BATCH = 100


class ReplayError(FleetError, ValueError):
    """A record cannot be replayed (e.g. it names no topic and no ``--to`` was given)."""


@dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    """How to replay. ``rate`` (requests/second) overrides ``timing``; ``timeout`` is how long
    to wait for outstanding results after the last request was published."""

    results_topic: str
    to_topic: str | None = None
    rate: float | None = None
    timing: Literal["fast", "original"] = "fast"
    new_ids: bool = True
    timeout: float = 60.0
    #: a recorded stream ending in this is a dead-letter topic: replay to the topic it serves.
    dlq_suffix: str | None = None


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did: requests published, results received, results that never came,
    and records skipped because they are not requests."""

    published: int = 0
    answered: int = 0
    timed_out: int = 0
    skipped: int = 0


def replay_metadata(metadata: Any) -> bytes:
    """The ``metadata`` field to republish with: the recorded map without ``fleet.*`` keys and
    ``pubsubName``, values as strings (Dapr's wire format is a string map)."""
    if not isinstance(metadata, dict):
        return b"{}"
    kept = {
        str(k): v if isinstance(v, str) else orjson.dumps(v).decode()
        for k, v in metadata.items()
        if not str(k).startswith("fleet.") and k != "pubsubName"
    }
    return orjson.dumps(kept)


def _id_millis(record: dict[str, Any]) -> int | None:
    entry = record.get("id")
    if not isinstance(entry, str):
        return None
    head = entry.partition("-")[0]
    return int(head) if head.isdigit() else None


class _Pacer:
    """Sleeps until each request's turn under the chosen pacing."""

    def __init__(self, options: ReplayOptions) -> None:
        self._rate = options.rate
        self._original = options.rate is None and options.timing == "original"
        self._start = time.monotonic()
        self._first_ms: int | None = None
        self._sent = 0

    @property
    def batched(self) -> bool:
        return self._rate is None and not self._original

    async def wait(self, record: dict[str, Any]) -> None:
        target: float | None = None
        if self._rate is not None:
            target = self._start + self._sent / self._rate
        elif self._original:
            ms = _id_millis(record)
            if ms is not None:
                if self._first_ms is None:
                    self._first_ms, self._start = ms, time.monotonic()
                target = self._start + max(0, ms - self._first_ms) / 1000
        self._sent += 1
        if target is not None:
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def replay_requests(
    redis: Redis,
    records: Iterable[dict[str, Any]],
    out: IO[bytes],
    options: ReplayOptions,
    *,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Republish the requests among ``records`` (in order), wait for their results, and write
    one record per request to ``out``: its result (with ``replay`` mapping), or, when none came
    within ``options.timeout``, ``{"event": null, "replay": {..., "outcome": "timeout"}}``.

    ``progress(n)`` is called with the number of requests just published. Raises
    :class:`ReplayError` for a request with no topic to go to, and
    :class:`~shared.errors.TransportError` when Redis is unreachable.
    """
    summary = ReplaySummary()

    def sink(record: dict[str, Any]) -> None:
        out.write(record_line(record))

    collector = ResultCollector(redis, options.results_topic, sink)
    await collector.start()
    pacer = _Pacer(options)
    batch: list[tuple[str, dict[str, bytes]]] = []

    async def flush() -> None:
        if not batch:
            return
        collector.raise_if_failed()
        async with redis_errors_as_transport("republishing requests"):
            pipe = redis.pipeline(transaction=False)
            for topic, fields in batch:
                pipe.xadd(topic, fields)  # type: ignore[arg-type]
            await pipe.execute()
        summary.published += len(batch)
        if progress is not None:
            progress(len(batch))
        batch.clear()

    try:
        for record in records:
            event = record.get("event")
            if not is_request(event):
                summary.skipped += 1
                continue
            topic = _target(record, options)
            original = request_id(event)
            if options.new_ids:
                event = {**event, "id": str(uuid.uuid4())}
            await pacer.wait(record)
            # Await the result before publishing: a fast worker must not answer unseen.
            collector.expect(request_id(event), original)
            batch.append(
                (topic, {"data": orjson.dumps(event), "metadata": replay_metadata(record.get("metadata"))})
            )
            if not pacer.batched or len(batch) >= FAST_BATCH:
                await flush()
        await flush()
        missing = await collector.finish(options.timeout)
    finally:
        await collector.close()
    for execution_id, original in missing:
        sink(
            {
                "stream": None,
                "id": None,
                "time": None,
                "event": None,
                "metadata": {},
                "replay": {"original_id": original, "execution_id": execution_id, "outcome": "timeout"},
            }
        )
    summary.answered = collector.answered
    summary.timed_out = len(missing)
    return summary


def _target(record: dict[str, Any], options: ReplayOptions) -> str:
    if options.to_topic:
        return options.to_topic
    metadata = record.get("metadata")
    origin = metadata.get("fleet.topic") if isinstance(metadata, dict) else None
    if isinstance(origin, str) and origin:
        return origin
    stream = record.get("stream")
    if isinstance(stream, str) and stream:
        suffix = options.dlq_suffix
        if suffix and stream.endswith(suffix) and len(stream) > len(suffix):
            return stream[: -len(suffix)]
        return stream
    raise ReplayError(f"request {record.get('event', {}).get('id')!r} names no topic; pass --to")
