"""`fleet publish` and `fleet invoke`: send requests from a terminal or a script."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from shared.client import FleetClient
from shared.contract import ExecutionResult
from shared.domains import DOMAINS
from shared.errors import ExecutionFailed, ExecutionTimeout, TransportError, UnknownFunction
from shared.tools.cli.common import EXIT_FAILED, echo_json, make_settings, resolve_broker, run
from shared.tools.cli.options import home_option, redis_url_option
from shared.transports.redis import cancel_and_wait

__all__ = ["EXIT_TIMEOUT", "invoke", "publish"]

#: `fleet invoke`'s exit code when no result arrived within --timeout.
EXIT_TIMEOUT = 3
#: Seconds before the first progress line, and between checks.
PROGRESS_FIRST_S, PROGRESS_INTERVAL_S = 0.5, 0.5


def _parse_input(_: click.Context, __: click.Parameter, value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object")
    return parsed


_input_option = click.option(
    "--input",
    "input_",
    callback=_parse_input,
    envvar="FLEET_INPUT",
    show_envvar=True,
    help='The function input as a JSON object, e.g. \'{"hello": "world"}\'.',
)
_domain_option = click.option(
    "--domain",
    type=click.Choice([d.name for d in DOMAINS]),
    envvar="FLEET_DOMAIN",
    show_envvar=True,
    help="Send to this domain's topic instead of the function's own.",
)


@click.command()
@click.argument("slug")
@_input_option
@_domain_option
@click.option(
    "--execution-id", envvar="FLEET_EXECUTION_ID", show_envvar=True, help="Use this id (idempotency key)."
)
@redis_url_option
@home_option
def publish(
    slug: str,
    input_: dict[str, Any],
    domain: str | None,
    execution_id: str | None,
    redis_url: str | None,
    home: str | None,
) -> None:
    """Publish a request for SLUG and print its execution id (does not wait)."""
    settings = resolve_broker(make_settings(redis_url=redis_url, home=home))

    async def main() -> str:
        async with FleetClient(settings=settings) as client:
            return await client.publish(slug, input_, domain=domain, execution_id=execution_id)

    try:
        click.echo(run(main()))
    except UnknownFunction as exc:
        click.echo(f"failed: {exc.code}: {exc.message}", err=True)
        raise SystemExit(EXIT_FAILED) from None


async def _show_progress(client: FleetClient, execution_id: str) -> None:
    """Print the request's state on stderr each time it changes (after a first short wait, so a
    quick answer prints nothing)."""
    shown: str | None = None
    await asyncio.sleep(PROGRESS_FIRST_S)
    while True:
        try:
            progress = await client.progress(execution_id)
        except TransportError:
            progress = None
        text = progress.describe() if progress is not None else None
        if text and text != shown and (progress is None or progress.state != "answered"):
            click.echo(f"{execution_id}: {text}", err=True)
            shown = text
        await asyncio.sleep(PROGRESS_INTERVAL_S)


@click.command()
@click.argument("slug")
@_input_option
@_domain_option
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    envvar="FLEET_INVOKE_TIMEOUT",
    show_envvar=True,
    help="Seconds to wait for the result.",
)
@click.option(
    "--json", "as_json", is_flag=True, envvar="FLEET_JSON", show_envvar=True, help="Print the result as JSON."
)
@click.option(
    "--sync",
    is_flag=True,
    envvar="FLEET_INVOKE_SYNC",
    show_envvar=True,
    help="Call a running worker of the function's domain (POST /execute) instead of publishing; "
    "published as usual when none is running.",
)
@redis_url_option
@home_option
def invoke(
    slug: str,
    input_: dict[str, Any],
    domain: str | None,
    timeout: float,
    as_json: bool,
    sync: bool,
    redis_url: str | None,
    home: str | None,
) -> None:
    """Run SLUG and print its result. Exit 0 completed, 1 failed, 2 usage error, 3 no result
    within --timeout (the request may still run).

    While it waits, what the fleet records about the request is shown on stderr as it changes:
    queued, running (attempt n of m), retrying with the reason, dead-lettered. With --sync the
    answer comes back on the call itself (no progress lines).
    """
    settings = resolve_broker(make_settings(redis_url=redis_url, home=home))

    async def main() -> ExecutionResult | ExecutionTimeout:
        async with FleetClient(settings=settings) as client:
            if sync:
                try:
                    return await client.call(slug, input_, domain=domain, timeout=timeout)
                except ExecutionTimeout as exc:
                    return exc
            execution_id = await client.publish(slug, input_, domain=domain)
            watcher = asyncio.create_task(_show_progress(client, execution_id))
            try:
                return await client.wait(execution_id, timeout=timeout)
            except ExecutionTimeout as exc:
                return exc
            finally:
                await cancel_and_wait(watcher)

    try:
        outcome = run(main())
    except ExecutionFailed as exc:  # an unknown function; with --sync, a request refused as unusable
        click.echo(f"failed: {exc.code}: {exc.message}", err=True)
        if exc.details is not None:
            echo_json(exc.details)
        raise SystemExit(EXIT_FAILED) from None
    if isinstance(outcome, ExecutionTimeout):
        if as_json:
            echo_json(
                {
                    "execution_id": outcome.execution_id,
                    "status": "unknown",
                    "error": {"code": "timeout", "message": outcome.message},
                }
            )
        else:
            click.echo(f"timeout: {outcome.message}", err=True)
        raise SystemExit(EXIT_TIMEOUT)
    if as_json:
        echo_json(outcome.model_dump(mode="json", exclude_none=True))
    elif outcome.ok:
        echo_json(outcome.output)
    else:
        assert outcome.error is not None
        click.echo(f"failed: {outcome.error.code}: {outcome.error.message}", err=True)
        if outcome.error.details is not None:
            echo_json(outcome.error.details)
    raise SystemExit(0 if outcome.ok else EXIT_FAILED)
