"""The registry side of one worker process: pool, migrations, built-in sync, resolver cache
with NOTIFY invalidation, the batch writer (history only, or claims too without Redis), and
periodic pruning.

Built synchronously (so the middleware chain can be composed up front) and opened by the
worker before it takes deliveries; closed after the worker has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from shared.backoff import Backoff
from shared.functions import BUILTINS, FunctionTable
from shared.registry.claims_writer import ClaimsWriter
from shared.registry.database import create_pool, is_outage
from shared.registry.history_writer import HistoryWriter
from shared.registry.migrator import migrate
from shared.registry.resolver import NotifyListener, RegistryResolver
from shared.registry.retention import prune
from shared.registry.store import ClaimMiddleware, Claims, DatabaseClaims, HistoryRecorder, RedisClaims
from shared.registry.sync import sync_builtins
from shared.registry.writer import BatchWriter
from shared.settings import Settings
from shared.transports.base import JoinsSettle

if TYPE_CHECKING:
    from shared.registry.claims import RedisClaimStore

__all__ = ["RegistryRuntime"]


log = structlog.get_logger("fleet.registry")


class RegistryRuntime:
    """Everything a worker needs from PostgreSQL (see module docstring).

    Parameters:
        settings: ``database_url`` (required), cache TTL, buffer, lease margin, retention.
        worker_name: ``<group>/<consumer>``; the lease owner is it plus a per-process token.
        table: this process's built-ins (synced at open, handlers for ``builtin`` rows).
    """

    def __init__(self, settings: Settings, *, worker_name: str, table: FunctionTable = BUILTINS) -> None:
        if not settings.database_url:
            raise ValueError("RegistryRuntime needs settings.database_url")
        self.settings = settings
        self.url: str = settings.database_url
        self.table = table
        self.owner = f"{worker_name}/{uuid.uuid4().hex[:12]}"
        self.resolver = RegistryResolver(None, ttl=settings.registry_cache_ttl, table=table)
        self._redis: Any = None
        self._claim_store: RedisClaimStore | None = None
        backend: Claims
        if settings.claims == "redis" or (settings.claims == "auto" and settings.redis_url):
            from shared.registry.claims import RedisClaimStore
            from shared.transports.redis import connect

            if not settings.redis_url:
                raise ValueError("FLEET_CLAIMS=redis needs FLEET_REDIS_URL")
            self._redis = connect(settings.redis_url)
            store = RedisClaimStore(
                self._redis,
                owner=self.owner,
                group_prefix=settings.group_prefix,
                window=settings.idempotency_window,
                processing_timeout=settings.processing_timeout,
            )
            history = HistoryWriter(
                None, owner=self.owner, buffer=settings.history_buffer, timeout=settings.database_timeout
            )
            backend = RedisClaims(store, history, sync=settings.history_sync)
            self._claim_store = store
            self.writer: BatchWriter = history
        else:
            claims_writer = ClaimsWriter(
                None, owner=self.owner, buffer=settings.history_buffer, timeout=settings.database_timeout
            )
            backend = DatabaseClaims(claims_writer)
            self.writer = claims_writer
        self.claims = ClaimMiddleware(backend, lease_margin=settings.lease_margin_seconds)
        self.backend = backend
        self.recorder = HistoryRecorder(backend)
        self.listener = NotifyListener(
            self.url,
            on_notify=self.resolver.invalidate,
            on_reconnect=lambda: self.resolver.invalidate(None),
            timeout=settings.database_timeout,
        )
        self.pool: Any = None
        self._pruner: asyncio.Task[None] | None = None

    @property
    def claim_store(self) -> RedisClaimStore | None:
        """The Redis claim store, when claims live in Redis (``None``: in PostgreSQL)."""
        return self._claim_store

    def attach(self, transport: Any) -> None:
        """With claims in Redis and the Redis Streams transport on the same server, results are
        stored in the transport's settle transaction (stored, published and acked in one step)
        instead of by a call of their own just before it."""
        backend = self.backend
        if not isinstance(backend, RedisClaims) or not isinstance(transport, JoinsSettle):
            return
        if transport.join_settle(backend.stage, redis=self._redis):
            backend.staged_in_settle = True

    async def open(self, stopping: Callable[[], bool] = lambda: False) -> bool:
        """Migrate, connect, sync built-ins, start listening and writing. Retries with backoff
        while the database is unreachable; returns False if ``stopping()`` became true first."""
        backoff = Backoff(0.2)
        while not stopping():
            try:
                await migrate(self.url, timeout=max(self.settings.database_timeout, 30.0))
                self.pool = await create_pool(self.url, timeout=self.settings.database_timeout)
                try:
                    report = await sync_builtins(self.pool, self.table)
                except BaseException:
                    await self._close_pool()
                    raise
                break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                delay = backoff.next()
                log.warning(
                    "database unreachable at start; retrying", error=str(exc), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)
        else:
            return False
        if report.inserted or report.updated:
            log.info("built-ins synced", inserted=report.inserted, updated=report.updated)
        if report.conflicts:
            log.warning("built-in slugs taken by registered functions; not synced", slugs=report.conflicts)
        self.resolver.bind(self.pool)
        self.writer.bind(self.pool)
        self.writer.start()
        self.listener.start()
        self._pruner = asyncio.create_task(self._prune_loop(), name="fleet-history-prune")
        return True

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        await self.listener.close()
        await self.writer.close(timeout=min(5.0, self.settings.shutdown_timeout + 1))
        await self._close_pool()
        if self._redis is not None:
            if self._claim_store is not None:
                await self._claim_store.close()
            await self._redis.aclose()

    async def _close_pool(self) -> None:
        if self.pool is None:
            return
        try:
            await asyncio.wait_for(self.pool.close(), 5.0)
        except (TimeoutError, Exception):
            self.pool.terminate()
        self.pool = None

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.history_prune_interval * random.uniform(0.9, 1.1))
            try:
                deleted = await prune(self.pool, self.settings.history_retention_days, exclusive=True)
                if deleted:
                    log.info("execution history pruned", deleted=deleted)
            except Exception as exc:
                log.warning("history prune failed", error=str(exc))
