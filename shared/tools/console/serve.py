"""Serving the console: ``start_console`` for `fleet ui` and `fleet up` alike."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared.functions import BUILTINS, FunctionTable
from shared.settings import Settings
from shared.tools.console.app import create_app

__all__ = ["start_console"]


async def start_console(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    local: bool = False,
    table: FunctionTable = BUILTINS,
) -> tuple[web.AppRunner, str]:
    """Start serving the console for ``settings`` (``FLEET_UI_HOST``/``PORT`` unless given);
    returns the runner (``await runner.cleanup()`` stops it) and the address to open. Raises
    :class:`~shared.errors.ConfigError` for a non-loopback host without ``FLEET_UI_TOKEN``."""
    host = host or settings.ui_host
    port = settings.ui_port if port is None else port
    app = create_app(settings, host=host, table=table, local=local)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        # A taken port: close what startup opened (database pool, broker connection).
        await runner.cleanup()
        raise
    server: Any = site._server
    bound: Any = server.sockets[0].getsockname() if server is not None else (host, port)
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound[1]}/"
