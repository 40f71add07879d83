"""Fixtures for the registry suite: a real PostgreSQL and a fresh database per test.

The server is ``FLEET_TEST_DATABASE_URL`` when set, else an embedded PostgreSQL started once
per session. Each test gets its own database (``CREATE DATABASE t_<uuid>``), dropped after,
so tests never see each other's functions or history.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.registry.database import create_pool
from shared.registry.extension import RegistryExtension
from shared.registry.migrator import migrate
from shared.registry.runtime import RegistryRuntime
from shared.runtime.worker import Worker
from shared.settings import Settings


@pytest.fixture(scope="session")
def database_server() -> Iterator[str]:
    url = os.environ.get("FLEET_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from shared.tools.embedded import embedded_database

    # Not under pytest's basetemp: concurrent pytest sessions prune old basetemps, which
    # would delete a live server's data directory.
    base = Path(tempfile.mkdtemp(prefix="fleet-test-pg-"))
    try:
        with embedded_database(base / "data") as embedded_url:
            yield embedded_url
    finally:
        shutil.rmtree(base, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps host, socket dir and options)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@pytest.fixture
async def database_url(database_server: str) -> AsyncIterator[str]:
    """A fresh, empty database for this test (dropped after)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(database_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(database_server, name)
    admin = await asyncpg.connect(database_server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    await migrate(database_url)
    return database_url


@pytest.fixture
async def pool(migrated_url: str) -> AsyncIterator[Any]:
    p = await create_pool(migrated_url)
    yield p
    await p.close()


@pytest.fixture
def registry_settings(make_settings: Callable[..., Settings], migrated_url: str) -> Callable[..., Settings]:
    """Settings for a registry worker on this test's database (keyword overrides on top)."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": migrated_url, "lease_margin_seconds": 1.0}
        values.update(overrides)
        return make_settings(**values)

    return factory


async def publish(
    redis: Any,
    settings: Settings,
    function: str,
    input: dict[str, Any] | None = None,
    *,
    domain: str = "ai",
    execution_id: str | None = None,
    copies: int = 1,
    **options: Any,
) -> str:
    """XADD a request to ``domain``'s topic (``copies`` identical entries); returns its id."""
    from shared.runtime.envelope import encode_request

    execution_id, body = encode_request(
        function=function, input=input or {}, execution_id=execution_id, **options
    )
    for _ in range(copies):
        await redis.xadd(settings.topic_for(domain), {"data": body, "metadata": b"{}"})
    return execution_id


async def execution_row(pool: Any, execution_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT * FROM function_executions WHERE id = $1", execution_id)
    return dict(row) if row is not None else None


def registry_of(worker: Worker) -> RegistryRuntime:
    """The registry side of a worker built with a database (its RegistryExtension's runtime)."""
    return worker.extension(RegistryExtension).runtime
