"""Helpers every `fleet` command uses: settings from flags + env, finding the broker of a
running `fleet up`, running a coroutine, and printing tables or JSON."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from shared.discovery import read_up_state, with_running_fleet
from shared.errors import ConfigError, TransportError
from shared.eventloop import EventLoop
from shared.eventloop import run as run_on
from shared.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "echo_json",
    "echo_table",
    "make_settings",
    "read_up_state",
    "redis_client",
    "resolve_broker",
    "run",
    "with_running_fleet",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


def make_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with every flag that was given (not ``None``) on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise click.UsageError(f"invalid setting: {exc}") from None


def resolve_broker(settings: Settings) -> Settings:
    """``settings`` with ``redis_url`` (and ``database_url``, when unset and `fleet up` runs
    one) filled from a running `fleet up`; a usage error when there is no broker at all."""
    settings = with_running_fleet(settings)
    if settings.redis_url:
        return settings
    raise click.UsageError(
        "no broker: set FLEET_REDIS_URL / --redis-url, or start `fleet up` in another terminal"
    )


@contextlib.asynccontextmanager
async def redis_client(settings: Settings) -> AsyncIterator[Redis]:
    """A broker connection for a command; a broker error ends the command with its message."""
    from shared.transports.redis import connect

    client = connect(settings.redis_url or "")
    try:
        yield client
    except TransportError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await client.aclose()


def run(coro: Coroutine[Any, Any, T], *, event_loop: EventLoop = "asyncio") -> T:
    """Run ``coro`` on a new loop of the kind ``event_loop`` names (``shared/eventloop.py``;
    workers pass ``FLEET_EVENT_LOOP``); a ConfigError becomes a usage error (exit 2)."""
    try:
        return run_on(coro, event_loop)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def echo_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(c) for c in headers], *([("" if c is None else str(c)) for c in r] for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def is_tty() -> bool:
    return sys.stdout.isatty()
