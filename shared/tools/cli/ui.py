"""`fleet ui`: the web console (docs/console.md)."""

from __future__ import annotations

import asyncio
import contextlib

import click

from shared.discovery import read_up_state, with_running_fleet
from shared.errors import ConfigError
from shared.settings import Settings
from shared.tools.cli.common import make_settings
from shared.tools.cli.db import database_option
from shared.tools.cli.options import home_option, redis_url_option

__all__ = ["ui"]


@click.command()
@click.option(
    "--host",
    envvar="FLEET_UI_HOST",
    show_envvar=True,
    default=None,
    help="Address to bind (default 127.0.0.1).",
)
@click.option(
    "--port",
    envvar="FLEET_UI_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    default=None,
    help="Port (default 8790).",
)
@database_option
@redis_url_option
@home_option
@click.option(
    "--bench",
    is_flag=True,
    help="Instead of serving: seed a scratch database (1,000 functions, 1,000,000 executions) on the "
    "--database-url server and print p50/p95 server times of the heavy pages.",
)
def ui(
    host: str | None,
    port: int | None,
    database_url: str | None,
    redis_url: str | None,
    home: str | None,
    bench: bool,
) -> None:
    """Serve the web console: functions, test runs, executions, fleet and dead letters.

    Binds 127.0.0.1 unless --host says otherwise; any other address needs FLEET_UI_TOKEN.
    The broker and the database are those of a running `fleet up` unless given.
    """
    settings = with_running_fleet(
        make_settings(ui_host=host, ui_port=port, database_url=database_url, redis_url=redis_url, home=home)
    )
    if bench:
        from shared.tools.console.bench import run_bench

        if not settings.database_url:
            raise click.UsageError("--bench needs a PostgreSQL server: --database-url or FLEET_DATABASE_URL")
        asyncio.run(run_bench(settings.database_url))
        return
    state = read_up_state(settings.home)
    local = state is not None and state.get("redis_url") == settings.redis_url
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings, local))


async def _serve(settings: Settings, local: bool) -> None:
    from shared.tools.console.serve import start_console

    try:
        runner, url = await start_console(settings, local=local)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"console: {url}")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
