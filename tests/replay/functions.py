"""Test-only built-ins, each table its own: a worker built with ``resolver=<table>`` runs them,
and two tables can give the same slug two behaviours (the "changed function" of a release)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.errors import ExecutionFailed, Retry
from shared.functions import ExecutionContext, FunctionTable, builtin

GREET = "replaytest/greet"
COUNT = "replaytest/count"
FLAKY = "replaytest/flaky"


def greeting_table(word: str) -> FunctionTable:
    """``replaytest/greet``: ``{"greeting": f"{word} {name}"}``; an empty name fails ``empty_name``."""
    table = FunctionTable()

    @builtin(GREET, domain=None, table=table, timeout_seconds=10)
    async def greet(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
        if not data.get("name"):
            raise ExecutionFailed("no name to greet", code="empty_name")
        return {"greeting": f"{word} {data['name']}"}

    return table


@dataclass
class Counter:
    """Counts executions of ``replaytest/count`` (the side effect a duplicate would repeat)."""

    runs: list[str] = field(default_factory=list)
    table: FunctionTable = field(default_factory=FunctionTable)

    def __post_init__(self) -> None:
        @builtin(COUNT, domain=None, table=self.table, timeout_seconds=10)
        async def count(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
            self.runs.append(ctx.execution_id)
            return {"n": data.get("n")}


@dataclass
class Flaky:
    """``replaytest/flaky`` asks for redelivery until ``fixed`` (a poison request, then a fix)."""

    fixed: bool = False
    table: FunctionTable = field(default_factory=FunctionTable)

    def __post_init__(self) -> None:
        @builtin(FLAKY, domain=None, table=self.table, timeout_seconds=10)
        async def flaky(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
            if not self.fixed:
                raise Retry("flaky is broken")
            return {"ok": True, "attempt": ctx.attempt}
