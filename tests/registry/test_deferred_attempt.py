"""A request deferred by a limit is not an attempt: however often it waited for a slot, the run
that finally starts is attempt 1 — in its result and in its execution history row (the claim
it gave back at each deferral does not count)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.client import FleetClient
from shared.functions import FunctionTable
from shared.limiter.store import LimitStore
from shared.settings import Settings
from tests.conftest import running
from tests.integration.limited_functions import declare
from tests.registry.test_defer import final_row

#: Deferrals the request goes through before the slot is given back (each a claim and release).
DEFERRALS = 4


@pytest.mark.parametrize("claims", ["redis", "database"])
async def test_an_execution_deferred_several_times_then_run_is_attempt_1_in_history(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any, namespace: str, claims: str
) -> None:
    table = FunctionTable()
    declare(table)
    settings = registry_settings(claims=claims, processing_timeout=30.0)
    store = LimitStore(redis, settings.group_prefix)
    # Someone else holds test/one-at-a-time's only slot (max_concurrency 1) until we let go.
    admitted = await store.admit(
        "outsider", running=(store.running_key("test/one-at-a-time"), 1), rates=[], lease=60
    )
    assert admitted.admitted
    worker = create_worker("ai", settings, table=table)
    key = f"{namespace}log:deferred"
    async with running(worker), FleetClient(settings=settings) as client:
        execution_id = await client.publish("test/one-at-a-time", {"log": key}, domain="ai")
        deadline = time.monotonic() + 30
        while worker.metrics.deliveries.get("defer", 0) < DEFERRALS:
            assert time.monotonic() < deadline, worker.metrics.deliveries
            await asyncio.sleep(0.05)
        assert await redis.llen(key) == 0  # it has not run yet
        await store.release(store.running_key("test/one-at-a-time"), "outsider")
        result = await client.wait(execution_id, timeout=30)
    assert result.status == "completed"
    assert result.attempt == 1
    assert await redis.llen(key) == 1
    assert worker.metrics.deliveries["defer"] >= DEFERRALS
    row = await final_row(pool, execution_id)
    assert row is not None
    assert row["status"] == "completed"
    assert row["attempt"] == 1
    assert row["result"]["attempt"] == 1
