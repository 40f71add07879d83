"""`fleet config`: every setting with its env variable, default and meaning."""

from __future__ import annotations

import click
from pydantic_core import PydanticUndefined

from shared.settings import Settings
from shared.tools.cli.common import echo_json, echo_table, make_settings, with_running_fleet

__all__ = ["config", "settings_rows"]


def settings_rows() -> list[tuple[str, str, str]]:
    """(env variable, default, meaning) for every field of :class:`Settings`."""
    rows = []
    for name, field in Settings.model_fields.items():
        env = f"FLEET_{name.upper()}"
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            env = " / ".join(str(c) for c in choices)
        if field.default_factory is not None:
            default = {"home": "~/.fleet", "consumer_name": "hostname"}.get(name, "(computed)")
        elif field.default is PydanticUndefined or field.default is None:
            default = "unset"
        else:
            default = str(field.default)
        rows.append((env, default, field.description or ""))
    return rows


@click.command()
@click.option("--markdown", is_flag=True, help="Print the README's configuration table.")
@click.option(
    "--effective",
    is_flag=True,
    help="Print the values commands use here, as JSON (URLs of a running `fleet up` filled in).",
)
@click.option(
    "--update-readme",
    type=click.Path(dir_okay=False, exists=True),
    help="Rewrite the configuration table in this README (between the settings markers).",
)
def config(markdown: bool, effective: bool, update_readme: str | None) -> None:
    """List every FLEET_* setting with its default and meaning."""
    if update_readme:
        from pathlib import Path

        from shared.tools.cli.readme import update_readme as rewrite

        click.echo("updated" if rewrite(Path(update_readme)) else "up to date")
        return
    if effective:
        echo_json(with_running_fleet(make_settings()).model_dump(mode="json"))
        return
    rows = settings_rows()
    if markdown:
        from shared.tools.cli.readme import render_settings_table

        click.echo(render_settings_table())
        return
    echo_table(rows, ["variable", "default", "meaning"])
