"""`fleet bench`'s engine: one worker process and the baseline, measured the same way.

Both consumers — the fleet worker (``python -m shared.tools.cli.main worker <domain> --transport
redis``) and the baseline (``python -m shared.tools.bench.baseline``) — run as child processes on the
same server, each with its own streams and group under a fresh namespace
(``fleet-bench-<hex>.``), so a fleet already using the server is not disturbed:

1. start both; wait until each one's consumer group exists (it has connected);
2. idle RSS (``VmRSS``, 0.5 s later, before any request);
3. warm-up: a few ``system/echo`` requests each, answered before anything is timed ("ready
   in" = process start -> last warm-up result);
4. throughput, ``rounds`` times, alternating worker and baseline (so background load on a
   shared machine hits both alike): ``n`` requests published in pipelines; a round's
   throughput = ``n`` / (first publish -> last result read); the best round counts (noise on a
   shared machine only ever slows a round down). CPU time per request from ``/proc`` (best
   round);
5. latency, worker then baseline: ``latency_n`` requests paced at ``rate``/s, one ``XADD``
   each; p50/p90/p99/max of publish -> result read;
6. RSS after, peak RSS; stop both (SIGTERM, then SIGKILL after a grace period).

``ratio`` = worker throughput / baseline throughput. A third consumer, the ceiling
(``baseline --ceiling``: 500 per read, non-transactional settle, minimal results), runs in the
same rounds: ``ceiling_ratio`` = worker / ceiling throughput, the distance to what Redis and
Python allow (docs/performance.md). Every path — success, error, Ctrl-C,
SIGTERM — stops the child processes, deletes the namespace's streams (and with them their
consumer groups) and stops the embedded Valkey the run started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import redis as redis_sync
from redis.asyncio import Redis

from shared.domains import get_domain
from shared.errors import FleetError
from shared.settings import Settings
from shared.tools.bench.measure import (
    PhaseStats,
    Request,
    ResultCollector,
    cpu_seconds,
    echo_requests,
    percentile,
    publish_burst,
    publish_paced,
    rss_mb,
)
from shared.transports.redis import connect

__all__ = [
    "BenchError",
    "BenchInterrupted",
    "BenchOptions",
    "ConsumerResult",
    "ProgressFactory",
    "run_bench",
]

#: Seconds a consumer process may take to start.
START_TIMEOUT = 60.0
#: Seconds between "connected" and the idle RSS reading.
IDLE_SETTLE = 0.5
#: XREADGROUP COUNT of the ceiling reference (its read size is not bound by a concurrency).
CEILING_COUNT = 500
#: Warm-up requests (at most ``n``) answered before anything is timed.
WARMUP = 100
#: Seconds a child gets after SIGTERM before SIGKILL.
STOP_GRACE = 10.0

#: Variables of ours the children must not inherit: they would change what is measured
#: (``--burst`` would exit between phases). Everything else the worker inherits on purpose,
#: so the bench measures the worker as this environment configures it.
_NOT_INHERITED = frozenset({"FLEET_BURST", "FLEET_TRANSPORT", "FLEET_APP_PORT", "APP_PORT"})

#: ``progress(label, total)`` -> a context manager yielding ``advance(count)``.
ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]]


class BenchError(FleetError):
    """The benchmark could not complete (a process died, results did not arrive, ...)."""


class BenchInterrupted(BenchError):
    """Stopped by SIGINT/SIGTERM; everything was cleaned up."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run. ``latency_n`` ``None`` means ``min(n, 5 * rate)``; ``concurrency`` and the
    broker come from the :class:`Settings` passed to :func:`run_bench`."""

    n: int = 10_000
    rate: float = 1000.0
    domain: str = "ai"
    latency_n: int | None = None
    rounds: int = 3
    baseline: bool = True
    #: run the worker with the PostgreSQL registry, history and exactly-once claims on
    #: (``database_url``, else the settings', else an embedded PostgreSQL for the run).
    history: bool = False
    database_url: str | None = None
    #: also measure ``cold_start_ms``: one request to the domain at zero processes, under the
    #: local autoscaler, until its result (median of ``cold_start_rounds``).
    cold_start: bool = True
    cold_start_rounds: int = 5

    @property
    def latency_count(self) -> int:
        if self.latency_n is not None:
            return self.latency_n
        return max(1, min(self.n, int(5 * self.rate)))


@dataclass(slots=True)
class ConsumerResult:
    """Everything measured for one consumer process."""

    label: str
    rounds_per_s: list[float] = field(default_factory=list)
    rounds_cpu_us: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    achieved_rate_per_s: float = 0.0
    rss_idle_mb: float | None = None
    rss_after_mb: float | None = None
    rss_peak_mb: float | None = None
    start_s: float = 0.0

    @property
    def throughput_per_s(self) -> float:
        return max(self.rounds_per_s, default=0.0)

    @property
    def cpu_us_per_request(self) -> float | None:
        return min(self.rounds_cpu_us, default=None)

    def latency(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


@dataclass(frozen=True, slots=True)
class _Target:
    label: str
    argv: list[str]
    env: dict[str, str]
    topic: str
    group: str
    consumer: str
    results_topic: str


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _r(value: float | None, digits: int = 3) -> float | None:
    if value is None or value != value:  # None or NaN
        return None
    return round(value, digits)


class _Children:
    """The child processes of one run; :meth:`stop_all` is idempotent and never raises."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: list[tuple[subprocess.Popen[bytes], IO[bytes], Path]] = []

    def start(self, target: _Target) -> subprocess.Popen[bytes]:
        log_path = self._log_dir / f"{target.label}.log"
        log = log_path.open("wb")
        try:
            proc = subprocess.Popen(
                target.argv,
                env=target.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                # Our Ctrl-C is not theirs: we stop them, in order, on every path.
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        self._procs.append((proc, log, log_path))
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 15) -> str:
        for candidate, _, path in self._procs:
            if candidate is proc:
                with contextlib.suppress(OSError):
                    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> int | None:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL; returns the exit code."""
        for entry in list(self._procs):
            candidate, log, _ = entry
            if candidate is not proc:
                continue
            try:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(grace)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            finally:
                log.close()
                self._procs.remove(entry)
        return proc.returncode

    def stop_all(self) -> None:
        for proc, _, _ in list(self._procs):
            with contextlib.suppress(Exception):
                self.stop(proc, grace=5.0)


def _cleanup_keys(url: str, namespace: str, keys: list[str]) -> None:
    """Delete ``keys`` and anything else under ``namespace``; errors are ignored (the server
    may already be gone)."""
    with contextlib.suppress(Exception):
        client = redis_sync.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            found = set(keys)
            for pattern in (f"{namespace}*", f"fleet:last-error:{namespace}*"):
                found.update(k.decode() for k in client.scan_iter(match=pattern, count=1000))
            if found:
                client.delete(*found)
        finally:
            client.close()


#: Command-line fragments of fleet processes that would share the CPUs with a bench run.
_FLEET_COMMANDS = ("shared.tools.cli.main worker", "shared.tools.cli.main up", "fleet worker", "fleet up")


def other_fleet_processes(proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the fleet workers and `fleet up` supervisors running on this
    machine, other than this process (a bench started before its own children). Empty where
    there is no ``/proc``."""
    found: list[tuple[int, str]] = []
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(fragment in command for fragment in _FLEET_COMMANDS):
            found.append((int(entry.name), command))
    return sorted(found)


def run_bench(
    settings: Settings,
    options: BenchOptions,
    *,
    status: Callable[[str], None] = lambda _: None,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the report (keys in ``shared.tools.bench.REPORT_KEYS`` and more).

    ``settings.redis_url`` is the server; ``None`` starts an embedded Valkey for the run.
    ``settings.concurrency`` / ``batch_size`` / ``block_ms`` / ``results_maxlen`` configure
    the worker (and bound the baseline's reads alike). ``status`` receives one-line progress
    notes; ``progress`` (optional) draws bars. Raises :class:`BenchError` when a measurement
    cannot complete and :class:`BenchInterrupted` (after cleaning up) on SIGINT/SIGTERM.
    """
    from shared.tools.embedded import EmbeddedBroker, EmbeddedDatabase

    domain = get_domain(options.domain).name
    namespace = f"fleet-bench-{uuid.uuid4().hex[:10]}."
    url = settings.redis_url
    broker: EmbeddedBroker | None = None
    database: EmbeddedDatabase | None = None
    keys: list[str] = []
    cold: dict[str, Any] = {"cold_start_ms": None, "cold_start_rounds_ms": []}
    started = time.perf_counter()
    # Taken before any child starts: what else of the fleet competes for these CPUs.
    others = other_fleet_processes()
    if others:
        status(
            f"warning: {len(others)} other fleet process(es) share this machine's CPUs "
            f"(pids {', '.join(str(pid) for pid, _ in others[:10])}): figures are not comparable"
        )
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        children = _Children(Path(tmp))
        try:
            if not url:
                status("starting an embedded Valkey")
                broker = EmbeddedBroker(Path(tmp) / "valkey")
                url = broker.start()
            database_url = ""  # no history unless asked for, whatever the environment says
            if options.history:
                database_url = options.database_url or settings.database_url or ""
                if not database_url:
                    status("starting an embedded PostgreSQL")
                    database = EmbeddedDatabase(Path(tmp) / "postgres")
                    database_url = database.start()
            bench_settings = settings.model_copy(
                update={
                    "database_url": database_url,
                    "redis_url": url,
                    "topic_prefix": f"{namespace}functions.",
                    "results_topic": f"{namespace}functions.results",
                    "group_prefix": f"{namespace}fleet-",
                    "consumer_name": f"{namespace}worker",
                }
            )
            targets = _targets(bench_settings, domain, namespace)
            for target in targets:
                keys += [
                    target.topic,
                    target.results_topic,
                    bench_settings.dlq_for(target.topic),
                    f"fleet:last-error:{target.topic}",
                ]
            if not options.baseline:
                targets = targets[:1]
            server_version, results = _run_async(_measure(url, targets, options, children, status, progress))
            if options.cold_start:
                status(f"cold start: {options.cold_start_rounds} rounds from zero processes")
                cold = _run_async(_cold_start(bench_settings, targets[0], namespace, domain, options))
        except KeyboardInterrupt:
            raise BenchInterrupted("interrupted") from None
        finally:
            children.stop_all()
            if url:
                _cleanup_keys(url, namespace, keys)
            if broker is not None:
                with contextlib.suppress(Exception):
                    broker.stop()
            if database is not None:
                with contextlib.suppress(Exception):
                    database.stop()
    worker = results["worker"]
    base = results.get("baseline")
    baseline_tp = base.throughput_per_s if base is not None else None
    top = results.get("ceiling")
    ceiling_tp = top.throughput_per_s if top is not None else None
    return {
        "n": options.n,
        "throughput_per_s": _r(worker.throughput_per_s, 1),
        "baseline_per_s": _r(baseline_tp, 1),
        "ratio": _r(worker.throughput_per_s / baseline_tp, 3) if baseline_tp else None,
        "p50_ms": _r(worker.latency(50)),
        "p99_ms": _r(worker.latency(99)),
        "rss_idle_mb": _r(worker.rss_idle_mb, 1),
        "rss_after_mb": _r(worker.rss_after_mb, 1),
        "rss_peak_mb": _r(worker.rss_peak_mb, 1),
        "p90_ms": _r(worker.latency(90)),
        "max_ms": _r(worker.latency(100)),
        "rate": options.rate,
        "latency_n": options.latency_count,
        "achieved_rate_per_s": _r(worker.achieved_rate_per_s, 1),
        "rounds": options.rounds,
        "throughput_rounds": [_r(v, 1) for v in worker.rounds_per_s],
        "baseline_rounds": [_r(v, 1) for v in base.rounds_per_s] if base else [],
        "cpu_us_per_request": _r(worker.cpu_us_per_request, 1),
        "baseline_cpu_us_per_request": _r(base.cpu_us_per_request, 1) if base else None,
        "baseline_p50_ms": _r(base.latency(50)) if base else None,
        "baseline_p99_ms": _r(base.latency(99)) if base else None,
        "baseline_rss_idle_mb": _r(base.rss_idle_mb, 1) if base else None,
        "ceiling_per_s": _r(ceiling_tp, 1),
        "ceiling_ratio": _r(worker.throughput_per_s / ceiling_tp, 3) if ceiling_tp else None,
        "ceiling_rounds": [_r(v, 1) for v in top.rounds_per_s] if top else [],
        "ceiling_cpu_us_per_request": _r(top.cpu_us_per_request, 1) if top else None,
        "event_loop": settings.event_loop,
        "other_fleet_processes": len(others),
        "worker_start_s": _r(worker.start_s, 2),
        **cold,
        "domain": domain,
        "history": options.history,
        "concurrency": settings.concurrency,
        "batch_size": settings.batch_size,
        "server": "embedded valkey" if broker is not None else _redacted(url or ""),
        "server_version": server_version,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "namespace": namespace,
        "duration_s": round(time.perf_counter() - started, 2),
    }


async def _cold_start(
    settings: Settings, worker: _Target, namespace: str, domain: str, options: BenchOptions
) -> dict[str, Any]:
    """Cold starts on names of their own, one process at most (see shared/tools/bench/cold_start.py)."""
    from shared.tools.bench.cold_start import measure_cold_start

    cold = settings.model_copy(
        update={
            "topic_prefix": f"{namespace}cold.",
            "results_topic": f"{namespace}cold.results",
            "group_prefix": f"{namespace}cold-",
            "consumer_name": f"{namespace}cold",
            "scale_max_processes": 1,
        }
    )
    env = {
        **worker.env,
        "FLEET_TOPIC_PREFIX": cold.topic_prefix,
        "FLEET_RESULTS_TOPIC": cold.results_topic,
        "FLEET_GROUP_PREFIX": cold.group_prefix,
    }
    return await measure_cold_start(cold, domain, worker.argv, env, rounds=options.cold_start_rounds)


def _run_async(coro: Any) -> Any:
    """``asyncio.run`` with SIGTERM cancelling the run like Ctrl-C does."""

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        terminated = False

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        # Not available off the main thread or on some platforms: then SIGTERM just kills us.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await coro
        except asyncio.CancelledError:
            if terminated:
                raise BenchInterrupted("terminated") from None
            raise
        finally:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise BenchInterrupted("cancelled") from None


def _targets(settings: Settings, domain: str, namespace: str) -> list[_Target]:
    assert settings.redis_url
    inherited = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env = {
        **inherited,
        "FLEET_REDIS_URL": settings.redis_url,
        "FLEET_TOPIC_PREFIX": settings.topic_prefix,
        "FLEET_RESULTS_TOPIC": settings.results_topic,
        "FLEET_GROUP_PREFIX": settings.group_prefix,
        "FLEET_CONSUMER_NAME": settings.consumer_name,
        "FLEET_CONCURRENCY": str(settings.concurrency),
        "FLEET_BATCH_SIZE": str(settings.batch_size),
        "FLEET_BLOCK_MS": str(settings.block_ms),
        "FLEET_RESULTS_MAXLEN": str(settings.results_maxlen),
        "FLEET_LOG_LEVEL": "warning",
        "FLEET_LOG_FORMAT": "json",
        "FLEET_DATABASE_URL": settings.database_url or "",
    }
    worker = _Target(
        label="worker",
        argv=[sys.executable, "-m", "shared.tools.cli.main", "worker", domain, "--transport", "redis"],
        env=env,
        topic=settings.topic_for(domain),
        group=settings.group_for(domain),
        consumer=settings.consumer_name,
        results_topic=settings.results_topic,
    )
    topic, group = f"{namespace}baseline.{domain}", f"{namespace}baseline"
    results_topic, consumer = f"{namespace}baseline.results", f"{namespace}baseline"
    baseline = _Target(
        label="baseline",
        argv=[
            sys.executable,
            "-m",
            "shared.tools.bench.baseline",
            settings.redis_url,
            topic,
            group,
            results_topic,
            "--consumer",
            consumer,
            # The worker reads at most min(concurrency - held, batch_size) per XREADGROUP.
            "--count",
            str(min(settings.concurrency, settings.batch_size)),
            "--block-ms",
            str(settings.block_ms),
            "--results-maxlen",
            str(settings.results_maxlen),
            "--domain",
            domain,
            "--event-loop",
            settings.event_loop,
        ],
        env=env,
        topic=topic,
        group=group,
        consumer=consumer,
        results_topic=results_topic,
    )
    # The ceiling: the cheapest correct consumer (baseline.py --ceiling), on names of its own.
    ceiling = _Target(
        label="ceiling",
        argv=[
            sys.executable,
            "-m",
            "shared.tools.bench.baseline",
            settings.redis_url,
            f"{namespace}ceiling.{domain}",
            f"{namespace}ceiling",
            f"{namespace}ceiling.results",
            "--consumer",
            f"{namespace}ceiling",
            "--count",
            str(CEILING_COUNT),
            "--block-ms",
            str(settings.block_ms),
            "--results-maxlen",
            str(settings.results_maxlen),
            "--ceiling",
            "--event-loop",
            settings.event_loop,
        ],
        env=env,
        topic=f"{namespace}ceiling.{domain}",
        group=f"{namespace}ceiling",
        consumer=f"{namespace}ceiling",
        results_topic=f"{namespace}ceiling.results",
    )
    return [worker, baseline, ceiling]


@contextlib.contextmanager
def _no_progress(_: str, __: int) -> Iterator[Callable[[int], None]]:
    yield lambda _count: None


class _Consumer:
    """One running consumer process with its results reader."""

    def __init__(self, target: _Target, proc: subprocess.Popen[bytes], url: str, launched: float) -> None:
        self.target = target
        self.proc = proc
        self.launched = launched
        self.result = ConsumerResult(label=target.label)
        self.redis = connect(url)
        self.collector = ResultCollector(self.redis, target.results_topic)
        self.reader: asyncio.Task[None] | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start_reading(self) -> None:
        self.reader = asyncio.create_task(self.collector.run(), name=f"bench-results-{self.target.label}")

    async def close(self) -> None:
        self.collector.stop()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.redis.aclose()


async def _wait_group(redis: Redis, consumer: _Consumer, children: _Children) -> None:
    """Until the consumer's group exists (the process connected and set up its stream).
    Whether it is reading is proven by the warm-up; a consumer that has not been handed an
    entry yet does not show in ``XINFO CONSUMERS`` on every server version."""
    target, proc = consumer.target, consumer.proc
    deadline = time.perf_counter() + START_TIMEOUT
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"the {target.label} exited with code {proc.returncode} at start:\n" + children.log_tail(proc)
            )
        with contextlib.suppress(Exception):
            groups: list[dict[str, Any]] = await redis.xinfo_groups(target.topic)
            names = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"] for g in groups}
            if target.group in names:
                return
        await asyncio.sleep(0.05)
    raise BenchError(f"the {target.label} did not set up its consumer group within {START_TIMEOUT:g}s")


async def _phase(
    redis: Redis,
    consumer: _Consumer,
    children: _Children,
    requests: list[Request],
    *,
    timeout: float,
    rate: float | None = None,
    advance: Callable[[int], None] | None = None,
) -> tuple[PhaseStats, float]:
    """Publish ``requests`` (a pipelined burst, or paced at ``rate``) and wait for every
    result; returns the phase's statistics and the achieved publishing rate (paced only)."""
    collector = consumer.collector
    stats = collector.begin(len(requests), advance)
    achieved = 0.0
    try:
        if rate is None:
            await publish_burst(redis, consumer.target.topic, requests, collector)
        else:
            achieved = await publish_paced(redis, consumer.target.topic, requests, rate, collector)
        await collector.wait(timeout, consumer.alive)
    except TimeoutError as exc:
        raise BenchError(f"{consumer.target.label}: {exc}") from None
    except RuntimeError as exc:
        tail = children.log_tail(consumer.proc)
        raise BenchError(f"{consumer.target.label}: {exc}" + (f"\n{tail}" if tail else "")) from None
    return stats, achieved


async def _measure(
    url: str,
    targets: list[_Target],
    options: BenchOptions,
    children: _Children,
    status: Callable[[str], None],
    progress: ProgressFactory | None,
) -> tuple[str, dict[str, ConsumerResult]]:
    bar = progress or _no_progress
    wait_s = 30.0 + options.n / 200
    redis = connect(url)
    consumers: list[_Consumer] = []
    try:
        info: dict[str, Any] = await redis.info("server")
        version = info.get("valkey_version") or info.get("redis_version")
        server_version = f"{info.get('server_name') or 'redis'} {version}"

        for target in targets:
            status(f"{target.label}: starting")
            launched = time.perf_counter()
            consumers.append(_Consumer(target, children.start(target), url, launched))
        for consumer in consumers:
            await _wait_group(redis, consumer, children)
        await asyncio.sleep(IDLE_SETTLE)
        for consumer in consumers:
            consumer.result.rss_idle_mb = rss_mb(consumer.proc.pid)
            consumer.start_reading()
        for consumer in consumers:
            tag = f"{consumer.target.label}-warmup"
            await _phase(
                redis,
                consumer,
                children,
                echo_requests(min(WARMUP, options.n), tag=tag),
                timeout=START_TIMEOUT,
            )
            consumer.result.start_s = time.perf_counter() - consumer.launched

        for round_ in range(1, options.rounds + 1):
            for consumer in consumers:
                label = consumer.target.label
                requests = echo_requests(options.n, tag=f"{label}-{round_}")
                status(f"{label}: throughput round {round_}/{options.rounds}, {options.n} requests")
                with bar(f"{label} throughput {round_}/{options.rounds}", options.n) as advance:
                    cpu_before = cpu_seconds(consumer.proc.pid)
                    stats, _ = await _phase(
                        redis, consumer, children, requests, timeout=wait_s, advance=advance
                    )
                    cpu_after = cpu_seconds(consumer.proc.pid)
                consumer.result.rounds_per_s.append(stats.throughput_per_s)
                if cpu_before is not None and cpu_after is not None:
                    consumer.result.rounds_cpu_us.append((cpu_after - cpu_before) / options.n * 1e6)

        for consumer in consumers:
            label = consumer.target.label
            requests = echo_requests(options.latency_count, tag=f"{label}-paced")
            status(f"{label}: latency, {len(requests)} requests at {options.rate:g}/s")
            with bar(f"{label} latency @{options.rate:g}/s", len(requests)) as advance:
                stats, achieved = await _phase(
                    redis, consumer, children, requests, timeout=wait_s, rate=options.rate, advance=advance
                )
            consumer.result.latencies_ms = stats.latencies_ms
            consumer.result.achieved_rate_per_s = achieved

        for consumer in consumers:
            consumer.result.rss_after_mb = rss_mb(consumer.proc.pid)
            consumer.result.rss_peak_mb = rss_mb(consumer.proc.pid, peak=True)
        status("stopping")
        for consumer in consumers:
            await asyncio.to_thread(children.stop, consumer.proc)
        return server_version, {c.target.label: c.result for c in consumers}
    finally:
        for consumer in consumers:
            await consumer.close()
        await redis.aclose()
