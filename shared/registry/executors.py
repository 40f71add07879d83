"""Executors: how a registry function that is not a Python built-in runs, by ``execution_type``.

Each worker has its own :class:`Executors` table among its resources; the worker package that
implements an execution type adds its executor there from its extension (``workers/oci``,
``workers/http``). A function whose type has no executor in this worker fails with
``backend_unavailable``.
"""

from __future__ import annotations

from typing import Any, Protocol

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext, Handler
from shared.registry.models import FunctionRecord
from shared.resources import Resources

__all__ = [
    "Executor",
    "Executors",
    "executor_handler",
    "missing_builtin_handler",
]


class Executor(Protocol):
    """Runs one execution of ``function`` (an ``oci`` or ``http`` row) with validated input.

    Same contract as a built-in handler: return JSON-serialisable output, raise
    :class:`~shared.errors.ExecutionFailed` with a stable code, or
    :class:`~shared.errors.Retry`.
    """

    async def execute(self, function: FunctionRecord, data: Any, ctx: ExecutionContext) -> Any: ...


class Executors:
    """One worker's executors by ``execution_type`` (a resource: ``ctx.resources.get(Executors)``)."""

    __slots__ = ("_by_type",)

    def __init__(self) -> None:
        self._by_type: dict[str, Executor] = {}

    @classmethod
    def of(cls, resources: Resources) -> Executors:
        """The worker's table, provided first by whichever extension asks first."""
        executors = resources.find(cls)
        if executors is None:
            executors = cls()
            resources.provide(cls, executors)
        return executors

    def add(self, execution_type: str, executor: Executor) -> None:
        self._by_type[execution_type] = executor

    def get(self, execution_type: str) -> Executor | None:
        return self._by_type.get(execution_type)


def executor_handler(record: FunctionRecord) -> Handler:
    """A handler for ``record`` that finds its executor when called (so an executor registered
    after the function was cached still serves it)."""

    async def handler(data: Any, ctx: ExecutionContext) -> Any:
        executors = ctx.resources.find(Executors)
        executor = executors.get(record.execution_type) if executors is not None else None
        if executor is None:
            raise ExecutionFailed(
                f"no {record.execution_type} executor in this worker for {record.slug}",
                code=ErrorCode.BACKEND_UNAVAILABLE,
                retryable=True,
                details={"execution_type": record.execution_type},
            )
        return await executor.execute(record, data, ctx)

    return handler


def missing_builtin_handler(slug: str) -> Handler:
    """The handler of a built-in the registry knows but this process did not import."""

    async def handler(data: Any, ctx: ExecutionContext) -> Any:
        raise ExecutionFailed(
            f"built-in {slug} is not installed in this worker",
            code=ErrorCode.BACKEND_UNAVAILABLE,
            retryable=True,
            details={"execution_type": "builtin"},
        )

    return handler
