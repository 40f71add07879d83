"""The batch writer with claims in PostgreSQL: the exactly-once effect of a worker that reaches
no Redis (e.g. a Dapr-only worker), on the core of :mod:`shared.registry.writer`.

Its operations, all in one statement (data-modifying CTEs over ``unnest()`` arrays, one array
per column of each kind):

``claim``   take the execution (insert ``pending`` with a lease, or take over an expired
            lease; a final row's state is returned instead) — awaited, answers a
            :class:`~shared.registry.claims.ClaimResult`; fails fast while the database is down
            (the caller runs the execution unclaimed);
``start``   mark the claimed execution ``running`` — not awaited, held back
            :data:`~shared.registry.writer.START_DELAY` (a quick finish supersedes it);
``release`` give the lease back (a Retry) — not awaited; an uncounted release (a deferral: the
            function never started) takes its attempt back, so the next claim is that
            attempt again;
``finish``  store the final result — awaited while the database is up. Written by the claim's
            holder; by anyone once the row's lease is gone or expired; never over a live lease
            of another worker (e.g. a duplicate's dead-letter failure, or a worker whose
            expired claim was taken over) or a final row of another claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from shared.registry.claims import ClaimResult
from shared.registry.writer import BatchWriter, DatabaseUnavailable, Finish, FinishRecord, Op, opt_json

__all__ = ["Claim", "ClaimsWriter", "Release", "Start"]


@dataclass(slots=True, kw_only=True, eq=False)
class Claim(Op):
    """Take the execution for ``lease_seconds`` (see module docstring)."""

    kind: ClassVar[str] = "claim"
    fails_fast: ClassVar[bool] = True
    #: the statement's ``claim_in`` columns, in order.
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id", "function_id", "slug", "wf", "node", "input", "attempt", "lease_s", "token", "started_at",
    )  # fmt: skip

    function_id: str | None = None
    slug: str = ""
    workflow_execution_id: str | None = None
    node_id: str | None = None
    input: Any = None
    attempt: int = 1
    lease_seconds: float = 0.0
    started_at: datetime | None = None

    def columns(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.function_id,
            self.slug,
            self.workflow_execution_id,
            self.node_id,
            opt_json(self.input),
            self.attempt,
            self.lease_seconds,
            self.token,
            self.started_at,
        )


@dataclass(slots=True, kw_only=True, eq=False)
class Start(Op):
    """The claimed execution runs now (held back; superseded by a quick finish)."""

    kind: ClassVar[str] = "start"
    COLUMNS: ClassVar[tuple[str, ...]] = ("id", "token")

    def columns(self) -> tuple[Any, ...]:
        return (self.id, self.token)


@dataclass(slots=True, kw_only=True, eq=False)
class Release(Op):
    """The claim is given back (a Retry): the redelivery may take it at once. ``counted``:
    the run was an attempt (False for a deferral, which never started the function)."""

    kind: ClassVar[str] = "release"
    COLUMNS: ClassVar[tuple[str, ...]] = ("id", "token", "counted")

    counted: bool = True

    def columns(self) -> tuple[Any, ...]:
        return (self.id, self.token, self.counted)


#: The statement's ``finish_in`` columns, in order (:func:`_finish_columns`).
FINISH_COLUMNS = (
    "id", "function_id", "slug", "wf", "node", "status", "input", "result", "attempt",
    "started_at", "completed_at", "duration_ms", "worker", "token",
)  # fmt: skip


def _finish_columns(f: FinishRecord) -> tuple[Any, ...]:
    return (
        f.id,
        f.function_id,
        f.slug,
        f.workflow_execution_id,
        f.node_id,
        f.status,
        opt_json(f.input),
        f.result_json,
        f.attempt,
        f.started_at,
        f.completed_at,
        f.duration_ms,
        f.worker,
        f.token,
    )


def _arrays(rows: Sequence[tuple[Any, ...]], columns: Sequence[str]) -> list[list[Any]]:
    """Rows → one array per column, what ``unnest()`` takes (empty arrays for no rows)."""
    if not rows:
        return [[] for _ in columns]
    return [list(column) for column in zip(*rows, strict=True)]


# $1-$10: claims (Claim.COLUMNS), $11: the owner, $12-$13: starts, $14-$16: releases,
# $17-$30: finishes (FINISH_COLUMNS). Answers one row per claim.
_SQL = """
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
    SET status = 'pending', lease_owner = NULL, lease_expires_at = now(), updated_at = now(),
        attempt = CASE WHEN r.counted THEN fe.attempt ELSE GREATEST(fe.attempt - 1, 0) END
    FROM unnest($14::text[], $15::text[], $16::bool[]) AS r(id, token, counted)
    WHERE fe.id = r.id AND fe.lease_token = r.token AND fe.status IN ('pending', 'running')
    RETURNING fe.id
),
finish_in AS (
    SELECT t.*, t.result::jsonb AS r
    FROM unnest($17::text[], $18::uuid[], $19::text[], $20::text[], $21::text[], $22::text[],
                $23::text[], $24::text[], $25::int[], $26::text[], $27::text[],
                $28::float8[], $29::text[], $30::text[])
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


class ClaimsWriter(BatchWriter):
    """Claims, leases and final rows in PostgreSQL (module docstring); the queueing, batching
    and outage handling are :class:`~shared.registry.writer.BatchWriter`'s."""

    async def claim(self, claim: Claim) -> ClaimResult:
        """Queue a claim and wait for its statement. Raises :class:`DatabaseUnavailable` at
        once while the database is known to be down, or when the statement fails for that
        reason (the caller then runs without a claim)."""
        if self.down or self._closing:
            raise DatabaseUnavailable("database unreachable; running without a claim")
        result: ClaimResult = await self._put_and_wait(claim)
        return result

    def started(self, execution_id: str, token: str) -> None:
        """The claimed execution runs now: ``running``, held back (not awaited)."""
        op = Start(id=execution_id, token=token)
        if not self._no_room_for(op):
            self._hold(op)

    def released(self, execution_id: str, token: str, *, counted: bool = True) -> None:
        """Give the lease back (not awaited); ``counted=False``: the run never started."""
        op = Release(id=execution_id, token=token, counted=counted)
        if self._no_room_for(op):
            return
        self._held.pop(execution_id, None)  # the start was never written: the release says it all
        self._put(op)

    async def _write(self, batch: list[Op]) -> None:
        claims = [op for op in batch if isinstance(op, Claim)]
        starts = [op.columns() for op in batch if isinstance(op, Start)]
        releases = [op.columns() for op in batch if isinstance(op, Release)]
        finishes = [_finish_columns(op.record) for op in batch if isinstance(op, Finish)]
        rows = await self._pool.fetch(
            _SQL,
            *_arrays([c.columns() for c in claims], Claim.COLUMNS),
            self.owner,
            *_arrays(starts, Start.COLUMNS),
            *_arrays(releases, Release.COLUMNS),
            *_arrays(finishes, FINISH_COLUMNS),
            timeout=self._timeout,
        )
        answers = {r["id"]: r for r in rows if r["id"] is not None}
        for claim in claims:
            if claim.future is None or claim.future.done():
                continue
            row = answers.get(claim.id)
            if row is None:  # cannot happen: every claim id is in claim_in
                claim.future.set_exception(DatabaseUnavailable("claim not answered"))
                claim.future.exception()
                continue
            claim.future.set_result(
                ClaimResult(
                    won=bool(row["won"]),
                    status=row["status"],
                    result=row["result"],
                    lease_owner=row["lease_owner"],
                    # A released row has no lease owner: claimed again, not taken over.
                    taken_over=bool(row["won"]) and bool(row["existed"]) and row["lease_owner"] is not None,
                )
            )
