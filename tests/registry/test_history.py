"""Execution history and exactly-once effect, through real workers on Redis + PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.runtime.envelope import encode_request
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import execution_row, publish
from tests.registry.fixtures_functions import TEST_FUNCTIONS


async def test_every_request_gets_a_history_row(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any
) -> None:
    settings = registry_settings()
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        ok = await publish(
            redis, settings, "system/echo", {"hello": "world"}, workflow_execution_id="wf-1", node_id="n1"
        )
        failed = await publish(redis, settings, "system/fail", {"message": "nope"})
        unknown = await publish(redis, settings, "nobody/nothing", {})
        results = await read_results(redis, settings.results_topic, 3)
    by_id = {r["data"]["execution_id"]: r["data"] for r in results}
    assert by_id[ok]["status"] == "completed"

    row = await execution_row(pool, ok)
    assert row is not None
    assert row["status"] == "completed"
    assert row["output"] == {"hello": "world"}
    assert row["input"] == {"hello": "world"}
    assert row["workflow_execution_id"] == "wf-1"
    assert row["node_id"] == "n1"
    assert row["function_id"] is not None
    assert row["function_slug"] == "system/echo"
    assert row["attempt"] == 1
    assert row["started_at"] is not None
    assert row["completed_at"] >= row["started_at"]
    assert row["duration_ms"] == by_id[ok]["duration_ms"]
    assert row["result"] == by_id[ok]
    assert row["lease_owner"] is None

    row = await execution_row(pool, failed)
    assert row is not None
    assert row["status"] == "failed"
    assert row["error"]["code"] == "function_failed"
    assert row["error"]["message"] == "nope"

    row = await execution_row(pool, unknown)
    assert row is not None
    assert row["status"] == "failed"
    assert row["error"]["code"] == "unknown_function"
    assert row["function_id"] is None


async def test_a_long_execution_is_pending_then_running_then_completed(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any
) -> None:
    settings = registry_settings()
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        execution_id = await publish(redis, settings, "system/sleep", {"seconds": 1.5})
        seen: list[str] = []
        for _ in range(2000):
            row = await execution_row(pool, execution_id)
            if row is not None and (not seen or seen[-1] != row["status"]):
                seen.append(row["status"])
            if seen and seen[-1] == "completed":
                break
            await asyncio.sleep(0.01)
        results = await read_results(redis, settings.results_topic, 1)
    assert "running" in seen
    assert seen[-1] == "completed"
    assert seen.index("running") < seen.index("completed")
    assert set(seen) <= {"pending", "running", "completed"}
    assert results[0]["data"]["output"] == {"slept": 1.5}


async def test_requests_failing_before_resolution_are_recorded(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any
) -> None:
    import orjson

    settings = registry_settings(max_payload_bytes=2048)
    bad_type = orjson.dumps(
        {
            "specversion": "1.0",
            "id": "bad-type-1",
            "source": "t",
            "type": "nope",
            "data": {"function": "system/echo"},
        }
    )
    _, too_big = encode_request(function="system/echo", input={"blob": "x" * 4096}, execution_id="too-big-1")
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        for body in (bad_type, too_big):
            await redis.xadd(settings.topic_for("ai"), {"data": body, "metadata": b"{}"})
        results = await read_results(redis, settings.results_topic, 2)
    assert len(results) == 2
    for execution_id, code in (("bad-type-1", "invalid_event"), ("too-big-1", "payload_too_large")):
        row = await execution_row(pool, execution_id)
        assert row is not None, execution_id
        assert row["status"] == "failed"
        assert row["error"]["code"] == code
        assert row["function_id"] is None
