"""The domains of the fleet, declared once.

Everything that names a domain — the worker CLI, the client's routing, the rendered Dapr,
Kubernetes and KEDA manifests — reads this table, so names cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import ConfigError

__all__ = ["DOMAINS", "Domain", "Resources", "get_domain"]


@dataclass(frozen=True, kw_only=True)
class Resources:
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"


@dataclass(frozen=True, kw_only=True)
class Domain:
    """One domain worker.

    Parameters:
        name: the domain as it appears in topics and app ids (``dev-tools``).
        package: the ``workers`` subpackage that holds its functions (``dev_tools``).
        description: one line for people.
        concurrency: in-flight executions per replica (``FLEET_CONCURRENCY`` and Dapr's
            ``app-max-concurrency``).
        min_replicas / max_replicas: KEDA bounds (0 = scale from zero).
        lag_target: queued entries per replica KEDA aims for.
        resources: container requests/limits.
        egress: what its NetworkPolicy lets it reach beyond Redis and DNS.
    """

    name: str
    package: str
    description: str
    concurrency: int = 32
    min_replicas: int = 0
    max_replicas: int = 20
    lag_target: int = 20
    resources: Resources = field(default_factory=Resources)
    egress: str = "internet"


DOMAINS: tuple[Domain, ...] = (
    Domain(name="ai", package="ai", description="LLM, image and scraping providers", concurrency=64),
    Domain(name="comms", package="comms", description="Slack, e-mail", concurrency=64),
    Domain(
        name="dev-tools",
        package="dev_tools",
        description="GitHub, Linear, Webflow, Clerk, Stripe, Blob",
        concurrency=64,
    ),
    Domain(
        name="oci",
        package="oci",
        description="Container functions run as Kubernetes Jobs",
        concurrency=16,
        lag_target=4,
        egress="kubernetes-api",
    ),
    Domain(
        name="http",
        package="http",
        description="HTTP requests and webhooks, SSRF-guarded",
        concurrency=128,
        egress="internet-only",
    ),
)

_BY_NAME = {d.name: d for d in DOMAINS} | {d.package: d for d in DOMAINS}


def get_domain(name: str) -> Domain:
    """The domain called ``name`` (``dev-tools`` and ``dev_tools`` both work)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(d.name for d in DOMAINS)
        raise ConfigError(f"unknown domain {name!r}; known: {known}") from None
