"""Fleet-wide limits (shared/limiter/extension.py) on a real Redis: max_concurrency holds across
worker processes (measured from when each handler ran), per concurrency key too; a rate limit
is never exceeded over any window; a killed holder's slot comes back after its lease; a request
over a limit waits without counting as a delivery and without starving an unlimited function."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.assemble import create_worker
from shared.client import ExecutionResult, FleetClient
from shared.functions import FunctionTable
from shared.limiter.extension import lease_seconds
from shared.limiter.store import LimitStore
from shared.settings import Settings
from tests.conftest import running
from tests.integration.limited_functions import RATE, declare
from tests.integration.test_worker_process import worker_env

EXTRA_MODULE = "tests.integration.limited_builtins"


def _table() -> FunctionTable:
    table = FunctionTable()
    declare(table)
    return table


async def _records(redis: Redis, key: str) -> list[dict[str, Any]]:
    return [orjson.loads(item) for item in await redis.lrange(key, 0, -1)]


def _max_overlap(records: Sequence[dict[str, Any]]) -> int:
    """The most handler runs in progress at one instant (an end before a start at a tie)."""
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    running_now = peak = 0
    for _, step in events:
        running_now += step
        peak = max(peak, running_now)
    return peak


async def _invoke_all(
    client: FleetClient, slug: str, inputs: Sequence[dict[str, Any]], timeout: float = 60
) -> list[ExecutionResult]:
    ids = [await client.publish(slug, data, domain="ai") for data in inputs]
    return list(await asyncio.gather(*(client.wait(i, timeout=timeout) for i in ids)))


async def _holding_a_slot(store: LimitStore, slug: str) -> None:
    """Wait until an execution of ``slug`` holds a concurrency slot (it is running)."""
    deadline = time.monotonic() + 15
    while not (await store.running(slug)).get(""):
        if time.monotonic() > deadline:
            raise AssertionError(f"no execution of {slug} holds a slot")
        await asyncio.sleep(0.02)


async def _consumers_reading(redis: Redis, settings: Settings, names: set[str]) -> None:
    """Wait until every one of ``names`` reads the ai stream (so the work is spread)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            consumers = await redis.xinfo_consumers(settings.topic_for("ai"), settings.group_for("ai"))
        except ResponseError:  # no group yet
            consumers = []
        if names <= {c["name"].decode() for c in consumers}:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"workers {names} did not start reading")


@asynccontextmanager
async def _worker_processes(settings: Settings, names: Sequence[str]) -> AsyncIterator[list[Any]]:
    """``fleet worker ai`` processes (one per consumer name) serving the limited test built-ins."""
    procs = []
    try:
        for name in names:
            env = worker_env(
                settings, FLEET_CONSUMER_NAME=name, FLEET_EXTRA_MODULES=EXTRA_MODULE, FLEET_BATCH_SIZE="1"
            )
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "shared.tools.cli.main",
                    "worker",
                    "ai",
                    env=env,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_limits_hold_across_three_worker_processes(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    settings = make_settings(processing_timeout=30.0, redeliver_interval=1.0, concurrency=2)
    log_concurrency, log_rate = f"{namespace}log:limited", f"{namespace}log:rated"
    async with (
        _worker_processes(settings, ["w1", "w2", "w3"]),
        FleetClient(settings=settings) as client,
    ):
        limited, rated = await asyncio.gather(
            _invoke_all(client, "test/limited", [{"log": log_concurrency, "seconds": 0.3}] * 12),
            _invoke_all(client, "test/rated", [{"log": log_rate}] * 10),
        )
    assert {r.status for r in [*limited, *rated]} == {"completed"}
    runs = await _records(redis, log_concurrency)
    assert len(runs) == 12
    # Never more than max_concurrency (2) running at once, fleet-wide, and the limit was reached.
    assert _max_overlap(runs) == 2
    assert len({r["worker"] for r in runs}) > 1  # the processes shared the work
    # Waiting for a slot or a start is not a delivery: every request ran on its first.
    assert {r.attempt for r in [*limited, *rated]} == {1}
    starts = sorted(r["start"] for r in await _records(redis, log_rate))
    # No window of period_seconds holds more than `limit` starts. The handler's clock reads a
    # few ms after the admission (Redis's clock), hence the small allowance.
    for i in range(len(starts) - RATE.limit):
        assert starts[i + RATE.limit] - starts[i] >= RATE.period_seconds - 0.1, starts


async def test_a_limited_request_waits_without_starving_an_unlimited_one(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    # Two slots per worker; six calls of a function allowed one at a time, then a free one.
    settings = make_settings(processing_timeout=30.0, redeliver_interval=5.0, concurrency=2)
    table, key = _table(), f"{namespace}log:one"
    async with (
        running(create_worker("ai", settings, resolver=table, table=table)),
        FleetClient(settings=settings) as client,
    ):
        limited = asyncio.create_task(
            _invoke_all(client, "test/one-at-a-time", [{"log": key, "seconds": 0.5}] * 6)
        )
        store = LimitStore(redis, settings.group_prefix)
        await _holding_a_slot(store, "test/one-at-a-time")
        free = await client.invoke("test/free", {"log": f"{namespace}log:free"}, domain="ai", timeout=10)
        results = await limited
    runs = await _records(redis, key)
    assert _max_overlap(runs) == 1
    # The waiting calls held no slot of the worker: the free call ran while the first limited
    # one was still running (the second slot was not taken by a waiting request).
    first_end = min(r["end"] for r in runs)
    assert free.output["end"] < first_end
    assert {r.attempt for r in results} == {1}
    pending = await redis.xpending(settings.topic_for("ai"), settings.group_for("ai"))
    assert pending["pending"] == 0


async def test_max_concurrency_holds_per_concurrency_key(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    settings = make_settings(processing_timeout=30.0, concurrency=8)
    table, key = _table(), f"{namespace}log:keyed"
    inputs = [{"log": key, "seconds": 0.3, "channel": channel} for channel in ("a", "b") * 3]
    async with (
        running(create_worker("ai", settings, resolver=table, table=table)),
        FleetClient(settings=settings) as client,
    ):
        results = await _invoke_all(client, "test/per-channel", inputs)
    runs = await _records(redis, key)
    by_id = {r.execution_id: data["channel"] for r, data in zip(results, inputs, strict=True)}
    for channel in ("a", "b"):
        assert _max_overlap([r for r in runs if by_id[r["id"]] == channel]) == 1
    assert _max_overlap(runs) == 2  # one per channel, the two channels side by side


@pytest.mark.slow
async def test_a_killed_holders_slot_comes_back_after_its_lease(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    # The killed process's request is reclaimed only after the processing timeout (30 s): what
    # frees its slot sooner is the lease (5 s) its holder no longer renews.
    settings = make_settings(processing_timeout=30.0, redeliver_interval=1.0)
    lease = lease_seconds(settings)
    table, key = _table(), f"{namespace}log:held"
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(FleetClient(settings=settings))
        (holder,) = await stack.enter_async_context(_worker_processes(settings, ["holder"]))
        store = LimitStore(redis, settings.group_prefix)
        await client.publish("test/one-at-a-time", {"log": key, "seconds": 60}, domain="ai")
        await _holding_a_slot(store, "test/one-at-a-time")
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        killed_at = time.time()
        await stack.enter_async_context(
            running(
                create_worker(
                    "ai", settings.model_copy(update={"consumer_name": "next"}), resolver=table, table=table
                )
            )
        )
        result = await client.invoke("test/one-at-a-time", {"log": key}, domain="ai", timeout=25)
    assert result.status == "completed"
    waited = result.output["start"] - killed_at
    # Not before the lease lapsed (renewed every third of it until the kill), and about then.
    assert lease * 2 / 3 - 0.2 <= waited <= lease + 3.0, waited


async def test_a_provider_limit_is_shared_by_the_providers_functions(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    # Every test/* function is of provider "test": 4 starts per second between them all.
    settings = make_settings(
        processing_timeout=30.0,
        concurrency=16,
        provider_rate_limits={"test": {"limit": 4, "period_seconds": 1}},
    )
    table, key = _table(), f"{namespace}log:provider"
    async with (
        running(create_worker("ai", settings, resolver=table, table=table)),
        FleetClient(settings=settings) as client,
    ):
        free, limited = await asyncio.gather(
            _invoke_all(client, "test/free", [{"log": key}] * 5),
            _invoke_all(client, "test/limited", [{"log": key}] * 5),
        )
    assert {r.attempt for r in [*free, *limited]} == {1}
    starts = sorted(r["start"] for r in await _records(redis, key))
    assert len(starts) == 10
    for i in range(len(starts) - 4):
        assert starts[i + 4] - starts[i] >= 1.0 - 0.1, starts
