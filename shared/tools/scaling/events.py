"""The scale-event log: every autoscaler decision as one structured log line (:func:`log_event`)
and one entry of a bounded Redis stream per fleet (:func:`append`), which `fleet status` reads
back (:func:`read_last`) from any terminal, in a cluster too.

Stream entries hold one field, ``event``: the :meth:`ScaleEvent.encode` JSON.
"""

from __future__ import annotations

from typing import Any

import structlog

from shared.settings import Settings
from shared.tools.scaling.model import ScaleEvent, scale_events_stream
from shared.transports.redis import redis_errors_as_transport

__all__ = ["SCALE_EVENTS_MAXLEN", "append", "log_event", "read_last"]

#: About how many events the stream keeps (``MAXLEN ~``: Redis trims whole nodes, so a few
#: more may stay).
SCALE_EVENTS_MAXLEN = 1000

log = structlog.get_logger("fleet.scaling")


async def append(
    redis: Any, settings: Settings, event: ScaleEvent, *, maxlen: int = SCALE_EVENTS_MAXLEN
) -> str:
    """Add ``event`` to the fleet's scale-event stream (trimmed to about ``maxlen``); returns
    the entry id. Raises :class:`~shared.errors.TransportError` when the broker is unreachable."""
    async with redis_errors_as_transport("append scale event"):
        entry_id = await redis.xadd(
            scale_events_stream(settings.group_prefix),
            {"event": event.encode()},
            maxlen=maxlen,
            approximate=True,
        )
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def read_last(
    redis: Any, settings: Settings, count: int, domain: str | None = None
) -> list[ScaleEvent]:
    """The last ``count`` scale events, newest first (only ``domain``'s when given). Entries
    that do not decode (written by another version) are skipped. Raises
    :class:`~shared.errors.TransportError` when the broker is unreachable."""
    if count <= 0:
        return []
    # The stream is bounded, so filtering by domain reads at most the whole (small) stream.
    scan = count if domain is None else SCALE_EVENTS_MAXLEN + 200
    async with redis_errors_as_transport("read scale events"):
        entries = await redis.xrevrange(scale_events_stream(settings.group_prefix), count=scan)
    events = decode_entries(entries)
    if domain is not None:
        events = [e for e in events if e.domain == domain]
    return events[:count]


def decode_entries(entries: list[tuple[Any, dict[bytes, bytes]]]) -> list[ScaleEvent]:
    """The events in XRANGE/XREVRANGE ``entries`` (in their order), skipping undecodable ones."""
    events: list[ScaleEvent] = []
    for _, fields in entries:
        raw = fields.get(b"event")
        if raw is None:
            continue
        try:
            events.append(ScaleEvent.decode(raw))
        except (ValueError, TypeError):
            continue
    return events


def log_event(event: ScaleEvent) -> None:
    """Log ``event`` as one structured line (``fleet.scaling``): domain, metrics,
    current → desired, reason. A decision taken on a failed read logs as a warning."""
    emit = log.warning if event.reason == "error" else log.info
    emit(
        "scale decision",
        domain=event.domain,
        current=event.current,
        desired=event.desired,
        reason=event.reason,
        lag=event.lag,
        pending=event.pending,
        at=event.at,
    )
