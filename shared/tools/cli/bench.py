"""`fleet bench`: measure one worker process against a minimal Redis Streams loop.

Runs on the given server (``--redis-url`` / ``FLEET_REDIS_URL``) or, when none is set, on an
embedded Valkey started for the run. Names live under a fresh ``fleet-bench-<hex>.`` namespace
and are deleted afterwards, so a running fleet on the same server is not disturbed.

Output: a human-readable report (progress bars when stdout is a terminal), or with ``--json``
exactly one JSON object on stdout (keys: ``shared.tools.bench.REPORT_KEYS`` and more). Exit 0 when the
run completed — whatever the numbers are —, 1 when it could not, 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from shared.domains import DOMAINS
from shared.tools.bench import targets_for
from shared.tools.cli.common import EXIT_FAILED, make_settings

__all__ = ["bench"]

EXIT_INTERRUPTED = 130


@click.command()
@click.option(
    "--redis-url",
    envvar="FLEET_REDIS_URL",
    show_envvar=True,
    default=None,
    help="Server to measure on. Default: an embedded Valkey started for the run.",
)
@click.option(
    "-n",
    "--requests",
    "n",
    type=click.IntRange(1, 10_000_000),
    default=10_000,
    show_default=True,
    envvar="FLEET_BENCH_N",
    show_envvar=True,
    help="Requests in the throughput phase (and the bound of the latency phase).",
)
@click.option(
    "--rate",
    type=click.FloatRange(1, 1_000_000),
    default=1000.0,
    show_default=True,
    envvar="FLEET_BENCH_RATE",
    show_envvar=True,
    help="Requests per second in the latency phase.",
)
@click.option(
    "--latency-n",
    type=click.IntRange(1, 10_000_000),
    default=None,
    envvar="FLEET_BENCH_LATENCY_N",
    show_envvar=True,
    help="Requests in the latency phase. Default: min(N, 5 x RATE).",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    envvar="FLEET_BENCH_ROUNDS",
    show_envvar=True,
    help="Throughput rounds per consumer, worker and baseline alternating; the best one counts.",
)
@click.option(
    "--domain",
    type=click.Choice([d.name for d in DOMAINS]),
    default=DOMAINS[0].name,
    show_default=True,
    envvar="FLEET_BENCH_DOMAIN",
    show_envvar=True,
    help="The domain worker to run (system/echo is served by every domain).",
)
@click.option(
    "--concurrency",
    type=int,
    envvar="FLEET_CONCURRENCY",
    show_envvar=True,
    help="In-flight executions of the worker (default: the setting).",
)
@click.option(
    "--baseline/--no-baseline",
    default=True,
    show_default=True,
    envvar="FLEET_BENCH_BASELINE",
    show_envvar=True,
    help="Also measure the minimal Redis Streams loop (needed for `ratio`).",
)
@click.option(
    "--history/--no-history",
    default=False,
    show_default=True,
    envvar="FLEET_BENCH_HISTORY",
    show_envvar=True,
    help="Run the worker with the PostgreSQL registry, execution history and exactly-once claims "
    "(FLEET_DATABASE_URL, else an embedded PostgreSQL for the run).",
)
@click.option(
    "--cold-start/--no-cold-start",
    default=True,
    show_default=True,
    envvar="FLEET_BENCH_COLD_START",
    show_envvar=True,
    help="Also measure cold_start_ms: one request to the domain at zero processes under the "
    "local autoscaler until its result (median of 5).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="FLEET_JSON",
    show_envvar=True,
    help="Print exactly one JSON object instead of the report.",
)
def bench(
    redis_url: str | None,
    n: int,
    rate: float,
    latency_n: int | None,
    rounds: int,
    domain: str,
    concurrency: int | None,
    baseline: bool,
    history: bool,
    cold_start: bool,
    as_json: bool,
) -> None:
    """Measure throughput, latency and memory of one worker process (of --domain).

    \b
    Throughput: N system/echo requests published in pipelines; N / (first publish -> last
      result), best of ROUNDS (worker and baseline alternate, so machine noise hits both).
    Latency: requests paced at RATE/s; p50/p99 of publish -> result read.
    Memory: the worker's RSS (VmRSS) idle, after the run, and peak.
    The same is measured for a minimal hand-written Redis Streams loop (shared.tools.bench.baseline);
    ratio = worker / baseline throughput. Exit 0 whatever the numbers; 1 if the run failed.
    """
    # Imported here, not at the top: every `fleet` process (workers too) imports this module.
    from shared.tools.bench.runner import BenchError, BenchInterrupted, BenchOptions, run_bench

    settings = make_settings(redis_url=redis_url, concurrency=concurrency)
    options = BenchOptions(
        n=n,
        rate=rate,
        domain=domain,
        latency_n=latency_n,
        rounds=rounds,
        baseline=baseline,
        history=history,
        cold_start=cold_start,
    )
    tty = sys.stdout.isatty()
    # Log lines (the cold start's scale decisions) go to stderr, never into the report.
    from shared.logging import configure_logging

    configure_logging(settings.model_copy(update={"log_level": "warning"}))

    def status(line: str) -> None:
        if line.startswith("warning:"):  # on stderr even with --json: the figures depend on it
            click.secho(f"fleet bench: {line}", err=True, fg="yellow")
        elif not as_json:
            click.secho(f"  {line}", err=True, dim=True)

    try:
        report = run_bench(settings, options, status=status, progress=_bars(as_json) if tty else None)
    except BenchInterrupted:
        click.echo("fleet bench: interrupted; cleaned up", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except BenchError as exc:
        click.echo(f"fleet bench failed: {exc}", err=True)
        raise SystemExit(EXIT_FAILED) from None
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(format_report(report))


def _bars(to_stderr: bool) -> Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]]:
    @contextlib.contextmanager
    def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
        with click.progressbar(
            length=total, label=f"  {label:<28}", file=sys.stderr if to_stderr else None, width=30
        ) as bar:
            yield bar.update

    return progress


def _fmt(value: Any, digits: int = 2, *, thousands: bool = False) -> str:
    if value is None:
        return "n/a"
    if thousands:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _verdict(report: dict[str, Any], key: str) -> str:
    for name, op, bound in targets_for(report):
        if name != key:
            continue
        value = report.get(key)
        if value is None:
            return f"(target {op} {bound:g}: n/a)"
        ok = value >= bound if op == ">=" else value < bound
        return f"(target {op} {bound:g}: {'ok' if ok else 'MISSED'})"
    return ""


def _rounds(values: list[float | None]) -> str:
    return ", ".join(_fmt(v, thousands=True) for v in values) or "n/a"


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of a :func:`~shared.tools.bench.runner.run_bench` report."""
    rows = [
        ("throughput (req/s)", _fmt(report["throughput_per_s"], thousands=True),
         _fmt(report["baseline_per_s"], thousands=True), ""),
        ("ratio worker/baseline", _fmt(report["ratio"]), "", _verdict(report, "ratio")),
        ("ceiling (req/s)", _fmt(report.get("ceiling_per_s"), thousands=True), "", ""),
        ("ratio worker/ceiling", _fmt(report.get("ceiling_ratio")), "", _verdict(report, "ceiling_ratio")),
        ("CPU per request (us)", _fmt(report["cpu_us_per_request"], 1),
         _fmt(report["baseline_cpu_us_per_request"], 1), _verdict(report, "cpu_us_per_request")),
        (f"latency p50 (ms) @{report['rate']:g}/s", _fmt(report["p50_ms"]),
         _fmt(report["baseline_p50_ms"]), _verdict(report, "p50_ms")),
        ("latency p99 (ms)", _fmt(report["p99_ms"]), _fmt(report["baseline_p99_ms"]),
         _verdict(report, "p99_ms")),
        ("RSS idle (MB)", _fmt(report["rss_idle_mb"], 1), _fmt(report["baseline_rss_idle_mb"], 1),
         _verdict(report, "rss_idle_mb")),
        ("RSS after / peak (MB)", f"{_fmt(report['rss_after_mb'], 1)} / {_fmt(report['rss_peak_mb'], 1)}",
         "", ""),
        ("cold start (ms, median)", _fmt(report.get("cold_start_ms"), 0), "",
         _verdict(report, "cold_start_ms")),
    ]  # fmt: skip
    lines = [
        f"fleet bench: system/echo on the {report['domain']} worker"
        f"{' with history and exactly-once claims' if report.get('history') else ''}, {report['server']} "
        f"({report['server_version']}), {report['cpus']} CPUs, Python {report['python']}",
        f"  throughput: {report['n']:,} requests; latency: {report['latency_n']:,} requests at "
        f"{report['rate']:g}/s (achieved {_fmt(report['achieved_rate_per_s'], 0)}/s); "
        f"concurrency {report['concurrency']}, batch {report['batch_size']}",
        f"  throughput rounds (req/s): worker {_rounds(report['throughput_rounds'])}; "
        f"baseline {_rounds(report['baseline_rounds'])} (best counts)",
        "",
        f"  {'':<28}{'worker':>12}{'baseline':>12}",
    ]
    for label, worker, base, verdict in rows:
        lines.append(f"  {label:<28}{worker:>12}{base:>12}  {verdict}".rstrip())
    lines.append(f"\n  ran in {report['duration_s']:.1f}s; worker ready in {report['worker_start_s']:.2f}s")
    return "\n".join(lines)
