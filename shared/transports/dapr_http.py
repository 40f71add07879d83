"""The Dapr app channel: daprd pushes deliveries to our HTTP server; results go out through daprd.

Wire facts (../shared/reference/dapr-wire.md §2, §3, §5) this module relies on:

* daprd calls ``GET /dapr/subscribe`` once at start; we subscribe ``topic`` with route
  ``/events``, dead-letter topic ``<topic>.dlq`` and, when ``FLEET_DAPR_BULK_SUBSCRIBE``,
  ``bulkSubscribe``;
* a delivery is ``POST /events`` whose body is the exact bytes of the stream entry's ``data``
  (bulk: ``{"type": "com.dapr.event.sent.bulk", "entries": [{entryId, event, ...}]}``). daprd
  waits for our answer: ``{"status": "SUCCESS"}`` acks, ``{"status": "DROP"}`` dead-letters and
  acks, ``{"status": "RETRY"}`` is a retriable error (bulk: ``{"statuses": [{entryId, status}]}``);
* results are published with ``POST /v1.0/publish/<pubsub>/<results topic>`` and
  ``Content-Type: application/cloudevents+json`` — daprd keeps our ``id`` and ``data`` and
  answers 204;
* ``GET /v1.0/healthz/outbound`` answers 204 once daprd's components are up, *before* daprd
  waits for our port, so :meth:`DaprTransport.open` can wait for it without a deadlock.

How it maps onto :class:`~shared.transports.base.Transport`: the HTTP handler turns each
delivery into a :class:`Delivery` whose ``handle`` is an :class:`asyncio.Future`, puts it on an
intake queue and waits on the future; :meth:`DaprTransport.receive` takes from that queue;
:meth:`DaprTransport.settle` publishes the results, then resolves the futures, which sends the
answers. A delivery is therefore answered SUCCESS/DROP only after its result was accepted by
daprd — the same "publish, then ack" rule as the Redis transport.

What RETRY means depends on daprd, not on us (dapr-wire.md §2 "Retries and dead letters"):
with an inbound resiliency retry policy daprd calls us again; once the policy gives up (or at
once, without a policy) the request is copied to the dead-letter topic — we always declare one
— and acked. Dapr does not count deliveries, so this transport counts the RETRY answers it gave
per CloudEvent id (bounded memory) to feed ``delivery_count`` and ``FLEET_MAX_DELIVERIES``.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from aiohttp import web

from shared.backoff import Backoff
from shared.errors import TransportError
from shared.settings import Settings
from shared.transports.base import Delivery, ExecuteHandler, Outcome, Settlement

__all__ = ["BULK_EVENT_TYPE", "EVENTS_ROUTE", "EXECUTE_ROUTE", "DaprTransport", "max_body_bytes"]

if TYPE_CHECKING:  # the runtime hands its counters in; the transport only renders them
    from shared.runtime.metrics import Metrics

log = structlog.get_logger("fleet.transport.dapr")

#: The route daprd posts deliveries to (declared in ``/dapr/subscribe``).
EVENTS_ROUTE = "/events"
#: The route of synchronous calls (Dapr service invocation of method ``execute``), served once
#: the worker hands a handler over (:meth:`DaprTransport.serve_execute`).
EXECUTE_ROUTE = "/execute"
#: ``type`` of daprd's bulk delivery envelope.
BULK_EVENT_TYPE = "com.dapr.event.sent.bulk"
#: How long daprd may wait to fill a bulk batch: short, because latency matters more than batch
#: size here (every entry of a batch waits for the slowest one before daprd acks any of them).
BULK_MAX_AWAIT_MS = 5
#: Content type of ``/metrics`` (Prometheus text format 0.0.4).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Answers in daprd's app-response contract (case-sensitive).
SUCCESS, RETRY, DROP = "SUCCESS", "RETRY", "DROP"
_STATUS = {Outcome.ACK: SUCCESS, Outcome.DROP: DROP, Outcome.RETRY: RETRY, Outcome.DEFER: RETRY}
#: Request headers that describe the HTTP exchange rather than the message; everything else
#: daprd sends is the entry's metadata map (or daprd's additions such as ``pubsubname`` and
#: ``traceparent``). The token is dropped so it cannot reach logs or dead letters.
_NOT_METADATA = frozenset(
    {
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "dapr-api-token",
        "expect",
        "host",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)
#: RETRY answers remembered per CloudEvent id (for ``delivery_count``); oldest forgotten first.
RETRY_MEMORY = 10_000
#: Upper bound on one publish call to daprd; daprd's XADD normally answers in milliseconds.
PUBLISH_TIMEOUT_S = 30.0
#: Readiness polling of the sidecar: first delay, cap.
_READY_POLL_INITIAL, _READY_POLL_MAX = 0.05, 1.0
#: A connection must complete a request's headers within this long of opening or of its last
#: answer, else it is closed (aiohttp's keep-alive timer, which also covers idle connections).
#: Longer than Go's usual 90 s idle timeout, so daprd's client rather than we close idle pooled
#: connections: closing first races a request daprd may be writing at that moment.
HEADER_TIMEOUT_S = 100.0
#: Body-size allowances (see :func:`max_body_bytes`): per bulk entry (``entryId``,
#: ``metadata``, ``contentType``, JSON punctuation) and per request (the envelope's fields).
ENTRY_OVERHEAD_BYTES = 16 * 1024
REQUEST_OVERHEAD_BYTES = 64 * 1024


def max_body_bytes(settings: Settings) -> int:
    """The largest request body the app channel reads; a larger one is answered 413.

    * single delivery: ``2 x FLEET_MAX_PAYLOAD_BYTES + 64 KiB``: the body is the stored event
      unchanged, so an event up to twice the payload limit is still read and gets its
      ``payload_too_large`` result instead of a bare 413;
    * bulk (``FLEET_DAPR_BULK_SUBSCRIBE``): ``FLEET_BATCH_SIZE`` (the subscription's
      ``maxMessagesCount``) x (ceil(4/3 x FLEET_MAX_PAYLOAD_BYTES) + 16 KiB) + 64 KiB: every entry
      at the payload limit even when daprd base64-encodes it (raw payloads; re-serialised
      CloudEvents stay about their stored size), plus the entry's fields; never less than the
      single-delivery limit.
    """
    payload = settings.max_payload_bytes
    single = 2 * payload + REQUEST_OVERHEAD_BYTES
    if not settings.dapr_bulk_subscribe:
        return single
    per_entry = -(-4 * payload // 3) + ENTRY_OVERHEAD_BYTES
    return max(single, settings.batch_size * per_entry + REQUEST_OVERHEAD_BYTES)


def server_shutdown_timeout(settings: Settings) -> float:
    """aiohttp's per-connection shutdown wait, chosen so the server's shutdown as a whole stays
    within ``FLEET_SHUTDOWN_TIMEOUT``: aiohttp waits up to this long for a handler to finish,
    then up to this long again after cancelling it, and rounds a wait above 5 s up to the next
    whole second (``ceil_timeout``). Positive, since aiohttp reads 0 as "no limit"."""
    half = settings.shutdown_timeout / 2
    return max(0.001, half if half <= 5 else half - 1)


class DaprTransport:
    """Serve daprd's app channel for one topic and publish results through daprd.

    Parameters:
        topic: the request topic subscribed to (``functions.<domain>``).
        domain: the domain served (for logs).
        settings: ``app_host``/``app_port`` (port 0 = any free port, see :attr:`port`),
            ``dapr_host``/``dapr_http_port``, ``pubsub_name``, ``results_topic``, tokens,
            ``dapr_bulk_subscribe``, ``batch_size``, ``block_ms``, ``dapr_ready_timeout``.
        metrics: served as Prometheus text at ``GET /metrics`` (404 when ``None``); ``/healthz``
            answers once the channel is ready, ``/readyz`` with the worker's report
            (:meth:`serve_probes`).

    Contracts: a delivery is answered SUCCESS or DROP only after its result (if any) was
    published; a delivery that cannot be settled is answered RETRY (never left hanging once
    :meth:`close` returns); requests with a wrong ``dapr-api-token`` get 401 and never reach
    the runtime.
    """

    name = "dapr"
    #: daprd does not say how often it delivered a message, nor delay one redelivery.
    counts_deliveries = False

    def __init__(
        self, *, topic: str, domain: str, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self.topic = topic
        self.domain = domain
        self.settings = settings
        self.metrics = metrics
        self.dead_letter_topic = settings.dlq_for(topic)
        self._block = settings.block_ms / 1000
        self._intake: asyncio.Queue[Delivery] = asyncio.Queue()
        #: futures of every delivery whose HTTP request is still waiting for an answer.
        self._waiting: set[asyncio.Future[str]] = set()
        self._retried: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ready = False
        self._readiness: Callable[[], Mapping[str, Any]] | None = None
        self._execute: ExecuteHandler | None = None
        self._intake_stopped = False
        self._closing = False
        self._max_body = max_body_bytes(settings)
        #: deadlines of the body reads in progress; close() moves them to now.
        self._reading: set[asyncio.Timeout] = set()
        sidecar = f"http://{settings.dapr_host}:{settings.dapr_http_port}"
        self._publish_url = (
            f"{sidecar}/v1.0/publish/{quote(settings.pubsub_name, safe='')}/"
            f"{quote(settings.results_topic, safe='')}"
        )
        self._outbound_health_url = f"{sidecar}/v1.0/healthz/outbound"
        self._publish_headers = {"Content-Type": "application/cloudevents+json"}
        if settings.dapr_api_token:
            self._publish_headers["dapr-api-token"] = settings.dapr_api_token

    # ------------------------------------------------------------------ discovery
    def subscriptions(self) -> list[dict[str, Any]]:
        """The body of ``GET /dapr/subscribe`` (dapr-wire.md §2 "Discovery"); empty when the
        subscription is declared by a Subscription resource instead."""
        if self.settings.dapr_subscriptions == "declarative":
            return []
        item: dict[str, Any] = {
            "pubsubname": self.settings.pubsub_name,
            "topic": self.topic,
            "route": EVENTS_ROUTE,
            "deadLetterTopic": self.dead_letter_topic,
        }
        if self.settings.dapr_bulk_subscribe:
            item["bulkSubscribe"] = {
                "enabled": True,
                "maxMessagesCount": self.settings.batch_size,
                "maxAwaitDurationMs": BULK_MAX_AWAIT_MS,
            }
        return [item]

    @property
    def port(self) -> int:
        """The port the app channel listens on (useful with ``app_port=0``)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the dapr transport is not listening")
        return int(self._runner.addresses[0][1])

    def serve_probes(self, readiness: Callable[[], Mapping[str, Any]]) -> None:
        """Answer ``GET /readyz`` with ``readiness()`` (the worker's report: ``ready`` once its
        intake runs); the channel itself must be ready too."""
        self._readiness = readiness

    def serve_execute(self, handler: ExecuteHandler) -> None:
        """Answer ``POST /execute`` (what daprd forwards a service invocation of method
        ``execute`` as) with ``handler``, once the caller's ``dapr-api-token`` is the app token
        and the body is within ``FLEET_MAX_PAYLOAD_BYTES``; 404 until then."""
        self._execute = handler

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Start the app channel server, then wait until daprd's outbound API is up.

        Safe to call again after it raised (the server keeps running). Raises
        :class:`TransportError` if the port cannot be bound or daprd is not ready within
        ``FLEET_DAPR_READY_TIMEOUT``.
        """
        if self._runner is None:
            await self._start_server()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=PUBLISH_TIMEOUT_S),
                connector=aiohttp.TCPConnector(limit=max(10, self.settings.concurrency)),
            )
        await self._wait_for_sidecar()
        self._ready = True
        log.info("dapr app channel ready", topic=self.topic, port=self.port, domain=self.domain)

    async def _start_server(self) -> None:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_get("/dapr/subscribe", self._on_subscribe)
        app.router.add_get("/dapr/config", self._on_config)
        app.router.add_post(EVENTS_ROUTE, self._on_events)
        app.router.add_post(EXECUTE_ROUTE, self._on_execute)
        app.router.add_get("/healthz", self._on_healthz)
        app.router.add_get("/readyz", self._on_readyz)
        app.router.add_get("/metrics", self._on_metrics)
        # handler_cancellation: when daprd hangs up (an inbound resiliency timeout, say) the
        # waiting future is cancelled, so settle() skips that delivery's result — daprd delivers
        # the request again and that delivery answers it (no duplicate result).
        # lingering_time=0: a body we answer before reading it all (401, 408, 413, 503) is one we
        # refuse; aiohttp would otherwise keep reading it for up to 10 s, holding shutdown.
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=HEADER_TIMEOUT_S,
            lingering_time=0,
            shutdown_timeout=server_shutdown_timeout(self.settings),
        )
        await runner.setup()
        site = web.TCPSite(runner, self.settings.app_host, self.settings.app_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise TransportError(
                f"cannot listen on {self.settings.app_host}:{self.settings.app_port}: {exc}"
            ) from exc
        self._runner = runner

    async def _wait_for_sidecar(self) -> None:
        assert self._session is not None
        loop = asyncio.get_running_loop()
        timeout = self.settings.dapr_ready_timeout
        deadline = loop.time() + timeout
        # Deterministic: one sidecar per worker, nobody to spread out from; capped by the deadline.
        backoff = Backoff(_READY_POLL_INITIAL, _READY_POLL_MAX, jitter=0)
        last = "no answer yet"
        while True:
            remaining = deadline - loop.time()
            try:
                async with self._session.get(
                    self._outbound_health_url,
                    timeout=aiohttp.ClientTimeout(total=max(0.1, min(2.0, remaining))),
                ) as response:
                    if 200 <= response.status < 300:
                        return
                    last = f"HTTP {response.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = repr(exc)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TransportError(
                    f"daprd at {self._outbound_health_url} not ready within {timeout:g}s ({last})"
                )
            await asyncio.sleep(min(backoff.next(), remaining))

    async def stop_intake(self) -> None:
        """New deliveries are answered RETRY at once; queued, not yet received ones too.

        daprd stops its own subscriptions on SIGTERM; this covers deliveries already on their
        way, so daprd can hand them to another replica (or the dead-letter topic) promptly.
        """
        self._intake_stopped = True
        # Unhealthy from now on: with app health checks on, daprd stops delivering to us.
        self._ready = False
        while not self._intake.empty():
            delivery = self._intake.get_nowait()
            self._answer(delivery, RETRY, "worker shutting down")

    async def close(self) -> None:
        """Answer RETRY to every delivery still waiting, 503 to every request whose body is still
        arriving, stop the server, close the session. Returns within ``FLEET_SHUTDOWN_TIMEOUT``
        whatever clients do (see :func:`server_shutdown_timeout`)."""
        self._intake_stopped = True
        self._closing = True
        self._ready = False
        for future in list(self._waiting):
            if not future.done():
                future.set_result(RETRY)
        now = asyncio.get_running_loop().time()
        for deadline in list(self._reading):
            if not deadline.expired():
                deadline.reschedule(now)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ receive
    async def receive(self, max_count: int) -> Sequence[Delivery]:
        """Up to ``max_count`` queued deliveries: waits up to ``block_ms`` for the first, then
        takes only what is already queued."""
        try:
            first = await asyncio.wait_for(self._intake.get(), self._block)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < max_count:
            try:
                batch.append(self._intake.get_nowait())
            except asyncio.QueueEmpty:
                break
        # A delivery whose request is gone (daprd hung up) has nobody to answer: skip it.
        return [d for d in batch if not d.handle.done()]

    # ------------------------------------------------------------------ settle
    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Publish the results concurrently, then answer each delivery.

        A delivery whose result daprd did not accept is answered RETRY (never SUCCESS/DROP);
        that is a decision, so this does not raise for it. Deliveries already answered (at
        shutdown, or daprd hung up) are skipped, result and all, so a redelivery cannot yield
        a second result. A REPLY (a synchronous call) is published and has nothing to answer.
        Raises :class:`TransportError` when the transport is not open or a REPLY's result was
        not accepted.
        """
        if self._session is None:
            raise TransportError("the dapr transport is not open")
        replies = [s for s in settlements if s.outcome is Outcome.REPLY]
        live = [s for s in settlements if s.outcome is not Outcome.REPLY and not s.delivery.handle.done()]
        publishing = [s for s in (*live, *replies) if s.result is not None]
        outcomes = await asyncio.gather(
            *(self._publish(s.result) for s in publishing if s.result is not None), return_exceptions=True
        )
        failed: dict[int, str] = {}
        for s, outcome in zip(publishing, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed[id(s)] = f"results publish failed: {outcome}"
        if failed:
            if self.metrics is not None:
                self.metrics.infra_errors += len(failed)
            log.warning(
                "results not accepted by daprd; answering RETRY",
                count=len(failed),
                error=next(iter(failed.values())),
            )
        for s in live:
            reason = failed.get(id(s))
            if reason is not None:
                self._answer(s.delivery, RETRY, reason)
                continue
            if s.outcome is Outcome.DROP:
                log.warning(
                    "delivery dropped; daprd moves it to the dead-letter topic",
                    message_id=s.delivery.message_id,
                    dead_letter_topic=self.dead_letter_topic,
                    reason=s.reason,
                )
            self._answer(s.delivery, _STATUS[s.outcome], s.reason)
        unpublished = [failed[id(s)] for s in replies if id(s) in failed]
        if unpublished:
            # A synchronous call has no delivery to answer RETRY: the worker retries its settle.
            raise TransportError(unpublished[0])

    async def _publish(self, body: bytes) -> None:
        assert self._session is not None
        headers = dict(self._publish_headers)
        headers.update(_trace_headers(body))
        try:
            async with self._session.post(self._publish_url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return
                detail = (await response.text())[:300]
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransportError(f"cannot publish through daprd: {exc!r}") from exc
        raise TransportError(f"daprd answered HTTP {status} to a publish: {detail}")

    def _answer(self, delivery: Delivery, status: str, reason: str | None) -> None:
        future: asyncio.Future[str] = delivery.handle
        if future.done():
            return
        if status == RETRY:
            self._remember_retry(delivery, reason or "retry requested")
        else:
            self._retried.pop(delivery.message_id, None)
        future.set_result(status)

    def _remember_retry(self, delivery: Delivery, reason: str) -> None:
        self._retried[delivery.message_id] = (delivery.delivery_count, reason)
        self._retried.move_to_end(delivery.message_id)
        while len(self._retried) > RETRY_MEMORY:
            self._retried.popitem(last=False)

    # ------------------------------------------------------------------ HTTP handlers
    def _authorized(self, request: web.Request) -> bool:
        expected = self.settings.app_api_token
        if not expected:
            return True
        given = request.headers.get("dapr-api-token", "")
        return hmac.compare_digest(given.encode(), expected.encode())

    async def _on_subscribe(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _unauthorized()
        return _json(self.subscriptions())

    async def _on_config(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _unauthorized()
        # No actor or app-level configuration: daprd treats {} as "nothing configured".
        return _json({})

    async def _on_healthz(self, request: web.Request) -> web.StreamResponse:
        # No token: daprd's app health probes do not carry it (dapr-wire.md §2).
        return web.Response(status=200 if self._ready else 503, text="ok" if self._ready else "not ready")

    async def _on_readyz(self, request: web.Request) -> web.StreamResponse:
        # The worker's report when it handed one over (serve_probes), else this channel's state.
        report = dict(self._readiness()) if self._readiness is not None else {"ready": self._ready}
        ready = bool(report.get("ready")) and self._ready
        report["ready"] = ready
        return web.Response(
            status=200 if ready else 503, body=orjson.dumps(report), content_type="application/json"
        )

    async def _on_metrics(self, request: web.Request) -> web.StreamResponse:
        if self.metrics is None:
            raise web.HTTPNotFound()
        await self.metrics.refresh()
        return web.Response(body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _on_events(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            log.warning("delivery rejected: wrong or missing dapr-api-token", remote=request.remote)
            return _unauthorized()
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        metadata = {k.lower(): v for k, v in request.headers.items() if k.lower() not in _NOT_METADATA}
        parsed = _loads(body)
        if (
            isinstance(parsed, dict)
            and parsed.get("type") == BULK_EVENT_TYPE
            and isinstance(parsed.get("entries"), list)
        ):
            del body  # each entry is encoded again on its own: the raw bytes are not kept
            return await self._on_bulk(parsed["entries"], metadata)
        if self._intake_stopped:
            return _json({"status": RETRY})
        delivery = self._delivery(_event_id(parsed), bytes(body), metadata)
        return _json({"status": await self._enqueue_and_wait(delivery)})

    async def _on_execute(self, request: web.Request) -> web.StreamResponse:
        handler = self._execute
        if handler is None:
            raise web.HTTPNotFound()
        if not self._authorized(request):
            log.warning("synchronous call rejected: wrong or missing dapr-api-token", remote=request.remote)
            return _unauthorized()
        body = await self._read_body(request, self.settings.max_payload_bytes)
        if isinstance(body, web.Response):
            return body
        reply = await handler(bytes(body), request.headers)
        return web.Response(
            status=reply.status, body=reply.body, content_type=reply.content_type, headers=reply.headers
        )

    async def _read_body(self, request: web.Request, limit: int | None = None) -> bytearray | web.Response:
        """The request's body, or the answer refusing it: 413 beyond ``limit`` (default
        :func:`max_body_bytes`; from ``Content-Length`` before reading anything when it is
        given), 408 when the body takes longer than ``FLEET_APP_READ_TIMEOUT``, 503 when
        :meth:`close` ended the read. Refusals close the connection; nothing refused reaches
        the runtime."""
        if self._closing:
            return self._refuse(request, 503, "worker shutting down")
        max_body = self._max_body if limit is None else limit
        declared = request.content_length
        if declared is not None and declared > max_body:
            return self._refuse(request, 413, f"body of {declared} bytes; the limit is {max_body}")
        # One growing buffer, not a list of chunks joined at the end: that would hold a large
        # bulk body twice at its peak.
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.app_read_timeout) as deadline:
                self._reading.add(deadline)
                try:
                    async for chunk in request.content.iter_any():
                        if len(body) + len(chunk) > max_body:
                            return self._refuse(request, 413, f"body over the limit of {max_body} bytes")
                        body += chunk
                finally:
                    self._reading.discard(deadline)
        except TimeoutError:
            if self._closing:
                return self._refuse(request, 503, "worker shutting down")
            return self._refuse(request, 408, f"body not received within {self.settings.app_read_timeout:g}s")
        return body

    def _refuse(self, request: web.Request, status: int, reason: str) -> web.Response:
        log.warning("request refused", path=request.path, status=status, reason=reason, remote=request.remote)
        response = web.Response(status=status, text=reason)
        response.force_close()
        return response

    async def _on_bulk(self, entries: list[Any], metadata: dict[str, str]) -> web.StreamResponse:
        if self._intake_stopped:
            return _json({"statuses": [{"entryId": _entry_id(e), "status": RETRY} for e in entries]})
        pending: list[tuple[str, asyncio.Future[str]]] = []
        for entry in entries:
            entry_id = _entry_id(entry)
            event = entry.get("event") if isinstance(entry, dict) else None
            if isinstance(event, dict | list):
                body = orjson.dumps(event)
            elif isinstance(event, str):
                body = event.encode()
            else:
                body = b"" if event is None else orjson.dumps(event)
            entry_meta = entry.get("metadata") if isinstance(entry, dict) else None
            merged = dict(metadata)
            if isinstance(entry_meta, dict):
                merged.update({str(k): str(v) for k, v in entry_meta.items()})
            event_id = _event_id(event) if isinstance(event, dict) else None
            delivery = self._delivery(event_id or entry_id, body, merged)
            pending.append((entry_id, self._enqueue(delivery)))
        # The parsed events are not kept while their deliveries run: a large bulk would
        # otherwise be held twice until it is answered.
        entries.clear()
        try:
            statuses = await asyncio.gather(*(future for _, future in pending))
        finally:
            for _, future in pending:
                self._waiting.discard(future)
        return _json(
            {
                "statuses": [
                    {"entryId": entry_id, "status": status}
                    for (entry_id, _), status in zip(pending, statuses, strict=True)
                ]
            }
        )

    def _delivery(self, message_id: str | None, body: bytes, metadata: dict[str, str]) -> Delivery:
        message_id = message_id or str(uuid.uuid4())
        count, last_error = 1, None
        previous = self._retried.get(message_id)
        if previous is not None:
            # daprd called again after our RETRY (an inbound resiliency retry).
            count, last_error = previous[0] + 1, previous[1]
        return Delivery(
            message_id=message_id,
            body=body,
            metadata=metadata,
            delivery_count=count,
            last_error=last_error,
        )

    def _enqueue(self, delivery: Delivery) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        delivery.handle = future
        future.add_done_callback(lambda f: self._hung_up(delivery) if f.cancelled() else None)
        self._waiting.add(future)
        self._intake.put_nowait(delivery)
        return future

    def _hung_up(self, delivery: Delivery) -> None:
        # daprd counts a dropped connection as a retriable error, like a RETRY answer.
        self._remember_retry(delivery, "daprd closed the connection before the answer")

    async def _enqueue_and_wait(self, delivery: Delivery) -> str:
        future = self._enqueue(delivery)
        try:
            return await future
        finally:
            self._waiting.discard(future)


def _loads(body: bytes | bytearray) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _event_id(event: Any) -> str | None:
    if isinstance(event, dict):
        event_id = event.get("id")
        if isinstance(event_id, str) and event_id:
            return event_id
    return None


def _entry_id(entry: Any) -> str:
    if isinstance(entry, dict):
        value = entry.get("entryId")
        if value is not None:
            return str(value)
    return ""


def _trace_headers(result: bytes) -> dict[str, str]:
    """``traceparent``/``tracestate`` of a result event, to send with its publish: daprd
    continues that context, so the stored result keeps the request's trace id (daprd replaces
    the event's own ``traceparent`` with its publish span, dapr-wire.md §3)."""
    event = _loads(result)
    headers: dict[str, str] = {}
    if isinstance(event, dict):
        for key in ("traceparent", "tracestate"):
            value = event.get(key)
            if isinstance(value, str) and value:
                headers[key] = value
    return headers


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(value), content_type="application/json")


def _unauthorized() -> web.Response:
    return web.Response(status=401, text="invalid api token")
