"""`fleet scale simulate`: an arrival trace through :func:`~shared.tools.scaling.decision.decide`
on a virtual clock, with a queue model, per domain and scaling profile.

Queue model: requests wait in FIFO order (the stream); each *ready* replica runs up to the
domain's ``concurrency`` requests at once, each for its duration. A replica the scaler adds is
ready ``cold_start`` seconds later (image, sidecar, worker start) and costs replica-seconds from
the moment it is asked for. On scale-in the not-yet-ready replicas go first (as a ReplicaSet
picks them); a stopped replica's in-flight requests finish (graceful drain) but it takes no new
ones. The scaler observes ``lag`` = queued requests and ``pending`` = in-flight ones (Dapr's
prefetch, which moves entries from lag to pending early, is not modelled).

The clock is event-driven: it jumps between arrivals, completions, replicas becoming ready and
the scaler's ticks, and over idle stretches at zero replicas in one step
(:func:`~shared.tools.scaling.decision.advance_idle`), so a week of 1M requests is seconds of
work. Time 0 is the scaler's first poll; trace times are seconds from then.
"""

from __future__ import annotations

import csv
import heapq
import io
import math
import random
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from shared.errors import ConfigError
from shared.tools.scaling.decision import ScalerState, advance_idle, decide, next_tick
from shared.tools.scaling.model import Observation
from shared.tools.scaling.spec import ScalingSpec

__all__ = [
    "GENERATORS",
    "Arrival",
    "DomainRun",
    "TickRecord",
    "burst",
    "diurnal",
    "group_by_domain",
    "percentile",
    "read_trace",
    "simulate_domain",
    "steady",
    "workflow",
]


class Arrival(NamedTuple):
    """One request of a trace: when it arrives (seconds), for which domain, how long it runs.
    (A tuple: a week-long trace holds a million of them.)"""

    time: float
    domain: str
    duration: float


@dataclass(frozen=True, slots=True)
class TickRecord:
    """What the scaler saw and did at one tick (kept when a run records its ticks)."""

    time: float
    observation: Observation
    desired: int
    reason: str


@dataclass(slots=True)
class DomainRun:
    """The outcome of one domain under one spec. Waits are from arrival to start (seconds);
    ``over_bound`` counts requests that waited longer than ``wait_bound``; ``end`` is when the
    last request finished and the scaler had settled at ``min_replicas``."""

    requests: int
    replica_seconds: float
    peak_replicas: int
    cold_starts: int
    wait_p50: float | None
    wait_p99: float | None
    wait_max: float | None
    over_bound: int
    wait_bound: float
    end: float
    ticks: list[TickRecord] = field(default_factory=list)
    #: ``(time, queued, replicas)`` after every tick, when recorded (for the plot).
    series: list[tuple[float, int, int]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready figures (no per-tick records)."""
        return {
            "requests": self.requests,
            "replica_seconds": round(self.replica_seconds, 3),
            "peak_replicas": self.peak_replicas,
            "cold_starts": self.cold_starts,
            "wait_p50_s": _round(self.wait_p50),
            "wait_p99_s": _round(self.wait_p99),
            "wait_max_s": _round(self.wait_max),
            "waited_over_bound": self.over_bound,
            "wait_bound_s": self.wait_bound,
            "end_s": round(self.end, 3),
        }


# --------------------------------------------------------------------------- the simulation
def simulate_domain(
    times: Sequence[float],
    durations: Sequence[float],
    spec: ScalingSpec,
    *,
    concurrency: int,
    cold_start: float,
    wait_bound: float,
    record: bool = False,
) -> DomainRun:
    """Replay the arrivals (``times`` sorted ascending, seconds ≥ 0; ``durations`` alike) of
    one domain under ``spec``. ``record`` keeps every tick (:class:`TickRecord`) and the
    queue/replica series. Pure and deterministic."""
    n = len(times)
    if len(durations) != n:
        raise ValueError("times and durations differ in length")
    if concurrency < 1 or cold_start < 0:
        raise ValueError("concurrency must be >= 1 and cold_start >= 0")
    inf = math.inf
    push, pop = heapq.heappush, heapq.heappop
    state = ScalerState(origin=0.0, replicas=0)
    running: list[float] = []  # completion times of in-flight requests
    starting: deque[float] = deque()  # ready times of replicas still cold-starting
    ready = 0
    arrived = started = 0  # requests arrived / started so far (queued = arrived - started)
    waits: list[float] = []
    over = 0
    replica_seconds, since, peak, cold_starts = 0.0, 0.0, 0, 0
    ticks: list[TickRecord] = []
    series: list[tuple[float, int, int]] = []
    tick = next_tick(state, spec)
    now = 0.0
    while True:
        replicas = ready + len(starting)
        if arrived == started and not running and not starting:
            if arrived == n and replicas == spec.min_replicas:
                break
            if replicas == 0 and spec.min_replicas == 0 and arrived < n and times[arrived] > tick:
                state = advance_idle(state, spec, times[arrived])
                tick = next_tick(state, spec)
        t_arrival = times[arrived] if arrived < n else inf
        t_done = running[0] if running else inf
        t_ready = starting[0] if starting else inf
        capacity = ready * concurrency
        if t_done <= t_ready and t_done <= t_arrival and t_done <= tick:
            now = pop(running)
            if started < arrived and len(running) < capacity:
                wait = now - times[started]
                waits.append(wait)
                over += wait > wait_bound
                push(running, now + durations[started])
                started += 1
        elif t_ready <= t_arrival and t_ready <= tick:
            now = starting.popleft()
            ready += 1
            capacity += concurrency
            while started < arrived and len(running) < capacity:
                wait = now - times[started]
                waits.append(wait)
                over += wait > wait_bound
                push(running, now + durations[started])
                started += 1
        elif t_arrival <= tick:
            now = t_arrival
            arrived += 1
            if started == arrived - 1 and len(running) < capacity:
                waits.append(0.0)
                push(running, now + durations[started])
                started += 1
        else:
            now = tick
            observation = Observation(lag=arrived - started, pending=len(running))
            decision = decide(observation, state, now, spec)
            state = decision.state
            tick = next_tick(state, spec)
            if record:
                ticks.append(TickRecord(now, observation, decision.desired, decision.reason))
            desired = decision.desired
            if desired != replicas:
                replica_seconds += replicas * (now - since)
                since = now
                if desired > replicas:
                    cold_starts += desired - replicas
                    if cold_start == 0:
                        ready += desired - replicas
                    else:
                        starting.extend([now + cold_start] * (desired - replicas))
                else:
                    surplus = replicas - desired
                    while surplus and starting:
                        starting.pop()
                        surplus -= 1
                    ready -= surplus
                peak = max(peak, desired)
                capacity = ready * concurrency
                while started < arrived and len(running) < capacity:
                    wait = now - times[started]
                    waits.append(wait)
                    over += wait > wait_bound
                    push(running, now + durations[started])
                    started += 1
            if record:
                series.append((now, arrived - started, desired))
    replica_seconds += (ready + len(starting)) * (now - since)
    waits.sort()
    return DomainRun(
        requests=n,
        replica_seconds=replica_seconds,
        peak_replicas=peak,
        cold_starts=cold_starts,
        wait_p50=percentile(waits, 50),
        wait_p99=percentile(waits, 99),
        wait_max=waits[-1] if waits else None,
        over_bound=over,
        wait_bound=wait_bound,
        end=now,
        ticks=ticks,
        series=series,
    )


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of ``sorted_values`` (ascending), ``None`` if empty."""
    if not sorted_values:
        return None
    return sorted_values[max(math.ceil(p / 100 * len(sorted_values)), 1) - 1]


def group_by_domain(arrivals: Iterable[Arrival]) -> dict[str, tuple[list[float], list[float]]]:
    """``domain → (times, durations)``, each sorted by time (stable for equal times)."""
    grouped: dict[str, list[tuple[float, float]]] = {}
    for a in arrivals:
        grouped.setdefault(a.domain, []).append((a.time, a.duration))
    out: dict[str, tuple[list[float], list[float]]] = {}
    for domain, pairs in grouped.items():
        pairs.sort(key=lambda p: p[0])
        out[domain] = ([p[0] for p in pairs], [p[1] for p in pairs])
    return out


# --------------------------------------------------------------------------- traces
def read_trace(path: Path) -> list[Arrival]:
    """Read a trace: JSON Lines (``{"time": s, "domain": "ai", "duration": s}`` per line) or
    CSV with a ``time,domain,duration`` header (by extension: ``.csv`` is CSV, anything else
    JSON Lines). Blank lines are skipped.

    Raises:
        ConfigError: a record without those fields, a negative time or duration (with its line).
    """
    text = path.read_text()
    rows: Iterator[tuple[int, dict[str, Any]]]
    if path.suffix.lower() == ".csv":
        rows = ((i + 2, dict(r)) for i, r in enumerate(csv.DictReader(io.StringIO(text))))
    else:
        rows = (
            (i + 1, _json_line(path, i + 1, line)) for i, line in enumerate(text.splitlines()) if line.strip()
        )
    return [_arrival(path, line, row) for line, row in rows]


def _json_line(path: Path, line: int, text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{line}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}:{line}: expected an object with time, domain, duration")
    return value


def _arrival(path: Path, line: int, row: dict[str, Any]) -> Arrival:
    try:
        arrival = Arrival(float(row["time"]), str(row["domain"]).strip(), float(row["duration"]))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}:{line}: need numeric time, duration and a domain: {row}") from None
    if arrival.time < 0 or arrival.duration < 0 or not math.isfinite(arrival.time + arrival.duration):
        raise ConfigError(f"{path}:{line}: time and duration must be finite and >= 0")
    return arrival


# --------------------------------------------------------------------------- generators
def burst(
    domain: str, *, count: int = 500, at: float = 60.0, spread: float = 5.0, mean: float = 2.0, seed: int = 0
) -> list[Arrival]:
    """``count`` requests arriving uniformly within ``spread`` seconds from ``at``."""
    rng = random.Random(seed)
    times = sorted(at + rng.random() * spread for _ in range(count))
    return [Arrival(t, domain, rng.expovariate(1 / mean)) for t in times]


def steady(
    domain: str, *, rate: float = 1.0, span: float = 3600.0, mean: float = 2.0, seed: int = 0
) -> list[Arrival]:
    """Poisson arrivals at ``rate`` per second for ``span`` seconds."""
    rng = random.Random(seed)
    out: list[Arrival] = []
    t = rng.expovariate(rate)
    while t < span:
        out.append(Arrival(t, domain, rng.expovariate(1 / mean)))
        t += rng.expovariate(rate)
    return out


def diurnal(
    domain: str, *, rate: float = 1.0, span: float = 7 * 86400.0, mean: float = 2.0, seed: int = 0
) -> list[Arrival]:
    """Poisson arrivals whose rate follows the day: ``rate * (1 - cos(2πt/day))``, from 0 at
    midnight to twice ``rate`` at noon (``rate`` on average), for ``span`` seconds."""
    rng = random.Random(seed)
    peak = 2 * rate
    out: list[Arrival] = []
    t = rng.expovariate(peak)
    while t < span:
        if rng.random() * peak < rate * (1 - math.cos(2 * math.pi * t / 86400.0)):  # thinning
            out.append(Arrival(t, domain, rng.expovariate(1 / mean)))
        t += rng.expovariate(peak)
    return out


def workflow(
    domain: str,
    *,
    rate: float = 1 / 120,
    span: float = 3600.0,
    steps: int = 5,
    gap: float = 10.0,
    fan_out: int = 1,
    mean: float = 2.0,
    seed: int = 0,
) -> list[Arrival]:
    """Workflow runs arriving as a Poisson process at ``rate`` per second for ``span`` seconds;
    each sends ``steps`` steps ``gap`` seconds apart (±20%), ``fan_out`` requests per step:
    bursts seconds apart, then silence."""
    rng = random.Random(seed)
    out: list[Arrival] = []
    start = rng.expovariate(rate)
    while start < span:
        t = start
        for _ in range(steps):
            out.extend(Arrival(t, domain, rng.expovariate(1 / mean)) for _ in range(fan_out))
            t += gap * rng.uniform(0.8, 1.2)
        start += rng.expovariate(rate)
    out.sort(key=lambda a: a.time)
    return out


GENERATORS = {"burst": burst, "steady": steady, "diurnal": diurnal, "workflow": workflow}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
