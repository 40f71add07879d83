"""Synchronous execution: ``POST /execute`` (docs/contract.md, "Synchronous execution").

The origin orchestrator calls its function runner by Dapr service invocation, a request and its
response. A call's body is the request object of the contract (or the origin's shape) plus an
optional ``execution_id``; :class:`SyncCalls` turns it into the request CloudEvent a publish would
carry (``id`` = the execution id, generated when absent; ``traceparent`` from the call's headers)
and hands it to the worker's own pipeline (:meth:`~shared.runtime.worker.Worker.execute`):
validation, templates, credentials, limits, timeout, history and the exactly-once claim are the
ones every delivery goes through. The result is published on the results topic like any other
and answered as the body: the result object plus ``success``.

* ``200`` — a result, completed or failed (the error code is in the body);
* ``400`` — the body is not a usable request (not JSON, no function, fields of the wrong type,
  both spellings of a field disagreeing): ``invalid_event`` with the violations; nothing ran,
  nothing is recorded, and the execution id may be used again;
* ``503`` with ``Retry-After`` — the worker is starting or draining, or the call could not be
  answered (a dependency down through every attempt); call again with the same execution id.

What the pipeline does not answer at once is handled here, as a broker would: a RETRY (the
function's retry policy with its backoff, a handler's ``Retry``, an unreachable dependency) runs
again after its delay (the retry settings' backoff when it has none), counted as a delivery up to
``FLEET_MAX_DELIVERIES``; a DEFER (the execution is running elsewhere, a limit is full) waits and
runs again uncounted, and is answered with the stored result once there is one. A call that goes
away stops that loop; a run in progress still finishes and records its result.

Under Dapr one app id serves the whole fleet: a call for a function of another domain is
forwarded, before anything runs, to that domain's app through this worker's sidecar
(:class:`DaprForwarder`), once.

Served by the Dapr app channel (``DaprTransport.serve_execute``: daprd forwards an invocation of
method ``execute`` there with the app token) and, in direct mode, by the probe server
(:func:`execute_route`): loopback callers only unless ``FLEET_APP_API_TOKEN`` is set, then any
caller presenting it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from pydantic import ValidationError

from shared.backoff import Backoff
from shared.clock import utc_now_iso
from shared.contract import EVENT_REQUESTED, ErrorCode, RequestData, apply_origin_aliases
from shared.runtime.envelope import violations
from shared.runtime.extension import WorkerContext
from shared.settings import Settings
from shared.transports.base import Delivery, Outcome, Settlement, SyncReply

__all__ = [
    "EXECUTE_ROUTE",
    "MAX_EXECUTION_ID_LENGTH",
    "SyncCalls",
    "authorized",
    "execute_route",
    "read_body",
]

log = structlog.get_logger("fleet.sync")

EXECUTE_ROUTE = "/execute"
#: The longest ``execution_id`` a call may give (it names the execution's claim key).
MAX_EXECUTION_ID_LENGTH = 200
#: Wait of a deferred call with no delay of its own (its execution runs elsewhere): first, cap.
DEFER_BACKOFF = (0.05, 1.0)
#: ``Retry-After`` (seconds) of a 503.
RETRY_AFTER_S = 1
#: Waits are taken in steps this long, so a worker that starts draining answers 503 promptly.
_WAIT_STEP_S = 0.1
#: ``source`` of a call's request event when the caller does not say (daprd's caller app id).
DEFAULT_SOURCE = "fleet/execute"


class SyncCalls:
    """Answers ``POST /execute`` bodies for one worker (see module docstring).

    Parameters:
        settings: the worker's (concurrency, retry backoff, ``FLEET_MAX_DELIVERIES``).
        execute: runs a delivery through the worker's pipeline once (``Worker.execute``).
        accepting: True while the worker takes work.

    At most ``FLEET_CONCURRENCY`` calls run at once (each takes a slot of the worker's too, so
    its intake reads that many fewer); more wait for a turn.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        execute: Callable[[Delivery], Awaitable[Settlement]],
        accepting: Callable[[], bool],
        domain_of: Callable[[str], Awaitable[str | None]] | None = None,
        forward: Forwarder | None = None,
    ) -> None:
        self.settings = settings
        self._execute = execute
        self._accepting = accepting
        self._domain_of = domain_of
        self._forward = forward
        self._slots = asyncio.Semaphore(settings.concurrency)

    @classmethod
    def for_worker(cls, ctx: WorkerContext) -> SyncCalls | None:
        """The calls of the worker ``ctx`` belongs to; ``None`` outside a worker. Under Dapr
        (the transport serves the app channel) a call for another domain's function is
        forwarded to that domain's app through this worker's sidecar."""
        if ctx.execute is None:
            return None
        forward = DaprForwarder(ctx.settings) if hasattr(ctx.transport, "serve_execute") else None
        return cls(
            settings=ctx.settings,
            execute=ctx.execute,
            accepting=ctx.accepting,
            domain_of=ctx.domain_of,
            forward=forward,
        )

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> SyncReply:
        """The reply to one call whose caller was already let in (token, body size)."""
        if not self._accepting():
            return _unavailable("the worker is not taking work (starting or draining)")
        request = _request_event(body, headers)
        if isinstance(request, SyncReply):
            return request
        execution_id, event = request
        forwarded = await self._forwarded(execution_id, event, headers)
        if forwarded is not None:
            return forwarded
        delivery = Delivery(message_id=f"execute:{execution_id}", body=event)
        return await self._run(delivery)

    async def _forwarded(
        self, execution_id: str, event: bytes, headers: Mapping[str, str]
    ) -> SyncReply | None:
        """The answer of the domain that serves the call's function when it is not this one
        (one app id serves the whole fleet, as the origin's ``function-runner``); ``None`` to
        run it here. A call forwarded once is never forwarded again (the pipeline answers
        ``wrong_domain`` if the domains disagree)."""
        if self._forward is None or self._domain_of is None or headers.get(FORWARDED_HEADER):
            return None
        parsed = orjson.loads(event)
        slug = parsed.get("subject")
        if not slug:
            return None  # named by function_id only: resolved and answered here
        domain = await self._domain_of(slug)
        if domain is None:
            return None
        body = {**parsed["data"], "execution_id": execution_id}
        return await self._forward(domain, orjson.dumps(body), headers)

    async def _run(self, delivery: Delivery) -> SyncReply:
        settings = self.settings
        retries = Backoff(
            settings.retry_initial_backoff,
            max(settings.retry_initial_backoff, settings.retry_max_backoff),
            settings.retry_multiplier,
        )
        defers = Backoff(*DEFER_BACKOFF)
        while True:
            async with self._slots:
                if not self._accepting():
                    return _unavailable("the worker is draining")
                settlement = await self._execute(delivery)
            if settlement.outcome is Outcome.REPLY:
                return _result_reply(settlement)
            if settlement.outcome is Outcome.DEFER:
                wait = settlement.delay if settlement.delay is not None else defers.next()
            else:  # RETRY: not answered this time
                if delivery.delivery_count > settings.max_deliveries:
                    # Even the max_deliveries_exceeded answer could not be given (a dependency is
                    # down): nothing is recorded, so the caller may try again later.
                    return _unavailable(f"not answered: {settlement.reason}")
                delivery.delivery_count += 1
                delivery.last_error = settlement.reason
                wait = settlement.delay if settlement.delay is not None else retries.next()
            if not await self._wait(wait):
                return _unavailable("the worker is draining")

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; False as soon as the worker stops taking work."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, seconds)
        while True:
            if not self._accepting():
                return False
            left = deadline - loop.time()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, _WAIT_STEP_S))


#: Marks a call one worker forwarded to another domain's app (it is not forwarded again).
FORWARDED_HEADER = "fleet-forwarded-from"
Forwarder = Callable[[str, bytes, Mapping[str, str]], Awaitable[SyncReply]]


class DaprForwarder:
    """Forwards a call to ``fleet-<domain>``'s ``/execute`` by Dapr service invocation through
    this worker's sidecar (``POST /v1.0/invoke/<app id>/method/execute``), answering what that
    app answered; 503 when the sidecar cannot be reached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __call__(self, domain: str, body: bytes, headers: Mapping[str, str]) -> SyncReply:
        import aiohttp

        settings = self.settings
        url = f"http://127.0.0.1:{settings.dapr_http_port}/v1.0/invoke/{settings.group_for(domain)}/method/execute"
        sent = {"Content-Type": "application/json", FORWARDED_HEADER: settings.group_for(domain)}
        for key in ("traceparent", "tracestate"):
            if headers.get(key):
                sent[key] = headers[key]
        if settings.dapr_api_token:
            sent["dapr-api-token"] = settings.dapr_api_token
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url, data=body, headers=sent) as response,
            ):
                answer = await response.read()
                content_type = response.content_type or "application/json"
                return SyncReply(response.status, answer, content_type=content_type)
        except aiohttp.ClientError as exc:
            log.warning("cannot forward a call to its domain", domain=domain, error=str(exc))
            return _unavailable(f"cannot reach domain {domain!r} through the sidecar: {exc}")


def _request_event(body: bytes, headers: Mapping[str, str]) -> tuple[str, bytes] | SyncReply:
    """``(execution id, request CloudEvent)`` for a call's body, or its 400 reply."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _bad_request(f"body is not JSON: {exc}")
    if not isinstance(raw, dict):
        return _bad_request("body must be a JSON object: the request object, plus an optional execution_id")
    execution_id = raw.pop("execution_id", None)
    if execution_id is None:
        execution_id = str(uuid.uuid4())
    elif not isinstance(execution_id, str) or not 0 < len(execution_id) <= MAX_EXECUTION_ID_LENGTH:
        return _bad_request(
            f"execution_id must be a non-empty string of at most {MAX_EXECUTION_ID_LENGTH} characters"
        )
    try:
        data = apply_origin_aliases(raw)
    except ValueError as exc:
        return _bad_request(str(exc), execution_id)
    try:
        request = RequestData.model_validate(data)
    except ValidationError as exc:
        return _bad_request("body is not a valid execution request", execution_id, violations(exc))
    if request.function is None and request.function_id is None:
        return _bad_request("body names no function: give `function` (slug) or `function_id`", execution_id)
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": execution_id,
        "source": headers.get("dapr-caller-app-id") or DEFAULT_SOURCE,
        "type": EVENT_REQUESTED,
        "time": utc_now_iso(),
        "datacontenttype": "application/json",
        "data": data,
    }
    if request.function is not None:
        event["subject"] = request.function
    for key in ("traceparent", "tracestate"):
        value = headers.get(key)
        if value:
            event[key] = value
    return execution_id, orjson.dumps(event)


def _result_reply(settlement: Settlement) -> SyncReply:
    """200 with the published result's data plus ``success``."""
    if settlement.result is None:  # not expected: every answered request has a result
        return _unavailable("the execution ended without a result")
    data = orjson.loads(settlement.result)["data"]
    data["success"] = data.get("status") == "completed"
    return SyncReply(200, orjson.dumps(data))


def _bad_request(message: str, execution_id: str | None = None, details: Any = None) -> SyncReply:
    error: dict[str, Any] = {"code": str(ErrorCode.INVALID_EVENT), "message": message, "retryable": False}
    if details is not None:
        error["details"] = details
    body: dict[str, Any] = {"success": False, "error": error}
    if execution_id is not None:
        body["execution_id"] = execution_id
    return SyncReply(400, orjson.dumps(body))


def _unavailable(reason: str) -> SyncReply:
    return SyncReply(
        503, reason.encode(), content_type="text/plain", headers={"Retry-After": str(RETRY_AFTER_S)}
    )


# ---------------------------------------------------------------------- direct mode (HTTP)
def authorized(headers: Mapping[str, str], token: str) -> bool:
    """True when the call presents ``token`` as ``dapr-api-token`` or ``Authorization: Bearer``."""
    given = headers.get("dapr-api-token")
    if given is None:
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(given.encode(), token.encode())


def _loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _refuse(request: web.Request, status: int, reason: str) -> web.Response:
    log.warning("synchronous call refused", status=status, reason=reason, remote=request.remote)
    response = web.Response(status=status, text=reason)
    response.force_close()
    return response


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes | web.Response:
    """The body of ``request``, or its refusal: 413 beyond ``limit`` bytes (from
    ``Content-Length`` before reading anything when it is given), 408 when it is not complete
    ``timeout`` seconds after the headers. Refusals close the connection."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return _refuse(request, 413, f"body of {declared} bytes; the limit is {limit}")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                if len(body) + len(chunk) > limit:
                    return _refuse(request, 413, f"body over the limit of {limit} bytes")
                body += chunk
    except TimeoutError:
        return _refuse(request, 408, f"body not received within {timeout:g}s")
    return bytes(body)


def execute_route(
    calls: SyncCalls, settings: Settings
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of ``POST /execute`` on the probe server (direct mode): with
    ``FLEET_APP_API_TOKEN`` set, a call without it is refused 401; without one, a call from
    anywhere but loopback is refused 403. Bodies over ``FLEET_MAX_PAYLOAD_BYTES`` get 413,
    bodies slower than ``FLEET_APP_READ_TIMEOUT`` 408."""
    token = settings.app_api_token

    async def on_execute(request: web.Request) -> web.StreamResponse:
        if token:
            if not authorized(request.headers, token):
                return _refuse(request, 401, "invalid api token")
        elif not _loopback(request.remote):
            return _refuse(
                request, 403, "POST /execute answers loopback callers only unless FLEET_APP_API_TOKEN is set"
            )
        body = await read_body(request, settings.max_payload_bytes, settings.app_read_timeout)
        if isinstance(body, web.Response):
            return body
        reply = await calls.handle(body, request.headers)
        return web.Response(
            status=reply.status, body=reply.body, content_type=reply.content_type, headers=reply.headers
        )

    return on_execute
