"""Wiring: the one place (with the CLI) that knows how transports, functions and the runtime
fit together. Tests build workers through here too, so they run what production runs."""

from __future__ import annotations

import importlib

from shared.credentials import CredentialResolver, CredentialsMiddleware
from shared.domains import get_domain
from shared.errors import ConfigError
from shared.functions import BUILTINS, FunctionResolver
from shared.runtime.metrics import Metrics
from shared.runtime.middleware import default_middleware
from shared.runtime.worker import Worker
from shared.settings import Settings
from shared.transports.base import Transport

__all__ = ["TRANSPORTS", "create_transport", "create_worker", "load_functions"]

TRANSPORTS = ("redis", "dapr")


def load_functions(domain: str | None = None) -> None:
    """Import the diagnostics and the built-ins of ``domain`` (all domains when ``None``)."""
    from shared.domains import DOMAINS

    importlib.import_module("shared.diagnostics")
    for d in DOMAINS if domain is None else (get_domain(domain),):
        importlib.import_module(f"workers.{d.package}")


def create_transport(domain: str, settings: Settings, transport: str = "redis") -> Transport:
    """A transport for ``domain``'s topic and group, per ``settings``."""
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

        dapr: Transport = DaprTransport(topic=topic, domain=name, settings=settings)
        return dapr
    raise ConfigError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")


def create_worker(
    domain: str,
    settings: Settings,
    transport: str | Transport = "redis",
    *,
    resolver: FunctionResolver = BUILTINS,
) -> Worker:
    """A ready-to-run :class:`Worker` for ``domain`` with the default middleware."""
    name = get_domain(domain).name
    load_functions(name)
    if isinstance(transport, str):
        transport = create_transport(name, settings, transport)
    metrics = Metrics()
    middleware = default_middleware(
        metrics, before_timeout=[CredentialsMiddleware(CredentialResolver.from_settings(settings))]
    )
    return Worker(
        domain=name,
        transport=transport,
        settings=settings,
        resolver=resolver,
        middleware=middleware,
        metrics=metrics,
    )
