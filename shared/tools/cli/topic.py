"""`fleet topic export|record|replay|diff`: capture topic traffic, replay it, compare results.

TOPIC arguments take a domain name (``ai`` → its request topic), ``results`` (the results
topic), or a stream key as it is (``functions.ai.dlq``). Record files are JSON Lines
(``docs/replay.md``); every command streams them, so their size is not bounded by memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

import click

from shared.domains import DOMAINS
from shared.settings import Settings
from shared.tools.cli.common import EXIT_FAILED, make_settings, redis_client, resolve_broker, run
from shared.tools.cli.dlq import dlq
from shared.tools.cli.options import home_option, redis_url_option
from shared.tools.replay.bounds import end_bound, start_bound
from shared.tools.replay.capture import record_topics
from shared.tools.replay.diff import diff_results, format_report, load_results
from shared.tools.replay.export import DEFAULT_PAGE_SIZE, export_topic
from shared.tools.replay.records import RecordFormatError, is_request, read_records
from shared.tools.replay.replay import ReplayError, ReplayOptions, replay_requests

# `dlq` is re-exported so main.py registers both replay command families with one import.
__all__ = ["dlq", "resolve_topic", "topic"]


def resolve_topic(settings: Settings, name: str) -> str:
    """A TOPIC argument as a stream key (see module docstring)."""
    if name == "results":
        return settings.results_topic
    for domain in DOMAINS:
        if name in (domain.name, domain.package):
            return settings.topic_for(domain.name)
    return name


def _broker(redis_url: str | None, home: str | None) -> Settings:
    return resolve_broker(make_settings(redis_url=redis_url, home=home))


def _interactive() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress callback drawing a bar on stderr when stderr is a terminal (else a no-op)."""
    if not _interactive():
        yield lambda _n: None
        return
    with click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update


@click.group()
def topic() -> None:
    """Record, export and replay topic traffic; diff results of two runs (docs/replay.md)."""


# ---------------------------------------------------------------------------------- export
@topic.command("export")
@click.argument("name", metavar="TOPIC")
@click.option(
    "--from",
    "from_",
    envvar="FLEET_EXPORT_FROM",
    show_envvar=True,
    help="First entry: a stream id (1732350000000-0) or an ISO 8601 time. Default: the oldest.",
)
@click.option(
    "--to",
    "to",
    envvar="FLEET_EXPORT_TO",
    show_envvar=True,
    help="Last entry: a stream id or an ISO 8601 time. Default: the newest.",
)
@click.option(
    "--out",
    default="-",
    show_default=True,
    envvar="FLEET_EXPORT_OUT",
    show_envvar=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSON Lines file to write (- = stdout).",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_PAGE_SIZE,
    show_default=True,
    envvar="FLEET_EXPORT_PAGE_SIZE",
    show_envvar=True,
    help="Entries per XRANGE page (memory use is about one page).",
)
@redis_url_option
@home_option
def export(
    name: str,
    from_: str | None,
    to: str | None,
    out: str,
    page_size: int,
    redis_url: str | None,
    home: str | None,
) -> None:
    """Write TOPIC's entries (id, time, CloudEvent, metadata) as JSON Lines.

    TOPIC is a domain (ai: its request topic), `results`, or a stream key (functions.ai.dlq).
    Reads in XRANGE pages, so memory stays about one page whatever the stream's length.
    """
    settings = _broker(redis_url, home)
    stream = resolve_topic(settings, name)
    try:
        start, end = start_bound(from_), end_bound(to)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def main(sink: IO[bytes]) -> int:
        async with redis_client(settings) as redis:
            total = int(await redis.xlen(stream))
            with _progress(f"exporting {stream}", total) as progress:
                return await export_topic(
                    redis, stream, sink, start=start, end=end, page_size=page_size, progress=progress
                )

    with click.open_file(out, "wb") as sink:
        written = run(main(sink))
    click.echo(f"exported {written} entries of {stream} to {out}", err=True)


# ---------------------------------------------------------------------------------- record
@topic.command("record")
@click.argument("names", nargs=-1, metavar="[TOPIC]...")
@click.option(
    "--out",
    required=True,
    envvar="FLEET_RECORD_OUT",
    show_envvar=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSON Lines file to write (- = stdout).",
)
@click.option(
    "--results/--no-results",
    default=True,
    show_default=True,
    envvar="FLEET_RECORD_RESULTS",
    show_envvar=True,
    help="Also record the results topic (what `topic diff` compares).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    envvar="FLEET_RECORD_DURATION",
    show_envvar=True,
    help="Stop after this many seconds.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    envvar="FLEET_RECORD_COUNT",
    show_envvar=True,
    help="Stop after this many entries (all topics together).",
)
@redis_url_option
@home_option
def record(
    names: tuple[str, ...],
    out: str,
    results: bool,
    duration: float | None,
    count: int | None,
    redis_url: str | None,
    home: str | None,
) -> None:
    """Record live traffic of TOPICs (default: every domain topic) until stopped.

    TOPIC is a domain (ai: its request topic), `results`, or a stream key.

    Reads with XREAD from the current end, without a consumer group: it takes no work from
    workers. Stops on SIGINT/SIGTERM (flushing what it has, exit 0), after --duration, or
    after --count entries.
    """
    settings = _broker(redis_url, home)
    streams = [resolve_topic(settings, n) for n in names] or [settings.topic_for(d.name) for d in DOMAINS]
    if results and settings.results_topic not in streams:
        streams.append(settings.results_topic)

    async def main(sink: IO[bytes]) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Signal handlers can only be installed from the main thread (not when embedded).
        signals = (
            (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
        )
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            async with redis_client(settings) as redis:
                return await record_topics(
                    redis,
                    streams,
                    sink,
                    stop=stop,
                    count=count,
                    duration=duration,
                    on_ready=lambda _: click.echo(
                        f"recording {', '.join(streams)} (Ctrl-C to stop)", err=True
                    ),
                )
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    with click.open_file(out, "wb") as sink:
        written = run(main(sink))
    click.echo(f"recorded {written} entries to {out}", err=True)


# ---------------------------------------------------------------------------------- replay
@topic.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "to_topic",
    envvar="FLEET_REPLAY_TO",
    show_envvar=True,
    help="Publish every request to this TOPIC instead of the one it was recorded on.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    envvar="FLEET_REPLAY_RATE",
    show_envvar=True,
    help="Requests per second (instead of --timing).",
)
@click.option(
    "--timing",
    type=click.Choice(["fast", "original"]),
    default="fast",
    show_default=True,
    envvar="FLEET_REPLAY_TIMING",
    show_envvar=True,
    help="fast: as fast as possible; original: keep the recorded gaps between requests.",
)
@click.option(
    "--new-ids/--same-ids",
    default=True,
    show_default=True,
    envvar="FLEET_REPLAY_NEW_IDS",
    show_envvar=True,
    help="--new-ids: fresh execution ids (the results file maps original id <-> new id). "
    "--same-ids: republish the recorded events unchanged, to exercise idempotency: registry "
    "workers (FLEET_DATABASE_URL set) answer a duplicate from the execution history and nothing "
    "runs twice; workers without the registry simply run the request again.",
)
@click.option(
    "--results",
    "results_path",
    default="-",
    show_default=True,
    envvar="FLEET_REPLAY_RESULTS",
    show_envvar=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSON Lines file for the results (- = stdout).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    envvar="FLEET_REPLAY_TIMEOUT",
    show_envvar=True,
    help="Seconds to wait for outstanding results after the last request is published.",
)
@redis_url_option
@home_option
def replay(
    file: Path,
    to_topic: str | None,
    rate: float | None,
    timing: Literal["fast", "original"],
    new_ids: bool,
    results_path: str,
    timeout: float,
    redis_url: str | None,
    home: str | None,
) -> None:
    """Republish the requests recorded in FILE, in order, and write their results.

    Only requests are republished; results in FILE are the "before" side for `topic diff`.
    Each goes to --to, else where it was recorded (dead letters: the topic they came from).
    Exit 0 when every request got a result, 1 when some did not within --timeout.
    """
    if rate is not None and timing == "original":
        raise click.UsageError("--rate and --timing original exclude each other")
    settings = _broker(redis_url, home)
    options = ReplayOptions(
        results_topic=settings.results_topic,
        to_topic=resolve_topic(settings, to_topic) if to_topic else None,
        rate=rate,
        timing=timing,
        new_ids=new_ids,
        timeout=timeout,
        dlq_suffix=settings.dlq_suffix,
    )

    async def main(sink: IO[bytes]) -> Any:
        async with redis_client(settings) as redis:
            # The bar's length needs a first pass over the file; only worth it on a terminal.
            total = sum(1 for r in read_records(file) if is_request(r.get("event"))) if _interactive() else 0
            with _progress("replaying", total) as progress:
                return await replay_requests(redis, read_records(file), sink, options, progress=progress)

    with click.open_file(results_path, "wb") as sink:
        try:
            summary = run(main(sink))
        except (RecordFormatError, ReplayError) as exc:
            raise click.UsageError(str(exc)) from None
    click.echo(
        f"replayed {summary.published} requests: {summary.answered} results, "
        f"{summary.timed_out} without a result within {timeout:g}s",
        err=True,
    )
    if summary.timed_out:
        raise SystemExit(EXIT_FAILED)


# ---------------------------------------------------------------------------------- diff
@topic.command("diff")
@click.argument("before", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("after", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--ignore",
    multiple=True,
    envvar="FLEET_DIFF_IGNORE",
    show_envvar=True,
    help="A volatile field to leave out, e.g. output.timestamp or /output/items/*/id (repeatable).",
)
def diff(before: Path, after: Path, ignore: tuple[str, ...]) -> None:
    """Compare the results in BEFORE and AFTER request by request.

    Each may be a recording (`record`/`export`) or a `replay` results file. Status, output
    and error code are compared; timing fields never are. Exit 0 when identical, 1 when
    anything differs (including a result on one side only), 2 on unreadable input.
    """
    try:
        report = diff_results(load_results(before, ignore), load_results(after, ignore))
    except (RecordFormatError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    for line in format_report(report, str(before), str(after)):
        click.echo(line)
    if report.differs:
        raise SystemExit(EXIT_FAILED)
