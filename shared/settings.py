"""Typed, immutable settings read from ``FLEET_*`` environment variables.

:class:`Settings` is the one place that reads the environment (plus the three variables the
Dapr injector sets: ``APP_PORT``, ``DAPR_HTTP_PORT``, ``DAPR_API_TOKEN``, and ``APP_API_TOKEN``).
Every CLI flag maps onto a field here, so every flag has an env fallback. The README's
configuration table is generated from the field descriptions (``fleet config --markdown``).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.contract import DEFAULT_RESULTS_TOPIC, DEFAULT_TOPIC_PREFIX, DLQ_SUFFIX

__all__ = ["PROVIDER_BASE_URLS", "Settings", "default_home"]


#: Provider name → default base URL of its API (``FLEET_<PROVIDER>_BASE_URL`` overrides each).
PROVIDER_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
    "perplexity": "https://api.perplexity.ai",
    "fal": "https://queue.fal.run",
    "firecrawl": "https://api.firecrawl.dev",
    "superagent": "https://app.superagent.sh",
    "v0": "https://api.v0.dev",
    "slack": "https://slack.com/api",
    "resend": "https://api.resend.com",
    "github": "https://api.github.com",
    "linear": "https://api.linear.app",
    "webflow": "https://api.webflow.com",
    "clerk": "https://api.clerk.com",
    "stripe": "https://api.stripe.com",
    "blob": "https://blob.vercel-storage.com",
}


def default_home() -> Path:
    return Path.home() / ".fleet"


def _provider_url(provider: str) -> Any:
    return Field(default=PROVIDER_BASE_URLS[provider], description=f"Base URL of the {provider} API.")


class Settings(BaseSettings):
    """All settings of a fleet process. Frozen: build a new one with :meth:`model_copy`."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", frozen=True, extra="ignore", populate_by_name=True)

    home: Path = Field(
        default_factory=default_home,
        description="State directory: embedded broker/database data and the `fleet up` state file.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis/Valkey URL. Unset: `fleet up` starts an embedded Valkey; other "
        "commands use the one a running `fleet up` recorded.",
    )
    transport: Literal["redis", "dapr"] = Field(
        default="redis",
        description="How a worker gets its deliveries: `redis` reads the streams directly; "
        "`dapr` serves daprd's app channel (`fleet worker --transport`).",
    )
    burst: bool = Field(
        default=False,
        description="A worker exits once its topic is idle and nothing is in flight (one-shot "
        "jobs, CI; `fleet worker --burst`).",
    )
    topic_prefix: str = Field(
        default=DEFAULT_TOPIC_PREFIX, description="Request topics are `<prefix><domain>`."
    )
    results_topic: str = Field(default=DEFAULT_RESULTS_TOPIC, description="Topic of results.")
    dlq_suffix: str = Field(default=DLQ_SUFFIX, description="Dead letters go to `<topic><suffix>`.")
    group_prefix: str = Field(
        default="fleet-",
        description="Consumer group (= Dapr app id) of a domain is `<prefix><domain>`.",
    )
    consumer_name: str = Field(
        default_factory=socket.gethostname,
        description="This process's consumer in its group (pod name in Kubernetes). Must be "
        "unique among live workers of a domain; a restart under the same name resumes its "
        "pending work at once.",
    )
    concurrency: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="In-flight executions per worker (unset: the domain's declared concurrency).",
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Entries read per XREADGROUP.")
    block_ms: int = Field(
        default=1000,
        ge=10,
        le=60_000,
        description="XREADGROUP BLOCK; also bounds how long intake takes to stop.",
    )
    processing_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a delivered entry may sit un-acked with no heartbeat before another "
        "consumer reclaims it (XAUTOCLAIM min-idle). Live workers heartbeat their in-flight entries.",
    )
    redeliver_interval: float = Field(
        default=15.0, gt=0, description="Seconds between reclaim/heartbeat/trim passes."
    )
    max_deliveries: int = Field(
        default=5, ge=1, description="Deliveries before a request is dead-lettered with a failed result."
    )
    # Defaults of a function's retry policy (shared/retry.py); a policy sets its own fields.
    retry_max_attempts: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Runs of a failing execution, the first included, unless its function's retry "
        "policy says otherwise (1: failures are answered at once). Capped by FLEET_MAX_DELIVERIES.",
    )
    retry_initial_backoff: float = Field(
        default=1.0, gt=0, description="Seconds before the first retry of a failed execution."
    )
    retry_max_backoff: float = Field(default=60.0, gt=0, description="Longest wait between two retries.")
    retry_multiplier: float = Field(default=2.0, ge=1, description="Each retry waits this many times longer.")
    retry_jitter: float = Field(
        default=0.2, ge=0, le=1, description="Each wait is shortened at random by up to this fraction."
    )
    provider_rate_limits: dict[str, dict[str, Any] | None] | None = Field(
        default=None,
        description='Rate limits per provider on top of the documented defaults (JSON: {"openai": '
        '{"limit": 500, "period_seconds": 60}, "github": null}); shared by all of a provider\'s '
        "functions across the fleet (docs/contract.md, Limits).",
    )
    shutdown_timeout: float = Field(
        default=25.0,
        ge=0,
        description="Seconds SIGTERM waits for in-flight work; the rest stays pending for redelivery.",
    )
    max_payload_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request event accepted (bytes)."
    )
    default_timeout_seconds: float = Field(
        default=300.0, gt=0, description="Execution timeout when neither request nor function sets one."
    )
    results_maxlen: int = Field(
        default=100_000, ge=100, description="Results stream trimmed to about this many entries."
    )
    trim_interval: float = Field(
        default=60.0, gt=0, description="Seconds between trims of request streams (only answered entries)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="`json` for machines, `console` for people; `auto` picks by TTY."
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="Event loop of a worker process: `auto` = uvloop when installed (a dependency "
        "except on Windows), else asyncio's; `uvloop` requires it; `asyncio` for asyncio's debug tools.",
    )
    # Probes and metrics (docs/observability.md)
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of `/healthz`, `/readyz` and `/metrics` in direct (redis) mode; 0 = off. "
        "Dapr mode serves them on the app channel.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the probe and metrics server binds (`0.0.0.0` in a container).",
    )
    # OpenTelemetry traces (docs/observability.md, "Traces"): the standard OTEL_* names. A
    # worker traces only when an OTLP endpoint is set or OTEL_TRACES_EXPORTER=otlp
    # (:attr:`otlp_traces_url`); the exporter's other OTEL_EXPORTER_OTLP_* variables (headers,
    # timeout, compression, certificates) and OTEL_BSP_* are read by the OpenTelemetry SDK.
    otel_sdk_disabled: bool = Field(
        default=False,
        validation_alias=AliasChoices("FLEET_OTEL_SDK_DISABLED", "OTEL_SDK_DISABLED"),
        description="`true` turns worker tracing off whatever else is set (`OTEL_SDK_DISABLED`).",
    )
    otel_traces_exporter: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FLEET_OTEL_TRACES_EXPORTER", "OTEL_TRACES_EXPORTER"),
        description="`otlp` exports worker spans (to http://localhost:4318 without an endpoint); `none` "
        "(or a list without `otlp`: workers export OTLP only) leaves tracing off; unset: workers trace "
        "exactly when an OTLP endpoint is set (`OTEL_TRACES_EXPORTER`).",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FLEET_OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Base URL of the OTLP/HTTP collector (`/v1/traces` is appended); setting it turns "
        "worker tracing on (`OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. http://otel-collector:4318).",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "FLEET_OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ),
        description="Full URL spans are POSTed to, used as it is; beats the base endpoint and turns "
        "tracing on too (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).",
    )
    otel_exporter_otlp_protocol: Literal["http/protobuf", "http/json", "grpc"] = Field(
        default="http/protobuf",
        validation_alias=AliasChoices("FLEET_OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        description="OTLP protocol (`OTEL_EXPORTER_OTLP_PROTOCOL`): workers export `http/protobuf` "
        "(port 4318) only; a worker with tracing on refuses another.",
    )
    otel_service_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FLEET_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"),
        description="`service.name` of a worker's spans (`OTEL_SERVICE_NAME`); unset: the "
        "`service.name` in OTEL_RESOURCE_ATTRIBUTES, else the domain's app id (`fleet-<domain>`).",
    )
    otel_resource_attributes: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FLEET_OTEL_RESOURCE_ATTRIBUTES", "OTEL_RESOURCE_ATTRIBUTES"),
        description="Resource attributes of a worker's spans, `key=value` pairs separated by commas "
        "(`OTEL_RESOURCE_ATTRIBUTES`).",
    )
    otel_traces_sampler: str = Field(
        default="parentbased_always_on",
        validation_alias=AliasChoices("FLEET_OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER"),
        description="Sampler of a worker's spans (`OTEL_TRACES_SAMPLER`): `always_on`, `always_off`, "
        "`traceidratio` or their `parentbased_` forms, which follow the sampled flag of the request's "
        "`traceparent`.",
    )
    otel_traces_sampler_arg: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FLEET_OTEL_TRACES_SAMPLER_ARG", "OTEL_TRACES_SAMPLER_ARG"),
        description="Ratio (0 to 1) of the `traceidratio` samplers; unset: 1 (`OTEL_TRACES_SAMPLER_ARG`).",
    )
    # Web console (`fleet ui`, docs/console.md)
    ui_host: str = Field(
        default="127.0.0.1",
        description="Address `fleet ui` binds; any non-loopback address requires `FLEET_UI_TOKEN`.",
    )
    ui_port: int = Field(
        default=8790, ge=0, le=65535, description="Port `fleet ui` listens on (0 = any free)."
    )
    ui_token: SecretStr | None = Field(
        default=None,
        description="Token of the web console (bearer header or login form); required off loopback.",
    )
    ui: bool = Field(
        default=True,
        description="`fleet up` serves the web console too (on `FLEET_UI_HOST`:`FLEET_UI_PORT`, "
        "any free port when that one is taken); false: `fleet up --no-ui`.",
    )
    # Dapr transport
    pubsub_name: str = Field(default="fleet-pubsub", description="Dapr pub/sub component name.")
    app_port: int = Field(
        default=8080,
        validation_alias=AliasChoices("FLEET_APP_PORT", "APP_PORT"),
        description="Port the Dapr app channel listens on (`APP_PORT`).",
    )
    app_host: str = Field(default="127.0.0.1", description="Address the Dapr app channel binds.")
    dapr_http_port: int = Field(
        default=3500,
        validation_alias=AliasChoices("FLEET_DAPR_HTTP_PORT", "DAPR_HTTP_PORT"),
        description="daprd HTTP port (`DAPR_HTTP_PORT`).",
    )
    dapr_host: str = Field(default="127.0.0.1", description="daprd address.")
    dapr_api_token: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FLEET_DAPR_API_TOKEN", "DAPR_API_TOKEN"),
        description="Token sent to daprd as `dapr-api-token` (`DAPR_API_TOKEN`).",
    )
    app_api_token: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FLEET_APP_API_TOKEN", "APP_API_TOKEN"),
        description="Token daprd must present on deliveries (`APP_API_TOKEN`).",
    )
    dapr_bulk_subscribe: bool = Field(
        default=True, description="Ask daprd for bulk deliveries (`bulkSubscribe`)."
    )
    dapr_subscriptions: Literal["programmatic", "declarative"] = Field(
        default="programmatic",
        description="`declarative` when Subscription resources are deployed (the rendered manifests): "
        "GET /dapr/subscribe then answers [] so daprd does not see the subscription twice.",
    )
    dapr_ready_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for daprd's outbound health at start."
    )
    app_read_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the Dapr app channel waits for a request's body once its headers arrived; "
        "a slower one is answered 408 and its connection closed.",
    )

    # Credentials
    secrets_file: Path | None = Field(
        default=None, description="Local secrets file (JSON/YAML, like Dapr's local.file store)."
    )
    dapr_secrets: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Read secrets from the Dapr secret store; `auto` = when DAPR_HTTP_PORT is set.",
    )
    dapr_secret_store: str = Field(default="kubernetes", description="Dapr secret store component name.")
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) of the secret store in PostgreSQL (`fleet secrets`), comma-separated: "
        "the first encrypts, every one decrypts (rotation). Unset: `$FLEET_HOME/secrets.key` when it "
        "exists (`fleet up` writes one with its embedded database); no key: the store refuses writes.",
    )
    secrets_cache_ttl: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a worker keeps a value (or its absence) read from the secret store; "
        "`fleet secrets set/delete` reach running workers within it.",
    )

    # Registry, execution history, idempotency (docs/registry.md)
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the function registry and execution history. Unset: workers "
        "serve the in-code built-ins without history; `fleet up` starts an embedded PostgreSQL.",
    )
    database_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a database call may take before it counts as an outage."
    )
    registry_cache_ttl: float = Field(
        default=60.0, ge=0, description="Seconds a function definition is cached (NOTIFY invalidates sooner)."
    )
    history_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Execution history older than this is pruned (with database claims, also the "
        "idempotency window).",
    )
    history_prune_interval: float = Field(
        default=3600.0, gt=0, description="Seconds between history prunes run by workers."
    )
    history_buffer: int = Field(
        default=10_000,
        ge=1,
        description="History writes held in memory while the database is down; when full, workers stop "
        "acknowledging new work until it returns.",
    )
    claims: Literal["auto", "redis", "database"] = Field(
        default="auto",
        description="Where execution claims and stored results live: `redis` (history written to "
        "PostgreSQL off the hot path), `database` (all in PostgreSQL); `auto` = `redis` when "
        "FLEET_REDIS_URL is set.",
    )
    idempotency_window: float = Field(
        default=86_400.0,
        gt=0,
        description="Seconds a finished execution's result is kept in Redis to answer duplicates (with "
        "Redis claims: the exactly-once window).",
    )
    history_sync: bool = Field(
        default=False,
        description="With Redis claims: publish a result only once its history row is written (one "
        "database round trip per batch on the hot path). Off: rows are written just after.",
    )
    lease_margin_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A claim in PostgreSQL lasts the function's timeout plus this margin; a claim in Redis "
        "is a lease of 2/3 FLEET_PROCESSING_TIMEOUT renewed while its worker lives, at most that long. "
        "A claim whose worker died is taken over once it expires.",
    )
    extra_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra Python modules with built-ins to import in every worker (comma-separated).",
    )

    # Local autoscaler of `fleet up` and `fleet scale simulate` (docs/scaling.md); the cluster
    # values are the rendered ScaledObjects' (shared/domains.py) and KEDA's/the HPA's defaults.
    scale_polling_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between the local autoscaler's polls of each domain's stream (KEDA "
        "`pollingInterval`; the cluster polls every 15 s). A local process starts in about a "
        "second, so polling faster than that buys nothing.",
    )
    scale_cooldown: float = Field(
        default=30.0,
        ge=0,
        description="Seconds without backlog or in-flight work before the local autoscaler stops "
        "a domain's processes (KEDA `cooldownPeriod`; cluster 300 s). Short: a local restart "
        "costs about a second, not a pod's tens of seconds.",
    )
    scale_stabilization: float = Field(
        default=30.0,
        ge=0,
        description="Seconds of recommendations whose maximum the local autoscaler keeps when "
        "scaling down between 1 and N (the HPA's downscale stabilization window; cluster "
        "300 s). Equal to the cooldown, as in the cluster, so 1..N never shrinks faster than "
        "N -> 0 and workflow steps a few seconds apart find their processes still up.",
    )
    scale_max_processes: int | None = Field(
        default=None,
        ge=1,
        description="Most worker processes the local autoscaler runs per domain (further capped "
        "by the domain's max replicas). Unset: the number of CPUs.",
    )
    autoscale: bool = Field(
        default=True,
        description="`fleet up` scales each domain's worker processes from zero by KEDA's rules; "
        "false: one worker per domain all the time (`fleet up --no-autoscale`).",
    )

    # OCI functions (docs/oci.md)
    oci_backend: Literal["local", "kubernetes"] = Field(
        default="local",
        description="How the `oci` worker runs container functions: `local` = the function's `command` as a "
        "subprocess in its `working_dir` (`fleet up`); `kubernetes` = one Job per execution.",
    )
    oci_namespace: str = Field(
        default="fleet-functions", description="Namespace of the Jobs and Secrets of OCI executions."
    )
    oci_kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig for the `kubernetes` backend. Unset: the in-cluster service account, "
        "else `KUBECONFIG` / `~/.kube/config`.",
    )
    oci_cpu_request: str = Field(default="100m", description="CPU request of a function container.")
    oci_memory_request: str = Field(default="128Mi", description="Memory request of a function container.")
    oci_cpu_limit: str = Field(default="1", description="CPU limit of a function container.")
    oci_memory_limit: str = Field(default="512Mi", description="Memory limit of a function container.")
    oci_tmp_size: str = Field(
        default="64Mi",
        description="Size limit of the writable `/tmp` (emptyDir; the root filesystem is read-only).",
    )
    oci_run_as_user: int = Field(
        default=65532, ge=1, description="UID (and GID) function containers run as (never root)."
    )
    oci_job_ttl_seconds: int = Field(
        default=600,
        ge=0,
        description="ttlSecondsAfterFinished of a Job: how long Kubernetes keeps a finished Job a worker "
        "did not delete (it deletes its own at once).",
    )
    oci_api_retries: int = Field(
        default=4, ge=0, description="Retries of a failing Kubernetes API call before `backend_unavailable`."
    )
    oci_api_backoff: float = Field(
        default=0.5,
        gt=0,
        description="First delay (seconds) between Kubernetes API retries; doubles up to 10s, jittered ±50%.",
    )
    oci_log_tail_lines: int = Field(
        default=40,
        ge=1,
        le=10_000,
        description="Log lines kept in a failed result (and read for the output line).",
    )
    oci_reap_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        description="The reaper deletes an unfinished Job once it is older than its deadline plus this.",
    )
    oci_build_context_max_bytes: int = Field(
        default=768 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest gzipped build context `fleet build` puts in a ConfigMap (1 MiB at most).",
    )
    oci_kaniko_image: str = Field(
        default="gcr.io/kaniko-project/executor:v1.23.2", description="Executor image of `fleet build` Jobs."
    )

    # HTTP worker (docs/http.md)
    http_allow: str = Field(
        default="",
        description="Destinations the `http` worker may reach despite its SSRF guard, comma-separated: "
        "hostnames (`api.internal`, `*.svc.cluster.local`), IPs or CIDRs (`10.1.0.0/16`), each optionally "
        "with `:port` (`127.0.0.1:8080`, `[fd00::/8]:443`); an entry without a port admits every port. "
        "A name's addresses are still checked: metadata and link-local ones need an address entry. Empty: "
        "public addresses only (docs/http.md).",
    )
    http_max_response_bytes: int = Field(
        default=10_485_760,
        ge=1,
        description="Largest response body (after Content-Encoding) the `http` worker reads; larger fails "
        "`response_too_large`.",
    )
    http_max_redirects: int = Field(
        default=5,
        ge=0,
        le=20,
        description="Redirects the `http` worker follows, each re-checked; one more fails "
        "`too_many_redirects`.",
    )

    # Provider clients of the catalog built-ins (workers/providers.py)
    openai_base_url: str = _provider_url("openai")
    anthropic_base_url: str = _provider_url("anthropic")
    perplexity_base_url: str = _provider_url("perplexity")
    fal_base_url: str = _provider_url("fal")
    firecrawl_base_url: str = _provider_url("firecrawl")
    superagent_base_url: str = _provider_url("superagent")
    v0_base_url: str = _provider_url("v0")
    slack_base_url: str = _provider_url("slack")
    resend_base_url: str = _provider_url("resend")
    github_base_url: str = _provider_url("github")
    linear_base_url: str = _provider_url("linear")
    webflow_base_url: str = _provider_url("webflow")
    clerk_base_url: str = _provider_url("clerk")
    stripe_base_url: str = _provider_url("stripe")
    blob_base_url: str = _provider_url("blob")
    provider_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to connect to a provider API."
    )
    provider_read_timeout: float = Field(
        default=300.0, gt=0, description="Seconds to wait for a provider API's answer (LLMs are slow)."
    )
    provider_max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts per provider call (429/5xx/connect errors retried)."
    )
    provider_backoff: float = Field(
        default=0.5, ge=0, description="First backoff in seconds between attempts (doubles, with jitter)."
    )
    provider_max_retry_after: float = Field(
        default=30.0,
        ge=0,
        description="Longest Retry-After honoured in-process; longer ones fail retryable at once.",
    )
    provider_max_connections: int = Field(
        default=100, ge=1, description="Pooled connections per provider client."
    )
    fal_poll_interval: float | None = Field(
        default=None,
        ge=0,
        description="Seconds between fal queue polls (default: 1 s for images, 2 s for video).",
    )

    @field_validator("extra_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("topic_prefix", "results_topic", "group_prefix", "consumer_name")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    # -- derived names; the manifests use the same functions so names agree everywhere --
    def topic_for(self, domain: str) -> str:
        return f"{self.topic_prefix}{domain}"

    def dlq_for(self, topic: str) -> str:
        return f"{topic}{self.dlq_suffix}"

    def group_for(self, domain: str) -> str:
        return f"{self.group_prefix}{domain}"

    @property
    def state_file(self) -> Path:
        return self.home / "up.json"

    @property
    def otlp_traces_url(self) -> str | None:
        """Where a worker exports its spans, or ``None`` when tracing is off: off with
        ``OTEL_SDK_DISABLED`` or ``OTEL_TRACES_EXPORTER=none``; else the traces endpoint as it
        is, the base endpoint plus ``/v1/traces``, or (``OTEL_TRACES_EXPORTER=otlp`` alone) the
        OTLP/HTTP default ``http://localhost:4318/v1/traces``. Workers export OTLP only, so an
        exporter list without ``otlp`` (``console``) leaves tracing off too."""
        exporters = {e.strip() for e in (self.otel_traces_exporter or "").split(",") if e.strip()}
        if self.otel_sdk_disabled or (exporters and "otlp" not in exporters):
            return None
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        base = self.otel_exporter_otlp_endpoint
        if not base and exporters:
            base = "http://localhost:4318"
        return f"{base.rstrip('/')}/v1/traces" if base else None

    def provider_base_url(self, provider: str) -> str:
        """The base URL of ``provider``'s API, without a trailing slash; ``KeyError`` for an
        unknown provider."""
        if provider not in PROVIDER_BASE_URLS:
            raise KeyError(f"unknown provider {provider!r}")
        value: str = getattr(self, f"{provider}_base_url")
        return value.rstrip("/")
