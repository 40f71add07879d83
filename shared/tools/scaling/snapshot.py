"""What `fleet status` shows, read from Redis only (so it works against a fleet in a cluster):
one JSON-ready document per call, in two round trips.

1. One pipeline: ``TIME``; per domain KEDA's reads (:mod:`.observe`), ``XLEN`` of its dead
   letters, ``XINFO CONSUMERS`` of its group; the scale-event stream (bounded).
2. ``XREVRANGE`` of the results stream over the last :data:`RATE_WINDOW_S` seconds by entry id
   (Redis's clock, so a skewed terminal clock does not matter), at most :data:`RATE_SAMPLE`
   entries: executions per second and p50/p99 of ``duration_ms`` per domain, the domain taken
   from the result CloudEvent's ``source`` (``fleet/<domain>``).

The document's shape is documented in docs/scaling.md ("fleet status") and checked by
tests/scaling/test_status.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import orjson
from redis import exceptions as redis_errors

from shared.discovery import read_up_state
from shared.domains import Domain
from shared.limiter.store import LimitStore
from shared.settings import Settings
from shared.tools.scaling.events import SCALE_EVENTS_MAXLEN, decode_entries
from shared.tools.scaling.model import ScaleEvent, scale_events_stream
from shared.tools.scaling.observe import READS_PER_OBSERVATION, parse_reads, queue_reads
from shared.transports.redis import redis_errors_as_transport

__all__ = [
    "LIVE_IDLE_FACTOR",
    "RATE_SAMPLE",
    "RATE_WINDOW_S",
    "RECENT_EVENTS",
    "percentile",
    "take_snapshot",
]

#: Seconds of results the rates and percentiles cover.
RATE_WINDOW_S = 60
#: Most result entries read per snapshot (the window shrinks to what they cover beyond it).
RATE_SAMPLE = 10_000
#: A consumer is a live process when it has work in flight or was seen within this many
#: processing timeouts (workers block on XREADGROUP for ``block_ms`` and heartbeat their
#: in-flight entries, so a live one is never idle that long).
LIVE_IDLE_FACTOR = 2
#: Scale events listed at the fleet level, newest first.
RECENT_EVENTS = 10

_PER_DOMAIN = READS_PER_OBSERVATION + 2


async def take_snapshot(
    redis: Any, settings: Settings, domains: Iterable[Domain], *, local: bool = False
) -> dict[str, Any]:
    """The status document of the fleet under ``settings`` for ``domains``. ``local``: a
    `fleet up` on this machine runs the fleet (its process bound then applies as ``max``).
    Raises :class:`~shared.errors.TransportError` when the broker is unreachable; error
    replies of single reads show as a domain's ``error`` or as absent values instead."""
    domains = list(domains)
    async with redis_errors_as_transport("fleet status"):
        pipe = redis.pipeline(transaction=False)
        pipe.time()
        for d in domains:
            topic, group = settings.topic_for(d.name), settings.group_for(d.name)
            queue_reads(pipe, topic, group)
            pipe.xlen(settings.dlq_for(topic))
            pipe.xinfo_consumers(topic, group)
        pipe.xrevrange(scale_events_stream(settings.group_prefix), count=SCALE_EVENTS_MAXLEN)
        replies = await pipe.execute(raise_on_error=False)
        seconds, micros = replies[0]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        try:
            results = await redis.xrevrange(
                settings.results_topic, max="+", min=str(now_ms - RATE_WINDOW_S * 1000), count=RATE_SAMPLE
            )
        except redis_errors.ResponseError:  # not a stream: no rates rather than no screen
            results = []
        try:
            limits = await LimitStore(redis, settings.group_prefix).running_all()
        except redis_errors.ResponseError:  # a key of another type under the prefix
            limits = {}
    # A local fleet's processes are the ones `fleet up` runs now (its state file), not the
    # consumers Redis still remembers.
    state = read_up_state(settings.home) if local else None
    workers = state.get("workers") if state else None
    events_reply = replies[-1]
    events = [] if isinstance(events_reply, Exception) else decode_entries(events_reply)
    window_s, by_domain = _executions(results, now_ms)
    live_idle_ms = LIVE_IDLE_FACTOR * settings.processing_timeout * 1000
    rows = []
    for i, d in enumerate(domains):
        start = 1 + i * _PER_DOMAIN
        chunk = replies[start : start + _PER_DOMAIN]
        rows.append(
            _domain_row(
                d,
                settings,
                chunk,
                durations=by_domain.get(d.name, []),
                window_s=window_s,
                last_event=next((e for e in events if e.domain == d.name), None),
                live_idle_ms=live_idle_ms,
                local=local,
                processes=workers.get(d.name) if isinstance(workers, dict) else None,
            )
        )
    return {
        "fleet": {
            "at": now_ms / 1000,
            "local": local,
            "window_s": round(window_s, 3),
            "results_sampled": len(results),
            "results_truncated": len(results) >= RATE_SAMPLE,
        },
        "domains": rows,
        "scale_events": [asdict(e) for e in events[:RECENT_EVENTS]],
        # Executions holding a fleet-wide concurrency slot now, by function (docs/contract.md,
        # "Limits"); their maxima are in the registry (`fleet functions show`).
        "limits": {"running": limits},
    }


def _domain_row(
    domain: Domain,
    settings: Settings,
    replies: Sequence[Any],
    *,
    durations: list[float],
    window_s: float,
    last_event: ScaleEvent | None,
    live_idle_ms: float,
    local: bool,
    processes: dict[str, int] | None = None,
) -> dict[str, Any]:
    group = settings.group_for(domain.name)
    observation = parse_reads(replies[:READS_PER_OBSERVATION], group)
    dead_letters, consumers_reply = replies[READS_PER_OBSERVATION:]
    consumers = [] if isinstance(consumers_reply, Exception) else consumers_reply
    listed = [
        {
            "name": _text(c["name"]),
            "in_flight": int(c["pending"]),
            "idle_ms": int(c["idle"]),
            "live": int(c["pending"]) > 0 or int(c["idle"]) < live_idle_ms,
        }
        for c in consumers
    ]
    if isinstance(processes, dict):
        for c in listed:
            c["live"] = c["name"] in processes
        seen = {c["name"] for c in listed}
        # Started and not yet delivered anything: Redis does not list it as a consumer yet.
        listed += [
            {"name": n, "in_flight": 0, "idle_ms": None, "live": True} for n in processes if n not in seen
        ]
    return {
        "name": domain.name,
        "topic": settings.topic_for(domain.name),
        "group": group,
        "group_exists": observation.group_exists,
        "lag": observation.lag,
        "pending": observation.pending,
        "stream_length": observation.stream_length,
        "dead_letters": None if isinstance(dead_letters, Exception) else int(dead_letters),
        "error": observation.error,
        "processes": {
            "current": sum(1 for c in listed if c["live"]),
            "desired": None if last_event is None else last_event.desired,
            "min": domain.min_replicas,
            "max": _max_processes(settings, domain, local),
        },
        "executions_per_s": round(len(durations) / window_s, 3),
        "p50_ms": percentile(durations, 50),
        "p99_ms": percentile(durations, 99),
        "last_scale_event": None if last_event is None else asdict(last_event),
        "consumers": listed,
    }


def _max_processes(settings: Settings, domain: Domain, local: bool) -> int:
    # `fleet up`'s autoscaler bounds local processes by FLEET_SCALE_MAX_PROCESSES (else the CPUs).
    if not local:
        return domain.max_replicas
    from shared.tools.scaling.spec import local_max_processes

    return min(domain.max_replicas, local_max_processes(settings))


def _executions(
    results: Sequence[tuple[Any, dict[bytes, bytes]]], now_ms: int
) -> tuple[float, dict[str, list[float]]]:
    """The window the ``results`` (newest first) cover in seconds, and per domain the durations
    of the executions they report (NaN for a result without ``duration_ms``: it counts as an
    execution, not in the percentiles)."""
    window_s = float(RATE_WINDOW_S)
    if len(results) >= RATE_SAMPLE:
        oldest_ms = int(_text(results[-1][0]).split("-", 1)[0])
        window_s = max((now_ms - oldest_ms) / 1000, 0.001)
    by_domain: dict[str, list[float]] = {}
    for _, fields in results:
        try:
            event = orjson.loads(fields.get(b"data", b""))
        except orjson.JSONDecodeError:
            continue
        source = event.get("source") if isinstance(event, dict) else None
        if not isinstance(source, str) or not source.startswith("fleet/"):
            continue
        data = event.get("data")
        duration = data.get("duration_ms") if isinstance(data, dict) else None
        by_domain.setdefault(source.removeprefix("fleet/"), []).append(
            float(duration) if isinstance(duration, int | float) else math.nan
        )
    return window_s, by_domain


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of the finite ``values`` (``None`` when none)."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    rank = max(math.ceil(p / 100 * len(finite)), 1)
    return finite[rank - 1]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
