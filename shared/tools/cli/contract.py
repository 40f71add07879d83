"""`fleet contract asyncapi`: the execution contract as an AsyncAPI 3.0 document.

* ``fleet contract asyncapi`` prints it; ``--out FILE`` writes it; ``--check`` compares it with
  FILE (default ``docs/asyncapi.yaml``) and exits 1 when they differ (shared/tools/asyncapi.py).
"""

from __future__ import annotations

from pathlib import Path

import click

from shared.tools.cli.common import EXIT_FAILED

__all__ = ["asyncapi", "contract"]


@click.group()
def contract() -> None:
    """Machine-readable descriptions of the execution contract (docs/contract.md)."""


@contract.command("asyncapi")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FLEET_ASYNCAPI_OUT",
    show_envvar=True,
    default=None,
    help="Write the document to this file instead of stdout (the checked-in one is docs/asyncapi.yaml).",
)
@click.option(
    "--check",
    is_flag=True,
    envvar="FLEET_ASYNCAPI_CHECK",
    show_envvar=True,
    help="Write nothing; exit 1 when the --out file (default docs/asyncapi.yaml) differs from a "
    "fresh render.",
)
def asyncapi(out: Path | None, check: bool) -> None:
    """Print the AsyncAPI 3.0 document of the fleet (with --out: write it; --check: verify it).

    Generated from shared/contract.py, shared/domains.py and the settings *defaults*, never from
    FLEET_* variables of this shell, so every machine renders the same bytes.
    """
    from shared.tools.asyncapi import DEFAULT_PATH, build_document, render
    from shared.tools.manifests.render import default_settings

    text = render(build_document(default_settings()))
    if check:
        target = out if out is not None else Path(DEFAULT_PATH)
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current != text:
            state = "is missing" if current is None else "differs from a fresh render"
            click.echo(
                f"{target} {state}; run `fleet contract asyncapi --out {target}` and commit it",
                err=True,
            )
            raise SystemExit(EXIT_FAILED)
        click.echo(f"{target} is up to date")
        return
    if out is None:
        click.echo(text, nl=False)
        return
    if out.is_file() and out.read_text(encoding="utf-8") == text:
        click.echo(f"{out} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")
