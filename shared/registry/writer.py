"""One coalescing writer for every execution-history and claim operation of a worker.

Operations are queued by the delivery tasks; the dispatcher takes *everything queued* and
writes it in **one statement** (data-modifying CTEs over ``unnest()`` arrays), i.e. one
database round trip per batch of messages, however many state changes the batch holds. Up to
``max_in_flight`` statements run at once (the claims of a new batch need not wait behind the
results of the previous one); what arrives meanwhile waits for the next statement, so the
batch size adapts to load.

Two modes. With claims in Redis (``shared.registry.claims``, the default when the worker
has a Redis URL) the table is history only, and the writer is off the hot path:

``open``    the execution's row as ``running`` (or ``pending`` again after a retry) — not
            awaited, and held back :data:`START_DELAY`: an execution that finishes sooner is
            written once, final;
``finish``  its final row (``completed``/``failed``) — not awaited unless ``FLEET_HISTORY_SYNC``.

With claims in the database (no Redis URL, e.g. a Dapr-only worker):

``claim``   take the execution (insert ``pending`` with a lease, or take over an expired
            lease / a final row's state is returned instead) — awaited, answers a :class:`ClaimResult`;
``start``   mark the claimed execution ``running`` — not awaited, held back like ``open``;
``release`` give the lease back (a Retry) — not awaited;
``finish``  store the final result — awaited while the database is up.

Each operation is at most once per execution id per flush (a second operation on the same id
waits for the next flush, since one statement must not touch a row twice). Whatever is queued
is bounded by ``buffer``: past it, a finish waits for the database (backpressure) while it is
up and is refused (the delivery stays unacked) while it is down.

Outage: when a flush fails because the database is unreachable, claims fail fast with
:class:`DatabaseUnavailable` (the caller runs without a claim), writes are kept in order and
retried with backoff; new finish operations are not awaited until a flush succeeds again.
What counts as unreachable is :func:`shared.registry.database.is_outage`. Any other failure
is the statement's: the batch is bisected, the rest written, and each op the database rejects
for itself is logged and counted (:attr:`BatchWriter.rejected_rows`), never held.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
import structlog

from shared.errors import InfrastructureError
from shared.registry.claims import ClaimResult
from shared.registry.database import is_outage, json_text, jsonb_safe

__all__ = ["BatchWriter", "ClaimResult", "DatabaseUnavailable", "FinishRecord", "Op"]

log = structlog.get_logger("fleet.history")

OpKind = Literal["claim", "start", "release", "open", "finish"]

#: Kinds held back :data:`START_DELAY` so that a quick finish supersedes them.
_HELD = frozenset(("start", "open"))

#: Seconds a ``running`` mark is held back: most executions finish sooner, and then the mark
#: is superseded by the final write instead of costing a statement on the hot path.
START_DELAY = 0.2
#: Seconds writes that nobody waits for are gathered before a flush (fewer, bigger statements).
FLUSH_INTERVAL = 0.05
#: Most operations in one statement.
BATCH_MAX = 1000


class DatabaseUnavailable(InfrastructureError):
    """The database could not be reached for this operation."""


@dataclass(slots=True, kw_only=True)
class FinishRecord:
    """The final state of one execution, as stored."""

    id: str
    function_id: str | None
    slug: str
    workflow_execution_id: str | None
    node_id: str | None
    status: str
    #: the request input; ``None`` when a claim already stored it with the row.
    input: Any
    #: the whole result data as JSON text (output and error columns are derived from it).
    result_json: str
    attempt: int
    #: ISO 8601 text, as in the result data (PostgreSQL parses it).
    started_at: str | None
    completed_at: str | None
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
    #: ``open``: the row's status (``running``, or ``pending`` after a retry), and a callable
    #: giving the rest of the row (built only if the op is written, not superseded).
    status: str = "running"
    row: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)
    # finish
    finish: FinishRecord | None = None
    future: asyncio.Future[Any] | None = field(default=None, repr=False)
    #: loop time when queued (a ``start`` waits :data:`START_DELAY` for its finish to supersede it).
    queued_at: float = 0.0


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
    SELECT t.*, t.result::jsonb AS r
    FROM unnest($16::text[], $17::uuid[], $18::text[], $19::text[], $20::text[], $21::text[],
                $22::text[], $23::text[], $24::int[], $25::text[], $26::text[],
                $27::float8[], $28::text[], $29::text[])
        AS t(id, function_id, slug, wf, node, status, input, result, attempt,
             started_at, completed_at, duration_ms, worker, token)
),
finished AS (
    INSERT INTO function_executions AS fe (id, function_id, function_slug, workflow_execution_id,
        node_id, status, input, output, error, result, attempt, started_at, completed_at, duration_ms,
        worker, lease_token)
    SELECT id, function_id, slug, wf, node, status, input::jsonb, NULLIF(r -> 'output', 'null'),
           NULLIF(r -> 'error', 'null'), r, attempt, started_at::timestamptz, completed_at::timestamptz,
           duration_ms, worker, token
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


#: History only (claims live in Redis): ``open`` and ``finish`` rows in one upsert. A final row
#: is never overwritten (the first final result wins, as in the claim store); a row written
#: under a claim (``lease_token``) is only overwritten by a write under a claim, or once its
#: lease has expired — so a duplicate's failure does not replace the running execution's row.
_HISTORY_SQL = """
INSERT INTO function_executions AS fe (id, function_id, function_slug, workflow_execution_id,
    node_id, status, input, output, error, result, attempt, started_at, completed_at, duration_ms,
    worker, lease_owner, lease_token, lease_expires_at)
SELECT t.id, t.function_id, COALESCE(t.slug, ''), t.wf, t.node, t.status, t.input,
       NULLIF(t.result -> 'output', 'null'), NULLIF(t.result -> 'error', 'null'), t.result,
       COALESCE(t.attempt, 1), COALESCE(t.started_at, to_timestamp(t.opened)), t.completed_at,
       t.duration_ms, COALESCE(t.worker, $2),
       CASE WHEN t.result IS NULL AND t.lease_s > 0 THEN $2 END, t.token,
       CASE WHEN t.result IS NULL THEN now() + make_interval(secs => COALESCE(t.lease_s, 0)) END
FROM jsonb_to_recordset($1::text::jsonb) AS t(id text, function_id uuid, slug text, wf text, node text,
    status text, input jsonb, result jsonb, attempt int, started_at timestamptz, opened float8,
    completed_at timestamptz, duration_ms float8, worker text, token text, lease_s float8)
ON CONFLICT (id) DO UPDATE SET
    function_id = COALESCE(EXCLUDED.function_id, fe.function_id),
    function_slug = COALESCE(NULLIF(EXCLUDED.function_slug, ''), fe.function_slug),
    workflow_execution_id = COALESCE(EXCLUDED.workflow_execution_id, fe.workflow_execution_id),
    node_id = COALESCE(EXCLUDED.node_id, fe.node_id),
    status = EXCLUDED.status, input = COALESCE(EXCLUDED.input, fe.input),
    output = EXCLUDED.output, error = EXCLUDED.error, result = EXCLUDED.result,
    attempt = GREATEST(fe.attempt, EXCLUDED.attempt),
    started_at = COALESCE(EXCLUDED.started_at, fe.started_at),
    completed_at = EXCLUDED.completed_at, duration_ms = EXCLUDED.duration_ms,
    worker = COALESCE(EXCLUDED.worker, fe.worker), lease_owner = EXCLUDED.lease_owner,
    lease_token = COALESCE(EXCLUDED.lease_token, fe.lease_token),
    lease_expires_at = EXCLUDED.lease_expires_at, updated_at = now()
WHERE fe.status IN ('pending', 'running')
  AND (EXCLUDED.lease_token IS NOT NULL OR fe.lease_token IS NULL OR fe.lease_expires_at < now())
"""


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The error's primary message, clipped: enough to tell what failed, not a row's data."""
    text = (str(exc.args[0]) if exc.args else "") or type(exc).__name__
    line = text.splitlines()[0] if text else text
    return line if len(line) <= limit else line[: limit - 1] + "…"


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
        #: held-back ``start`` / ``open`` ops by execution id, oldest first (see :meth:`submit`).
        self._held: dict[str, Op] = {}
        #: queued ops someone awaits (claims, synchronous finishes): flush without gathering.
        self._waiting = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: True from a failed flush until the next successful one.
        self.down = False
        #: statements executed (= database round trips) and operations they carried.
        self.flushes = 0
        self.ops_flushed = 0
        #: operations the database rejected for themselves (bad data): logged, not written.
        self.rejected_rows = 0

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
        if self._queue or self._held:
            log.error("history writes lost at shutdown; database unreachable", count=self.pending)
        for op in self._queue:
            if op.future is not None and not op.future.done():
                op.future.set_exception(DatabaseUnavailable("writer closed"))
                op.future.exception()
        self._queue.clear()
        self._held.clear()
        self._waiting = 0

    @property
    def pending(self) -> int:
        """Operations not yet written (queued or held back)."""
        return len(self._queue) + len(self._held)

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
        """Queue a ``start``, ``release`` or ``open`` without waiting for it. ``start`` and
        ``open`` (``running``) are held back :data:`START_DELAY` seconds, so that a finish
        arriving meanwhile supersedes them; an ``open`` with status ``pending`` (a retry) turns
        a held one into a pending row."""
        if self.down and len(self._queue) >= self._buffer:
            # Only an intermediate state (running / released) is lost; the final write is not.
            log.warning("history buffer full; dropping a state change", kind=op.kind, execution_id=op.id)
            return
        loop = asyncio.get_running_loop()
        if op.kind == "open" and op.status == "pending":
            held = self._held.get(op.id)
            if held is not None:
                held.status, held.lease_seconds, held.queued_at = "pending", 0.0, loop.time()
                return
        elif op.kind in _HELD:
            op.queued_at = loop.time()
            if not self._held:
                self._wake.set()  # the dispatcher times the first held op
            self._held[op.id] = op
            return
        elif op.kind == "release":
            self._held.pop(op.id, None)  # never written: the release says it all
        self._put(op)

    def check_room(self) -> None:
        """Raise InfrastructureError when a finish would be refused now (the buffer is full
        while the database is down): the result must then not be published."""
        if self.down and len(self._queue) >= self._buffer:
            raise InfrastructureError(
                f"execution history buffer full ({self._buffer}) while the database is unreachable"
            )

    async def finish(self, record: FinishRecord, *, wait: bool = True, admitted: bool = False) -> None:
        """Store a final result. With ``wait``, returns once it is written while the database
        is up; without, returns at once (the write is queued). While the database is down the
        write is held and this returns. Past ``buffer`` queued operations it waits for the
        database while it is up, and raises InfrastructureError while it is down (the result
        must then not be published: the delivery is redelivered later) — unless ``admitted``
        (:meth:`check_room` passed just before; the bound is then exceeded by at most the
        worker's concurrency)."""
        full = len(self._queue) >= self._buffer
        if not admitted:
            self.check_room()
        # A held-back running mark is superseded: the execution is written once, final.
        self._held.pop(record.id, None)
        op = Op(kind="finish", id=record.id, token=record.token, finish=record)
        if self.down or not (wait or full):
            self._put(op)
            return
        op.future = asyncio.get_running_loop().create_future()
        self._put(op)
        await op.future

    def _put(self, op: Op) -> None:
        op.queued_at = asyncio.get_running_loop().time()
        self._queue.append(op)
        if op.future is not None:
            self._waiting += 1
            self._wake.set()
        elif len(self._queue) == 1 or len(self._queue) >= BATCH_MAX:
            self._wake.set()

    # ------------------------------------------------------------------ flushing
    async def _run(self) -> None:
        """Dispatch flushes: up to ``max_in_flight`` statements at once while the database is
        up (each on its own pooled connection); one at a time, with backoff, while it is down.
        While someone waits for a write (a claim, a synchronous finish) a flush starts at once;
        writes nobody waits for are gathered for up to :data:`FLUSH_INTERVAL`."""
        delay = 0.1
        while True:
            self._promote()
            if self.down:
                await self._idle.wait()
                batch = self._take()
                if not batch:
                    if self._closing and not self._queue and not self._held:
                        return
                    if self._queue or self._held:
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
            if self._queue and len(self._flushing) < self._max_in_flight and self._due():
                batch = self._take()
                if batch:
                    self._spawn(batch)
                    continue
                # Everything queued waits for a statement in flight: until it ends.
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._closing and not self._queue and not self._held and not self._flushing:
                return
            await self._wait_for_work()

    def _due(self) -> bool:
        """Whether the queue should be flushed now (someone waits, it is big, or old enough)."""
        if self._waiting or self._closing or len(self._queue) >= BATCH_MAX:
            return True
        return asyncio.get_running_loop().time() - self._queue[0].queued_at >= FLUSH_INTERVAL

    def _promote(self) -> None:
        """Held ops that came due (or all, when closing) join the queue, oldest first."""
        if not self._held:
            return
        due = asyncio.get_running_loop().time() - START_DELAY
        while self._held:
            execution_id, op = next(iter(self._held.items()))
            if op.queued_at > due and not self._closing:
                break
            del self._held[execution_id]
            self._queue.append(op)

    async def _wait_for_work(self) -> None:
        """Until something is queued or a flush ends, or the next held or gathered op is due."""
        self._wake.clear()
        now = asyncio.get_running_loop().time()
        deadlines: list[float] = []
        if self._held:
            deadlines.append(next(iter(self._held.values())).queued_at + START_DELAY)
        if self._queue and len(self._flushing) < self._max_in_flight:
            deadlines.append(self._queue[0].queued_at + FLUSH_INTERVAL)
        if not deadlines:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.001, min(deadlines) - now))

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
        """Flush ``batch``; False when the database turned out to be unreachable (what was not
        written is re-queued, its claims failed). A statement error isolates the ops the
        database rejects for themselves; the others are written."""
        try:
            await self._flush(batch)
        except Exception as exc:
            if is_outage(exc):
                self._outage(batch, exc)
                return False
            if not await self._isolate(batch, exc):
                return False
        if self.down:
            log.info("database reachable again; history writes resumed", pending=len(self._queue))
        self.down = False
        return True

    async def _isolate(self, batch: list[Op], exc: Exception) -> bool:
        """``batch`` failed with ``exc``, a statement error: bisect it, so one bad row costs
        about 2·log2(len(batch)) statements instead of one per op, write every half that
        succeeds and reject only single ops that fail on their own. False when the database
        became unreachable meanwhile (the ops not yet written or rejected are re-queued)."""
        pending: list[tuple[list[Op], Exception]] = [(batch, exc)]
        while pending:
            part, error = pending.pop()
            if len(part) == 1:
                self._failed(part, error)
                continue
            middle = len(part) // 2
            for n, half in enumerate((part[:middle], part[middle:])):
                try:
                    await self._flush(half)
                except Exception as failure:
                    if is_outage(failure):
                        rest = [op for item, _ in pending for op in item]
                        self._outage([*rest, *half, *(part[middle:] if n == 0 else [])], failure)
                        return False
                    pending.append((half, failure))
        return True

    def _take(self) -> list[Op]:
        """What is queued, at most :data:`BATCH_MAX` ops and one op per execution id (one
        statement must not touch a row twice): a second op on an id waits, with everything
        after it on that id, for the next flush, so each execution's ops keep their order."""
        batch: dict[str, Op] = {}
        deferred: deque[Op] = deque()
        # Executions in a statement still in flight wait for it: their ops stay in order.
        blocked: set[str] = set(self._inflight_ids)
        for op in self._queue:
            if op.id in blocked or op.id in batch or len(batch) >= BATCH_MAX:
                blocked.add(op.id)
                deferred.append(op)
                continue
            batch[op.id] = op
            if op.future is not None:
                self._waiting -= 1
        self._queue = deferred
        return list(batch.values())

    def _failed(self, batch: list[Op], exc: Exception) -> None:
        """``batch`` was rejected by the database for itself: reported and counted, not held.
        The log carries the error's type, SQLSTATE and first line only (PostgreSQL's DETAIL
        may quote the row's values, i.e. a request's input)."""
        self.rejected_rows += len(batch)
        log.error(
            "history write rejected by the database",
            error=type(exc).__name__,
            sqlstate=getattr(exc, "sqlstate", None),
            message=_first_line(exc),
            execution_ids=[o.id for o in batch],
            kinds=sorted({o.kind for o in batch}),
            rejected_total=self.rejected_rows,
        )
        for op in batch:
            if op.future is not None and not op.future.done():
                if op.kind == "claim":
                    op.future.set_exception(DatabaseUnavailable(f"claim rejected: {_first_line(exc)}"))
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
        if all(o.kind in ("open", "finish") for o in batch):
            await self._flush_history(batch)
            return
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
            [f.result_json for f in finishes],
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

    async def _flush_history(self, batch: list[Op]) -> None:
        """``open`` and ``finish`` operations (claims in Redis) as one upsert. The batch goes
        as one JSON document (``jsonb_to_recordset``): one parameter for asyncpg to encode,
        and each result's JSON text is embedded as it is, not parsed and encoded again."""
        rows: list[dict[str, Any]] = []
        for op in batch:
            f = op.finish
            if f is not None:
                rows.append(
                    {
                        "id": f.id,
                        "function_id": f.function_id,
                        "slug": f.slug,
                        "wf": f.workflow_execution_id,
                        "node": f.node_id,
                        "status": f.status,
                        "input": f.input,
                        "result": orjson.Fragment(f.result_json),
                        "attempt": f.attempt,
                        "started_at": f.started_at,
                        "completed_at": f.completed_at,
                        "duration_ms": f.duration_ms,
                        "worker": f.worker,
                        "token": f.token,
                    }
                )
            else:
                rows.append(op.row() if op.row is not None else {"id": op.id})
                rows[-1].update(status=op.status, token=op.token, lease_s=op.lease_seconds)
        document = jsonb_safe(orjson.dumps(rows).decode())
        await self._pool.execute(_HISTORY_SQL, document, self.owner, timeout=self._timeout)
        self.flushes += 1
        self.ops_flushed += len(batch)
        for op in batch:
            if op.future is not None and not op.future.done():
                op.future.set_result(None)
