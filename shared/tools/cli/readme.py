"""Keeps the README's configuration table in step with :class:`~shared.settings.Settings`."""

from __future__ import annotations

from pathlib import Path

from shared.tools.cli.config import settings_rows

__all__ = ["render_settings_table", "update_readme"]

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def render_settings_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{env}` | `{default}` | {meaning} |" for env, default, meaning in settings_rows()]
    return "\n".join(lines)


def update_readme(path: Path) -> bool:
    """Rewrite the table between the markers in ``path``; returns True if it changed."""
    text = path.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    updated = f"{head}{START}\n{render_settings_table()}\n{END}{tail}"
    if updated != text:
        path.write_text(updated)
        return True
    return False
