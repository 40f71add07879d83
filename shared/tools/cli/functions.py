"""`fleet functions …`: the function registry (list, show, register, enable/disable, sync)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from shared.domains import DOMAINS, get_domain
from shared.tools.cli.common import EXIT_USAGE, echo_json, echo_table, run
from shared.tools.cli.db import database_option, open_database, resolve_database
from shared.tools.cli.options import home_option

__all__ = ["functions"]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="JSON for scripts (tables are for people)."
)


@click.group()
def functions() -> None:
    """The function registry: what workers can run."""


@functions.command("list")
@database_option
@home_option
@click.option("--domain", type=click.Choice([d.name for d in DOMAINS]), help="Only what this domain serves.")
@json_option
def list_(database_url: str | None, home: str | None, domain: str | None, as_json: bool) -> None:
    """List functions."""
    from shared.registry.repository import FunctionRepository

    settings = resolve_database(database_url, home)

    async def main() -> list[Any]:
        async with open_database(settings) as connection:
            return await FunctionRepository(connection).list_all(domain)

    records = run(main())
    if as_json:
        echo_json([r.to_json() for r in records])
        return
    echo_table(
        [
            (
                r.slug,
                r.execution_type,
                r.domain or "*",
                r.version,
                "yes" if r.is_enabled else "no",
                "yes" if r.is_deprecated else "",
                (r.description[:60] + "…") if len(r.description) > 61 else r.description,
            )
            for r in records
        ],
        ["SLUG", "TYPE", "DOMAIN", "VERSION", "ENABLED", "DEPRECATED", "DESCRIPTION"],
    )


@functions.command()
@click.argument("slug")
@database_option
@home_option
@json_option
def show(slug: str, database_url: str | None, home: str | None, as_json: bool) -> None:
    """Show one function (by slug or id)."""
    from shared.registry.repository import FunctionRepository

    settings = resolve_database(database_url, home)

    async def main() -> Any:
        async with open_database(settings) as connection:
            return await FunctionRepository(connection).get(slug)

    record = run(main())
    if record is None:
        raise click.ClickException(f"no function {slug!r}")
    data = record.to_json()
    # What the runtime applies: the stored policy with the settings' defaults (shared/retry.py).
    from shared.retry import effective_policy

    try:
        data["retry_policy_effective"] = effective_policy(record.retry_policy, settings).as_document()
    except ValueError as exc:
        data["retry_policy_effective"] = f"invalid, not applied: {exc}"
    usage = run(_limits_usage(record, settings))
    if usage is not None:
        data["limits_usage"] = usage
    if as_json:
        echo_json(data)
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        if value is None or value == [] or value == {}:
            continue
        if isinstance(value, dict | list):
            text = json.dumps(value, indent=2).replace("\n", "\n" + " " * (width + 2))
        else:
            text = str(value)
        click.echo(f"{key:<{width}}  {text}")


async def _limits_usage(record: Any, settings: Any) -> dict[str, Any] | str | None:
    """The current usage of ``record``'s limits when a broker is reachable (docs/contract.md,
    "Limits"); ``None`` without limits or without a broker, a note when it cannot be read."""
    from shared.discovery import with_running_fleet
    from shared.limiter.extension import limits_usage
    from shared.limiter.store import LimitStore
    from shared.limits import RateLimit
    from shared.transports.redis import connect

    settings = with_running_fleet(settings)
    if not settings.redis_url:
        return None
    client = connect(settings.redis_url)
    try:
        rate = RateLimit.model_validate(record.rate_limit) if record.rate_limit else None
        usage = await asyncio.wait_for(
            limits_usage(
                LimitStore(client, settings.group_prefix),
                settings,
                slug=record.slug,
                max_concurrency=record.max_concurrency,
                rate_limit=rate,
            ),
            5.0,
        )
    except Exception as exc:  # the registry answered; the broker's part is a bonus
        return f"unavailable: {exc}"
    finally:
        await client.aclose()
    return usage or None


def _load_definition(path: Path) -> Any:
    from shared.registry.models import FunctionDefinition

    try:
        raw = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except (OSError, yaml.YAMLError) as exc:
        raise click.UsageError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise click.UsageError(f"{path} must hold one function definition (a mapping)")
    try:
        return FunctionDefinition.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()]
        click.echo(f"{path} is not a valid function definition:\n" + "\n".join(lines), err=True)
        raise SystemExit(EXIT_USAGE) from None


@functions.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_option
@home_option
@json_option
@click.option("--created-by", envvar="USER", help="Recorded as created_by.")
def register(
    file: Path, database_url: str | None, home: str | None, as_json: bool, created_by: str | None
) -> None:
    """Register (or update) an oci or http function from a YAML/JSON FILE.

    Required: slug, domain, execution_type (oci: image_ref; http: webhook_url). Optional:
    name, description, command, working_dir, container_env, webhook_method, webhook_headers,
    webhook_timeout_seconds, input_schema, output_schema (JSON Schema 2020-12),
    timeout_seconds, retry_policy, max_concurrency, concurrency_key, rate_limit, credentials,
    tags, is_deprecated.
    An update bumps the version; whether it is enabled is kept.
    """
    from shared.registry.repository import FunctionRepository

    definition = _load_definition(file)
    settings = resolve_database(database_url, home)

    async def main() -> tuple[Any, str]:
        async with open_database(settings) as connection:
            try:
                return await FunctionRepository(connection).register(definition, created_by=created_by)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None

    record, action = run(main())
    if as_json:
        echo_json({"action": action, "function": record.to_json()})
    else:
        click.echo(f"{action} {record.slug} (version {record.version}, id {record.id})")


def _set_flag(
    slug: str, database_url: str | None, home: str | None, *, enabled: bool | None, deprecated: bool | None
) -> None:
    from shared.registry.repository import FunctionRepository

    settings = resolve_database(database_url, home)

    async def main() -> Any:
        async with open_database(settings) as connection:
            repo = FunctionRepository(connection)
            if enabled is not None:
                return await repo.set_enabled(slug, enabled)
            return await repo.set_deprecated(slug, bool(deprecated))

    record = run(main())
    if record is None:
        raise click.ClickException(f"no function {slug!r}")
    state = (
        ("enabled" if record.is_enabled else "disabled")
        if enabled is not None
        else ("deprecated" if record.is_deprecated else "not deprecated")
    )
    click.echo(f"{record.slug} {state} (workers pick it up within about a second)")


@functions.command()
@click.argument("slug")
@database_option
@home_option
def enable(slug: str, database_url: str | None, home: str | None) -> None:
    """Enable a function."""
    _set_flag(slug, database_url, home, enabled=True, deprecated=None)


@functions.command()
@click.argument("slug")
@database_option
@home_option
def disable(slug: str, database_url: str | None, home: str | None) -> None:
    """Disable a function: its requests fail with `function_disabled`."""
    _set_flag(slug, database_url, home, enabled=False, deprecated=None)


@functions.command()
@click.argument("slug")
@database_option
@home_option
@click.option("--undo", is_flag=True, help="Mark it not deprecated again.")
def deprecate(slug: str, database_url: str | None, home: str | None, undo: bool) -> None:
    """Mark a function deprecated: it still runs; results carry a warning."""
    _set_flag(slug, database_url, home, enabled=None, deprecated=not undo)


@functions.command()
@database_option
@home_option
@click.option("--domain", type=click.Choice([d.name for d in DOMAINS]), help="Only this domain's built-ins.")
@json_option
def sync(database_url: str | None, home: str | None, domain: str | None, as_json: bool) -> None:
    """Upsert the built-ins of this installation into the registry (by slug; versions bump
    when a schema changes; enabled/deprecated flags are the operator's and are kept)."""
    from shared.assemble import load_functions
    from shared.registry.migrator import migrate as apply
    from shared.registry.sync import sync_builtins

    settings = resolve_database(database_url, home)
    load_functions(get_domain(domain).name if domain else None, extra_modules=settings.extra_modules)

    async def main() -> Any:
        await apply(settings.database_url or "", log_applied=False)
        async with open_database(settings) as connection:
            return await sync_builtins(connection)

    report = run(main())
    if as_json:
        echo_json(
            {
                "inserted": report.inserted,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "conflicts": report.conflicts,
            }
        )
        return
    click.echo(
        f"built-ins: {len(report.inserted)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged"
    )
    for slug in report.conflicts:
        click.echo(f"  skipped {slug}: the slug belongs to a registered (non-built-in) function", err=True)
