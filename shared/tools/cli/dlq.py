"""`fleet dlq list|show|redrive`: inspect dead letters and move them back to their topic.

Entries dead-lettered by this fleet's Redis transport and by daprd's ``deadLetterTopic`` look
the same here; what the writer did not record shows as "unknown" (``null`` in JSON).
"""

from __future__ import annotations

from typing import Any

import click

from shared.domains import DOMAINS, get_domain
from shared.settings import Settings
from shared.tools.cli.common import (
    EXIT_FAILED,
    echo_json,
    echo_table,
    make_settings,
    redis_client,
    resolve_broker,
    run,
)
from shared.tools.cli.options import home_option, redis_url_option
from shared.tools.replay.dlq import DeadLetter, find_dead_letter, iter_dead_letters, redrive

__all__ = ["dlq"]

UNKNOWN = "unknown"
_DOMAIN_NAMES = [d.name for d in DOMAINS]


def _queues(settings: Settings, domain: str | None) -> list[tuple[str, str]]:
    """``(dlq, topic)`` of ``domain``, or of every domain."""
    names = [get_domain(domain).name] if domain else _DOMAIN_NAMES
    return [(settings.dlq_for(settings.topic_for(n)), settings.topic_for(n)) for n in names]


def _shown(value: Any) -> str:
    return UNKNOWN if value is None else str(value)


def _json_option(f: Any) -> Any:
    return click.option(
        "--json", "as_json", is_flag=True, envvar="FLEET_JSON", show_envvar=True, help="Print JSON."
    )(f)


@click.group()
def dlq() -> None:
    """Inspect dead letters (`<topic>.dlq`) and redrive them to their topic."""


@dlq.command("list")
@click.argument("domain", required=False, type=click.Choice(_DOMAIN_NAMES))
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    envvar="FLEET_DLQ_LIMIT",
    show_envvar=True,
    help="At most this many entries per domain, oldest first (0 = all).",
)
@_json_option
@redis_url_option
@home_option
def list_(domain: str | None, limit: int, as_json: bool, redis_url: str | None, home: str | None) -> None:
    """List dead letters of DOMAIN (default: every domain), oldest first."""
    settings = resolve_broker(make_settings(redis_url=redis_url, home=home))

    async def main() -> list[DeadLetter]:
        found: list[DeadLetter] = []
        async with redis_client(settings) as redis:
            for queue, topic_name in _queues(settings, domain):
                async for letter in iter_dead_letters(redis, queue, topic_name, limit=limit or None):
                    found.append(letter)
        return found

    letters = run(main())
    if as_json:
        echo_json([letter.summary() for letter in letters])
        return
    if not letters:
        click.echo("no dead letters")
        return
    echo_table(
        [
            (
                letter.id,
                letter.topic,
                _shown(letter.execution_id),
                _shown(letter.function),
                _shown(letter.deliveries),
                letter.dead_lettered_at,
                _shown(letter.error),
            )
            for letter in letters
        ],
        ["ID", "TOPIC", "EXECUTION", "FUNCTION", "DELIVERIES", "DEAD-LETTERED", "ERROR"],
    )


@dlq.command("show")
@click.argument("entry_id", metavar="ID")
@click.option(
    "--domain",
    type=click.Choice(_DOMAIN_NAMES),
    envvar="FLEET_DOMAIN",
    show_envvar=True,
    help="Look only in this domain's dead letters (default: all).",
)
@_json_option
@redis_url_option
@home_option
def show(entry_id: str, domain: str | None, as_json: bool, redis_url: str | None, home: str | None) -> None:
    """Show dead letter ID (its DLQ entry id): where it came from, why, and the CloudEvent.

    Exit 1 when no dead-letter topic holds it.
    """
    settings = resolve_broker(make_settings(redis_url=redis_url, home=home))

    async def main() -> DeadLetter | None:
        async with redis_client(settings) as redis:
            return await find_dead_letter(redis, _queues(settings, domain), entry_id)

    letter = run(main())
    if letter is None:
        click.echo(f"no dead letter {entry_id}", err=True)
        raise SystemExit(EXIT_FAILED)
    if as_json:
        echo_json(letter.details())
        return
    details = letter.details()
    for key in ("id", "dlq", "topic", "execution_id", "function", "error", "deliveries", "message_id"):
        click.echo(f"{key.replace('_', ' ')}: {_shown(details[key])}")
    click.echo(f"dead-lettered at: {letter.dead_lettered_at}")
    click.echo(f"written by: {letter.writer}")
    click.echo("metadata:")
    echo_json(letter.metadata)
    click.echo("event:" if letter.event is not None else "data (not a CloudEvent):")
    if letter.event is not None:
        echo_json(letter.event)
    else:
        click.echo(details["raw"])


@dlq.command("redrive")
@click.argument("domain", type=click.Choice(_DOMAIN_NAMES))
@click.option(
    "--id",
    "ids",
    multiple=True,
    envvar="FLEET_DLQ_ID",
    show_envvar=True,
    help="A dead letter to move back (repeatable).",
)
@click.option(
    "--all",
    "all_",
    is_flag=True,
    envvar="FLEET_DLQ_ALL",
    show_envvar=True,
    help="Move back every dead letter of DOMAIN present now.",
)
@redis_url_option
@home_option
def redrive_(domain: str, ids: tuple[str, ...], all_: bool, redis_url: str | None, home: str | None) -> None:
    """Move dead letters of DOMAIN back to its topic, to be delivered afresh.

    Each entry moves atomically (XADD to the topic and XDEL from the DLQ in one Lua script):
    an interrupted redrive neither loses nor duplicates entries. The new entry starts with a
    fresh delivery count. Exit 1 when some --id was not in the DLQ.
    """
    if bool(ids) == all_:
        raise click.UsageError("give --id ID (repeatable) or --all")
    settings = resolve_broker(make_settings(redis_url=redis_url, home=home))
    [(queue, topic_name)] = _queues(settings, domain)

    async def main() -> Any:
        async with redis_client(settings) as redis:
            return await redrive(redis, queue, topic_name, None if all_ else list(ids))

    report = run(main())
    for old, new in report.moved:
        click.echo(f"{old} -> {topic_name} {new}")
    for missing in report.missing:
        click.echo(f"not in {queue}: {missing}", err=True)
    click.echo(f"redrove {len(report.moved)} dead letters from {queue} to {topic_name}")
    if report.missing:
        raise SystemExit(EXIT_FAILED)
