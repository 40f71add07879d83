"""OpenTelemetry tracing of a worker: the :class:`TracingExtension`, in a worker only when
tracing is configured (``Settings.otlp_traces_url``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` and
friends, docs/observability.md). Importing this module loads the OpenTelemetry SDK; a worker
without tracing never does, and makes no span object on its hot path.

Every delivery of a decoded request becomes this tree (one trace with the request's)::

    process <topic>          CONSUMER  parent: the request's traceparent (its publisher's span)
    ├── execute <slug>       INTERNAL  the middleware chain and the function
    │   ├── GET / POST ...   CLIENT    provider calls (httpx), webhooks and HTTP requests
    │   └── oci run          INTERNAL  an OCI function's Job or subprocess
    └── publish <results>    PRODUCER  from the result's encoding until the transport settled it

The result event's ``traceparent`` is the ``publish`` span's context, so the orchestrator's next
hop continues the same trace (under Dapr, daprd continues it too: it is sent as the publish's
``traceparent`` header). Each worker has its own ``TracerProvider`` (the global one is never
set) with a ``BatchSpanProcessor``: spans are exported off the event loop, in the processor's
thread, and :meth:`TracingExtension.stop` flushes what is left within
:data:`FLUSH_TIMEOUT` (at most ``FLEET_SHUTDOWN_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import metadata
from typing import Any
from urllib.parse import unquote

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.errors import ConfigError, ControlSignal, ExecutionFailed
from shared.runtime.envelope import RequestEvent
from shared.runtime.extension import BaseExtension, Slot, WorkerContext
from shared.runtime.middleware import Answer, Call, CallNext, Middleware
from shared.runtime.spans import Tracing, mark_failed
from shared.settings import Settings
from shared.transports.base import Delivery, Outcome, Settlement, Transport

__all__ = ["FLUSH_TIMEOUT", "ExecutionSpans", "TracingExtension", "build_sampler", "resource_for"]

log = structlog.get_logger("fleet.tracing")

#: Longest wait for the last spans to be exported when the worker stops (never longer than
#: FLEET_SHUTDOWN_TIMEOUT); what is not out by then is dropped.
FLUSH_TIMEOUT = 5.0
_PROPAGATOR = TraceContextTextMapPropagator()
_ROOT_SAMPLERS = ("always_on", "always_off", "traceidratio")


def _version() -> str:
    try:
        return metadata.version("function-fleet")
    except metadata.PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def _pairs(text: str | None) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES``: ``key=value`` pairs, values percent-decoded; an entry
    without ``=`` or key is skipped (logged)."""
    found: dict[str, str] = {}
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        if not item.strip():
            continue
        if not sep or not key.strip():
            log.warning("OTEL_RESOURCE_ATTRIBUTES entry ignored", entry=item.strip())
            continue
        found[key.strip()] = unquote(value.strip())
    return found


def resource_for(settings: Settings, domain: str) -> Resource:
    """The resource of ``domain``'s worker: ``OTEL_RESOURCE_ATTRIBUTES``, then ``service.name``
    (``OTEL_SERVICE_NAME``, else the app id ``fleet-<domain>``), the consumer as
    ``service.instance.id``, the package version and the SDK's ``telemetry.sdk.*``."""
    attributes: dict[str, str] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "service.version": _version(),
        "service.instance.id": settings.consumer_name,
        "fleet.domain": domain,
        **_pairs(settings.otel_resource_attributes),
    }
    attributes["service.name"] = (
        settings.otel_service_name or attributes.get("service.name") or settings.group_for(domain)
    )
    return Resource(attributes)


def build_sampler(settings: Settings) -> sampling.Sampler:
    """``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` as a sampler; ``ConfigError`` for
    a name or ratio the fleet does not know."""
    name = settings.otel_traces_sampler.strip().lower()
    root = name.removeprefix("parentbased_")
    if root not in _ROOT_SAMPLERS:
        choices = ", ".join((*_ROOT_SAMPLERS, *(f"parentbased_{s}" for s in _ROOT_SAMPLERS)))
        raise ConfigError(f"OTEL_TRACES_SAMPLER={settings.otel_traces_sampler!r}: use one of {choices}")
    arg = settings.otel_traces_sampler_arg
    try:
        ratio = 1.0 if arg is None or not arg.strip() else float(arg)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={arg!r} is not a ratio between 0 and 1")
    chosen: sampling.Sampler = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
    }[root]
    return sampling.ParentBased(root=chosen) if name != root else chosen


def _otlp_exporter(settings: Settings) -> SpanExporter:
    url = settings.otlp_traces_url
    if settings.otel_exporter_otlp_protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={settings.otel_exporter_otlp_protocol}: workers export "
            "traces as OTLP http/protobuf only (the collector's port 4318)"
        )
    if not url or not url.startswith(("http://", "https://")):
        raise ConfigError(f"OTLP traces endpoint {url!r} is not an http(s) URL")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=url)


def _traceparent(span: Span) -> tuple[str, str | None]:
    context = span.get_span_context()
    state = context.trace_state.to_header() if context.trace_state else ""
    flags = int(context.trace_flags)
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}", state or None


class ExecutionSpans:
    """The middleware at ``Slot.TRACING``: an ``execute <slug>`` span around the chain, with the
    function, execution id, attempt, outcome and error code."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        ctx = call.ctx
        attributes: dict[str, Any] = {
            "faas.name": call.spec.slug,
            "faas.invocation_id": ctx.execution_id,
            "faas.trigger": "pubsub",
            "fleet.function": call.spec.slug,
            "fleet.execution_id": ctx.execution_id,
            "fleet.attempt": ctx.attempt,
        }
        if ctx.workflow_execution_id:
            attributes["fleet.workflow_execution_id"] = ctx.workflow_execution_id
        if ctx.node_id:
            attributes["fleet.node_id"] = ctx.node_id
        with self._tracer.start_as_current_span(
            f"execute {call.spec.slug}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            outcome = "completed"
            try:
                output = await call_next(call)
                if isinstance(output, Answer):
                    outcome = "answered"  # a duplicate, answered with the stored result
                return output
            except ExecutionFailed as exc:
                outcome = "failed"
                span.set_attribute("fleet.error_code", str(exc.code))
                mark_failed(span, exc)
                raise
            except ControlSignal as signal:
                outcome = type(signal).__name__.lower()  # retry, defer, drop
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except BaseException as exc:  # a handler bug: the runtime answers handler_error
                outcome = "failed"
                span.set_attribute("fleet.error_code", "handler_error")
                mark_failed(span, exc)
                raise
            finally:
                span.set_attribute("fleet.outcome", outcome)


class _DeliverySpans:
    """The ``process`` and ``publish`` spans of each delivery (the worker's
    :class:`~shared.runtime.extension.DeliveryTracer` side of :class:`TracingExtension`)."""

    def __init__(self, tracer: trace.Tracer, settings: Settings, domain: str) -> None:
        self._tracer = tracer
        self._topic = settings.topic_for(domain)
        self._group = settings.group_for(domain)
        self._results_topic = settings.results_topic
        self._process_name = f"process {self._topic}"
        self._publish_name = f"publish {self._results_topic}"
        self.system = "redis"
        #: publish spans started and not yet ended, by ``id(delivery)``.
        self.publishing: dict[int, Span] = {}

    async def process(
        self, delivery: Delivery, event: RequestEvent, run: Callable[[], Awaitable[Settlement]]
    ) -> Settlement:
        carrier = {"traceparent": event.traceparent or "", "tracestate": event.tracestate or ""}
        parent = _PROPAGATOR.extract(carrier, context=Context())
        attributes: dict[str, Any] = {
            "messaging.system": self.system,
            "messaging.operation": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": self._topic,
            "messaging.consumer.group.name": self._group,
            "messaging.message.id": delivery.message_id,
            "cloudevents.event_id": event.id,
            "cloudevents.event_source": event.source,
            "fleet.delivery_count": delivery.delivery_count,
        }
        with self._tracer.start_as_current_span(
            self._process_name,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=self._links(delivery, event),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                settlement = await run()
            except BaseException as exc:  # left for redelivery by the worker
                mark_failed(span, exc)
                raise
            span.set_attribute("fleet.settlement", settlement.outcome.value)
            if settlement.outcome is Outcome.DROP:
                span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
            return settlement

    @staticmethod
    def _links(delivery: Delivery, event: RequestEvent) -> list[Link]:
        """Under Dapr, daprd's own delivery span (its ``traceparent`` header), when it is not
        the request's: the consumer span is linked to it."""
        header = delivery.metadata.get("traceparent")
        if not header or header == event.traceparent:
            return []
        context = trace.get_current_span(_PROPAGATOR.extract({"traceparent": header})).get_span_context()
        return [Link(context)] if context.is_valid else []

    def result_trace(self, delivery: Delivery) -> tuple[str, str | None]:
        span = self.publishing.get(id(delivery))
        if span is None:
            span = self._tracer.start_span(
                self._publish_name,
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": self.system,
                    "messaging.operation": "publish",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": self._results_topic,
                },
            )
            self.publishing[id(delivery)] = span
        return _traceparent(span)

    def settled(self, settlements: Sequence[Settlement], *, published: bool) -> None:
        for settlement in settlements:
            span = self.publishing.pop(id(settlement.delivery), None)
            if span is None:
                continue
            if not published:
                span.set_status(Status(StatusCode.ERROR, "not published before the shutdown deadline"))
            span.end()

    def abandon(self) -> None:
        """End the publish spans of deliveries never settled (cancelled at the drain deadline)."""
        for span in self.publishing.values():
            span.set_status(Status(StatusCode.ERROR, "not settled before the shutdown deadline"))
            span.end()
        self.publishing.clear()


class TracingExtension(BaseExtension):
    """Traces one worker (module docstring): its own ``TracerProvider`` exporting OTLP/HTTP to
    ``Settings.otlp_traces_url`` (or to ``exporter``: tests pass an in-memory one), the
    ``execute`` span at ``Slot.TRACING``, the ``process``/``publish`` spans of each delivery,
    and a :class:`~shared.runtime.spans.Tracing` in ``ctx.resources`` for the spans of what a
    function calls (provider clients, webhooks, OCI runs).

    Raises:
        ConfigError: (when the worker is built) a protocol other than ``http/protobuf``, an
            endpoint that is not an http(s) URL, an unknown sampler or ratio.
    """

    name = "tracing"

    def __init__(self, settings: Settings, *, domain: str, exporter: SpanExporter | None = None) -> None:
        self.settings = settings
        self.provider = TracerProvider(
            sampler=build_sampler(settings),
            resource=resource_for(settings, domain),
            # Stopped with the worker (stop), not at interpreter exit: no process-wide hook.
            shutdown_on_exit=False,
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter or _otlp_exporter(settings)))
        self.tracing = Tracing(self.provider)
        self._spans = _DeliverySpans(self.tracing.tracer, settings, domain)
        self._middleware = ExecutionSpans(self.tracing.tracer)
        self._stopped = False

    # -- the worker's DeliveryTracer (shared.runtime.extension)
    def process(
        self, delivery: Delivery, event: RequestEvent, run: Callable[[], Awaitable[Settlement]]
    ) -> Awaitable[Settlement]:
        return self._spans.process(delivery, event, run)

    def result_trace(self, delivery: Delivery) -> tuple[str, str | None]:
        return self._spans.result_trace(delivery)

    def settled(self, settlements: Sequence[Settlement], *, published: bool) -> None:
        self._spans.settled(settlements, published=published)

    # -- Extension
    def middleware(self) -> Mapping[Slot, Middleware]:
        return {Slot.TRACING: self._middleware}

    def attach(self, transport: Transport) -> None:
        self._spans.system = transport.name  # messaging.system: redis | dapr

    async def start(self, ctx: WorkerContext) -> bool:
        ctx.resources.provide(Tracing, self.tracing)
        return True

    async def stop(self) -> None:
        """Export what is left, waiting at most :data:`FLUSH_TIMEOUT` (and no longer than
        ``FLEET_SHUTDOWN_TIMEOUT``); the provider is shut down either way."""
        if self._stopped:
            return
        self._stopped = True
        self._spans.abandon()
        timeout = min(FLUSH_TIMEOUT, max(self.settings.shutdown_timeout, 0.1))
        if not await _in_daemon_thread(self.provider.shutdown, timeout):
            log.warning("spans not exported before the shutdown deadline were dropped", timeout=timeout)


async def _in_daemon_thread(fn: Callable[[], object], timeout: float) -> bool:
    """Run blocking ``fn`` in a daemon thread (an exporter stuck on a dead collector must not
    hold the process at exit, as an executor thread would); False if it outlasts ``timeout``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finished() -> None:
        if not done.done():
            done.set_result(None)

    def target() -> None:
        try:
            fn()
        except Exception as exc:  # the SDK logs its own failures; never kill the thread loudly
            log.warning("tracing shutdown failed", error=repr(exc))
        finally:
            # RuntimeError: the loop closed meanwhile, and nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finished)

    threading.Thread(target=target, name="fleet-trace-flush", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        return False
    return True
