"""Measuring instruments for `fleet bench`: request bodies, publishers, the one results reader,
percentiles and per-process statistics from ``/proc``.

Clocks: every timestamp is :func:`time.perf_counter` in the bench process, so a latency is
"``XADD`` sent → result entry read by the results reader", end to end through the broker, the
consumer and back (it includes the bench process's own event-loop delay, as any client's would).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.runtime.envelope import encode_request

__all__ = [
    "ECHO",
    "PhaseStats",
    "Request",
    "ResultCollector",
    "cpu_seconds",
    "echo_requests",
    "percentile",
    "publish_burst",
    "publish_paced",
    "rss_mb",
]

ECHO = "system/echo"
_EMPTY_METADATA = b"{}"
#: XADDs per pipeline round trip in the throughput phase.
PUBLISH_CHUNK = 500
#: Results read per XREAD.
READ_COUNT = 1000

#: ``(execution_id, CloudEvent body)``.
Request = tuple[str, bytes]


def echo_requests(count: int, *, tag: str, source: str = "fleet-bench") -> list[Request]:
    """``count`` ``system/echo`` request events as ``(execution_id, body)``: a realistic small
    workflow step (about 500 bytes: ids, context and a nested input), encoded the way the
    client encodes them."""
    requests = []
    for seq in range(count):
        requests.append(
            encode_request(
                function=ECHO,
                input={
                    "text": "hello from fleet bench",
                    "seq": seq,
                    "tags": ["bench", "echo", tag],
                    "options": {"uppercase": False, "repeat": 1, "locale": "en-GB"},
                },
                source=source,
                context={"run": tag, "step": "echo", "attempt": 1},
                workflow_execution_id=f"wf-{tag}",
                node_id="echo-1",
            )
        )
    return requests


@dataclass(slots=True)
class PhaseStats:
    """What one phase measured: how many results arrived, when, and each one's latency."""

    expected: int
    received: int = 0
    first_sent: float | None = None
    last_received: float | None = None
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        """First publish → last result received (0 before both happened)."""
        if self.first_sent is None or self.last_received is None:
            return 0.0
        return max(self.last_received - self.first_sent, 0.0)

    @property
    def throughput_per_s(self) -> float:
        elapsed = self.elapsed_s
        return self.received / elapsed if elapsed > 0 else 0.0


class ResultCollector:
    """The one results reader: ``XREAD BLOCK`` on ``topic`` from where it started, resolving
    published requests by the result's ``executionid``.

    Protocol: :meth:`begin` a phase, :meth:`sent` each request *before* its ``XADD`` goes out,
    then :meth:`wait`. Results of requests not registered in the current phase are ignored.
    :meth:`run` is the reader task; :meth:`stop` ends it within ``block_ms``.
    """

    def __init__(self, redis: Redis, topic: str, *, block_ms: int = 100, position: str = "0-0") -> None:
        self._redis = redis
        self._topic = topic
        self._block_ms = block_ms
        self._position = position
        self._sent: dict[str, float] = {}
        self._phase = PhaseStats(expected=0)
        self._done = asyncio.Event()
        self._stopping = False
        self._on_received: Callable[[int], None] | None = None
        self.error: BaseException | None = None

    def begin(self, expected: int, on_received: Callable[[int], None] | None = None) -> PhaseStats:
        """Start a phase expecting ``expected`` results; returns its (live) statistics."""
        self._sent.clear()
        self._phase = PhaseStats(expected=expected)
        self._on_received = on_received
        self._done.clear()
        if expected <= 0:
            self._done.set()
        return self._phase

    def sent(self, execution_id: str, at: float) -> None:
        """Register a request about to be published at ``at`` (``perf_counter``)."""
        self._sent[execution_id] = at
        if self._phase.first_sent is None:
            self._phase.first_sent = at

    async def wait(self, timeout: float, alive: Callable[[], bool]) -> PhaseStats:
        """Wait until every expected result arrived. Raises :class:`TimeoutError` after
        ``timeout`` seconds, or ``RuntimeError`` if ``alive()`` turns false or the reader died."""
        deadline = time.perf_counter() + timeout
        while not self._done.is_set():
            if self.error is not None:
                raise RuntimeError(f"results reader failed: {self.error!r}")
            if not alive():
                raise RuntimeError("the consumer process exited")
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self._phase.received} of {self._phase.expected} results arrived in {timeout:g}s"
                )
            try:
                await asyncio.wait_for(self._done.wait(), min(remaining, 0.25))
            except TimeoutError:
                continue
        return self._phase

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        """Read results until :meth:`stop`; a Redis error ends the task (see :attr:`error`)."""
        try:
            while not self._stopping:
                response: Any = await self._redis.xread(
                    {self._topic: self._position}, count=READ_COUNT, block=self._block_ms
                )
                if not response:
                    continue
                now = time.perf_counter()
                entries = response[0][1]
                self._position = entries[-1][0]
                self._take(entries, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc

    def _take(self, entries: Sequence[Any], now: float) -> None:
        phase, sent = self._phase, self._sent
        matched = 0
        for _, fields in entries:
            try:
                execution_id = orjson.loads(fields[b"data"])["executionid"]
            except (KeyError, TypeError, orjson.JSONDecodeError):
                continue
            at = sent.pop(execution_id, None)
            if at is None:
                continue
            phase.latencies_ms.append((now - at) * 1000)
            matched += 1
        if not matched:
            return
        phase.received += matched
        phase.last_received = now
        if self._on_received is not None:
            self._on_received(matched)
        if phase.received >= phase.expected:
            self._done.set()


async def publish_burst(
    redis: Redis, topic: str, requests: Sequence[Request], collector: ResultCollector
) -> None:
    """Publish every request as fast as possible: pipelined ``XADD``s, ``PUBLISH_CHUNK`` per
    round trip (no transaction)."""
    for start in range(0, len(requests), PUBLISH_CHUNK):
        pipe = redis.pipeline(transaction=False)
        at = time.perf_counter()
        for execution_id, body in requests[start : start + PUBLISH_CHUNK]:
            collector.sent(execution_id, at)
            pipe.xadd(topic, {"data": body, "metadata": _EMPTY_METADATA})
        await pipe.execute()


async def publish_paced(
    redis: Redis, topic: str, requests: Sequence[Request], rate: float, collector: ResultCollector
) -> float:
    """Publish ``requests`` on a fixed schedule of ``rate`` per second (request *i* is due at
    ``start + i / rate``), one ``XADD`` each; when the publisher falls behind, the overdue ones
    go in one pipeline. Returns the achieved publishing rate."""
    total = len(requests)
    if total == 0:
        return 0.0
    start = time.perf_counter()
    index = 0
    while index < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        if due <= index:
            await asyncio.sleep(start + index / rate - now)
            continue
        if due - index == 1:
            execution_id, body = requests[index]
            collector.sent(execution_id, time.perf_counter())
            await redis.xadd(topic, {"data": body, "metadata": _EMPTY_METADATA})
        else:
            pipe = redis.pipeline(transaction=False)
            at = time.perf_counter()
            for execution_id, body in requests[index:due]:
                collector.sent(execution_id, at)
                pipe.xadd(topic, {"data": body, "metadata": _EMPTY_METADATA})
            await pipe.execute()
        index = due
    elapsed = time.perf_counter() - start
    return total / elapsed if elapsed > 0 else float(total)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) with linear interpolation between closest ranks;
    ``nan`` for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _status_kb(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def rss_mb(pid: int, *, peak: bool = False) -> float | None:
    """Resident set size (``VmRSS``, or ``VmHWM`` when ``peak``) of ``pid`` in MB (2**20
    bytes), or ``None`` where ``/proc`` is not available."""
    kb = _status_kb(pid, "VmHWM" if peak else "VmRSS")
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time ``pid`` used so far (``/proc/<pid>/stat``), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
