"""The rendered deployment files: schema-valid, names in agreement, in sync with the renderer.

What is checked, and against what:

* Every YAML document under ``components/``, ``keda/`` and ``deploy/`` (the latter as
  ``kubectl kustomize`` renders each overlay, plus the Argo CD Applications and the Kargo
  objects, which no kustomization includes) is validated against ``tests/schemas`` (copies of
  the upstream schemas kept in the repository, sources in each SOURCES.md): Dapr, KEDA,
  Prometheus Operator (PodMonitor) and Kargo (Warehouse, Stage) kinds against their CRD's
  ``openAPIV3Schema`` for the manifest's version, core kinds
  against the Kubernetes v1.34 JSON schemas. Both are made strict first (``additionalProperties:
  false`` wherever a schema lists properties and does not preserve unknown fields), the way
  ``kubectl apply``'s strict field validation rejects a misspelled field; those schemas alone
  would accept it.
* Core kinds are also parsed by the ``kubernetes`` client's generated models (strict pydantic,
  unknown fields forbidden). For NetworkPolicy and Secret that is the only schema: tests/schemas
  has no JSON schema for them.
* ``ExternalSecret`` (external-secrets.io/v1beta1), the Argo CD ``Application`` and Kargo's
  ``Project`` have NO schema here: tests/schemas holds none of these CRDs. They get structural
  assertions only. Kargo's schemas leave a Warehouse's ``subscriptions`` and a promotion step's
  ``config`` open (``x-kubernetes-preserve-unknown-fields``): those get structural assertions
  too (test_kargo_pipeline_feeds_the_argocd_applications).
* The Dockerfile is linted, not built: this machine has the docker client but no daemon (no
  container engine runs here), so the lint parses it and checks the rules a build would not.

Nothing here is skipped: a missing ``kubectl`` or schema directory fails the test.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes.client
import pytest
import redis as sync_redis
import yaml
from click.testing import CliRunner
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT4

from shared.domains import DOMAINS, Domain
from shared.settings import Settings
from shared.tools.cli.main import cli
from shared.tools.cli.manifests import init_streams
from shared.tools.manifests import HEADER, check_tree, render, serialize_all
from shared.tools.manifests.render import (
    CLUSTER_INTERNAL_V4,
    DAPR_GRACEFUL_SHUTDOWN_SECONDS,
    STREAM_MAXLEN,
    block_shutdown_seconds,
    processing_timeout_ms,
    termination_grace_seconds,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
OVERLAYS = ("dev", "prod")  # promotion order
DEFAULTS = Settings()
Doc = dict[str, Any]

#: Kinds with no schema in tests/schemas (nor in the kubernetes client): structural checks only.
NO_SCHEMA = {
    ("external-secrets.io/v1beta1", "ExternalSecret"): "external-secrets CRD not in tests/schemas",
    ("argoproj.io/v1alpha1", "Application"): "Argo CD CRD not in tests/schemas",
    ("kargo.akuity.io/v1alpha1", "Project"): "Kargo's Project CRD not in tests/schemas (metadata only)",
}
#: tests/schemas folders holding CustomResourceDefinitions the documents are validated against.
CRD_DIRS = ("dapr", "keda", "prometheus-operator", "kargo")
#: Core kinds without a JSON schema in tests/schemas/kubernetes: the client model is the schema.
MODEL_ONLY = {("networking.k8s.io/v1", "NetworkPolicy"), ("v1", "Secret")}


# --------------------------------------------------------------------------- loading
def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _kustomize(overlay: str) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is required to render deploy/overlays; it is not skipped"
    out = subprocess.run(
        [kubectl, "kustomize", str(REPO / "deploy" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d is not None]


def _ident(source: str, doc: Doc) -> str:
    return f"{source}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


@pytest.fixture(scope="module")
def kustomized() -> dict[str, list[Doc]]:
    return {overlay: _kustomize(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def all_docs(kustomized: dict[str, list[Doc]]) -> list[tuple[str, Doc]]:
    """(where, document) for every document that is applied to a cluster."""
    docs: list[tuple[str, Doc]] = []
    for top in ("components", "keda"):
        for path in sorted((REPO / top).rglob("*.yaml")):
            docs.extend((str(path.relative_to(REPO)), d) for d in _load(path))
    for overlay, rendered in kustomized.items():
        docs.extend((f"kustomize deploy/overlays/{overlay}", d) for d in rendered)
    for path in sorted(
        [*(REPO / "deploy" / "argocd").glob("*.yaml"), *(REPO / "deploy" / "kargo").glob("*.yaml")]
    ):
        docs.extend((str(path.relative_to(REPO)), d) for d in _load(path))
    return docs


def _by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _repo_docs(top: str) -> list[Doc]:
    return [d for p in sorted((REPO / top).rglob("*.yaml")) for d in _load(p)]


# --------------------------------------------------------------------------- schemas
def strict(schema: Any) -> Any:
    """A copy of ``schema`` where every object schema that lists ``properties`` and neither sets
    ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` forbids other keys."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def local_registry(directory: Path) -> Registry[Any]:
    """A registry that resolves ``$ref``s to JSON files inside ``directory`` (relative or
    ``file:`` URIs) and refuses anything else: there is no network, and a schema must not
    depend on one. openapi2jsonschema without ``--stand-alone`` writes refs like
    ``_definitions.json#/definitions/...``; SOURCES.md says these files were produced with
    ``--expanded --stand-alone`` (no refs), which the tests below confirm rather than assume."""
    root = directory.resolve()

    def retrieve(uri: str) -> Resource[Any]:
        parts = urlsplit(uri)
        if parts.scheme not in ("", "file"):
            raise LookupError(f"refusing to fetch {uri!r}: schemas must be local")
        path = Path(parts.path) if parts.scheme == "file" else root / parts.path
        path = path.resolve()
        if root not in path.parents:
            raise LookupError(f"{uri!r} is outside {root}")
        contents = json.loads(path.read_text(encoding="utf-8"))
        contents.pop("$schema", None)
        return DRAFT4.create_resource(contents)

    return Registry(retrieve=retrieve)


def file_validator(path: Path, registry: Registry[Any], transform: Callable[[Any], Any] = strict) -> Any:
    """A Draft 4 validator for the JSON schema file ``path``, its ``$ref``s resolved through
    ``registry`` relative to the file. The dialect is chosen here, not from ``$schema``:
    openapi2jsonschema writes ``http://json-schema.org/schema#``, which names no draft."""
    contents = json.loads(path.read_text(encoding="utf-8"))
    contents.pop("$schema", None)
    uri = path.resolve().as_uri()
    registry = registry.with_resource(uri, DRAFT4.create_resource(transform(contents)))
    return jsonschema.Draft4Validator({"$ref": uri}, registry=registry)


class Schemas:
    """Validators by (apiVersion, kind): CRD schemas of the :data:`CRD_DIRS` folders, and the
    Kubernetes JSON schemas of tests/schemas/kubernetes."""

    def __init__(self, root: Path) -> None:
        assert root.is_dir(), f"schemas not found at {root} (shared/ must sit beside the repository)"
        self.crds: dict[tuple[str, str], Any] = {}
        for crd_file in sorted(f for folder in CRD_DIRS for f in (root / folder).glob("*.yaml")):
            crd = yaml.safe_load(crd_file.read_text(encoding="utf-8"))
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                self.crds[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(schema)
        k8s_dir = root / "kubernetes"
        registry = local_registry(k8s_dir)
        self.core: dict[tuple[str, str], Any] = {}
        for path in sorted(k8s_dir.glob("*.json")):
            gvks = json.loads(path.read_text(encoding="utf-8")).get("x-kubernetes-group-version-kind", [])
            for gvk in gvks:
                api = gvk["version"] if not gvk["group"] else f"{gvk['group']}/{gvk['version']}"
                self.core[(api, gvk["kind"])] = file_validator(path, registry)
        assert self.crds, f"no CRD schemas under {root}"
        assert self.core, f"no Kubernetes schemas under {root}"


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas(SCHEMAS)


def _errors(validator: Any, doc: Doc) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def _client_model(doc: Doc) -> Any:
    return getattr(kubernetes.client, f"V1{doc['kind']}", None)


def _structural_no_schema(doc: Doc) -> None:
    spec = doc.get("spec", {})
    if doc["kind"] == "ExternalSecret":
        assert spec["secretStoreRef"]["name"]
        assert spec["secretStoreRef"]["kind"] in {
            "SecretStore",
            "ClusterSecretStore",
        }
        assert spec["target"]["name"] == doc["metadata"]["name"]
        assert spec.get("data") or spec.get("dataFrom")
        for item in spec.get("data", []):
            assert set(item) == {"secretKey", "remoteRef"}
            assert item["remoteRef"]["key"]
        for item in spec.get("dataFrom", []):
            assert set(item) == {"extract"}
            assert item["extract"]["key"]
    elif doc["kind"] == "Application":
        assert spec["project"]
        assert spec["destination"]["server"]
        assert spec["destination"]["namespace"]
        source = spec["source"]
        assert set(source) == {"repoURL", "targetRevision", "path", "directory"}
        assert source["directory"] == {"recurse": True}
    else:  # Kargo Project: cluster-scoped, metadata only (Kargo names its namespace after it)
        assert "namespace" not in doc["metadata"]
        assert set(doc) == {"apiVersion", "kind", "metadata"}


def test_every_document_validates(all_docs: list[tuple[str, Doc]], schemas: Schemas) -> None:
    assert len(all_docs) > 40
    failures: list[str] = []
    counts = {"crd": 0, "json-schema": 0, "client-model": 0, "none": 0}
    for where, doc in all_docs:
        key = (doc.get("apiVersion", ""), doc.get("kind", ""))
        ident = _ident(where, doc)
        validated = False
        try:
            kubernetes.client.V1ObjectMeta.model_validate(doc["metadata"])
        except Exception as exc:
            failures.append(f"{ident} metadata: {exc}")
        if key in schemas.crds:
            failures.extend(f"{ident} {e}" for e in _errors(schemas.crds[key], doc))
            counts["crd"] += 1
            validated = True
        if key in schemas.core:
            failures.extend(f"{ident} {e}" for e in _errors(schemas.core[key], doc))
            counts["json-schema"] += 1
            validated = True
        model = _client_model(doc)
        if key in schemas.core or key in MODEL_ONLY:
            assert model is not None, f"no kubernetes client model for {key}"
            try:
                model.model_validate(doc)
            except Exception as exc:
                failures.append(f"{ident} (kubernetes client model): {exc}")
            counts["client-model"] += 1
            validated = True
        if key in NO_SCHEMA:
            _structural_no_schema(doc)
            counts["none"] += 1
            validated = True
        if not validated:
            failures.append(f"{ident}: no schema for {key} and not a known schema-less kind")
    assert not failures, "\n".join(failures)
    assert all(counts.values()), counts


def test_strict_validation_catches_a_misspelled_field(schemas: Schemas) -> None:
    deployment = _by_kind(_load(REPO / "deploy/base/deployment-ai.yaml"), "Deployment")["fleet-ai"]
    assert _errors(schemas.core[("apps/v1", "Deployment")], deployment) == []
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    assert _errors(schemas.core[("apps/v1", "Deployment")], broken)
    sub = _load(REPO / "components/subscription-ai.yaml")[0]
    broken_sub = copy.deepcopy(sub)
    broken_sub["spec"]["deadLetterTopc"] = "x"
    assert _errors(schemas.crds[("dapr.io/v2alpha1", "Subscription")], broken_sub)
    so = _load(REPO / "keda/scaledobject-ai.yaml")[0]
    broken_so = copy.deepcopy(so)
    broken_so["spec"]["triggers"][0]["metadata"]["lagCount"] = 20  # must be a string
    assert _errors(schemas.crds[("keda.sh/v1alpha1", "ScaledObject")], broken_so)
    monitor = _by_kind(_load(REPO / "deploy/base/podmonitors.yaml"), "PodMonitor")["fleet-ai"]
    podmonitor = schemas.crds[("monitoring.coreos.com/v1", "PodMonitor")]
    assert _errors(podmonitor, monitor) == []
    broken_monitor = copy.deepcopy(monitor)
    broken_monitor["spec"]["podMetricsEndpoints"][0]["scrapeInterval"] = "30s"  # it is `interval`
    assert _errors(podmonitor, broken_monitor)
    kargo = "kargo.akuity.io/v1alpha1"
    (warehouse,) = _load(REPO / "deploy/kargo/warehouse.yaml")
    assert _errors(schemas.crds[(kargo, "Warehouse")], warehouse) == []
    broken_warehouse = copy.deepcopy(warehouse)
    broken_warehouse["spec"]["interval"] = "five minutes"
    assert _errors(schemas.crds[(kargo, "Warehouse")], broken_warehouse)
    stage = _by_kind(_load(REPO / "deploy/kargo/stages.yaml"), "Stage")["prod"]
    assert _errors(schemas.crds[(kargo, "Stage")], stage) == []
    broken_stage = copy.deepcopy(stage)
    broken_stage["spec"]["requestedFreight"][0]["sources"]["upstreamStages"] = ["dev"]
    assert _errors(schemas.crds[(kargo, "Stage")], broken_stage)


def test_kubernetes_schema_refs_resolve_locally(tmp_path: Path) -> None:
    # The shipped schemas are stand-alone (SOURCES.md): confirm no $ref is left to resolve.
    for path in (SCHEMAS / "kubernetes").glob("*.json"):
        assert '"$ref"' not in path.read_text(encoding="utf-8"), path.name
    # A non-stand-alone layout still works: refs to sibling files resolve, remote ones are refused.
    (tmp_path / "_definitions.json").write_text(
        json.dumps({"definitions": {"port": {"type": "integer"}}}), encoding="utf-8"
    )
    schema = {
        "$schema": "http://json-schema.org/schema#",
        "type": "object",
        "properties": {"port": {"$ref": "_definitions.json#/definitions/port"}},
    }
    (tmp_path / "thing.json").write_text(json.dumps(schema), encoding="utf-8")
    validator = file_validator(tmp_path / "thing.json", local_registry(tmp_path))
    assert _errors(validator, {"port": 8080}) == []
    assert _errors(validator, {"port": "http"})
    assert _errors(validator, {"prot": 1}), "strict: unknown keys are errors"
    (tmp_path / "remote.json").write_text(
        json.dumps({"properties": {"x": {"$ref": "https://example.invalid/s.json"}}}), encoding="utf-8"
    )
    remote = file_validator(tmp_path / "remote.json", local_registry(tmp_path))
    with pytest.raises(Unresolvable, match=r"example\.invalid"):
        list(remote.iter_errors({"x": 1}))


def test_every_deploy_file_is_validated() -> None:
    """No YAML under deploy/ escapes validation: each is a kustomization, something a
    kustomization includes, or an Argo CD / Kargo object (validated directly)."""
    included: set[Path] = set()
    for kfile in (REPO / "deploy").rglob("kustomization.yaml"):
        k = _load(kfile)[0]
        for entry in [*k.get("resources", []), *(p["path"] for p in k.get("patches", []))]:
            target = (kfile.parent / entry).resolve()
            if target.is_file():
                included.add(target)
    for path in (REPO / "deploy").rglob("*.yaml"):
        if path.name == "kustomization.yaml" or path.parent.name in {"argocd", "kargo"}:
            continue
        assert path.resolve() in included, f"{path.relative_to(REPO)} is in no kustomization"


# --------------------------------------------------------------------------- name agreement
def _app_id(d: Domain) -> str:
    return DEFAULTS.group_for(d.name)


def test_names_agree_everywhere(kustomized: dict[str, list[Doc]]) -> None:
    components = _repo_docs("components")
    keda = _repo_docs("keda")
    pubsub_name = Settings.model_fields["pubsub_name"].default
    assert pubsub_name == DEFAULTS.pubsub_name
    component = _by_kind(components, "Component")[pubsub_name]
    assert component["spec"]["type"] == "pubsub.redis"
    subscriptions = _by_kind(components, "Subscription")
    scaled = _by_kind(keda, "ScaledObject")
    assert len(subscriptions) == len(scaled) == len(DOMAINS)
    scopes = dict(
        item.split("=", 1)
        for item in {m["name"]: m.get("value") for m in component["spec"]["metadata"]}[
            "subscriptionScopes"
        ].split(";")
    )
    for overlay, docs in kustomized.items():
        deployments = _by_kind(docs, "Deployment")
        assert set(deployments) == {_app_id(d) for d in DOMAINS}, overlay
        for d in DOMAINS:
            topic, group = DEFAULTS.topic_for(d.name), DEFAULTS.group_for(d.name)
            sub = next(s for s in subscriptions.values() if s["spec"]["topic"] == topic)
            assert sub["apiVersion"] == "dapr.io/v2alpha1"
            assert sub["spec"]["pubsubname"] == component["metadata"]["name"] == pubsub_name
            assert sub["spec"]["deadLetterTopic"] == DEFAULTS.dlq_for(topic)
            assert sub["spec"]["routes"] == {"default": "/events"}
            assert sub["spec"]["bulkSubscribe"]["enabled"] is True
            assert sub["scopes"] == [group]
            assert scopes[group] == topic
            annotations = deployments[group]["spec"]["template"]["metadata"]["annotations"]
            assert annotations["dapr.io/app-id"] == group
            assert annotations["dapr.io/app-max-concurrency"] == str(d.concurrency)
            so = scaled[group]
            assert so["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployments[group]["metadata"]["name"],
            }
            modes = {}
            for trigger in so["spec"]["triggers"]:
                assert trigger["type"] == "redis-streams"
                meta = trigger["metadata"]
                assert meta["stream"] == topic == sub["spec"]["topic"]
                assert meta["consumerGroup"] == group == annotations["dapr.io/app-id"]
                modes["lag" if "lagCount" in meta else "pending"] = meta
            assert modes["lag"]["lagCount"] == str(d.lag_target)
            assert modes["lag"]["activationLagCount"] == "0"
            assert modes["pending"]["pendingEntriesCount"] == str(d.concurrency)
            assert "lagCount" not in modes["pending"]
            assert so["spec"]["minReplicaCount"] == d.min_replicas == 0
            assert so["spec"]["maxReplicaCount"] == d.max_replicas == 20
            assert so["spec"]["pollingInterval"] == d.polling_interval
            assert so["spec"]["cooldownPeriod"] == d.cooldown_period
    # consumerID is left to daprd, which uses the app id (= the group KEDA watches)
    assert "consumerID" not in {m["name"] for m in component["spec"]["metadata"]}


def test_yaml_comments_explain_the_scaling_knobs() -> None:
    for d in DOMAINS:
        text = (REPO / f"keda/scaledobject-{d.name}.yaml").read_text(encoding="utf-8")
        lines = text.splitlines()
        for key in ("cooldownPeriod:", "pollingInterval:"):
            i = next(n for n, line in enumerate(lines) if line.strip().startswith(key))
            assert lines[i - 1].strip().startswith("#"), f"{d.name}: no comment above {key}"
        assert "Redis >= 7" in text
    pubsub = (REPO / "components/pubsub.yaml").read_text(encoding="utf-8")
    assert "UNANSWERED" in pubsub
    assert "INTEGER MILLISECONDS" in pubsub


# --------------------------------------------------------------------------- component policy
def test_pubsub_component_settings() -> None:
    component = _by_kind(_repo_docs("components"), "Component")[DEFAULTS.pubsub_name]
    meta = {m["name"]: m for m in component["spec"]["metadata"]}
    assert meta["redisHost"]["secretKeyRef"]["name"] == meta["redisPassword"]["secretKeyRef"]["name"]
    assert re.fullmatch(r"\d+", meta["redeliverInterval"]["value"]), "integer milliseconds only"
    assert int(meta["processingTimeout"]["value"]) == processing_timeout_ms(DEFAULTS)
    assert int(meta["processingTimeout"]["value"]) > DEFAULTS.default_timeout_seconds * 1000
    in_flight = max(d.max_replicas * d.concurrency for d in DOMAINS)
    assert int(meta["maxLenApprox"]["value"]) == STREAM_MAXLEN >= max(10 * in_flight, DEFAULTS.results_maxlen)
    assert int(meta["concurrency"]["value"]) >= max(d.concurrency for d in DOMAINS)


def test_resiliency_retries_inbound_deliveries() -> None:
    docs = _repo_docs("components")
    (resiliency,) = _by_kind(docs, "Resiliency").values()
    target = resiliency["spec"]["targets"]["components"][DEFAULTS.pubsub_name]
    policy = resiliency["spec"]["policies"]["retries"][target["inbound"]["retry"]]
    assert policy["maxRetries"] >= DEFAULTS.max_deliveries - 1
    assert "timeout" not in target["inbound"]
    assert set(resiliency["scopes"]) == {_app_id(d) for d in DOMAINS}
    (config,) = _by_kind(docs, "Configuration").values()
    assert config["spec"]["tracing"]["samplingRate"]
    assert config["spec"]["tracing"]["otel"]["endpointAddress"]
    for deployment in _by_kind(_repo_docs("deploy/base"), "Deployment").values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["dapr.io/config"] == config["metadata"]["name"]


# --------------------------------------------------------------------------- deploy policy
def _pod(deployment: Doc) -> Doc:
    pod: Doc = deployment["spec"]["template"]["spec"]
    return pod


def test_deployments_follow_the_declaration(kustomized: dict[str, list[Doc]]) -> None:
    for _overlay, docs in kustomized.items():
        deployments = _by_kind(docs, "Deployment")
        config = _by_kind(docs, "ConfigMap")["fleet-settings"]["data"]
        for d in DOMAINS:
            dep = deployments[_app_id(d)]
            assert "replicas" not in dep["spec"], "KEDA owns replicas"
            pod = _pod(dep)
            (container,) = pod["containers"]
            assert container["args"] == ["worker", d.name, "--transport", "dapr"]
            r = d.resources
            assert container["resources"] == {
                "requests": {"cpu": r.cpu_request, "memory": r.memory_request},
                "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit},
            }
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
            annotations = dep["spec"]["template"]["metadata"]["annotations"]
            assert annotations["dapr.io/enabled"] == "true"
            assert annotations["dapr.io/app-port"] == "8080" == config["FLEET_APP_PORT"]
            for key in ("api-token-secret", "app-token-secret", "config", "graceful-shutdown-seconds"):
                assert annotations[f"dapr.io/{key}"], key
            # security
            sc = container["securityContext"]
            assert sc["runAsNonRoot"]
            assert sc["readOnlyRootFilesystem"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["securityContext"]["runAsNonRoot"]
            assert pod["securityContext"]["runAsUser"] > 0
            # shutdown: grace > drain (FLEET_SHUTDOWN_TIMEOUT) + daprd's graceful seconds
            drain = float(config["FLEET_SHUTDOWN_TIMEOUT"])
            graceful = int(annotations["dapr.io/graceful-shutdown-seconds"])
            block = int(annotations["dapr.io/block-shutdown-duration"].removesuffix("s"))
            assert graceful == DAPR_GRACEFUL_SHUTDOWN_SECONDS
            assert block == block_shutdown_seconds(DEFAULTS)
            assert pod["terminationGracePeriodSeconds"] == termination_grace_seconds(DEFAULTS)
            assert pod["terminationGracePeriodSeconds"] > drain + graceful
            assert pod["terminationGracePeriodSeconds"] > block + graceful
            assert block > drain
            # the app token is mounted into the app container from the secret daprd uses
            env = {e["name"]: e for e in container["env"]}
            for var, annotation in (
                ("APP_API_TOKEN", "app-token-secret"),
                ("DAPR_API_TOKEN", "api-token-secret"),
            ):
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": annotations[f"dapr.io/{annotation}"], "key": "token"}
            assert env["FLEET_CONCURRENCY"]["value"] == str(d.concurrency)
            # the registry is opt-in: a Secret that may be absent (then: built-ins, no history);
            # with it, claims go to the broker's Redis (the URL the streams-init Job uses)
            assert env["FLEET_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": "fleet-database",
                "key": "url",
                "optional": True,
            }
            assert env["FLEET_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": "fleet-redis",
                "key": "url",
                "optional": True,
            }
            for key, value in d.worker_env:
                assert key in {f"FLEET_{name.upper()}" for name in Settings.model_fields}, key
                assert env[key]["value"] == value
            # the token automount only where the Kubernetes API is needed
            sa = _by_kind(docs, "ServiceAccount")[pod["serviceAccountName"]]
            assert sa["automountServiceAccountToken"] is (d.name == "oci")
            assert pod["automountServiceAccountToken"] is (d.name == "oci")
            # without a token daprd's auto-loaded Kubernetes secret store would crash the sidecar
            assert annotations["dapr.io/disable-builtin-k8s-secret-store"] == "true"


def test_configmap_holds_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    cm = _by_kind(_repo_docs("deploy/base"), "ConfigMap")["fleet-settings"]
    fields = {f"FLEET_{name.upper()}" for name in Settings.model_fields}
    fleet = {k: v for k, v in cm["data"].items() if k.startswith("FLEET_")}
    assert set(fleet) <= fields, set(fleet) - fields
    # the rest are the OpenTelemetry SDK's own variables, which Settings does not read
    assert set(cm["data"]) - set(fleet) == {
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_RESOURCE_ATTRIBUTES",
    }
    for key, value in fleet.items():
        monkeypatch.setenv(key, value)
    loaded = Settings()
    assert loaded.app_host == "0.0.0.0"
    assert loaded.dapr_secrets == "off"
    assert loaded.pubsub_name == DEFAULTS.pubsub_name
    assert loaded.topic_for("ai") == DEFAULTS.topic_for("ai")
    assert loaded.home == Path("/tmp/fleet")


def test_rbac_only_for_oci(kustomized: dict[str, list[Doc]]) -> None:
    for docs in kustomized.values():
        roles, bindings = _by_kind(docs, "Role"), _by_kind(docs, "RoleBinding")
        assert set(roles) == set(bindings) == {"fleet-oci"}
        (namespace,) = {
            roles["fleet-oci"]["metadata"]["namespace"],
            bindings["fleet-oci"]["metadata"]["namespace"],
        }
        assert namespace == DEFAULTS.oci_namespace
        assert _by_kind(docs, "ConfigMap")["fleet-settings"]["data"]["FLEET_OCI_NAMESPACE"] == namespace
        oci = _pod(_by_kind(docs, "Deployment")["fleet-oci"])["containers"][0]
        assert {"name": "FLEET_OCI_BACKEND", "value": "kubernetes"} in oci["env"]
        assert namespace in _by_kind(docs, "Namespace")
        granted = {
            (g, r)
            for rule in roles["fleet-oci"]["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
        }
        assert granted == {("batch", "jobs"), ("", "secrets"), ("", "pods"), ("", "pods/log")}
        (subject,) = bindings["fleet-oci"]["subjects"]
        assert subject == {"kind": "ServiceAccount", "name": "fleet-oci", "namespace": "fleet"}


WORKER_PODS = {"app.kubernetes.io/part-of": "function-fleet", "app.kubernetes.io/component": "worker"}


def test_network_policies(kustomized: dict[str, list[Doc]]) -> None:
    for docs in kustomized.values():
        policies = _by_kind(docs, "NetworkPolicy")
        assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        for d in DOMAINS:
            spec = policies[_app_id(d)]["spec"]
            assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": _app_id(d)}}
            assert "Ingress" in spec["policyTypes"]
            # two ways in: Prometheus pods of the monitoring namespace, to port http only; the
            # orchestrator's daprd to the worker's daprd (service invocation of POST /execute)
            assert spec["ingress"][1:] == [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "workflows"}
                            },
                            "podSelector": {"matchLabels": {"dapr.io/app-id": "workflow-orchestrator"}},
                        },
                        # another worker forwarding a call for this domain's function
                        {"podSelector": {"matchLabels": WORKER_PODS}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 50002}],
                }
            ]
            assert spec["ingress"][:1] == [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                            },
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": "http"}],
                }
            ]
            forward = [r for r in spec["egress"] if {"protocol": "TCP", "port": 50002} in r.get("ports", [])]
            assert forward == [
                {
                    "to": [{"podSelector": {"matchLabels": WORKER_PODS}}],
                    "ports": [{"protocol": "TCP", "port": 50002}],
                }
            ]
            peers = [peer for rule in spec["egress"] for peer in rule.get("to", [])]
            blocks = [p["ipBlock"] for p in peers if "ipBlock" in p]
            ports = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule.get("ports", [])}
            assert {("UDP", 53), ("TCP", 6379), ("TCP", 5432)} <= ports
            database = [r for r in spec["egress"] if {"protocol": "TCP", "port": 5432} in r.get("ports", [])]
            assert [r["to"] for r in database] == [
                [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "postgres"}}}]
            ]
            if d.name == "http":
                assert blocks, "http needs the internet"
                for block in blocks:
                    if block["cidr"] == "0.0.0.0/0":
                        assert set(CLUSTER_INTERNAL_V4) >= {
                            "10.0.0.0/8",
                            "172.16.0.0/12",
                            "192.168.0.0/16",
                            "169.254.0.0/16",
                            "100.64.0.0/10",
                        }
                        assert set(block["except"]) >= set(CLUSTER_INTERNAL_V4)
                    else:
                        assert block["cidr"] == "::/0"
                        assert "fc00::/7" in block["except"]
            elif d.name == "oci":
                assert ("TCP", 6443) in ports
            else:
                assert all(b.get("except") for b in blocks if b["cidr"] in ("0.0.0.0/0", "::/0"))


def test_overlay_secrets(kustomized: dict[str, list[Doc]]) -> None:
    needed = {"fleet-redis", "fleet-providers", "fleet-dapr-api-token", "fleet-dapr-app-token"}
    assert set(_by_kind(kustomized["dev"], "Secret")) == needed
    assert not _by_kind(kustomized["dev"], "ExternalSecret")
    assert set(_by_kind(kustomized["prod"], "ExternalSecret")) == needed
    assert not _by_kind(kustomized["prod"], "Secret")
    redis = _by_kind(kustomized["dev"], "Secret")["fleet-redis"]["stringData"]
    assert set(redis) == {"host", "password", "url"}
    assert redis["url"].endswith(f"{redis['host']}/0")
    images = {
        c["image"] for d in _by_kind(kustomized["prod"], "Deployment").values() for c in _pod(d)["containers"]
    }
    (image,) = images
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+.*", image), image


def test_streams_init_job_and_trigger_auth(kustomized: dict[str, list[Doc]]) -> None:
    for docs in kustomized.values():
        job = _by_kind(docs, "Job")["fleet-streams-init"]
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["streams", "init"]
        assert {e["name"] for e in container["env"]} == {"FLEET_REDIS_URL"}
    (auth,) = _by_kind(_repo_docs("keda"), "TriggerAuthentication").values()
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"address", "password"}
    for so in _by_kind(_repo_docs("keda"), "ScaledObject").values():
        for trigger in so["spec"]["triggers"]:
            assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]


# --------------------------------------------------------------------------- monitoring
def _selects(selector: Doc, pod_labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "only matchLabels selectors are rendered"
    return all(pod_labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_pod_monitors_scrape_each_domains_workers(kustomized: dict[str, list[Doc]]) -> None:
    for overlay, docs in kustomized.items():
        monitors = _by_kind(docs, "PodMonitor")
        deployments = _by_kind(docs, "Deployment")
        policies = _by_kind(docs, "NetworkPolicy")
        assert set(monitors) == {_app_id(d) for d in DOMAINS}, overlay
        for d in DOMAINS:
            monitor = monitors[_app_id(d)]
            assert monitor["metadata"]["namespace"] == deployments[_app_id(d)]["metadata"]["namespace"]
            assert "namespaceSelector" not in monitor["spec"], "its own namespace only"
            # it selects this domain's worker pods and no other pod of the namespace
            for name, dep in deployments.items():
                pod_labels = dep["spec"]["template"]["metadata"]["labels"]
                assert _selects(monitor["spec"]["selector"], pod_labels) is (name == _app_id(d))
            init_labels = _by_kind(docs, "Job")["fleet-streams-init"]["spec"]["template"]["metadata"][
                "labels"
            ]
            assert not _selects(monitor["spec"]["selector"], init_labels)
            (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
            assert endpoint["path"] == "/metrics"
            # no credentials: /metrics checks no token (tests/contract/test_dapr_scrape.py)
            assert not {"authorization", "bearerTokenSecret", "basicAuth"} & set(endpoint)
            (container,) = _pod(deployments[_app_id(d)])["containers"]
            (port,) = [p for p in container["ports"] if p["name"] == endpoint["port"]]
            assert (
                str(port["containerPort"])
                == deployments[_app_id(d)]["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-port"]
            ), "the app channel, where /metrics is served in Dapr mode"
            # the NetworkPolicy admits the scrape on exactly that port
            rule, invocation = policies[_app_id(d)]["spec"]["ingress"]
            assert rule["ports"] == [{"protocol": "TCP", "port": endpoint["port"]}]
            assert invocation["ports"] != rule["ports"], "the orchestrator cannot reach /metrics"
            assert _parse_duration(endpoint["scrapeTimeout"]) < _parse_duration(endpoint["interval"])


def _parse_duration(text: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_otel_settings_per_overlay(kustomized: dict[str, list[Doc]]) -> None:
    (config,) = _by_kind(_repo_docs("components"), "Configuration").values()
    tracing = config["spec"]["tracing"]
    for overlay, docs in kustomized.items():
        data = _by_kind(docs, "ConfigMap")["fleet-settings"]["data"]
        # daprd exports gRPC; the workers OTLP/HTTP, the only protocol they accept.
        assert tracing["otel"]["protocol"] == "grpc"
        assert data["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        if overlay == "prod":  # a worker is built with what the overlay gives it (it refuses grpc)
            from shared.assemble import create_worker

            create_worker(
                "ai",
                Settings(
                    redis_url="redis://127.0.0.1:1",  # built, never started
                    otel_exporter_otlp_protocol=data["OTEL_EXPORTER_OTLP_PROTOCOL"],
                    otel_exporter_otlp_endpoint=data["OTEL_EXPORTER_OTLP_ENDPOINT"],
                ),
            )
        assert data["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert data["OTEL_TRACES_SAMPLER_ARG"] == tracing["samplingRate"]
        assert 0 < float(data["OTEL_TRACES_SAMPLER_ARG"]) <= 1
        attributes = dict(item.split("=", 1) for item in data["OTEL_RESOURCE_ATTRIBUTES"].split(","))
        assert attributes == {"service.namespace": "function-fleet", "deployment.environment": overlay}
        assert "OTEL_SERVICE_NAME" not in data, "per worker, in the Deployment"
        if overlay == "prod":
            endpoint = urlsplit(data["OTEL_EXPORTER_OTLP_ENDPOINT"])
            assert endpoint.scheme == "http"
            assert endpoint.hostname == tracing["otel"]["endpointAddress"].split(":")[0], "daprd's collector"
            assert endpoint.port == 4318, "its OTLP/HTTP port"
        else:
            assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in data, "dev: worker tracing off"
        for d in DOMAINS:
            (container,) = _pod(_by_kind(docs, "Deployment")[_app_id(d)])["containers"]
            env = {e["name"]: e for e in container["env"]}
            assert env["OTEL_SERVICE_NAME"] == {"name": "OTEL_SERVICE_NAME", "value": _app_id(d)}
            assert {"configMapRef": {"name": "fleet-settings"}} in container["envFrom"]


# --------------------------------------------------------------------------- GitOps
def test_kargo_pipeline_feeds_the_argocd_applications() -> None:
    apps = _by_kind(_load(REPO / "deploy/argocd/application.yaml"), "Application")
    (project,) = _load(REPO / "deploy/kargo/project.yaml")
    (warehouse,) = _load(REPO / "deploy/kargo/warehouse.yaml")
    stages = _by_kind(_load(REPO / "deploy/kargo/stages.yaml"), "Stage")
    namespace = project["metadata"]["name"]
    assert warehouse["metadata"]["namespace"] == namespace
    assert {s["metadata"]["namespace"] for s in stages.values()} == {namespace}
    assert set(stages) == set(OVERLAYS)
    assert set(apps) == {f"function-fleet-{o}" for o in OVERLAYS}
    prod_kustomization = _load(REPO / "deploy/overlays/prod/kustomization.yaml")[0]
    (prod_image,) = prod_kustomization["images"]
    # the Warehouse: the released image (semver) and the manifests' branch
    subscriptions = {kind: sub[kind] for sub in warehouse["spec"]["subscriptions"] for kind in sub}
    assert set(subscriptions) == {"image", "git"}
    image = subscriptions["image"]
    assert image["repoURL"] == prod_image["newName"]
    assert image["imageSelectionStrategy"] == "SemVer"
    assert image["strictSemvers"] is True
    assert Version(prod_image["newTag"]) in SpecifierSet(image["constraint"]), "today's release is admitted"
    assert Version("99.0.0") not in SpecifierSet(image["constraint"]), "a new major is a deliberate change"
    git = subscriptions["git"]
    assert {(REPO / path).is_dir() for path in git["includePaths"]} == {True}
    destinations = set()
    for upstream, overlay in zip((None, *OVERLAYS), OVERLAYS, strict=False):
        stage, app = stages[overlay], apps[f"function-fleet-{overlay}"]
        (requested,) = stage["spec"]["requestedFreight"]
        assert requested["origin"] == {"kind": "Warehouse", "name": warehouse["metadata"]["name"]}
        # promotion order: dev straight from the Warehouse, prod only what dev has had
        assert requested["sources"] == ({"direct": True} if upstream is None else {"stages": [upstream]})
        template = stage["spec"]["promotionTemplate"]["spec"]
        variables = {v["name"]: v["value"] for v in template["vars"]}
        assert variables == {"gitRepo": git["repoURL"], "imageRepo": image["repoURL"]}
        steps = {s["uses"]: s for s in template["steps"]}
        assert [s["uses"] for s in template["steps"]] == [
            "git-clone",
            "git-clear",
            "kustomize-set-image",
            "kustomize-build",
            "copy",
            "copy",
            "git-commit",
            "git-push",
            "argocd-update",
        ]
        checkout = {c["path"]: c for c in steps["git-clone"]["config"]["checkout"]}
        assert checkout["./src"] == {"commit": "${{ commitFrom(vars.gitRepo).ID }}", "path": "./src"}
        branch = checkout["./out"]["branch"]
        overlay_dir = f"./src/deploy/overlays/{overlay}"
        set_image = steps["kustomize-set-image"]["config"]
        assert set_image["path"] == steps["kustomize-build"]["config"]["path"] == overlay_dir
        assert (REPO / overlay_dir.removeprefix("./src/")).is_dir()
        overlay_images = _load(REPO / overlay_dir.removeprefix("./src/") / "kustomization.yaml")[0]["images"]
        (set_entry,) = set_image["images"]
        assert set_entry["image"] == overlay_images[0]["name"], "the name the overlay's images entry rewrites"
        assert set_entry["newName"] == "${{ vars.imageRepo }}"
        assert set_entry["tag"] == "${{ imageFrom(vars.imageRepo).Tag }}"
        copied = {s["config"]["inPath"] for s in template["steps"] if s["uses"] == "copy"}
        assert copied == {"./src/components", "./src/keda"}
        assert steps["git-push"]["config"] == {"path": "./out"}, "to the branch checked out in ./out"
        # the Application syncs what the Stage pushed, and lets only that Stage update it
        (target,) = steps["argocd-update"]["config"]["apps"]
        assert (target["name"], target["namespace"]) == (
            app["metadata"]["name"],
            app["metadata"]["namespace"],
        )
        assert target["sources"] == [
            {"repoURL": "${{ vars.gitRepo }}", "desiredRevision": "${{ outputs.commit.commit }}"}
        ]
        assert app["metadata"]["annotations"]["kargo.akuity.io/authorized-stage"] == f"{namespace}:{overlay}"
        source = app["spec"]["source"]
        assert (source["repoURL"], source["targetRevision"]) == (git["repoURL"], branch)
        assert branch != git["branch"], "Kargo never rewrites the generated files on the main branch"
        assert app["spec"]["destination"]["namespace"] == "fleet"
        destinations.add(app["spec"]["destination"]["server"])
    assert len(destinations) == len(OVERLAYS), "the overlays share namespaces: one cluster each"


# --------------------------------------------------------------------------- drift
def test_committed_tree_matches_a_fresh_render(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["manifests", "render", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rendered = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert rendered == set(serialize_all(render()))
    for rel in rendered:
        assert (tmp_path / rel).read_bytes() == (REPO / rel).read_bytes(), (
            f"{rel} is stale: run `fleet manifests render` and commit the result"
        )
        assert HEADER in (tmp_path / rel).read_text(encoding="utf-8").splitlines()[0]
    check = CliRunner().invoke(cli, ["manifests", "render", "--check", "--out", str(REPO)])
    assert check.exit_code == 0, check.output


def test_check_fails_on_a_modified_copy(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["manifests", "render", "--out", str(tmp_path)]).exit_code == 0
    assert (
        runner.invoke(
            cli, ["manifests", "render", "--check"], env={"FLEET_MANIFESTS_OUT": str(tmp_path)}
        ).exit_code
        == 0
    )
    target = tmp_path / "keda/scaledobject-ai.yaml"
    target.write_text(
        target.read_text(encoding="utf-8").replace("maxReplicaCount: 20", "maxReplicaCount: 21"),
        encoding="utf-8",
    )
    (tmp_path / "components/stray.yaml").write_text("kind: Nothing\n", encoding="utf-8")
    (tmp_path / "deploy/base/namespaces.yaml").unlink()
    result = runner.invoke(cli, ["manifests", "render", "--check", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "changed: keda/scaledobject-ai.yaml" in result.output
    assert "unexpected: components/stray.yaml" in result.output
    assert "missing: deploy/base/namespaces.yaml" in result.output
    # a render repairs generated files and leaves files it did not generate alone
    assert runner.invoke(cli, ["manifests", "render", "--out", str(tmp_path)]).exit_code == 0
    assert [str(d) for d in check_tree(tmp_path, render())] == ["unexpected: components/stray.yaml"]


def test_render_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = serialize_all(render())
    monkeypatch.setenv("FLEET_TOPIC_PREFIX", "elsewhere.")
    monkeypatch.setenv("FLEET_SHUTDOWN_TIMEOUT", "99")
    assert serialize_all(render()) == before


# --------------------------------------------------------------------------- Dockerfile
def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_lint() -> None:
    """Linted, not built: no container engine runs here (docker client only, no daemon)."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    instructions = _instructions(text)
    stages: list[list[tuple[str, str]]] = []
    names: set[str] = set()
    for word, rest in instructions:
        if word == "FROM":
            stages.append([])
            image, *alias = shlex.split(rest)
            assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*(@sha256:[0-9a-f]{64})?", image), (
                f"unpinned {image}"
            )
            assert not image.endswith(":latest")
            if alias:
                assert alias[0].upper() == "AS"
                names.add(alias[1])
        else:
            assert stages, f"{word} before FROM"
            stages[-1].append((word, rest))
        if word == "ADD":
            assert not re.search(r"https?://", rest), "ADD of a URL"
        if word == "COPY" and rest.startswith("--from="):
            assert rest.split()[0].removeprefix("--from=") in names
    assert len(stages) >= 2, "multi-stage build"
    final = stages[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage sets USER"
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "final USER must be numeric non-root"
    assert [w for w, _ in final].index("USER") > max(i for i, (w, _) in enumerate(final) if w == "RUN")
    healthcheck = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert healthcheck
    assert "/healthz" in healthcheck[0]
    assert str(DEFAULTS.app_port) in healthcheck[0]
    assert ("ENTRYPOINT", '["fleet"]') in final
    cmd = json.loads(next(rest for word, rest in final if word == "CMD"))
    assert cmd[0] == "worker"
    assert ("EXPOSE", str(DEFAULTS.app_port)) in final
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert {".git", ".venv", "tests"} <= set(ignored)


# --------------------------------------------------------------------------- fleet streams init
async def test_init_streams_creates_groups_at_zero(
    make_settings: Callable[..., Settings], redis: Any
) -> None:
    settings = make_settings()
    topic = settings.topic_for("ai")
    await redis.xadd(topic, {"data": b"{}"})  # published before any worker existed
    try:
        first = await init_streams(settings, ["ai", "http"])
        assert [row[3] for row in first] == ["created", "created"]
        assert first[0][1:3] == (topic, settings.group_for("ai"))
        again = await init_streams(settings, ["ai", "http"])
        assert [row[3] for row in again] == ["exists", "exists"]
        (group,) = await redis.xinfo_groups(topic)
        assert group["name"].decode() == settings.group_for("ai")
        assert group["last-delivered-id"] == b"0-0"
        assert group["lag"] == 1  # what KEDA's lag trigger reads: the early request counts
        assert await redis.exists(settings.topic_for("http"))
    finally:
        await redis.delete(topic, settings.topic_for("http"))


def test_streams_init_command(redis_url: str, namespace: str) -> None:
    env = {
        "FLEET_REDIS_URL": redis_url,
        "FLEET_TOPIC_PREFIX": f"{namespace}functions.",
        "FLEET_GROUP_PREFIX": f"{namespace}fleet-",
    }
    topic = f"{namespace}functions.oci"
    client = sync_redis.Redis.from_url(redis_url)
    try:
        result = CliRunner().invoke(cli, ["streams", "init", "--domain", "oci"], env=env)
        assert result.exit_code == 0, result.output
        assert topic in result.output
        assert "created" in result.output
        groups = client.xinfo_groups(topic)
        assert [g["name"].decode() for g in groups] == [f"{namespace}fleet-oci"]
    finally:
        client.delete(topic)
        client.close()
