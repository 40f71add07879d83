"""Wiring: the one place (with the CLI) that knows how transports, functions and the runtime
fit together. Tests build workers through here too, so they run what production runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from shared.domains import get_domain
from shared.errors import ConfigError
from shared.functions import BUILTINS, FunctionResolver, FunctionTable
from shared.runtime.credentials import CredentialsExtension
from shared.runtime.extension import Extension, Slot, chain_from, extension_layers
from shared.runtime.metrics import Metrics
from shared.runtime.middleware import (
    InputValidationMiddleware,
    LoggingMiddleware,
    MetricsMiddleware,
    Middleware,
    TimeoutMiddleware,
)
from shared.runtime.probes import ProbeServer
from shared.runtime.worker import Worker
from shared.settings import Settings
from shared.transports.base import Transport

if TYPE_CHECKING:
    from shared.registry.extension import RegistryExtension

__all__ = [
    "TRANSPORTS",
    "core_layers",
    "create_transport",
    "create_worker",
    "load_functions",
    "package_extensions",
]

TRANSPORTS = ("redis", "dapr")


def load_functions(domain: str | None = None, *, extra_modules: Sequence[str] = ()) -> list[ModuleType]:
    """Import the diagnostics and the built-ins of ``domain`` (all domains when ``None``), then
    ``extra_modules`` (``FLEET_EXTRA_MODULES``: more modules declaring built-ins); returns the
    worker packages and extra modules imported (whose ``extensions`` a worker is built with)."""
    from shared.domains import DOMAINS

    importlib.import_module("shared.diagnostics")
    modules = [
        importlib.import_module(f"workers.{d.package}")
        for d in (DOMAINS if domain is None else (get_domain(domain),))
    ]
    for name in extra_modules:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise ConfigError(f"cannot import extra module {name!r}: {exc}") from exc
    return modules


def create_transport(
    domain: str, settings: Settings, transport: str = "redis", *, metrics: Metrics | None = None
) -> Transport:
    """A transport for ``domain``'s topic and group, per ``settings``; ``metrics`` is served at
    the Dapr app channel's ``/metrics``."""
    name = get_domain(domain).name
    topic, group = settings.topic_for(name), settings.group_for(name)
    if transport == "redis":
        from shared.transports.redis import connect
        from shared.transports.redis_streams import RedisStreamsTransport

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
    transport: str | Transport | None = None,
    *,
    resolver: FunctionResolver | None = None,
    table: FunctionTable = BUILTINS,
    extensions: Sequence[Extension] = (),
) -> Worker:
    """A ready-to-run :class:`Worker` for ``domain``, assembled from extensions.

    The chain's core layers (metrics, logging, templates, input model, timeout) and the
    :class:`~shared.runtime.credentials.CredentialsExtension` (the credentials layer and the
    worker's own registry of secrets, started first) are always there; a
    :class:`~shared.runtime.tracing.TracingExtension` joins when tracing is configured
    (``settings.otlp_traces_url``); the domain's worker
    package adds its extensions (``workers.<package>.extensions(settings)``); with
    ``settings.database_url`` (and no explicit ``resolver``) the
    :class:`~shared.registry.extension.RegistryExtension` makes functions come from the registry
    and every execution claimed and recorded (docs/registry.md), ``table`` holding the built-ins
    it can run and syncs. ``extensions`` are added last (tests).
    """
    declared = get_domain(domain)
    name = declared.name
    if "concurrency" not in settings.model_fields_set:
        # The domain's declared concurrency (also Dapr's app-max-concurrency in the manifests)
        # unless FLEET_CONCURRENCY / --concurrency says otherwise.
        settings = settings.model_copy(update={"concurrency": declared.concurrency})
    modules = load_functions(name, extra_modules=settings.extra_modules)
    metrics = Metrics(domain=name)
    if transport is None or isinstance(transport, str):
        transport = create_transport(name, settings, transport or settings.transport, metrics=metrics)
    metrics.transport = transport.name
    worker_name = f"{settings.group_for(name)}/{settings.consumer_name}"
    parts: list[Extension] = [ext for module in modules for ext in package_extensions(module, settings)]
    registry: RegistryExtension | None = None
    if settings.database_url and resolver is None:
        from shared.registry.extension import RegistryExtension

        registry = RegistryExtension(settings, worker_name=worker_name, table=table)
        parts.insert(0, registry)
    # Probes early: liveness answers while later extensions wait for their dependencies.
    parts.insert(0, ProbeServer(settings))
    if settings.otlp_traces_url:
        from shared.runtime.tracing import TracingExtension

        # Only when tracing is configured: an untraced worker never loads the SDK. Early, so
        # its spans are flushed after every later extension stopped (docs/observability.md).
        parts.insert(0, TracingExtension(settings, domain=name))
    # First: the worker's secrets are in its resources before any other extension starts. With
    # a registry, the secret store in its database is the credentials' last source.
    store = None
    if registry is not None:
        from shared.registry.secrets import DatabaseSecretSource

        runtime = registry.runtime
        store = DatabaseSecretSource(settings, lambda: runtime.pool)
    parts.insert(0, CredentialsExtension(settings, store=store))
    if settings.redis_url:
        from shared.limiter.extension import LimitsExtension

        # Fleet-wide concurrency and rate limits (docs/contract.md, "Limits").
        parts.append(LimitsExtension(settings))
    parts.extend(extensions)
    layers = [
        *core_layers(metrics),
        *extension_layers(parts),
    ]
    for part in parts:
        part.attach(transport)
    return Worker(
        domain=name,
        transport=transport,
        settings=settings,
        resolver=registry.resolver if registry is not None else resolver or table,
        middleware=chain_from(layers),
        metrics=metrics,
        recorder=registry.recorder if registry is not None else None,
        burst=settings.burst,
        extensions=parts,
    )


def core_layers(metrics: Metrics) -> list[tuple[Slot, Middleware]]:
    """The layers every worker has besides its extensions', by slot: metrics, logging, templates
    (part of the request contract with or without a registry), the input model and the timeout
    (the credentials layer comes with the always-present ``CredentialsExtension``)."""
    from shared.templates import TemplateMiddleware

    return [
        (Slot.METRICS, MetricsMiddleware(metrics)),
        (Slot.LOGGING, LoggingMiddleware()),
        (Slot.TEMPLATES, TemplateMiddleware()),
        (Slot.INPUT_MODEL, InputValidationMiddleware()),
        (Slot.TIMEOUT, TimeoutMiddleware()),
    ]


def package_extensions(module: ModuleType, settings: Settings) -> list[Extension]:
    """The extensions a worker package declares: its ``extensions(settings)`` function, if any
    (called per worker, so each worker gets its own)."""
    factory: Callable[[Settings], Sequence[Extension]] | None = getattr(module, "extensions", None)
    return list(factory(settings)) if factory is not None else []
