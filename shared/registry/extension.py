"""The registry joins a worker as one extension: functions from PostgreSQL, every execution
claimed (exactly-once) and recorded (history). The worked example of docs/developing.md.

* built from the worker's settings (``FLEET_DATABASE_URL`` and the claim settings), so the chain
  can be composed up front;
* middleware at three slots: ``ADMISSION`` (deprecation warnings), ``CLAIM`` (exactly-once,
  answers duplicates with the stored result) and ``SCHEMA`` (the function's JSON Schema);
* its :attr:`resolver` and :attr:`recorder` are the worker's (``shared/assemble.py`` hands them
  over);
* :meth:`attach` lets the claim store join the transport's settle step when it can;
* :meth:`start` migrates, syncs built-ins, and starts the cache listener, the history writer
  and the pruner (retrying while the database is down); :meth:`stop` flushes and closes them
  after the worker has drained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.functions import BUILTINS, FunctionTable
from shared.registry.resolver import DeprecationMiddleware, RegistryResolver
from shared.registry.runtime import RegistryRuntime
from shared.runtime.extension import BaseExtension, Slot, WorkerContext
from shared.runtime.metrics import Metrics
from shared.runtime.middleware import Middleware, ResultRecorder
from shared.settings import Settings
from shared.transports.base import Transport
from shared.validation import SchemaValidationMiddleware

__all__ = ["RegistryExtension"]


class RegistryExtension(BaseExtension):
    """The registry side of one worker (see module docstring)."""

    name = "registry"

    def __init__(self, settings: Settings, *, worker_name: str, table: FunctionTable = BUILTINS) -> None:
        self.runtime = RegistryRuntime(settings, worker_name=worker_name, table=table)
        self._opened = False

    @property
    def resolver(self) -> RegistryResolver:
        return self.runtime.resolver

    @property
    def recorder(self) -> ResultRecorder:
        return self.runtime.recorder

    def middleware(self) -> Mapping[Slot, Middleware]:
        return {
            Slot.ADMISSION: DeprecationMiddleware(),
            Slot.CLAIM: self.runtime.claims,
            Slot.SCHEMA: SchemaValidationMiddleware(),
        }

    def attach(self, transport: Transport) -> None:
        self.runtime.attach(transport)

    async def start(self, ctx: WorkerContext) -> bool:
        self._opened = True
        metrics = ctx.resources.find(Metrics)
        if metrics is not None:
            self._count_into(metrics)
        return await self.runtime.open(ctx.stopping)

    def health(self) -> Mapping[str, Any]:
        """``ok``, or ``degraded`` while the database is unreachable (history is buffered, the
        worker keeps serving: it stays ready); ``starting`` until the registry opened."""
        writer = self.runtime.writer
        state = "starting" if self.runtime.pool is None else "degraded" if writer.down else "ok"
        return {"state": state, "history_buffered": writer.pending}

    def _count_into(self, metrics: Metrics) -> None:
        # Read at scrape time only: the writer is not slowed down by being watched.
        writer = self.runtime.writer
        metrics.add_gauge(
            "fleet_history_buffer_operations",
            "History operations not yet written to PostgreSQL (queued or held back).",
            lambda: [({}, writer.pending)],
        )
        metrics.add_gauge(
            "fleet_history_write_failures",
            "History rows PostgreSQL rejected (logged, not written).",
            lambda: [({}, writer.rejected_rows)],
            kind="counter",
        )
        metrics.add_gauge(
            "fleet_history_database_up",
            "1 while the history writer reaches PostgreSQL, 0 during an outage.",
            lambda: [({}, 0 if writer.down else 1)],
        )
        store = self.runtime.claim_store
        if store is not None:
            store.timer = metrics.observe_claim_call

    async def stop(self) -> None:
        if self._opened:
            await self.runtime.close()
