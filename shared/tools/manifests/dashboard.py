"""The fleet's Grafana dashboard, shipped as a ConfigMap the Grafana sidecar picks up.

kube-prometheus-stack's Grafana runs a sidecar (``k8s-sidecar``) that loads every ConfigMap
carrying its label (``grafana_dashboard: "1"`` by default) as a dashboard, in the folder an
annotation names. The dashboard reads only what the workers expose on ``/metrics`` (see
docs/observability.md), so it works wherever the PodMonitors are scraped:

* rate of executions per domain and outcome, error rate by code, p50/p99 execution time;
* consumer lag and pending entries of each domain's group (what KEDA scales on);
* worker replicas (pods reporting ``fleet_build_info``), deliveries in flight, dead letters,
  infrastructure errors, provider calls by status class, SSRF refusals, the history buffer.

Per-function series carry no ``domain`` label; ``fleet_build_info`` (always 1, one series per
pod with its ``domain``) is joined in with ``* on(namespace, pod) group_left(domain)``, the
usual info-metric pattern.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from shared.settings import Settings
from shared.tools.manifests.model import Document, Manifest, Platform, RenderedFile, labels, meta

__all__ = ["DASHBOARD_FILE", "DASHBOARD_UID", "dashboard", "dashboard_configmap", "expressions"]

DASHBOARD_UID = "function-fleet"
DASHBOARD_FILE = "function-fleet.json"

_NS = 'namespace="$namespace"'
_RATE = "$__rate_interval"
_BY_DOMAIN = "* on(namespace, pod) group_left(domain) fleet_build_info"
_COMPLETED = ',outcome="completed"'
_NOT_COMPLETED = ',outcome!="completed"'


def _per_domain(metric: str, extra: str = "") -> str:
    selector = f"{metric}{{{_NS}{extra}}}"
    return f"rate({selector}[{_RATE}]) {_BY_DOMAIN}"


def _quantile(q: float) -> str:
    inner = _per_domain("fleet_execution_duration_seconds_bucket")
    return f"histogram_quantile({q}, sum by (le, domain) ({inner}))"


Panel = tuple[str, str, tuple[tuple[str, str], ...], str]


def _keda_lag(prefix: str) -> str:
    # KEDA's operator exports the value each trigger fed the HPA, per ScaledObject (named like
    # the domain's group); in Dapr mode the workers have no Redis client to read lag themselves.
    value = f'max by (scaledObject) (keda_scaler_metrics_value{{scaledObject=~"{prefix}.*"}})'
    return f'label_replace({value}, "domain", "$1", "scaledObject", "{prefix}(.*)")'


def _deployment_replicas(prefix: str) -> str:
    # kube-state-metrics: the Deployment's replicas, 0 included (a scaled-to-zero domain
    # has no worker to report fleet_build_info).
    value = f'kube_deployment_status_replicas{{{_NS},deployment=~"{prefix}.*"}}'
    return f'label_replace({value}, "domain", "$1", "deployment", "{prefix}(.*)")'


def _panels(prefix: str) -> tuple[Panel, ...]:
    """(title, unit, [(expr, legend)], description) of each panel, in reading order."""
    return (
        (
            "Executions per second",
            "ops",
            (
                (
                    f"sum by (domain) ({_per_domain('fleet_executions_total', _COMPLETED)})",
                    "{{domain}} completed",
                ),
                (
                    f"sum by (domain) ({_per_domain('fleet_executions_total', _NOT_COMPLETED)})",
                    "{{domain}} not completed",
                ),
            ),
            "Executions finished per second by domain: completed vs everything else (failed, retried, "
            "deferred, dropped).",
        ),
        (
            "Errors by code",
            "ops",
            (
                (
                    f'sum by (outcome) (rate(fleet_executions_total{{{_NS},outcome!="completed"}}[{_RATE}]))',
                    "{{outcome}}",
                ),
            ),
            "Executions not completed per second, by the contract's error code (or retry / defer / "
            "drop; a handler's own codes count as other).",
        ),
        (
            "Execution time p50 / p99",
            "s",
            ((_quantile(0.5), "{{domain}} p50"), (_quantile(0.99), "{{domain}} p99")),
            "Receipt to outcome, from fleet_execution_duration_seconds.",
        ),
        (
            "Consumer lag",
            "short",
            (
                (f"max by (domain) (fleet_consumer_lag_messages{{{_NS}}})", "{{domain}} (workers)"),
                (_keda_lag(prefix), "{{domain}} (KEDA)"),
            ),
            "Requests not yet read by each domain's consumer group, as direct-mode workers read it "
            "(every replica reads the same group, hence max) and as KEDA's scaler fed it to the HPA "
            "(keda_scaler_metrics_value; the cluster's workers run under Dapr and do not read it).",
        ),
        (
            "Pending (read, not acknowledged)",
            "short",
            ((f"max by (domain) (fleet_pending_messages{{{_NS}}})", "{{domain}}"),),
            "Entries in each group's pending list: in flight, or left by a crashed worker until claimed.",
        ),
        (
            "Worker replicas",
            "short",
            (
                (_deployment_replicas(prefix), "{{domain}} replicas"),
                (f"count by (domain) (fleet_build_info{{{_NS}}})", "{{domain}} reporting"),
            ),
            "KEDA's scaling as it happens: each domain's Deployment replicas (kube-state-metrics, 0 "
            "when scaled to zero) and the worker pods reporting metrics.",
        ),
        (
            "Deliveries in flight",
            "short",
            (
                (
                    f"sum by (domain) (fleet_deliveries_in_flight{{{_NS}}} {_BY_DOMAIN})",
                    "{{domain}}",
                ),
            ),
            "Deliveries received and not yet settled.",
        ),
        (
            "Deferrals by reason",
            "ops",
            (
                (
                    f"sum by (reason) (rate(fleet_deferrals_total{{{_NS}}}[{_RATE}]))",
                    "{{reason}}",
                ),
            ),
            "Calls left for later, by what they wait for: a concurrency or rate limit, the limits "
            "store, or a duplicate of the same execution running elsewhere. Not failures, but a "
            "steady rate means a limit is what sets the pace.",
        ),
        (
            "Dead letters and infrastructure errors",
            "ops",
            (
                (f"sum by (domain) ({_per_domain('fleet_dead_lettered_total')})", "{{domain}} dead-lettered"),
                (
                    f"sum by (domain) ({_per_domain('fleet_infrastructure_errors_total')})",
                    "{{domain}} infrastructure errors",
                ),
            ),
            "Deliveries moved to the dead-letter topic, and broker / sidecar / database errors "
            "backed off from.",
        ),
        (
            "Provider HTTP calls",
            "ops",
            (
                (
                    "sum by (provider, status_class) "
                    f"(rate(fleet_provider_http_calls_total{{{_NS}}}[{_RATE}]))",
                    "{{provider}} {{status_class}}",
                ),
            ),
            "Calls to SaaS providers by status class (error = no answer).",
        ),
        (
            "SSRF refusals",
            "ops",
            (
                (
                    f"sum by (reason) (rate(fleet_ssrf_refusals_total{{{_NS}}}[{_RATE}]))",
                    "{{reason}}",
                ),
            ),
            "Destinations the HTTP policy refused (private, metadata, port, scheme...).",
        ),
        (
            "History buffer",
            "short",
            (
                (
                    f"sum by (domain) (fleet_history_buffer_operations{{{_NS}}} {_BY_DOMAIN})",
                    "{{domain}} buffered",
                ),
                (
                    f"min by (domain) (fleet_history_database_up{{{_NS}}} {_BY_DOMAIN})",
                    "{{domain}} database up",
                ),
            ),
            "History operations held for PostgreSQL (they grow during an outage and drain after), "
            "and whether each domain's writers reach the database.",
        ),
    )


def expressions(prefix: str = "fleet-") -> Iterator[str]:
    """Every PromQL expression of the dashboard (tests parse them and check the metric names)."""
    for _, _, targets, _ in _panels(prefix):
        for expr, _legend in targets:
            yield expr


def _panel(index: int, title: str, unit: str, targets: tuple[tuple[str, str], ...], about: str) -> Manifest:
    width = 12
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "description": about,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": (index % 2) * width, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
            }
            for n, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(p: Platform, prefix: str = "fleet-") -> dict[str, Any]:
    """The Grafana dashboard model (JSON): a Prometheus data source and a namespace variable
    (defaulting to the fleet's), then one panel per reading."""
    return {
        "uid": DASHBOARD_UID,
        "title": "Function Fleet",
        "tags": ["function-fleet"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "custom",
                    "query": p.namespace,
                    "current": {"text": p.namespace, "value": p.namespace},
                },
            ]
        },
        "panels": [_panel(i, *panel) for i, panel in enumerate(_panels(prefix))],
    }


def dashboard_configmap(settings: Settings, p: Platform) -> RenderedFile:
    """``deploy/base/dashboard.yaml``: the dashboard in a ConfigMap labelled for the sidecar."""
    key, value = p.grafana_dashboard_label
    body: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(
            "fleet-dashboard",
            p.namespace,
            {**labels("monitoring", "fleet-dashboard"), key: value},
            annotations={"grafana_folder": p.grafana_folder},
        ),
        "data": {DASHBOARD_FILE: json.dumps(dashboard(p, settings.group_prefix), indent=2, sort_keys=True)},
    }
    comment = (
        f"Grafana dashboard for the Grafana sidecar (label {key}={value!r}, folder annotation",
        "grafana_folder). Panels read the workers' /metrics, the KEDA operator's scaler metrics and",
        'kube-state-metrics\' replicas; docs/observability.md, "Dashboard".',
    )
    return RenderedFile(PurePosixPath("deploy/base/dashboard.yaml"), (Document(body, comment),))
