"""``/healthz``, ``/readyz`` and ``/metrics`` of one worker: the :class:`ProbeServer` extension.

* ``/healthz`` — alive: 200 as long as the process answers;
* ``/readyz`` — 200 once the transport is open and intake runs, 503 before and while draining;
  the JSON body is the worker's report (state, in flight, each extension's own report: a
  degraded registry is reported there and does not make the worker unready);
* ``/metrics`` — the worker's :class:`~shared.runtime.metrics.Metrics` in Prometheus text;
* ``POST /execute`` — a synchronous call (``shared/runtime/sync.py``): loopback callers only
  unless ``FLEET_APP_API_TOKEN`` is set, then any caller presenting it.

Direct (redis) mode: served on ``FLEET_METRICS_HOST:FLEET_METRICS_PORT`` (0 = off), started
before the other extensions so liveness answers while the registry waits for its database. The
address is published in the Redis hash ``<group prefix>endpoints`` (field: consumer name, value:
JSON ``{"url", "domain", "worker", "pid", "expires_at"}``, refreshed every
:data:`PUBLISH_INTERVAL` s and removed at stop) for ``fleet status``; lag and pending of the
domain's group are read with one ``XINFO GROUPS`` at most every :data:`BACKLOG_INTERVAL` s, when
scraped. Dapr mode: the app channel serves the four routes (``DaprTransport.serve_probes``,
``serve_execute``).
Documented in docs/observability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from shared.discovery import endpoints_key
from shared.runtime.extension import BaseExtension, WorkerContext
from shared.runtime.metrics import CONTENT_TYPE, Metrics
from shared.runtime.sync import EXECUTE_ROUTE, SyncCalls, execute_route
from shared.settings import Settings

__all__ = ["BACKLOG_INTERVAL", "PUBLISH_INTERVAL", "BacklogReader", "ProbeServer", "endpoints_key"]

log = structlog.get_logger("fleet.probes")

#: Seconds between two reads of the group's lag and pending (scrapes in between see the cache).
BACKLOG_INTERVAL = 5.0
#: Seconds between two refreshes of the published address; it expires after three missed ones.
PUBLISH_INTERVAL = 10.0


class BacklogReader:
    """Lag and pending of one consumer group, read with ``XINFO GROUPS`` at most once per
    ``interval`` seconds (concurrent scrapes share one read); a failed read keeps the last
    values (a scrape never fails because the broker is away)."""

    def __init__(self, redis: Any, *, topic: str, group: str, interval: float = BACKLOG_INTERVAL) -> None:
        self._redis = redis
        self._topic = topic
        self._group = group
        self._interval = interval
        self._next = 0.0
        self._lock = asyncio.Lock()
        self.lag: int | None = None
        self.pending: int | None = None
        self.reads = 0

    async def refresh(self) -> None:
        if time.monotonic() < self._next:
            return
        async with self._lock:
            if time.monotonic() < self._next:
                return
            self._next = time.monotonic() + self._interval
            try:
                groups = await self._redis.xinfo_groups(self._topic)
            except Exception as exc:
                log.debug("backlog not read", topic=self._topic, error=str(exc))
                return
            self.reads += 1
            for group in groups:
                name = group.get("name")
                if (name.decode() if isinstance(name, bytes) else name) == self._group:
                    lag = group.get("lag")
                    self.lag = int(lag) if lag is not None else None
                    self.pending = int(group.get("pending") or 0)


class ProbeServer(BaseExtension):
    """Serves a worker's probes and metrics (see module docstring)."""

    name = "probes"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner: web.AppRunner | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._redis: Any = None
        self._field = settings.consumer_name
        self._metrics: Metrics | None = None
        self._health: Callable[[], Mapping[str, Any]] = lambda: {"ready": False}
        self._calls: SyncCalls | None = None
        #: the address served, once listening (``http://host:port``).
        self.url: str | None = None

    async def start(self, ctx: WorkerContext) -> bool:
        self._metrics = metrics = ctx.resources.get(Metrics)
        self._health = ctx.health
        self._calls = calls = SyncCalls.for_worker(ctx)
        serve_probes = getattr(ctx.transport, "serve_probes", None)
        if serve_probes is not None:  # Dapr: the app channel serves them
            serve_probes(ctx.health)
            serve_execute = getattr(ctx.transport, "serve_execute", None)
            if serve_execute is not None and calls is not None:
                serve_execute(calls.handle)
            return True
        if self.settings.metrics_port == 0:
            return True
        redis = None
        if ctx.transport.name == "redis" and self.settings.redis_url:
            from redis.asyncio import Redis

            # Its own client: it outlives the transport's (closed before extensions stop), so
            # the address can be withdrawn at stop.
            redis = self._redis = Redis.from_url(self.settings.redis_url)
        if redis is not None:
            topic, group = self.settings.topic_for(ctx.domain), self.settings.group_for(ctx.domain)
            backlog = BacklogReader(redis, topic=topic, group=group)
            labels = {"domain": ctx.domain}

            def lag() -> Iterable[tuple[Mapping[str, str], float | None]]:
                return [(labels, backlog.lag)]

            def pending() -> Iterable[tuple[Mapping[str, str], float | None]]:
                return [(labels, backlog.pending)]

            metrics.add_gauge("fleet_consumer_lag_messages", "Requests not yet read by the group.", lag)
            metrics.add_gauge(
                "fleet_pending_messages", "Requests read by the group and not yet acknowledged.", pending
            )
            metrics.add_refresher(backlog.refresh)
        await self._listen()
        if redis is not None and self.url is not None:
            self._publisher = asyncio.create_task(
                self._publish_loop(ctx.domain, ctx.name), name="fleet-probes-publish"
            )
        return True

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._on_healthz)
        app.router.add_get("/readyz", self._on_readyz)
        app.router.add_get("/metrics", self._on_metrics)
        if self._calls is not None:
            app.router.add_post(EXECUTE_ROUTE, execute_route(self._calls, self.settings))
        # lingering_time=0: a body refused unread (401, 403, 413) is not read on for 10 s.
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0, lingering_time=0
        )
        await runner.setup()
        host, port = self.settings.metrics_host, self.settings.metrics_port
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            # Not fatal: the worker's job is its deliveries; the missing probes show (and the
            # orchestrator's liveness probe restarts a pod whose port is taken).
            await runner.cleanup()
            log.error("probe and metrics server not started", host=host, port=port, error=str(exc))
            return
        self._runner = runner
        bound = runner.addresses[0][1]
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{shown}:{bound}"
        log.info("probes and metrics served", url=self.url)

    async def _publish_loop(self, domain: str, worker: str) -> None:
        key = endpoints_key(self.settings)
        ttl = int(PUBLISH_INTERVAL * 3)
        while True:
            entry = {
                "url": self.url,
                "domain": domain,
                "worker": worker,
                "pid": os.getpid(),
                "expires_at": round(time.time() + ttl, 3),
            }
            try:
                await self._redis.hset(key, self._field, orjson.dumps(entry))
                await self._redis.expire(key, ttl)
            except Exception as exc:  # the broker is away: the transport reports that
                log.debug("metrics address not published", error=str(exc))
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
            self._publisher = None
            with contextlib.suppress(Exception):
                await self._redis.hdel(endpoints_key(self.settings), self._field)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ handlers
    async def _on_healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"alive": True})

    async def _on_readyz(self, request: web.Request) -> web.StreamResponse:
        report = self._health()
        return web.Response(
            status=200 if report.get("ready") else 503,
            body=orjson.dumps(report),
            content_type="application/json",
        )

    async def _on_metrics(self, request: web.Request) -> web.StreamResponse:
        assert self._metrics is not None
        await self._metrics.refresh()
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})
