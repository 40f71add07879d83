"""What the console shows, read from the registry, the history, Redis and code.

Every function returns JSON-ready values (what ``/api/v1`` answers and the templates render),
so a page and its API endpoint can never disagree. Nothing here formats HTML.
"""

from __future__ import annotations

import base64
import difflib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.functions import FunctionTable
from shared.registry.models import FunctionRecord
from shared.registry.repository import FunctionRepository
from shared.retry import effective_policy
from shared.settings import Settings

__all__ = [
    "EXECUTION_STATUSES",
    "BadInput",
    "ExecutionFilters",
    "FunctionFilters",
    "builtin_functions",
    "decode_cursor",
    "encode_cursor",
    "execution_detail",
    "function_detail",
    "function_stats",
    "function_versions",
    "list_executions",
    "list_functions",
    "percentile",
    "version_diff",
]

EXECUTION_STATUSES = ("pending", "running", "completed", "failed")
#: Executions the function page's success rate and percentiles cover.
STATS_WINDOW = 200
#: Rows per executions page, unless the query asks for fewer (at most :data:`MAX_PAGE`).
DEFAULT_PAGE, MAX_PAGE = 50, 500
#: Fields of a definition whose values may carry secrets: shown by name only.
MASKED_MAPS = ("webhook_headers", "container_env")


class BadInput(ValueError):
    """A query parameter or body the console refuses; ``field`` names what was wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def masked(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the values of header/env maps replaced (their names kept)."""
    out = dict(document)
    for key in MASKED_MAPS:
        value = out.get(key)
        if isinstance(value, dict):
            out[key] = dict.fromkeys(value, "•••")
    return out


def record_json(record: FunctionRecord) -> dict[str, Any]:
    return masked(record.to_json())


# ---------------------------------------------------------------------------------- functions
@dataclass(frozen=True, slots=True)
class FunctionFilters:
    domain: str | None = None
    execution_type: str | None = None
    enabled: bool | None = None
    deprecated: bool | None = None
    tag: str | None = None
    q: str | None = None

    @classmethod
    def parse(cls, query: Any) -> FunctionFilters:
        def flag(name: str) -> bool | None:
            raw = (query.get(name) or "").strip().lower()
            if raw in ("", "any"):
                return None
            if raw in ("true", "yes", "1"):
                return True
            if raw in ("false", "no", "0"):
                return False
            raise BadInput(f"{name} must be true or false", name)

        def text(name: str) -> str | None:
            raw = (query.get(name) or "").strip()
            if len(raw) > 200:
                raise BadInput(f"{name} is longer than 200 characters", name)
            return raw or None

        execution_type = text("execution_type")
        if execution_type is not None and execution_type not in ("builtin", "oci", "http"):
            raise BadInput("execution_type must be builtin, oci or http", "execution_type")
        return cls(
            domain=text("domain"),
            execution_type=execution_type,
            enabled=flag("enabled"),
            deprecated=flag("deprecated"),
            tag=text("tag"),
            q=text("q"),
        )

    def matches(self, f: dict[str, Any]) -> bool:
        if self.domain is not None and (f["domain"] or "all") != self.domain:
            return False
        if self.execution_type is not None and f["execution_type"] != self.execution_type:
            return False
        if self.enabled is not None and f["is_enabled"] != self.enabled:
            return False
        if self.deprecated is not None and f["is_deprecated"] != self.deprecated:
            return False
        if self.tag is not None and self.tag not in f["tags"]:
            return False
        if self.q is not None:
            needle = self.q.lower()
            hay = " ".join([f["slug"], f["name"], f["description"], *f["tags"]]).lower()
            if needle not in hay:
                return False
        return True

    def as_query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in ("domain", "execution_type", "tag", "q"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in ("enabled", "deprecated"):
            value = getattr(self, name)
            if value is not None:
                out[name] = "true" if value else "false"
        return out


_LIST_FIELDS = (
    "id",
    "slug",
    "name",
    "description",
    "domain",
    "execution_type",
    "version",
    "tags",
    "is_builtin",
    "is_enabled",
    "is_deprecated",
    "updated_at",
)


def builtin_functions(table: FunctionTable) -> list[dict[str, Any]]:
    """The built-ins this process knows, in the registry's shape (no database needed)."""
    from shared.registry.sync import builtin_row

    out = []
    for spec in table:
        row = builtin_row(spec)
        out.append(
            {
                "id": None,
                "slug": row.slug,
                "name": row.name,
                "description": row.description,
                "plugin_id": row.slug.split("/", 1)[0],
                "version": spec.version,
                "domain": row.domain,
                "execution_type": "builtin",
                "input_schema": row.input_schema,
                "output_schema": row.output_schema,
                "timeout_seconds": row.timeout_seconds,
                "retry_policy": row.retry_policy,
                "max_concurrency": row.max_concurrency,
                "concurrency_key": row.concurrency_key,
                "rate_limit": row.rate_limit,
                "credentials": list(row.credentials),
                "tags": list(row.tags),
                "is_builtin": True,
                "is_enabled": True,
                "is_deprecated": spec.is_deprecated,
                "updated_at": None,
            }
        )
    return sorted(out, key=lambda f: f["slug"])


async def list_functions(db: Any, table: FunctionTable, filters: FunctionFilters) -> dict[str, Any]:
    """Functions matching ``filters`` (registry when ``db``, else this process's built-ins),
    with counts over all of them (by domain, type, state) for the filter bar."""
    if db is not None:
        rows = await db.fetch(f"SELECT {', '.join(_LIST_FIELDS)} FROM functions ORDER BY slug")
        every = [{k: _iso(v) for k, v in dict(r).items()} for r in rows]
        for f in every:
            f["id"] = str(f["id"])
            f["tags"] = list(f["tags"] or ())
    else:
        every = [{k: f[k] for k in _LIST_FIELDS} for f in builtin_functions(table)]
    shown = [f for f in every if filters.matches(f)]
    counts: dict[str, dict[str, int]] = {"domain": {}, "execution_type": {}, "tag": {}}
    for f in every:
        for key in ("domain", "execution_type"):
            name = f[key] or "all"
            counts[key][name] = counts[key].get(name, 0) + 1
        for tag in f["tags"]:
            counts["tag"][tag] = counts["tag"].get(tag, 0) + 1
    return {
        "source": "registry" if db is not None else "code",
        "total": len(every),
        "matched": len(shown),
        "enabled": sum(1 for f in every if f["is_enabled"]),
        "deprecated": sum(1 for f in every if f["is_deprecated"]),
        "counts": {k: dict(sorted(v.items())) for k, v in counts.items()},
        "filters": filters.as_query(),
        "functions": shown,
    }


async def function_detail(
    db: Any, table: FunctionTable, slug: str, settings: Settings
) -> dict[str, Any] | None:
    """One function (registry, else this process's built-ins) with its effective retry policy;
    ``None`` when there is none by that slug."""
    if db is not None:
        record = await FunctionRepository(db).get(slug)
        if record is None:
            return None
        function = record_json(record)
    else:
        found = [f for f in builtin_functions(table) if f["slug"] == slug]
        if not found:
            return None
        function = found[0]
    try:
        policy = effective_policy(function.get("retry_policy"), settings).as_document()
    except ValueError:  # a row written around the validation: show it, do not fail the page
        policy = None
    function["effective_retry_policy"] = policy
    function["editable"] = not function["is_builtin"] and db is not None
    return function


async def credential_status(keys: list[str], settings: Settings, pool: Any = None) -> list[dict[str, Any]]:
    """Per key: whether it resolves on this machine, through which source (the sources a worker
    here would use, the secret store in ``pool``'s database last), and whether the store holds
    it. Values are looked up and dropped, never returned."""
    from shared.credentials import CredentialResolver
    from shared.errors import ExecutionFailed
    from shared.registry.secrets import DatabaseSecretSource, SecretStore

    if not keys:
        return []
    store = DatabaseSecretSource(settings.model_copy(update={"secrets_cache_ttl": 0}), lambda: pool)
    resolver = CredentialResolver.from_settings(settings, store=store if pool is not None else None)
    stored: set[str] | None = None
    if pool is not None:
        try:
            stored = await SecretStore(pool, None, settings).stored(keys)
        except Exception:  # an older schema or an outage: the store's part is unknown
            stored = None
    out = []
    try:
        for key in keys:
            status: dict[str, Any] = {"name": key, "resolves": False, "source": None, "problem": None}
            for source in resolver.sources:
                try:
                    value = await source.get(key)
                except ExecutionFailed as exc:  # stored but not decryptable here: says why
                    status.update(resolves=False, problem=exc.message)
                    break
                except Exception:  # a source that cannot answer (no sidecar): unknown, not an error
                    status.update(resolves=None)
                    break
                if value:
                    status.update(resolves=True, source=source.name)
                    break
            status["stored"] = None if stored is None else key in stored
            out.append(status)
    finally:
        await resolver.close()
    return out


def percentile(values: list[float], p: float) -> float | None:
    finite = sorted(v for v in values if v is not None and math.isfinite(v))
    if not finite:
        return None
    return finite[max(math.ceil(p / 100 * len(finite)), 1) - 1]


async def function_stats(db: Any, slug: str) -> dict[str, Any]:
    """The latest executions of ``slug`` (the function index, newest first) with the success
    rate and p50/p99 of the finished ones."""
    rows = await db.fetch(
        f"""SELECT {_EXECUTION_LIST} FROM function_executions WHERE function_slug = $1
            ORDER BY created_at DESC LIMIT {STATS_WINDOW}""",
        slug,
    )
    recent = [_execution_row(r) for r in rows]
    finished = [r for r in recent if r["status"] in ("completed", "failed")]
    durations = [r["duration_ms"] for r in finished if r["duration_ms"] is not None]
    ok = sum(1 for r in finished if r["status"] == "completed")
    return {
        "window": len(recent),
        "finished": len(finished),
        "success_rate": round(ok / len(finished), 4) if finished else None,
        "p50_ms": percentile(durations, 50),
        "p99_ms": percentile(durations, 99),
        "recent": recent[:20],
    }


async def function_versions(db: Any, function_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT version, created_at FROM function_versions WHERE function_id = $1::uuid "
        "ORDER BY version DESC",
        function_id,
    )
    return [{"version": r["version"], "created_at": _iso(r["created_at"])} for r in rows]


async def version_diff(db: Any, function_id: str, a: int, b: int) -> dict[str, Any] | None:
    """A unified diff of versions ``a`` → ``b`` of a function's definition (masked maps);
    ``None`` when either version was not kept."""
    rows = await db.fetch(
        "SELECT version, definition FROM function_versions "
        "WHERE function_id = $1::uuid AND version = ANY($2)",
        function_id,
        [a, b],
    )
    found = {r["version"]: masked(r["definition"]) for r in rows}
    if a not in found or b not in found:
        return None

    def lines(v: int) -> list[str]:
        return json.dumps(found[v], indent=2, sort_keys=True, default=str).splitlines()

    diff = list(difflib.unified_diff(lines(a), lines(b), f"version {a}", f"version {b}", lineterm=""))
    return {"from": a, "to": b, "lines": diff}


# --------------------------------------------------------------------------------- executions
_EXECUTION_LIST = (
    "id, function_slug, workflow_execution_id, node_id, status, attempt, started_at, completed_at, "
    "duration_ms, worker, error->>'code' AS error_code, created_at"
)


def _execution_row(row: Any) -> dict[str, Any]:
    return {k: _iso(v) for k, v in dict(row).items()}


def encode_cursor(created_at: str, execution_id: str) -> str:
    raw = json.dumps([created_at, execution_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, execution_id = json.loads(raw)
        return datetime.fromisoformat(created_at), str(execution_id)
    except (ValueError, TypeError):
        raise BadInput("cursor is not one this console gave out", "cursor") from None


def _time(query: Any, name: str) -> datetime | None:
    raw = (query.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{name} must be an ISO 8601 time (2024-05-01T12:00:00Z)", name) from None
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True, slots=True)
class ExecutionFilters:
    function: str | None = None
    status: str | None = None
    error_code: str | None = None
    workflow_execution_id: str | None = None
    node_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_PAGE
    cursor: tuple[datetime, str] | None = None
    cursor_text: str | None = None

    @classmethod
    def parse(cls, query: Any) -> ExecutionFilters:
        def text(name: str) -> str | None:
            raw = (query.get(name) or "").strip()
            if len(raw) > 200:
                raise BadInput(f"{name} is longer than 200 characters", name)
            return raw or None

        status = text("status")
        if status is not None and status not in EXECUTION_STATUSES:
            raise BadInput(f"status must be one of {', '.join(EXECUTION_STATUSES)}", "status")
        raw_limit = text("limit")
        limit = DEFAULT_PAGE
        if raw_limit is not None:
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
                raise BadInput(f"limit must be a whole number from 1 to {MAX_PAGE}", "limit")
            limit = int(raw_limit)
        cursor_text = text("cursor")
        since, until = _time(query, "since"), _time(query, "until")
        if since is not None and until is not None and until < since:
            raise BadInput("until is before since", "until")
        return cls(
            function=text("function"),
            status=status,
            error_code=text("error_code"),
            workflow_execution_id=text("workflow_execution_id"),
            node_id=text("node_id"),
            since=since,
            until=until,
            limit=limit,
            cursor=decode_cursor(cursor_text) if cursor_text else None,
            cursor_text=cursor_text,
        )

    def as_query(self, **changes: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in ("function", "status", "error_code", "workflow_execution_id", "node_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat()
        if self.limit != DEFAULT_PAGE:
            out["limit"] = str(self.limit)
        out.update({k: v for k, v in changes.items() if v is not None})
        return out


async def list_executions(db: Any, filters: ExecutionFilters) -> dict[str, Any]:
    """One page of history newest first, by keyset on ``(created_at, id)`` (the index of
    migration 0005 read backwards): the page after ``cursor`` costs the same at any depth."""
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.function is not None:
        where.append(f"function_slug = {arg(filters.function)}")
    if filters.status is not None:
        where.append(f"status = {arg(filters.status)}")
    if filters.error_code is not None:
        where.append(f"error->>'code' = {arg(filters.error_code)}")
    if filters.workflow_execution_id is not None:
        where.append(f"workflow_execution_id = {arg(filters.workflow_execution_id)}")
    if filters.node_id is not None:
        where.append(f"node_id = {arg(filters.node_id)}")
    if filters.since is not None:
        where.append(f"created_at >= {arg(filters.since)}")
    if filters.until is not None:
        where.append(f"created_at < {arg(filters.until)}")
    if filters.cursor is not None:
        at, execution_id = filters.cursor
        where.append(f"(created_at, id) < ({arg(at)}, {arg(execution_id)})")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await db.fetch(
        f"""SELECT {_EXECUTION_LIST} FROM function_executions {clause}
            ORDER BY created_at DESC, id DESC LIMIT {filters.limit + 1}""",
        *args,
    )
    page = [_execution_row(r) for r in rows[: filters.limit]]
    after = None
    if len(rows) > filters.limit:
        last = rows[filters.limit - 1]
        after = encode_cursor(last["created_at"].isoformat(), last["id"])
    return {"filters": filters.as_query(), "executions": page, "next_cursor": after}


async def execution_detail(db: Any, execution_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(
        """SELECT id, function_slug, function_id, workflow_execution_id, node_id, status, attempt,
                  started_at, completed_at, duration_ms, worker, input, output, error, result,
                  created_at, updated_at
           FROM function_executions WHERE id = $1""",
        execution_id,
    )
    if row is None:
        return None
    out = _execution_row(row)
    if out["function_id"] is not None:
        out["function_id"] = str(out["function_id"])
    result = out.pop("result") or {}
    out["trace_id"] = _trace_id(result)
    return out


def _trace_id(result: dict[str, Any]) -> str | None:
    """The trace id a result carries (W3C ``traceparent`` = version-traceid-spanid-flags)."""
    for key in ("traceparent", "trace_id"):
        value = result.get(key) if isinstance(result, dict) else None
        if isinstance(value, str) and value:
            parts = value.split("-")
            return parts[1] if key == "traceparent" and len(parts) == 4 else value
    return None
