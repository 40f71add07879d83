"""Built-ins into the registry: the code is the source of truth for what a built-in *is*
(name, schemas, timeout, credentials); the operator decides whether it runs (``is_enabled``)."""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import BaseModel, PydanticUserError

from shared.functions import BUILTINS, FunctionSpec, FunctionTable
from shared.registry.repository import BuiltinRow, FunctionRepository, SyncReport

__all__ = ["PERMISSIVE_SCHEMA", "builtin_row", "sync_builtins"]

log = structlog.get_logger("fleet.registry")

#: The input schema of a built-in without an input model (the diagnostics' echo): any object.
PERMISSIVE_SCHEMA: dict[str, Any] = {"type": "object"}


def _schema(model: type[BaseModel] | None, slug: str) -> dict[str, Any] | None:
    if model is None:
        return None
    try:
        return model.model_json_schema()
    except PydanticUserError as exc:  # a type with no JSON Schema: pydantic still validates it
        log.warning(
            "built-in model has no JSON Schema; the registry keeps none", function=slug, error=str(exc)
        )
        return None


def builtin_row(spec: FunctionSpec) -> BuiltinRow:
    """The registry's view of an in-code built-in; schemas from its pydantic models (a model
    pydantic cannot describe as JSON Schema gets the permissive schema / none)."""
    input_schema = _schema(spec.input_model, spec.slug) or dict(PERMISSIVE_SCHEMA)
    output_schema = _schema(spec.output_model, spec.slug)
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
        retry_policy=spec.retry_policy.as_document() if spec.retry_policy is not None else None,
        max_concurrency=spec.max_concurrency,
        concurrency_key=spec.concurrency_key,
        rate_limit=spec.rate_limit.as_document() if spec.rate_limit is not None else None,
    )


async def sync_builtins(db: Any, table: FunctionTable = BUILTINS) -> SyncReport:
    """Upsert every built-in of ``table`` (those imported in this process) into ``functions``."""
    return await FunctionRepository(db).sync_builtins([builtin_row(spec) for spec in table])
