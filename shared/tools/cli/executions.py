"""`fleet executions …`: execution history (list, show, prune)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from shared.tools.cli.common import echo_json, echo_table, run
from shared.tools.cli.db import database_option, open_database, resolve_database
from shared.tools.cli.options import home_option

__all__ = ["executions"]

STATUSES = ("pending", "running", "completed", "failed")
json_option = click.option(
    "--json", "as_json", is_flag=True, help="JSON for scripts (tables are for people)."
)
_LIST_COLUMNS = (
    "id, function_slug, function_id, workflow_execution_id, node_id, status, attempt, started_at, "
    "completed_at, duration_ms, worker, error->>'code' AS error_code, created_at"
)


def _jsonable(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dict(row).items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif key == "function_id" and value is not None:
            value = str(value)
        out[key] = value
    return out


@click.group()
def executions() -> None:
    """Execution history: every request a registry worker answered."""


@executions.command("list")
@database_option
@home_option
@click.option("--function", "function", help="Only this function (slug).")
@click.option("--status", type=click.Choice(STATUSES), help="Only this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Newest first.")
@json_option
def list_(
    database_url: str | None,
    home: str | None,
    function: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List executions, newest first."""
    settings = resolve_database(database_url, home)

    async def main() -> list[Any]:
        async with open_database(settings) as connection:
            rows: list[Any] = await connection.fetch(
                f"""SELECT {_LIST_COLUMNS} FROM function_executions
                    WHERE ($1::text IS NULL OR function_slug = $1) AND ($2::text IS NULL OR status = $2)
                    ORDER BY created_at DESC, id LIMIT $3""",
                function,
                status,
                limit,
            )
            return rows

    rows = [_jsonable(r) for r in run(main())]
    if as_json:
        echo_json(rows)
        return
    echo_table(
        [
            (
                r["id"],
                r["function_slug"],
                r["status"],
                r["error_code"] or "",
                r["attempt"],
                r["started_at"] or "",
                "" if r["duration_ms"] is None else f"{r['duration_ms']:.1f}",
            )
            for r in rows
        ],
        ["ID", "FUNCTION", "STATUS", "ERROR", "ATTEMPT", "STARTED", "MS"],
    )


@executions.command()
@click.argument("execution_id")
@database_option
@home_option
@json_option
def show(execution_id: str, database_url: str | None, home: str | None, as_json: bool) -> None:
    """Show one execution: input, output or error, timings, the stored result."""
    settings = resolve_database(database_url, home)

    async def main() -> Any:
        async with open_database(settings) as connection:
            return await connection.fetchrow(
                """SELECT id, function_slug, function_id, workflow_execution_id, node_id, status,
                          attempt, started_at, completed_at, duration_ms, worker, input, output,
                          error, result, lease_owner, lease_expires_at, created_at, updated_at
                   FROM function_executions WHERE id = $1""",
                execution_id,
            )

    row = run(main())
    if row is None:
        raise click.ClickException(f"no execution {execution_id!r}")
    data = _jsonable(row)
    if as_json:
        echo_json(data)
        return
    import json

    width = max(len(k) for k in data)
    for key, value in data.items():
        if value is None or key == "result":
            continue
        text = json.dumps(value, indent=2) if isinstance(value, dict | list) else str(value)
        click.echo(f"{key:<{width}}  {text.replace(chr(10), chr(10) + ' ' * (width + 2))}")


@executions.command()
@database_option
@home_option
@click.option(
    "--older-than-days",
    type=float,
    envvar="FLEET_HISTORY_RETENTION_DAYS",
    show_envvar=True,
    help="Delete history older than this (default: the retention setting).",
)
def prune(database_url: str | None, home: str | None, older_than_days: float | None) -> None:
    """Delete execution history older than the retention (also ends its deduplication)."""
    from shared.registry.database import create_pool
    from shared.registry.retention import prune as prune_history

    settings = resolve_database(database_url, home)
    days = older_than_days if older_than_days is not None else settings.history_retention_days

    async def main() -> int:
        pool = await create_pool(settings.database_url or "", timeout=settings.database_timeout)
        try:
            return await prune_history(pool, days) or 0
        finally:
            await pool.close()

    deleted = run(main())
    click.echo(f"deleted {deleted} executions older than {days:g} days")
