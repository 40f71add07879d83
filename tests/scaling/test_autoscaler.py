"""The local autoscaler of `fleet up`, live: real Redis, real `fleet worker` processes.

From zero one request is answered and the domain goes 0 → 1 (without waiting for a poll); a
burst drives it to its max and the cooldown brings it back to 0; scale-in under load loses
nothing, runs nothing twice and waits for no processing timeout; a process SIGKILLed while it
drains loses nothing."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.client import FleetClient
from shared.domains import get_domain
from shared.settings import Settings
from shared.tools.scaling.autoscaler import Autoscaler
from shared.tools.scaling.events import read_last
from shared.transports.redis_streams import ensure_group
from tests.integration.test_worker_process import worker_env

pytestmark = pytest.mark.slow

#: Test built-ins (testing/counted) in the worker processes.
EXTRA = "tests.registry.extra_builtins"
#: Far above how long anything here takes: a request that waited for it would time the test out.
PROCESSING_TIMEOUT = 120.0


@pytest.fixture
def scale_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        processing_timeout=PROCESSING_TIMEOUT,
        redeliver_interval=0.5,
        shutdown_timeout=10.0,
        concurrency=4,
        scale_polling_interval=0.5,
        scale_cooldown=2.0,
        scale_stabilization=1.0,
        scale_max_processes=2,
    )


@asynccontextmanager
async def autoscaler(settings: Settings, *, run: bool = True) -> AsyncIterator[Autoscaler]:
    redis = Redis.from_url(settings.redis_url or "")
    env = worker_env(settings, FLEET_EXTRA_MODULES=EXTRA)

    async def spawn(domain: str, consumer: str) -> Any:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.tools.cli.main", "worker", domain,
            env={**env, "FLEET_CONSUMER_NAME": consumer}, start_new_session=True,
        )  # fmt: skip

    scaler = Autoscaler(settings, [get_domain("ai")], redis, spawn)
    stop = asyncio.Event()
    await ensure_group(redis, settings.topic_for("ai"), settings.group_for("ai"))
    task = asyncio.create_task(scaler.run(stop)) if run else None
    try:
        yield scaler
    finally:
        stop.set()
        if task is not None:
            await asyncio.wait_for(task, 60)
        else:
            await scaler._stop_all()
        await redis.aclose()


async def _until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_from_zero_one_request_is_answered_and_the_domain_scales_to_one(
    scale_settings: Settings, redis: Redis
) -> None:
    async with autoscaler(scale_settings) as scaler, FleetClient(settings=scale_settings) as client:
        pool = scaler.pools["ai"]
        await asyncio.sleep(1.0)  # idle polls at zero: nothing starts
        assert pool.live == {}
        result = await client.invoke("system/echo", {"cold": True}, timeout=30)
        assert result.output == {"cold": True}
        assert len(pool.live) == 1
    events = await read_last(redis, scale_settings, 10, domain="ai")
    assert [e.reason for e in events if e.desired == 1][-1] == "activate"


async def test_a_burst_scales_to_the_max_then_back_to_zero_after_the_cooldown(
    scale_settings: Settings, redis: Redis
) -> None:
    async with autoscaler(scale_settings) as scaler, FleetClient(settings=scale_settings) as client:
        pool = scaler.pools["ai"]
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(pool.live))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        ids = [await client.publish("system/sleep", {"seconds": 0.01}, domain="ai") for _ in range(2000)]
        results = await asyncio.gather(*(client.wait(i, timeout=120) for i in ids[-50:]))
        assert all(r.status == "completed" for r in results)
        await _until(lambda: not pool.live and not pool.draining, timeout=60)
        watcher.cancel()
    assert peak == 2  # the local max (FLEET_SCALE_MAX_PROCESSES)
    summary = await redis.xpending(scale_settings.topic_for("ai"), scale_settings.group_for("ai"))
    assert summary["pending"] == 0
    reasons = [e.reason for e in reversed(await read_last(redis, scale_settings, 50, domain="ai"))]
    assert reasons[0] == "activate"
    assert "scale-up" in reasons
    assert reasons[-1] == "cooldown"


async def _counted_burst(client: FleetClient, settings: Settings, namespace: str, n: int) -> list[str]:
    return [
        await client.publish(
            "testing/counted",
            {"redis": settings.redis_url, "key": f"{namespace}effect:{i}", "hold": 0.3},
            domain="ai",
        )
        for i in range(n)
    ]


async def _until_busy(redis: Redis, settings: Settings, consumers: int) -> None:
    """Wait until ``consumers`` consumers of the group each have entries in flight."""
    topic, group = settings.topic_for("ai"), settings.group_for("ai")
    for _ in range(600):
        busy = [c for c in await redis.xinfo_consumers(topic, group) if int(c["pending"]) > 0]
        if len(busy) >= consumers:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{consumers} consumers never had work in flight at once")


async def _assert_each_ran_once(redis: Redis, namespace: str, n: int) -> None:
    for i in range(n):
        runs, effect = await redis.mget(f"{namespace}effect:{i}:runs", f"{namespace}effect:{i}:effect")
        assert (int(runs or 0), int(effect or 0)) == (1, 1), f"request {i}"


async def test_scale_in_under_load_loses_nothing_runs_nothing_twice_and_waits_for_no_timeout(
    scale_settings: Settings, redis: Redis, namespace: str
) -> None:
    settings = scale_settings.model_copy(update={"scale_max_processes": 3})
    async with autoscaler(settings, run=False) as scaler, FleetClient(settings=settings) as client:
        await scaler.scale_to("ai", 3)
        ids = await _counted_burst(client, settings, namespace, 60)
        await _until_busy(redis, settings, 3)
        await scaler.scale_to("ai", 1)  # two of them drain while work is in flight and queued
        results = await asyncio.gather(*(client.wait(i, timeout=60) for i in ids))
        await scaler.drained()
    assert all(r.status == "completed" for r in results)
    assert len({r.worker for r in results}) >= 2  # the burst really was spread before scale-in
    await _assert_each_ran_once(redis, namespace, 60)


async def test_a_process_killed_while_it_drains_loses_nothing(
    scale_settings: Settings, redis: Redis, namespace: str
) -> None:
    settings = scale_settings.model_copy(update={"scale_max_processes": 2})
    async with autoscaler(settings, run=False) as scaler, FleetClient(settings=settings) as client:
        await scaler.scale_to("ai", 2)
        ids = await _counted_burst(client, settings, namespace, 40)
        await _until_busy(redis, settings, 2)
        pool = scaler.pools["ai"]
        await scaler.scale_to("ai", 1)
        [(victim_name, victim)] = list(pool.draining.items())
        victim.send_signal(signal.SIGKILL)  # dies mid-drain: its entries stay pending
        results = await asyncio.gather(*(client.wait(i, timeout=60) for i in ids))
        await scaler.drained()
    assert all(r.status == "completed" for r in results)
    assert victim_name not in pool.live
    summary = await redis.xpending(settings.topic_for("ai"), settings.group_for("ai"))
    assert summary["pending"] == 0


async def test_a_crashed_process_is_started_again_while_the_decision_wants_it(
    scale_settings: Settings, redis: Redis
) -> None:
    settings = scale_settings.model_copy(update={"scale_cooldown": 3.0})
    async with autoscaler(settings) as scaler, FleetClient(settings=settings) as client:
        pool = scaler.pools["ai"]
        assert (await client.invoke("system/echo", {}, timeout=30)).ok
        [(name, first)] = list(pool.live.items())
        first.send_signal(signal.SIGKILL)
        # Within the cooldown the decision wants one process: another starts, same name.
        await _until(lambda: name in pool.live and pool.live[name] is not first)
        after = await client.invoke("system/echo", {"after": "crash"}, timeout=30)
        assert after.output == {"after": "crash"}
        # The cooldown then stops it like any other.
        await _until(lambda: not pool.live and not pool.draining, timeout=30)
    reasons = [e.reason for e in await read_last(redis, settings, 20, domain="ai")]
    assert "cooldown" in reasons


class _Exited:
    """A process that already ended (a crash), as the autoscaler sees one."""

    pid = 1
    returncode = -9

    def send_signal(self, sig: int) -> None:
        raise ProcessLookupError

    def kill(self) -> None:
        raise ProcessLookupError

    async def wait(self) -> int:
        return -9


async def test_a_crashed_process_the_decision_no_longer_wants_is_not_started_again(
    scale_settings: Settings,
) -> None:
    starts: list[str] = []

    async def spawn(domain: str, consumer: str) -> Any:
        starts.append(consumer)
        return _Exited()

    redis = Redis.from_url(scale_settings.redis_url or "")
    try:
        scaler = Autoscaler(scale_settings, [get_domain("ai")], redis, spawn)
        pool = scaler.pools["ai"]
        pool.live["crashed-1"] = _Exited()
        pool.desired = 0
        await scaler._converge(pool)
        assert pool.live == {}
        assert starts == []
        pool.live["crashed-2"] = _Exited()
        pool.desired = 1
        await scaler._converge(pool)  # wanted, but it crashed a moment ago: not yet
        assert starts == []
        pool.restart_not_before = 0.0
        await scaler._converge(pool)
        assert len(starts) == 1
    finally:
        await redis.aclose()
