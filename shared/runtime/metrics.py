"""One worker's metrics: plain counters on the hot path, Prometheus exposition at scrape time.

The runtime, the extensions and handlers count into a :class:`Metrics` (dict and int increments:
no locks, no label lookups — one worker is one asyncio thread). A scrape asks the worker's own
:class:`~prometheus_client.CollectorRegistry` (never the process-wide one: two workers in one
process share nothing), whose :class:`_Collector` turns the counts into metric families;
``prometheus_client`` writes the text and escapes label values.

Label values are bounded: execution outcomes are the contract's error codes plus a fixed set
(anything else is ``other``), at most :data:`MAX_FUNCTIONS` function labels, provider and refusal
labels likewise capped. No execution ids in labels. Every metric is listed in
docs/observability.md.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from importlib import metadata

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from shared.contract import ErrorCode

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "DEFERRAL_REASONS",
    "EXECUTION_OUTCOMES",
    "MAX_FUNCTIONS",
    "OTHER",
    "Metrics",
    "status_class",
]

#: Content type of :meth:`Metrics.render` (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: The label value of everything outside a bounded set.
OTHER = "other"
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
#: Claim store script calls take milliseconds; finer buckets at the low end.
CLAIM_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
    1,
)
#: ``outcome`` of ``fleet_executions_total``: completed, the control signals, the contract's codes.
EXECUTION_OUTCOMES: frozenset[str] = frozenset(
    {"completed", "retry", "defer", "drop", OTHER, *(str(code) for code in ErrorCode)}
)
#: ``reason`` of ``fleet_deferrals_total``: what a deferred call waits for (``Defer.cause``).
DEFERRAL_REASONS: frozenset[str] = frozenset(
    {"concurrency_limit", "rate_limit", "limits_unavailable", "duplicate_running", OTHER}
)
#: Distinct ``function`` label values kept; later functions are counted as ``other``.
MAX_FUNCTIONS = 500
#: Distinct values of the smaller labels (provider, refusal reason, claim operation).
MAX_SMALL_LABEL = 50


def status_class(status: int | None) -> str:
    """``2xx`` … ``5xx`` for an HTTP status, ``error`` when no answer came (``None``)."""
    if status is None or not 100 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


def _version() -> str:
    try:
        return metadata.version("function-fleet")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out


def _bounded(key: str, known: Mapping[str, object], limit: int) -> str:
    return key if key in known or len(known) < limit else OTHER


#: Reads one value at scrape time: ``(labels, value)`` pairs (``None`` value = not known now).
GaugeReader = Callable[[], Iterable[tuple[Mapping[str, str], float | None]]]


class Metrics:
    """One worker's counters and the registry that exposes them (see module docstring).

    The runtime writes :attr:`deliveries`, :attr:`in_flight`, :attr:`infra_errors` directly and
    calls :meth:`observe_execution`; extensions count with :meth:`count_provider_call`,
    :meth:`count_ssrf_refusal`, :meth:`observe_claim_call` and add scrape-time readings with
    :meth:`add_gauge` / :meth:`add_refresher`. A worker provides it as a resource
    (``ctx.resources.get(Metrics)``).
    """

    def __init__(self, *, domain: str = "", transport: str = "", max_functions: int = MAX_FUNCTIONS) -> None:
        self.domain = domain
        self.transport = transport
        self.max_functions = max_functions
        self.deliveries: dict[str, int] = defaultdict(int)  # outcome -> count
        self.executions: dict[tuple[str, str], int] = defaultdict(int)  # (function, outcome)
        self._durations: dict[str, _Histogram] = {}
        self.in_flight = 0
        self.infra_errors = 0
        self.provider_calls: dict[tuple[str, str], int] = defaultdict(int)  # (provider, class)
        self._providers: dict[str, None] = {}
        self.ssrf_refusals: dict[str, int] = {}  # reason -> count
        self.deferrals: dict[str, int] = defaultdict(int)  # reason -> count
        self._claim_calls: dict[str, _Histogram] = {}
        self._gauges: list[tuple[str, str, str, GaugeReader]] = []
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    # ------------------------------------------------------------------ the hot path
    def observe_execution(self, slug: str, outcome: str, seconds: float) -> None:
        """Count one execution of ``slug`` ending in ``outcome`` (bounded) after ``seconds``."""
        histogram = self._durations.get(slug)
        if histogram is None:
            if len(self._durations) >= self.max_functions:
                slug = OTHER
            histogram = self._durations.get(slug)
            if histogram is None:
                histogram = self._durations[slug] = _Histogram(BUCKETS)
        if outcome not in EXECUTION_OUTCOMES:
            outcome = OTHER  # a handler's own code: never a label value of its choosing
        self.executions[(slug, outcome)] += 1
        histogram.observe(seconds)

    def count_delivery(self, outcome: str, n: int = 1) -> None:
        self.deliveries[outcome] += n

    def count_deferral(self, reason: str) -> None:
        """One call deferred (not run now, not counted as a delivery), by what it waits for
        (one of :data:`DEFERRAL_REASONS`; anything else counts as ``other``)."""
        self.deferrals[reason if reason in DEFERRAL_REASONS else OTHER] += 1

    # ------------------------------------------------------------------ extensions
    def count_provider_call(self, provider: str, status: int | None) -> None:
        """One HTTP exchange with ``provider``: its status, or ``None`` when none came back."""
        if provider not in self._providers:
            provider = _bounded(provider, self._providers, MAX_SMALL_LABEL)
            self._providers[provider] = None
        self.provider_calls[(provider, status_class(status))] += 1

    def count_ssrf_refusal(self, reason: str) -> None:
        """One destination refused by the HTTP policy, by the guard's ``reason``."""
        reason = _bounded(reason, self.ssrf_refusals, MAX_SMALL_LABEL)
        self.ssrf_refusals[reason] = self.ssrf_refusals.get(reason, 0) + 1

    def observe_claim_call(self, operation: str, seconds: float) -> None:
        """One claim store script call (a whole batch) of ``operation`` took ``seconds``."""
        histogram = self._claim_calls.get(operation)
        if histogram is None:
            operation = _bounded(operation, self._claim_calls, MAX_SMALL_LABEL)
            histogram = self._claim_calls.setdefault(operation, _Histogram(CLAIM_BUCKETS))
        histogram.observe(seconds)

    def add_gauge(self, name: str, documentation: str, read: GaugeReader, *, kind: str = "gauge") -> None:
        """Expose ``read()`` at each scrape as ``name`` (``kind`` ``gauge`` or ``counter``)."""
        self._gauges.append((name, documentation, kind, read))

    def add_refresher(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run ``refresh`` before each scrape (it caches: a scrape storm must stay cheap)."""
        self._refreshers.append(refresh)

    # ------------------------------------------------------------------ exposition
    async def refresh(self) -> None:
        """Update the readings that need I/O (backlog); errors leave the last values."""
        for refresh in self._refreshers:
            await refresh()

    def render(self) -> bytes:
        """The Prometheus text exposition (:data:`CONTENT_TYPE`) of this worker's registry."""
        return generate_latest(self.registry)

    def families(self) -> Iterator[Metric]:
        """This worker's own metric families (the process collectors aside)."""
        yield _counter("fleet_deliveries", "Deliveries settled, by outcome.", ["outcome"], self.deliveries)
        executions = CounterMetricFamily(
            "fleet_executions", "Executions by function and outcome.", labels=["function", "outcome"]
        )
        for (slug, outcome), n in sorted(self.executions.items()):
            executions.add_metric([slug, outcome], n)
        yield executions
        duration = HistogramMetricFamily(
            "fleet_execution_duration_seconds",
            "Execution time (receipt to outcome) by function.",
            labels=["function"],
        )
        for slug, histogram in sorted(self._durations.items()):
            duration.add_metric([slug], histogram.buckets(), histogram.total)
        yield duration
        yield GaugeMetricFamily(
            "fleet_deliveries_in_flight", "Deliveries received and not yet settled.", value=self.in_flight
        )
        yield CounterMetricFamily(
            "fleet_dead_lettered",
            "Deliveries moved to the dead-letter topic.",
            value=self.deliveries.get("drop", 0),
        )
        yield CounterMetricFamily(
            "fleet_infrastructure_errors",
            "Broker, sidecar or database errors the worker backed off from.",
            value=self.infra_errors,
        )
        calls = CounterMetricFamily(
            "fleet_provider_http_calls",
            "HTTP exchanges with SaaS providers, by provider and status class.",
            labels=["provider", "status_class"],
        )
        for (provider, cls), n in sorted(self.provider_calls.items()):
            calls.add_metric([provider, cls], n)
        yield calls
        yield _counter(
            "fleet_ssrf_refusals", "Destinations refused by the HTTP policy.", ["reason"], self.ssrf_refusals
        )
        yield _counter(
            "fleet_deferrals",
            "Calls deferred (left for later, not counted as a delivery), by what they wait for.",
            ["reason"],
            self.deferrals,
        )
        claims = HistogramMetricFamily(
            "fleet_claim_store_call_seconds",
            "Claim store script calls (one per batch), by operation.",
            labels=["operation"],
        )
        for operation, histogram in sorted(self._claim_calls.items()):
            claims.add_metric([operation], histogram.buckets(), histogram.total)
        yield claims
        info = GaugeMetricFamily(
            "fleet_build_info",
            "Always 1: the version, domain and transport of this worker.",
            labels=["version", "domain", "transport"],
        )
        info.add_metric([_VERSION, self.domain, self.transport], 1)
        yield info
        for name, documentation, kind, read in self._gauges:
            yield _reading(name, documentation, kind, read)


def _counter(name: str, documentation: str, labels: list[str], values: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def _reading(name: str, documentation: str, kind: str, read: GaugeReader) -> Metric:
    readings = [(labels, value) for labels, value in read() if value is not None]
    names = sorted({key for labels, _ in readings for key in labels})
    family: GaugeMetricFamily | CounterMetricFamily
    if kind == "counter":
        family = CounterMetricFamily(name, documentation, labels=names)
    else:
        family = GaugeMetricFamily(name, documentation, labels=names)
    for labels, value in readings:
        assert value is not None
        family.add_metric([labels.get(key, "") for key in names], value)
    return family


_VERSION = _version()


class _Collector(Collector):
    """Builds the families of one :class:`Metrics` at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics.families())
