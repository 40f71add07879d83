"""Migrations (from empty, re-run, concurrent) and the writer's round-trip budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.registry.migrator import available_migrations, migrate
from shared.registry.retention import prune
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import registry_of
from tests.registry.fixtures_functions import TEST_FUNCTIONS


async def test_migrations_from_empty_then_rerun(database_url: str) -> None:
    shipped = available_migrations()
    assert [m.version for m in shipped] == sorted(m.version for m in shipped)
    applied = await migrate(database_url)
    assert [m.version for m in applied] == [m.version for m in shipped]
    assert await migrate(database_url) == []
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["checksum"]) for r in rows] == [(m.version, m.checksum) for m in shipped]
        tables = {
            r["tablename"]
            for r in await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {"functions", "function_executions", "schema_migrations"} <= tables
    finally:
        await connection.close()


async def test_concurrent_migrations_apply_once(database_url: str) -> None:
    results = await asyncio.gather(*(migrate(database_url) for _ in range(5)))
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, len(available_migrations())]


@pytest.mark.parametrize("claims", ["redis", "database"])
async def test_history_writes_are_batched(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any, claims: str
) -> None:
    from shared.runtime.envelope import encode_request

    settings = registry_settings(concurrency=64, batch_size=64, claims=claims)
    count = 60
    # Queued before the worker starts, so they arrive as one batch of deliveries.
    pipe = redis.pipeline(transaction=False)
    for n in range(count):
        _, body = encode_request(function="system/echo", input={"n": n})
        pipe.xadd(settings.topic_for("ai"), {"data": body, "metadata": b"{}"})
    await pipe.execute()
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        writer = registry_of(worker).writer
        results = await read_results(redis, settings.results_topic, count, timeout=60)
    # Read after the worker stopped: with Redis claims the rows are written after the results.
    flushes, ops = writer.flushes, writer.ops_flushed
    assert len(results) == count
    assert await pool.fetchval("SELECT count(*) FROM function_executions WHERE status = 'completed'") == count
    if claims == "database":
        # Each message makes a claim and a final write (its "running" mark is superseded by
        # the final write queued behind it)...
        assert ops == 2 * count
        # ...carried by a handful of statements: the batch's claims together, then its results
        # together; not one round trip per message or per state change.
        assert flushes <= 6, (flushes, ops)
    else:
        # Claims are in Redis: the table gets one write per message (the held-back "running"
        # row is superseded by the final one), in a few statements.
        assert ops == count
        assert flushes <= 4, (flushes, ops)


async def test_prune_deletes_only_old_final_history(pool: Any) -> None:
    await pool.execute(
        """INSERT INTO function_executions (id, function_slug, status, created_at, lease_expires_at) VALUES
           ('old-done', 'system/echo', 'completed', now() - interval '40 days', NULL),
           ('old-failed', 'system/echo', 'failed', now() - interval '31 days', NULL),
           ('old-held', 'system/echo', 'running', now() - interval '40 days', now() + interval '1 hour'),
           ('new-done', 'system/echo', 'completed', now() - interval '1 day', NULL)"""
    )
    assert await prune(pool, 30, chunk=1) == 2
    left = {r["id"] for r in await pool.fetch("SELECT id FROM function_executions")}
    assert left == {"old-held", "new-done"}
    assert await prune(pool, 30, exclusive=True) == 0


async def test_workers_prune_history_periodically(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any
) -> None:
    await pool.execute(
        "INSERT INTO function_executions (id, function_slug, status, created_at)"
        " VALUES ('ancient', 'system/echo', 'completed', now() - interval '400 days')"
    )
    settings = registry_settings(history_retention_days=365, history_prune_interval=0.2)
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        for _ in range(100):
            if await pool.fetchval("SELECT count(*) FROM function_executions WHERE id = 'ancient'") == 0:
                break
            await asyncio.sleep(0.1)
    assert await pool.fetchval("SELECT count(*) FROM function_executions WHERE id = 'ancient'") == 0
