"""Exactly-once effect and execution history, as middleware + a result recorder.

:class:`ClaimMiddleware` claims the execution (the request id) before anything runs:

* new (or its earlier claim's lease expired: the worker died) → this worker runs it;
* already final → :class:`~shared.runtime.middleware.Answer` with the stored result data,
  republished verbatim: the function is not run again;
* running under a live lease elsewhere → :class:`~shared.errors.Retry` (redelivered later,
  never run concurrently);
* database unreachable → run without a claim (at-least-once; logged once per outage).

:class:`HistoryRecorder` stores every result's final data before it is published and acked.
Both go through the worker's one :class:`~shared.executions.writer.BatchWriter`.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog

from shared.credentials import SECRETS
from shared.errors import Retry
from shared.executions.writer import BatchWriter, DatabaseUnavailable, FinishRecord, Op
from shared.runtime.middleware import Answer, Call, CallNext

__all__ = ["ClaimMiddleware", "HistoryRecorder", "parse_time"]

log = structlog.get_logger("fleet.history")

#: ``call.state`` key of the lease token this call holds (``None``: ran without a claim).
CLAIM_TOKEN = "claim_token"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _scrub(value: Any) -> Any:
    return SECRETS.scrub_value(value) if SECRETS else value


class ClaimMiddleware:
    """Claims each execution before it runs (module docstring).

    Parameters:
        writer: the worker's batch writer (its ``owner`` names the lease holder).
        lease_margin: seconds added to the call's timeout to make the lease.
    """

    def __init__(self, writer: BatchWriter, *, lease_margin: float = 30.0) -> None:
        self._writer = writer
        self._margin = lease_margin
        # Executions running in this process: a duplicate delivered here is never run
        # alongside (the database lease cannot tell two calls of one owner apart).
        self._running: set[str] = set()
        self._outage_logged = False
        self.answered = 0
        self.deferred = 0

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        execution_id = call.ctx.execution_id
        if execution_id in self._running:
            self.deferred += 1
            raise Retry(f"execution {execution_id} is already running in this worker")
        token = uuid.uuid4().hex
        op = Op(
            kind="claim",
            id=execution_id,
            token=token,
            function_id=call.spec.function_id,
            slug=call.spec.slug,
            workflow_execution_id=call.ctx.workflow_execution_id,
            node_id=call.ctx.node_id,
            input=_scrub(call.event.data.input),
            attempt=call.ctx.attempt,
            lease_seconds=call.timeout + self._margin,
            started_at=datetime.now(UTC),
        )
        # Taken before the first await: a duplicate arriving meanwhile sees it at once.
        self._running.add(execution_id)
        claimed = True
        try:
            claim = await self._writer.claim(op)
        except DatabaseUnavailable as exc:
            claimed = False
            if not self._outage_logged:
                self._outage_logged = True
                log.warning("cannot claim executions; running them unclaimed (at-least-once)", error=str(exc))
        except BaseException:
            self._running.discard(execution_id)
            raise
        else:
            self._outage_logged = False
            if not claim.won:
                self._running.discard(execution_id)
                if claim.status in ("completed", "failed") and claim.result is not None:
                    self.answered += 1
                    return Answer(claim.result)
                self.deferred += 1
                raise Retry(f"execution {execution_id} is already running elsewhere ({claim.lease_owner})")
            if claim.taken_over:
                log.info("took over an expired claim", execution_id=execution_id, function=call.spec.slug)
        call.state[CLAIM_TOKEN] = token if claimed else None
        if claimed:
            self._writer.submit(Op(kind="start", id=execution_id, token=token))
        try:
            return await call_next(call)
        except (Retry, asyncio.CancelledError):
            # Not answered: give the lease back so the redelivery may run at once.
            if claimed:
                self._writer.submit(Op(kind="release", id=execution_id, token=token))
            raise
        finally:
            self._running.discard(execution_id)


class HistoryRecorder:
    """The worker's :class:`~shared.runtime.middleware.ResultRecorder`: stores each result
    (scrubbed of secret values) as the execution's final state before it is published."""

    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer

    async def record(self, data: dict[str, Any], call: Call | None, *, answered: bool) -> None:
        execution_id = data.get("execution_id")
        if answered or not execution_id:
            return  # a republished stored result is already there; no id: nothing to key on
        scrubbed = _scrub(data)
        record = FinishRecord(
            id=execution_id,
            function_id=call.spec.function_id if call else None,
            slug=str(data.get("function") or ""),
            workflow_execution_id=call.ctx.workflow_execution_id if call else None,
            node_id=call.ctx.node_id if call else None,
            status=data["status"],
            # A won claim stored the input already (the finish keeps it): send it only for rows
            # the finish creates, instead of encoding and shipping it twice per execution.
            input=_scrub(call.event.data.input) if call and not call.state.get(CLAIM_TOKEN) else None,
            output=scrubbed.get("output"),
            error=scrubbed.get("error"),
            result=scrubbed,
            attempt=int(data.get("attempt") or 1),
            started_at=parse_time(data.get("started_at")),
            completed_at=parse_time(data.get("completed_at")),
            duration_ms=data.get("duration_ms"),
            worker=data.get("worker"),
            token=call.state.get(CLAIM_TOKEN) if call else None,
        )
        await self._writer.finish(record)
