"""Wiring: the one place (with the CLI) that knows how transports, functions and the runtime
fit together. Tests build workers through here too, so they run what production runs."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from shared.credentials import CredentialResolver, CredentialsMiddleware
from shared.domains import get_domain
from shared.errors import ConfigError
from shared.functions import BUILTINS, STARTUP_HOOKS, FunctionResolver, FunctionTable
from shared.runtime.metrics import Metrics
from shared.runtime.middleware import (
    InputValidationMiddleware,
    LoggingMiddleware,
    MetricsMiddleware,
    Middleware,
    TimeoutMiddleware,
    default_middleware,
)
from shared.runtime.worker import Worker, WorkerState
from shared.settings import Settings
from shared.transports.base import Transport

__all__ = ["TRANSPORTS", "RegistryWorker", "create_transport", "create_worker", "load_functions"]

TRANSPORTS = ("redis", "dapr")


def load_functions(domain: str | None = None, *, extra_modules: Sequence[str] = ()) -> None:
    """Import the diagnostics and the built-ins of ``domain`` (all domains when ``None``), then
    ``extra_modules`` (``FLEET_EXTRA_MODULES``: more modules declaring built-ins)."""
    from shared.domains import DOMAINS

    importlib.import_module("shared.diagnostics")
    for d in DOMAINS if domain is None else (get_domain(domain),):
        importlib.import_module(f"workers.{d.package}")
    for module in extra_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"cannot import extra module {module!r}: {exc}") from exc


def create_transport(
    domain: str, settings: Settings, transport: str = "redis", *, metrics: Metrics | None = None
) -> Transport:
    """A transport for ``domain``'s topic and group, per ``settings``; ``metrics`` is served at
    the Dapr app channel's ``/metrics``."""
    name = get_domain(domain).name
    topic, group = settings.topic_for(name), settings.group_for(name)
    if transport == "redis":
        from shared.transports.redis_streams import RedisStreamsTransport, connect

        if not settings.redis_url:
            raise ConfigError("the redis transport needs FLEET_REDIS_URL (or a running `fleet up`)")
        return RedisStreamsTransport(
            redis=connect(settings.redis_url), topic=topic, group=group, settings=settings
        )
    if transport == "dapr":
        from shared.transports.dapr_http import DaprTransport

        dapr: Transport = DaprTransport(topic=topic, domain=name, settings=settings, metrics=metrics)
        return dapr
    raise ConfigError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")


def create_worker(
    domain: str,
    settings: Settings,
    transport: str | Transport = "redis",
    *,
    resolver: FunctionResolver | None = None,
    table: FunctionTable = BUILTINS,
) -> Worker:
    """A ready-to-run :class:`Worker` for ``domain``.

    With ``settings.database_url`` (and no explicit ``resolver``) it is a
    :class:`RegistryWorker`: functions come from the registry, every execution is claimed and
    recorded (docs/registry.md); ``table`` holds the built-ins it can run and syncs.
    Otherwise the in-code built-ins, without history.
    """
    declared = get_domain(domain)
    name = declared.name
    if "concurrency" not in settings.model_fields_set:
        # The domain's declared concurrency (also Dapr's app-max-concurrency in the manifests)
        # unless FLEET_CONCURRENCY / --concurrency says otherwise.
        settings = settings.model_copy(update={"concurrency": declared.concurrency})
    load_functions(name, extra_modules=settings.extra_modules)
    for hook in STARTUP_HOOKS:
        hook(settings)
    metrics = Metrics()
    if isinstance(transport, str):
        transport = create_transport(name, settings, transport, metrics=metrics)
    credentials = CredentialsMiddleware(CredentialResolver.from_settings(settings))
    if settings.database_url and resolver is None:
        from shared.registry.runtime import RegistryRuntime

        registry = RegistryRuntime(
            settings, worker_name=f"{settings.group_for(name)}/{settings.consumer_name}", table=table
        )
        registry.attach(transport)
        return RegistryWorker(
            registry=registry,
            domain=name,
            transport=transport,
            settings=settings,
            resolver=registry.resolver,
            middleware=registry_middleware(metrics, registry, credentials),
            metrics=metrics,
            recorder=registry.recorder,
        )
    from shared.templates import TemplateMiddleware

    middleware = default_middleware(metrics, before_timeout=[credentials])
    # Templates are part of the request contract with or without a registry.
    middleware.insert(2, TemplateMiddleware())
    return Worker(
        domain=name,
        transport=transport,
        settings=settings,
        resolver=resolver or BUILTINS,
        middleware=middleware,
        metrics=metrics,
    )


def registry_middleware(metrics: Metrics, registry: Any, credentials: Middleware) -> list[Middleware]:
    """The chain of a registry worker, outermost first: metrics → logging → deprecation
    warning → claim (exactly-once) → templates → JSON Schema → pydantic model → credentials →
    timeout → handler."""
    from shared.registry.resolver import DeprecationMiddleware
    from shared.templates import TemplateMiddleware
    from shared.validation import SchemaValidationMiddleware

    return [
        MetricsMiddleware(metrics),
        LoggingMiddleware(),
        DeprecationMiddleware(),
        registry.claims,
        TemplateMiddleware(),
        SchemaValidationMiddleware(),
        InputValidationMiddleware(),
        credentials,
        TimeoutMiddleware(),
    ]


class RegistryWorker(Worker):
    """A :class:`Worker` that opens its registry (migrate, sync, cache, history writer) before
    taking deliveries and closes it after draining, so every result is recorded first."""

    def __init__(self, *, registry: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = registry

    async def run(self) -> None:
        if self.state is not WorkerState.NEW:
            raise RuntimeError("a Worker runs once")
        try:
            if await self.registry.open(lambda: self.stopping):
                await super().run()
        finally:
            await self.registry.close()
