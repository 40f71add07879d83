"""Helpers for the replay tests: test-only built-ins in their own tables, and the `fleet` CLI
run against a test's settings (its isolated topic names) through click's CliRunner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from shared.settings import Settings
from shared.tools.cli.main import cli

# The registry suite's PostgreSQL fixtures (a fresh, migrated database per test), for the
# replay tests that run registry workers (execution history answers duplicates).
from tests.registry.conftest import database_server, database_url, migrated_url, registry_settings

__all__ = [
    "database_server",
    "database_url",
    "fleet",
    "fleet_env",
    "migrated_url",
    "read_jsonl",
    "registry_settings",
]

CliCall = Callable[..., Awaitable[Result]]


def fleet_env(settings: Settings) -> dict[str, str]:
    """The FLEET_* variables that make a `fleet` process use ``settings``' broker and names."""
    return {
        "FLEET_REDIS_URL": settings.redis_url or "",
        "FLEET_HOME": str(settings.home),
        "FLEET_TOPIC_PREFIX": settings.topic_prefix,
        "FLEET_RESULTS_TOPIC": settings.results_topic,
        "FLEET_GROUP_PREFIX": settings.group_prefix,
        "FLEET_LOG_LEVEL": "warning",
    }


@pytest.fixture
def fleet(settings: Settings) -> CliCall:
    """``await fleet("topic", "diff", a, b)`` runs the CLI in a thread (it calls asyncio.run,
    which cannot nest in the test's loop) with this test's settings in the environment."""

    async def call(*args: str, settings_: Settings | None = None) -> Result:
        runner = CliRunner()
        env = fleet_env(settings_ or settings)
        return await asyncio.to_thread(runner.invoke, cli, list(args), env=env, catch_exceptions=False)

    return call


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
