"""`fleet bench --history`: the measured worker runs with the registry, history and claims on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from click.testing import CliRunner

from shared.tools.cli.main import cli


def test_bench_with_history_records_every_request(redis_url: str, migrated_url: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--json",
            "--history",
            "--no-baseline",
            "-n",
            "100",
            "--rate",
            "100",
            "--latency-n",
            "20",
            "--rounds",
            "1",
            "--redis-url",
            redis_url,
        ],
        env={"FLEET_DATABASE_URL": migrated_url},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["history"] is True
    assert report["throughput_per_s"] > 0

    async def count() -> Any:
        connection = await asyncpg.connect(migrated_url)
        try:
            return await connection.fetchrow(
                "SELECT count(*) AS total, count(*) FILTER (WHERE status = 'completed') AS completed,"
                " count(DISTINCT function_slug) AS functions FROM function_executions"
            )
        finally:
            await connection.close()

    row = asyncio.run(count())
    # Warm-up, throughput and latency requests: every one has a completed row.
    assert row["total"] >= 120
    assert row["completed"] == row["total"]
    assert row["functions"] == 1


def test_bench_without_history_leaves_the_database_alone(redis_url: str, migrated_url: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--json",
            "--no-baseline",
            "-n",
            "50",
            "--rate",
            "100",
            "--latency-n",
            "10",
            "--rounds",
            "1",
            "--redis-url",
            redis_url,
        ],
        env={"FLEET_DATABASE_URL": migrated_url},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["history"] is False

    async def count() -> Any:
        connection = await asyncpg.connect(migrated_url)
        try:
            return await connection.fetchval("SELECT count(*) FROM function_executions")
        finally:
            await connection.close()

    assert asyncio.run(count()) == 0
