"""The local autoscaler of `fleet up`: 0..N worker processes per domain, by KEDA's rules.

One loop per domain reads what KEDA's redis-streams scaler reads (:func:`observe`), runs the
same pure :func:`decide` the simulator and the tests run, logs each decision (one structured line
and the bounded scale-event stream `fleet status` shows) and applies it. What it does beyond
KEDA (docs/scaling.md, "The local autoscaler"):

* **activation without a poll**: while a domain has no process, the loop blocks on its stream
  (``XREAD BLOCK`` from the newest entry) and decides the moment a request lands;
* **busy-aware scale-in**: the processes with the fewest entries in flight are asked to stop
  (SIGTERM: intake stops, in-flight work drains within ``FLEET_SHUTDOWN_TIMEOUT``), and only
  then ended; what they leave pending is marked idle at once (``XCLAIM … IDLE``) so the surviving
  consumers reclaim it on their next pass instead of after ``FLEET_PROCESSING_TIMEOUT``, and a
  process started later under the same consumer name takes it back at start;
* **crashes**: a process that dies is started again only if the decision still wants it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis

from shared.domains import Domain
from shared.settings import Settings
from shared.tools.scaling.decision import Decision, ScalerState, decide, next_tick
from shared.tools.scaling.events import append, log_event
from shared.tools.scaling.model import Observation, ScaleEvent
from shared.tools.scaling.observe import observe
from shared.tools.scaling.spec import ScalingSpec, for_domain
from shared.transports.redis_streams import ensure_group

__all__ = ["Autoscaler", "DomainPool", "Process", "Spawner"]

log = structlog.get_logger("fleet.scaling")

#: Seconds between restarts of a process that keeps crashing (doubles up to the cap).
RESTART_INITIAL, RESTART_MAX = 0.5, 30.0
#: Grace after FLEET_SHUTDOWN_TIMEOUT before a draining process is killed.
KILL_GRACE = 5.0


class Process(Protocol):
    """What the autoscaler needs of a worker process (``asyncio.subprocess.Process``)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


#: ``spawn(domain, consumer_name)`` starts one worker process of ``domain`` under that name.
Spawner = Callable[[str, str], Awaitable[Process]]


@dataclass
class DomainPool:
    """One domain's processes and scaler state."""

    domain: Domain
    spec: ScalingSpec
    state: ScalerState
    #: consumer name → running process (not draining).
    live: dict[str, Process] = field(default_factory=dict)
    #: consumer name → process asked to stop, until it exited.
    draining: dict[str, Process] = field(default_factory=dict)
    desired: int = 0
    restart_delay: float = RESTART_INITIAL
    #: monotonic time before which no process is started again after a crash.
    restart_not_before: float = 0.0
    last_crash: float = 0.0
    #: (reason, desired) of the last decision recorded.
    last_recorded: tuple[str, int] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Autoscaler:
    """Drives every domain's processes (see module docstring).

    Parameters:
        settings: names, the ``FLEET_SCALE_*`` timings, shutdown and processing timeouts.
        domains: the domains to scale.
        redis: a client of the fleet's broker (reads, the scale-event stream).
        spawn: starts a worker process (see :data:`Spawner`).
        on_change: called after the set of processes changed (e.g. to rewrite `up.json`).
    """

    def __init__(
        self,
        settings: Settings,
        domains: Sequence[Domain],
        redis: Redis,
        spawn: Spawner,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self._spawn = spawn
        self._on_change = on_change
        self._clock = clock
        now = clock()
        self.pools = {
            d.name: DomainPool(d, for_domain(d, settings, "local"), ScalerState(origin=now)) for d in domains
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._drains: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    # ------------------------------------------------------------------ running
    async def run(self, stop: asyncio.Event) -> None:
        """Scale until ``stop`` is set, then drain every process (workers first: the caller
        stops the broker only after this returns)."""
        self._stop = stop
        await self._ensure_groups()
        self._tasks = [
            asyncio.create_task(self._domain_loop(pool), name=f"fleet-scale-{name}")
            for name, pool in self.pools.items()
        ]
        try:
            await stop.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._stop_all()

    async def scale_to(self, domain: str, replicas: int) -> None:
        """Run ``replicas`` processes of ``domain`` now, by the same path a decision takes
        (busy-aware scale-in included); the next decision may change it again."""
        pool = self.pools[domain]
        pool.desired = replicas
        pool.state = replace(pool.state, replicas=replicas)
        await self._converge(pool)

    async def drained(self) -> None:
        """Wait until every process asked to stop has exited and its entries were handed back."""
        while self._drains:
            await asyncio.gather(*list(self._drains), return_exceptions=True)

    async def _ensure_groups(self) -> None:
        """Create each domain's stream and group before the first poll, as the cluster's
        `fleet streams init` does (keda.md §5: with no group, KEDA's pending read errors and the
        domain never activates)."""
        for name in self.pools:
            try:
                await ensure_group(self.redis, self.settings.topic_for(name), self.settings.group_for(name))
            except Exception as exc:
                log.warning("could not create the consumer group", domain=name, error=str(exc))

    def processes(self) -> dict[str, dict[str, int]]:
        """Running processes by domain: consumer name → pid (for `up.json`)."""
        return {name: {c: p.pid for c, p in pool.live.items()} for name, pool in self.pools.items()}

    async def _domain_loop(self, pool: DomainPool) -> None:
        topic = self.settings.topic_for(pool.domain.name)
        group = self.settings.group_for(pool.domain.name)
        while not self._stop.is_set():
            if not pool.live and pool.state.replicas == 0:
                landed = await self._wait_for_work(topic, until=next_tick(pool.state, pool.spec))
                if landed:
                    # Activation must not wait for the next poll: make one due now.
                    now = self._clock()
                    pool.state = replace(pool.state, origin=now, polls=0, syncs=0)
            else:
                await self._sleep_until(next_tick(pool.state, pool.spec), pool.wake)
            if self._stop.is_set():
                return
            observation = await observe(self.redis, topic, group)
            decision = decide(observation, pool.state, self._clock(), pool.spec)
            await self._apply(pool, observation, decision)

    async def _wait_for_work(self, topic: str, *, until: float) -> bool:
        """Block on ``topic`` until a new entry lands (True) or ``until`` (False)."""
        timeout_ms = max(1, int((until - self._clock()) * 1000))
        try:
            reply: Any = await self.redis.xread({topic: "$"}, count=1, block=timeout_ms)
        except Exception as exc:  # the broker is away: fall back to the poll's timing
            log.warning("stream wait failed; polling", topic=topic, error=str(exc))
            await self._sleep_until(until, None)
            return False
        return bool(reply)

    async def _sleep_until(self, when: float, wake: asyncio.Event | None) -> None:
        delay = max(0.0, when - self._clock())
        waits = [asyncio.ensure_future(self._stop.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            if wake is not None:
                wake.clear()

    # ------------------------------------------------------------------ applying
    async def _apply(self, pool: DomainPool, observation: Observation, decision: Decision) -> None:
        changed = decision.desired != pool.state.replicas
        pool.state = decision.state
        pool.desired = decision.desired
        # Changes are recorded each time; a condition that persists (a read error, the broker
        # away) once, until it changes.
        recorded = (decision.reason, decision.desired)
        if decision.reason not in ("not-due", "hold") and (changed or recorded != pool.last_recorded):
            pool.last_recorded = recorded
            await self._record(pool, observation, decision)
        await self._converge(pool)

    async def _record(self, pool: DomainPool, observation: Observation, decision: Decision) -> None:
        event = ScaleEvent(
            at=time.time(),
            domain=pool.domain.name,
            current=len(pool.live),
            desired=decision.desired,
            reason=decision.reason,
            lag=observation.lag if observation.lag is not None else observation.stream_length,
            pending=observation.pending,
        )
        log_event(event)
        with contextlib.suppress(Exception):  # the log line is the record; the stream is a view
            await append(self.redis, self.settings, event)

    async def _converge(self, pool: DomainPool) -> None:
        """Start or stop processes until ``pool.live`` has ``pool.desired`` of them."""
        self._reap(pool)
        missing = pool.desired - len(pool.live)
        if missing > 0 and self._clock() < pool.restart_not_before:
            return  # a process crashed moments ago: wait out the restart delay first
        if missing > 0:
            for _ in range(missing):
                name = self._free_name(pool)
                try:
                    pool.live[name] = await self._spawn(pool.domain.name, name)
                except OSError as exc:
                    log.error("worker process could not start", domain=pool.domain.name, error=str(exc))
                    break
            self._on_change()
        elif missing < 0:
            victims = await self._fewest_in_flight(pool, -missing)
            for name in victims:
                process = pool.live.pop(name)
                pool.draining[name] = process
                task = asyncio.create_task(self._drain(pool, name, process), name=f"fleet-drain-{name}")
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)
            self._on_change()

    def _reap(self, pool: DomainPool) -> None:
        """Forget processes that exited on their own (a crash): the next convergence starts a
        replacement only if the decision still wants one, after a growing delay."""
        now = self._clock()
        for name, process in list(pool.live.items()):
            if process.returncode is not None:
                del pool.live[name]
                log.warning(
                    "worker process exited", domain=pool.domain.name, consumer=name, code=process.returncode
                )
                # Crashes in a row wait longer and longer; a quiet spell starts over.
                quiet = now - pool.last_crash > RESTART_MAX
                pool.restart_delay = RESTART_INITIAL if quiet else min(RESTART_MAX, pool.restart_delay * 2)
                pool.last_crash = now
                pool.restart_not_before = now + pool.restart_delay
                asyncio.get_running_loop().call_later(pool.restart_delay, pool.wake.set)

    def _free_name(self, pool: DomainPool) -> str:
        # The lowest free index: a process started after a scale-in takes the name (and so the
        # pending entries) of one that stopped.
        taken = set(pool.live) | set(pool.draining)
        base = f"{self.settings.consumer_name}-{pool.domain.name}"
        index = 1
        while f"{base}-{index}" in taken:
            index += 1
        return f"{base}-{index}"

    async def _fewest_in_flight(self, pool: DomainPool, count: int) -> list[str]:
        """The ``count`` live processes with the fewest entries pending in the group."""
        pending: dict[str, int] = {}
        topic, group = self.settings.topic_for(pool.domain.name), self.settings.group_for(pool.domain.name)
        with contextlib.suppress(Exception):
            for consumer in await self.redis.xinfo_consumers(topic, group):
                name = consumer["name"]
                pending[name.decode() if isinstance(name, bytes) else str(name)] = int(consumer["pending"])
        # Newest first among equals: the longest-lived processes keep their warm caches.
        ranked = sorted(pool.live, key=lambda n: (pending.get(n, 0), -_index(n)))
        return ranked[:count]

    async def _drain(self, pool: DomainPool, name: str, process: Process) -> None:
        """SIGTERM, wait for the drain, then hand what the process left pending to the others."""
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.settings.shutdown_timeout + KILL_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        pool.draining.pop(name, None)
        await self._release_pending(pool, name)
        self._on_change()

    async def _release_pending(self, pool: DomainPool, consumer: str) -> None:
        """Mark what ``consumer`` left un-acked as idle past the processing timeout: any other
        consumer's next reclaim pass takes it (``XAUTOCLAIM`` min-idle), not one timeout later."""
        topic, group = self.settings.topic_for(pool.domain.name), self.settings.group_for(pool.domain.name)
        idle_ms = int(self.settings.processing_timeout * 1000) + 1
        try:
            pending: Any = await self.redis.xpending_range(
                topic, group, min="-", max="+", count=10_000, consumername=consumer
            )
            ids = [p["message_id"] for p in pending]
            for start in range(0, len(ids), 500):
                await self.redis.xclaim(
                    topic, group, consumer, 0, ids[start : start + 500], idle=idle_ms, justid=True
                )
        except Exception as exc:
            log.warning("could not hand back a stopped worker's entries", consumer=consumer, error=str(exc))
            return
        if ids:
            log.info("entries of a stopped worker handed back", consumer=consumer, count=len(ids))

    async def _stop_all(self) -> None:
        """Drain every process at once (the step to zero of a stopping fleet)."""
        drains: list[Awaitable[None]] = list(self._drains)
        for pool in self.pools.values():
            for name, process in list(pool.live.items()):
                pool.draining[name] = pool.live.pop(name)
                drains.append(self._drain(pool, name, process))
        await asyncio.gather(*drains, return_exceptions=True)


def _index(consumer: str) -> int:
    tail = consumer.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0
