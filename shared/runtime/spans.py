"""What traced code uses: a worker's :class:`Tracing`, and the log processor adding trace ids.

A worker with tracing configured has a :class:`Tracing` in ``ctx.resources`` (provided by its
``TracingExtension``, ``shared/runtime/tracing.py``); a worker without has none, and
:func:`span` is then a ``nullcontext``: no OpenTelemetry object is created, and this module
imports no OpenTelemetry module until a :class:`Tracing` exists::

    with span(ctx.resources, "oci run", attributes={"fleet.oci.backend": "local"}) as current:
        ...  # ``current`` is None without tracing

Spans never record exception messages or stack traces (they may hold secrets, and the
collector is not scrubbed like logs are): a failure sets the span's status to ERROR with
``error.type`` = the error code of the contract, or the exception's class name.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import ExecutionFailed
from shared.resources import Resources

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span
    from opentelemetry.util.types import AttributeValue

__all__ = ["INSTRUMENTATION_NAME", "Tracing", "add_trace_ids", "mark_failed", "span"]

#: The instrumentation scope of every span the fleet makes itself.
INSTRUMENTATION_NAME = "function-fleet"

SpanKindName = Literal["internal", "client", "server", "producer", "consumer"]


class Tracing:
    """One worker's tracer: the spans of its deliveries and of what they call.

    ``provider`` is the worker's own ``TracerProvider`` (never the global one): two workers of
    one process trace apart.
    """

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace

        self.provider = provider
        self.tracer = provider.get_tracer(INSTRUMENTATION_NAME)
        self._kinds = {kind.name.lower(): kind for kind in trace.SpanKind}

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        kind: SpanKindName = "internal",
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> Iterator[Span]:
        """A child of the current span for the block, its status ERROR if the block raises."""
        with self.tracer.start_as_current_span(
            name,
            kind=self._kinds[kind],
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as current:
            try:
                yield current
            except BaseException as exc:
                mark_failed(current, exc)
                raise

    def inject(self, headers: dict[str, str]) -> None:
        """Add the current span's ``traceparent`` (and ``tracestate``) to outgoing ``headers``,
        unless the caller set its own."""
        if any(k.lower() == "traceparent" for k in headers):
            return
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        TraceContextTextMapPropagator().inject(headers)

    def instrument_httpx(self, client: httpx.AsyncClient) -> None:
        """Trace every request of ``client`` (one CLIENT span each, ``traceparent`` sent along)
        with this worker's provider; the span's URL leaves the query out (it may carry tokens
        or personal data)."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(
            client, tracer_provider=self.provider, request_hook=_url_without_query
        )


async def _url_without_query(current: Span, request: Any) -> None:
    attributes = getattr(current, "attributes", None) or {}
    url = str(request.url.copy_with(query=None, fragment=None))
    for key in ("http.url", "url.full"):
        if key in attributes:
            current.set_attribute(key, url)


def mark_failed(current: Span, exc: BaseException) -> None:
    """ERROR status and ``error.type``: the contract's code of an ``ExecutionFailed``, else the
    exception's class (never its message)."""
    from opentelemetry.trace import Status, StatusCode

    error_type = str(exc.code) if isinstance(exc, ExecutionFailed) else type(exc).__name__
    current.set_attribute("error.type", error_type)
    current.set_status(Status(StatusCode.ERROR, error_type))


@contextlib.contextmanager
def span(
    resources: Resources,
    name: str,
    *,
    kind: SpanKindName = "internal",
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span | None]:
    """:meth:`Tracing.span` of the worker owning ``resources``; yields ``None`` (and creates
    nothing) when that worker does not trace."""
    tracing = resources.find(Tracing)
    if tracing is None:
        yield None
        return
    with tracing.span(name, kind=kind, attributes=attributes) as current:
        yield current


def add_trace_ids(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` (hex, as in ``traceparent``) of the
    current span, when there is one. Nothing is imported for it: without OpenTelemetry loaded
    there can be no span."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return event_dict
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict
