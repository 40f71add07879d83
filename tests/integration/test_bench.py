"""`fleet bench` end to end on the test broker: a small run produces one well-formed JSON
report and leaves nothing behind. Speed is never asserted here; `fleet bench` measures it."""

from __future__ import annotations

import json
import math

import redis as redis_sync
from click.testing import CliRunner

from shared.tools.bench import REPORT_KEYS
from shared.tools.cli.main import cli


def test_bench_json_report(redis_url: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "--json", "-n", "200", "--rate", "200", "--redis-url", redis_url],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output

    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    report = json.loads(lines[0])
    assert isinstance(report, dict)
    assert set(REPORT_KEYS) <= set(report)

    assert report["n"] == 200
    assert report["latency_n"] == 200
    assert report["rate"] == 200
    for key in (
        "throughput_per_s",
        "baseline_per_s",
        "ratio",
        "ceiling_per_s",
        "ceiling_ratio",
        "p50_ms",
        "p99_ms",
    ):
        value = report[key]
        assert isinstance(value, float), (key, value)
        assert math.isfinite(value), (key, value)
        assert value > 0, (key, value)
    for key in ("rss_idle_mb", "rss_after_mb"):
        assert isinstance(report[key], float), (key, report[key])
        assert 0 < report[key] < 10_000, (key, report[key])
    assert report["p50_ms"] <= report["p99_ms"]
    # Cold starts: five requests, each to the domain at zero processes, each answered.
    rounds = report["cold_start_rounds_ms"]
    assert len(rounds) == 5
    assert all(isinstance(v, float) and v > 0 for v in rounds)
    assert report["cold_start_ms"] == sorted(rounds)[2]
    assert math.isclose(report["ratio"], report["throughput_per_s"] / report["baseline_per_s"], rel_tol=0.01)
    ceiling = report["ceiling_per_s"]
    assert math.isclose(report["ceiling_ratio"], report["throughput_per_s"] / ceiling, rel_tol=0.01)
    assert len(report["ceiling_rounds"]) == report["rounds"]  # every round answered all n requests

    # Cleaned up: no stream, group or note of the run's namespace is left on the server.
    namespace = report["namespace"]
    client = redis_sync.Redis.from_url(redis_url)
    try:
        left = [k for pattern in (f"{namespace}*", f"*{namespace}*") for k in client.scan_iter(match=pattern)]
    finally:
        client.close()
    assert left == []
