"""Exactly-once effect: the same request delivered 3 times — at once to two workers, and
after the worker running it was killed with SIGKILL — has one effect and identical results.
Each test runs with the claims in Redis and in PostgreSQL (``FLEET_CLAIMS``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.registry.claims import execution_key
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import execution_row, publish, registry_of
from tests.registry.fixtures_functions import TEST_FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]

CLAIMS = pytest.mark.parametrize("claims", ["redis", "database"])


async def effects(redis: Redis, key: str) -> int:
    return int(await redis.get(f"{key}:effect") or 0)


async def final_row(pool: Any, execution_id: str, timeout: float = 30) -> dict[str, Any] | None:
    """The execution's row once it is final. With Redis claims the row is written just after
    the result is published, so it is polled for."""
    for _ in range(int(timeout / 0.05)):
        row = await execution_row(pool, execution_id)
        if row is not None and row["status"] in ("completed", "failed"):
            return row
        await asyncio.sleep(0.05)
    return None


async def check_claim_store(
    redis: Redis, settings: Settings, execution_id: str, data: dict[str, Any]
) -> None:
    """With Redis claims the stored result is the published one; with database claims Redis
    holds nothing for the execution (the claims really went to PostgreSQL)."""
    stored = await redis.get(execution_key(settings.group_prefix, execution_id))
    if settings.claims == "redis":
        assert stored is not None
        assert stored.startswith(b"r")
        assert orjson.loads(stored[1:]) == data
    else:
        assert stored is None


@CLAIMS
async def test_three_concurrent_deliveries_have_one_effect(
    registry_settings: Callable[..., Settings],
    redis: Redis,
    redis_url: str,
    pool: Any,
    claims: str,
    namespace: str,
) -> None:
    key = f"{namespace}counted"  # deleted with the namespace
    settings_a = registry_settings(consumer_name="a", max_deliveries=20, claims=claims)
    settings_b = registry_settings(consumer_name="b", max_deliveries=20, claims=claims)
    worker_a = create_worker("ai", settings_a, table=TEST_FUNCTIONS)
    worker_b = create_worker("ai", settings_b, table=TEST_FUNCTIONS)
    async with running(worker_a), running(worker_b):
        execution_id = await publish(
            redis, settings_a, "testing/counted", {"redis": redis_url, "key": key, "hold": 0.3}, copies=3
        )
        results = await read_results(redis, settings_a.results_topic, 3, timeout=60)
    assert len(results) == 3
    assert await effects(redis, key) == 1
    data = [r["data"] for r in results]
    assert all(d == data[0] for d in data)
    assert data[0]["status"] == "completed"
    assert data[0]["output"] == {"effect": 1, "runs": 1}
    assert {r["executionid"] for r in results} == {execution_id}
    row = await final_row(pool, execution_id)
    assert row is not None
    assert row["status"] == "completed"
    assert row["result"] == data[0]
    assert row["attempt"] == 1
    await check_claim_store(redis, settings_a, execution_id, data[0])
    # The duplicates were told to come back later or answered from the store, never run.
    middleware = registry_of(worker_a).claims, registry_of(worker_b).claims
    assert sum(c.answered for c in middleware) == 2


@CLAIMS
async def test_a_killed_workers_execution_is_taken_over_once(
    registry_settings: Callable[..., Settings],
    redis: Redis,
    redis_url: str,
    pool: Any,
    claims: str,
    namespace: str,
) -> None:
    key = f"{namespace}counted"  # deleted with the namespace
    settings = registry_settings(
        consumer_name="survivor", max_deliveries=50, processing_timeout=1.0, claims=claims
    )
    env = {
        **os.environ,
        "FLEET_REDIS_URL": redis_url,
        "FLEET_DATABASE_URL": settings.database_url or "",
        "FLEET_TOPIC_PREFIX": settings.topic_prefix,
        "FLEET_RESULTS_TOPIC": settings.results_topic,
        "FLEET_GROUP_PREFIX": settings.group_prefix,
        "FLEET_CONSUMER_NAME": "doomed",
        "FLEET_BLOCK_MS": "100",
        "FLEET_PROCESSING_TIMEOUT": "1",
        "FLEET_REDELIVER_INTERVAL": "0.2",
        "FLEET_MAX_DELIVERIES": "50",
        "FLEET_LEASE_MARGIN_SECONDS": "1",
        "FLEET_EXTRA_MODULES": "tests.registry.extra_builtins",
        "FLEET_LOG_LEVEL": "warning",
        "FLEET_HOME": str(settings.home),
        "FLEET_CLAIMS": claims,
    }
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.tools.cli.main", "worker", "ai", cwd=ROOT, env=env
    )
    try:
        # The first run holds (sleeps) before its effect: kill the worker while it does.
        execution_id = await publish(
            redis, settings, "testing/counted", {"redis": redis_url, "key": key, "hold": 30}
        )
        for _ in range(1200):
            row = await execution_row(pool, execution_id)
            if row is not None and row["status"] == "running" and await redis.get(f"{key}:runs"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the doomed worker never started the execution")
        assert row["lease_owner"].startswith(f"{settings.group_prefix}ai/doomed/")
    finally:
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
    assert await effects(redis, key) == 0

    # Two more deliveries of the same request, then a healthy worker.
    await publish(
        redis,
        settings,
        "testing/counted",
        {"redis": redis_url, "key": key, "hold": 30},
        execution_id=execution_id,
        copies=2,
    )
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        results = await read_results(redis, settings.results_topic, 3, timeout=60)
    assert len(results) == 3
    assert await effects(redis, key) == 1
    data = [r["data"] for r in results]
    assert all(d == data[0] for d in data)
    assert data[0]["status"] == "completed"
    assert data[0]["output"] == {"effect": 1, "runs": 2}
    row = await final_row(pool, execution_id)
    assert row is not None
    assert row["status"] == "completed"
    assert row["attempt"] >= 2
    assert row["worker"].endswith("/survivor")
    assert row["result"] == data[0]
    await check_claim_store(redis, settings, execution_id, data[0])
