"""The benchmark's baseline: the least a Redis Streams consumer can do and still answer.

``python -m shared.tools.bench.baseline URL TOPIC GROUP RESULTS_TOPIC [options]``

One loop, no validation, no middleware, no error handling beyond "stop on a signal":

``XREADGROUP (COUNT n, BLOCK ms) → json-decode each request → build its result CloudEvent →
one MULTI/EXEC pipeline of result XADDs (MAXLEN ~) + one XACK``.

That is the same Redis work per message as the fleet worker (``shared.runtime.worker`` with the
Redis transport): the same client library (redis-py + hiredis), the same batch bound
(``min(concurrency, batch_size)``, which the runner passes as ``--count``), the same
transactional settle, and a result event with the same fields (the ``system/echo`` output is the
input). What it leaves out is exactly what the worker adds on top: validation, middleware,
timeouts, concurrency management, logging, metrics and redelivery. The ratio of the two
throughputs is therefore the cost of the runtime.

With ``--ceiling`` it is the second reference, the cheapest *correct* consumer: the runner reads
500 per call, the results and the XACK go in one non-transactional pipeline, and a result is the
least the bench reads (``executionid`` and ``status``). Correct because each request is still
answered and acknowledged after its result is written; nothing the fleet promises beyond that is
kept. The ratio to it is how far the runtime is from what Redis and Python allow here.

Both run on the event loop the worker runs on (``FLEET_EVENT_LOOP``, ``shared/eventloop.py``), so
the ratios compare consumers, not loops.

Contract: creates ``GROUP`` on ``TOPIC`` (``MKSTREAM``, from id 0) if missing, consumes as
``--consumer`` until SIGTERM/SIGINT, then exits 0 within about ``--block-ms``. It does not
delete anything; the runner cleans up.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from shared.eventloop import run

__all__ = ["main", "serve"]

_EMPTY_METADATA = b"{}"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def serve(
    *,
    url: str,
    topic: str,
    group: str,
    results_topic: str,
    consumer: str = "baseline",
    count: int = 32,
    block_ms: int = 1000,
    results_maxlen: int = 100_000,
    domain: str = "ai",
    ceiling: bool = False,
    stop: asyncio.Event | None = None,
) -> int:
    """Consume ``topic`` as ``consumer`` of ``group`` until ``stop`` is set (or a signal when
    ``stop`` is ``None``); returns the number of requests answered."""
    redis = Redis.from_url(url, decode_responses=False)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    source = f"fleet/{domain}"
    worker_name = f"{group}/{consumer}"
    answered = 0
    try:
        try:
            await redis.xgroup_create(topic, group, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        while not stop.is_set():
            response: Any = await redis.xreadgroup(group, consumer, {topic: ">"}, count=count, block=block_ms)
            if not response:
                continue
            entries = response[0][1]
            pipe = redis.pipeline(transaction=not ceiling)
            ids = []
            if ceiling:
                for entry_id, fields in entries:
                    execution_id = orjson.loads(fields[b"data"])["id"]
                    minimal = orjson.dumps({"executionid": execution_id, "status": "completed"})
                    pipe.xadd(results_topic, {"data": minimal}, maxlen=results_maxlen, approximate=True)
                    ids.append(entry_id)
                pipe.xack(topic, group, *ids)
                await pipe.execute()
                answered += len(ids)
                continue
            for entry_id, fields in entries:
                started_at = _now_iso()
                started = time.monotonic()
                request = orjson.loads(fields[b"data"])
                execution_id = request["id"]
                data = request["data"]
                function = data["function"]
                result = {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "source": source,
                    "type": "fleet.execution.completed",
                    "subject": function,
                    "time": _now_iso(),
                    "datacontenttype": "application/json",
                    "executionid": execution_id,
                    "data": {
                        "execution_id": execution_id,
                        "function": function,
                        "status": "completed",
                        "attempt": 1,
                        "started_at": started_at,
                        "completed_at": _now_iso(),
                        "duration_ms": round((time.monotonic() - started) * 1000, 3),
                        "worker": worker_name,
                        "output": data.get("input", {}),
                    },
                }
                pipe.xadd(
                    results_topic,
                    {"data": orjson.dumps(result), "metadata": _EMPTY_METADATA},
                    maxlen=results_maxlen,
                    approximate=True,
                )
                ids.append(entry_id)
            pipe.xack(topic, group, *ids)
            await pipe.execute()
            answered += len(ids)
    finally:
        await redis.aclose()
    return answered


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``python -m shared.tools.bench.baseline --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.tools.bench.baseline",
        description="The fleet benchmark's minimal Redis Streams consumer.",
    )
    parser.add_argument("url")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("results_topic")
    parser.add_argument("--consumer", default="baseline")
    parser.add_argument("--count", type=int, default=32, help="XREADGROUP COUNT (the worker's batch bound)")
    parser.add_argument("--block-ms", type=int, default=1000)
    parser.add_argument("--results-maxlen", type=int, default=100_000)
    parser.add_argument("--domain", default="ai", help="only names the result's source")
    parser.add_argument("--ceiling", action="store_true", help="the cheapest correct consumer (see above)")
    parser.add_argument("--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    args = parser.parse_args(argv)
    run(
        serve(
            url=args.url,
            topic=args.topic,
            group=args.group,
            results_topic=args.results_topic,
            consumer=args.consumer,
            count=args.count,
            block_ms=args.block_ms,
            results_maxlen=args.results_maxlen,
            domain=args.domain,
            ceiling=args.ceiling,
        ),
        args.event_loop,
    )


if __name__ == "__main__":
    main()
