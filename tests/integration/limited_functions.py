"""Built-ins with limits for the limits tests: each run records when its handler started and
ended (epoch seconds) and which worker ran it, in the Redis list the input names."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from shared.functions import ExecutionContext, FunctionTable, builtin
from shared.limits import RateLimit
from shared.transports.redis import connect

RATE = RateLimit(limit=4, period_seconds=1.0)


async def _run(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    started = time.time()
    await asyncio.sleep(float(data.get("seconds", 0)))
    ended = time.time()
    assert ctx.settings is not None
    assert ctx.settings.redis_url
    redis = connect(ctx.settings.redis_url)
    try:
        record = {
            "id": ctx.execution_id,
            "start": started,
            "end": ended,
            "worker": ctx.settings.consumer_name,
        }
        await redis.rpush(data["log"], orjson.dumps(record))
    finally:
        await redis.aclose()
    return {"start": started, "end": ended}


def declare(table: FunctionTable) -> None:
    """Declare the test built-ins into ``table``."""
    builtin("test/limited", domain=None, table=table, max_concurrency=2)(_run)
    builtin("test/one-at-a-time", domain=None, table=table, max_concurrency=1)(_run)
    builtin(
        "test/per-channel", domain=None, table=table, max_concurrency=1, concurrency_key="{{input.channel}}"
    )(_run)
    builtin("test/rated", domain=None, table=table, rate_limit=RATE)(_run)
    builtin("test/free", domain=None, table=table)(_run)
