"""Metrics and tracing pieces of the manifests: one PodMonitor per domain, the NetworkPolicy
ingress that lets Prometheus scrape, and the OpenTelemetry exporter settings.

Scraping: in the cluster each worker's app channel (container port ``http``) serves
``GET /metrics``. The endpoint checks no token (only daprd's deliveries carry
``dapr-api-token``; ``/metrics``, ``/healthz`` and ``/readyz`` carry no requests), so the
PodMonitor needs no credentials and Prometheus never holds the app token. What keeps the port
closed to everything else is the NetworkPolicy: ingress only from the Prometheus pods of
``Platform.prometheus_namespace``, only to port ``http``.

Tracing: the standard ``OTEL_*`` variables go into the settings ConfigMap (``envFrom`` takes
every key), except ``OTEL_SERVICE_NAME`` (the app id, set per Deployment) and
``OTEL_EXPORTER_OTLP_ENDPOINT``, which only an overlay sets: prod points it at the collector,
dev leaves it unset, which keeps worker tracing off there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from shared.domains import Domain
from shared.settings import Settings
from shared.tools.manifests.model import (
    PART_OF,
    Document,
    Manifest,
    Platform,
    RenderedFile,
    labels,
    meta,
    ns_selector,
)

__all__ = [
    "METRICS_PATH",
    "METRICS_PORT",
    "TRACES_SAMPLER",
    "otel_config",
    "otel_overlay",
    "pod_monitor",
    "pod_monitors",
    "resource_attributes",
    "scrape_ingress",
]

#: The worker container's port name (``_deployment``) and the path its app channel serves.
METRICS_PORT = "http"
METRICS_PATH = "/metrics"
#: Follow the caller's sampling decision (daprd's traceparent); sample root spans at the ratio.
TRACES_SAMPLER = "parentbased_traceidratio"


def _worker_selector(app_id: str) -> dict[str, str]:
    # The Deployment's own selector: the worker pods of one domain, nothing else.
    return {"app.kubernetes.io/name": app_id, "app.kubernetes.io/component": "worker"}


def pod_monitor(settings: Settings, domain: Domain, p: Platform) -> Manifest:
    """The PodMonitor of ``domain``: its worker pods, port ``http``, path ``/metrics``."""
    app_id = settings.group_for(domain.name)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta(app_id, p.namespace, {**labels("monitoring", app_id), **dict(p.pod_monitor_labels)}),
        "spec": {
            "selector": {"matchLabels": _worker_selector(app_id)},
            "podMetricsEndpoints": [
                {
                    "port": METRICS_PORT,
                    "path": METRICS_PATH,
                    "scheme": "http",
                    "interval": p.scrape_interval,
                    "scrapeTimeout": p.scrape_timeout,
                }
            ],
        },
    }


def pod_monitors(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile:
    docs = [
        Document(
            pod_monitor(settings, d, p),
            (
                f"Prometheus Operator: scrape {settings.group_for(d.name)}'s workers on port "
                f"{METRICS_PORT} {METRICS_PATH} every {p.scrape_interval}. No credentials: the "
                "app channel checks daprd's token on deliveries only.",
            ),
        )
        for d in domains
    ]
    return RenderedFile(PurePosixPath("deploy/base/podmonitors.yaml"), tuple(docs))


def scrape_ingress(p: Platform) -> Manifest:
    """The one ingress rule of a worker's NetworkPolicy: Prometheus to port ``http``."""
    return {
        "from": [
            {
                "namespaceSelector": ns_selector(p.prometheus_namespace),
                "podSelector": {"matchLabels": dict(p.prometheus_selector)},
            }
        ],
        "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
    }


def resource_attributes(overlay: str | None = None) -> str:
    """``OTEL_RESOURCE_ATTRIBUTES``: the fleet as ``service.namespace``, and the overlay as
    ``deployment.environment`` when there is one."""
    attrs = [f"service.namespace={PART_OF}"]
    if overlay is not None:
        attrs.append(f"deployment.environment={overlay}")
    return ",".join(attrs)


def otel_config(p: Platform) -> dict[str, str]:
    """The ``OTEL_*`` entries of the base ConfigMap (no endpoint: overlays decide)."""
    return {
        # What the workers speak (shared/runtime/tracing.py refuses any other); daprd's own
        # exporter is gRPC, set in the Dapr Configuration.
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": TRACES_SAMPLER,
        "OTEL_TRACES_SAMPLER_ARG": p.trace_sampling_rate,
        "OTEL_RESOURCE_ATTRIBUTES": resource_attributes(),
    }


def otel_overlay(p: Platform, overlay: str) -> dict[str, str]:
    """What ``overlay``'s ConfigMap patch sets: its environment, and in prod the collector."""
    data = {"OTEL_RESOURCE_ATTRIBUTES": resource_attributes(overlay)}
    if overlay == "prod":
        data["OTEL_EXPORTER_OTLP_ENDPOINT"] = p.otlp_endpoint
    return data
