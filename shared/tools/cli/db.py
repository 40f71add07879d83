"""`fleet db …`: the registry database (migrations). Also the one import `main.py` needs for
the registry's command groups (`fleet functions`, `fleet executions`) and their shared
helpers: finding the database (flag, ``FLEET_DATABASE_URL``, or a running `fleet up`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import click

from shared.settings import Settings
from shared.tools.cli.common import echo_json, echo_table, make_settings, read_up_state, run
from shared.tools.cli.options import home_option

__all__ = ["database_option", "db", "open_database", "resolve_database"]

F = TypeVar("F", bound=Callable[..., Any])


def database_option(f: F) -> F:
    return click.option(
        "--database-url",
        envvar="FLEET_DATABASE_URL",
        show_envvar=True,
        default=None,
        help="PostgreSQL URL. Default: the one a running `fleet up` uses.",
    )(f)


def resolve_database(database_url: str | None, home: str | None) -> Settings:
    """Settings whose ``database_url`` is the flag/env value or that of a running `fleet up`."""
    settings = make_settings(database_url=database_url, home=home)
    if settings.database_url:
        return settings
    state = read_up_state(settings.home)
    if state and state.get("database_url"):
        return settings.model_copy(update={"database_url": state["database_url"]})
    raise click.UsageError(
        "no database: set FLEET_DATABASE_URL / --database-url, or start `fleet up` in another terminal"
    )


@contextlib.asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Any]:
    """One connection to the registry database; outages and a missing schema become clear
    CLI errors instead of tracebacks."""
    import asyncpg

    from shared.registry.database import connect, is_outage

    url = settings.database_url or ""
    try:
        connection = await connect(url, timeout=settings.database_timeout)
    except Exception as exc:
        if is_outage(exc) or isinstance(exc, asyncpg.PostgresError):
            raise click.ClickException(f"database unreachable: {exc}") from None
        raise
    try:
        yield connection
    except asyncpg.UndefinedTableError:
        raise click.ClickException(
            "the database has no registry tables yet: run `fleet db migrate`"
        ) from None
    finally:
        await connection.close()


@click.group()
def db() -> None:
    """The registry database: migrations."""


@db.command()
@database_option
@home_option
def migrate(database_url: str | None, home: str | None) -> None:
    """Apply pending schema migrations (safe to run while workers run, and concurrently)."""
    from shared.registry.migrator import migrate as apply

    settings = resolve_database(database_url, home)
    applied = run(apply(settings.database_url or "", log_applied=False))
    if applied:
        for m in applied:
            click.echo(f"applied {m.version:04d}_{m.name}")
    else:
        click.echo("up to date")


@db.command()
@database_option
@home_option
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def status(database_url: str | None, home: str | None, as_json: bool) -> None:
    """Which migrations are applied."""
    from shared.registry.migrator import available_migrations

    settings = resolve_database(database_url, home)

    async def main() -> dict[int, Any]:
        async with open_database(settings) as connection:
            exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not exists:
                return {}
            rows = await connection.fetch("SELECT version, applied_at FROM schema_migrations")
            return {r["version"]: r["applied_at"] for r in rows}

    applied = run(main())
    rows = [
        {"version": m.version, "name": m.name, "applied_at": applied.get(m.version)}
        for m in available_migrations()
    ]
    if as_json:
        echo_json(rows)
    else:
        echo_table(
            [(f"{r['version']:04d}", r["name"], r["applied_at"] or "pending") for r in rows],
            ["VERSION", "NAME", "APPLIED"],
        )


def __getattr__(name: str) -> click.Group:
    """``functions`` / ``executions``: the registry's other command groups live in their own
    modules (which import the helpers above); loaded on first use, so there is no import cycle."""
    if name == "functions":
        from shared.tools.cli.functions import functions

        return functions
    if name == "executions":
        from shared.tools.cli.executions import executions

        return executions
    raise AttributeError(name)
