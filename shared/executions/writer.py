"""One coalescing writer for every execution-history and claim operation of a worker.

Operations are queued by the delivery tasks; the dispatcher takes *everything queued* and
writes it in **one statement** (data-modifying CTEs over ``unnest()`` arrays), i.e. one
database round trip per batch of messages, however many state changes the batch holds. Up to
``max_in_flight`` statements run at once (the claims of a new batch need not wait behind the
results of the previous one); what arrives meanwhile waits for the next statement, so the
batch size adapts to load.

Four kinds of operation, each at most once per execution id per flush (a second operation on
the same id waits for the next flush, since one statement must not touch a row twice):

``claim``   take the execution (insert ``pending`` with a lease, or take over an expired
            lease / a final row's state is returned instead) — awaited, answers a :class:`ClaimResult`;
``start``   mark the claimed execution ``running`` — not awaited;
``release`` give the lease back (a Retry) — not awaited;
``finish``  store the final result (``completed``/``failed``) — awaited while the database is
            up; while it is down, held in memory (bounded) and written once it is back.

Outage: when a flush fails because the database is unreachable, claims fail fast with
:class:`DatabaseUnavailable` (the caller runs without a claim), writes are kept in order and
retried with backoff; new finish operations are not awaited until a flush succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from shared.errors import InfrastructureError
from shared.registry.database import is_outage, json_text

__all__ = ["BatchWriter", "ClaimResult", "DatabaseUnavailable", "FinishRecord", "Op"]

log = structlog.get_logger("fleet.history")

OpKind = Literal["claim", "start", "release", "finish"]

#: Seconds a ``running`` mark is held back: most executions finish sooner, and then the mark
#: is superseded by the final write instead of costing a statement on the hot path.
START_DELAY = 0.2


class DatabaseUnavailable(InfrastructureError):
    """The database could not be reached for this operation."""


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What a claim found. ``won``: this caller holds the lease and must run. Otherwise
    ``status`` is the row's state (``None`` when another claim raced ahead unseen) and
    ``result`` the stored result data of a final execution."""

    won: bool
    status: str | None
    result: dict[str, Any] | None = None
    lease_owner: str | None = None
    taken_over: bool = False


@dataclass(slots=True, kw_only=True)
class FinishRecord:
    """The final state of one execution, as stored."""

    id: str
    function_id: str | None
    slug: str
    workflow_execution_id: str | None
    node_id: str | None
    status: str
    input: Any
    output: Any
    error: Any
    result: dict[str, Any]
    attempt: int
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: float | None
    worker: str | None
    token: str | None


@dataclass(slots=True, kw_only=True)
class Op:
    kind: OpKind
    id: str
    token: str | None = None
    # claim
    function_id: str | None = None
    slug: str = ""
    workflow_execution_id: str | None = None
    node_id: str | None = None
    input: Any = None
    attempt: int = 1
    lease_seconds: float = 0.0
    started_at: datetime | None = None
    # finish
    finish: FinishRecord | None = None
    future: asyncio.Future[Any] | None = field(default=None, repr=False)
    #: loop time when queued (a ``start`` waits :data:`START_DELAY` for its finish to supersede it).
    queued_at: float = 0.0
    superseded: bool = False


_FLUSH_SQL = """
WITH
claim_in AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::int[], $8::float8[], $9::text[], $10::timestamptz[])
        AS t(id, function_id, slug, wf, node, input, attempt, lease_s, token, started_at)
),
claimed AS (
    INSERT INTO function_executions AS fe (id, function_id, function_slug, workflow_execution_id,
        node_id, status, input, attempt, started_at, worker, lease_owner, lease_token, lease_expires_at)
    SELECT id, function_id, slug, wf, node, 'pending', input::jsonb, attempt, started_at, $11, $11, token,
           now() + make_interval(secs => lease_s)
    FROM claim_in
    ON CONFLICT (id) DO UPDATE SET
        status = 'pending', function_id = EXCLUDED.function_id, function_slug = EXCLUDED.function_slug,
        input = EXCLUDED.input, attempt = GREATEST(fe.attempt + 1, EXCLUDED.attempt),
        started_at = EXCLUDED.started_at, worker = EXCLUDED.worker, lease_owner = EXCLUDED.lease_owner,
        lease_token = EXCLUDED.lease_token, lease_expires_at = EXCLUDED.lease_expires_at,
        updated_at = now()
    WHERE fe.status IN ('pending', 'running')
      AND (fe.lease_expires_at IS NULL OR fe.lease_expires_at < now()
           OR fe.lease_owner = EXCLUDED.lease_owner)
    RETURNING fe.id
),
started AS (
    UPDATE function_executions AS fe SET status = 'running', updated_at = now()
    FROM unnest($12::text[], $13::text[]) AS s(id, token)
    WHERE fe.id = s.id AND fe.lease_token = s.token AND fe.status = 'pending'
    RETURNING fe.id
),
released AS (
    UPDATE function_executions AS fe
    SET status = 'pending', lease_owner = NULL, lease_expires_at = now(), updated_at = now()
    FROM unnest($14::text[], $15::text[]) AS r(id, token)
    WHERE fe.id = r.id AND fe.lease_token = r.token AND fe.status IN ('pending', 'running')
    RETURNING fe.id
),
finish_in AS (
    SELECT * FROM unnest($16::text[], $17::uuid[], $18::text[], $19::text[], $20::text[], $21::text[],
                         $22::text[], $23::text[], $24::text[], $25::text[], $26::int[],
                         $27::timestamptz[], $28::timestamptz[], $29::float8[], $30::text[], $31::text[])
        AS t(id, function_id, slug, wf, node, status, input, output, error, result, attempt,
             started_at, completed_at, duration_ms, worker, token)
),
finished AS (
    INSERT INTO function_executions AS fe (id, function_id, function_slug, workflow_execution_id,
        node_id, status, input, output, error, result, attempt, started_at, completed_at, duration_ms,
        worker, lease_token)
    SELECT id, function_id, slug, wf, node, status, input::jsonb, output::jsonb, error::jsonb,
           result::jsonb, attempt, started_at, completed_at, duration_ms, worker, token
    FROM finish_in
    ON CONFLICT (id) DO UPDATE SET
        function_id = COALESCE(EXCLUDED.function_id, fe.function_id),
        function_slug = EXCLUDED.function_slug,
        workflow_execution_id = COALESCE(EXCLUDED.workflow_execution_id, fe.workflow_execution_id),
        node_id = COALESCE(EXCLUDED.node_id, fe.node_id),
        status = EXCLUDED.status, input = COALESCE(EXCLUDED.input, fe.input),
        output = EXCLUDED.output, error = EXCLUDED.error, result = EXCLUDED.result,
        attempt = GREATEST(fe.attempt, EXCLUDED.attempt), started_at = EXCLUDED.started_at,
        completed_at = EXCLUDED.completed_at, duration_ms = EXCLUDED.duration_ms,
        worker = EXCLUDED.worker, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    -- Written by the claim's holder; by anyone once the row's lease is gone or expired; never
    -- over a live lease of another worker (e.g. a duplicate's dead-letter failure) or a final
    -- row of another claim.
    WHERE fe.lease_token IS NOT DISTINCT FROM EXCLUDED.lease_token
       OR (fe.status IN ('pending', 'running')
           AND (fe.lease_expires_at IS NULL OR fe.lease_expires_at < now() OR fe.lease_owner = $11))
    RETURNING fe.id
)
SELECT c.id,
       (cl.id IS NOT NULL) AS won,
       fe.status,
       fe.result,
       fe.lease_owner,
       (fe.id IS NOT NULL) AS existed
FROM claim_in c
LEFT JOIN claimed cl ON cl.id = c.id
LEFT JOIN function_executions fe ON fe.id = c.id
"""


def _opt_json(value: Any) -> str | None:
    return None if value is None else json_text(value)


class BatchWriter:
    """Coalesces operations into one statement per flush (see module docstring).

    Parameters:
        pool: asyncpg pool.
        owner: lease owner name, ``<worker>/<process token>``.
        buffer: most finish/start/release operations held while the database is down; beyond
            it :meth:`finish` raises InfrastructureError (the delivery is then not acked).
        timeout: seconds one flush may take before the database counts as unreachable.
        max_in_flight: statements in flight at once (each on its own pooled connection); a
            batch never holds an execution that a statement in flight holds.
    """

    def __init__(
        self, pool: Any, *, owner: str, buffer: int = 10_000, timeout: float = 10.0, max_in_flight: int = 3
    ) -> None:
        self._pool = pool
        self._max_in_flight = max_in_flight
        self._flushing: set[asyncio.Task[bool]] = set()
        self._inflight_ids: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.owner = owner
        self._buffer = buffer
        self._timeout = timeout
        self._queue: deque[Op] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: True from a failed flush until the next successful one.
        self.down = False
        #: statements executed (= database round trips) and operations they carried.
        self.flushes = 0
        self.ops_flushed = 0

    # ------------------------------------------------------------------ lifecycle
    def bind(self, pool: Any) -> None:
        """Use ``pool`` from now on (the runtime creates the pool after the writer)."""
        self._pool = pool

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fleet-history-writer")

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued (for at most ``timeout`` seconds), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            for task in list(self._flushing):
                task.cancel()
            await asyncio.gather(*self._flushing, return_exceptions=True)
            self._task = None
        if self._queue:
            log.error("history writes lost at shutdown; database unreachable", count=len(self._queue))
        for op in self._queue:
            if op.future is not None and not op.future.done():
                op.future.set_exception(DatabaseUnavailable("writer closed"))
                op.future.exception()
        self._queue.clear()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ operations
    async def claim(self, op: Op) -> ClaimResult:
        """Queue a claim and wait for its flush. Raises :class:`DatabaseUnavailable` at once
        while the database is known to be down, or when the flush fails for that reason."""
        if self.down or self._closing:
            raise DatabaseUnavailable("database unreachable; running without a claim")
        op.future = asyncio.get_running_loop().create_future()
        self._put(op)
        result: ClaimResult = await op.future
        return result

    def submit(self, op: Op) -> None:
        """Queue a ``start`` or ``release`` without waiting for it."""
        if self.down and len(self._queue) >= self._buffer:
            # Only an intermediate state (running / released) is lost; the final write is not.
            log.warning("history buffer full; dropping a state change", kind=op.kind, execution_id=op.id)
            return
        self._put(op)

    async def finish(self, record: FinishRecord) -> None:
        """Store a final result. Waits for the flush while the database is up; while it is
        down, holds the write and returns. Raises InfrastructureError when the buffer is full
        (the result must then not be published: the delivery is redelivered later)."""
        # While the database is up the queue drains every round trip (bounded by concurrency);
        # the bound is for what piles up during an outage.
        if self.down and len(self._queue) >= self._buffer:
            raise InfrastructureError(
                f"execution history buffer full ({self._buffer}) while the database is unreachable"
            )
        op = Op(kind="finish", id=record.id, token=record.token, finish=record)
        if self.down:
            self._put(op)
            return
        op.future = asyncio.get_running_loop().create_future()
        self._put(op)
        await op.future

    def _put(self, op: Op) -> None:
        op.queued_at = asyncio.get_running_loop().time()
        self._queue.append(op)
        self._wake.set()

    # ------------------------------------------------------------------ flushing
    async def _run(self) -> None:
        """Dispatch flushes: up to ``max_in_flight`` statements at once while the database is
        up (each on its own pooled connection); one at a time, with backoff, while it is down."""
        delay = 0.1
        while True:
            if self.down:
                await self._idle.wait()
                batch = self._take()
                if not batch:
                    if self._closing and not self._queue:
                        return
                    if self._queue:
                        await self._wait_for_work()
                        continue
                    # Nothing to write: probe, so claims resume once the database is back.
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(5.0, delay * 2)
                    if await self._probe():
                        delay = 0.1
                    continue
                if await self._flush_guarded(batch):
                    delay = 0.1
                    continue
                if self._closing:
                    return
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(5.0, delay * 2)
                continue
            if self._queue and len(self._flushing) < self._max_in_flight:
                batch = self._take()
                if batch:
                    self._spawn(batch)
                    continue
            if self._closing and not self._queue and not self._flushing:
                return
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        """Until something is queued or a flush ends; held-back starts come due by themselves."""
        self._wake.clear()
        if self._queue:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), START_DELAY / 2)
        else:
            await self._wake.wait()

    async def _probe(self) -> bool:
        """``SELECT 1``; True (and no longer down) when the database answers."""
        try:
            await self._pool.fetchval("SELECT 1", timeout=self._timeout)
        except Exception as exc:
            if not is_outage(exc):
                log.warning("database probe failed", error=str(exc))
            return False
        log.info("database reachable again; claims resumed")
        self.down = False
        return True

    def _spawn(self, batch: list[Op]) -> None:
        task = asyncio.create_task(self._flush_guarded(batch))
        ids = [op.id for op in batch]
        self._flushing.add(task)
        self._inflight_ids.update(ids)
        self._idle.clear()

        def done(finished: asyncio.Task[bool]) -> None:
            self._flushing.discard(finished)
            self._inflight_ids.difference_update(ids)
            if not self._flushing:
                self._idle.set()
            self._wake.set()

        task.add_done_callback(done)

    async def _flush_guarded(self, batch: list[Op]) -> bool:
        """Flush ``batch``; False when the database turned out to be unreachable (the batch's
        writes are re-queued, its claims failed)."""
        try:
            await self._flush(batch)
        except Exception as exc:
            if is_outage(exc):
                self._outage(batch, exc)
                return False
            # A statement error (bad data, a bug): isolate the culprit one op at a time.
            for n, op in enumerate(batch):
                try:
                    await self._flush([op])
                except Exception as single:
                    if is_outage(single):
                        self._outage(batch[n:], single)
                        return False
                    self._failed([op], single)
        if self.down:
            log.info("database reachable again; history writes resumed", pending=len(self._queue))
        self.down = False
        return True

    def _take(self) -> list[Op]:
        """Everything queued, at most one op per execution id (one statement must not touch a
        row twice). A ``start`` followed by that execution's ``finish`` is superseded by it;
        any other second op on an id waits, with everything after it on that id, for the next
        flush, so each execution's ops keep their order."""
        batch: dict[str, Op] = {}
        deferred: deque[Op] = deque()
        # Executions in a statement still in flight wait for it: their ops stay in order.
        blocked: set[str] = set(self._inflight_ids)
        held_starts: dict[str, Op] = {}
        due = asyncio.get_running_loop().time() - START_DELAY
        for op in self._queue:
            if op.kind == "finish" and op.id in held_starts:
                # The held-back "running" mark is superseded by the final write.
                held_starts.pop(op.id).superseded = True
            if op.id in blocked:
                deferred.append(op)
                continue
            previous = batch.get(op.id)
            if previous is None and op.kind == "start" and op.queued_at > due and not self._closing:
                held_starts[op.id] = op
                blocked.add(op.id)
                deferred.append(op)
            elif previous is None:
                batch[op.id] = op
            elif previous.kind == "start" and op.kind == "finish":
                del batch[op.id]  # re-inserted last: the finish keeps its place in the order
                batch[op.id] = op
            else:
                blocked.add(op.id)
                deferred.append(op)
        if held_starts or any(op.superseded for op in deferred):
            # A superseded start frees its execution's later ops for this very batch.
            freed = {op.id for op in deferred if op.superseded} - self._inflight_ids
            kept: deque[Op] = deque()
            for op in deferred:
                if op.superseded:
                    continue
                if op.id in freed and op.id not in batch and op.kind == "finish":
                    batch[op.id] = op
                    continue
                kept.append(op)
            deferred = kept
        self._queue = deferred
        return list(batch.values())

    def _failed(self, batch: list[Op], exc: Exception) -> None:
        log.error(
            "history write rejected by the database", error=str(exc), execution_ids=[o.id for o in batch]
        )
        for op in batch:
            if op.future is not None and not op.future.done():
                if op.kind == "claim":
                    op.future.set_exception(DatabaseUnavailable(f"claim rejected: {exc}"))
                    op.future.exception()
                else:
                    op.future.set_result(None)

    def _outage(self, batch: list[Op], exc: BaseException) -> None:
        if not self.down:
            log.warning(
                "database unreachable; holding history writes, running without claims",
                error=str(exc) or type(exc).__name__,
            )
        self.down = True
        keep: list[Op] = []
        for op in batch:
            if op.kind == "claim":
                if op.future is not None and not op.future.done():
                    op.future.set_exception(DatabaseUnavailable(str(exc) or type(exc).__name__))
                    op.future.exception()
                continue
            # Held, in order, ahead of newer work; the waiter is released (buffered).
            if op.future is not None and not op.future.done():
                op.future.set_result(None)
            op.future = None
            keep.append(op)
        for op in reversed(keep):
            self._queue.appendleft(op)

    async def _flush(self, batch: list[Op]) -> None:
        claims = [o for o in batch if o.kind == "claim"]
        starts = [o for o in batch if o.kind == "start"]
        releases = [o for o in batch if o.kind == "release"]
        finishes = [o.finish for o in batch if o.kind == "finish" and o.finish is not None]
        args = (
            [o.id for o in claims],
            [o.function_id for o in claims],
            [o.slug for o in claims],
            [o.workflow_execution_id for o in claims],
            [o.node_id for o in claims],
            [_opt_json(o.input) for o in claims],
            [o.attempt for o in claims],
            [o.lease_seconds for o in claims],
            [o.token for o in claims],
            [o.started_at for o in claims],
            self.owner,
            [o.id for o in starts],
            [o.token for o in starts],
            [o.id for o in releases],
            [o.token for o in releases],
            [f.id for f in finishes],
            [f.function_id for f in finishes],
            [f.slug for f in finishes],
            [f.workflow_execution_id for f in finishes],
            [f.node_id for f in finishes],
            [f.status for f in finishes],
            [_opt_json(f.input) for f in finishes],
            [_opt_json(f.output) for f in finishes],
            [_opt_json(f.error) for f in finishes],
            [json_text(f.result) for f in finishes],
            [f.attempt for f in finishes],
            [f.started_at for f in finishes],
            [f.completed_at for f in finishes],
            [f.duration_ms for f in finishes],
            [f.worker for f in finishes],
            [f.token for f in finishes],
        )
        rows = await self._pool.fetch(_FLUSH_SQL, *args, timeout=self._timeout)
        self.flushes += 1
        self.ops_flushed += len(batch)
        by_id = {r["id"]: r for r in rows if r["id"] is not None}
        for op in batch:
            if op.future is None or op.future.done():
                continue
            if op.kind != "claim":
                op.future.set_result(None)
                continue
            row = by_id.get(op.id)
            if row is None:  # cannot happen: every claim id is in claim_in
                op.future.set_exception(DatabaseUnavailable("claim not answered"))
                op.future.exception()
                continue
            op.future.set_result(
                ClaimResult(
                    won=bool(row["won"]),
                    status=row["status"],
                    result=row["result"],
                    lease_owner=row["lease_owner"],
                    taken_over=bool(row["won"]) and bool(row["existed"]),
                )
            )
