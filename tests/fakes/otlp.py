"""A fake OpenTelemetry collector: the OTLP/HTTP trace receiver on loopback (aiohttp, port 0).

It accepts what the OTLP/HTTP specification says a receiver accepts — ``POST /v1/traces`` with
``Content-Type: application/x-protobuf`` and an ``ExportTraceServiceRequest`` body (gzip when
``Content-Encoding: gzip``) — and answers ``200`` with an empty ``ExportTraceServiceResponse``;
anything else is answered ``404`` / ``415`` / ``400`` and recorded all the same. Spans are
decoded with the protobuf classes of ``opentelemetry-proto`` into :class:`ReceivedSpan`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["FakeCollector", "ReceivedRequest", "ReceivedSpan"]

PROTOBUF = "application/x-protobuf"
#: ``Span.SpanKind`` numbers of the OTLP protocol.
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class ReceivedSpan:
    """One span as the collector decoded it (ids in lower-case hex, as in ``traceparent``)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


@dataclass
class FakeCollector:
    requests: list[ReceivedRequest] = field(default_factory=list)
    spans: list[ReceivedSpan] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def endpoint(self) -> str:
        """The base URL to give as ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeCollector:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans received once ``predicate(spans)`` holds (AssertionError after ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self.spans):
            if loop.time() > deadline:
                raise AssertionError(f"the collector got {[s.name for s in self.spans]} within {timeout}s")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(0.01, deadline - loop.time()))
        return self.spans

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = ReceivedRequest(request.path, dict(request.headers), body)
        self.requests.append(seen)
        seen.status = 200
        if request.method != "POST" or request.path != "/v1/traces":
            seen.status = 404
        elif request.content_type != PROTOBUF:
            seen.status = 415
        else:
            try:
                if request.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                self._decode(ExportTraceServiceRequest.FromString(body))
            except (DecodeError, OSError):
                seen.status = 400
        self._arrived.set()
        if seen.status != 200:
            return web.Response(status=seen.status)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF)

    def _decode(self, export: ExportTraceServiceRequest) -> None:
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            resource=resource,
                            scope=scope_spans.scope.name,
                        )
                    )
