"""A duplicate of an execution that is still running is deferred: left pending and redelivered
later, answered with the stored result once the execution finished — and its waiting never
counts toward FLEET_MAX_DELIVERIES (so it is never dead-lettered for waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.registry.claims import execution_key
from shared.runtime.worker import Worker
from shared.settings import Settings
from shared.transports import dapr_http
from shared.transports.base import Delivery, Outcome, Settlement
from shared.transports.dapr_http import DaprTransport
from tests.conftest import running
from tests.registry.conftest import execution_row, publish, registry_of
from tests.registry.fixtures_functions import TEST_FUNCTIONS

# A bound the deferred duplicate would blow through if its deferrals counted as deliveries.
MAX_DELIVERIES = 2


def defer_settings(registry_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "claims": "redis",
        "max_deliveries": MAX_DELIVERIES,
        "processing_timeout": 0.5,
        "redeliver_interval": 0.1,
        "block_ms": 100,
    }
    values.update(overrides)
    return registry_settings(**values)


async def watch(
    redis: Redis, settings: Settings, expected: int, timeout: float = 30.0
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Until ``expected`` results are published: sample the request stream's pending entries
    all the while. Returns the results and each entry's highest delivery count seen."""
    topic, group = settings.topic_for("ai"), settings.group_for("ai")
    highest: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for entry in await redis.xpending_range(topic, group, min="-", max="+", count=100):
            message_id = entry["message_id"].decode()
            highest[message_id] = max(highest.get(message_id, 0), int(entry["times_delivered"]))
        entries = await redis.xrange(settings.results_topic)
        if len(entries) >= expected or loop.time() > deadline:
            return [orjson.loads(fields[b"data"]) for _, fields in entries], highest
        await asyncio.sleep(0.02)


async def final_row(pool: Any, execution_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
    for _ in range(int(timeout / 0.05)):
        row = await execution_row(pool, execution_id)
        if row is not None and row["status"] in ("completed", "failed"):
            return row
        await asyncio.sleep(0.05)
    return None


async def effects(redis: Redis, key: str) -> tuple[int, int]:
    return int(await redis.get(f"{key}:runs") or 0), int(await redis.get(f"{key}:effect") or 0)


def claims_of(worker: Worker) -> Any:
    return registry_of(worker).claims


async def check_settled(
    redis: Redis,
    pool: Any,
    settings: Settings,
    execution_id: str,
    results: list[dict[str, Any]],
    key: str,
) -> None:
    """Both copies answered alike, the function ran once, nothing dead-lettered or pending."""
    assert len(results) == 2
    data = [r["data"] for r in results]
    assert data[0] == data[1]
    assert data[0]["status"] == "completed"
    assert data[0]["output"] == {"effect": 1, "runs": 1}
    assert {r["executionid"] for r in results} == {execution_id}
    assert await effects(redis, key) == (1, 1)
    topic = settings.topic_for("ai")
    assert await redis.xlen(settings.dlq_for(topic)) == 0
    row = await final_row(pool, execution_id)
    assert row is not None
    assert row["status"] == "completed"
    assert row["attempt"] == 1  # never taken over, never run again
    assert row["result"] == data[0]
    stored = await redis.get(execution_key(settings.group_prefix, execution_id))
    assert stored is not None
    assert stored.startswith(b"r")


async def test_a_duplicate_waits_in_the_same_worker_without_counting(
    registry_settings: Callable[..., Settings], redis: Redis, redis_url: str, pool: Any, namespace: str
) -> None:
    settings = defer_settings(registry_settings)
    key = f"{namespace}counted"  # deleted with the namespace
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        execution_id = await publish(
            redis, settings, "testing/counted", {"redis": redis_url, "key": key, "hold": 3}, copies=2
        )
        results, highest = await watch(redis, settings, 2)
        # Both copies are acked once answered.
        for _ in range(100):
            if not await redis.xpending_range(
                settings.topic_for("ai"), settings.group_for("ai"), "-", "+", 10
            ):
                break
            await asyncio.sleep(0.05)
    await check_settled(redis, pool, settings, execution_id, results, key)
    assert len(highest) == 2  # both entries were seen pending
    assert max(highest.values()) <= 1
    claims = claims_of(worker)
    # The duplicate was deferred more often than FLEET_MAX_DELIVERIES allows deliveries:
    # counted, it would have been dead-lettered.
    assert claims.deferred > MAX_DELIVERIES
    assert worker.metrics.deliveries["defer"] == claims.deferred
    assert claims.answered == 1
    assert worker.metrics.deliveries["ack"] == 2
    assert not await redis.xpending_range(settings.topic_for("ai"), settings.group_for("ai"), "-", "+", 10)


async def test_a_duplicate_waits_for_another_worker_without_counting(
    registry_settings: Callable[..., Settings], redis: Redis, redis_url: str, pool: Any, namespace: str
) -> None:
    # The runner takes one execution at a time, so the duplicate is read by the other worker,
    # which learns from the Redis claim that it is running elsewhere.
    runner_settings = defer_settings(registry_settings, consumer_name="runner", concurrency=1)
    other_settings = defer_settings(registry_settings, consumer_name="other")
    key = f"{namespace}counted"  # deleted with the namespace
    runner = create_worker("ai", runner_settings, table=TEST_FUNCTIONS)
    other = create_worker("ai", other_settings, table=TEST_FUNCTIONS)
    async with running(runner):
        execution_id = await publish(
            redis, runner_settings, "testing/counted", {"redis": redis_url, "key": key, "hold": 2.5}
        )
        for _ in range(200):  # until the first copy runs (its claim is taken)
            if (await effects(redis, key))[0] == 1:
                break
            await asyncio.sleep(0.02)
        assert (await effects(redis, key))[0] == 1
        async with running(other):
            await publish(
                redis,
                runner_settings,
                "testing/counted",
                {"redis": redis_url, "key": key, "hold": 2.5},
                execution_id=execution_id,
            )
            results, highest = await watch(redis, runner_settings, 2)
    await check_settled(redis, pool, runner_settings, execution_id, results, key)
    assert len(highest) == 2
    assert max(highest.values()) <= 1
    assert claims_of(other).deferred >= 1  # told by the Redis claim, not by its own process
    assert claims_of(runner).answered + claims_of(other).answered == 1
    deferred = claims_of(runner).deferred + claims_of(other).deferred
    assert runner.metrics.deliveries["defer"] + other.metrics.deliveries["defer"] == deferred


# ---------------------------------------------------------------------- Dapr
def test_every_outcome_has_a_dapr_answer() -> None:
    # A REPLY (a synchronous call's result) was never a delivery: nothing to answer daprd.
    assert set(dapr_http._STATUS) == set(Outcome) - {Outcome.REPLY}
    assert dapr_http._STATUS[Outcome.DEFER] == dapr_http.RETRY


async def test_the_dapr_transport_answers_retry_to_a_deferral(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    transport = DaprTransport(topic=settings.topic_for("ai"), domain="ai", settings=settings)
    loop = asyncio.get_running_loop()
    deferred = Delivery(message_id="m-deferred", body=b"{}", handle=loop.create_future())
    acked = Delivery(message_id="m-acked", body=b"{}", handle=loop.create_future())
    async with aiohttp.ClientSession() as session:
        transport._session = session  # settle needs an open transport; nothing is published
        await transport.settle(
            [
                Settlement(deferred, Outcome.DEFER, reason="already running elsewhere"),
                Settlement(acked, Outcome.ACK),
            ]
        )
        transport._session = None
    assert deferred.handle.result() == "RETRY"
    assert acked.handle.result() == "SUCCESS"
    # daprd cannot un-count a delivery: the redelivery is the next one, with the reason kept.
    again = transport._delivery("m-deferred", b"{}", {})
    assert (again.delivery_count, again.last_error) == (2, "already running elsewhere")
