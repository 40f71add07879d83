"""Cold start, measured as a person meets it: publish one request to a domain that runs no
process, time it until its result arrives (``cold_start_ms``, median of the rounds).

The local autoscaler (shared/tools/scaling/autoscaler.py) runs in this process on the bench's
own names and spawns real `fleet worker` processes, exactly as `fleet up` does; between rounds
the domain is drained back to zero."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from shared.client import FleetClient
from shared.domains import get_domain
from shared.settings import Settings
from shared.tools.scaling.autoscaler import Autoscaler

__all__ = ["measure_cold_start"]

#: Seconds one round may take before the bench gives up on it.
ROUND_TIMEOUT = 60.0


async def measure_cold_start(
    settings: Settings, domain: str, argv: list[str], env: Mapping[str, str], rounds: int = 5
) -> dict[str, Any]:
    """``{"cold_start_ms": median, "cold_start_rounds_ms": [...]}`` over ``rounds`` rounds.

    ``argv``/``env``: how to start one worker process of ``domain`` (the bench's worker target;
    the consumer name is set per process)."""
    redis = Redis.from_url(settings.redis_url or "")

    async def spawn(_: str, consumer: str) -> Any:
        return await asyncio.create_subprocess_exec(
            *argv,
            env={**env, "FLEET_CONSUMER_NAME": consumer},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    scaler = Autoscaler(settings, [get_domain(domain)], redis, spawn)
    stop = asyncio.Event()
    runner = asyncio.create_task(scaler.run(stop))
    times: list[float] = []
    try:
        async with FleetClient(settings=settings) as client:
            for _ in range(rounds):
                await scaler.scale_to(domain, 0)
                await scaler.drained()
                await asyncio.sleep(0.2)  # the loop is back to waiting on the stream
                started = time.perf_counter()
                result = await client.invoke(
                    "system/echo", {"cold": True}, domain=domain, timeout=ROUND_TIMEOUT
                )
                times.append((time.perf_counter() - started) * 1000)
                if not result.ok:
                    raise RuntimeError(f"cold-start request failed: {result.error}")
    finally:
        stop.set()
        await asyncio.wait_for(runner, ROUND_TIMEOUT)
        await redis.aclose()
    return {
        "cold_start_ms": round(statistics.median(times), 1),
        "cold_start_rounds_ms": [round(t, 1) for t in times],
    }
