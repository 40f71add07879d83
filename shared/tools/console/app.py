"""The console application: shared state (:class:`Console`), middlewares, routes, templates.

``create_app(settings)`` builds it; the pool, the broker connection and the
:class:`~shared.client.FleetClient` open on startup. A missing or unreachable database or broker
is not fatal: the pages that need one say so (``Console.database_problem`` /
``broker_problem``) and the others work.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from shared.functions import BUILTINS, FunctionTable
from shared.settings import Settings
from shared.tools.console.errors import error_middleware
from shared.tools.console.security import CSRF_FIELD, CSRF_KEY, check_bind, security_middleware

__all__ = ["CONSOLE", "Console", "base_context", "create_app", "render"]

log = structlog.get_logger("fleet.console")

HERE = Path(__file__).parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Console:
    """What every handler uses. ``pool``/``redis``/``client`` are ``None`` when unavailable,
    with the reason in ``database_problem``/``broker_problem``."""

    settings: Settings
    table: FunctionTable
    token: str | None
    pool: Any = None
    redis: Any = None
    client: Any = None
    database_problem: str | None = None
    broker_problem: str | None = None
    local: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    async def open(self) -> None:
        if self.settings.database_url:
            from shared.registry.database import create_pool
            from shared.registry.migrator import migrate

            try:
                await migrate(self.settings.database_url, timeout=self.settings.database_timeout + 30)
                self.pool = await create_pool(
                    self.settings.database_url, timeout=self.settings.database_timeout
                )
            except Exception as exc:
                self.database_problem = f"the database is unreachable ({type(exc).__name__}: {exc})"
                log.warning("console without a database", error=str(exc))
        else:
            self.database_problem = (
                "no database is configured (FLEET_DATABASE_URL): registry edits, versions and the "
                "execution history need one; workers serving built-ins only keep none"
            )
        if self.settings.redis_url:
            from shared.client import FleetClient
            from shared.transports.redis import connect

            self.redis = connect(self.settings.redis_url)
            self.client = FleetClient(redis=self.redis, settings=self.settings, source="fleet-console")
        else:
            self.broker_problem = "no broker is configured (FLEET_REDIS_URL, or start `fleet up`)"

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self.pool is not None:
            await self.pool.close()


CONSOLE = web.AppKey("console", Console)


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Server-Timing: app;dur=<ms>`` on every answer (what the benchmark reads)."""
    started = time.perf_counter()
    response = await handler(request)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


def base_context(request: web.Request) -> dict[str, Any]:
    """What every template gets besides its own data."""
    console = request.app[CONSOLE]
    return {
        "csrf": request.get(CSRF_KEY, ""),
        "csrf_field": CSRF_FIELD,
        "database_problem": console.database_problem,
        "broker_problem": console.broker_problem,
        "token_required": bool(console.token),
        "path": request.path,
    }


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(
        template, request, {**base_context(request), **context}, status=status
    )


def create_app(
    settings: Settings,
    *,
    host: str | None = None,
    table: FunctionTable = BUILTINS,
    local: bool = False,
) -> web.Application:
    """The console for ``settings`` (``FLEET_UI_TOKEN`` from them); refuses (ConfigError) a
    non-loopback ``host`` without a token."""
    import shared.diagnostics  # noqa: F401  (system/* are built-ins of every domain)
    from shared.tools.console import api, pages

    token = settings.ui_token.get_secret_value() if settings.ui_token is not None else None
    check_bind(host or settings.ui_host, token)
    app = web.Application(
        middlewares=[timing_middleware, security_middleware(token), error_middleware],
        client_max_size=2 * 1024 * 1024,
    )
    console = Console(settings=settings, table=table, token=token, local=local)
    app[CONSOLE] = console
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    from shared.tools.console import render

    render.install(env)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    api.add_routes(app)
    pages.add_routes(app)

    async def startup(app: web.Application) -> None:
        await console.open()

    async def cleanup(app: web.Application) -> None:
        await console.close()

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    return app
