"""The domains of the fleet, declared once.

Everything that names a domain — the worker CLI, the client's routing, the rendered Dapr,
Kubernetes and KEDA manifests — reads this table, so names cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import ConfigError

__all__ = ["DOMAINS", "EGRESS_POLICIES", "Domain", "Resources", "get_domain", "routed_domain"]

#: What a domain's NetworkPolicy lets it reach beyond DNS, Redis, the Dapr control plane and the
#: trace collector (the ``egress`` field). The manifests renderer rejects any other value.
EGRESS_POLICIES: dict[str, str] = {
    "internet": "HTTPS/HTTP (TCP 443, 80) to public addresses: SaaS provider APIs",
    "internet-only": "any port on public addresses; cluster-internal and private ranges refused "
    "(a second line behind the SSRF guard)",
    "kubernetes-api": "the Kubernetes API server only (TCP 443, 6443); gets a service-account token",
}


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
        egress: what its NetworkPolicy lets it reach beyond Redis and DNS (a key of
            :data:`EGRESS_POLICIES`); ``kubernetes-api`` also gives the worker a service-account
            token and the Role of the functions namespace.
        polling_interval: seconds between KEDA's polls of the stream (scale-from-zero latency).
        cooldown_period: seconds without backlog or in-flight work before KEDA scales to zero.
        worker_env: extra ``FLEET_*`` settings of this domain's worker pods only (``(name, value)``
            pairs; every other setting is shared by all domains through the ConfigMap).
        routes: the built-in slugs this domain's worker package serves, as plugin prefixes
            (``openai/``) or exact slugs (``system/http-request``): how a client routes a
            built-in without importing the package (a test checks them against the built-ins).

    Raises:
        ConfigError: on construction, for an unknown ``egress``, non-positive concurrency or
            lag target, or scaling bounds with ``min_replicas > max_replicas``.
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
    polling_interval: int = 15
    cooldown_period: int = 300
    worker_env: tuple[tuple[str, str], ...] = ()
    routes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.egress not in EGRESS_POLICIES:
            known = ", ".join(EGRESS_POLICIES)
            raise ConfigError(f"domain {self.name!r}: unknown egress {self.egress!r}; known: {known}")
        if self.concurrency < 1 or self.lag_target < 1:
            raise ConfigError(f"domain {self.name!r}: concurrency and lag_target must be >= 1")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(f"domain {self.name!r}: need 0 <= min_replicas <= max_replicas, max >= 1")
        if self.polling_interval < 1 or self.cooldown_period < 0:
            raise ConfigError(f"domain {self.name!r}: polling_interval >= 1 and cooldown_period >= 0")

    @property
    def needs_kubernetes_api(self) -> bool:
        """True when the worker talks to the Kubernetes API (service-account token, Role)."""
        return self.egress == "kubernetes-api"


DOMAINS: tuple[Domain, ...] = (
    Domain(
        name="ai",
        package="ai",
        description="LLM, image and scraping providers",
        concurrency=64,
        routes=("openai/", "anthropic/", "perplexity/", "fal/", "firecrawl/", "superagent/", "v0/"),
    ),
    Domain(
        name="comms",
        package="comms",
        description="Slack, e-mail",
        concurrency=64,
        routes=("slack/", "resend/"),
    ),
    Domain(
        name="dev-tools",
        package="dev_tools",
        description="GitHub, Linear, Webflow, Clerk, Stripe, Blob",
        concurrency=64,
        routes=("github/", "linear/", "webflow/", "clerk/", "stripe/", "blob/"),
    ),
    Domain(
        name="oci",
        package="oci",
        description="Container functions run as Kubernetes Jobs",
        concurrency=16,
        lag_target=4,
        egress="kubernetes-api",
        worker_env=(("FLEET_OCI_BACKEND", "kubernetes"),),
    ),
    Domain(
        name="http",
        package="http",
        description="HTTP requests and webhooks, SSRF-guarded",
        concurrency=128,
        egress="internet-only",
        routes=("system/http-request",),
    ),
)

_BY_NAME = {d.name: d for d in DOMAINS} | {d.package: d for d in DOMAINS}


def routed_domain(slug: str) -> Domain | None:
    """The domain whose declared ``routes`` cover ``slug`` (an exact slug before a plugin
    prefix), or ``None``: routing a built-in without importing any worker package."""
    exact = next((d for d in DOMAINS if slug in d.routes), None)
    if exact is not None:
        return exact
    return next((d for d in DOMAINS for r in d.routes if r.endswith("/") and slug.startswith(r)), None)


def get_domain(name: str) -> Domain:
    """The domain called ``name`` (``dev-tools`` and ``dev_tools`` both work)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(d.name for d in DOMAINS)
        raise ConfigError(f"unknown domain {name!r}; known: {known}") from None
