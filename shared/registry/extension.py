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

from shared.functions import BUILTINS, FunctionTable
from shared.registry.resolver import DeprecationMiddleware, RegistryResolver
from shared.registry.runtime import RegistryRuntime
from shared.runtime.extension import BaseExtension, Slot, WorkerContext
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
        return await self.runtime.open(ctx.stopping)

    async def stop(self) -> None:
        if self._opened:
            await self.runtime.close()
