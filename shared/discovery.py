"""Finding a running `fleet up` from another process: the CLI's commands and
:class:`~shared.client.FleetClient` use the broker and database it recorded in
``$FLEET_HOME/up.json`` when no URL is configured."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shared.settings import Settings

__all__ = ["read_up_state", "where_we_looked", "with_running_fleet"]


def read_up_state(home: Path) -> dict[str, Any] | None:
    """The state file of a live `fleet up` under ``home``, or ``None`` (absent, unreadable, or
    left behind by a process that is gone)."""
    path = home / "up.json"
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def with_running_fleet(settings: Settings) -> Settings:
    """``settings`` with ``redis_url`` and ``database_url``, where unset, filled from a running
    `fleet up` (what every command that talks to the fleet uses); unchanged when none runs."""
    state = read_up_state(settings.home) or {}
    found = {k: state[k] for k in ("redis_url", "database_url") if state.get(k) and not getattr(settings, k)}
    return settings.model_copy(update=found) if found else settings


def where_we_looked(settings: Settings) -> str:
    """One sentence for an error: where a broker was looked for and not found."""
    return (
        f"FLEET_REDIS_URL is unset and no running `fleet up` was found "
        f"(looked for {settings.home / 'up.json'}, FLEET_HOME={settings.home})"
    )
