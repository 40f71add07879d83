"""`fleet bench`: throughput, latency and memory of one worker process, against a baseline.

* :mod:`shared.tools.bench.runner` — runs the worker and the baseline as child processes on one
  server and measures them the same way (:func:`~shared.tools.bench.runner.run_bench`);
* :mod:`shared.tools.bench.measure` — the instruments (publishers, the results reader, percentiles,
  ``/proc`` statistics);
* :mod:`shared.tools.bench.baseline` — the minimal hand-written Redis Streams consumer the worker is
  compared with (``python -m shared.tools.bench.baseline``).

Performance is measured here and never asserted in tests; the targets below are what the
report compares against.
"""

from __future__ import annotations

__all__ = ["HISTORY_TARGETS", "REPORT_KEYS", "TARGETS", "targets_for"]

#: Keys every report has (``fleet bench --json``); reports may carry more.
REPORT_KEYS = (
    "n",
    "throughput_per_s",
    "baseline_per_s",
    "ratio",
    "p50_ms",
    "p99_ms",
    "rss_idle_mb",
    "rss_after_mb",
)

#: The goals from the benchmark issue: ``(report key, comparison, bound)``.
TARGETS = (
    ("ratio", ">=", 0.6),
    ("p50_ms", "<", 2.0),
    ("p99_ms", "<", 10.0),
    ("rss_idle_mb", "<", 60.0),
    # One request to a domain at zero processes under `fleet up`'s autoscaler → its result.
    ("cold_start_ms", "<", 1500.0),
    # The performance issue's: against the cheapest correct consumer, and the worker's CPU.
    ("ceiling_ratio", ">=", 0.6),
    ("cpu_us_per_request", "<", 40.0),
)

#: With ``--history`` (PostgreSQL registry, history and exactly-once claims): the registry
#: issue's goal for the same ratio; latency has no target there (it is reported).
HISTORY_TARGETS = (
    ("ratio", ">=", 0.3),
    ("ceiling_ratio", ">=", 0.3),
    ("rss_idle_mb", "<", 60.0),
    ("cold_start_ms", "<", 1500.0),
)


def targets_for(report: dict[str, object]) -> tuple[tuple[str, str, float], ...]:
    """The targets a report is judged against (by whether it ran with history)."""
    return HISTORY_TARGETS if report.get("history") else TARGETS
