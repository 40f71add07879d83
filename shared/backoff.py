"""The one backoff every retry loop of the fleet uses: exponential, capped, jittered.

Reconnects (broker, database, sidecar), settle retries and dependency polling all wait with a
:class:`Backoff`: by default 0.1 s doubling to 5 s with ±50 % jitter (so a fleet of workers does
not reconnect in step); a Redis connection uses 0.05 s doubling to 0.5 s (``REDIS_RECONNECT``:
a restarted Redis is back in use within a second, and a refused connection costs ~3 ms).
``reset()`` after a success.
"""

from __future__ import annotations

import random

__all__ = ["BACKOFF_FACTOR", "BACKOFF_INITIAL", "BACKOFF_MAX", "REDIS_RECONNECT", "Backoff"]

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
BACKOFF_FACTOR = 2.0
#: (initial, maximum) of reconnects to Redis: the consume loop and the client's results reader.
REDIS_RECONNECT = (0.05, 0.5)


class Backoff:
    """Exponential backoff with jitter.

    ``next()`` returns the delay before the next attempt: ``initial * factor**n``, capped at
    ``maximum``, times a uniform jitter in ``[1 - jitter, 1 + jitter]``. ``jitter=0`` makes it
    deterministic (readiness polling, tests).
    """

    __slots__ = ("_factor", "_initial", "_jitter", "_max", "_next")

    def __init__(
        self,
        initial: float = BACKOFF_INITIAL,
        maximum: float = BACKOFF_MAX,
        factor: float = BACKOFF_FACTOR,
        *,
        jitter: float = 0.5,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self._initial, self._max, self._factor, self._jitter = initial, maximum, factor, jitter
        self._next = initial

    def next(self) -> float:
        """The delay (seconds) to wait before the next attempt; each call grows the next one."""
        delay = self._next
        self._next = min(self._max, self._next * self._factor)
        if not self._jitter:
            return delay
        return delay * random.uniform(1 - self._jitter, 1 + self._jitter)

    def reset(self) -> None:
        """Back to the first delay (call after a success)."""
        self._next = self._initial
