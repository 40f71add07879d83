"""Takeover of a dead worker's execution within about the processing timeout, and a live long
execution never run twice, with Redis claims (short leases renewed while their process lives).

A killed worker's claim used to last the function's timeout plus the lease margin (an hour and
a half minute for ``system/sleep``) although its stream entry came back after
``FLEET_PROCESSING_TIMEOUT``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.registry.claims import LEASE_SHARE, execution_key
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import publish
from tests.registry.fixtures_functions import TEST_FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]

#: Far below the dead worker's old lease (system/sleep's 3600 s timeout + the 30 s margin).
ANSWER_BOUND = 60.0


async def claim_value(redis: Redis, settings: Settings, execution_id: str) -> bytes | None:
    value: bytes | None = await redis.get(execution_key(settings.group_prefix, execution_id))
    return value


async def lease_left(redis: Redis, claim: bytes) -> float:
    """Seconds until ``claim``'s expiry (Redis server time); negative once it has lapsed."""
    expires = int(claim[1:].split(b"|", 1)[0])
    seconds, micros = await redis.time()
    return (expires - (seconds * 1000 + micros // 1000)) / 1000


async def test_a_killed_workers_claim_is_taken_over_within_the_processing_timeout(
    registry_settings: Callable[..., Settings], redis: Redis, redis_url: str
) -> None:
    settings = registry_settings(
        consumer_name="survivor", processing_timeout=2.0, claims="redis", lease_margin_seconds=30.0
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")},
        "FLEET_REDIS_URL": redis_url,
        "FLEET_DATABASE_URL": settings.database_url or "",
        "FLEET_TOPIC_PREFIX": settings.topic_prefix,
        "FLEET_RESULTS_TOPIC": settings.results_topic,
        "FLEET_GROUP_PREFIX": settings.group_prefix,
        "FLEET_CONSUMER_NAME": "doomed",
        "FLEET_BLOCK_MS": "100",
        "FLEET_PROCESSING_TIMEOUT": "2",
        "FLEET_REDELIVER_INTERVAL": "0.2",
        "FLEET_LEASE_MARGIN_SECONDS": "30",
        "FLEET_LOG_LEVEL": "warning",
        "FLEET_HOME": str(settings.home),
        "FLEET_CLAIMS": "redis",
    }
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.tools.cli.main", "worker", "ai", cwd=ROOT, env=env
    )
    try:
        # system/sleep's timeout is an hour: the old lease would have held it that long.
        execution_id = await publish(redis, settings, "system/sleep", {"seconds": 3})
        for _ in range(600):
            value = await claim_value(redis, settings, execution_id)
            if value is not None and b"/doomed/" in value:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the doomed worker never claimed the execution")
    finally:
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
    assert value.startswith(b"c")
    killed_at = asyncio.get_running_loop().time()

    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        results = await read_results(redis, settings.results_topic, 1, timeout=ANSWER_BOUND)
    answered_after = asyncio.get_running_loop().time() - killed_at
    assert len(results) == 1, f"not answered within {ANSWER_BOUND}s of the kill"
    data = results[0]["data"]
    assert data["status"] == "completed"
    assert data["output"] == {"slept": 3}
    assert data["attempt"] == 2
    assert data["worker"].endswith("/survivor")
    assert answered_after < ANSWER_BOUND
    stored = await claim_value(redis, settings, execution_id)
    assert stored is not None
    assert stored.startswith(b"r")


async def test_a_live_execution_longer_than_the_processing_timeout_runs_once_while_another_worker_competes(
    registry_settings: Callable[..., Settings], redis: Redis, redis_url: str, namespace: str
) -> None:
    key = f"{namespace}counted"  # deleted with the namespace
    processing_timeout = 1.0
    settings_a = registry_settings(
        consumer_name="a", processing_timeout=processing_timeout, claims="redis", max_deliveries=50
    )
    settings_b = registry_settings(
        consumer_name="b", processing_timeout=processing_timeout, claims="redis", max_deliveries=50
    )
    worker_a = create_worker("ai", settings_a, table=TEST_FUNCTIONS)
    # Another domain's worker: the duplicate reaches only it, and it shares the claim keys.
    worker_b = create_worker("comms", settings_b, table=TEST_FUNCTIONS)
    hold = 4.0  # four processing timeouts, six leases of a claim
    payload = {"redis": redis_url, "key": key, "hold": hold}
    async with running(worker_a):
        execution_id = await publish(redis, settings_a, "testing/counted", payload)
        for _ in range(200):
            if await redis.get(f"{key}:runs"):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("worker a never started the execution")
        async with running(worker_b):
            await publish(
                redis, settings_b, "testing/counted", payload, domain="comms", execution_id=execution_id
            )
            leases: list[float] = []
            while not await redis.get(f"{key}:effect"):
                value = await claim_value(redis, settings_a, execution_id)
                if value is None or not value.startswith(b"c"):
                    break
                leases.append(await lease_left(redis, value))
                await asyncio.sleep(0.1)
            results = await read_results(redis, settings_a.results_topic, 2, timeout=30)
    assert len(results) == 2
    assert int(await redis.get(f"{key}:effect") or 0) == 1
    assert int(await redis.get(f"{key}:runs") or 0) == 1
    data = [r["data"] for r in results]
    assert data[0] == data[1]
    assert data[0]["output"] == {"effect": 1, "runs": 1}
    # The claim was short all along, and kept alive: renewed, never held for the whole run.
    assert len(leases) >= 10
    assert all(0 < left <= processing_timeout * LEASE_SHARE + 0.05 for left in leases), leases
    # Worker b really competed, and was told to wait each time.
    assert worker_b.metrics.deliveries.get("defer", 0) >= 2
