"""`fleet worker <domain>`: run one domain worker until SIGTERM/SIGINT."""

from __future__ import annotations

import click

from shared.assemble import TRANSPORTS, create_worker
from shared.domains import DOMAINS
from shared.logging import configure_logging
from shared.runtime.worker import run_until_signalled
from shared.tools.cli.common import make_settings, resolve_broker, run
from shared.tools.cli.options import home_option, redis_url_option

__all__ = ["worker"]


@click.command()
@click.argument("domain", type=click.Choice([d.name for d in DOMAINS] + [d.package for d in DOMAINS]))
@click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    envvar="FLEET_TRANSPORT",
    show_envvar=True,
    help="redis (default): read the streams directly; dapr: serve daprd's app channel.",
)
@redis_url_option
@home_option
@click.option(
    "--concurrency", type=int, envvar="FLEET_CONCURRENCY", show_envvar=True, help="In-flight executions."
)
@click.option(
    "--consumer-name", envvar="FLEET_CONSUMER_NAME", show_envvar=True, help="Consumer name in the group."
)
@click.option(
    "--app-port", type=int, envvar=["FLEET_APP_PORT", "APP_PORT"], show_envvar=True, help="Dapr app port."
)
@click.option(
    "--burst",
    is_flag=True,
    envvar="FLEET_BURST",
    show_envvar=True,
    help="Exit once the topic is idle and nothing is in flight (one-shot jobs, CI).",
)
@click.option(
    "--event-loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    envvar="FLEET_EVENT_LOOP",
    show_envvar=True,
    help="auto (default): uvloop when installed, else asyncio's loop.",
)
@click.option(
    "--log-level",
    envvar="FLEET_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level.",
)
def worker(
    domain: str,
    transport: str | None,
    redis_url: str | None,
    home: str | None,
    concurrency: int | None,
    consumer_name: str | None,
    app_port: int | None,
    burst: bool,
    event_loop: str | None,
    log_level: str | None,
) -> None:
    """Run the DOMAIN worker: consume its topic, run its functions, publish results."""
    settings = make_settings(
        redis_url=redis_url,
        home=home,
        concurrency=concurrency,
        consumer_name=consumer_name,
        app_port=app_port,
        log_level=log_level,
        transport=transport,
        burst=burst or None,
        event_loop=event_loop,
    )
    if settings.transport == "redis":
        settings = resolve_broker(settings)
    configure_logging(settings)

    async def main() -> None:
        await run_until_signalled(create_worker(domain, settings))

    run(main(), event_loop=settings.event_loop)
