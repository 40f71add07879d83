"""A request waiting on a limit is quiet in the logs and counted in the metrics: each deferral is
a ``debug`` line (never ``info``: under load a limited function is deferred over and over) and
one more in ``fleet_deferrals_total{reason}``."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import structlog.testing
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.client import FleetClient
from shared.functions import FunctionTable
from shared.limiter.store import LimitStore
from shared.settings import Settings
from tests.conftest import running
from tests.integration.limited_functions import declare

DEFERRALS = 4


async def test_deferrals_are_debug_lines_and_counted_by_reason(
    make_settings: Callable[..., Settings], redis: Redis, namespace: str
) -> None:
    table = FunctionTable()
    declare(table)
    settings = make_settings(processing_timeout=30.0, log_level="debug")
    store = LimitStore(redis, settings.group_prefix)
    slot = store.running_key("test/one-at-a-time")
    assert (await store.admit("outsider", running=(slot, 1), rates=[], lease=60)).admitted
    worker = create_worker("ai", settings, table=table)
    # capture_logs swaps the processors only: a level filter left by an earlier test's
    # configure_logging would drop the debug lines before they are captured.
    structlog.reset_defaults()
    with structlog.testing.capture_logs() as logs:
        async with running(worker), FleetClient(settings=settings) as client:
            execution_id = await client.publish("test/one-at-a-time", {"log": f"{namespace}log"}, domain="ai")
            deadline = time.monotonic() + 30
            while worker.metrics.deliveries.get("defer", 0) < DEFERRALS:
                assert time.monotonic() < deadline, worker.metrics.deliveries
                await asyncio.sleep(0.05)
            await store.release(slot, "outsider")
            result = await client.wait(execution_id, timeout=30)
    assert result.status == "completed"
    deferred = [e for e in logs if e["event"] == "execution deferred"]
    assert len(deferred) >= DEFERRALS
    assert {e["log_level"] for e in deferred} == {"debug"}
    assert {e["cause"] for e in deferred} == {"concurrency_limit"}
    assert not [e for e in logs if e["log_level"] == "info" and e.get("execution_id") == execution_id]
    # Every deferral is counted by what it waited for, and nothing else was.
    counted = worker.metrics.deferrals
    assert counted == {"concurrency_limit": worker.metrics.deliveries["defer"]}
    text = worker.metrics.render().decode()
    found = re.search(r'^fleet_deferrals_total\{reason="concurrency_limit"\} (\S+)$', text, re.M)
    assert found is not None, text
    assert float(found.group(1)) == counted["concurrency_limit"]
