"""Retry policies enforced by the runtime on the Redis transport: a retryable failure is
redelivered after its backoff (not at once, not after the processing timeout), without holding a
concurrency slot, with the right attempt count; the last attempt's failure is answered and
dead-lettered; Retry-After is honoured."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.client import FleetClient
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext, FunctionTable, builtin
from shared.registry.models import FunctionDefinition
from shared.retry import RetryPolicy, effective_policy
from shared.settings import Settings
from tests.conftest import running


def _table(runs: dict[str, list[float]]) -> FunctionTable:
    table = FunctionTable()
    steady = RetryPolicy(max_attempts=3, initial_backoff_seconds=0.4, multiplier=2, jitter=0)

    @builtin("test/always-fails", domain=None, table=table, retry_policy=steady)
    async def always_fails(data: dict[str, Any], ctx: ExecutionContext) -> None:
        runs.setdefault(ctx.execution_id, []).append(time.monotonic())
        raise ExecutionFailed("upstream down", code="provider_error", retryable=True)

    @builtin("test/fails-twice", domain=None, table=table, retry_policy=steady)
    async def fails_twice(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, int]:
        runs.setdefault(ctx.execution_id, []).append(time.monotonic())
        if ctx.attempt < 3:
            raise ExecutionFailed("not yet", code="provider_error", retryable=True)
        return {"attempt": ctx.attempt}

    @builtin("test/bad-input", domain=None, table=table, retry_policy=steady)
    async def bad_input(data: dict[str, Any], ctx: ExecutionContext) -> None:
        runs.setdefault(ctx.execution_id, []).append(time.monotonic())
        raise ExecutionFailed("no such customer", code="invalid_input", retryable=False)

    @builtin(
        "test/only-on-timeout",
        domain=None,
        table=table,
        retry_policy=RetryPolicy(max_attempts=3, initial_backoff_seconds=0.1, retry_on=("timeout",)),
    )
    async def only_on_timeout(data: dict[str, Any], ctx: ExecutionContext) -> None:
        runs.setdefault(ctx.execution_id, []).append(time.monotonic())
        raise ExecutionFailed("provider said no", code="provider_error", retryable=True)

    @builtin(
        "test/busy",
        domain=None,
        table=table,
        retry_policy=RetryPolicy(max_attempts=2, initial_backoff_seconds=0.1, jitter=0),
    )
    async def busy(data: dict[str, Any], ctx: ExecutionContext) -> str:
        runs.setdefault(ctx.execution_id, []).append(time.monotonic())
        if ctx.attempt == 1:
            raise ExecutionFailed("429", code="provider_error", retryable=True, details={"retry_after": 1.2})
        return "ok"

    @builtin("test/quick", domain=None, table=table)
    async def quick(data: dict[str, Any], ctx: ExecutionContext) -> float:
        return time.monotonic()

    return table


@pytest.fixture
def retry_settings(make_settings: Callable[..., Settings]) -> Settings:
    # A long processing timeout: a retry that waited for it would time the test out.
    return make_settings(processing_timeout=30.0, redeliver_interval=5.0, max_deliveries=5)


async def test_retries_follow_the_backoff_then_the_last_failure_is_answered_and_dead_lettered(
    retry_settings: Settings, redis: Redis
) -> None:
    runs: dict[str, list[float]] = {}
    table = _table(runs)
    async with (
        running(create_worker("ai", retry_settings, resolver=table, table=table)),
        FleetClient(settings=retry_settings, functions=table) as client,
    ):
        result = await client.invoke("test/always-fails", {}, domain="ai", timeout=20)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.code == "provider_error"  # the function's own failure, not max_deliveries
    assert result.attempt == 3
    times = runs[result.execution_id]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 0.4 s then 0.8 s (no jitter), handed out within one XREADGROUP block (0.1 s) plus slack.
    assert 0.4 <= gaps[0] < 0.4 + 0.6
    assert 0.8 <= gaps[1] < 0.8 + 0.6
    topic = retry_settings.topic_for("ai")
    dead = await redis.xrange(retry_settings.dlq_for(topic))
    assert len(dead) == 1
    assert (await redis.xpending(topic, retry_settings.group_for("ai")))["pending"] == 0


async def test_a_failure_that_clears_completes_with_its_attempt_count(
    retry_settings: Settings, redis: Redis
) -> None:
    runs: dict[str, list[float]] = {}
    table = _table(runs)
    async with (
        running(create_worker("ai", retry_settings, resolver=table, table=table)),
        FleetClient(settings=retry_settings, functions=table) as client,
    ):
        result = await client.invoke("test/fails-twice", {}, domain="ai", timeout=20)
    assert result.status == "completed"
    assert result.output == {"attempt": 3}
    assert result.attempt == 3
    assert await redis.xlen(retry_settings.dlq_for(retry_settings.topic_for("ai"))) == 0


async def test_failures_the_policy_does_not_retry_are_answered_at_once(retry_settings: Settings) -> None:
    runs: dict[str, list[float]] = {}
    table = _table(runs)
    async with (
        running(create_worker("ai", retry_settings, resolver=table, table=table)),
        FleetClient(settings=retry_settings, functions=table) as client,
    ):
        not_retryable = await client.invoke("test/bad-input", {}, domain="ai", timeout=10)
        not_listed = await client.invoke("test/only-on-timeout", {}, domain="ai", timeout=10)
    for result in (not_retryable, not_listed):
        assert result.status == "failed"
        assert result.attempt == 1
        assert len(runs[result.execution_id]) == 1


async def test_a_waiting_retry_holds_no_concurrency_slot_and_honours_retry_after(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(processing_timeout=30.0, redeliver_interval=5.0, concurrency=1)
    runs: dict[str, list[float]] = {}
    table = _table(runs)
    async with (
        running(create_worker("ai", settings, resolver=table, table=table)),
        FleetClient(settings=settings, functions=table) as client,
    ):
        busy = asyncio.create_task(client.invoke("test/busy", {}, domain="ai", timeout=20))
        while not runs:
            await asyncio.sleep(0.01)
        quick = await client.invoke("test/quick", {}, domain="ai", timeout=10)
        busy_result = await busy
    first, second = runs[busy_result.execution_id]
    assert busy_result.output == "ok"
    assert busy_result.attempt == 2
    assert second - first >= 1.2  # the provider's Retry-After, not the policy's 0.1 s
    # With one slot, `quick` ran while `busy` waited for its retry.
    assert first < quick.output < second


def test_policies_are_validated_at_registration_and_defaults_come_from_the_settings() -> None:
    with pytest.raises(ValidationError, match="max_backoff_seconds"):
        FunctionDefinition(
            slug="acme/x",
            domain="http",
            execution_type="http",
            webhook_url="https://example.com",
            retry_policy={"initial_backoff_seconds": 5, "max_backoff_seconds": 1},
        )
    with pytest.raises(ValidationError, match="extra"):
        FunctionDefinition(
            slug="acme/x",
            domain="http",
            execution_type="http",
            webhook_url="https://e.com",
            retry_policy={"tries": 3},
        )
    stored = FunctionDefinition(
        slug="acme/x",
        domain="http",
        execution_type="http",
        webhook_url="https://e.com",
        retry_policy={"max_attempts": 4},
    )
    assert stored.retry_policy == {"max_attempts": 4}
    effective = effective_policy(stored.retry_policy, Settings(retry_initial_backoff=2.5, max_deliveries=3))
    assert effective.initial_backoff_seconds == 2.5
    assert effective.max_attempts == 3  # capped by FLEET_MAX_DELIVERIES
