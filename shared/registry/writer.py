"""The buffered writer core every execution-history and claim write of a worker goes through.

Operations are queued by the delivery tasks; the dispatcher takes *everything queued* and
writes it in **one statement**, i.e. one database round trip per batch of messages, however
many state changes the batch holds. Up to ``max_in_flight`` statements run at once (the claims
of a new batch need not wait behind the results of the previous one); what arrives meanwhile
waits for the next statement, so the batch size adapts to load.

The statement, and which operations there are, belong to a mode — one class each on this core:

* :class:`~shared.registry.history_writer.HistoryWriter`: claims in Redis (the default when
  the worker has a Redis URL); the table is history only and the writer is off the hot path.
* :class:`~shared.registry.claims_writer.ClaimsWriter`: claims in PostgreSQL (no Redis URL,
  e.g. a Dapr-only worker); a claim is awaited before the function runs, a final write before
  the result is published: the exactly-once effect.

The core, for both: a **finish** (:class:`FinishRecord`, the execution's final row), written
``wait``-ed or not; **held** ops (a ``running`` mark) kept back :data:`START_DELAY` so that a
quick finish supersedes them and the execution is written once, final; at most one op per
execution id per statement (a second op on an id waits for the next one, since one statement
must not touch a row twice, and ops on an id in a statement in flight wait for it); a bound:
whatever is queued is bounded by ``buffer`` — past it a finish waits for the database
(backpressure) while it is up and is refused (the delivery stays unacked) while it is down.

Outage: when a statement fails because the database is unreachable
(:func:`shared.registry.database.is_outage`), ops a caller is waiting to act on
(:attr:`Op.fails_fast`: claims) fail with :class:`DatabaseUnavailable` at once (the caller runs
without a claim); every other op is kept, in order, and written once the database is back:
one statement at a time, retried with :class:`~shared.backoff.Backoff`, and with nothing to
write a ``SELECT 1`` probe on the same schedule (so claims resume); new finishes are not
awaited until a statement succeeds again. Any other failure is the statement's: the batch is
bisected, the rest written, and each op the database rejects for itself is logged and counted
(:attr:`BatchWriter.rejected_rows`), never held.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog

from shared.backoff import Backoff
from shared.errors import InfrastructureError
from shared.registry.database import is_outage, json_text

__all__ = [
    "BATCH_MAX",
    "FLUSH_INTERVAL",
    "START_DELAY",
    "BatchWriter",
    "DatabaseUnavailable",
    "Finish",
    "FinishRecord",
    "Op",
]

log = structlog.get_logger("fleet.history")

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


@dataclass(slots=True, kw_only=True, eq=False)
class Op:
    """One queued write on one execution's row. A mode defines its kinds as subclasses."""

    #: the kind's name, as logged.
    kind: ClassVar[str]
    #: True: someone waits to act on the answer, so an outage fails the op at once
    #: (:class:`DatabaseUnavailable`) instead of holding it for later.
    fails_fast: ClassVar[bool] = False

    id: str
    token: str | None = None
    future: asyncio.Future[Any] | None = field(default=None, repr=False)
    #: loop time when queued (or held: a held op waits :data:`START_DELAY` from then).
    queued_at: float = 0.0


@dataclass(slots=True, kw_only=True, eq=False)
class Finish(Op):
    """The execution's final row (both modes)."""

    kind: ClassVar[str] = "finish"
    record: FinishRecord


def opt_json(value: Any) -> str | None:
    """``value`` as JSON text for a ``::jsonb`` parameter; ``None`` stays SQL NULL."""
    return None if value is None else json_text(value)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The error's primary message, clipped: enough to tell what failed, not a row's data."""
    text = (str(exc.args[0]) if exc.args else "") or type(exc).__name__
    line = text.splitlines()[0] if text else text
    return line if len(line) <= limit else line[: limit - 1] + "…"


class BatchWriter(abc.ABC):
    """Coalesces operations into one statement per flush (see module docstring); a mode
    subclass adds its operations and implements :meth:`_write`.

    Parameters:
        pool: asyncpg pool (or ``None`` until :meth:`bind`).
        owner: lease owner name, ``<worker>/<process token>``.
        buffer: most operations held while the database is down; beyond it :meth:`finish`
            raises InfrastructureError (the delivery is then not acked) and intermediate
            states are dropped.
        timeout: seconds one statement may take before the database counts as unreachable.
        max_in_flight: statements in flight at once (each on its own pooled connection); a
            batch never holds an execution that a statement in flight holds.
        backoff: the schedule of retries and probes while the database is down (default
            0.1 s doubling to 5 s, jittered); reset once a statement succeeds again.
    """

    def __init__(
        self,
        pool: Any,
        *,
        owner: str,
        buffer: int = 10_000,
        timeout: float = 10.0,
        max_in_flight: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        self._pool = pool
        self.owner = owner
        self._buffer = buffer
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._backoff = backoff if backoff is not None else Backoff()
        self._queue: deque[Op] = deque()
        #: held-back ops by execution id, oldest first (see :meth:`_hold`).
        self._held: dict[str, Op] = {}
        #: queued ops someone awaits (claims, synchronous finishes): flush without gathering.
        self._waiting = 0
        self._wake = asyncio.Event()
        self._flushing: set[asyncio.Task[bool]] = set()
        self._inflight_ids: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: True from a failed flush until the next successful one.
        self.down = False
        #: statements executed (= database round trips) and operations they carried.
        self.flushes = 0
        self.ops_flushed = 0
        #: operations the database rejected for themselves (bad data): logged, not written.
        self.rejected_rows = 0

    # ------------------------------------------------------------------ the mode's statement
    @abc.abstractmethod
    async def _write(self, batch: list[Op]) -> None:
        """Write ``batch`` (at most one op per execution id) in one statement; answer the
        futures that need more than "written" (the core resolves the rest with ``None``)."""

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

    # ------------------------------------------------------------------ the final row
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
        op = Finish(id=record.id, token=record.token, record=record)
        if self.down or not (wait or full):
            self._put(op)
            return
        op.future = asyncio.get_running_loop().create_future()
        self._put(op)
        await op.future

    # ------------------------------------------------------------------ queueing (for modes)
    def _put(self, op: Op) -> None:
        """Queue ``op`` for the next statement."""
        op.queued_at = asyncio.get_running_loop().time()
        self._queue.append(op)
        if op.future is not None:
            self._waiting += 1
            self._wake.set()
        elif len(self._queue) == 1 or len(self._queue) >= BATCH_MAX:
            self._wake.set()

    async def _put_and_wait(self, op: Op) -> Any:
        """Queue ``op`` and wait for its statement's answer."""
        op.future = asyncio.get_running_loop().create_future()
        self._put(op)
        return await op.future

    def _hold(self, op: Op) -> None:
        """Queue ``op`` held back :data:`START_DELAY` seconds: a finish of its execution
        arriving meanwhile supersedes it (replacing an op already held for the execution)."""
        op.queued_at = asyncio.get_running_loop().time()
        if not self._held:
            self._wake.set()  # the dispatcher times the first held op
        self._held[op.id] = op

    def _no_room_for(self, op: Op) -> bool:
        """True (logged) when the database is down and the buffer full: ``op``, an
        intermediate state (running / released), is dropped. A final write never is."""
        if self.down and len(self._queue) >= self._buffer:
            log.warning("history buffer full; dropping a state change", kind=op.kind, execution_id=op.id)
            return True
        return False

    # ------------------------------------------------------------------ dispatching
    async def _run(self) -> None:
        """Dispatch flushes: up to ``max_in_flight`` statements at once while the database is
        up (each on its own pooled connection); one at a time, with backoff, while it is down.
        While someone waits for a write (a claim, a synchronous finish) a flush starts at once;
        writes nobody waits for are gathered for up to :data:`FLUSH_INTERVAL`."""
        while True:
            self._promote()
            if self.down:
                if await self._step_while_down():
                    return
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

    async def _step_while_down(self) -> bool:
        """One statement (or, with nothing to write, one probe) while the database is down,
        after the statements in flight ended; backs off after a failure. True: closing and
        done (or the database still down), the dispatcher stops."""
        await self._idle.wait()
        batch = self._take()
        if not batch:
            if self._closing and not self._queue and not self._held:
                return True
            if self._queue or self._held:
                await self._wait_for_work()
                return False
            # Nothing to write: probe, so claims resume once the database is back.
            await asyncio.sleep(self._backoff.next())
            await self._probe()
            return False
        if await self._flush_guarded(batch):
            return False
        if self._closing:
            return True
        await asyncio.sleep(self._backoff.next())
        return False

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

    # ------------------------------------------------------------------ one statement
    async def _flush(self, batch: list[Op]) -> None:
        """The mode's statement for ``batch``, counted; every op not answered yet is
        answered ``None`` (written)."""
        await self._write(batch)
        self.flushes += 1
        self.ops_flushed += len(batch)
        for op in batch:
            if op.future is not None and not op.future.done():
                op.future.set_result(None)

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
            self._back_up()
        return True

    async def _probe(self) -> bool:
        """``SELECT 1``; True (and no longer down) when the database answers."""
        try:
            await self._pool.fetchval("SELECT 1", timeout=self._timeout)
        except Exception as exc:
            if not is_outage(exc):
                log.warning("database probe failed", error=str(exc))
            return False
        log.info("database reachable again; claims resumed")
        self._back_up()
        return True

    def _back_up(self) -> None:
        """The database answers again: the outage is over, the next one backs off from the start."""
        self.down = False
        self._backoff.reset()

    async def _isolate(self, batch: list[Op], exc: Exception) -> bool:
        """``batch`` failed with ``exc``, a statement error: bisect it, so one bad row costs
        about 2·log2(len(batch)) statements instead of one per op, write every half that
        succeeds and reject only single ops that fail on their own. False when the database
        became unreachable meanwhile (the ops not yet written or rejected are re-queued)."""
        pending: list[tuple[list[Op], Exception]] = [(batch, exc)]
        while pending:
            part, error = pending.pop()
            if len(part) == 1:
                self._rejected(part, error)
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

    def _rejected(self, batch: list[Op], exc: Exception) -> None:
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
                if op.fails_fast:
                    op.future.set_exception(DatabaseUnavailable(f"{op.kind} rejected: {_first_line(exc)}"))
                    op.future.exception()
                else:
                    op.future.set_result(None)

    def _outage(self, batch: list[Op], exc: BaseException) -> None:
        """The database is unreachable: ``batch``'s fail-fast ops fail, the others are held
        (their waiters released) ahead of newer work, in order."""
        if not self.down:
            log.warning(
                "database unreachable; holding history writes, running without claims",
                error=str(exc) or type(exc).__name__,
            )
        self.down = True
        keep: list[Op] = []
        for op in batch:
            if op.fails_fast:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(DatabaseUnavailable(str(exc) or type(exc).__name__))
                    op.future.exception()
                continue
            if op.future is not None and not op.future.done():
                op.future.set_result(None)
            op.future = None
            keep.append(op)
        for op in reversed(keep):
            self._queue.appendleft(op)
