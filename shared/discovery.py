"""Finding a running fleet from another process.

* `fleet up`: the CLI's commands and :class:`~shared.client.FleetClient` use the broker and
  database it recorded in ``$FLEET_HOME/up.json`` when no URL is configured;
* workers: each direct-mode worker publishes the address of its probe server (which also answers
  ``POST /execute``) in the Redis hash ``<FLEET_GROUP_PREFIX>endpoints`` (field: consumer name;
  value: JSON ``{"url", "domain", "worker", "pid", "expires_at"}``, refreshed while it lives,
  removed at stop); :func:`live_endpoints` reads the live ones of a domain.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from shared.settings import Settings

__all__ = ["endpoints_key", "live_endpoints", "read_up_state", "where_we_looked", "with_running_fleet"]


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


def endpoints_key(settings: Settings) -> str:
    """The Redis hash of the probe-server addresses of a fleet's workers (field: consumer name)."""
    return f"{settings.group_prefix}endpoints"


async def live_endpoints(redis: Any, settings: Settings, domain: str) -> list[str]:
    """The probe-server URLs (``http://host:port``) of the workers of ``domain`` whose entry in
    :func:`endpoints_key` has not expired; entries that do not parse are skipped."""
    entries: dict[Any, Any] = await redis.hgetall(endpoints_key(settings))
    now = time.time()
    urls: list[str] = []
    for value in entries.values():
        try:
            entry = json.loads(value)
            url, expires_at = entry["url"], float(entry["expires_at"])
        except (ValueError, TypeError, KeyError):
            continue
        if entry.get("domain") == domain and isinstance(url, str) and expires_at > now:
            urls.append(url)
    return urls
