"""The scaling spec has one source: the cluster profile equals the rendered keda/*.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.domains import DOMAINS, get_domain
from shared.errors import ConfigError
from shared.settings import Settings
from shared.tools.scaling.spec import for_domain, spec_from_scaled_object

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", [d.name for d in DOMAINS])
def test_cluster_profile_equals_the_rendered_scaled_object(name: str) -> None:
    spec = for_domain(get_domain(name), Settings.model_construct(), "cluster")
    body = yaml.safe_load((ROOT / "keda" / f"scaledobject-{name}.yaml").read_text())["spec"]
    assert spec.min_replicas == body["minReplicaCount"]
    assert spec.max_replicas == body["maxReplicaCount"]
    assert spec.polling_interval == body["pollingInterval"]
    assert spec.cooldown_period == body["cooldownPeriod"]
    by_name = {t["name"]: t["metadata"] for t in body["triggers"]}
    triggers = {t.name: t for t in spec.triggers}
    assert set(triggers) == set(by_name) == {"backlog", "in-flight"}
    assert triggers["backlog"].metric == "lag"
    assert triggers["backlog"].target == float(by_name["backlog"]["lagCount"])
    assert triggers["backlog"].activation == float(by_name["backlog"]["activationLagCount"])
    assert triggers["in-flight"].metric == "pending"
    assert triggers["in-flight"].target == float(by_name["in-flight"]["pendingEntriesCount"])
    assert triggers["in-flight"].activation == float(by_name["in-flight"]["activationLagCount"])
    # the HPA defaults KEDA relies on (no behavior rendered)
    assert "advanced" not in body
    assert (spec.sync_period, spec.stabilization_window, spec.tolerance) == (15, 300, 0.1)


def test_keda_defaults_profile_changes_only_the_timings() -> None:
    domain = get_domain("oci")
    cluster = for_domain(domain, Settings.model_construct(), "cluster")
    defaults = for_domain(domain, Settings.model_construct(), "keda-defaults")
    assert (defaults.polling_interval, defaults.cooldown_period) == (30, 300)
    assert defaults.triggers == cluster.triggers
    assert (defaults.min_replicas, defaults.max_replicas) == (cluster.min_replicas, cluster.max_replicas)


def test_local_profile_takes_the_scale_settings() -> None:
    settings = Settings.model_construct(
        scale_polling_interval=0.5, scale_cooldown=12.0, scale_stabilization=6.0, scale_max_processes=3
    )
    spec = for_domain(get_domain("ai"), settings, "local")
    assert (spec.polling_interval, spec.sync_period) == (0.5, 0.5)
    assert (spec.cooldown_period, spec.stabilization_window) == (12.0, 6.0)
    assert spec.max_replicas == 3
    assert spec.triggers == for_domain(get_domain("ai"), settings, "cluster").triggers


def test_local_max_defaults_to_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    spec = for_domain(get_domain("ai"), Settings.model_construct(), "local")
    assert spec.max_replicas == 6
    assert Settings.model_construct().scale_max_processes is None


def test_trigger_modes_follow_kedas_validate() -> None:
    def body(metadata: dict[str, str]) -> dict[str, object]:
        return {"spec": {"triggers": [{"type": "redis-streams", "metadata": metadata}]}}

    pending = spec_from_scaled_object(body({"stream": "s", "consumerGroup": "g", "lagCount": "0"}))
    assert (pending.triggers[0].metric, pending.triggers[0].target) == ("pending", 5)
    xlen = spec_from_scaled_object(body({"stream": "s", "activationLagCount": "2"}))
    assert (xlen.triggers[0].metric, xlen.triggers[0].target, xlen.triggers[0].activation) == ("xlen", 5, 2)
    assert (xlen.polling_interval, xlen.cooldown_period, xlen.max_replicas) == (30, 300, 100)
    with pytest.raises(ConfigError, match="AverageValue"):
        spec_from_scaled_object(
            {"spec": {"triggers": [{"type": "redis-streams", "metricType": "Value", "metadata": {}}]}}
        )
