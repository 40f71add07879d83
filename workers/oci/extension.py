"""The OCI executor joins a worker as one extension.

* built from the worker's settings: a setting no execution could run with raises
  :class:`~shared.errors.ConfigError` when the worker is built (:func:`check_settings`);
* :meth:`OciExtension.start` adds the worker's own :class:`OciExecutor` to the worker's
  :class:`~shared.registry.executors.Executors` (providing that table when no other extension
  has), so the registry runs every ``oci`` row with it;
* :meth:`OciExtension.stop` closes it once the worker has drained (in-flight Job cleanups are
  awaited). Another worker of the same process keeps its own executor.
"""

from __future__ import annotations

from shared.registry.executors import Executors
from shared.runtime.extension import BaseExtension, WorkerContext
from shared.settings import Settings
from workers.oci.executor import OciExecutor

__all__ = ["EXECUTION_TYPE", "OciExtension"]

#: The ``execution_type`` of the registry rows this extension runs.
EXECUTION_TYPE = "oci"


class OciExtension(BaseExtension):
    """One worker's OCI executor (see module docstring)."""

    name = "oci"

    def __init__(self, settings: Settings) -> None:
        self.executor = OciExecutor(settings)

    async def start(self, ctx: WorkerContext) -> bool:
        Executors.of(ctx.resources).add(EXECUTION_TYPE, self.executor)
        return True

    async def stop(self) -> None:
        await self.executor.close()
