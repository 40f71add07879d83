"""``ID|TIME`` bounds of an XRANGE, as ``fleet topic export --from/--to`` take them.

Accepted forms:

* a stream id, ``1732350000000-5``, or its millisecond part alone, ``1732350000000``;
* ``-`` / ``+`` (the start / end of the stream);
* an ISO 8601 time, ``2024-11-23T08:20:00Z`` (no zone = UTC).

A time as a lower bound means "entries at or after it" (``<ms>-0``); as an upper bound,
"entries at or before it" (``<ms>`` alone, which XRANGE reads as the last sequence number of
that millisecond).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["end_bound", "start_bound"]

_ID = re.compile(r"^\d+(-\d+)?$")


def _millis(value: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a stream id (<ms>-<seq>) nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def start_bound(value: str | None) -> str:
    """The XRANGE start for ``value`` (``-`` when ``None``). Raises ValueError if unreadable."""
    if value is None or value == "-":
        return "-"
    if _ID.match(value):
        return value
    return f"{_millis(value)}-0"


def end_bound(value: str | None) -> str:
    """The XRANGE end for ``value`` (``+`` when ``None``). Raises ValueError if unreadable."""
    if value is None or value == "+":
        return "+"
    if _ID.match(value):
        return value
    return str(_millis(value))
