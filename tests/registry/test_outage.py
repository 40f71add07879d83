"""PostgreSQL going away and coming back under a running worker: it keeps answering from the
registry cache, holds history writes (bounded), and writes them once the database returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.backoff import Backoff
from shared.registry.claims_writer import Claim, ClaimsWriter
from shared.registry.database import create_pool
from shared.registry.writer import DatabaseUnavailable
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import execution_row, publish, registry_of
from tests.registry.fixtures_functions import TEST_FUNCTIONS
from tests.registry.proxy import PgProxy


@pytest.fixture
async def proxy(migrated_url: str) -> AsyncIterator[PgProxy]:
    p = PgProxy(migrated_url)
    await p.start()
    yield p
    await p.close()


async def wait_for_row(pool: Any, execution_id: str, timeout: float = 30) -> dict[str, Any] | None:
    for _ in range(int(timeout / 0.1)):
        row = await execution_row(pool, execution_id)
        if row is not None and row["status"] in ("completed", "failed"):
            return row
        await asyncio.sleep(0.1)
    return None


async def test_worker_serves_through_an_outage_and_catches_up(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any, proxy: PgProxy
) -> None:
    # TTL 0: every resolve goes to the database, so the outage must be served from stale entries.
    settings = registry_settings(database_url=proxy.url, registry_cache_ttl=0, database_timeout=3)
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        before = await publish(redis, settings, "system/echo", {"n": 0})
        assert len(await read_results(redis, settings.results_topic, 1)) == 1
        assert await wait_for_row(pool, before) is not None

        await proxy.cut()
        during = [await publish(redis, settings, "system/echo", {"n": n}) for n in range(1, 4)]
        results = await read_results(redis, settings.results_topic, 4, timeout=30)
        assert [r["data"]["status"] for r in results] == ["completed"] * 4
        # With claims in Redis the results do not wait for the history writes: the writer
        # finds the database gone when it flushes them.
        for _ in range(300):
            if registry_of(worker).writer.down:
                break
            await asyncio.sleep(0.05)
        assert registry_of(worker).writer.down
        assert registry_of(worker).writer.pending >= 3
        for execution_id in during:
            assert await execution_row(pool, execution_id) is None

        await proxy.restore()
        for execution_id in during:
            row = await wait_for_row(pool, execution_id)
            assert row is not None
            assert row["status"] == "completed"
        assert not registry_of(worker).writer.down
        # The LISTEN connection died with the outage and came back (dropping the cache).
        listener = registry_of(worker).listener
        for _ in range(300):
            if listener.reconnects >= 1 and listener.listening.is_set():
                break
            await asyncio.sleep(0.1)
        assert listener.reconnects >= 1
        assert listener.listening.is_set()
        # New work is claimed and recorded normally again.
        after = await publish(redis, settings, "system/echo", {"n": 9})
        assert len(await read_results(redis, settings.results_topic, 5)) == 5
        assert await wait_for_row(pool, after) is not None


async def test_a_full_buffer_stops_acking_until_the_database_returns(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any, proxy: PgProxy
) -> None:
    settings = registry_settings(
        database_url=proxy.url, history_buffer=1, database_timeout=3, max_deliveries=50
    )
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        await publish(redis, settings, "system/echo", {"n": 0})
        assert len(await read_results(redis, settings.results_topic, 1)) == 1
        await proxy.cut()
        first = await publish(redis, settings, "system/echo", {"n": 1})
        assert len(await read_results(redis, settings.results_topic, 2)) == 2
        # The buffer holds one write: the next result is not published, the delivery stays pending.
        retried = worker.metrics.deliveries["retry"]
        second = await publish(redis, settings, "system/echo", {"n": 2})
        for _ in range(300):  # until the worker has handled (and not acked) it
            if worker.metrics.deliveries["retry"] > retried:
                break
            await asyncio.sleep(0.05)
        assert worker.metrics.deliveries["retry"] > retried
        assert len(await redis.xrange(settings.results_topic)) == 2
        pending = await redis.xpending(settings.topic_for("ai"), settings.group_for("ai"))
        assert pending["pending"] >= 1

        await proxy.restore()
        results = await read_results(redis, settings.results_topic, 3, timeout=60)
        assert {r["data"]["execution_id"] for r in results} >= {first, second}
        for execution_id in (first, second):
            row = await wait_for_row(pool, execution_id)
            assert row is not None
            assert row["status"] == "completed"


async def test_claims_resume_after_an_outage_with_nothing_to_write(proxy: PgProxy) -> None:
    pool = await create_pool(proxy.url, timeout=3)
    writer = ClaimsWriter(pool, owner="fleet-ai/w/1", timeout=3)
    writer.start()
    try:
        assert (await writer.claim(Claim(id="before", token="t0", lease_seconds=60))).won
        await proxy.cut()
        with pytest.raises(DatabaseUnavailable):
            await writer.claim(Claim(id="during", token="t1", lease_seconds=60))
        assert writer.down
        assert writer.pending == 0  # a failed claim is not held: nothing left to retry
        await proxy.restore()
        for _ in range(300):
            if not writer.down:
                break
            await asyncio.sleep(0.05)
        assert not writer.down
        assert (await writer.claim(Claim(id="after", token="t2", lease_seconds=60))).won
    finally:
        await writer.close()
        await pool.close()


class RecordedBackoff(Backoff):
    """A deterministic schedule that notes each delay drawn and each reset."""

    def __init__(self) -> None:
        super().__init__(0.01, 0.08, jitter=0)
        self.drawn: list[float | str] = []

    def next(self) -> float:
        delay = super().next()
        self.drawn.append(delay)
        return delay

    def reset(self) -> None:
        super().reset()
        self.drawn.append("reset")


async def test_probes_back_off_through_an_outage_and_start_over_after_it(proxy: PgProxy) -> None:
    pool = await create_pool(proxy.url, timeout=3)
    backoff = RecordedBackoff()
    writer = ClaimsWriter(pool, owner="fleet-ai/w/1", timeout=3, backoff=backoff)
    writer.start()

    async def outage(execution_id: str) -> None:
        await proxy.cut()
        with pytest.raises(DatabaseUnavailable):
            await writer.claim(Claim(id=execution_id, token=execution_id, lease_seconds=60))
        for _ in range(300):  # nothing to write: the writer probes, waiting longer each time
            if len(backoff.drawn) >= 5:
                break
            await asyncio.sleep(0.05)
        await proxy.restore()
        for _ in range(300):
            if not writer.down:
                break
            await asyncio.sleep(0.05)
        assert not writer.down

    try:
        await outage("first")
        first = list(backoff.drawn)
        # Doubling to the cap, then the schedule starts over once a probe got through.
        assert first[:5] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.08])
        assert first[-1] == "reset"
        assert first.count("reset") == 1
        backoff.drawn.clear()
        await outage("second")
        assert backoff.drawn[:2] == pytest.approx([0.01, 0.02])
        assert (await writer.claim(Claim(id="after", token="t2", lease_seconds=60))).won
    finally:
        await writer.close()
        await pool.close()
