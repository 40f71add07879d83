"""Every Dapr, Kubernetes, KEDA and container-build file of the fleet, as Python values.

:func:`render` turns the domain table (:data:`shared.domains.DOMAINS`), the *defaults* of
:class:`~shared.settings.Settings` (never the environment, so a render is the same on every
machine) and the cluster facts in :class:`~shared.tools.manifests.model.Platform` into
:class:`RenderedFile` objects; :mod:`shared.tools.manifests.files` serializes, writes and checks
them. Metrics and tracing pieces come from :mod:`.monitoring`, the Argo CD and Kargo objects from
:mod:`.gitops`. Names come from the same
functions the workers use, so they agree by construction:

* stream = topic = ``Settings.topic_for(domain)`` (Subscription ``topic``, KEDA ``stream``);
* consumer group = Dapr app id = ``Settings.group_for(domain)`` (Deployment ``dapr.io/app-id``,
  Subscription ``scopes``, KEDA ``consumerGroup``; the component's ``consumerID`` is left unset
  so daprd uses the app id, dapr-wire.md §1);
* dead-letter topic = ``Settings.dlq_for(topic)``; component name = ``Settings.pubsub_name``.

The tuning values below carry their reasons; docs/deploy.md repeats them for people.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from shared.domains import DOMAINS, EGRESS_POLICIES, Domain
from shared.errors import ConfigError
from shared.settings import Settings
from shared.tools.manifests import dashboard, gitops, monitoring
from shared.tools.manifests.model import (
    DAPR_INTERNAL_GRPC_PORT,
    HEADER,
    PART_OF,
    Document,
    Manifest,
    Platform,
    RenderedFile,
)
from shared.tools.manifests.model import labels as _labels
from shared.tools.manifests.model import meta as _meta
from shared.tools.manifests.model import ns_selector as _ns_selector
from shared.transports.dapr_http import BULK_MAX_AWAIT_MS, EVENTS_ROUTE

__all__ = [
    "APP_TOKEN_ENV",
    "CLUSTER_INTERNAL_V4",
    "CLUSTER_INTERNAL_V6",
    "COMPONENT_CONCURRENCY_FLOOR",
    "DAPR_GRACEFUL_SHUTDOWN_SECONDS",
    "EVENTS_ROUTE",
    "HEADER",
    "REDELIVER_INTERVAL_MS",
    "STREAM_MAXLEN",
    "Document",
    "Manifest",
    "Platform",
    "RenderedFile",
    "block_shutdown_seconds",
    "configmap_data",
    "default_settings",
    "processing_timeout_ms",
    "render",
    "scaled_object",
    "termination_grace_seconds",
]

#: Approximate length each stream is trimmed to on publish (``MAXLEN ~``, dapr-wire.md §1).
STREAM_MAXLEN = 100_000
#: daprd's reclaim pass period. Integer milliseconds only: "60s" would be silently ignored.
REDELIVER_INTERVAL_MS = 60_000
#: Seconds daprd's close phase may take after the block-shutdown phase (default is 5).
DAPR_GRACEFUL_SHUTDOWN_SECONDS = 10
#: Added to the drain timeout for the block-shutdown phase, and again for the pod's grace.
SHUTDOWN_MARGIN_SECONDS = 5
#: Lower bound of the component's delivery goroutines (daprd's default is 10).
COMPONENT_CONCURRENCY_FLOOR = 10
#: The environment variable daprd's token is read from by the app (dapr-wire.md §5).
APP_TOKEN_ENV = "APP_API_TOKEN"
API_TOKEN_ENV = "DAPR_API_TOKEN"

#: Ranges the ``internet*`` egress never reaches: RFC 1918, link-local (cloud metadata),
#: carrier-grade NAT (often pod/service ranges) and loopback.
CLUSTER_INTERNAL_V4 = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
)
#: IPv6 counterparts: unique-local, link-local, loopback and IPv4-mapped addresses.
CLUSTER_INTERNAL_V6 = ("fc00::/7", "fe80::/10", "::1/128", "::ffff:0:0/96")

UID = 10001


def default_settings() -> Settings:
    """The settings defaults, ignoring every ``FLEET_*`` variable of this environment."""
    return Settings.model_construct()


def processing_timeout_ms(settings: Settings) -> int:
    """daprd's ``processingTimeout``: a delivery un-acked this long is delivered *again,
    concurrently* (dapr-wire.md §1), so it must outlast a sidecar-buffered wait plus an
    execution at the default timeout plus the inbound retries: 2 x timeout + 5 minutes."""
    return int((2 * settings.default_timeout_seconds + 300) * 1000)


def block_shutdown_seconds(settings: Settings) -> int:
    """``dapr.io/block-shutdown-duration``: daprd stops deliveries at SIGTERM but keeps its
    publish API up this long (or until the app turns unhealthy) so draining work can still
    publish its results: the worker's drain timeout plus a margin."""
    return math.ceil(settings.shutdown_timeout) + SHUTDOWN_MARGIN_SECONDS


def termination_grace_seconds(settings: Settings) -> int:
    """``terminationGracePeriodSeconds``: longer than daprd's block phase (which covers the
    app's drain, FLEET_SHUTDOWN_TIMEOUT) plus its graceful close phase, plus a margin."""
    return block_shutdown_seconds(settings) + DAPR_GRACEFUL_SHUTDOWN_SECONDS + SHUTDOWN_MARGIN_SECONDS


def _component_concurrency(domains: Sequence[Domain]) -> int:
    return max(COMPONENT_CONCURRENCY_FLOOR, *(d.concurrency for d in domains))


def _queue_depth(domains: Sequence[Domain]) -> int:
    return max(COMPONENT_CONCURRENCY_FLOOR, min(d.concurrency for d in domains))


def _image_tag() -> str:
    return importlib.metadata.version("function-fleet")


# --------------------------------------------------------------------------- helpers


def _container_security() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _tmp_volume() -> tuple[Manifest, Manifest]:
    return (
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "tmp", "mountPath": "/tmp"},
    )


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> Manifest:
    ref: Manifest = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- components/
def _pubsub(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile:
    scopes = ";".join(f"{settings.group_for(d.name)}={settings.topic_for(d.name)}" for d in domains)
    body: Manifest = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": _meta(settings.pubsub_name, p.namespace, _labels("pubsub")),
        "spec": {
            "type": "pubsub.redis",
            "version": "v1",
            "metadata": [
                {"name": "redisHost", "secretKeyRef": {"name": p.redis_secret, "key": "host"}},
                {"name": "redisPassword", "secretKeyRef": {"name": p.redis_secret, "key": "password"}},
                {"name": "enableTLS", "value": _env_value(p.redis_tls)},
                {"name": "processingTimeout", "value": str(processing_timeout_ms(settings))},
                {"name": "redeliverInterval", "value": str(REDELIVER_INTERVAL_MS)},
                {"name": "maxLenApprox", "value": str(STREAM_MAXLEN)},
                {"name": "concurrency", "value": str(_component_concurrency(domains))},
                {"name": "queueDepth", "value": str(_queue_depth(domains))},
                {"name": "subscriptionScopes", "value": scopes},
            ],
        },
        "auth": {"secretStore": "kubernetes"},
    }
    in_flight = max(d.max_replicas * d.concurrency for d in domains)
    notes = (
        (
            "- name: redisHost",
            "redisHost/redisPassword come from the Secret "
            f"'{p.redis_secret}' (keys host = host:port, password), resolved by the Dapr operator "
            "through the built-in 'kubernetes' store. consumerID is deliberately absent: daprd "
            "then uses the app id, which is the consumer group KEDA watches (Settings.group_for).",
        ),
        (
            "- name: processingTimeout",
            "Milliseconds (an integer is read as ms). A delivery un-acked for this long is "
            "delivered AGAIN, concurrently, so it must outlast a buffered wait + an execution at "
            f"FLEET_DEFAULT_TIMEOUT_SECONDS ({_env_value(settings.default_timeout_seconds)}s) + "
            "the inbound retries: 2 x timeout + 5 min. Cost: work stranded by a killed pod is "
            "re-run only this long after.",
        ),
        (
            "- name: redeliverInterval",
            "How often daprd looks for such deliveries. INTEGER MILLISECONDS ONLY: a Go duration "
            "like '60s' is silently ignored (dapr-wire.md section 0).",
        ),
        (
            "- name: maxLenApprox",
            "Every XADD trims the stream to about this many entries (MAXLEN ~). Tradeoff: "
            "trimming does not look at acks, so a backlog longer than this loses its oldest "
            "UNANSWERED requests (and Redis 7 then reports the group's lag as NULL, which KEDA "
            f"reads as 0). Sized generously: ~{STREAM_MAXLEN // max(in_flight, 1)}x the largest "
            f"in-flight capacity of a domain ({in_flight} = max replicas x concurrency) and >= "
            f"FLEET_RESULTS_MAXLEN; the price is memory, since acked entries stay until trimmed "
            "(about N x entry size per stream, results and dead-letter streams included).",
        ),
        (
            "- name: concurrency",
            "Delivery goroutines per sidecar: the largest domain concurrency, so the component "
            "never caps a domain below its declared concurrency (dapr.io/app-max-concurrency "
            "and FLEET_CONCURRENCY limit each domain). queueDepth = the smallest domain "
            "concurrency: little prefetch, so few entries wait in a sidecar buffer (that wait "
            "counts toward processingTimeout) or are stranded there on scale-in.",
        ),
        (
            "- name: subscriptionScopes",
            "Each app id may subscribe to its own request topic only (defence in depth; the "
            "Subscriptions are scoped the same way).",
        ),
    )
    return RenderedFile(
        PurePosixPath("components/pubsub.yaml"),
        (
            Document(
                body,
                comment=("Redis Streams pub/sub shared by every domain worker (and publishers).",),
                notes=notes,
            ),
        ),
    )


def _secret_store(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile | None:
    api_apps = [settings.group_for(d.name) for d in domains if d.needs_kubernetes_api]
    if not api_apps:  # empty scopes would mean "every app"
        return None
    body: Manifest = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": _meta(p.secret_store, p.namespace, _labels("secretstore")),
        "spec": {
            "type": "secretstores.kubernetes",
            "version": "v1",
            "metadata": [{"name": "defaultNamespace", "value": settings.oci_namespace}],
        },
        "scopes": api_apps,
    }
    comment = (
        "Kubernetes secret store over the functions namespace, for the workers that hold a",
        "service-account token and the Role there (egress kubernetes-api). daprd reads it with the",
        "pod's own token, so a sidecar without one would fail to load it: hence the scopes.",
        "Provider credentials reach the other workers as FLEET_SECRET_* variables (docs/deploy.md).",
    )
    return RenderedFile(PurePosixPath("components/secretstore.yaml"), (Document(body, comment),))


def _subscription(settings: Settings, domain: Domain, p: Platform) -> RenderedFile:
    topic, app_id = settings.topic_for(domain.name), settings.group_for(domain.name)
    body: Manifest = {
        "apiVersion": "dapr.io/v2alpha1",
        "kind": "Subscription",
        "metadata": _meta(app_id, p.namespace, _labels("subscription", app_id)),
        "spec": {
            "pubsubname": settings.pubsub_name,
            "topic": topic,
            "routes": {"default": EVENTS_ROUTE},
            "deadLetterTopic": settings.dlq_for(topic),
            "bulkSubscribe": {
                "enabled": settings.dapr_bulk_subscribe,
                "maxMessagesCount": settings.batch_size,
                "maxAwaitDurationMs": BULK_MAX_AWAIT_MS,
            },
        },
        "scopes": [app_id],
    }
    comment = (
        f"Domain {domain.name!r}: requests on {topic!r} go to {app_id}'s POST {EVENTS_ROUTE}.",
        "The workers answer GET /dapr/subscribe with [] (FLEET_DAPR_SUBSCRIPTIONS=declarative):",
        "this resource is the one subscription. After the inbound retries of the Resiliency give up, daprd",
        "copies the request to the dead-letter topic and acks it.",
    )
    return RenderedFile(
        PurePosixPath(f"components/subscription-{domain.name}.yaml"), (Document(body, comment),)
    )


def _resiliency(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile:
    body: Manifest = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Resiliency",
        "metadata": _meta(p.resiliency, p.namespace, _labels("resiliency")),
        "spec": {
            "policies": {
                "retries": {
                    "deliveryRetry": {
                        "policy": "constant",
                        "duration": "10s",
                        "maxRetries": settings.max_deliveries,
                    },
                    "publishRetry": {"policy": "exponential", "maxInterval": "10s", "maxRetries": 5},
                },
            },
            "targets": {
                "components": {
                    settings.pubsub_name: {
                        "inbound": {"retry": "deliveryRetry"},
                        "outbound": {"retry": "publishRetry"},
                    }
                }
            },
        },
        "scopes": [settings.group_for(d.name) for d in domains],
    }
    notes = (
        (
            "inbound:",
            "REQUIRED since daprd 1.17: without an inbound retry a RETRY answer is acked and lost "
            "(dapr-wire.md section 0). maxRetries = FLEET_MAX_DELIVERIES, so the worker, which "
            "counts its RETRY answers, always decides the last delivery itself. No inbound "
            "timeout on purpose: it would cancel long executions and cause duplicates; the "
            "worker enforces execution timeouts.",
        ),
        (
            "deliveryRetry:",
            "constant 10s: the worker asks for RETRY when something outside is briefly "
            "unavailable (rate limits, a provider hiccup); retrying at once would not help.",
        ),
    )
    comment = ("Retries of deliveries (inbound) and of result publishes (outbound) on the pub/sub.",)
    return RenderedFile(PurePosixPath("components/resiliency.yaml"), (Document(body, comment, notes),))


def _configuration(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile:
    body: Manifest = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": _meta(p.dapr_config, p.namespace, _labels("dapr-config")),
        "spec": {
            "tracing": {
                "samplingRate": p.trace_sampling_rate,
                "otel": {"endpointAddress": p.trace_endpoint, "isSecure": False, "protocol": "grpc"},
            },
            "metrics": {"enabled": True},
            "secrets": {
                "scopes": [
                    {"storeName": "kubernetes", "defaultAccess": "deny"},
                    {"storeName": p.secret_store, "defaultAccess": "allow"},
                ]
            },
        },
    }
    notes = (
        (
            "tracing:",
            "daprd continues the traceparent of each request event; the worker copies it onto "
            f"the result. {p.trace_sampling_rate} of deliveries are exported over OTLP/gRPC.",
        ),
        (
            "secrets:",
            "The app-facing secrets API: the built-in 'kubernetes' store (whole namespace) is "
            "closed; component secretKeyRefs are resolved by the operator and are unaffected.",
        ),
    )
    return RenderedFile(
        PurePosixPath("components/configuration.yaml"),
        (Document(body, ("Sidecar configuration of every worker (dapr.io/config).",), notes),),
    )


# --------------------------------------------------------------------------- keda/
def _trigger_auth(p: Platform) -> RenderedFile:
    body: Manifest = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": _meta(p.trigger_auth, p.namespace, _labels("autoscaling")),
        "spec": {
            "secretTargetRef": [
                {"parameter": "address", "name": p.redis_secret, "key": "host"},
                {"parameter": "password", "name": p.redis_secret, "key": "password"},
            ]
        },
    }
    comment = (
        "Redis address (host:port) and password for the redis-streams scaler, from the Secret",
        f"{p.redis_secret!r} the Dapr component reads too, so both watch the same broker.",
    )
    return RenderedFile(PurePosixPath("keda/triggerauthentication.yaml"), (Document(body, comment),))


def scaled_object(settings: Settings, domain: Domain, p: Platform) -> Manifest:
    """The body of ``domain``'s KEDA ScaledObject, as ``keda/scaledobject-<domain>.yaml`` holds
    it. The scaling spec (:mod:`shared.tools.scaling.spec`) reads its values from here, so the
    simulator and the local autoscaler follow what the cluster runs."""
    topic, app_id = settings.topic_for(domain.name), settings.group_for(domain.name)
    auth = {"name": p.trigger_auth, "kind": "TriggerAuthentication"}
    common = {"stream": topic, "consumerGroup": app_id, "enableTLS": _env_value(p.redis_tls)}
    body: Manifest = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(app_id, p.namespace, _labels("autoscaling", app_id)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app_id},
            "minReplicaCount": domain.min_replicas,
            "maxReplicaCount": domain.max_replicas,
            "pollingInterval": domain.polling_interval,
            "cooldownPeriod": domain.cooldown_period,
            "triggers": [
                {
                    "type": "redis-streams",
                    "name": "backlog",
                    "metadata": {
                        **common,
                        "lagCount": str(domain.lag_target),
                        "activationLagCount": "0",
                    },
                    "authenticationRef": auth,
                },
                {
                    "type": "redis-streams",
                    "name": "in-flight",
                    "metadata": {
                        **common,
                        "pendingEntriesCount": str(domain.concurrency),
                        "activationLagCount": "0",
                    },
                    "authenticationRef": auth,
                },
            ],
        },
    }
    return body


def _scaled_object(settings: Settings, domain: Domain, p: Platform) -> RenderedFile:
    topic, app_id = settings.topic_for(domain.name), settings.group_for(domain.name)
    body = scaled_object(settings, domain, p)
    notes = (
        (
            "cooldownPeriod:",
            f"{domain.cooldown_period}s with neither backlog nor in-flight work before N -> 0. "
            "KEDA's step to zero stops every pod at once, bypassing the HPA, and a cold start "
            "(image, daprd, worker) costs tens of seconds; workflows send their steps seconds to "
            "minutes apart, so keep replicas warm about as long as the HPA's own 300s "
            "scale-down window. In-flight work is protected by the in-flight trigger, not by this.",
        ),
        (
            "pollingInterval:",
            f"{domain.polling_interval}s between KEDA's checks: bounds the scale-from-zero delay "
            "(half KEDA's 30s default) and equals the HPA's 15s sync, so faster polls would not "
            "help scaling 1..N. Cost per poll: INFO + XINFO GROUPS + XPENDING, negligible.",
        ),
        (
            "triggers:",
            "backlog: lag mode (lagCount set) needs Redis >= 7 (XINFO GROUPS lag) and KEDA >= 2.17 "
            "for activationLagCount 0 (one queued request wakes the domain). The group must exist "
            "(fleet streams init), else KEDA counts XLEN of the whole stream. in-flight: pending "
            "mode counts the group's PEL, i.e. deliveries daprd has read but not acked, including "
            "its prefetch, which lag no longer sees: it keeps a replica alive while work is in "
            "flight. The HPA follows the larger of the two.",
        ),
    )
    comment = (
        f"Domain {domain.name!r}: {domain.min_replicas}..{domain.max_replicas} replicas of {app_id},",
        f"stream {topic!r}, consumer group {app_id!r} (= Dapr app id).",
    )
    return RenderedFile(
        PurePosixPath(f"keda/scaledobject-{domain.name}.yaml"), (Document(body, comment, notes),)
    )


# --------------------------------------------------------------------------- deploy/base
def _namespaces(settings: Settings, p: Platform) -> RenderedFile:
    fleet: Manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta(
            p.namespace,
            None,
            {
                **_labels("namespace"),
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        ),
    }
    functions: Manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta(
            settings.oci_namespace,
            None,
            {**_labels("namespace"), "pod-security.kubernetes.io/enforce": "baseline"},
        ),
    }
    comment = (
        "Workers comply with 'restricted'; it is only warned about because the injected daprd",
        "container's compliance depends on the Dapr version.",
    )
    return RenderedFile(
        PurePosixPath("deploy/base/namespaces.yaml"),
        (Document(fleet, comment), Document(functions, ("Where the oci worker runs functions as Jobs.",))),
    )


def configmap_data(settings: Settings, p: Platform) -> dict[str, str]:
    """The ``FLEET_*`` settings every worker pod gets (names as :class:`Settings` reads them)."""
    values: dict[str, object] = {
        "pubsub_name": settings.pubsub_name,
        "topic_prefix": settings.topic_prefix,
        "results_topic": settings.results_topic,
        "dlq_suffix": settings.dlq_suffix,
        "group_prefix": settings.group_prefix,
        "max_deliveries": settings.max_deliveries,
        "max_payload_bytes": settings.max_payload_bytes,
        "default_timeout_seconds": settings.default_timeout_seconds,
        "shutdown_timeout": settings.shutdown_timeout,
        "batch_size": settings.batch_size,
        "dapr_bulk_subscribe": settings.dapr_bulk_subscribe,
        # The Subscription resources below declare the subscription; the app must not repeat it.
        "dapr_subscriptions": "declarative",
        "dapr_ready_timeout": settings.dapr_ready_timeout,
        "dapr_secrets": "off",
        "dapr_secret_store": p.secret_store,
        "oci_namespace": settings.oci_namespace,
        "app_host": "0.0.0.0",
        "app_port": settings.app_port,
        "home": "/tmp/fleet",
        "log_level": "info",
        "log_format": "json",
    }
    return {f"FLEET_{k.upper()}": _env_value(v) for k, v in values.items()}


def _configmap(settings: Settings, p: Platform) -> RenderedFile:
    body: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(p.settings_configmap, p.namespace, _labels("settings")),
        "data": {**configmap_data(settings, p), **monitoring.otel_config(p)},
    }
    notes = (
        (
            "FLEET_APP_HOST:",
            "The app channel listens on all interfaces so the kubelet's probes reach /healthz; "
            "the NetworkPolicy admits only Prometheus (port http, for /metrics) and daprd's "
            "deliveries carry APP_API_TOKEN.",
        ),
        (
            "FLEET_DAPR_SECRETS:",
            "Provider credentials come from FLEET_SECRET_* variables (the providers Secret, "
            "envFrom): Kubernetes Secret names cannot spell keys like OPENAI_API_KEY, and "
            "sidecars without a service-account token cannot read the Kubernetes API.",
        ),
        (
            "FLEET_HOME:",
            "The root filesystem is read-only; /tmp is an emptyDir.",
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL:",
            "OpenTelemetry SDK settings. No OTEL_EXPORTER_OTLP_ENDPOINT here: the prod overlay "
            "sets the collector, dev leaves it unset (worker tracing off). OTEL_SERVICE_NAME is "
            "the app id, set in each Deployment.",
        ),
        (
            "OTEL_TRACES_SAMPLER:",
            "Follow daprd's decision (the traceparent of each delivery); root spans are sampled "
            f"at {p.trace_sampling_rate}, the rate the Dapr Configuration uses.",
        ),
    )
    comment = (
        "Worker settings shared by every domain (fleet config --markdown explains each), and the",
        "standard OpenTelemetry variables (envFrom takes every key).",
    )
    return RenderedFile(PurePosixPath("deploy/base/configmap.yaml"), (Document(body, comment, notes),))


def _service_accounts(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile:
    docs = []
    for d in domains:
        app_id = settings.group_for(d.name)
        body: Manifest = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(app_id, p.namespace, _labels("worker", app_id)),
            "automountServiceAccountToken": d.needs_kubernetes_api,
        }
        why = (
            "needs the Kubernetes API (Jobs in the functions namespace)"
            if d.needs_kubernetes_api
            else "no Kubernetes API access: no token is mounted"
        )
        docs.append(Document(body, (f"{app_id}: {why}.",)))
    init: Manifest = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(p.streams_init, p.namespace, _labels("streams-init", p.streams_init)),
        "automountServiceAccountToken": False,
    }
    docs.append(Document(init))
    return RenderedFile(PurePosixPath("deploy/base/serviceaccounts.yaml"), tuple(docs))


def _rbac(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile | None:
    docs = []
    for d in domains:
        if not d.needs_kubernetes_api:
            continue
        app_id = settings.group_for(d.name)
        role: Manifest = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(app_id, settings.oci_namespace, _labels("worker", app_id)),
            "rules": [
                {
                    "apiGroups": ["batch"],
                    "resources": ["jobs"],
                    "verbs": ["create", "get", "list", "watch", "patch", "delete"],
                },
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "delete"]},
            ],
        }
        binding: Manifest = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(app_id, settings.oci_namespace, _labels("worker", app_id)),
            "subjects": [{"kind": "ServiceAccount", "name": app_id, "namespace": p.namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": app_id},
        }
        docs.append(
            Document(
                role,
                (
                    f"{app_id} runs functions as Jobs in {settings.oci_namespace!r}: it creates and",
                    "watches Jobs, reads their pods and logs, and keeps per-run Secrets. Nothing else.",
                ),
            )
        )
        docs.append(Document(binding))
    if not docs:
        return None
    return RenderedFile(PurePosixPath("deploy/base/rbac.yaml"), tuple(docs))


def _deployment(settings: Settings, domain: Domain, p: Platform) -> RenderedFile:
    app_id = settings.group_for(domain.name)
    labels = _labels("worker", app_id)
    selector = {"app.kubernetes.io/name": app_id, "app.kubernetes.io/component": "worker"}
    volume, mount = _tmp_volume()
    probe_get = {"path": "/healthz", "port": "http"}
    annotations = {
        "dapr.io/enabled": "true",
        "dapr.io/app-id": app_id,
        "dapr.io/app-port": str(settings.app_port),
        "dapr.io/app-protocol": "http",
        "dapr.io/api-token-secret": p.api_token_secret,
        "dapr.io/app-token-secret": p.app_token_secret,
        "dapr.io/app-max-concurrency": str(domain.concurrency),
        "dapr.io/graceful-shutdown-seconds": str(DAPR_GRACEFUL_SHUTDOWN_SECONDS),
        "dapr.io/block-shutdown-duration": f"{block_shutdown_seconds(settings)}s",
        "dapr.io/config": p.dapr_config,
        "dapr.io/enable-app-health-check": "true",
        "dapr.io/app-health-check-path": "/healthz",
        "dapr.io/log-as-json": "true",
        "dapr.io/disable-builtin-k8s-secret-store": "true",
        "dapr.io/sidecar-seccomp-profile-type": "RuntimeDefault",
        **{f"dapr.io/sidecar-{k}": v for k, v in p.sidecar_resources},
    }
    r = domain.resources
    container: Manifest = {
        "name": "worker",
        "image": p.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["worker", domain.name, "--transport", "dapr"],
        "ports": [{"name": "http", "containerPort": settings.app_port, "protocol": "TCP"}],
        "envFrom": [
            {"configMapRef": {"name": p.settings_configmap}},
            {"secretRef": {"name": p.providers_secret, "optional": True}, "prefix": "FLEET_SECRET_"},
        ],
        "env": [
            {"name": "FLEET_CONCURRENCY", "value": str(domain.concurrency)},
            *({"name": k, "value": v} for k, v in domain.worker_env),
            {"name": "FLEET_CONSUMER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "OTEL_SERVICE_NAME", "value": app_id},
            _secret_env(APP_TOKEN_ENV, p.app_token_secret, "token"),
            _secret_env(API_TOKEN_ENV, p.api_token_secret, "token"),
            _secret_env("FLEET_DATABASE_URL", p.database_secret, "url", optional=True),
            _secret_env("FLEET_REDIS_URL", p.redis_secret, "url", optional=True),
        ],
        "resources": {
            "requests": {"cpu": r.cpu_request, "memory": r.memory_request},
            "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit},
        },
        "startupProbe": {
            "httpGet": probe_get,
            "periodSeconds": 2,
            "failureThreshold": math.ceil(settings.dapr_ready_timeout / 2) + 5,
        },
        "readinessProbe": {"httpGet": probe_get, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": probe_get,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": _container_security(),
        "volumeMounts": [mount],
    }
    body: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(app_id, p.namespace, labels),
        "spec": {
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "serviceAccountName": app_id,
                    "automountServiceAccountToken": domain.needs_kubernetes_api,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": termination_grace_seconds(settings),
                    "securityContext": _pod_security(),
                    "containers": [container],
                    "volumes": [volume],
                },
            },
        },
    }
    notes = (
        (
            "spec:",
            "No 'replicas': KEDA owns the scale (0..N); applying a count would fight it.",
        ),
        (
            "dapr.io/block-shutdown-duration:",
            "At SIGTERM daprd stops deliveries but keeps its publish API for this long (or until "
            "/healthz fails) while the worker drains (FLEET_SHUTDOWN_TIMEOUT), then closes within "
            "graceful-shutdown-seconds; terminationGracePeriodSeconds covers both plus a margin.",
        ),
        (
            "dapr.io/disable-builtin-k8s-secret-store:",
            "daprd auto-loads a Kubernetes secret store that needs the pod's service-account token "
            "and crashes without one; nothing here uses it (the operator resolves the component's "
            "secretKeyRefs; the oci worker has its own scoped store).",
        ),
        (
            "- name: APP_API_TOKEN",
            "The injector sets APP_API_TOKEN / DAPR_API_TOKEN on daprd only (dapr-wire.md section "
            "5): the worker needs them too, to check daprd's deliveries and to call daprd.",
        ),
        (
            "- name: FLEET_DATABASE_URL",
            f"The registry and execution history (docs/registry.md): create the Secret "
            f"{p.database_secret!r} (key url) to turn them on; without it the worker serves its "
            "built-ins without history. With FLEET_REDIS_URL too, execution claims live in Redis "
            "and the history is written behind.",
        ),
        (
            "- prefix: FLEET_SECRET_",
            "Provider credentials: key K of the providers Secret becomes FLEET_SECRET_K.",
        ),
    )
    comment = (
        f"Domain {domain.name!r} ({domain.description}): `fleet worker {domain.name} --transport dapr`",
        f"behind a Dapr sidecar, app id {app_id}, {domain.concurrency} executions per replica.",
    )
    return RenderedFile(
        PurePosixPath(f"deploy/base/deployment-{domain.name}.yaml"), (Document(body, comment, notes),)
    )


def _egress_rules(domain: Domain | None, p: Platform) -> list[Manifest]:
    dns = {
        "to": [
            {
                "namespaceSelector": _ns_selector(p.dns_namespace),
                "podSelector": {"matchLabels": dict(p.dns_selector)},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    redis = {
        "to": [{"namespaceSelector": _ns_selector(p.redis_namespace)}],
        "ports": [{"protocol": "TCP", "port": p.redis_port}],
    }
    if domain is None:
        return [dns, redis]
    rules: list[Manifest] = [
        dns,
        redis,
        {
            "to": [{"namespaceSelector": _ns_selector(p.database_namespace)}],
            "ports": [{"protocol": "TCP", "port": p.database_port}],
        },
        {"to": [{"namespaceSelector": _ns_selector(p.dapr_namespace)}]},
        {
            "to": [{"namespaceSelector": _ns_selector(p.trace_namespace)}],
            # gRPC from daprd, OTLP/HTTP from the worker.
            "ports": [{"protocol": "TCP", "port": port} for port in (p.trace_port, p.trace_http_port)],
        },
        # A synchronous call for another domain's function, forwarded to that domain's daprd.
        {"to": [_FLEET_WORKERS], "ports": [{"protocol": "TCP", "port": DAPR_INTERNAL_GRPC_PORT}]},
    ]
    public = [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(CLUSTER_INTERNAL_V4)}},
        {"ipBlock": {"cidr": "::/0", "except": list(CLUSTER_INTERNAL_V6)}},
    ]
    if domain.egress == "internet":
        rules.append(
            {"to": public, "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 80}]}
        )
    elif domain.egress == "internet-only":
        rules.append({"to": public})
    elif domain.egress == "kubernetes-api":
        rules.append(
            {
                "to": [{"ipBlock": {"cidr": p.kubernetes_api_cidr}}],
                "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
            }
        )
    else:  # pragma: no cover - Domain.__post_init__ rejects unknown values
        raise ConfigError(f"unknown egress {domain.egress!r}; known: {', '.join(EGRESS_POLICIES)}")
    return rules


#: The fleet's worker pods (same namespace): a worker forwards a call for another domain's
#: function to that domain's daprd (shared/runtime/sync.py).
_FLEET_WORKERS: Manifest = {
    "podSelector": {
        "matchLabels": {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": "worker"}
    }
}


def _invocation_ingress(p: Platform) -> Manifest:
    """The orchestrator's daprd to the worker's daprd (service invocation of ``/execute``), and
    the other workers' (a call forwarded to the domain of its function): nothing else in the
    cluster may call a worker synchronously."""
    return {
        "from": [
            {
                "namespaceSelector": _ns_selector(p.orchestrator_namespace),
                "podSelector": {"matchLabels": dict(p.orchestrator_selector)},
            },
            _FLEET_WORKERS,
        ],
        "ports": [{"protocol": "TCP", "port": DAPR_INTERNAL_GRPC_PORT}],
    }


def _network_policies(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile:
    deny: Manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("default-deny", p.namespace, _labels("network-policy")),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    docs = [
        Document(
            deny,
            (
                "Nothing in the namespace talks to or from anything unless a policy below allows",
                "it. Same-pod traffic (worker <-> daprd on localhost) and the kubelet's probes are",
                "not subject to NetworkPolicy.",
            ),
        )
    ]
    for d in domains:
        app_id = settings.group_for(d.name)
        body: Manifest = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(app_id, p.namespace, _labels("network-policy", app_id)),
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": app_id}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [monitoring.scrape_ingress(p), _invocation_ingress(p)],
                "egress": _egress_rules(d, p),
            },
        }
        comment = [
            f"{app_id}: ingress only from Prometheus ({p.prometheus_namespace}) to port "
            f"{monitoring.METRICS_PORT} (/metrics) and from the orchestrator ({p.orchestrator_namespace}) "
            f"to daprd's port {DAPR_INTERNAL_GRPC_PORT} (service invocation of POST /execute); "
            "egress to DNS, Redis, PostgreSQL (the registry), "
            f"the Dapr control plane, the trace collector, and {d.egress}: {EGRESS_POLICIES[d.egress]}.",
        ]
        if d.egress == "internet-only":
            comment.append("Cluster-internal ranges are excluded as a second line behind the SSRF guard.")
        docs.append(Document(body, tuple(comment)))
    init: Manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(p.streams_init, p.namespace, _labels("network-policy", p.streams_init)),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": p.streams_init}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": _egress_rules(None, p),
        },
    }
    docs.append(Document(init, ("The streams-init Job: DNS and Redis only.",)))
    return RenderedFile(PurePosixPath("deploy/base/networkpolicies.yaml"), tuple(docs))


def _streams_init_job(settings: Settings, domains: Sequence[Domain], p: Platform) -> RenderedFile:
    labels = _labels("streams-init", p.streams_init)
    volume, mount = _tmp_volume()
    body: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(
            p.streams_init,
            p.namespace,
            labels,
            annotations={
                "argocd.argoproj.io/hook": "Sync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        ),
        "spec": {
            "backoffLimit": 6,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 300,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": p.streams_init,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "restartPolicy": "OnFailure",
                    "securityContext": _pod_security(),
                    "containers": [
                        {
                            "name": "streams-init",
                            "image": p.image,
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["streams", "init"],
                            "envFrom": [{"configMapRef": {"name": p.settings_configmap}}],
                            "env": [_secret_env("FLEET_REDIS_URL", p.redis_secret, "url")],
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "64Mi"},
                                "limits": {"cpu": "200m", "memory": "128Mi"},
                            },
                            "securityContext": _container_security(),
                            "volumeMounts": [mount],
                        }
                    ],
                    "volumes": [volume],
                },
            },
        },
    }
    groups = ", ".join(f"{settings.topic_for(d.name)}/{settings.group_for(d.name)}" for d in domains)
    comment = (
        "Creates every request stream and its consumer group at ID 0 (XGROUP CREATE ... 0",
        "MKSTREAM; existing groups are left alone) before any worker ran, so KEDA's lag and",
        "pending triggers work from zero replicas (dapr-wire.md section 9). Idempotent: an Argo CD",
        "sync hook; with kubectl it runs on every apply after its TTL. Groups: " + groups + ".",
    )
    return RenderedFile(PurePosixPath("deploy/base/streams-init-job.yaml"), (Document(body, comment),))


def _kustomization(resources: Sequence[str], **extra: Any) -> Manifest:
    body: Manifest = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(resources),
    }
    body.update(extra)
    return body


def _base(settings: Settings, domains: Sequence[Domain], p: Platform) -> list[RenderedFile]:
    files: list[RenderedFile | None] = [
        _namespaces(settings, p),
        _configmap(settings, p),
        _service_accounts(settings, domains, p),
        _rbac(settings, domains, p),
        *(_deployment(settings, d, p) for d in domains),
        _network_policies(settings, domains, p),
        monitoring.pod_monitors(settings, domains, p),
        dashboard.dashboard_configmap(settings, p),
        _streams_init_job(settings, domains, p),
    ]
    present = [f for f in files if f is not None]
    resources = [f.path.name for f in present]
    kustomization = RenderedFile(
        PurePosixPath("deploy/base/kustomization.yaml"),
        (
            Document(
                _kustomization(resources),
                (
                    "Everything a worker needs except Secrets (overlays add them) and the Dapr",
                    "components / KEDA objects (components/, keda/). Namespaces are explicit in",
                    "every object: the oci Role lives in the functions namespace.",
                ),
            ),
        ),
    )
    return [*present, kustomization]


def _dev(settings: Settings, domains: Sequence[Domain], p: Platform) -> list[RenderedFile]:
    redis_host = f"redis-master.{p.redis_namespace}.svc.cluster.local:{p.redis_port}"
    password = "dev-only-redis-password"

    def secret(name: str, data: dict[str, str]) -> Manifest:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(name, p.namespace, _labels("secret")),
            "type": "Opaque",
            "stringData": data,
        }

    scheme = "rediss" if p.redis_tls else "redis"
    secrets = RenderedFile(
        PurePosixPath("deploy/overlays/dev/secrets.yaml"),
        (
            Document(
                secret(p.providers_secret, {"EXAMPLE_API_KEY": "replace-me"}),
                (
                    "DEV ONLY - plain Secrets with placeholder values; prod gets them from",
                    "ExternalSecrets. Provider credentials: each key K (a credential name such as",
                    "OPENAI_API_KEY) reaches the workers as FLEET_SECRET_K.",
                ),
            ),
            Document(
                secret(
                    p.redis_secret,
                    {
                        "host": redis_host,
                        "password": password,
                        "url": f"{scheme}://:{password}@{redis_host}/0",
                    },
                ),
                ("Redis: host (host:port) for Dapr and KEDA, password, url for `fleet streams init`.",),
            ),
            Document(
                secret(p.api_token_secret, {"token": "dev-only-dapr-api-token"}),
                ("dapr.io/api-token-secret: the token the worker sends to daprd.",),
            ),
            Document(
                secret(p.app_token_secret, {"token": "dev-only-dapr-app-token"}),
                ("dapr.io/app-token-secret: the token daprd sends to the worker.",),
            ),
        ),
    )
    patch = RenderedFile(
        PurePosixPath("deploy/overlays/dev/settings-patch.yaml"),
        (
            Document(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": p.settings_configmap, "namespace": p.namespace},
                    "data": {"FLEET_LOG_LEVEL": "debug", **monitoring.otel_overlay(p, "dev")},
                },
                ("Dev: debug logs; no OTEL_EXPORTER_OTLP_ENDPOINT, so the workers export no traces.",),
            ),
        ),
    )
    kustomization = RenderedFile(
        PurePosixPath("deploy/overlays/dev/kustomization.yaml"),
        (
            Document(
                _kustomization(
                    ["../../base", secrets.path.name],
                    images=[{"name": p.image, "newTag": "dev"}],
                    patches=[{"path": patch.path.name}],
                ),
                ("Dev: locally built image function-fleet:dev, placeholder Secrets, debug logs.",),
            ),
        ),
    )
    return [secrets, patch, kustomization]


def _prod(settings: Settings, domains: Sequence[Domain], p: Platform) -> list[RenderedFile]:
    def external(name: str, spec_data: Manifest) -> Manifest:
        return {
            "apiVersion": "external-secrets.io/v1beta1",
            "kind": "ExternalSecret",
            "metadata": _meta(name, p.namespace, _labels("secret")),
            "spec": {
                "refreshInterval": "1h",
                "secretStoreRef": {"kind": "ClusterSecretStore", "name": p.cluster_secret_store},
                "target": {"name": name, "creationPolicy": "Owner"},
                **spec_data,
            },
        }

    def extract(key: str) -> Manifest:
        return {"dataFrom": [{"extract": {"key": f"{p.remote_key_prefix}/{key}"}}]}

    def token(key: str) -> Manifest:
        return {
            "data": [
                {"secretKey": "token", "remoteRef": {"key": f"{p.remote_key_prefix}/dapr", "property": key}}
            ]
        }

    secrets = RenderedFile(
        PurePosixPath("deploy/overlays/prod/externalsecrets.yaml"),
        (
            Document(
                external(p.providers_secret, extract("providers")),
                (
                    f"Provider credentials from the ClusterSecretStore {p.cluster_secret_store!r}",
                    "(external-secrets.io): every property of the backend entry becomes a key K of",
                    "the Secret and FLEET_SECRET_K in the workers.",
                ),
            ),
            Document(
                external(p.redis_secret, extract("redis")),
                ("Redis: properties host (host:port), password, url.",),
            ),
            Document(external(p.api_token_secret, token("api-token"))),
            Document(external(p.app_token_secret, token("app-token"))),
        ),
    )
    patch = RenderedFile(
        PurePosixPath("deploy/overlays/prod/settings-patch.yaml"),
        (
            Document(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": p.settings_configmap, "namespace": p.namespace},
                    "data": monitoring.otel_overlay(p, "prod"),
                },
                ("Prod: the workers export traces to the collector daprd uses (Platform.trace_endpoint).",),
            ),
        ),
    )
    kustomization = RenderedFile(
        PurePosixPath("deploy/overlays/prod/kustomization.yaml"),
        (
            Document(
                _kustomization(
                    ["../../base", secrets.path.name],
                    images=[{"name": p.image, "newName": p.prod_image, "newTag": _image_tag()}],
                    patches=[{"path": patch.path.name}],
                ),
                (
                    "Prod: the released image (tag = package version; Kargo sets the promoted tag),",
                    "Secrets from external-secrets, traces to the collector.",
                ),
            ),
        ),
    )
    return [secrets, patch, kustomization]


# --------------------------------------------------------------------------- container build
def _dockerfile(settings: Settings, p: Platform) -> RenderedFile:
    port = settings.app_port
    text = f"""\
# {HEADER}
# The one image every worker runs: `fleet worker <domain> --transport dapr` (see deploy/).
# Kubernetes ignores HEALTHCHECK and probes GET /healthz on port {port} (deploy/base/deployment-*.yaml);
# the HEALTHCHECK below serves `docker run` of a worker.

FROM {p.base_image} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/fleet
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY workers ./workers
RUN /opt/fleet/bin/pip install --no-compile .

FROM {p.base_image} AS runtime
ENV PATH=/opt/fleet/bin:$PATH \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    FLEET_HOME=/tmp/fleet \\
    FLEET_LOG_FORMAT=json
RUN groupadd --system --gid {UID} fleet \\
 && useradd --system --uid {UID} --gid {UID} --no-create-home --home-dir /nonexistent \\
    --shell /usr/sbin/nologin fleet
COPY --from=build /opt/fleet /opt/fleet
USER {UID}:{UID}
EXPOSE {port}
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \\
  CMD ["python", "-c", \\
       "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=2)"]
ENTRYPOINT ["fleet"]
CMD ["worker", "--help"]
"""
    return RenderedFile(PurePosixPath("Dockerfile"), text=text)


def _dockerignore() -> RenderedFile:
    lines = [
        f"# {HEADER}",
        "# Only pyproject.toml, README.md, shared/ and workers/ go into the image.",
        ".git",
        ".venv",
        "**/__pycache__",
        "**/*.pyc",
        "*.egg-info",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".fleet",
        "build",
        "dist",
        "tests",
        "docs",
        "deploy",
        "components",
        "keda",
    ]
    return RenderedFile(PurePosixPath(".dockerignore"), text="\n".join(lines) + "\n")


# --------------------------------------------------------------------------- entry point
def render(
    settings: Settings | None = None,
    domains: Sequence[Domain] = DOMAINS,
    platform: Platform | None = None,
) -> list[RenderedFile]:
    """Every generated file, in a stable order.

    Args:
        settings: the names and timings to render; default :func:`default_settings` (the
            defaults, never the environment, so a render is reproducible).
        domains: the domain table; default :data:`~shared.domains.DOMAINS`.
        platform: cluster facts; default :class:`Platform`.

    Returns:
        Files with paths relative to the repository root: ``components/``, ``deploy/``,
        ``keda/``, ``Dockerfile`` and ``.dockerignore``. Pure: nothing is written.

    Raises:
        ConfigError: no domains, or two domains with the same name.
    """
    settings = settings or default_settings()
    p = platform or Platform()
    names = [d.name for d in domains]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"render needs distinct domains, got {names}")
    files: list[RenderedFile | None] = [
        _pubsub(settings, domains, p),
        _secret_store(settings, domains, p),
        *(_subscription(settings, d, p) for d in domains),
        _resiliency(settings, domains, p),
        _configuration(settings, domains, p),
        _trigger_auth(p),
        *(_scaled_object(settings, d, p) for d in domains),
        *_base(settings, domains, p),
        *_dev(settings, domains, p),
        *_prod(settings, domains, p),
        *gitops.files(p, _image_tag()),
        _dockerfile(settings, p),
        _dockerignore(),
    ]
    return [f for f in files if f is not None]
