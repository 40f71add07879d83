"""Profile the worker's hot path in-process: ``python -m shared.tools.bench.profiling``.

Pre-fills a fresh request stream with ``n`` ``system/echo`` requests, then runs a real worker
(:func:`shared.assemble.create_worker`, Redis transport, default middleware) in this process
until every result is published, twice: once plain (CPU µs per request, no profiler overhead)
and once under :mod:`cProfile` (``--mode plain`` / ``--mode profile``: only one of them;
sample the plain one with ``py-spy record -- python -m shared.tools.bench.profiling --mode plain``).
Prints the top
functions by own time and by cumulative time; ``--output`` keeps the ``.prof`` for snakeviz /
``python -m pstats``.

With a pre-filled stream every ``XREADGROUP`` returns a full batch, so this is the saturated
throughput regime of ``fleet bench``; the bench process's own publishing and reading are not in
the picture. The broker is ``--redis-url``, else ``FLEET_REDIS_URL``, else an embedded Valkey;
names live under a fresh namespace and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import time
import uuid
from collections.abc import Iterator, Sequence

from redis.asyncio import Redis

from shared.assemble import create_transport, create_worker
from shared.domains import get_domain
from shared.logging import configure_logging
from shared.settings import Settings
from shared.tools.bench.measure import PUBLISH_CHUNK, echo_requests
from shared.transports.base import Delivery, Settlement, Transport
from shared.transports.redis import connect

__all__ = ["main", "run_pass"]


async def _prefill(redis: Redis, topic: str, n: int) -> None:
    requests = echo_requests(n, tag="profile")
    for start in range(0, n, PUBLISH_CHUNK):
        pipe = redis.pipeline(transaction=False)
        for _, body in requests[start : start + PUBLISH_CHUNK]:
            pipe.xadd(topic, {"data": body, "metadata": b"{}"})
        await pipe.execute()


async def run_pass(
    settings: Settings, domain: str, n: int, profiler: cProfile.Profile | None
) -> tuple[float, float]:
    """Answer ``n`` pre-filled requests with an in-process worker; returns ``(wall seconds,
    CPU seconds of this process)`` from the worker being ready (start-up excluded) to the last
    result published. The streams of ``settings`` are deleted afterwards."""
    topic = settings.topic_for(domain)
    redis = connect(settings.redis_url or "")
    try:
        await _prefill(redis, topic, n)
        transport = create_transport(domain, settings)
        sizes = _count_batches(transport)
        worker = create_worker(domain, settings, transport)
        task = asyncio.create_task(worker.run())
        # From ready on: start-up (migrations, built-in sync, imports) is not per-request cost.
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        try:
            while await redis.xlen(settings.results_topic) < n:
                if task.done():
                    task.result()
                    raise RuntimeError("the worker stopped early")
                await asyncio.sleep(0.02)
        finally:
            if profiler is not None:
                profiler.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            worker.stop()
            await asyncio.wait_for(task, 30)
        print(
            f"  batches: {len(sizes['receive'])} reads of {_mean(sizes['receive']):.1f} on average, "
            f"{len(sizes['settle'])} settles of {_mean(sizes['settle']):.1f} on average"
        )
        return wall, cpu
    finally:
        # Everything under the run's namespace: streams and the executions' claim keys.
        namespace = settings.group_prefix.removesuffix("fleet-")
        keys = [f"fleet:last-error:{topic}"]
        async for key in redis.scan_iter(match=f"{namespace}*", count=1000):
            keys.append(key)
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
        await redis.aclose()


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def _count_batches(transport: Transport) -> dict[str, list[int]]:
    """Record the size of every non-empty ``receive`` and every ``settle`` of ``transport``."""
    sizes: dict[str, list[int]] = {"receive": [], "settle": []}
    receive, settle = transport.receive, transport.settle

    async def counting_receive(max_count: int) -> Sequence[Delivery]:
        batch = await receive(max_count)
        if batch:
            sizes["receive"].append(len(batch))
        return batch

    async def counting_settle(settlements: Sequence[Settlement]) -> None:
        sizes["settle"].append(len(settlements))
        await settle(settlements)

    setattr(transport, "receive", counting_receive)  # noqa: B010
    setattr(transport, "settle", counting_settle)  # noqa: B010
    return sizes


@contextlib.contextmanager
def _broker(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from shared.tools.embedded import embedded_broker

    with embedded_broker() as embedded_url:
        yield embedded_url


def _settings(base: Settings, url: str) -> Settings:
    namespace = f"fleet-profile-{uuid.uuid4().hex[:10]}."
    return base.model_copy(
        update={
            "redis_url": url,
            "topic_prefix": f"{namespace}functions.",
            "results_topic": f"{namespace}functions.results",
            "group_prefix": f"{namespace}fleet-",
            "consumer_name": f"{namespace}worker",
            "log_level": "warning",
        }
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``python -m shared.tools.bench.profiling --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.tools.bench.profiling", description="Profile an in-process worker."
    )
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--domain", default="ai")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--output", default=None, help="write the cProfile stats here")
    parser.add_argument(
        "--mode",
        choices=("both", "plain", "profile"),
        default="both",
        help="plain: no cProfile (to sample with py-spy); profile: only the cProfile pass",
    )
    args = parser.parse_args(argv)

    base = Settings()
    domain = get_domain(args.domain).name
    configure_logging(base.model_copy(update={"log_level": "warning"}))
    with _broker(args.redis_url or base.redis_url) as url:
        if args.mode != "profile":
            wall, cpu = asyncio.run(run_pass(_settings(base, url), domain, args.n, None))
            print(
                f"plain:    {args.n} requests in {wall:.2f}s = {args.n / wall:,.0f}/s; "
                f"CPU {cpu / args.n * 1e6:.1f} us/request"
            )
        if args.mode == "plain":
            return
        profiler = cProfile.Profile()
        wall, cpu = asyncio.run(run_pass(_settings(base, url), domain, args.n, profiler))
        print(
            f"profiled: {args.n} requests in {wall:.2f}s = {args.n / wall:,.0f}/s; "
            f"CPU {cpu / args.n * 1e6:.1f} us/request (with cProfile overhead)"
        )
    if args.output:
        profiler.dump_stats(args.output)
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(sort).print_stats(args.top)
        print(f"\n===== by {sort} =====")
        print(out.getvalue().split("\n", 6)[-1] if "ncalls" in out.getvalue() else out.getvalue())


if __name__ == "__main__":
    main()
