"""A registry worker's probes and metrics: a database outage is reported in /readyz (degraded)
without making the worker unready; history buffer, write state and claim store latency in
/metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.observability import free_port, get, parse
from tests.registry.conftest import publish, registry_of
from tests.registry.fixtures_functions import TEST_FUNCTIONS
from tests.registry.proxy import PgProxy


@pytest.fixture
async def proxy(migrated_url: str) -> AsyncIterator[PgProxy]:
    p = PgProxy(migrated_url)
    await p.start()
    yield p
    await p.close()


async def test_a_database_outage_is_degraded_not_unready(
    registry_settings: Callable[..., Settings], redis: Redis, proxy: PgProxy
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = registry_settings(database_url=proxy.url, database_timeout=3, metrics_port=port)
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        await publish(redis, settings, "system/echo", {"n": 0})
        assert len(await read_results(redis, settings.results_topic, 1)) == 1
        status, _, report = await get(f"{base}/readyz")
        assert status == 200
        assert report["extensions"]["registry"]["state"] == "ok"
        _, _, text = await get(f"{base}/metrics")
        _, samples = parse(text)
        assert samples[("fleet_history_database_up", ())] == 1
        assert samples[("fleet_claim_store_call_seconds_count", (("operation", "claim"),))] >= 1

        await proxy.cut()
        await publish(redis, settings, "system/echo", {"n": 1})
        assert len(await read_results(redis, settings.results_topic, 2, timeout=30)) == 2
        for _ in range(300):
            if registry_of(worker).writer.down:
                break
            await asyncio.sleep(0.05)
        status, _, report = await get(f"{base}/readyz")
        assert status == 200  # still serving: history is buffered
        assert report["ready"] is True
        assert report["extensions"]["registry"]["state"] == "degraded"
        assert report["extensions"]["registry"]["history_buffered"] >= 1
        _, _, text = await get(f"{base}/metrics")
        _, samples = parse(text)
        assert samples[("fleet_history_database_up", ())] == 0
        assert samples[("fleet_history_buffer_operations", ())] >= 1
        assert samples[("fleet_history_write_failures_total", ())] == 0
        await proxy.restore()
