"""Concurrency and rate limits across every process and replica of the fleet, as one extension
(docs/contract.md, "Limits"; declarations in ``shared/limits.py``, Redis side in
``shared/limiter/store.py``).

:class:`LimitsMiddleware` sits at ``Slot.LIMITS`` (inside the claim, after templates and input
validation, so a concurrency key reads the function's input; before the timeout). For a
function with a limit it asks Redis for a slot and a start in one script call:

* admitted → the handler runs; the slot is given back when it ends (whatever the outcome), and
  renewed meanwhile by the extension's loop (one script call per pass for every slot this worker
  holds), so a killed holder's slot returns within one lease;
* over the rate limit → :class:`~shared.errors.Defer` with the exact wait until a start is
  free; over the concurrency limit → ``Defer`` with a short backoff (0.2 s doubling per
  consecutive wait of that execution, at most 2 s, jittered). A deferral is settled at once:
  the request waits as a pending entry of the transport, not counted as a delivery and holding
  no concurrency slot of its worker, so functions beside a limited one are not starved.

Redis unreachable: the call is deferred for a second (limits are not skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from pydantic import BaseModel

from shared.errors import Defer
from shared.functions import PLUGIN_ALIASES, FunctionSpec
from shared.limiter.store import LimitStore
from shared.limits import RateLimit, provider_rate_limits, render_concurrency_key
from shared.runtime.extension import BaseExtension, Slot, WorkerContext
from shared.runtime.middleware import Call, CallNext, Middleware
from shared.settings import Settings
from shared.transports.redis import cancel_and_wait, connect

__all__ = ["LimitsExtension", "LimitsMiddleware", "lease_seconds", "limits_usage", "provider_of"]

log = structlog.get_logger("fleet.limits")

#: Backoff of an execution waiting for a concurrency slot: first wait, growth, longest wait.
SLOT_WAIT_FIRST = 0.2
SLOT_WAIT_MAX = 2.0
#: Executions whose consecutive waits are remembered (the oldest are forgotten beyond this).
MAX_WAITERS = 10_000
#: Wait of a call whose limits could not be checked (Redis unreachable).
UNAVAILABLE_WAIT = 1.0


def provider_of(slug: str) -> str:
    """The provider (plugin) of ``slug``, whose rate limit it shares: ``openai/generate-text`` →
    ``openai``; aliased plugins count as their target (``ai/...`` → ``openai``)."""
    plugin = slug.partition("/")[0]
    return PLUGIN_ALIASES.get(plugin, plugin)


def lease_seconds(settings: Settings) -> float:
    """How long a concurrency slot is held without renewal: a third of the processing timeout,
    at least 5 s (renewed every third of it, so a stalled event loop does not lose it)."""
    return max(5.0, settings.processing_timeout / 3)


class LimitsMiddleware:
    """The ``LIMITS`` layer of one worker (module docstring)."""

    def __init__(self, extension: LimitsExtension) -> None:
        self._ext = extension
        self._waits: dict[str, int] = {}
        self._tokens = map(f"{uuid.uuid4().hex[:8]}{{:x}}".format, itertools.count())
        self._outage_logged = False

    def applies(self, spec: FunctionSpec) -> bool:
        return bool(spec.max_concurrency or spec.rate_limit or provider_of(spec.slug) in self._ext.providers)

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        spec, ext = call.spec, self._ext
        store = ext.store
        if store is None:  # not started (a worker built but never run): nothing to enforce
            return await call_next(call)
        running: tuple[str, int] | None = None
        if spec.max_concurrency:
            key = None
            if spec.concurrency_key:
                data = call.input.model_dump(mode="json") if isinstance(call.input, BaseModel) else call.input
                key = render_concurrency_key(spec.concurrency_key, data)
            running = (store.running_key(spec.slug, key), spec.max_concurrency)
        rates: list[tuple[str, RateLimit]] = []
        if spec.rate_limit is not None:
            rates.append((store.function_rate_key(spec.slug), spec.rate_limit))
        provider = provider_of(spec.slug)
        provider_limit = ext.providers.get(provider)
        if provider_limit is not None:
            rates.append((store.provider_rate_key(provider), provider_limit))
        token = next(self._tokens)
        try:
            admission = await store.admit(token, running=running, rates=rates, lease=ext.lease)
        except Exception as exc:
            if not self._outage_logged:
                self._outage_logged = True
                log.warning("cannot check limits; deferring limited executions", error=str(exc))
            raise Defer(
                f"limits unavailable: {exc}", delay=UNAVAILABLE_WAIT, cause="limits_unavailable"
            ) from None
        self._outage_logged = False
        execution_id = call.ctx.execution_id
        if not admission.admitted:
            if admission.wait > 0:
                raise Defer(
                    f"rate limit of {spec.slug}: next start in {admission.wait:.3f}s",
                    delay=admission.wait,
                    cause="rate_limit",
                )
            raise Defer(
                f"{spec.slug} is at max_concurrency {spec.max_concurrency}",
                delay=self._slot_wait(execution_id),
                cause="concurrency_limit",
            )
        self._waits.pop(execution_id, None)
        if running is None:
            return await call_next(call)
        ext.held[token] = running[0]
        try:
            return await call_next(call)
        finally:
            ext.held.pop(token, None)
            try:
                await store.release(running[0], token)
            except Exception as exc:  # the lease lapses by itself
                log.warning("could not give a concurrency slot back; it expires", error=str(exc))

    def _slot_wait(self, execution_id: str) -> float:
        waits = self._waits.pop(execution_id, 0)
        if len(self._waits) >= MAX_WAITERS:
            del self._waits[next(iter(self._waits))]
        self._waits[execution_id] = waits + 1
        ceiling = min(SLOT_WAIT_MAX, SLOT_WAIT_FIRST * 2**waits)
        wait: float = ceiling * random.uniform(0.5, 1.0)
        return wait


class LimitsExtension(BaseExtension):
    """Fleet-wide limits for one worker: the ``LIMITS`` layer, its Redis client and the loop
    renewing the slots it holds. Added by ``shared/assemble.py`` whenever ``FLEET_REDIS_URL``
    is set; ``FLEET_PROVIDER_RATE_LIMITS`` is checked when the worker is built."""

    name = "limits"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.providers: dict[str, RateLimit] = provider_rate_limits(settings)
        self.lease = lease_seconds(settings)
        self.store: LimitStore | None = None
        #: the slots this worker holds: token → running-set key.
        self.held: dict[str, str] = {}
        self._layer = LimitsMiddleware(self)
        self._renewer: asyncio.Task[None] | None = None

    def middleware(self) -> Mapping[Slot, Middleware]:
        return {Slot.LIMITS: self._layer}

    async def start(self, ctx: WorkerContext) -> bool:
        url = self._settings.redis_url
        if url:
            self.store = LimitStore(connect(url), self._settings.group_prefix)
            self._renewer = asyncio.create_task(self._renew_loop(), name="fleet-limits-renew")
        return True

    async def stop(self) -> None:
        if self._renewer is not None:
            await cancel_and_wait(self._renewer)
            self._renewer = None
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.redis.aclose()
            self.store = None

    async def _renew_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.lease / 3)
            store = self.store
            held = list(self.held.items())
            if store is None or not held:
                continue
            try:
                lost = await store.renew([(key, token) for token, key in held], self.lease)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("cannot renew concurrency slots; will try again", error=str(exc))
                failing = True
                continue
            failing = False
            for index in lost:
                token, key = held[index]
                log.warning("a concurrency slot lapsed while its execution ran (a stalled worker?)", key=key)
                self.held.pop(token, None)


async def limits_usage(
    store: LimitStore,
    settings: Settings,
    *,
    slug: str,
    max_concurrency: int | None,
    rate_limit: RateLimit | None,
) -> dict[str, Any]:
    """What ``slug``'s limits are using now, as JSON (``fleet functions show``): executions
    holding a slot (in all, and per concurrency key), and for its own rate limit and its
    provider's, the starts available right now and the seconds until the next one. Empty when
    the function has no limit."""
    usage: dict[str, Any] = {}
    if max_concurrency:
        by_key = await store.running(slug)
        usage["concurrency"] = {"max": max_concurrency, "running": sum(by_key.values())}
        keyed = {k: n for k, n in by_key.items() if k}
        if keyed:
            usage["concurrency"]["running_by_key"] = keyed
    rates = [("rate", store.function_rate_key(slug), rate_limit)]
    provider = provider_of(slug)
    rates.append(
        ("provider_rate", store.provider_rate_key(provider), provider_rate_limits(settings).get(provider))
    )
    for name, key, limit in rates:
        if limit is None:
            continue
        state = await store.rate(key, limit)
        usage[name] = {
            **({"provider": provider} if name == "provider_rate" else {}),
            "limit": limit.describe(),
            "available_now": state.available,
            "next_start_in_seconds": round(state.next_in, 3),
        }
    return usage
