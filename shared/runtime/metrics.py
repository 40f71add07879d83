"""In-process metrics with Prometheus text exposition (served at ``/metrics`` by the Dapr app
channel and printed by ``fleet bench``). Deliberately dependency-free and lock-free: one
worker process is one asyncio thread."""

from __future__ import annotations

import bisect
from collections import defaultdict

__all__ = ["Metrics"]

#: Histogram bucket upper bounds in seconds (Prometheus ``le``).
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)


class Metrics:
    """Counters for deliveries and executions, a duration histogram per function."""

    def __init__(self) -> None:
        self.deliveries: dict[str, int] = defaultdict(int)  # outcome -> count
        self.executions: dict[tuple[str, str], int] = defaultdict(int)  # (slug, outcome)
        self._hist: dict[str, list[int]] = {}
        self._sum: dict[str, float] = defaultdict(float)
        self.in_flight = 0
        self.infra_errors = 0

    def observe_execution(self, slug: str, outcome: str, seconds: float) -> None:
        self.executions[(slug, outcome)] += 1
        buckets = self._hist.get(slug)
        if buckets is None:
            buckets = self._hist[slug] = [0] * (len(BUCKETS) + 1)
        buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum[slug] += seconds

    def count_delivery(self, outcome: str, n: int = 1) -> None:
        self.deliveries[outcome] += n

    def render(self) -> str:
        """Prometheus text format 0.0.4."""
        lines = [
            "# TYPE fleet_deliveries_total counter",
            *(f'fleet_deliveries_total{{outcome="{o}"}} {n}' for o, n in sorted(self.deliveries.items())),
            "# TYPE fleet_executions_total counter",
            *(
                f'fleet_executions_total{{function="{s}",outcome="{o}"}} {n}'
                for (s, o), n in sorted(self.executions.items())
            ),
            "# TYPE fleet_in_flight gauge",
            f"fleet_in_flight {self.in_flight}",
            "# TYPE fleet_infrastructure_errors_total counter",
            f"fleet_infrastructure_errors_total {self.infra_errors}",
            "# TYPE fleet_execution_seconds histogram",
        ]
        for slug, counts in sorted(self._hist.items()):
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'fleet_execution_seconds_bucket{{function="{slug}",le="{le}"}} {running}')
            lines.append(f'fleet_execution_seconds_sum{{function="{slug}"}} {self._sum[slug]:.6f}')
            lines.append(f'fleet_execution_seconds_count{{function="{slug}"}} {running}')
        return "\n".join(lines) + "\n"
