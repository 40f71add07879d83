"""Built-ins into the registry: the code is the source of truth for what a built-in *is*
(name, schemas, timeout, credentials); the operator decides whether it runs (``is_enabled``)."""

from __future__ import annotations

from typing import Any

from shared.functions import BUILTINS, FunctionSpec, FunctionTable
from shared.registry.repository import BuiltinRow, FunctionRepository, SyncReport

__all__ = ["PERMISSIVE_SCHEMA", "builtin_row", "sync_builtins"]

#: The input schema of a built-in without an input model (the diagnostics' echo): any object.
PERMISSIVE_SCHEMA: dict[str, Any] = {"type": "object"}


def builtin_row(spec: FunctionSpec) -> BuiltinRow:
    """The registry's view of an in-code built-in; schemas from its pydantic models."""
    input_schema = spec.input_model.model_json_schema() if spec.input_model else dict(PERMISSIVE_SCHEMA)
    output_schema = spec.output_model.model_json_schema() if spec.output_model else None
    return BuiltinRow(
        slug=spec.slug,
        name=spec.name,
        description=spec.description,
        domain=spec.domain,
        input_schema=input_schema,
        output_schema=output_schema,
        timeout_seconds=spec.timeout_seconds,
        credentials=tuple(spec.credentials),
        tags=tuple(spec.tags),
    )


async def sync_builtins(db: Any, table: FunctionTable = BUILTINS) -> SyncReport:
    """Upsert every built-in of ``table`` (those imported in this process) into ``functions``."""
    return await FunctionRepository(db).sync_builtins([builtin_row(spec) for spec in table])
