"""The orchestrator-facing client: publish execution requests, await their results.

::

    async with FleetClient() as fleet:  # the broker of a running `fleet up`, or FLEET_REDIS_URL
        execution_id = await fleet.publish("slack/send-message", {"channel": "#ops", ...})
        result = await fleet.invoke("system/echo", {"hello": "world"}, timeout=10)
        assert result.status == "completed"
        result = await fleet.call("system/echo", {"hello": "world"})  # POST /execute, no stream

One results reader per client serves every waiter: it ``XREAD``s ``functions.results`` from the
position the stream had when the client opened, and resolves the waiter whose execution id the
result names. Requests are routed to their domain's topic by the function table (the registry,
from the registry issue on); functions every domain serves (``system/*``) go to
``DEFAULT_DIAGNOSTIC_DOMAIN`` unless a domain is given.

:meth:`FleetClient.call` is the synchronous path: ``POST /execute`` to a live worker of the
function's domain, found in the workers' published addresses (``shared.discovery``), with the
pub/sub path as the fallback when none answers.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import orjson
import structlog
from redis.asyncio import Redis

from shared.backoff import REDIS_RECONNECT, Backoff
from shared.contract import ExecutionResult
from shared.discovery import live_endpoints, where_we_looked, with_running_fleet
from shared.domains import DOMAINS, get_domain, routed_domain
from shared.errors import (
    ConfigError,
    ExecutionTimeout,
    InvalidEvent,
    PayloadTooLarge,
    TransportError,
    UnknownFunction,
)
from shared.functions import BUILTINS, FunctionTable, canonical_slug
from shared.runtime.envelope import encode_request
from shared.settings import Settings
from shared.transports.redis import cancel_and_wait, connect, redis_errors_as_transport
from shared.transports.redis_streams import last_error_key

__all__ = ["DEFAULT_DIAGNOSTIC_DOMAIN", "FleetClient", "Progress"]

log = structlog.get_logger("fleet.client")

DEFAULT_DIAGNOSTIC_DOMAIN = DOMAINS[0].name
_READ_BLOCK_MS = 1000
_READ_COUNT = 1000
#: Requests whose stream entry a client remembers for :meth:`FleetClient.progress`.
_TRACKED_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Progress:
    """What :meth:`FleetClient.progress` found: ``state`` (queued, running, retrying,
    dead-lettered, answered), ``attempt`` of ``max_attempts`` deliveries, the ``reason`` the
    last attempt gave (a retry's or the dead letter's) and the ``consumer`` holding it."""

    state: str
    attempt: int
    max_attempts: int
    reason: str | None = None
    consumer: str | None = None

    def describe(self) -> str:
        text = self.state
        if self.attempt:
            text += f" (attempt {self.attempt} of {self.max_attempts})"
        if self.consumer and self.state == "running":
            text += f" on {self.consumer}"
        if self.reason and self.state != "running":
            text += f": {self.reason}"
        return text


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class FleetClient:
    """Publish requests and await results over Redis Streams.

    Parameters:
        redis_url: the broker; unset: ``FLEET_REDIS_URL``, else the broker a running `fleet up`
            recorded (as the CLI finds it); or pass ``redis`` (not closed by us).
        settings: topic names (defaults from the environment).
        source: the CloudEvent ``source`` of requests (who is asking).
        functions: the routing table (built-ins by default).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        redis: Redis | None = None,
        settings: Settings | None = None,
        source: str = "fleet-client",
        functions: FunctionTable = BUILTINS,
    ) -> None:
        self.settings = settings or Settings()
        if redis is None and redis_url is None:
            self.settings = with_running_fleet(self.settings)
        url = redis_url or self.settings.redis_url
        if redis is None and url is None:
            raise ConfigError(
                f"no broker: {where_we_looked(self.settings)}; start `fleet up`, set FLEET_REDIS_URL "
                "or pass redis_url"
            )
        self._redis = redis if redis is not None else connect(url or "")
        self._owns_redis = redis is None
        self.source = source
        self.functions = functions
        self._waiters: dict[str, asyncio.Future[ExecutionResult]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._position: str | None = None
        self._registered: dict[str, str | None] = {}
        #: execution id → (topic, stream entry id) of requests this client published.
        self._entries: dict[str, tuple[str, str]] = {}
        self._closing = False
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Note where the results stream ends now; results after it reach waiters."""
        if self._position is not None:
            return
        async with redis_errors_as_transport("reading the results stream"):
            last: Any = await self._redis.xrevrange(self.settings.results_topic, count=1)
        self._position = bytes(last[0][0]).decode() if last else "0-0"

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            await cancel_and_wait(self._reader)
        for future in self._waiters.values():
            future.cancel()
        self._waiters.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._owns_redis:
            await self._redis.aclose()

    # ------------------------------------------------------------------ routing
    def topic_for(self, slug: str, domain: str | None = None) -> str:
        """The request topic for ``slug`` (``domain`` overrides the table)."""
        if domain is not None:
            return self.settings.topic_for(get_domain(domain).name)
        spec = self.functions.get(slug)
        if spec is None and self.functions is BUILTINS:
            import shared.diagnostics  # noqa: F401  (registers system/echo & co. on first use)

            spec = self.functions.get(slug)
        if spec is not None:
            return self.settings.topic_for(spec.domain or DEFAULT_DIAGNOSTIC_DOMAIN)
        if self.functions is BUILTINS:
            # Built-ins of the worker packages route by the domains' declared routes, without
            # importing the packages (they load every provider module).
            routed = routed_domain(canonical_slug(slug))
            if routed is not None:
                return self.settings.topic_for(routed.name)
        raise UnknownFunction(f"no function {slug!r} to route; pass a domain", slug=slug)

    async def route(self, slug: str, domain: str | None = None) -> str:
        """The request topic for ``slug``: ``domain`` if given, else the built-ins table, else
        (with ``FLEET_DATABASE_URL``) the domain the registry has for it — so registered
        oci/http functions route without being named. Lookups are cached per client."""
        try:
            return self.topic_for(slug, domain)
        except UnknownFunction:
            if not self.settings.database_url:
                raise
        if slug not in self._registered:
            registered = await self._registered_domain(slug)
            if registered is None and canonical_slug(slug) != slug:
                registered = await self._registered_domain(canonical_slug(slug))
            self._registered[slug] = registered
        registered = self._registered[slug]
        if registered is None:
            raise UnknownFunction(f"no function {slug!r} in the built-ins or the registry", slug=slug)
        return self.settings.topic_for(registered or DEFAULT_DIAGNOSTIC_DOMAIN)

    async def _registered_domain(self, slug: str) -> str | None:
        from shared.registry.database import connect
        from shared.registry.repository import FunctionRepository

        connection = await connect(self.settings.database_url or "", timeout=self.settings.database_timeout)
        try:
            record = await FunctionRepository(connection).get(slug)
        finally:
            await connection.close()
        if record is None:
            return None
        return record.domain or ""

    # ------------------------------------------------------------------ publish
    async def publish(
        self,
        slug: str,
        input: dict[str, Any] | None = None,
        *,
        domain: str | None = None,
        execution_id: str | None = None,
        context: dict[str, Any] | None = None,
        workflow_execution_id: str | None = None,
        node_id: str | None = None,
        timeout_seconds: float | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Publish one request; returns its execution id (generated unless given)."""
        topic = await self.route(slug, domain)
        execution_id, body = encode_request(
            function=slug,
            input=input or {},
            execution_id=execution_id,
            source=self.source,
            context=context,
            workflow_execution_id=workflow_execution_id,
            node_id=node_id,
            timeout_seconds=timeout_seconds,
            traceparent=traceparent,
        )
        async with redis_errors_as_transport(f"publishing to {topic}"):
            entry_id = await self._redis.xadd(topic, {"data": body, "metadata": b"{}"})
        if len(self._entries) >= _TRACKED_ENTRIES:
            self._entries.pop(next(iter(self._entries)))
        self._entries[execution_id] = (topic, entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
        return execution_id

    async def progress(self, execution_id: str) -> Progress | None:
        """Where a request this client published stands, from what the fleet records on the
        broker: ``queued`` (not delivered yet), ``running`` (delivered, not answered), or
        ``retrying`` (a delivery ended without an answer and it waits for the next one), with
        the attempt and the reason the last attempt gave; ``dead-lettered`` once moved to the
        dead-letter topic; ``answered`` when nothing is pending any more. ``None`` for a request
        this client did not publish."""
        where = self._entries.get(execution_id)
        if where is None:
            return None
        topic, entry_id = where
        group = self.settings.group_for(topic.removeprefix(self.settings.topic_prefix))
        async with redis_errors_as_transport(f"reading the progress of {execution_id}"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.xpending_range(topic, group, min=entry_id, max=entry_id, count=1)
            pipe.xinfo_groups(topic)
            pipe.hget(last_error_key(topic), entry_id)
            pipe.xrevrange(self.settings.dlq_for(topic), count=50)
            # A group nobody created yet (no worker ever ran) is not an error here: it is queued.
            replies = await pipe.execute(raise_on_error=False)
        pending, groups, note, dead = (None if isinstance(r, Exception) else r for r in replies)
        pending, groups, dead = pending or [], groups or [], dead or []
        max_attempts = self.settings.max_deliveries
        for _, fields in dead:
            metadata = orjson.loads(fields.get(b"metadata", b"{}"))
            if metadata.get("fleet.message-id") == entry_id:
                return Progress(
                    "dead-lettered",
                    int(metadata.get("fleet.deliveries", 0)),
                    max_attempts,
                    metadata.get("fleet.error"),
                )
        reason = note.decode() if isinstance(note, bytes) else note
        if pending:
            entry = pending[0]
            attempts = int(entry["times_delivered"])
            consumer = _text(entry["consumer"])
            state = "retrying" if reason and attempts >= 1 else "running"
            return Progress(state, attempts, max_attempts, reason, consumer)
        last_delivered = next(
            (_text(g["last-delivered-id"]) for g in groups if _text(g["name"]) == group), "0-0"
        )
        if _id_tuple(entry_id) > _id_tuple(last_delivered):
            return Progress("queued", 0, max_attempts)
        return Progress("answered", 0, max_attempts)

    async def invoke(
        self,
        slug: str,
        input: dict[str, Any] | None = None,
        *,
        timeout: float = 30.0,
        **options: Any,
    ) -> ExecutionResult:
        """Publish and wait up to ``timeout`` seconds for the result.

        Raises :class:`~shared.errors.ExecutionTimeout` if no result arrives in time (the
        request may still run: its execution id is in the exception).
        """
        await self.open()
        execution_id = options.pop("execution_id", None)
        future = self._waiter(execution_id) if execution_id else None
        execution_id = await self.publish(slug, input, execution_id=execution_id, **options)
        if future is None:
            future = self._waiter(execution_id)
        return await self._await(execution_id, future, timeout)

    async def call(
        self,
        slug: str,
        input: dict[str, Any] | None = None,
        *,
        timeout: float = 30.0,
        domain: str | None = None,
        execution_id: str | None = None,
        context: dict[str, Any] | None = None,
        workflow_execution_id: str | None = None,
        node_id: str | None = None,
        timeout_seconds: float | None = None,
        traceparent: str | None = None,
        fallback: bool = True,
    ) -> ExecutionResult:
        """Run ``slug`` synchronously: ``POST /execute`` to a live worker of its domain (the
        addresses workers publish, ``shared.discovery``; tried in random order) and return the
        result it answers, completed or failed. Nothing goes through the request stream.

        A worker that cannot be reached or answers 503 (draining) is skipped. When none is left
        (a domain scaled to zero by ``fleet up``, workers without a probe port), the request is
        published and awaited like :meth:`invoke` with the same execution id, which also wakes
        the domain; ``fallback=False`` raises :class:`~shared.errors.TransportError` instead.
        Workers with ``FLEET_APP_API_TOKEN`` get this client's ``FLEET_APP_API_TOKEN``.

        Raises :class:`~shared.errors.ExecutionTimeout` when no answer came within ``timeout``
        (the call may still run: calling again with its execution id returns its result, with
        the registry), :class:`~shared.errors.InvalidEvent` for a request the worker cannot read
        (400), :class:`~shared.errors.ConfigError` for a refused token (401/403).
        """
        topic = await self.route(slug, domain)
        target = topic.removeprefix(self.settings.topic_prefix)
        execution_id = execution_id or str(uuid.uuid4())
        body: dict[str, Any] = {"function": slug, "input": input or {}, "execution_id": execution_id}
        optional = {
            "context": context,
            "workflow_execution_id": workflow_execution_id,
            "node_id": node_id,
            "timeout_seconds": timeout_seconds,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        headers = {"Content-Type": "application/json"}
        if self.settings.app_api_token:
            headers["dapr-api-token"] = self.settings.app_api_token
        if traceparent:
            headers["traceparent"] = traceparent
        async with redis_errors_as_transport("reading the workers' addresses"):
            urls = await live_endpoints(self._redis, self.settings, target)
        random.shuffle(urls)
        payload = orjson.dumps(body)
        for url in urls:
            result = await self._post_execute(url, payload, headers, timeout, slug, execution_id)
            if result is not None:
                return result
        if not fallback:
            raise TransportError(f"no live worker of domain {target!r} answered POST /execute")
        log.debug("no worker answered POST /execute; publishing instead", domain=target, tried=len(urls))
        return await self.invoke(
            slug,
            input,
            timeout=timeout,
            domain=domain,
            execution_id=execution_id,
            **{k: v for k, v in {**optional, "traceparent": traceparent}.items() if v is not None},
        )

    async def _post_execute(
        self, url: str, payload: bytes, headers: dict[str, str], timeout: float, slug: str, execution_id: str
    ) -> ExecutionResult | None:
        """The result ``url`` answered, or ``None`` when it was not reached or is draining."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with self._http.post(
                f"{url}/execute",
                data=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                status, answer = response.status, await response.read()
        except aiohttp.ClientConnectorError:
            return None  # never reached: nothing ran there
        except TimeoutError:
            raise ExecutionTimeout(
                f"no answer for {execution_id} from {url} within {timeout:g}s", execution_id=execution_id
            ) from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"POST {url}/execute failed: {exc!r}") from exc
        if status == 200:
            data = orjson.loads(answer)
            data.pop("success", None)  # the origin's flag; the result model has `status`
            return ExecutionResult.model_validate(data)
        if status == 503:
            return None
        text = answer.decode(errors="replace")[:500]
        if status == 400:
            error = orjson.loads(answer).get("error") or {}
            raise InvalidEvent(
                str(error.get("message") or text),
                details=error.get("details"),
                execution_id=execution_id,
                slug=slug,
            )
        if status in (401, 403):
            raise ConfigError(
                f"{url}/execute refused the call (HTTP {status}: {text}); "
                "set FLEET_APP_API_TOKEN to the workers' token"
            )
        if status == 413:
            raise PayloadTooLarge(f"{url}/execute: {text}", execution_id=execution_id, slug=slug)
        raise TransportError(f"{url}/execute answered HTTP {status}: {text}")

    async def wait(self, execution_id: str, timeout: float = 30.0) -> ExecutionResult:
        """Wait for the result of a request published after this client opened."""
        await self.open()
        return await self._await(execution_id, self._waiter(execution_id), timeout)

    def _waiter(self, execution_id: str) -> asyncio.Future[ExecutionResult]:
        future = self._waiters.get(execution_id)
        if future is None:
            future = self._waiters[execution_id] = asyncio.get_running_loop().create_future()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_results(), name="fleet-results-reader")
        return future

    async def _await(
        self, execution_id: str, future: asyncio.Future[ExecutionResult], timeout: float
    ) -> ExecutionResult:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise ExecutionTimeout(
                f"no result for {execution_id} within {timeout:g}s", execution_id=execution_id
            ) from None
        finally:
            self._waiters.pop(execution_id, None)

    async def _read_results(self) -> None:
        topic = self.settings.results_topic
        position = self._position or "0-0"
        backoff = Backoff(*REDIS_RECONNECT)
        while self._waiters and not self._closing:
            try:
                response: Any = await self._redis.xread(
                    {topic: position}, count=_READ_COUNT, block=_READ_BLOCK_MS
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("results reader failed; retrying", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            for _, entries in response or ():
                for entry_id, fields in entries:
                    position = entry_id.decode()
                    self._deliver(fields.get(b"data", b""))
            self._position = position

    def _deliver(self, body: bytes) -> None:
        try:
            event = orjson.loads(body)
            execution_id = event.get("executionid") or event["data"]["execution_id"]
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            return
        future = self._waiters.get(execution_id)
        if future is not None and not future.done():
            future.set_result(ExecutionResult.model_validate(event["data"]))
