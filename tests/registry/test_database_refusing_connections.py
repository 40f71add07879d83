"""PostgreSQL refusing connections ("database is not currently accepting connections",
SQLSTATE 55000 at connect) is an outage: history writes are held and written once it accepts
connections again, not discarded as if the rows were bad. Reproduced as in the field: the
database's ALLOW_CONNECTIONS switched off and its backends terminated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import asyncpg
import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.registry.database import create_pool
from shared.registry.history_writer import HistoryWriter
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import publish, registry_of
from tests.registry.fixtures_functions import TEST_FUNCTIONS
from tests.registry.test_history_writer import finish_record, new_id


class Gate:
    """Closes and opens a database to new connections, as an operator would."""

    def __init__(self, admin: asyncpg.Connection, url: str) -> None:
        self._admin = admin
        self.name = urlsplit(url).path.lstrip("/")

    async def close(self) -> None:
        await self._admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        await self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", self.name
        )

    async def open(self) -> None:
        await self._admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
async def gate(database_server: str, migrated_url: str) -> AsyncIterator[Gate]:
    admin = await asyncpg.connect(database_server)
    g = Gate(admin, migrated_url)
    try:
        yield g
    finally:
        with contextlib.suppress(Exception):
            await g.open()
        await admin.close()


async def count_rows(url: str, ids: list[str]) -> int:
    connection = await asyncpg.connect(url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM function_executions WHERE id = ANY($1::text[]) AND status = 'completed'",
            ids,
        )
        return count
    finally:
        await connection.close()


async def wait_for_rows(url: str, ids: list[str], timeout: float = 60.0) -> int:
    count = 0
    for _ in range(int(timeout / 0.2)):
        count = await count_rows(url, ids)
        if count == len(ids):
            break
        await asyncio.sleep(0.2)
    return count


async def test_writes_are_held_while_the_database_refuses_connections(gate: Gate, migrated_url: str) -> None:
    pool = await create_pool(migrated_url, timeout=3)
    writer = HistoryWriter(pool, owner="fleet-ai/w/1", timeout=3)
    writer.start()
    try:
        before = [new_id() for _ in range(20)]
        for execution_id in before:
            await writer.finish(finish_record(execution_id), wait=True)

        await gate.close()
        during = [new_id() for _ in range(40)]
        for execution_id in during:
            await writer.finish(finish_record(execution_id), wait=False)
            await asyncio.sleep(0.01)
        for _ in range(300):
            if writer.down:
                break
            await asyncio.sleep(0.05)
        assert writer.down
        await asyncio.sleep(0.5)  # retries meet the refusal again
        assert writer.rejected_rows == 0
        assert writer.pending > 0

        await gate.open()
        assert await wait_for_rows(migrated_url, before + during) == len(before) + len(during)
        assert writer.rejected_rows == 0
        assert not writer.down
    finally:
        await writer.close()
        await pool.close()


async def test_a_worker_keeps_every_row_through_a_refusal(
    registry_settings: Callable[..., Settings], redis: Redis, gate: Gate, migrated_url: str
) -> None:
    """The issue's reproduction, scaled down: ``system/echo`` at about 100 requests a second,
    the database refusing connections for a second in the middle."""
    settings = registry_settings(database_timeout=3)
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    ids: list[str] = []
    async with running(worker):

        async def send(count: int) -> None:
            for _ in range(count):
                ids.append(await publish(redis, settings, "system/echo", {"n": len(ids)}))
                await asyncio.sleep(0.01)

        await send(60)
        await gate.close()
        await send(100)
        await gate.open()
        await send(40)
        results = await read_results(redis, settings.results_topic, len(ids), timeout=60)
        assert len(results) == len(ids)
        assert await wait_for_rows(migrated_url, ids) == len(ids)
        assert registry_of(worker).writer.rejected_rows == 0
