"""`fleet secrets …`: the fleet's secret store in PostgreSQL (``shared/registry/secrets.py``).

Values go in through a hidden prompt or standard input (``--value-stdin``), never through the
command line (where ``ps`` and shell history would show them), and never come out: every
command prints names, times and the functions that declare each secret only.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from shared.errors import ConfigError
from shared.tools.cli.common import echo_json, echo_table, run
from shared.tools.cli.db import database_option, open_database, resolve_database
from shared.tools.cli.options import home_option

__all__ = ["secrets"]


@click.group()
def secrets() -> None:
    """Credentials stored encrypted in the fleet's database (FLEET_SECRETS_KEY); workers read
    them when no Dapr store, secrets file or FLEET_SECRET_<KEY> variable has the key."""


def _used_by(used_by: list[str] | tuple[str, ...]) -> str:
    return ", ".join(used_by) if used_by else "no function declares it yet"


def _read_value(name: str, value_stdin: bool) -> str:
    if value_stdin:
        value = sys.stdin.read()
        # `echo token | fleet secrets set KEY --value-stdin`: the line's end is not the value's.
        if value.endswith("\n"):
            value = value[:-1]
            if value.endswith("\r"):
                value = value[:-1]
        return value
    prompted: str = click.prompt(
        f"value of {name}", hide_input=True, confirmation_prompt=True, prompt_suffix=": ", err=True
    )
    return prompted


@secrets.command("set")
@click.argument("name")
@click.option(
    "--value-stdin",
    is_flag=True,
    help="Read the value from standard input (one trailing newline dropped) instead of a hidden prompt.",
)
@database_option
@home_option
def set_(name: str, value_stdin: bool, database_url: str | None, home: str | None) -> None:
    """Store the value of secret NAME (a credential key, e.g. OPENAI_API_KEY), replacing any.

    The value is never taken from the command line: a hidden prompt asks for it, or
    --value-stdin reads it. Running workers see it within FLEET_SECRETS_CACHE_TTL seconds."""
    from shared.registry.secrets import SecretStore, check_name

    settings = resolve_database(database_url, home)
    try:
        check_name(name)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    store_key_problem = _key_problem(settings)
    if store_key_problem:
        raise click.UsageError(store_key_problem)
    value = _read_value(name, value_stdin)

    async def main() -> tuple[Any, bool]:
        async with open_database(settings) as connection:
            return await SecretStore.from_settings(connection, settings).put(name, value, by="fleet secrets")

    info, created = run(main())
    click.echo(f"secret {name} {'stored' if created else 'replaced'}; used by: {_used_by(info.used_by)}")


def _key_problem(settings: Any) -> str | None:
    """Why values cannot be written here (no key, a malformed key), before asking for one."""
    from shared.registry.secret_keys import NoSecretsKey, SecretCipher

    try:
        if SecretCipher.from_settings(settings) is None:
            return str(NoSecretsKey(settings))
    except ConfigError as exc:
        return str(exc)
    return None


@secrets.command("list")
@database_option
@home_option
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def list_(database_url: str | None, home: str | None, as_json: bool) -> None:
    """The stored secrets: names, when they were set, and which functions declare them."""
    from shared.registry.secrets import SecretStore

    settings = resolve_database(database_url, home)

    async def main() -> list[Any]:
        async with open_database(settings) as connection:
            return await SecretStore.from_settings(connection, settings).listing()

    found = run(main())
    if as_json:
        echo_json([info.as_json() for info in found])
        return
    echo_table(
        [
            (
                info.name,
                info.created_at.isoformat(timespec="seconds"),
                info.updated_at.isoformat(timespec="seconds"),
                ", ".join(info.used_by) or "-",
            )
            for info in found
        ],
        ["NAME", "CREATED", "UPDATED", "USED BY"],
    )


@secrets.command()
@click.argument("name")
@database_option
@home_option
def delete(name: str, database_url: str | None, home: str | None) -> None:
    """Remove secret NAME from the store (exit 1 when there is none)."""
    from shared.registry.secrets import SecretStore

    settings = resolve_database(database_url, home)

    async def main() -> bool:
        async with open_database(settings) as connection:
            return await SecretStore.from_settings(connection, settings).delete(name)

    if not run(main()):
        raise click.ClickException(f"no secret {name!r} in the store")
    click.echo(f"secret {name} deleted")


@secrets.command()
@database_option
@home_option
def rotate(database_url: str | None, home: str | None) -> None:
    """Re-encrypt every stored value with the first key of FLEET_SECRETS_KEY.

    Rotation: put a new key first in FLEET_SECRETS_KEY, keep the old ones after it, run this,
    then drop the old keys. All or nothing: a value no key decrypts stops it, naming the secret."""
    from shared.registry.secrets import SecretStore

    settings = resolve_database(database_url, home)
    problem = _key_problem(settings)
    if problem:
        raise click.UsageError(problem)

    async def main() -> int:
        async with open_database(settings) as connection:
            return await SecretStore.from_settings(connection, settings).rotate()

    count = run(main())
    click.echo(f"re-encrypted {count} secret{'' if count == 1 else 's'} with the first key")


@secrets.command()
def keygen() -> None:
    """Print a new Fernet key for FLEET_SECRETS_KEY (the one thing this group prints that is
    secret: keep it like a password)."""
    from shared.registry.secret_keys import SecretCipher

    click.echo(SecretCipher.generate_key())
