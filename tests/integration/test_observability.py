"""Probes and metrics of a real worker over HTTP (direct mode, real Redis): /healthz, /readyz
through start, run and drain, /metrics parsed as Prometheus text, hostile error codes, the
published address and the backlog gauges."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.client import FleetClient
from shared.runtime.extension import BaseExtension, WorkerContext
from shared.runtime.metrics import EXECUTION_OUTCOMES, OTHER
from shared.runtime.probes import endpoints_key
from shared.settings import Settings
from tests.conftest import running
from tests.observability import free_port, get, parse

HOSTILE_CODES = [
    'x"} 1\nfleet_fake 1',
    "} 1\nfleet_fake 1",
    'quote"quote',
    "new\nline",
    "back\\slash",
]


class Gate(BaseExtension):
    """Holds the worker's start until :attr:`open` is set (as a slow dependency would)."""

    name = "gate"

    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def start(self, ctx: WorkerContext) -> bool:
        await self.open.wait()
        return True


async def test_hostile_error_codes_are_counted_as_other_and_inject_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port)
    async with running(create_worker("ai", settings)), FleetClient(settings=settings) as client:
        for code in HOSTILE_CODES:
            result = await client.invoke("system/fail", {"code": code}, timeout=20)
            assert result.error is not None
            assert result.error.code == code  # the caller still gets its code back
        await client.invoke("system/echo", {"a": 1}, timeout=20)
        status, content_type, text = await get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    names, samples = parse(text)
    assert not any(line.startswith("fleet_fake") for line in text.splitlines())
    assert "fleet_fake" not in names
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "fleet_executions_total"
    }
    assert set(outcomes) <= EXECUTION_OUTCOMES
    assert outcomes[OTHER] == len(HOSTILE_CODES)
    assert samples[("fleet_executions_total", (("function", "system/echo"), ("outcome", "completed")))] == 1
    assert samples[("fleet_deliveries_total", (("outcome", "ack"),))] == len(HOSTILE_CODES) + 1
    assert samples[("fleet_execution_duration_seconds_count", (("function", "system/fail"),))] == len(
        HOSTILE_CODES
    )
    assert {"process_resident_memory_bytes", "fleet_build_info", "fleet_deliveries_in_flight"} <= {
        name for name, _ in samples
    }
    info = [dict(labels) for name, labels in samples if name == "fleet_build_info"]
    assert [(i["domain"], i["transport"]) for i in info] == [("ai", "redis")]
    # The backlog of the domain's group, read from Redis at the scrape.
    assert samples[("fleet_pending_messages", (("domain", "ai"),))] == 0
    assert samples[("fleet_consumer_lag_messages", (("domain", "ai"),))] == 0


async def test_readyz_follows_start_run_and_drain(make_settings: Callable[..., Settings]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(metrics_port=port, shutdown_timeout=10)
    gate = Gate()
    worker = create_worker("ai", settings, extensions=[gate])
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):  # the probe server starts first
            try:
                status, _, body = await get(f"{base}/healthz")
                break
            except OSError:
                await asyncio.sleep(0.05)
        assert (status, body) == (200, {"alive": True})
        status, _, report = await get(f"{base}/readyz")
        assert status == 503
        assert (report["ready"], report["state"]) == (False, "starting")

        gate.open.set()
        await asyncio.wait_for(worker.ready.wait(), 10)
        status, _, report = await get(f"{base}/readyz")
        assert status == 200
        assert report["ready"] is True
        assert (report["state"], report["domain"], report["transport"]) == ("running", "ai", "redis")

        async with FleetClient(settings=settings) as client:
            await client.publish("system/sleep", {"seconds": 1.5})
            for _ in range(200):
                if worker.executing:
                    break
                await asyncio.sleep(0.02)
            worker.stop()
            await asyncio.sleep(0.2)
            status, _, report = await get(f"{base}/readyz")
            assert status == 503  # draining: no longer ready, still alive
            assert report["state"] == "draining"
            assert (await get(f"{base}/healthz"))[0] == 200
    finally:
        worker.stop()
        gate.open.set()
        await asyncio.wait_for(task, 30)


async def test_the_address_is_published_while_running_and_withdrawn_at_stop(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    port = free_port()
    settings = make_settings(metrics_port=port)
    key = endpoints_key(settings)
    async with running(create_worker("ai", settings)):
        entry: Any = None
        for _ in range(100):
            entry = await redis.hget(key, settings.consumer_name)
            if entry is not None:
                break
            await asyncio.sleep(0.05)
        assert entry is not None
        published = orjson.loads(entry)
        assert published["url"] == f"http://127.0.0.1:{port}"
        assert (published["domain"], published["worker"]) == (
            "ai",
            f"{settings.group_for('ai')}/test-consumer",
        )
        assert 0 < await redis.ttl(key) <= 30
    assert await redis.hget(key, settings.consumer_name) is None


async def test_port_zero_serves_nothing(make_settings: Callable[..., Settings], redis: Redis) -> None:
    settings = make_settings(metrics_port=0)
    async with running(create_worker("ai", settings)) as worker:
        probes = [e for e in worker.extensions if e.name == "probes"]
        assert len(probes) == 1
        assert getattr(probes[0], "url", None) is None
    assert await redis.exists(endpoints_key(settings)) == 0
