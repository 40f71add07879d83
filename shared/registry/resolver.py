"""The registry as the runtime's :class:`~shared.functions.FunctionResolver`.

* Functions are cached in-process for ``ttl`` seconds, keyed by what the request named (slug
  or id); a miss loads once however many deliveries ask at the same time.
* A LISTEN connection on channel ``fleet_functions`` (fed by a trigger on every change to
  ``functions``) drops the changed slug from the cache, so enable/disable/register reach a
  running worker within about a second. When that connection is lost it reconnects with
  backoff and then clears the whole cache (notifications may have been missed meanwhile).
* When the database is unreachable, cached entries are served past their TTL; a function
  never seen before cannot be resolved (InfrastructureError: the delivery is redelivered).
* A disabled function raises ``function_disabled``; a deprecated one resolves with
  ``is_deprecated`` set (:class:`DeprecationMiddleware` adds the result warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from shared.backoff import Backoff
from shared.contract import ErrorCode
from shared.errors import ExecutionFailed, InfrastructureError
from shared.functions import BUILTINS, FunctionSpec, FunctionTable, canonical_slug
from shared.limits import RateLimit
from shared.registry.database import connect, is_outage
from shared.registry.executors import executor_handler, missing_builtin_handler
from shared.registry.models import FunctionRecord
from shared.registry.repository import FunctionRepository
from shared.retry import RetryPolicy
from shared.runtime.middleware import Call, CallNext

__all__ = [
    "NOTIFY_CHANNEL",
    "DeprecationMiddleware",
    "NotifyListener",
    "RegistryResolver",
    "record_to_spec",
]

log = structlog.get_logger("fleet.registry")

NOTIFY_CHANNEL = "fleet_functions"


def record_to_spec(record: FunctionRecord, table: FunctionTable = BUILTINS) -> FunctionSpec:
    """The :class:`FunctionSpec` a worker runs for ``record``.

    A built-in takes its handler and pydantic models from ``table`` (this process's code) and
    everything the operator controls from the row; an oci/http function gets a handler that
    dispatches to the executor registered for its ``execution_type``.
    """
    registry_fields: dict[str, Any] = {
        "function_id": record.id,
        "version": record.version,
        "execution_type": record.execution_type,
        "is_deprecated": record.is_deprecated,
        "input_schema": record.input_schema,
        "output_schema": record.output_schema,
        "timeout_seconds": record.timeout_seconds,
        "credentials": tuple(record.credentials),
        "domain": record.domain,
        "name": record.name,
        "description": record.description,
        "max_concurrency": record.max_concurrency,
        "concurrency_key": record.concurrency_key,
    }
    if record.retry_policy:
        try:
            registry_fields["retry_policy"] = RetryPolicy.model_validate(record.retry_policy)
        except ValidationError as exc:  # stored before policies were validated: not applied
            log.warning(
                "retry policy of a function is invalid; not applied", slug=record.slug, error=str(exc)
            )
    if record.rate_limit:
        try:
            registry_fields["rate_limit"] = RateLimit.model_validate(record.rate_limit)
        except ValidationError as exc:  # edited by hand past registration's validation
            log.warning("rate limit of a function is invalid; not applied", slug=record.slug, error=str(exc))
    if record.execution_type == "builtin":
        code = table.get(record.slug)
        if code is not None:
            return dataclasses.replace(code, **registry_fields)
        return FunctionSpec(slug=record.slug, handler=missing_builtin_handler(record.slug), **registry_fields)
    return FunctionSpec(slug=record.slug, handler=executor_handler(record), **registry_fields)


@dataclass(slots=True)
class _Entry:
    record: FunctionRecord | None
    spec: FunctionSpec | None
    loaded_at: float


class RegistryResolver:
    """Resolves functions from the registry through a TTL cache (see module docstring).

    Parameters:
        pool: an asyncpg pool (or anything with ``fetchrow``).
        ttl: seconds an entry is fresh; NOTIFY invalidates sooner.
        table: the built-ins of this process (handlers for ``builtin`` rows).
        clock: monotonic seconds (tests substitute it).
    """

    def __init__(
        self,
        pool: Any,
        *,
        ttl: float = 60.0,
        table: FunctionTable = BUILTINS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repo = FunctionRepository(pool)
        self._ttl = ttl
        self._table = table
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        # Bumped by every invalidation: a load that overlapped one is not cached.
        self._generation = 0
        self._outage_logged = False
        #: database loads done (cache misses); tests and metrics read it.
        self.loads = 0

    def bind(self, pool: Any) -> None:
        """Use ``pool`` from now on (the runtime creates the pool after the resolver)."""
        self._repo = FunctionRepository(pool)

    async def resolve(self, slug: str) -> FunctionSpec | None:
        """The function ``slug`` names, as written or by its :func:`canonical_slug`."""
        spec = await self._resolve(slug)
        canonical = canonical_slug(slug)
        if spec is None and canonical != slug:
            spec = await self._resolve(canonical)
        return spec

    async def _resolve(self, slug: str) -> FunctionSpec | None:
        entry = self._cache.get(slug)
        if entry is not None and self._clock() - entry.loaded_at < self._ttl:
            return self._serve(slug, entry)
        try:
            entry = await self._load_once(slug)
        except Exception as exc:
            if not is_outage(exc):
                raise
            cached = self._cache.get(slug)
            if not self._outage_logged:
                self._outage_logged = True
                log.warning("registry unreachable; serving cached functions", error=str(exc))
            if cached is None:
                raise InfrastructureError(f"registry unreachable and {slug!r} is not cached: {exc}") from exc
            return self._serve(slug, cached)
        self._outage_logged = False
        return self._serve(slug, entry)

    def _serve(self, key: str, entry: _Entry) -> FunctionSpec | None:
        record = entry.record
        if record is None:
            return None
        if not record.is_enabled:
            raise ExecutionFailed(
                f"function {record.slug} is disabled",
                code=ErrorCode.FUNCTION_DISABLED,
                details={"function": record.slug, "function_id": record.id},
                slug=record.slug,
            )
        return entry.spec

    async def _load_once(self, key: str) -> _Entry:
        pending = self._loading.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this waiter itself was cancelled
                # The loading task was cancelled (its delivery, not ours): load it ourselves.
                return await self._load_once(key)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        generation = self._generation
        try:
            self.loads += 1
            record = await self._repo.get(key)
            spec = record_to_spec(record, self._table) if record is not None else None
            entry = _Entry(record, spec, self._clock())
            if generation == self._generation:
                self._cache[key] = entry
            future.set_result(entry)
            return entry
        except asyncio.CancelledError:
            future.cancel()  # waiters retry the load themselves (see below)
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Only the waiters (if any) should see it; don't leave "never retrieved" warnings.
            future.exception()
            raise
        finally:
            self._loading.pop(key, None)

    def invalidate(self, slug: str | None = None) -> None:
        """Forget ``slug`` (by slug or id key), or everything when ``None``."""
        self._generation += 1
        if slug is None:
            self._cache.clear()
            return
        for key in [k for k, e in self._cache.items() if k == slug or (e.record and e.record.slug == slug)]:
            del self._cache[key]

    def cached(self, key: str) -> FunctionRecord | None:
        """The cached record for ``key`` (``None``: not cached, or cached as unknown)."""
        entry = self._cache.get(key)
        return entry.record if entry else None

    def is_cached(self, key: str) -> bool:
        """Whether ``key`` has a cache entry (an unknown function's absence is cached too)."""
        return key in self._cache


class NotifyListener:
    """Keeps a LISTEN connection on ``channel`` and calls ``on_notify(payload)`` per
    notification; reconnects with backoff and calls ``on_reconnect()`` after a gap.

    ``listening`` is set while the LISTEN is active (tests wait for it).
    """

    def __init__(
        self,
        url: str,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], None],
        *,
        channel: str = NOTIFY_CHANNEL,
        timeout: float = 10.0,
        keepalive: float = 5.0,
    ) -> None:
        self._url = url
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._channel = channel
        self._timeout = timeout
        self._keepalive = keepalive
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.reconnects = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fleet-registry-listen")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def _run(self) -> None:
        backoff, first = Backoff(0.2), True
        while True:
            connection = None
            lost = asyncio.Event()
            try:
                connection = await connect(self._url, timeout=self._timeout)
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(self._channel, self._notified)
                if not first:
                    # Whatever changed while we were not listening is unknown: start afresh.
                    self.reconnects += 1
                    self._on_reconnect()
                    log.info("registry notifications resumed")
                first = False
                backoff.reset()
                self.listening.set()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._keepalive)
                    if not lost.is_set():
                        # A silently dead peer only shows when we talk to it.
                        await connection.execute("SELECT 1", timeout=self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_outage(exc):
                    log.exception("registry listener failed")
                elif self.listening.is_set():
                    log.warning("registry notifications lost; reconnecting", error=str(exc))
            finally:
                self.listening.clear()
                if connection is not None:
                    connection.terminate()
            first = False
            await asyncio.sleep(backoff.next())


class DeprecationMiddleware:
    """Adds "function X is deprecated" to the result's ``warnings`` of a deprecated function
    (it still runs)."""

    @staticmethod
    def applies(spec: FunctionSpec) -> bool:
        return spec.is_deprecated

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        if call.spec.is_deprecated:
            call.state.setdefault("warnings", []).append(
                f"function {call.spec.slug} is deprecated and may be removed; move to its replacement"
            )
        return await call_next(call)
