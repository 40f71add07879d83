"""SQL for the ``functions`` table: load, list, register, enable/disable, sync built-ins.

Every write fires the ``functions_notify`` trigger, so running workers drop their cached copy
(``shared/registry/resolver.py``) whoever made the change (CLI, another worker, plain psql).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from shared.registry.models import FunctionDefinition, FunctionRecord

__all__ = ["BuiltinRow", "FunctionRepository", "SyncReport"]

_COLUMNS = "*"


def _is_uuid(key: str) -> bool:
    try:
        uuid.UUID(key)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class BuiltinRow:
    """What code declares about a built-in (the part of a ``functions`` row code owns)."""

    slug: str
    name: str
    description: str
    domain: str | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    timeout_seconds: float | None
    credentials: tuple[str, ...]
    tags: tuple[str, ...]
    retry_policy: dict[str, Any] | None = None
    max_concurrency: int | None = None
    concurrency_key: str | None = None
    rate_limit: dict[str, Any] | None = None


@dataclass(slots=True)
class SyncReport:
    inserted: list[str]
    updated: list[str]
    unchanged: list[str]
    #: slugs taken by a registered (non-built-in) function: left alone.
    conflicts: list[str]


class FunctionRepository:
    """Queries on ``functions`` over an asyncpg pool or connection (anything with ``fetch``,
    ``fetchrow``, ``execute``)."""

    def __init__(self, db: Any) -> None:
        self._db = db

    async def get(self, key: str) -> FunctionRecord | None:
        """The function whose slug (or id) is ``key``."""
        if _is_uuid(key):
            row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM functions WHERE id = $1::uuid", key)
        else:
            row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM functions WHERE slug = $1", key)
        return FunctionRecord.from_row(row) if row is not None else None

    async def list_all(self, domain: str | None = None) -> list[FunctionRecord]:
        """Every function, by slug; with ``domain``, those its worker serves (including the
        diagnostics every domain serves)."""
        if domain is None:
            rows = await self._db.fetch(f"SELECT {_COLUMNS} FROM functions ORDER BY slug")
        else:
            rows = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM functions WHERE domain = $1 OR domain IS NULL ORDER BY slug", domain
            )
        return [FunctionRecord.from_row(r) for r in rows]

    async def set_enabled(self, key: str, enabled: bool) -> FunctionRecord | None:
        record = await self.get(key)
        if record is None:
            return None
        row = await self._db.fetchrow(
            "UPDATE functions SET is_enabled = $2, updated_at = now() WHERE id = $1::uuid RETURNING *",
            record.id,
            enabled,
        )
        return FunctionRecord.from_row(row) if row is not None else None

    async def set_deprecated(self, key: str, deprecated: bool) -> FunctionRecord | None:
        record = await self.get(key)
        if record is None:
            return None
        row = await self._db.fetchrow(
            "UPDATE functions SET is_deprecated = $2, updated_at = now() WHERE id = $1::uuid RETURNING *",
            record.id,
            deprecated,
        )
        return FunctionRecord.from_row(row) if row is not None else None

    async def register(
        self, definition: FunctionDefinition, *, created_by: str | None = None
    ) -> tuple[FunctionRecord, str]:
        """Insert or update an oci/http function by slug; returns ``(record, action)`` with
        action ``created``, ``updated`` (version bumped) or ``unchanged``. ``is_enabled`` is the
        operator's and is kept. Refuses (ValueError) to replace a built-in."""
        existing = await self.get(definition.slug)
        if existing is not None and existing.is_builtin:
            raise ValueError(f"{definition.slug} is a built-in; built-ins come from code")
        d = definition
        values = (
            d.display_name,
            d.slug,
            d.description,
            d.plugin_id,
            d.domain,
            d.execution_type,
            d.image_ref,
            d.command,
            d.working_dir,
            d.container_env,
            d.webhook_url,
            d.webhook_method,
            d.webhook_headers,
            d.webhook_timeout_seconds,
            d.input_schema,
            d.output_schema,
            d.timeout_seconds,
            d.retry_policy,
            d.max_concurrency,
            list(d.credentials),
            list(d.tags),
            d.is_deprecated,
            created_by,
            d.resources.model_dump(exclude_none=True) if d.resources is not None else None,
            d.concurrency_key,
            d.rate_limit,
        )
        row = await self._db.fetchrow(
            """
            INSERT INTO functions AS f (name, slug, description, plugin_id, domain, execution_type,
                image_ref, command, working_dir, container_env, webhook_url, webhook_method,
                webhook_headers, webhook_timeout_seconds, input_schema, output_schema,
                timeout_seconds, retry_policy, max_concurrency, credentials, tags, is_deprecated,
                is_builtin, created_by, resources, concurrency_key, rate_limit)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, $20, $21, $22, false, $23, $24, $25, $26)
            ON CONFLICT (slug) DO UPDATE SET
                name = EXCLUDED.name, description = EXCLUDED.description,
                plugin_id = EXCLUDED.plugin_id, domain = EXCLUDED.domain,
                execution_type = EXCLUDED.execution_type, image_ref = EXCLUDED.image_ref,
                command = EXCLUDED.command, working_dir = EXCLUDED.working_dir,
                container_env = EXCLUDED.container_env, webhook_url = EXCLUDED.webhook_url,
                webhook_method = EXCLUDED.webhook_method, webhook_headers = EXCLUDED.webhook_headers,
                webhook_timeout_seconds = EXCLUDED.webhook_timeout_seconds,
                input_schema = EXCLUDED.input_schema, output_schema = EXCLUDED.output_schema,
                timeout_seconds = EXCLUDED.timeout_seconds, retry_policy = EXCLUDED.retry_policy,
                max_concurrency = EXCLUDED.max_concurrency, credentials = EXCLUDED.credentials,
                tags = EXCLUDED.tags, is_deprecated = EXCLUDED.is_deprecated,
                resources = EXCLUDED.resources, concurrency_key = EXCLUDED.concurrency_key,
                rate_limit = EXCLUDED.rate_limit,
                version = f.version + 1, updated_at = now()
            WHERE NOT f.is_builtin AND (f.name, f.description, f.domain, f.execution_type, f.image_ref,
                f.command, f.working_dir, f.container_env, f.webhook_url, f.webhook_method,
                f.webhook_headers, f.webhook_timeout_seconds, f.input_schema, f.output_schema,
                f.timeout_seconds, f.retry_policy, f.max_concurrency, f.credentials, f.tags,
                f.is_deprecated, f.resources, f.concurrency_key, f.rate_limit)
              IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.description, EXCLUDED.domain,
                EXCLUDED.execution_type, EXCLUDED.image_ref, EXCLUDED.command, EXCLUDED.working_dir,
                EXCLUDED.container_env, EXCLUDED.webhook_url, EXCLUDED.webhook_method,
                EXCLUDED.webhook_headers, EXCLUDED.webhook_timeout_seconds, EXCLUDED.input_schema,
                EXCLUDED.output_schema, EXCLUDED.timeout_seconds, EXCLUDED.retry_policy,
                EXCLUDED.max_concurrency, EXCLUDED.credentials, EXCLUDED.tags, EXCLUDED.is_deprecated,
                EXCLUDED.resources, EXCLUDED.concurrency_key, EXCLUDED.rate_limit)
            RETURNING *, (xmax = 0) AS inserted
            """,
            *values,
        )
        if row is None:
            current = await self.get(definition.slug)
            if current is None or current.is_builtin:  # raced with a sync or a delete
                raise ValueError(f"{definition.slug} could not be registered; try again")
            return current, "unchanged"
        return FunctionRecord.from_row(row), "created" if row["inserted"] else "updated"

    async def sync_builtins(self, builtins: list[BuiltinRow]) -> SyncReport:
        """Upsert ``builtins`` by slug. Code-owned fields follow the code; ``version`` goes up
        when a schema changes; ``is_enabled``/``is_deprecated`` (the operator's) are never
        touched. Safe to run from several workers at once (row locks order the upserts)."""
        report = SyncReport([], [], [], [])
        for b in builtins:
            row = await self._db.fetchrow(
                """
                INSERT INTO functions AS f (name, slug, description, plugin_id, domain, execution_type,
                    input_schema, output_schema, timeout_seconds, credentials, tags, retry_policy,
                    max_concurrency, concurrency_key, rate_limit, is_builtin, created_by)
                VALUES ($1, $2, $3, $4, $5, 'builtin', $6, $7, $8, $9, $10, $11, $12, $13, $14,
                    true, 'sync')
                ON CONFLICT (slug) DO UPDATE SET
                    name = EXCLUDED.name, description = EXCLUDED.description,
                    plugin_id = EXCLUDED.plugin_id, domain = EXCLUDED.domain,
                    input_schema = EXCLUDED.input_schema, output_schema = EXCLUDED.output_schema,
                    timeout_seconds = EXCLUDED.timeout_seconds, credentials = EXCLUDED.credentials,
                    tags = EXCLUDED.tags, retry_policy = EXCLUDED.retry_policy,
                    max_concurrency = EXCLUDED.max_concurrency,
                    concurrency_key = EXCLUDED.concurrency_key, rate_limit = EXCLUDED.rate_limit,
                    version = f.version + CASE
                        WHEN f.input_schema IS DISTINCT FROM EXCLUDED.input_schema
                          OR f.output_schema IS DISTINCT FROM EXCLUDED.output_schema THEN 1 ELSE 0 END,
                    updated_at = now()
                WHERE f.is_builtin AND (f.name, f.description, f.plugin_id, f.domain, f.input_schema,
                        f.output_schema, f.timeout_seconds, f.credentials, f.tags, f.retry_policy,
                        f.max_concurrency, f.concurrency_key, f.rate_limit)
                    IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.description, EXCLUDED.plugin_id,
                        EXCLUDED.domain, EXCLUDED.input_schema, EXCLUDED.output_schema,
                        EXCLUDED.timeout_seconds, EXCLUDED.credentials, EXCLUDED.tags,
                        EXCLUDED.retry_policy, EXCLUDED.max_concurrency, EXCLUDED.concurrency_key,
                        EXCLUDED.rate_limit)
                RETURNING (xmax = 0) AS inserted
                """,
                b.name,
                b.slug,
                b.description,
                b.slug.split("/", 1)[0],
                b.domain,
                b.input_schema,
                b.output_schema,
                b.timeout_seconds,
                list(b.credentials),
                list(b.tags),
                b.retry_policy,
                b.max_concurrency,
                b.concurrency_key,
                b.rate_limit,
            )
            if row is not None:
                (report.inserted if row["inserted"] else report.updated).append(b.slug)
                continue
            builtin_flag = await self._db.fetchval("SELECT is_builtin FROM functions WHERE slug = $1", b.slug)
            (report.unchanged if builtin_flag else report.conflicts).append(b.slug)
        return report
