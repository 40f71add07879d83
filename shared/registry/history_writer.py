"""The batch writer with claims in Redis: the execution-history table only, written off the
hot path, on the core of :mod:`shared.registry.writer`.

Its operations, all in one upsert of one JSON document (``jsonb_to_recordset``: one parameter
for asyncpg to encode, and each result's JSON text embedded as it is, not parsed and encoded
again):

``open``    the execution's row as ``running`` — not awaited, and held back
            :data:`~shared.registry.writer.START_DELAY`: an execution that finishes sooner is
            written once, final, and its running row is never even built; after a retry
            (:meth:`HistoryWriter.released`) the row is ``pending`` again;
``finish``  its final row (``completed``/``failed``) — not awaited unless ``FLEET_HISTORY_SYNC``.

A final row is never overwritten (the first final result wins, as in the Redis claim store); a
row written under a claim (``lease_token``) is only overwritten by a write under a claim, or
once its lease has expired — so a duplicate's failure does not replace the running
execution's row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from shared.registry.database import jsonb_safe
from shared.registry.writer import BatchWriter, Finish, FinishRecord, Op

__all__ = ["HistoryWriter", "Open"]


@dataclass(slots=True, kw_only=True, eq=False)
class Open(Op):
    """The execution's row before its result: ``running`` (or ``pending`` after a retry)."""

    kind: ClassVar[str] = "open"

    lease_seconds: float = 0.0
    status: str = "running"
    #: the rest of the row, built only if the op is written (not superseded by its finish).
    row: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)

    def document(self) -> dict[str, Any]:
        """The row as the statement reads it (a release carries no row: the rest is kept)."""
        document: dict[str, Any] = self.row() if self.row is not None else {"id": self.id}
        document.update(status=self.status, token=self.token, lease_s=self.lease_seconds)
        return document


def _finish_document(f: FinishRecord) -> dict[str, Any]:
    return {
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


# $1: the rows as one JSON array (Open.document / _finish_document), $2: the owner.
_SQL = """
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


class HistoryWriter(BatchWriter):
    """History rows only, claims being in Redis (module docstring); the queueing, batching and
    outage handling are :class:`~shared.registry.writer.BatchWriter`'s."""

    def open(
        self, execution_id: str, token: str, *, lease_seconds: float, row: Callable[[], dict[str, Any]]
    ) -> None:
        """The claimed execution runs: its ``running`` row, held back (not awaited). ``row``
        gives the rest of the row; it is called only if the row is written."""
        op = Open(id=execution_id, token=token, lease_seconds=lease_seconds, row=row)
        if not self._no_room_for(op):
            self._hold(op)

    def released(self, execution_id: str, token: str) -> None:
        """The claim was given back (a Retry): the row is ``pending`` again. A running row
        still held back is written once, as pending."""
        op = Open(id=execution_id, token=token, status="pending")
        if self._no_room_for(op):
            return
        held = self._held.get(execution_id)
        if isinstance(held, Open):
            held.status, held.lease_seconds = "pending", 0.0
            self._hold(held)
            return
        self._put(op)

    async def _write(self, batch: list[Op]) -> None:
        rows = [
            _finish_document(op.record) if isinstance(op, Finish) else op.document()
            for op in batch
            if isinstance(op, Finish | Open)
        ]
        document = jsonb_safe(orjson.dumps(rows).decode())
        await self._pool.execute(_SQL, document, self.owner, timeout=self._timeout)
