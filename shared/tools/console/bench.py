"""The console's benchmark (`fleet ui --bench`, or ``python -m shared.tools.console.bench URL``):
seeds a scratch database on a PostgreSQL server with 1,000 functions and 1,000,000 executions,
serves the console in-process and prints p50/p95 of the server time (the ``Server-Timing``
header: handler, queries and rendering, not the network) and the size of each heavy page.
The scratch database is dropped afterwards."""

from __future__ import annotations

import asyncio
import math
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.registry.migrator import migrate
from shared.settings import Settings

__all__ = ["run_bench", "seed"]

SEED_CHUNK = 100_000


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def seed(url: str, *, functions: int, executions: int, echo: Any = print) -> None:
    """``functions`` http functions and ``executions`` history rows (10 % failed) spread over
    the last days, newest first in id order."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            """INSERT INTO functions (name, slug, description, plugin_id, domain, execution_type,
                   webhook_url, webhook_method, input_schema, tags, is_enabled, is_deprecated)
               SELECT 'Function ' || i, 'bench/fn-' || lpad(i::text, 5, '0'),
                      'Benchmark function number ' || i || ' calls a webhook', 'bench', 'http', 'http',
                      'https://example.com/hook/' || i, 'POST',
                      '{"type": "object", "properties": {"text": {"type": "string"}}}'::jsonb,
                      ARRAY['bench', 'group-' || (i % 10)], i % 17 <> 0, i % 23 = 0
               FROM generate_series(1, $1) AS i""",
            functions,
        )
        done = 0
        while done < executions:
            count = min(SEED_CHUNK, executions - done)
            await connection.execute(
                """INSERT INTO function_executions (id, function_slug, workflow_execution_id, node_id,
                       status, input, output, error, attempt, started_at, completed_at, duration_ms,
                       worker, created_at)
                   SELECT 'bench-' || i, 'bench/fn-' || lpad((1 + i % $3)::text, 5, '0'),
                          'wf-' || (i / 10), 'node-' || (i % 10),
                          CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END,
                          jsonb_build_object('text', 'hello ' || i),
                          CASE WHEN i % 10 = 0 THEN NULL ELSE jsonb_build_object('ok', true) END,
                          CASE WHEN i % 10 = 0 THEN '{"code": "http_error", "message": "502"}'::jsonb END,
                          1, ts, ts + interval '20 ms', 20 + i % 50, 'fleet-http/bench', ts
                   FROM generate_series($1::bigint, $2::bigint) AS i,
                        LATERAL (SELECT now() - (i || ' seconds')::interval / 10 AS ts) AS t""",
                done,
                done + count - 1,
                functions,
            )
            done += count
            echo(f"seeded {done:,} executions")
        await connection.execute("ANALYZE functions; ANALYZE function_executions")
    finally:
        await connection.close()


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)] if ordered else float("nan")


async def run_bench(
    server_url: str,
    *,
    functions: int = 1_000,
    executions: int = 1_000_000,
    rounds: int = 60,
    echo: Any = print,
) -> dict[str, dict[str, float]]:
    """Seed, measure, drop; returns ``{path: {"p50_ms", "p95_ms", "bytes"}}`` (also printed)."""
    from aiohttp.test_utils import TestClient, TestServer

    from shared.tools.console.app import create_app

    name = f"fleet_console_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    report: dict[str, dict[str, float]] = {}
    try:
        await migrate(url, log_applied=False)
        started = time.perf_counter()
        await seed(url, functions=functions, executions=executions, echo=echo)
        echo(f"seeded in {time.perf_counter() - started:.1f} s")
        settings = Settings(database_url=url, redis_url=None, ui_token=None)
        app = create_app(settings, host="127.0.0.1")
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            first = await (await client.get("/api/v1/executions?limit=50")).json()
            cursor = first["next_cursor"]
            deep = None
            page = 0
            while cursor and page < 200:  # 10,000 rows in: keyset costs the same at any depth
                body = await (await client.get(f"/api/v1/executions?limit=50&cursor={cursor}")).json()
                cursor, page = body["next_cursor"], page + 1
                deep = cursor or deep
            paths = [
                "/functions",
                "/functions?q=fn-00042",
                "/api/v1/functions",
                "/executions",
                f"/executions?cursor={deep}",
                "/executions?function=bench/fn-00007",
                "/executions?status=failed",
                "/executions?workflow_execution_id=wf-12345",
                "/functions/bench/fn-00007",
            ]
            for path in paths:
                times, size = [], 0
                for n in range(rounds + 5):
                    response = await client.get(path)
                    body_bytes = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{path} answered {response.status}: {body_bytes[:200]!r}")
                    timing = response.headers["Server-Timing"].split("dur=", 1)[1]
                    if n >= 5:
                        times.append(float(timing))
                    size = len(body_bytes)
                report[path] = {
                    "p50_ms": _percentile(times, 50),
                    "p95_ms": _percentile(times, 95),
                    "bytes": size,
                }
        width = max(len(p) for p in report)
        echo(f"{'page':<{width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'KB':>7}")
        for path, r in report.items():
            echo(f"{path:<{width}}  {r['p50_ms']:8.2f}  {r['p95_ms']:8.2f}  {r['bytes'] / 1024:7.1f}")
        return report
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m shared.tools.console.bench postgresql://user@host:5432/postgres")
    asyncio.run(run_bench(sys.argv[1]))
