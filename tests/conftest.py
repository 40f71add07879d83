"""Shared fixtures: a real Redis-compatible server, isolated names per test, in-process workers.

The broker is ``FLEET_TEST_REDIS_URL`` when set (CI points it at the machine's Redis 7), else an
embedded Valkey started once per session. Each test gets its own topic prefix, results topic
and group prefix, so tests never see each other's streams and need no FLUSHALL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from structlog._config import BoundLoggerLazyProxy

from shared.assemble import create_worker
from shared.runtime.worker import Worker
from shared.settings import Settings
from shared.transports.redis import connect


@pytest.fixture(autouse=True)
def _uncached_loggers() -> None:
    """Every test logs through its own configuration.

    ``configure_logging`` caches each module-level logger on its first use (the speed it is
    meant for), so a logger first used in an earlier test would keep that test's processors,
    level filter and stderr, and ``structlog.testing.capture_logs`` would see nothing. Forget
    those caches and the configuration before each test."""
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if not name.startswith(("shared", "workers", "tests")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, BoundLoggerLazyProxy):
                vars(value).pop("bind", None)
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("FLEET_TEST_REDIS_URL")
    if url:
        yield url
        return
    from shared.tools.embedded import embedded_broker

    # Not under pytest's temp tree: a concurrent pytest session prunes old temp directories,
    # which would delete a live server's files from under it.
    data = Path(tempfile.mkdtemp(prefix="fleet-test-valkey-"))
    try:
        with embedded_broker(data) as embedded_url:
            yield embedded_url
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A unique prefix for this test's topics, groups and execution keys; whatever the test
    left under it is deleted afterwards (a shared FLEET_TEST_REDIS_URL server does not fill)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    client = SyncRedis.from_url(redis_url, socket_timeout=5)
    try:
        keys = [*client.scan_iter(match=f"{prefix}*", count=1000)]
        keys += client.scan_iter(match=f"fleet:last-error:{prefix}*", count=1000)
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


@pytest.fixture
def make_settings(redis_url: str, namespace: str, tmp_path: Any) -> Callable[..., Settings]:
    """Settings for this test: isolated names, fast timings; keyword overrides on top."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "home": tmp_path / "home",
            "topic_prefix": f"{namespace}functions.",
            "results_topic": f"{namespace}functions.results",
            "group_prefix": f"{namespace}fleet-",
            "consumer_name": "test-consumer",
            "block_ms": 100,
            "processing_timeout": 2.0,
            "redeliver_interval": 0.2,
            "shutdown_timeout": 5.0,
            "log_level": "warning",
            # No probe server unless a test asks for one: tests run side by side on one port.
            "metrics_port": 0,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run ``worker`` in the background for the block; stop and drain it after."""
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()
        raise RuntimeError("worker stopped before it was ready")
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def run_worker(settings: Settings) -> Callable[..., contextlib.AbstractAsyncContextManager[Worker]]:
    """``async with run_worker("ai") as w:`` — an in-process Redis-transport worker."""

    def factory(domain: str = "ai", worker_settings: Settings | None = None, **kwargs: Any) -> Any:
        return running(create_worker(domain, worker_settings or settings, **kwargs))

    return factory


async def read_results(
    redis: Redis, topic: str, expected: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Wait until ``topic`` holds ``expected`` entries (or time runs out); return their events."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        entries = await redis.xrange(topic)
        if len(entries) >= expected or asyncio.get_running_loop().time() > deadline:
            return [orjson.loads(fields[b"data"]) for _, fields in entries]
        await asyncio.sleep(0.02)
