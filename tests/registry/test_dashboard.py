"""The Grafana dashboard reads what the workers really expose: every expression parses as
PromQL, and every fleet metric and label it names is in a live registry worker's /metrics
(a renamed metric would leave a panel silently empty). The rendered ConfigMap carries the
Grafana sidecar's label and the same dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.client import FleetClient
from shared.settings import Settings
from shared.tools.manifests.dashboard import DASHBOARD_FILE, dashboard, expressions
from shared.tools.manifests.model import Platform
from tests.conftest import running
from tests.observability import free_port, get
from tests.registry.fixtures_functions import TEST_FUNCTIONS

REPO = Path(__file__).resolve().parents[2]
#: Labels Prometheus adds to every scraped series (target labels), not the worker.
TARGET_LABELS = {"namespace", "pod"}
_SELECTOR = re.compile(r"\b(fleet_[a-z_]+)(?:\{([^}]*)\})?")
_EXTERNAL_SELECTOR = re.compile(r"\b((?:keda|kube)_[a-z_]+)(?:\{([^}]*)\})?")
#: Series the cluster's exporters keep, with their labels: the KEDA operator
#: (pkg/prommetrics: namespace, metric, scaledObject, scaler, triggerIndex, type) and
#: kube-state-metrics (kube_deployment_* carry namespace and deployment).
EXTERNAL = {
    "keda_scaler_metrics_value": {"namespace", "metric", "scaledObject", "scaler", "triggerIndex", "type"},
    "kube_deployment_status_replicas": {"namespace", "deployment"},
}
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\bby \(([^)]*)\)")


def _grafana_free(expr: str) -> str:
    # Grafana substitutes its variables before the query reaches Prometheus.
    return expr.replace("$__rate_interval", "5m").replace("$namespace", "fleet")


def _exposed(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Every series name a scrape can hold (counters as ``_total``, histograms as ``_bucket``
    / ``_count`` / ``_sum``), and for the series with samples the label names they carry."""
    names: set[str] = set()
    sampled: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names.update(
            {
                "counter": [f"{family.name}_total"],
                "histogram": [f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"],
            }.get(family.type, [family.name])
        )
        for sample in family.samples:
            sampled.setdefault(sample.name, set()).update(sample.labels)
    return names, sampled


def _check_external(expr: str) -> None:
    """An expression over another exporter's series names only the labels that exporter sets
    (``label_replace`` adds ``domain`` from the ScaledObject's name)."""
    selectors = _EXTERNAL_SELECTOR.findall(expr)
    assert selectors, f"{expr}: reads no fleet, KEDA or kube-state-metrics series"
    for name, matchers in selectors:
        assert name in EXTERNAL, f"{expr}: reads {name}, which the dashboard does not expect"
        unknown = set(_MATCHER.findall(matchers)) - EXTERNAL[name]
        assert not unknown, f"{name} has no label {sorted(unknown)}"
        for grouping in _BY.findall(expr):
            unknown = {label.strip() for label in grouping.split(",")} - EXTERNAL[name]
            assert not unknown, f"{expr}: groups by labels it lacks: {sorted(unknown)}"


def test_every_expression_is_valid_promql() -> None:
    exprs = list(expressions())
    assert len(exprs) >= 10
    for expr in exprs:
        promql_parser.parse(_grafana_free(expr))  # raises on a syntax error


def test_the_configmap_is_labelled_for_the_sidecar_and_holds_the_dashboard() -> None:
    rendered = yaml.safe_load((REPO / "deploy/base/dashboard.yaml").read_text())
    assert rendered["kind"] == "ConfigMap"
    assert rendered["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert rendered["metadata"]["annotations"]["grafana_folder"] == "Function Fleet"
    model = json.loads(rendered["data"][DASHBOARD_FILE])
    assert model == dashboard(Platform())
    assert model["uid"] == "function-fleet"
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["targets"] for panel in model["panels"])
    titles = {panel["title"] for panel in model["panels"]}
    assert {"Executions per second", "Errors by code", "Execution time p50 / p99"} <= titles
    assert {"Consumer lag", "Pending (read, not acknowledged)", "Worker replicas"} <= titles
    assert "dashboard.yaml" in (REPO / "deploy/base/kustomization.yaml").read_text()


async def test_every_metric_and_label_the_dashboard_reads_is_exposed(
    registry_settings: Callable[..., Settings], redis: Redis
) -> None:
    port = free_port()
    settings = registry_settings(metrics_port=port)
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        async with FleetClient(settings=settings) as client:
            await client.invoke("system/echo", {"n": 1}, timeout=20)
            failed = await client.invoke("system/fail", {"message": "boom"}, timeout=20)
            assert failed.error is not None
        status, _, text = await get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    names, sampled = _exposed(text)
    checked = 0
    for expr in expressions():
        selectors = _SELECTOR.findall(expr)
        if not selectors:
            _check_external(expr)
            continue
        missing = sorted({name for name, _ in selectors} - names)
        assert not missing, f"{expr}: reads metrics no worker exposes: {missing}"
        if not all(name in sampled for name, _ in selectors):
            continue  # no sample this run (provider calls, SSRF refusals): labels unknown
        checked += 1
        labels = set().union(*(sampled[name] for name, _ in selectors)) | TARGET_LABELS
        if "group_left(domain)" in expr:
            labels.add("domain")
        for name, matchers in selectors:
            unknown = set(_MATCHER.findall(matchers)) - labels
            assert not unknown, f"{name} has no label {sorted(unknown)}"
        for grouping in _BY.findall(expr):
            unknown = {label.strip() for label in grouping.split(",")} - labels
            assert not unknown, f"{expr}: groups by labels it lacks: {sorted(unknown)}"
    assert checked >= 10
    assert "domain" in sampled["fleet_build_info"]  # the join the per-domain panels rely on
