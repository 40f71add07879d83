"""OpenTelemetry traces of a worker, end to end on both transports (docs/observability.md).

A request carrying a known ``traceparent`` goes through a real worker (Redis transport, or Dapr
with the fake daprd) to a catalog function that calls a fake provider over HTTP; the spans are
read back from the SDK's in-memory exporter (and, in one test, from a loopback OTLP/HTTP
collector), and the published result must continue the same trace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.runtime import worker as worker_module
from shared.runtime.credentials import CredentialsExtension
from shared.runtime.envelope import encode_request
from shared.runtime.extension import Extension
from shared.runtime.tracing import TracingExtension
from shared.runtime.worker import Worker
from shared.settings import Settings
from tests.conftest import running
from tests.fakes.daprd import FakeDaprd
from tests.fakes.otlp import FakeCollector
from tests.fakes.providers import APIS, CREDENTIALS, FakeProvider

REPO = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
FUNCTION = "anthropic/generate-text"
ANTHROPIC_KEY = CREDENTIALS["anthropic"]["ANTHROPIC_API_KEY"]


@pytest.fixture
async def anthropic(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    """The fake Anthropic API, and its key among the worker's credentials."""
    monkeypatch.setenv("FLEET_SECRET_ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    async with FakeProvider("anthropic", APIS["anthropic"], ANTHROPIC_KEY) as api:
        yield api


@contextlib.asynccontextmanager
async def serving(
    kind: str, settings: Settings, redis_url: str, extensions: Sequence[Extension] = ()
) -> AsyncIterator[tuple[Worker, FakeDaprd | None]]:
    """A domain ``ai`` worker on transport ``kind`` (for ``dapr``, behind the fake daprd, one
    delivery per request) until the block ends; then it drains and stops."""
    async with contextlib.AsyncExitStack() as stack:
        daprd: FakeDaprd | None = None
        if kind == "dapr":
            daprd = FakeDaprd(redis_url, app_id=settings.group_for("ai"), pubsub_name=settings.pubsub_name)
            await daprd.start()
            stack.push_async_callback(daprd.close)
            settings = settings.model_copy(
                update={
                    "app_port": 0,
                    "dapr_http_port": daprd.http_port,
                    "dapr_ready_timeout": 10.0,
                    "dapr_bulk_subscribe": False,
                    "dapr_secrets": "off",  # the fake daprd has no secret store
                }
            )
        worker = create_worker("ai", settings, kind, extensions=extensions)
        await stack.enter_async_context(running(worker))
        if daprd is not None:
            from shared.transports.dapr_http import DaprTransport

            assert isinstance(worker.transport, DaprTransport)
            await daprd.attach_app(worker.transport.port)
            stack.push_async_callback(daprd.stop_subscriptions)
        yield worker, daprd


async def publish(redis: Redis, settings: Settings, function: str, input: dict[str, Any], **kw: Any) -> str:
    execution_id, body = encode_request(function=function, input=input, **kw)
    await redis.xadd(settings.topic_for("ai"), {"data": body, "metadata": b"{}"})
    return execution_id


async def result_for(
    redis: Redis, settings: Settings, execution_id: str, timeout: float = 20.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for _, fields in await redis.xrange(settings.results_topic):
            event: dict[str, Any] = orjson.loads(fields[b"data"])
            if event.get("executionid") == execution_id:
                return event
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no result for {execution_id}")
        await asyncio.sleep(0.02)


def by_name(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    [found] = [s for s in spans if s.name == name]
    return found


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None
    return span.parent.span_id


def traceparent_parts(header: str) -> tuple[str, int]:
    """(trace id hex, span id) of a W3C ``traceparent``."""
    version, trace_id, span, flags = header.split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled (the SDK may also set level 2's "random" bit)
    return trace_id, int(span, 16)


# ---------------------------------------------------------------------- the span tree
@pytest.mark.parametrize("kind", ["redis", "dapr"])
async def test_one_request_yields_the_span_tree_of_the_requests_trace(
    kind: str,
    make_settings: Callable[..., Settings],
    redis: Redis,
    redis_url: str,
    anthropic: FakeProvider,
) -> None:
    settings = make_settings(anthropic_base_url=anthropic.base_url, provider_backoff=0.0)
    exporter = InMemorySpanExporter()
    tracing = TracingExtension(settings, domain="ai", exporter=exporter)
    async with serving(kind, settings, redis_url, [tracing]) as (_, daprd):
        execution_id = await publish(
            redis, settings, FUNCTION, {"aiPrompt": "Say hello"}, traceparent=TRACEPARENT
        )
        result = await result_for(redis, settings, execution_id)
    assert result["type"] == "fleet.execution.completed", result
    spans = exporter.get_finished_spans()  # the worker flushed them as it stopped

    # One trace, the request's.
    assert {s.context.trace_id for s in spans if s.context is not None} == {int(TRACE_ID, 16)}
    topic, results_topic = settings.topic_for("ai"), settings.results_topic
    process = by_name(spans, f"process {topic}")
    execute = by_name(spans, f"execute {FUNCTION}")
    publish_span = by_name(spans, f"publish {results_topic}")
    [client] = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(spans) == 4

    # process: the consumer span, child of the request's span (remote: the orchestrator's).
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert process.parent.is_remote
    assert parent_id(process) == int(PARENT_ID, 16)
    attributes = dict(process.attributes or {})
    assert attributes["messaging.system"] == kind
    assert attributes["messaging.destination.name"] == topic
    assert attributes["messaging.operation"] == "process"
    assert attributes["messaging.consumer.group.name"] == settings.group_for("ai")
    assert attributes["cloudevents.event_id"] == execution_id
    assert attributes["fleet.settlement"] == "ack"
    if kind == "redis":
        assert str(attributes["messaging.message.id"]).count("-") == 1  # the stream entry id
    else:
        assert attributes["messaging.message.id"] == execution_id  # daprd's: the CloudEvent id
        # daprd's own delivery span (the header it sent) is linked, not the parent.
        assert daprd is not None
        [delivery] = daprd.deliveries()
        daprd_trace, daprd_span = traceparent_parts(delivery.headers["traceparent"])
        assert daprd_trace == TRACE_ID
        assert [link.context.span_id for link in process.links] == [daprd_span]

    # execute: the function's execution, inside the process span.
    assert execute.kind is SpanKind.INTERNAL
    assert parent_id(execute) == span_id(process)
    assert dict(execute.attributes or {}) == {
        "faas.name": FUNCTION,
        "faas.invocation_id": execution_id,
        "faas.trigger": "pubsub",
        "fleet.function": FUNCTION,
        "fleet.execution_id": execution_id,
        "fleet.attempt": 1,
        "fleet.outcome": "completed",
    }
    assert execute.status.status_code is StatusCode.UNSET

    # The provider call: an httpx CLIENT span inside the execution, its context sent along.
    assert parent_id(client) == span_id(execute)
    client_attributes = dict(client.attributes or {})
    assert client_attributes.get("http.url", client_attributes.get("url.full")) == (
        f"{anthropic.base_url}/v1/messages"
    )
    [call] = anthropic.requests
    assert traceparent_parts(call.headers["traceparent"]) == (TRACE_ID, span_id(client))

    # publish: the producer span, whose context the result carries.
    assert publish_span.kind is SpanKind.PRODUCER
    assert parent_id(publish_span) == span_id(process)
    assert dict(publish_span.attributes or {})["messaging.destination.name"] == results_topic
    assert traceparent_parts(result["traceparent"]) == (TRACE_ID, span_id(publish_span))
    assert span_id(publish_span) in {span_id(s) for s in spans}
    if daprd is not None:
        # daprd was asked to continue that same context (its publish span's parent).
        [sent] = daprd.publishes
        assert traceparent_parts(sent.headers["traceparent"]) == (TRACE_ID, span_id(publish_span))


async def test_a_failed_execution_marks_its_span_with_the_error_code(
    make_settings: Callable[..., Settings], redis: Redis, redis_url: str
) -> None:
    settings = make_settings()
    exporter = InMemorySpanExporter()
    async with serving(
        "redis", settings, redis_url, [TracingExtension(settings, domain="ai", exporter=exporter)]
    ):
        execution_id = await publish(
            redis,
            settings,
            "system/fail",
            {"message": "boom", "code": "quota_exceeded"},
            traceparent=TRACEPARENT,
        )
        result = await result_for(redis, settings, execution_id)
    assert result["type"] == "fleet.execution.failed"
    execute = by_name(exporter.get_finished_spans(), "execute system/fail")
    attributes = dict(execute.attributes or {})
    assert (attributes["fleet.outcome"], attributes["fleet.error_code"]) == ("failed", "quota_exceeded")
    assert attributes["error.type"] == "quota_exceeded"
    assert execute.status.status_code is StatusCode.ERROR
    assert "boom" not in json.dumps(attributes)  # messages (which may hold secrets) stay out
    assert execute.events == ()  # no exception event with its message either


async def test_a_request_without_traceparent_starts_a_trace_its_result_names(
    make_settings: Callable[..., Settings], redis: Redis, redis_url: str
) -> None:
    settings = make_settings()
    exporter = InMemorySpanExporter()
    async with serving(
        "redis", settings, redis_url, [TracingExtension(settings, domain="ai", exporter=exporter)]
    ):
        execution_id = await publish(redis, settings, "system/echo", {"a": 1})
        result = await result_for(redis, settings, execution_id)
    spans = exporter.get_finished_spans()
    process = by_name(spans, f"process {settings.topic_for('ai')}")
    assert process.parent is None  # a root span: the request named no trace
    publish_span = by_name(spans, f"publish {settings.results_topic}")
    assert process.context is not None
    assert traceparent_parts(result["traceparent"]) == (
        f"{process.context.trace_id:032x}",
        span_id(publish_span),
    )


# ---------------------------------------------------------------------- tracing off
async def test_tracing_off_creates_no_tracer_provider(
    make_settings: Callable[..., Settings], redis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[TracerProvider] = []
    original = TracerProvider.__init__

    def spy(self: TracerProvider, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(TracerProvider, "__init__", spy)
    settings = make_settings()
    assert settings.otlp_traces_url is None
    async with serving("redis", settings, redis_url) as (worker, _):
        with pytest.raises(LookupError):
            worker.extension(TracingExtension)
        execution_id = await publish(redis, settings, "system/echo", {"a": 1}, traceparent=TRACEPARENT)
        result = await result_for(redis, settings, execution_id)
    assert made == []
    # The trace is still continued, as before tracing existed: same trace, a new span id.
    trace_id, child = traceparent_parts(result["traceparent"])
    assert trace_id == TRACE_ID
    assert child != int(PARENT_ID, 16)


def test_an_untraced_worker_does_not_even_import_the_tracing_sdk() -> None:
    code = (
        "import sys\n"
        "from shared.assemble import create_worker\n"
        "from shared.settings import Settings\n"
        "create_worker('ai', Settings(redis_url='redis://127.0.0.1:1', metrics_port=0))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', "
        "'opentelemetry.exporter', 'opentelemetry.instrumentation', 'shared.runtime.tracing'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLEET_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"


async def test_workers_trace_apart_and_leave_the_global_provider_alone(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[TracerProvider] = []
    original = TracerProvider.__init__

    def spy(self: TracerProvider, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(TracerProvider, "__init__", spy)
    global_before = trace.get_tracer_provider()
    settings = make_settings(otel_exporter_otlp_endpoint="http://127.0.0.1:1")
    first, second = create_worker("ai", settings), create_worker("comms", settings)
    a, b = first.extension(TracingExtension), second.extension(TracingExtension)
    assert made == [a.provider, b.provider]
    assert a.provider is not b.provider
    # Right after the credentials: it stops (flushing its spans) after every later extension.
    assert [type(e) for e in first.extensions[:2]] == [CredentialsExtension, TracingExtension]
    assert trace.get_tracer_provider() is global_before
    for ext in (a, b):
        await ext.stop()


def test_tracing_is_configured_by_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith(("OTEL_", "FLEET_OTEL_"))]:
        monkeypatch.delenv(name)
    assert Settings().otlp_traces_url is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert Settings().otlp_traces_url == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/custom")
    assert Settings().otlp_traces_url == "http://other:4318/custom"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert Settings().otlp_traces_url is None
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert Settings().otlp_traces_url == "http://localhost:4318/v1/traces"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")  # not an exporter workers have
    assert Settings().otlp_traces_url is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert Settings().otlp_traces_url is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"otel_exporter_otlp_protocol": "grpc"}, "http/protobuf only"),
        ({"otel_traces_sampler": "jaeger_remote"}, "OTEL_TRACES_SAMPLER"),
        ({"otel_traces_sampler": "traceidratio", "otel_traces_sampler_arg": "2"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"otel_exporter_otlp_endpoint": "collector:4318"}, "not an http(s) URL"),
    ],
)
def test_a_tracing_setting_no_worker_can_use_fails_when_the_worker_is_built(
    make_settings: Callable[..., Settings], overrides: dict[str, Any], message: str
) -> None:
    settings = make_settings(**{"otel_exporter_otlp_endpoint": "http://127.0.0.1:1", **overrides})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_worker("ai", settings)


# ---------------------------------------------------------------------- the exporter
async def test_spans_reach_the_configured_otlp_http_endpoint(
    make_settings: Callable[..., Settings], redis: Redis, redis_url: str
) -> None:
    collector = await FakeCollector().start()
    try:
        settings = make_settings(otel_exporter_otlp_endpoint=collector.endpoint)
        async with serving("redis", settings, redis_url) as (worker, _):
            assert isinstance(worker.extension(TracingExtension), TracingExtension)
            execution_id = await publish(redis, settings, "system/echo", {"a": 1}, traceparent=TRACEPARENT)
            await result_for(redis, settings, execution_id)
        # Stopping the worker flushed its spans to the collector.
        spans = await collector.wait_for(lambda got: len(got) >= 3)
    finally:
        await collector.close()
    assert {r.path for r in collector.requests} == {"/v1/traces"}
    assert all(r.headers["Content-Type"] == "application/x-protobuf" for r in collector.requests)
    assert all(r.status == 200 for r in collector.requests)
    names = {s.name: s for s in spans}
    process = names[f"process {settings.topic_for('ai')}"]
    assert (process.kind, process.trace_id, process.parent_span_id) == ("consumer", TRACE_ID, PARENT_ID)
    assert names["execute system/echo"].parent_span_id == process.span_id
    assert names[f"publish {settings.results_topic}"].kind == "producer"
    assert process.resource["service.name"] == settings.group_for("ai")
    assert process.resource["service.instance.id"] == settings.consumer_name
    assert process.scope == "function-fleet"


# ---------------------------------------------------------------------- logs
@pytest.fixture
def json_logs() -> Iterator[Callable[[], None]]:
    """``json_logs()`` configures logging as a worker process does (JSON lines on stderr: called
    in the test, where capsys captures stderr); pytest's root handlers and structlog are
    restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure() -> None:
        root.handlers.clear()
        configure_logging(Settings(log_format="json", log_level="info"))
        structlog.configure(cache_logger_on_first_use=False)

    try:
        yield configure
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


async def test_log_lines_inside_a_span_carry_its_trace_and_span_ids(
    make_settings: Callable[..., Settings],
    redis: Redis,
    redis_url: str,
    json_logs: Callable[[], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    json_logs()
    # Module-level loggers cache the configuration of their first use (possibly an earlier
    # test's stderr): the worker's own lines go through a fresh one, configured as above.
    monkeypatch.setattr(worker_module, "log", structlog.get_logger("fleet.worker"))
    settings = make_settings(log_level="info")
    exporter = InMemorySpanExporter()
    async with serving(
        "redis", settings, redis_url, [TracingExtension(settings, domain="ai", exporter=exporter)]
    ):
        execution_id = await publish(
            redis, settings, "system/fail", {"message": "boom"}, traceparent=TRACEPARENT
        )
        await result_for(redis, settings, execution_id)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    [failed] = [line for line in lines if line.get("event") == "execution failed"]
    execute = by_name(exporter.get_finished_spans(), "execute system/fail")
    assert (failed["trace_id"], failed["span_id"]) == (TRACE_ID, f"{span_id(execute):016x}")
    started = next(line for line in lines if line.get("event") == "worker started")
    assert "trace_id" not in started  # outside any span: no ids
