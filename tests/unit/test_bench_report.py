"""The bench report judges a run by the targets of its mode: the foundation's without history,
the registry issue's (ratio >= 0.3, no latency target) with it."""

from __future__ import annotations

from typing import Any

from shared.tools.cli.bench import format_report


def report(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "domain": "ai",
        "server": "redis://127.0.0.1:6379",
        "server_version": "redis 7.0.15",
        "cpus": 2,
        "python": "3.11.7",
        "n": 5000,
        "latency_n": 5000,
        "rate": 1000.0,
        "achieved_rate_per_s": 1000.0,
        "concurrency": 32,
        "batch_size": 100,
        "throughput_rounds": [4000.0],
        "baseline_rounds": [10000.0],
        "throughput_per_s": 4000.0,
        "baseline_per_s": 10000.0,
        "ratio": 0.4,
        "cpu_us_per_request": 200.0,
        "baseline_cpu_us_per_request": 70.0,
        "p50_ms": 5.0,
        "baseline_p50_ms": 0.9,
        "p99_ms": 20.0,
        "baseline_p99_ms": 3.0,
        "rss_idle_mb": 50.0,
        "baseline_rss_idle_mb": 30.0,
        "rss_after_mb": 52.0,
        "rss_peak_mb": 53.0,
        "duration_s": 20.0,
        "worker_start_s": 1.2,
        "history": False,
    }
    values.update(overrides)
    return values


def line(text: str, label: str) -> str:
    return next(row for row in text.splitlines() if row.strip().startswith(label))


def test_without_history_the_foundation_targets_apply() -> None:
    text = format_report(report())
    assert "(target >= 0.6: MISSED)" in line(text, "ratio")
    assert "(target < 2: MISSED)" in line(text, "latency p50")
    assert "(target < 60: ok)" in line(text, "RSS idle")


def test_with_history_the_registry_target_applies_and_latency_is_only_reported() -> None:
    text = format_report(report(history=True))
    assert "(target >= 0.3: ok)" in line(text, "ratio")
    assert "target" not in line(text, "latency p50")
    assert "target" not in line(text, "latency p99")
    assert "(target >= 0.3: MISSED)" in line(format_report(report(history=True, ratio=0.25)), "ratio")


def test_the_ceiling_ratio_and_cpu_targets_are_judged() -> None:
    text = format_report(report(ceiling_per_s=30000.0, ceiling_ratio=0.133))
    assert "(target >= 0.6: MISSED)" in line(text, "ratio worker/ceiling")
    assert "30,000" in line(text, "ceiling (req/s)")
    assert "(target < 40: MISSED)" in line(text, "CPU per request")
    assert "(target >= 0.3: ok)" in line(
        format_report(report(history=True, ceiling_ratio=0.31)), "ratio worker/ceiling"
    )


def test_other_fleet_processes_on_the_machine_are_found() -> None:
    import subprocess
    import sys

    from shared.tools.bench.runner import other_fleet_processes

    # A process whose command line reads like a fleet worker's (the bench looks at /proc).
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "shared.tools.cli.main worker ai"]
    )
    try:
        for _ in range(100):
            found = dict(other_fleet_processes())
            if other.pid in found:
                break
        assert "shared.tools.cli.main worker ai" in found[other.pid]
    finally:
        other.kill()
        other.wait()
    assert other.pid not in dict(other_fleet_processes())
