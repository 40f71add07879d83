"""Exactly-once effect and execution history, as middleware + a result recorder.

:class:`ClaimMiddleware` claims the execution (the request id) before anything runs:

* new (or its earlier claim's lease expired: the worker died) → this worker runs it;
* already final → :class:`~shared.runtime.middleware.Answer` with the stored result data,
  republished verbatim: the function is not run again;
* running under a live lease elsewhere → :class:`~shared.errors.Defer` (redelivered later,
  never run concurrently, and not counted as a delivery);
* claim store unreachable: Redis → the delivery is retried (the broker is down too);
  PostgreSQL → run without a claim (at-least-once; logged once per outage).

:class:`HistoryRecorder` stores every result's final data before it is published and acked.

Where claims live is a :class:`Claims` backend: :class:`RedisClaims` (claims and stored
results in Redis, history written to PostgreSQL off the hot path by a
:class:`~shared.registry.history_writer.HistoryWriter` — the default whenever the worker has a
Redis URL) or :class:`DatabaseClaims` (everything in PostgreSQL through a
:class:`~shared.registry.claims_writer.ClaimsWriter`, for workers that only reach a Dapr
sidecar).

Leases: the middleware asks for the call's timeout + the lease margin, the longest a claim may
be held. Redis claims take a short lease instead and renew it while the process lives (see
``shared.registry.claims``), so a dead worker's claim lapses within two thirds of
``FLEET_PROCESSING_TIMEOUT``; database claims hold the whole lease (not renewed): a dead
worker's execution waits for it to expire.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from shared.credentials import SecretRegistry
from shared.errors import Defer, Retry
from shared.registry.claims import ClaimResult, RedisClaimStore
from shared.registry.claims_writer import Claim, ClaimsWriter
from shared.registry.database import json_text, jsonb_safe
from shared.registry.history_writer import HistoryWriter
from shared.registry.writer import DatabaseUnavailable, FinishRecord
from shared.runtime.middleware import Answer, Call, CallNext

__all__ = ["ClaimMiddleware", "Claims", "DatabaseClaims", "HistoryRecorder", "RedisClaims"]

log = structlog.get_logger("fleet.history")

#: ``call.state`` key of the lease token this call holds (``None``: ran without a claim).
CLAIM_TOKEN = "claim_token"
#: ``call.state`` key of the attempt number the claim gave this run.
CLAIM_ATTEMPT = "claim_attempt"


def _scrub(call: Call | None, value: Any) -> Any:
    """``value`` scrubbed of the secrets of the worker running ``call`` (its ``ctx.resources``)."""
    secrets = call.ctx.resources.find(SecretRegistry) if call is not None else None
    return secrets.scrub_value(value) if secrets else value


class Claims(Protocol):
    """Where claims and final results are kept (see module docstring)."""

    #: the lease holder's name, ``<group>/<consumer>/<process token>``.
    owner: str
    #: True when a won claim already stored the input with the row (the finish need not).
    claim_stores_input: bool

    async def claim(self, call: Call, token: str, lease_seconds: float) -> ClaimResult:
        """Claim ``call``'s execution for at most ``lease_seconds`` (a backend may hold a
        shorter lease it renews). Raises DatabaseUnavailable to run it unclaimed."""
        ...

    def started(self, call: Call, token: str) -> None:
        """The claimed function starts now."""

    def released(self, call: Call, token: str, *, counted: bool = True) -> None:
        """The claim is given back (a Retry, or cancelled before an answer); ``counted=False``
        when the run never started (a deferral): the next claim is then this attempt again."""

    async def finish(self, record: FinishRecord) -> None:
        """Record the final result; InfrastructureError: do not publish it."""

    async def flush(self) -> None:
        """Make every result recorded so far durable as a duplicate's answer (before the
        results are published); InfrastructureError: not now, try again."""


class DatabaseClaims:
    """Claims, leases and final results in PostgreSQL, through the claims writer."""

    claim_stores_input = True

    def __init__(self, writer: ClaimsWriter) -> None:
        self._writer = writer
        self.owner = writer.owner

    async def claim(self, call: Call, token: str, lease_seconds: float) -> ClaimResult:
        ctx = call.ctx
        claim = Claim(
            id=ctx.execution_id,
            token=token,
            function_id=call.spec.function_id,
            slug=call.spec.slug,
            workflow_execution_id=ctx.workflow_execution_id,
            node_id=ctx.node_id,
            input=_scrub(call, call.event.data.input),
            attempt=ctx.attempt,
            lease_seconds=lease_seconds,
            started_at=datetime.now(UTC),
        )
        return await self._writer.claim(claim)

    def started(self, call: Call, token: str) -> None:
        self._writer.started(call.ctx.execution_id, token)

    def released(self, call: Call, token: str, *, counted: bool = True) -> None:
        self._writer.released(call.ctx.execution_id, token, counted=counted)

    async def finish(self, record: FinishRecord) -> None:
        await self._writer.finish(record)

    async def flush(self) -> None:
        pass  # finish() waited for the row


class RedisClaims:
    """Claims and stored results in Redis (:class:`~shared.registry.claims.RedisClaimStore`,
    which renews the claims it holds until their results are stored); the history rows go to
    PostgreSQL through the history writer without holding up the result, unless ``sync``
    (``FLEET_HISTORY_SYNC``): then each result waits for its row."""

    claim_stores_input = False

    def __init__(self, store: RedisClaimStore, writer: HistoryWriter, *, sync: bool = False) -> None:
        self._store = store
        self._writer = writer
        self._sync = sync
        self.owner = store.owner
        #: results recorded and not yet stored: ``(execution id, claim token, result JSON)``.
        self._unstored: list[tuple[str, str | None, str]] = []
        #: True once the transport stores them in its settle (:meth:`stage`).
        self.staged_in_settle = False

    async def claim(self, call: Call, token: str, lease_seconds: float) -> ClaimResult:
        ctx = call.ctx
        claim = await self._store.claim(ctx.execution_id, token, lease_seconds, ctx.attempt)
        if claim.won:
            # The history row, held back by the writer: a quick execution is written once,
            # final, and this row is never even built.
            opened, attempt = time.time(), claim.attempt

            def row() -> dict[str, Any]:
                return {
                    "id": ctx.execution_id,
                    "function_id": call.spec.function_id,
                    "slug": call.spec.slug,
                    "wf": ctx.workflow_execution_id,
                    "node": ctx.node_id,
                    "input": _scrub(call, call.event.data.input),
                    "attempt": attempt,
                    "opened": opened,
                }

            self._writer.open(ctx.execution_id, token, lease_seconds=lease_seconds, row=row)
        return claim

    def started(self, call: Call, token: str) -> None:
        pass  # the row is opened as running

    def released(self, call: Call, token: str, *, counted: bool = True) -> None:
        self._store.release(call.ctx.execution_id, token, counted=counted)
        self._writer.released(call.ctx.execution_id, token)

    async def finish(self, record: FinishRecord) -> None:
        # Refused before the result is stored: a stored result is answered as a duplicate
        # (and not recorded again), so its history row must be accepted with it.
        self._writer.check_room()
        self._unstored.append((record.id, record.token, record.result_json))
        await self._writer.finish(record, wait=self._sync, admitted=True)

    def stage(self, pipe: Any) -> tuple[int, Callable[[list[Any] | None], None]] | None:
        """The Redis transport's settle prelude (``shared.transports.redis_streams``): the
        results recorded so far are stored in the settle's own ``MULTI … EXEC``, so a result
        is stored, published and acked in one step (and one round trip). Once this is wired,
        :meth:`flush` has nothing left to do."""
        if not self._unstored:
            return None
        items, self._unstored = self._unstored, []
        self._store.queue_store(pipe, items)

        def done(replies: list[Any] | None) -> None:
            if replies is None:
                self._unstored[:0] = items  # the settle failed: offered again, in order
                return
            self._store.forget(items)
            self._log_not_stored(items, [bool(r) for r in replies[0]])

        return 1, done

    async def flush(self) -> None:
        # One script call per settled batch instead of a round trip (and a suspension) per
        # result; the settle loop publishes the batch only after this returned. One pass: what
        # is recorded meanwhile belongs to a later batch (waiting for it would hold this one).
        if self._unstored and not self.staged_in_settle:
            items, self._unstored = self._unstored, []
            try:
                kept = await self._store.store_many(items)
            except BaseException:
                self._unstored[:0] = items  # kept for the retry, in order
                raise
            self._log_not_stored(items, kept)

    @staticmethod
    def _log_not_stored(items: list[tuple[str, str | None, str]], kept: list[bool]) -> None:
        if not all(kept):
            log.info(
                "another final result was stored first; this one is published, not stored",
                execution_ids=[item[0] for item, ok in zip(items, kept, strict=True) if not ok],
            )


class ClaimMiddleware:
    """Claims each execution before it runs (module docstring).

    Parameters:
        claims: where claims live (:class:`RedisClaims` or :class:`DatabaseClaims`).
        lease_margin: seconds added to the call's timeout: the longest a claim is held.
    """

    def __init__(self, claims: Claims, *, lease_margin: float = 30.0) -> None:
        self.claims = claims
        self._margin = lease_margin
        # Executions running in this process: a duplicate delivered here is never run
        # alongside (a lease cannot tell two calls of one owner apart).
        self._running: set[str] = set()
        # Unique per claim: a random per-process prefix and a counter (cheaper than a uuid4).
        self._tokens = map(f"{uuid.uuid4().hex[:8]}{{:x}}".format, itertools.count())
        self._outage_logged = False
        self.answered = 0
        self.deferred = 0

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        execution_id = call.ctx.execution_id
        if execution_id in self._running:
            self.deferred += 1
            raise Defer(
                f"execution {execution_id} is already running in this worker", cause="duplicate_running"
            )
        token = next(self._tokens)
        # Taken before the first await: a duplicate arriving meanwhile sees it at once.
        self._running.add(execution_id)
        claimed = True
        try:
            claim = await self.claims.claim(call, token, call.timeout + self._margin)
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
                raise Defer(
                    f"execution {execution_id} is already running elsewhere ({claim.lease_owner})",
                    cause="duplicate_running",
                )
            if claim.taken_over:
                log.info("took over an expired claim", execution_id=execution_id, function=call.spec.slug)
            call.state[CLAIM_ATTEMPT] = claim.attempt
        call.state[CLAIM_TOKEN] = token if claimed else None
        if claimed:
            self.claims.started(call, token)
        try:
            return await call_next(call)
        except Defer:
            # Deferred by a layer inside (a limit): the function never started, so this was no
            # attempt. Give the lease back uncounted: the redelivery runs as this attempt.
            if claimed:
                self.claims.released(call, token, counted=False)
            raise
        except (Retry, asyncio.CancelledError):
            # Not answered: give the lease back so the redelivery may run at once.
            if claimed:
                self.claims.released(call, token)
            raise
        finally:
            self._running.discard(execution_id)


class HistoryRecorder:
    """The worker's :class:`~shared.runtime.middleware.ResultRecorder`: stores each result
    (scrubbed of secret values) as the execution's final state before it is published."""

    def __init__(self, claims: Claims) -> None:
        self._claims = claims

    async def record(
        self, data: dict[str, Any], call: Call | None, *, answered: bool, data_json: bytes | None = None
    ) -> None:
        execution_id = data.get("execution_id")
        if answered or not execution_id:
            return  # a republished stored result is already there; no id: nothing to key on
        token = call.state.get(CLAIM_TOKEN) if call else None
        attempt = int(data.get("attempt") or 1)
        if call is not None:
            attempt = max(attempt, call.state.get(CLAIM_ATTEMPT, 1))
        record = FinishRecord(
            id=execution_id,
            function_id=call.spec.function_id if call else None,
            slug=str(data.get("function") or ""),
            workflow_execution_id=call.ctx.workflow_execution_id if call else None,
            node_id=call.ctx.node_id if call else None,
            status=data["status"],
            # Sent only for rows the finish may create (a database claim stored it already).
            input=(
                _scrub(call, call.event.data.input)
                if call and not (token and self._claims.claim_stores_input)
                else None
            ),
            # What was published, encoded once by the worker (secrets already scrubbed).
            result_json=jsonb_safe(data_json.decode())
            if data_json is not None
            else json_text(_scrub(call, data)),
            attempt=attempt,
            started_at=data.get("started_at"),
            completed_at=data.get("completed_at"),
            duration_ms=data.get("duration_ms"),
            worker=data.get("worker"),
            token=token,
        )
        await self._claims.finish(record)

    async def before_settle(self) -> None:
        await self._claims.flush()
