"""Redis Streams, directly — on the same wire as Dapr's ``pubsub.redis`` component.

Wire format (../shared/reference/dapr-wire.md §1, §3), so daprd and this transport can publish
to and consume from each other, and KEDA sees the same streams and groups either way:

* stream key = topic; an entry is ``XADD <topic> * data <CloudEvent JSON> metadata <JSON map>``;
* consumer group = the app id (``fleet-<domain>``), created ``XGROUP CREATE <topic> <group> 0
  MKSTREAM``; each worker process is its own consumer (``FLEET_CONSUMER_NAME``);
* reads are batched ``XREADGROUP … COUNT n BLOCK ms STREAMS <topic> >``.

Where the messages are acknowledged: :meth:`RedisStreamsTransport.settle`, the only place that
sends ``XACK`` — in one ``MULTI … EXEC`` with the result ``XADD``s, so a delivery is acked
exactly when its answer is published, never before. A :data:`SettlePrelude` (the registry's
claim store) may put commands first in that transaction: the results stored as duplicates'
answers are then stored, published and acked in one step.

Redelivery and dead letters (the maintenance task, every ``FLEET_REDELIVER_INTERVAL``):

* **heartbeat** — entries this process is still working on get ``XCLAIM … JUSTID`` (idle time
  reset, delivery count unchanged), so a long execution is not reclaimed while its worker lives;
* **reclaim** — ``XAUTOCLAIM`` takes entries idle ≥ ``FLEET_PROCESSING_TIMEOUT`` (a dead
  consumer's, or ones this process asked to retry); their delivery counts come from
  ``XPENDING``. Past ``FLEET_MAX_DELIVERIES`` the runtime answers with a failed result and the
  entry moves to ``<topic>.dlq`` (original ``data``, ``metadata`` plus ``fleet.*`` keys);
* **trim** — request streams are trimmed with ``XTRIM MINID ~`` below the oldest entry any
  group still has pending or undelivered, so an unanswered request is never trimmed; results
  are capped with ``XADD … MAXLEN ~ FLEET_RESULTS_MAXLEN``;
* at start, a process takes back its own pending entries at once (a restart under the same
  consumer name resumes where it died).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from shared.clock import utc_now_iso
from shared.errors import TransportError
from shared.settings import Settings
from shared.transports.base import Delivery, Outcome, Settlement, SettlePrelude
from shared.transports.redis import cancel_and_wait, redis_errors_as_transport, server_of

__all__ = ["RedisStreamsTransport", "ensure_group", "last_error_key", "min_unanswered_id", "parse_entry"]

log = structlog.get_logger("fleet.transport.redis")


_EMPTY_METADATA = b"{}"
#: Consumers with nothing pending and idle this long are removed from the group.
STALE_CONSUMER_MS = 3_600_000
#: How long the last-error notes of un-acked entries are kept.
LAST_ERROR_TTL_S = 7 * 24 * 3600


def retry_at_key(topic: str) -> str:
    """The sorted set of entries of ``topic`` waiting out a retry backoff (score: due, epoch ms)."""
    return f"fleet:retry-at:{topic}"


def last_error_key(topic: str) -> str:
    """The hash where the reason of each un-answered delivery of ``topic`` is kept (by entry id)
    until it is answered: the next delivery's ``last_error``, and what `fleet invoke` shows."""
    return f"fleet:last-error:{topic}"


async def ensure_group(redis: Redis, topic: str, group: str) -> None:
    """``XGROUP CREATE <topic> <group> 0 MKSTREAM``, ignoring BUSYGROUP (as daprd does)."""
    try:
        await redis.xgroup_create(topic, group, id="0", mkstream=True)
    except redis_errors.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def parse_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Delivery:
    """A stream entry (``data``, ``metadata``) as a :class:`Delivery`. A ``metadata`` field that
    is not a JSON string map is ignored, as daprd does."""
    raw_meta = fields.get(b"metadata", _EMPTY_METADATA)
    metadata: dict[str, str] = {}
    if raw_meta != _EMPTY_METADATA:
        try:
            parsed = orjson.loads(raw_meta)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            metadata = {str(k): str(v) for k, v in parsed.items()}
    message_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Delivery(message_id=message_id, body=fields.get(b"data", b""), metadata=metadata)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> str:
    ms, seq = _id_tuple(entry_id)
    return f"{ms}-{seq + 1}"


async def min_unanswered_id(redis: Redis, topic: str) -> str | None:
    """The lowest entry id that some consumer group of ``topic`` still needs (pending, or not
    yet delivered), or ``None`` when there are no groups. Everything below it is answered."""
    groups = await redis.xinfo_groups(topic)
    if not groups:
        return None
    floor: tuple[int, int] | None = None
    for group in groups:
        name = group["name"]
        last = group["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else str(last)
        candidate = _id_tuple(_next_id(last))
        if group.get("pending", 0):
            summary = await redis.xpending(topic, name)
            lowest = summary.get("min")
            if lowest:
                lowest = lowest.decode() if isinstance(lowest, bytes) else str(lowest)
                candidate = min(candidate, _id_tuple(lowest))
        floor = candidate if floor is None else min(floor, candidate)
    assert floor is not None
    return f"{floor[0]}-{floor[1]}"


class RedisStreamsTransport:
    """Consume one topic as one consumer of one group; publish results; dead-letter.

    Parameters:
        redis: a client from :func:`connect` (closed by :meth:`close` when ``owns_client``).
        topic: the request stream (``functions.<domain>``).
        group: the consumer group (= Dapr app id, ``fleet-<domain>``).
        settings: consumer name, results topic, timeouts, limits.
    """

    name = "redis"
    counts_deliveries = True

    def __init__(
        self, *, redis: Redis, topic: str, group: str, settings: Settings, owns_client: bool = True
    ) -> None:
        self.redis = redis
        self.topic = topic
        self.group = group
        self.consumer = settings.consumer_name
        self.settings = settings
        self.results_topic = settings.results_topic
        self.dlq_topic = settings.dlq_for(topic)
        self._last_error_key = last_error_key(topic)
        self._retry_at_key = retry_at_key(topic)
        #: entries waiting out a retry policy's backoff (id → monotonic due time): pending and
        #: heartbeated by this consumer, handed out again when due (see :meth:`_delayed_loop`).
        self._delayed: dict[str, float] = {}
        self._delayed_changed = asyncio.Event()
        self._delayed_task: asyncio.Task[None] | None = None
        self._owns_client = owns_client
        self._in_flight: set[str] = set()
        self._reclaimed: deque[Delivery] = deque()
        self._autoclaim_cursor = "0-0"
        self._intake_stopped = False
        self._maintenance: asyncio.Task[None] | None = None
        self._closing = False
        self._next_trim = 0.0
        self._block_ms = settings.block_ms
        self._processing_timeout_ms = int(settings.processing_timeout * 1000)
        #: see :data:`~shared.transports.base.SettlePrelude`; set by :meth:`join_settle`.
        self.prelude: SettlePrelude | None = None

    def join_settle(self, prelude: SettlePrelude, *, redis: Any) -> bool:
        """See :class:`~shared.transports.base.JoinsSettle`: joined only on the same server."""
        if server_of(redis) != server_of(self.redis):
            return False
        self.prelude = prelude
        return True

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        async with redis_errors_as_transport(f"cannot reach Redis for {self.topic}"):
            await self.redis.ping()
            await ensure_group(self.redis, self.topic, self.group)
            await self._take_back_own_pending()
        self._next_trim = time.monotonic() + self.settings.trim_interval
        self._maintenance = asyncio.create_task(self._maintenance_loop(), name=f"fleet-maintain-{self.topic}")
        self._delayed_task = asyncio.create_task(self._delayed_loop(), name=f"fleet-retries-{self.topic}")

    async def stop_intake(self) -> None:
        self._intake_stopped = True
        # Reclaimed-but-unstarted entries were never handed out: leave them for redelivery.
        self._reclaimed.clear()

    async def close(self) -> None:
        self._closing = True
        if self._delayed_task is not None:
            await cancel_and_wait(self._delayed_task)
        if self._maintenance is not None:
            await cancel_and_wait(self._maintenance)
        if self._owns_client:
            await self.redis.aclose()

    # ------------------------------------------------------------------ receive
    async def receive(self, max_count: int) -> Sequence[Delivery]:
        if self._intake_stopped:
            return []
        if self._reclaimed:
            batch: list[Delivery] = []
            while self._reclaimed and len(batch) < max_count:
                batch.append(self._reclaimed.popleft())
            self._in_flight.update(d.message_id for d in batch)
            return batch
        async with redis_errors_as_transport(f"XREADGROUP {self.topic}"):
            try:
                # RESP2 reply: [[topic, [(id, fields), ...]]] (redis-py types it as a union).
                response: Any = await self.redis.xreadgroup(
                    self.group, self.consumer, {self.topic: ">"}, count=max_count, block=self._block_ms
                )
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise TransportError(f"XREADGROUP {self.topic}: {exc}") from exc
                # The stream or group was deleted under us: re-create at 0, like daprd.
                await ensure_group(self.redis, self.topic, self.group)
                return []
        if not response:
            return []
        batch = [parse_entry(entry_id, fields) for entry_id, fields in response[0][1]]
        self._in_flight.update(d.message_id for d in batch)
        return batch

    # ------------------------------------------------------------------ settle
    async def settle(self, settlements: Sequence[Settlement]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        staged = self.prelude(pipe) if self.prelude is not None else None
        acks: list[str] = []
        forget: list[str] = []
        delayed: dict[str, float] = {}
        for s in settlements:
            delivery = s.delivery
            if s.result is not None:
                pipe.xadd(
                    self.results_topic,
                    {"data": s.result, "metadata": _EMPTY_METADATA},
                    maxlen=self.settings.results_maxlen,
                    approximate=True,
                )
            if s.outcome is Outcome.REPLY:
                continue  # a synchronous call: no stream entry to ack or dead-letter
            if s.outcome is Outcome.RETRY or s.outcome is Outcome.DEFER:
                pipe.hset(self._last_error_key, delivery.message_id, s.reason or "retry requested")
                pipe.expire(self._last_error_key, LAST_ERROR_TTL_S)
                if s.delay:
                    # A retry's backoff or a deferral's wait (a limit): kept in Redis too, so a
                    # restart under this consumer name waits it out. A deferral's un-counting
                    # (below) holds: the hand-out's claim counts it back to what it is now.
                    delayed[delivery.message_id] = s.delay
                    due_ms = int((time.time() + s.delay) * 1000)
                    pipe.zadd(self._retry_at_key, {delivery.message_id: due_ms})
                    pipe.expire(self._retry_at_key, LAST_ERROR_TTL_S)
                if s.outcome is Outcome.DEFER:
                    # Un-count this delivery: the next XAUTOCLAIM brings the count back to
                    # what it is now. (JUSTID: the claim itself does not count either.)
                    pipe.xclaim(
                        self.topic,
                        self.group,
                        self.consumer,
                        0,
                        [delivery.message_id],
                        retrycount=max(0, delivery.delivery_count - 1),
                        justid=True,
                    )
                continue
            if s.outcome is Outcome.DROP:
                pipe.xadd(self.dlq_topic, self._dead_letter_fields(s))
            acks.append(delivery.message_id)
            if delivery.delivery_count > 1 or delivery.last_error:
                forget.append(delivery.message_id)
        if acks:
            pipe.xack(self.topic, self.group, *acks)
        if forget:
            pipe.hdel(self._last_error_key, *forget)
            pipe.zrem(self._retry_at_key, *forget)
        try:
            async with redis_errors_as_transport(f"settling {len(settlements)} on {self.topic}"):
                try:
                    replies = await pipe.execute()
                except redis_errors.ResponseError as exc:
                    raise TransportError(f"settling on {self.topic}: {exc}") from exc
        except BaseException:
            if staged is not None:
                staged[1](None)
            raise
        if staged is not None:
            staged[1](replies[: staged[0]])
        for s in settlements:
            if s.outcome is not Outcome.REPLY:
                self._in_flight.discard(s.delivery.message_id)
        if delayed:
            now = time.monotonic()
            self._delayed.update({entry_id: now + delay for entry_id, delay in delayed.items()})
            self._delayed_changed.set()

    async def _delayed_loop(self) -> None:
        """Hand entries back out once their retry backoff is over: claimed again by this
        consumer (the claim counts the delivery) and queued ahead of new entries. Not busy: it
        sleeps until the earliest due time or a new delayed entry."""
        while not self._closing:
            self._delayed_changed.clear()
            if not self._delayed:
                await self._delayed_changed.wait()
                continue
            wait = min(self._delayed.values()) - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._delayed_changed.wait(), wait)
                continue
            now = time.monotonic()
            due: list[Any] = [entry_id for entry_id, at in self._delayed.items() if at <= now]
            if self._intake_stopped:
                return  # left pending (and in the retry-at set) for whoever runs them next
            try:
                async with redis_errors_as_transport(f"retrying {len(due)} on {self.topic}"):
                    claimed: list[Any] = await self.redis.xclaim(
                        self.topic, self.group, self.consumer, 0, due
                    )
                    await self.redis.zrem(self._retry_at_key, *due)
                    live = [(entry_id, fields) for entry_id, fields in claimed if fields]
                    if live:
                        await self._enqueue_reclaimed(live)
            except TransportError as exc:
                log.warning("retry hand-out failed; will try again", topic=self.topic, error=str(exc))
                await asyncio.sleep(0.5)
                continue
            for entry_id in due:
                self._delayed.pop(entry_id, None)

    def _dead_letter_fields(self, s: Settlement) -> dict[Any, Any]:
        delivery = s.delivery
        metadata = dict(delivery.metadata)
        metadata.update(
            {
                "fleet.error": s.reason or "dropped",
                "fleet.deliveries": str(delivery.delivery_count),
                "fleet.topic": self.topic,
                "fleet.message-id": delivery.message_id,
                "fleet.dead-lettered-at": utc_now_iso(),
            }
        )
        return {"data": delivery.body, "metadata": orjson.dumps(metadata)}

    # ------------------------------------------------------------------ maintenance
    def _maintenance_period(self) -> float:
        # Heartbeats must land well inside the processing timeout.
        return max(0.05, min(self.settings.redeliver_interval, self.settings.processing_timeout / 3))

    async def _maintenance_loop(self) -> None:
        period = self._maintenance_period()
        failing = False
        while not self._closing:
            await asyncio.sleep(period)
            try:
                await self.maintain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage: the consume loop reports the outage too, and this runs often.
                if not failing:
                    log.warning("stream maintenance failed; will try again", topic=self.topic, error=str(exc))
                failing = True
            else:
                failing = False

    async def maintain(self) -> None:
        """One pass: heartbeat in-flight entries, reclaim idle ones, trim when due."""
        await self._heartbeat()
        if not self._intake_stopped and len(self._reclaimed) < self.settings.batch_size:
            await self._reclaim()
        if time.monotonic() >= self._next_trim:
            self._next_trim = time.monotonic() + self.settings.trim_interval
            await self.trim()
            await self._forget_stale_consumers()

    async def _heartbeat(self) -> None:
        # Entries waiting in the reclaimed queue are ours too: keep them from being re-stolen.
        ids: list[Any] = [*self._in_flight, *(d.message_id for d in self._reclaimed), *self._delayed]
        if not ids:
            return
        for start in range(0, len(ids), 500):
            await self.redis.xclaim(
                self.topic, self.group, self.consumer, 0, ids[start : start + 500], justid=True
            )

    async def _reclaim(self) -> None:
        count = self.settings.batch_size
        response = await self.redis.xautoclaim(
            self.topic,
            self.group,
            self.consumer,
            self._processing_timeout_ms,
            start_id=self._autoclaim_cursor,
            count=count,
        )
        cursor, entries = response[0], response[1]
        deleted = response[2] if len(response) > 2 else []
        self._autoclaim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if deleted:
            # Trimmed or deleted while pending: nothing left to deliver; purge from the PEL.
            await self.redis.xack(self.topic, self.group, *deleted)
        live = [(entry_id, fields) for entry_id, fields in entries if fields is not None]
        if live:
            await self._enqueue_reclaimed(live)

    async def _enqueue_reclaimed(self, entries: list[tuple[Any, dict[bytes, bytes]]]) -> None:
        # An entry this process is still running came back only because a heartbeat was late
        # (a blocked event loop): it already has an owner here, so do not start it twice.
        queued = {d.message_id for d in self._reclaimed}
        deliveries = [
            d
            for d in (parse_entry(entry_id, fields) for entry_id, fields in entries)
            if d.message_id not in self._in_flight and d.message_id not in queued
        ]
        if not deliveries:
            return
        ids = [d.message_id for d in deliveries]
        pending = await self.redis.xpending_range(
            self.topic,
            self.group,
            min=min(ids, key=_id_tuple),
            max=max(ids, key=_id_tuple),
            count=len(ids) + 1000,
            consumername=self.consumer,
        )
        counts = {_text(p["message_id"]): p["times_delivered"] for p in pending}
        notes = await self.redis.hmget(self._last_error_key, ids)
        for delivery, note in zip(deliveries, notes, strict=True):
            delivery.delivery_count = int(counts.get(delivery.message_id, 2))
            delivery.last_error = _text(note) if note else None
            self._reclaimed.append(delivery)
        log.info("reclaimed idle entries", topic=self.topic, count=len(deliveries))

    async def _take_back_own_pending(self) -> None:
        """At start: this consumer's pending entries (from a previous life) come back first."""
        pending = await self.redis.xpending_range(
            self.topic, self.group, min="-", max="+", count=10_000, consumername=self.consumer
        )
        ids: list[Any] = [p["message_id"] for p in pending if _text(p["message_id"]) not in self._in_flight]
        # Entries a previous life left waiting out a retry backoff wait out the rest of it.
        scored: Any = await self.redis.zrange(self._retry_at_key, 0, -1, withscores=True)
        retry_at: dict[Any, float] = {member: float(score) for member, score in scored}
        now_ms, now = time.time() * 1000, time.monotonic()
        waiting = {_text(i): (retry_at[i] - now_ms) / 1000 for i in ids if retry_at.get(i, 0) > now_ms}
        if waiting:
            self._delayed.update({entry_id: now + left for entry_id, left in waiting.items()})
            self._delayed_changed.set()
            ids = [i for i in ids if _text(i) not in waiting]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            claimed: list[Any] = await self.redis.xclaim(self.topic, self.group, self.consumer, 0, chunk)
            live = [(entry_id, fields) for entry_id, fields in claimed if fields]
            gone = set(chunk) - {entry_id for entry_id, _ in live}
            if gone:
                await self.redis.xack(self.topic, self.group, *gone)
            if live:
                await self._enqueue_reclaimed(live)

    async def trim(self) -> int:
        """Trim the request stream below the oldest unanswered entry; returns entries removed."""
        floor = await min_unanswered_id(self.redis, self.topic)
        if floor is None:
            return 0
        removed = int(await self.redis.xtrim(self.topic, minid=floor, approximate=True))
        if removed:
            log.debug("trimmed answered requests", topic=self.topic, removed=removed)
        return removed

    async def _forget_stale_consumers(self) -> None:
        for consumer in await self.redis.xinfo_consumers(self.topic, self.group):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name != self.consumer and consumer["pending"] == 0 and consumer["idle"] > STALE_CONSUMER_MS:
                await self.redis.xgroup_delconsumer(self.topic, self.group, name)
