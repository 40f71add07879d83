"""The cross-transport harness: one contract, run over the Redis transport and over Dapr.

Requests go into the Redis request stream and results are read from the Redis results stream
in both cases; only the middle differs:

* ``redis``: stream → ``RedisStreamsTransport`` → runtime → ``XADD`` results;
* ``dapr``:  stream → fake daprd (``pubsub.redis`` subscribe side) → HTTP → ``DaprTransport``
  → runtime → HTTP publish → fake daprd → ``XADD`` results.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.errors import ExecutionFailed, Retry
from shared.functions import BUILTINS, ExecutionContext, FunctionTable, builtin
from shared.runtime.envelope import encode_request
from shared.runtime.worker import Worker
from shared.settings import Settings
from tests.conftest import running
from tests.fakes.daprd import FakeDaprd

DOMAIN = "ai"
TRANSPORT_KINDS = ["redis", "dapr"]


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


@pytest.fixture
def functions() -> FunctionTable:
    """The diagnostics plus test-only functions, as the worker's resolver."""
    importlib.import_module("shared.diagnostics")
    table = FunctionTable()
    for spec in BUILTINS:
        if spec.slug.startswith("system/"):
            table.add(spec)

    @builtin("test/comms-only", domain="comms", table=table)
    async def comms_only(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
        return {"ran": True}

    @builtin("test/boom", domain=None, table=table)
    async def boom(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
        raise ValueError("kaboom")

    @builtin("test/attempt", domain=None, table=table)
    async def attempt(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
        if ctx.attempt < int(data.get("succeed_on", 1)):
            raise Retry(f"attempt {ctx.attempt} asked for another")
        return {"attempt": ctx.attempt}

    @builtin("test/custom-failure", domain=None, table=table)
    async def custom_failure(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
        raise ExecutionFailed("declined", code="quota_exceeded", retryable=True, details={"limit": 3})

    return table


@dataclass
class Running:
    """A running worker (and, for dapr, its fake sidecar) plus stream helpers."""

    kind: str
    worker: Worker
    settings: Settings
    redis: Redis
    daprd: FakeDaprd | None

    @property
    def topic(self) -> str:
        return self.settings.topic_for(DOMAIN)

    @property
    def results_topic(self) -> str:
        return self.settings.results_topic

    @property
    def dlq(self) -> str:
        return self.settings.dlq_for(self.topic)

    @property
    def group(self) -> str:
        # The Redis transport's consumer group and daprd's app id (= group) are the same name.
        return self.settings.group_for(DOMAIN)

    async def publish_raw(self, body: bytes, metadata: bytes = b"{}") -> str:
        entry_id = await self.redis.xadd(self.topic, {"data": body, "metadata": metadata})
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def request(
        self, function: str, input: dict[str, Any] | None = None, **options: Any
    ) -> tuple[str, bytes]:
        """Publish a request CloudEvent like the fleet client does; returns (id, body)."""
        options.setdefault("traceparent", new_traceparent())
        execution_id, body = encode_request(function=function, input=input or {}, **options)
        await self.publish_raw(body)
        return execution_id, body

    async def results(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return [(entry_id, fields) for entry_id, fields in await self.redis.xrange(self.results_topic)]

    async def result_for(
        self, execution_id: str, timeout: float = 15.0
    ) -> tuple[dict[str, Any], bytes, bytes]:
        """Wait for the result event naming ``execution_id``: (event, data bytes, metadata bytes)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for _, fields in await self.redis.xrange(self.results_topic):
                event = orjson.loads(fields[b"data"])
                if event.get("executionid") == execution_id:
                    return event, fields[b"data"], fields.get(b"metadata", b"")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no result for {execution_id} within {timeout}s")
            await asyncio.sleep(0.02)

    async def dead_letters(self) -> list[dict[bytes, bytes]]:
        return [fields for _, fields in await self.redis.xrange(self.dlq)]

    async def wait_dead_letters(self, count: int, timeout: float = 15.0) -> list[dict[bytes, bytes]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            entries = await self.dead_letters()
            if len(entries) >= count:
                return entries
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(entries)} dead letters after {timeout}s, expected {count}")
            await asyncio.sleep(0.02)

    async def pending(self) -> int:
        summary = await self.redis.xpending(self.topic, self.group)
        return int(summary["pending"])

    async def wait_settled(self, timeout: float = 10.0) -> None:
        """Wait until the group has nothing pending (everything answered was acked)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.pending():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{await self.pending()} entries still pending after {timeout}s")
            await asyncio.sleep(0.02)

    async def echo(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One echo round trip; returns the result event (asserting it completed)."""
        payload = payload if payload is not None else {"ping": os.urandom(4).hex()}
        execution_id, _ = await self.request("system/echo", payload)
        event, _, _ = await self.result_for(execution_id)
        assert event["type"] == "fleet.execution.completed", event
        assert event["data"]["output"] == payload
        return event


class Harness:
    """``async with harness.start(**settings_overrides) as run:`` for the parametrised transport."""

    def __init__(
        self, kind: str, make_settings: Callable[..., Settings], redis_url: str, functions: FunctionTable
    ) -> None:
        self.kind = kind
        self.make_settings = make_settings
        self.redis_url = redis_url
        self.functions = functions

    @contextlib.asynccontextmanager
    async def start(self, *, daprd: dict[str, Any] | None = None, **overrides: Any) -> AsyncIterator[Running]:
        """Run a worker for domain ``ai`` with ``overrides`` on top of the test settings.

        ``daprd`` are :class:`FakeDaprd` options (ignored for the redis transport). Tokens in
        ``overrides`` are given to the fake sidecar too, as the injector would.
        """
        redis = Redis.from_url(self.redis_url, decode_responses=False)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(redis.aclose)
            fake: FakeDaprd | None = None
            if self.kind == "dapr":
                base = self.make_settings(**overrides)
                options: dict[str, Any] = {
                    "app_id": base.group_for(DOMAIN),
                    "pubsub_name": base.pubsub_name,
                    "api_token": base.dapr_api_token,
                    "app_api_token": base.app_api_token,
                }
                options.update(daprd or {})
                fake = FakeDaprd(self.redis_url, **options)
                await fake.start()
                stack.push_async_callback(fake.close)
                overrides = {
                    "app_port": 0,
                    "dapr_http_port": fake.http_port,
                    "dapr_ready_timeout": 10.0,
                    **overrides,
                }
            settings = self.make_settings(**overrides)
            worker = create_worker(DOMAIN, settings, self.kind, resolver=self.functions)
            await stack.enter_async_context(running(worker))
            if fake is not None:
                from shared.transports.dapr_http import DaprTransport

                assert isinstance(worker.transport, DaprTransport)
                await fake.attach_app(worker.transport.port)
                # Runs before the worker stops: daprd stops delivering first on SIGTERM.
                stack.push_async_callback(fake.stop_subscriptions)
            yield Running(self.kind, worker, settings, redis, fake)


@pytest.fixture(params=TRANSPORT_KINDS)
def harness(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    redis_url: str,
    functions: FunctionTable,
) -> Harness:
    return Harness(request.param, make_settings, redis_url, functions)


@pytest.fixture
def dapr_harness(make_settings: Callable[..., Settings], redis_url: str, functions: FunctionTable) -> Harness:
    return Harness("dapr", make_settings, redis_url, functions)
