"""A fake daprd with the ``pubsub.redis`` component, built from ../shared/reference/dapr-wire.md.

It talks to a REAL Redis (the ``redis_url`` fixture) exactly as daprd's Redis Streams component
does, and to the app exactly as daprd's HTTP app channel does, so the Dapr transport is tested
on the wire it meets in production:

* **subscribe side** (§1, §2): ``GET /dapr/config`` and ``GET /dapr/subscribe`` once the app port
  accepts connections; ``XGROUP CREATE <topic> <app-id> 0 MKSTREAM``; ``XREADGROUP GROUP <app-id>
  <app-id> COUNT <queueDepth> …``; one buffer of ``queueDepth`` drained by ``concurrency``
  workers; each entry's ``data`` bytes POSTed unchanged to the route (or batched into the bulk
  envelope); the answer interpreted per the §2 response table; SUCCESS → ``XACK``; DROP →
  original ``data`` + ``metadata`` (+ ``pubsubName``) ``XADD``ed to the dead-letter topic, then
  ``XACK``; retriable errors → the inbound resiliency retry policy (if configured), then the
  dead-letter topic (if the subscription has one), else the component's version-specific
  behaviour (≤ 1.16: left pending; ≥ 1.17: acked and lost); the reclaim loop (``XPENDING`` /
  ``XCLAIM`` after ``processingTimeout``);
* **API side** (§3, §5): ``POST|PUT /v1.0/publish/{pubsub}/{topic}`` builds the CloudEvent
  envelope (or keeps a ``application/cloudevents+json`` body per the FromCloudEvent rules),
  serialises it like Go's ``encoding/json`` and ``XADD``s it; ``GET /v1.0/healthz[/outbound]``;
  ``DAPR_API_TOKEN`` checking (401 ``invalid api token``);
* **service invocation** (not in dapr-wire.md; from daprd's HTTP app channel,
  dapr/dapr pkg/channel/http/http_channel.go ``constructRequest``, and the caller sidecar's
  ``dapr-caller-app-id``/``dapr-callee-app-id`` metadata): ``<verb> /v1.0/invoke/{app-id}/method/
  {method}`` reaches the app of ``app-id`` (this sidecar's own, or a peer's in :attr:`peers`, as
  daprd would over the internal port 50002) as ``<verb> /<method>`` with the caller's headers,
  its ``Content-Type``, a continued ``traceparent``, ``dapr-caller-app-id`` /
  ``dapr-callee-app-id`` and the target's app token as ``dapr-api-token`` (the caller's own
  ``dapr-api-token`` is the caller sidecar's and is not passed on); the app's status, body and
  ``Content-Type`` go back to the caller unchanged. An app that cannot be reached is 500
  ``ERR_DIRECT_INVOKE``.

Every request in either direction is recorded (headers + exact body) for assertions.

Choices where dapr-wire.md is silent (kept in one place, named here): the bulk request's
``Content-Type`` (``application/json``); bulk entries carry the event re-serialised from a Go
``map[string]interface{}`` (numbers become float64); a publish without an incoming
``traceparent`` gets ``""`` trace fields (tracing off); ``time`` is written in UTC.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import aiohttp
from aiohttp import web
from redis import exceptions as redis_errors
from redis.asyncio import Redis

__all__ = [
    "AppCall",
    "FakeDaprd",
    "GoNumber",
    "InboundRetry",
    "PublishError",
    "RecordedPublish",
    "Subscription",
    "continue_span",
    "envelope_from_cloudevent",
    "go_json",
    "new_envelope",
    "parse_float64",
    "parse_json_exact",
    "publish_like_daprd",
]

DEFAULT_EVENT_TYPE = "com.dapr.event.sent"
BULK_EVENT_TYPE = "com.dapr.event.sent.bulk"
CLOUDEVENTS_JSON = "application/cloudevents+json"
#: Header names daprd never copies from message metadata (§2 Delivery).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


# ====================================================================== Go encoding/json
class GoNumber(str):
    """A JSON number kept as its literal text (Go ``json.Number``: "exact numbers")."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON literal {name}")


def parse_json_exact(raw: bytes) -> Any:
    """Parse JSON keeping numbers' literal text (§3: application/json data, exact numbers).
    Invalid UTF-8 becomes U+FFFD, as Go's decoder does. Raises ValueError on invalid JSON."""
    return json.loads(
        raw.decode("utf-8", "replace"),
        parse_int=GoNumber,
        parse_float=GoNumber,
        parse_constant=_reject_constant,
    )


def _float64(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} out of float64 range")
    return value


def parse_float64(raw: bytes) -> Any:
    """Parse JSON the way Go unmarshals into ``interface{}``: every number is a float64."""
    return json.loads(
        raw.decode("utf-8", "replace"),
        parse_int=_float64,
        parse_float=_float64,
        parse_constant=_reject_constant,
    )


_ESCAPE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group(0)
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    if "\ud800" <= ch <= "\udfff":  # a lone surrogate is invalid UTF-16: Go writes U+FFFD
        return "\\ufffd"
    return f"\\u{ord(ch):04x}"


def _go_string(value: str) -> str:
    return '"' + _ESCAPE.sub(_escape_char, value) + '"'


def _go_float(value: float) -> str:
    """``strconv.AppendFloat(v, 'f' or 'e', -1, 64)`` as encoding/json uses it."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    shortest = repr(value)  # Python's repr is the shortest round-tripping digits, like Go's -1
    if 1e-6 <= abs(value) < 1e21:
        text = format(Decimal(shortest), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    # Exponent form; encoding/json turns e-07 into e-7.
    mantissa, _, exponent = shortest.partition("e")
    sign, digits = exponent[0], exponent[1:]
    if sign == "-" and len(digits) == 2 and digits[0] == "0":
        digits = digits[1:]
    return f"{mantissa}e{sign}{digits}"


def _go_encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, GoNumber):
        out.append(str.__str__(value))
    elif isinstance(value, str):
        out.append(_go_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_go_float(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for index, key in enumerate(sorted(str(k) for k in value)):
            if index:
                out.append(",")
            out.append(_go_string(key))
            out.append(":")
            _go_encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _go_encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def go_json(value: Any) -> bytes:
    """Go ``encoding/json.Marshal`` of a map/slice tree: sorted keys, compact, ``<>&`` and
    U+2028/U+2029 escaped as ``\\u00XX``, raw UTF-8 otherwise."""
    out: list[str] = []
    _go_encode(value, out)
    return "".join(out).encode("utf-8")


# ====================================================================== envelopes (§3)
class PublishError(Exception):
    """A publish API error: HTTP status and Dapr ``errorCode``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> bytes:
        return go_json(
            {
                "errorCode": self.code,
                "message": self.message,
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "DAPR_PUBSUB_" + self.code.removeprefix("ERR_PUBSUB_"),
                        "domain": "dapr.io",
                        "metadata": {},
                    }
                ],
            }
        )


_HEX = re.compile(r"^[0-9a-f]+$")


def continue_span(parent: str | None) -> str:
    """The W3C traceparent of a span daprd starts under ``parent``: same trace id and flags, a
    new span id. No valid parent → ``""`` (this fake models daprd with tracing off)."""
    if not parent:
        return ""
    parts = parent.strip().split("-")
    if len(parts) < 4:
        return ""
    version, trace_id, span_id, flags = parts[0], parts[1], parts[2], parts[3]
    valid = (
        len(version) == 2
        and len(trace_id) == 32
        and len(span_id) == 16
        and len(flags) == 2
        and all(_HEX.match(p) for p in (version, trace_id, span_id, flags))
        and trace_id != "0" * 32
    )
    if not valid:
        return ""
    return f"00-{trace_id}-{os.urandom(8).hex()}-{flags}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def _ttl_seconds(metadata: Mapping[str, str]) -> float | None:
    raw = metadata.get("ttlInSeconds", metadata.get("ttl"))
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    match = _DURATION.match(raw)
    if match is None:
        raise PublishError(400, "ERR_PUBSUB_REQUEST_METADATA", f"invalid ttl {raw!r}")
    number, unit = float(match.group(1)), match.group(2)
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _apply_ttl(event: dict[str, Any], metadata: Mapping[str, str], now: datetime) -> None:
    ttl = _ttl_seconds(metadata)
    if ttl is not None:
        event["expiration"] = _rfc3339(now + timedelta(seconds=ttl))


def _cloudevent_overrides(metadata: Mapping[str, str]) -> dict[str, str]:
    """``cloudevent.*`` metadata keys, matched case-insensitively (§3)."""
    return {
        k.lower().removeprefix("cloudevent."): v
        for k, v in metadata.items()
        if k.lower().startswith("cloudevent.")
    }


def new_envelope(
    body: bytes,
    content_type: str | None,
    *,
    topic: str,
    pubsub: str,
    source: str,
    span_traceparent: str = "",
    span_tracestate: str = "",
    metadata: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """daprd's ``NewCloudEventsEnvelope`` for a body that is not a CloudEvent (§3 table)."""
    metadata = metadata or {}
    now = now or datetime.now(UTC)
    overrides = _cloudevent_overrides(metadata)
    traceparent = overrides.get("traceparent") or overrides.get("traceid") or span_traceparent
    event: dict[str, Any] = {
        "id": overrides.get("id") or str(uuid.uuid4()),
        "source": overrides.get("source") or source or "Dapr",
        "type": overrides.get("type") or DEFAULT_EVENT_TYPE,
        "specversion": "1.0",
        "datacontenttype": content_type if content_type else "text/plain",
        "topic": topic,
        "pubsubname": pubsub,
        "traceid": traceparent,
        "traceparent": traceparent,
        "tracestate": overrides.get("tracestate") or span_tracestate,
        "time": _rfc3339(now),
    }
    if overrides.get("subject"):
        event["subject"] = overrides["subject"]
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base == "application/json":
        try:
            event["data"] = parse_json_exact(body)
        except ValueError:
            event["data"] = body.decode("utf-8", "replace")
    elif base == "application/octet-stream":
        event["data_base64"] = base64.b64encode(body).decode()
    else:
        event["data"] = body.decode("utf-8", "replace")
    _apply_ttl(event, metadata, now)
    return event


def envelope_from_cloudevent(
    body: bytes,
    *,
    topic: str,
    pubsub: str,
    span_traceparent: str = "",
    span_tracestate: str = "",
    metadata: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """daprd's ``FromCloudEvent`` for an ``application/cloudevents+json`` body (§3)."""
    metadata = metadata or {}
    now = now or datetime.now(UTC)
    try:
        event = parse_float64(body)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise PublishError(500, "ERR_PUBSUB_CLOUD_EVENTS_SER", "body is not a CloudEvent JSON object")
    event["topic"] = topic
    event["pubsubname"] = pubsub
    event.setdefault("time", _rfc3339(now))
    event.setdefault("tracestate", span_tracestate)
    if "traceid" not in event:
        event["traceid"] = span_traceparent
        event["traceparent"] = span_traceparent
    for key, default in (("source", "Dapr"), ("type", DEFAULT_EVENT_TYPE), ("specversion", "1.0")):
        if event.get(key) is None:
            event[key] = default
    _apply_ttl(event, metadata, now)
    return event


def _parse_go_bool(raw: str) -> bool:
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise PublishError(400, "ERR_PUBSUB_REQUEST_METADATA", f"rawPayload value {raw!r} is not a bool")


def build_stored_data(
    body: bytes,
    content_type: str | None,
    *,
    topic: str,
    pubsub: str,
    app_id: str,
    metadata: Mapping[str, str],
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> bytes:
    """The ``data`` bytes daprd's publish API would XADD for this request (§3)."""
    raw = metadata.get("rawPayload")
    if raw is not None and _parse_go_bool(raw):
        return body
    span = continue_span(traceparent)
    span_state = (tracestate or "") if span else ""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base == CLOUDEVENTS_JSON:
        event = envelope_from_cloudevent(
            body,
            topic=topic,
            pubsub=pubsub,
            span_traceparent=span,
            span_tracestate=span_state,
            metadata=metadata,
        )
    else:
        event = new_envelope(
            body,
            content_type,
            topic=topic,
            pubsub=pubsub,
            source=app_id,
            span_traceparent=span,
            span_tracestate=span_state,
            metadata=metadata,
        )
    return go_json(event)


async def publish_like_daprd(
    redis: Redis,
    topic: str,
    body: bytes,
    *,
    content_type: str | None = "application/json",
    pubsub: str = "fleet-pubsub",
    app_id: str = "orchestrator",
    metadata: Mapping[str, str] | None = None,
    traceparent: str | None = None,
) -> bytes:
    """Write ``body`` to ``topic`` exactly as ``POST /v1.0/publish/{pubsub}/{topic}`` with this
    ``Content-Type`` (from app ``app_id``) would; returns the stored ``data`` bytes."""
    metadata = dict(metadata or {})
    data = build_stored_data(
        body,
        content_type,
        topic=topic,
        pubsub=pubsub,
        app_id=app_id,
        metadata=metadata,
        traceparent=traceparent,
    )
    await redis.xadd(topic, {"data": data, "metadata": go_json(metadata)})
    return data


def _invoke_error(message: str) -> web.Response:
    body = go_json({"errorCode": "ERR_DIRECT_INVOKE", "message": message})
    return web.Response(status=500, body=body, content_type="application/json")


# ====================================================================== records
@dataclass
class RecordedPublish:
    """One request to the publish API, as received, and what became of it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    stored: bytes | None = None


@dataclass
class AppCall:
    """One call daprd made to the app (discovery or delivery) and the app's answer."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    reply: bytes | None = None
    error: str | None = None
    bulk: bool = False
    #: a service invocation (not a pub/sub delivery).
    invocation: bool = False


@dataclass(frozen=True)
class InboundRetry:
    """A resiliency ``constant`` retry policy on the component's inbound target."""

    max_retries: int = 3  # -1 = unlimited
    interval: float = 0.0


@dataclass
class Subscription:
    pubsubname: str
    topic: str
    path: str
    dead_letter_topic: str | None = None
    bulk: bool = False
    bulk_max_messages: int = 100
    bulk_max_await_ms: int = 1000
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class _Message:
    stream_id: str
    data: bytes
    metadata: dict[str, str]


Verdict = Literal["success", "retry", "drop", "not_found"]


# ====================================================================== the fake
async def _cancel_all(tasks: list[asyncio.Task[None]] | list[Any]) -> None:
    """Cancel ``tasks`` and wait for them. Cancels again while one is still running: on Python
    3.11 a cancel that lands as an ``asyncio.timeout`` inside redis-py expires can be swallowed."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    await asyncio.gather(*tasks, return_exceptions=True)


class FakeDaprd:
    """A daprd sidecar with one ``pubsub.redis`` component, on loopback.

    Parameters:
        redis_url: the real Redis the component uses.
        app_id: the app id = consumer group = consumer name (§1).
        pubsub_name: the component's name.
        version: ``"1.16"`` leaves unhandled errors pending (redelivered by the reclaim loop);
            ``"1.17"`` (and later) acks them — lost unless dead-lettered (§0.1). Also decides
            whether an app 404 is dead-lettered (≥ 1.17) or plainly acked (1.16).
        api_token: ``DAPR_API_TOKEN``: the app must send it to the API (else 401).
        app_api_token: ``APP_API_TOKEN``: sent to the app as ``dapr-api-token``.
        inbound_retry: the component's inbound resiliency retry policy; ``None`` = no policy.
        queue_depth / concurrency: component metadata (§1 table).
        read_block_ms: XREADGROUP BLOCK (the component's ``readTimeout``).
        processing_timeout_ms / redeliver_interval_ms: reclaim settings; either 0 disables.
        outbound_ready: what ``GET /v1.0/healthz/outbound`` reports (changeable later).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        app_id: str,
        pubsub_name: str = "fleet-pubsub",
        version: str = "1.16",
        api_token: str | None = None,
        app_api_token: str | None = None,
        inbound_retry: InboundRetry | None = None,
        queue_depth: int = 100,
        concurrency: int = 10,
        read_block_ms: int = 100,
        processing_timeout_ms: int = 60_000,
        redeliver_interval_ms: int = 15_000,
        app_host: str = "127.0.0.1",
        outbound_ready: bool = True,
        stop_timeout: float = 30.0,
    ) -> None:
        self.redis_url = redis_url
        self.app_id = app_id
        self.pubsub_name = pubsub_name
        self.version = tuple(int(p) for p in version.split(".")[:2])
        self.api_token = api_token
        self.app_api_token = app_api_token
        self.inbound_retry = inbound_retry
        self.queue_depth = queue_depth
        self.concurrency = concurrency
        self.read_block_ms = read_block_ms
        self.processing_timeout_ms = processing_timeout_ms
        self.redeliver_interval_ms = redeliver_interval_ms
        self.app_host = app_host
        self.outbound_ready = outbound_ready
        self.stop_timeout = stop_timeout
        #: publishes to fail with 500 ERR_PUBSUB_PUBLISH_MESSAGE (a broker error), counted down.
        self.fail_next_publishes = 0
        #: other sidecars by app id: service invocations of those app ids reach their apps.
        self.peers: dict[str, FakeDaprd] = {}
        # records
        self.publishes: list[RecordedPublish] = []
        self.app_calls: list[AppCall] = []
        self.subscriptions: list[Subscription] = []
        self.acked: list[tuple[str, str]] = []
        self.dead_lettered: list[tuple[str, str]] = []
        self.left_pending: list[tuple[str, str]] = []
        self.lost: list[tuple[str, str]] = []
        # runtime state
        self.http_port = 0
        self.app_port: int | None = None
        self._redis: Redis | None = None
        self._runner: web.AppRunner | None = None
        self._app_session: aiohttp.ClientSession | None = None
        self._buffer: asyncio.Queue[tuple[Subscription, _Message]] = asyncio.Queue(maxsize=queue_depth)
        self._bulk_queues: dict[
            int, asyncio.Queue[tuple[_Message, dict[str, Any], asyncio.Future[Verdict]]]
        ] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: list[asyncio.Task[None]] = []
        self._bulk_sends: set[asyncio.Task[None]] = set()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> FakeDaprd:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def redis(self) -> Redis:
        assert self._redis is not None, "start() first"
        return self._redis

    async def start(self) -> None:
        """Serve the HTTP API on a free loopback port (:attr:`http_port`)."""
        self._redis = Redis.from_url(self.redis_url, decode_responses=False)
        app = web.Application(middlewares=[self._token_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("POST", "/v1.0/publish/{pubsub}/{topic:.*}", self._on_publish)
        app.router.add_route("PUT", "/v1.0/publish/{pubsub}/{topic:.*}", self._on_publish)
        app.router.add_get("/v1.0/healthz", self._on_healthz)
        app.router.add_get("/v1.0/healthz/outbound", self._on_healthz_outbound)
        app.router.add_route("*", "/v1.0/invoke/{app_id}/method/{method:.*}", self._on_invoke)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])

    async def attach_app(self, app_port: int, *, timeout: float = 10.0) -> None:
        """What daprd does once started: wait for the app port, discover, subscribe."""
        self.app_port = app_port
        self._app_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        await self._wait_for_app_port(timeout)
        await self._discover()
        for index, sub in enumerate(self.subscriptions):
            await self._ensure_group(sub.topic)
            self._readers.append(
                asyncio.create_task(self._read_loop(sub), name=f"fake-daprd-read-{sub.topic}")
            )
            if self.processing_timeout_ms and self.redeliver_interval_ms:
                self._readers.append(asyncio.create_task(self._reclaim_loop(sub), name="fake-daprd-reclaim"))
            if sub.bulk:
                self._bulk_queues[index] = asyncio.Queue()
                self._tasks.append(asyncio.create_task(self._bulk_loop(index, sub), name="fake-daprd-bulk"))
        for n in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"fake-daprd-worker-{n}"))

    async def stop_subscriptions(self) -> None:
        """As on SIGTERM: stop reading, let in-flight deliveries finish (bounded), then stop.
        Buffered entries stay pending (§5)."""
        self._stopping = True
        await _cancel_all(self._readers)
        self._readers.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.stop_timeout)
        await _cancel_all([*self._tasks, *self._bulk_sends])
        self._tasks.clear()

    async def close(self) -> None:
        await self.stop_subscriptions()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._app_session is not None:
            await self._app_session.close()
            self._app_session = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # ------------------------------------------------------------------ API side
    @web.middleware
    async def _token_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        exempt = request.method == "GET" and request.path in ("/v1.0/healthz", "/v1.0/healthz/outbound")
        if self.api_token and not exempt and request.headers.get("dapr-api-token") != self.api_token:
            return web.Response(status=401, text="invalid api token")
        response: web.StreamResponse = await handler(request)
        return response

    async def _on_healthz(self, request: web.Request) -> web.StreamResponse:
        if self.app_port is None:
            return web.Response(status=500, body=go_json({"errorCode": "ERR_HEALTH_NOT_READY"}))
        return web.Response(status=204)

    async def _on_healthz_outbound(self, request: web.Request) -> web.StreamResponse:
        if not self.outbound_ready:
            return web.Response(status=500, body=go_json({"errorCode": "ERR_HEALTH_NOT_READY"}))
        return web.Response(status=204)

    async def _on_publish(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = RecordedPublish(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
        )
        self.publishes.append(record)
        try:
            record.stored = await self._publish(request, body)
        except PublishError as exc:
            record.status = exc.status
            return web.Response(status=exc.status, body=exc.body(), content_type="application/json")
        record.status = 204
        return web.Response(status=204)

    async def _publish(self, request: web.Request, body: bytes) -> bytes:
        pubsub, topic = request.match_info["pubsub"], request.match_info["topic"]
        if not pubsub:
            raise PublishError(404, "ERR_PUBSUB_EMPTY", "pubsub name is empty")
        if pubsub != self.pubsub_name:
            raise PublishError(404, "ERR_PUBSUB_NOT_FOUND", f"pubsub {pubsub} not found")
        if not topic:
            raise PublishError(404, "ERR_TOPIC_NAME_EMPTY", "topic is empty")
        metadata = {
            k.removeprefix("metadata."): v for k, v in request.query.items() if k.startswith("metadata.")
        }
        data = build_stored_data(
            body,
            request.headers.get("Content-Type"),
            topic=topic,
            pubsub=pubsub,
            app_id=self.app_id,
            metadata=metadata,
            traceparent=request.headers.get("traceparent"),
            tracestate=request.headers.get("tracestate"),
        )
        if self.fail_next_publishes > 0:
            self.fail_next_publishes -= 1
            raise PublishError(500, "ERR_PUBSUB_PUBLISH_MESSAGE", "simulated broker error on XADD")
        try:
            await self.redis.xadd(topic, {"data": data, "metadata": go_json(metadata)})
        except redis_errors.RedisError as exc:
            raise PublishError(500, "ERR_PUBSUB_PUBLISH_MESSAGE", str(exc)) from exc
        return data

    # ------------------------------------------------------------------ service invocation
    async def _on_invoke(self, request: web.Request) -> web.StreamResponse:
        target_id, method = request.match_info["app_id"], request.match_info["method"]
        target = self if target_id == self.app_id else self.peers.get(target_id)
        if target is None or target.app_port is None:
            return _invoke_error(f"app {target_id} not found")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() not in ("host", "dapr-api-token")
        }
        if request.content_type:
            headers["Content-Type"] = request.headers.get("Content-Type", request.content_type)
        headers["dapr-caller-app-id"] = self.app_id
        headers["dapr-callee-app-id"] = target_id
        span = continue_span(request.headers.get("traceparent"))
        if span:
            headers["traceparent"] = span
        return await target.invoke_app(request.method, method, headers, await request.read())

    async def invoke_app(self, verb: str, method: str, headers: dict[str, str], body: bytes) -> web.Response:
        """What this sidecar does with an invocation that reached it: call its app, answer what
        the app answered."""
        if self.app_api_token:
            headers = {**headers, "dapr-api-token": self.app_api_token}
        call = AppCall(verb, "/" + method.lstrip("/"), headers, body, invocation=True)
        self.app_calls.append(call)
        session = self._app_session
        if session is None:
            return _invoke_error("app channel not ready")
        try:
            async with session.request(verb, self._app_url(method), data=body, headers=headers) as response:
                call.status, call.reply = response.status, await response.read()
                reply_headers = {
                    k: v
                    for k, v in response.headers.items()
                    if k.lower() not in _HOP_BY_HOP and k.lower() not in ("date", "server")
                }
                # daprd answers with the app's content type (it is hop-by-hop only for the body
                # this fake re-frames, not for what the caller reads).
                if "Content-Type" in response.headers:
                    reply_headers["Content-Type"] = response.headers["Content-Type"]
        except (aiohttp.ClientError, OSError) as exc:
            call.error = repr(exc)
            return _invoke_error(f"cannot reach the app: {exc!r}")
        return web.Response(status=call.status, body=call.reply, headers=reply_headers)

    # ------------------------------------------------------------------ discovery
    async def _wait_for_app_port(self, timeout: float) -> None:
        assert self.app_port is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection(self.app_host, self.app_port)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return

    def _app_url(self, path: str) -> str:
        return f"http://{self.app_host}:{self.app_port}/{path.lstrip('/')}"

    def _discovery_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Dapr-App-Id": self.app_id}
        if self.app_api_token:
            headers["dapr-api-token"] = self.app_api_token
        return headers

    async def _discover(self) -> None:
        assert self._app_session is not None
        for path in ("/dapr/config", "/dapr/subscribe"):
            call = AppCall("GET", path, self._discovery_headers(), b"")
            self.app_calls.append(call)
            async with self._app_session.get(self._app_url(path), headers=call.headers) as response:
                call.status, call.reply = response.status, await response.read()
        subscribe = self.app_calls[-1]
        if subscribe.status != 200 or not (subscribe.reply or b"").strip():
            return  # 404 = no programmatic subscriptions; other codes are logged by daprd
        for item in json.loads(subscribe.reply or b"[]"):
            sub = self._subscription(item)
            if sub is not None:
                self.subscriptions.append(sub)

    def _subscription(self, item: dict[str, Any]) -> Subscription | None:
        if item.get("pubsubname") != self.pubsub_name:
            return None  # another component: not ours to serve
        path = None
        routes = item.get("routes") or {}
        for rule in routes.get("rules") or []:
            if rule.get("match"):
                raise NotImplementedError("this fake does not evaluate CEL route rules")
            path = path or rule.get("path")
        path = path or routes.get("default") or item.get("route")
        if not path:
            return None  # discarded with a warning by daprd
        bulk = item.get("bulkSubscribe") or {}
        return Subscription(
            pubsubname=item["pubsubname"],
            topic=item["topic"],
            path="/" + str(path).lstrip("/"),
            dead_letter_topic=item.get("deadLetterTopic") or None,
            bulk=bool(bulk.get("enabled")),
            bulk_max_messages=int(bulk.get("maxMessagesCount") or 100),
            bulk_max_await_ms=int(bulk.get("maxAwaitDurationMs") or 1000),
            metadata=dict(item.get("metadata") or {}),
        )

    # ------------------------------------------------------------------ component: read
    async def _ensure_group(self, topic: str) -> None:
        try:
            await self.redis.xgroup_create(topic, self.app_id, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def _message(entry_id: Any, fields: Mapping[bytes, bytes]) -> _Message:
        metadata: dict[str, str] = {}
        raw = fields.get(b"metadata")
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None  # daprd warns and drops bad metadata
            if isinstance(parsed, dict):
                metadata = {str(k): str(v) for k, v in parsed.items()}
        stream_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return _Message(stream_id, fields.get(b"data", b""), metadata)

    async def _read_loop(self, sub: Subscription) -> None:
        while not self._stopping:
            try:
                response = await self.redis.xreadgroup(
                    self.app_id,
                    self.app_id,
                    {sub.topic: ">"},
                    count=self.queue_depth,
                    block=self.read_block_ms,
                )
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group(sub.topic)
                continue
            for _, entries in response or []:
                for entry_id, fields in entries:
                    await self._buffer.put((sub, self._message(entry_id, fields)))

    async def _reclaim_loop(self, sub: Subscription) -> None:
        while not self._stopping:
            await self._reclaim(sub)
            await asyncio.sleep(self.redeliver_interval_ms / 1000)

    async def _reclaim(self, sub: Subscription) -> None:
        while True:
            pending = await self.redis.xpending_range(
                sub.topic, self.app_id, min="-", max="+", count=self.queue_depth
            )
            ids = [
                p["message_id"] for p in pending if p["time_since_delivered"] >= self.processing_timeout_ms
            ]
            if not ids:
                return
            claimed = await self.redis.xclaim(
                sub.topic, self.app_id, self.app_id, self.processing_timeout_ms, ids
            )
            live = [(entry_id, fields) for entry_id, fields in claimed if fields]
            gone = set(ids) - {entry_id for entry_id, _ in live}
            if gone:  # deleted/trimmed while pending: purged (§1)
                await self.redis.xack(sub.topic, self.app_id, *gone)
            if not live:
                return
            for entry_id, fields in live:
                await self._buffer.put((sub, self._message(entry_id, fields)))

    # ------------------------------------------------------------------ component: handle
    async def _worker(self) -> None:
        while True:
            sub, message = await self._buffer.get()
            if self._stopping:
                continue  # stays pending for the next subscriber
            self._busy += 1
            self._idle.clear()
            try:
                await self._handle(sub, message)
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    async def _handle(self, sub: Subscription, message: _Message) -> None:
        started = time.monotonic()
        try:
            event = parse_float64(message.data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            # Invalid CloudEvent JSON: dead-lettered if configured, else an error (§2).
            await self._give_up(sub, message, started, dead_letter=True)
            return
        if self._expired(event):
            if sub.dead_letter_topic:
                with contextlib.suppress(redis_errors.RedisError):
                    await self._dead_letter(sub, message)
            await self._ack(sub, message)
            return
        retries = 0
        while True:
            if sub.bulk:
                verdict = await self._deliver_via_bulk(sub, message, event)
            else:
                verdict = await self._deliver(sub, message, event)
            if verdict != "retry" or self._stopping:
                break
            policy = self.inbound_retry
            if policy is None or (0 <= policy.max_retries <= retries):
                break
            retries += 1
            await asyncio.sleep(policy.interval)
        if verdict == "success" or (verdict == "not_found" and self.version < (1, 17)):
            await self._ack(sub, message)
        elif verdict in ("drop", "not_found"):
            if sub.dead_letter_topic:
                try:
                    await self._dead_letter(sub, message)
                except redis_errors.RedisError:
                    await self._component_error(sub, message, started)
                    return
            await self._ack(sub, message)
        else:
            await self._give_up(sub, message, started, dead_letter=True)

    def _expired(self, event: dict[str, Any]) -> bool:
        expiration = event.get("expiration")
        if not isinstance(expiration, str):
            return False
        try:
            moment = datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        except ValueError:
            return False
        return moment < datetime.now(UTC)

    async def _give_up(
        self, sub: Subscription, message: _Message, started: float, *, dead_letter: bool
    ) -> None:
        """A retriable error the policy did not absorb: dead letter, else the component."""
        if self._stopping:
            # Shutdown: nothing is dead-lettered; the handler blocks, the entry stays pending.
            self.left_pending.append((sub.topic, message.stream_id))
            return
        if dead_letter and sub.dead_letter_topic:
            try:
                await self._dead_letter(sub, message)
            except redis_errors.RedisError:
                await self._component_error(sub, message, started)
                return
            await self._ack(sub, message)
            return
        await self._component_error(sub, message, started)

    async def _component_error(self, sub: Subscription, message: _Message, started: float) -> None:
        deadline_passed = (
            self.processing_timeout_ms
            and self.redeliver_interval_ms
            and (time.monotonic() - started) * 1000 > self.processing_timeout_ms
        )
        if self.version >= (1, 17) and not deadline_passed:
            await self._ack(sub, message)
            self.lost.append((sub.topic, message.stream_id))
        else:
            self.left_pending.append((sub.topic, message.stream_id))

    async def _ack(self, sub: Subscription, message: _Message) -> None:
        await self.redis.xack(sub.topic, self.app_id, message.stream_id)
        self.acked.append((sub.topic, message.stream_id))

    async def _dead_letter(self, sub: Subscription, message: _Message) -> None:
        assert sub.dead_letter_topic is not None
        metadata = {**message.metadata, "pubsubName": sub.pubsubname}
        await self.redis.xadd(sub.dead_letter_topic, {"data": message.data, "metadata": go_json(metadata)})
        self.dead_lettered.append((sub.topic, message.stream_id))

    # ------------------------------------------------------------------ app channel
    def _delivery_headers(self, sub: Subscription, metadata: Mapping[str, str], event: Any) -> dict[str, str]:
        headers = {"Content-Type": CLOUDEVENTS_JSON, "pubsubname": sub.pubsubname}
        for key, value in metadata.items():
            lower = key.lower()
            if lower in _HOP_BY_HOP or lower == "pubsubname":
                continue
            headers["dapr-" + key if lower.startswith("grpc-") else key] = value
        if isinstance(event, dict):
            parent = event.get("traceparent") or event.get("traceid")
            span = continue_span(parent if isinstance(parent, str) else None)
            if span:
                headers["traceparent"] = span
                state = event.get("tracestate")
                if isinstance(state, str) and state:
                    headers["tracestate"] = state
        if self.app_api_token:
            headers["dapr-api-token"] = self.app_api_token
        return headers

    async def _deliver(self, sub: Subscription, message: _Message, event: dict[str, Any]) -> Verdict:
        assert self._app_session is not None
        call = AppCall("POST", sub.path, self._delivery_headers(sub, message.metadata, event), message.data)
        self.app_calls.append(call)
        try:
            async with self._app_session.post(
                self._app_url(sub.path), data=message.data, headers=call.headers
            ) as response:
                call.status, call.reply = response.status, await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            call.error = repr(exc)
            return "retry"
        return self._verdict(call.status, call.reply)

    @staticmethod
    def _verdict(status: int, reply: bytes) -> Verdict:
        """The §2 response table."""
        if status == 404:
            return "not_found"
        if not 200 <= status < 300:
            return "retry"
        try:
            answer = json.loads(reply) if reply.strip() else None
        except ValueError:
            return "success"
        if not isinstance(answer, dict):
            return "success"
        value = answer.get("status")
        if value in (None, "", "SUCCESS"):
            return "success"
        if value == "DROP":
            return "drop"
        return "retry"

    async def _deliver_via_bulk(self, sub: Subscription, message: _Message, event: dict[str, Any]) -> Verdict:
        index = self.subscriptions.index(sub)
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        await self._bulk_queues[index].put((message, event, future))
        return await future

    async def _bulk_loop(self, index: int, sub: Subscription) -> None:
        queue = self._bulk_queues[index]
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + sub.bulk_max_await_ms / 1000
            while len(batch) < sub.bulk_max_messages:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            task = asyncio.create_task(self._send_bulk(sub, batch))
            self._bulk_sends.add(task)
            task.add_done_callback(self._bulk_sends.discard)

    async def _send_bulk(
        self, sub: Subscription, batch: list[tuple[_Message, dict[str, Any], asyncio.Future[Verdict]]]
    ) -> None:
        assert self._app_session is not None
        entries = []
        futures: dict[str, asyncio.Future[Verdict]] = {}
        for message, event, future in batch:
            entry_id = str(uuid.uuid4())
            futures[entry_id] = future
            entries.append(
                {
                    "entryId": entry_id,
                    "event": event,
                    "metadata": message.metadata,
                    "contentType": CLOUDEVENTS_JSON,
                }
            )
        body = go_json(
            {
                "id": str(uuid.uuid4()),
                "type": BULK_EVENT_TYPE,
                "topic": sub.topic,
                "pubsubname": sub.pubsubname,
                "metadata": {},
                "entries": entries,
            }
        )
        headers = self._delivery_headers(sub, {}, None)
        headers["Content-Type"] = "application/json"
        call = AppCall("POST", sub.path, headers, body, bulk=True)
        self.app_calls.append(call)
        verdicts: dict[str, Verdict] = {}
        try:
            async with self._app_session.post(
                self._app_url(sub.path), data=body, headers=headers
            ) as response:
                call.status, call.reply = response.status, await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            call.error = repr(exc)
        if call.status is not None and 200 <= call.status < 300:
            try:
                answer = json.loads(call.reply or b"")
            except ValueError:
                answer = {}
            for item in (answer.get("statuses") if isinstance(answer, dict) else None) or []:
                status = item.get("status") if isinstance(item, dict) else None
                entry_id = str(item.get("entryId")) if isinstance(item, dict) else ""
                if status == "SUCCESS":
                    verdicts[entry_id] = "success"
                elif status == "DROP":
                    verdicts[entry_id] = "drop"
        for entry_id, future in futures.items():
            if not future.done():
                # Missing entry, empty or other status = RETRY (§2 bulk).
                future.set_result(verdicts.get(entry_id, "retry"))

    # ------------------------------------------------------------------ test helpers
    def deliveries(self) -> list[AppCall]:
        """The app calls that were deliveries (not discovery)."""
        return [c for c in self.app_calls if c.method == "POST" and not c.invocation]

    def invocations(self) -> list[AppCall]:
        """The app calls that were service invocations."""
        return [c for c in self.app_calls if c.invocation]
