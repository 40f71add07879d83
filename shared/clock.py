"""Timestamps of the contract: UTC, RFC 3339 with milliseconds. A leaf module, so the transports
(dead-letter metadata) and the runtime (results) share one clock without importing each other."""

from __future__ import annotations

import time

__all__ = ["utc_now_iso"]

_second_cached = -1
_second_text = ""


def utc_now_iso() -> str:
    """Now, UTC, RFC 3339 with milliseconds (``2026-11-23T10:26:47.114Z``).

    Called several times per message: the seconds part is formatted once per second."""
    global _second_cached, _second_text
    now = time.time()
    second = int(now)
    if second != _second_cached:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cached = second
    return f"{_second_text}.{int((now - second) * 1000):03d}Z"
