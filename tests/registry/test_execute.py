"""``POST /execute`` on both transports, through a registry worker (claims, history).

* ``redis``: the worker's probe server (``FLEET_METRICS_PORT``), called directly;
* ``dapr``: the fake daprd's service-invocation API (``/v1.0/invoke/<app id>/method/execute``),
  which calls the worker's app channel as daprd does (app token, caller headers).

Each call is answered with the result object plus ``success``, runs through the same pipeline as
a pub/sub delivery (templates, validation, history, exactly-once by execution id), and is
published on the results topic like any other result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.runtime.worker import Worker
from shared.settings import Settings
from shared.transports.dapr_http import DaprTransport
from tests.conftest import read_results, running
from tests.fakes.daprd import FakeDaprd
from tests.observability import free_port
from tests.registry.conftest import execution_row, publish
from tests.registry.fixtures_functions import TEST_FUNCTIONS

KINDS = ["redis", "dapr"]
APP_TOKEN = "app-token-7c1d"


@dataclass
class Served:
    """A running registry worker of domain ``ai`` and how to call its ``/execute``."""

    kind: str
    worker: Worker
    settings: Settings
    url: str
    daprd: FakeDaprd | None

    @property
    def app_channel(self) -> str:
        assert isinstance(self.worker.transport, DaprTransport)
        return f"http://127.0.0.1:{self.worker.transport.port}/execute"

    async def post(
        self, body: Any, *, headers: Mapping[str, str] | None = None, url: str | None = None
    ) -> tuple[int, Any, Mapping[str, str]]:
        """``(status, body parsed when JSON, headers)`` of one call."""
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        sent = {"Content-Type": "application/json", **(headers or {})}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url or self.url, data=data, headers=sent) as response,
        ):
            raw = await response.read()
            parsed: Any = orjson.loads(raw) if response.content_type == "application/json" else raw.decode()
            return response.status, parsed, dict(response.headers)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(
    registry_settings: Callable[..., Settings], redis_url: str
) -> Callable[..., contextlib.AbstractAsyncContextManager[Served]]:
    @contextlib.asynccontextmanager
    async def factory(kind: str, **overrides: Any) -> AsyncIterator[Served]:
        async with contextlib.AsyncExitStack() as stack:
            fake: FakeDaprd | None = None
            if kind == "dapr":
                base = registry_settings(**overrides)
                fake = FakeDaprd(
                    redis_url,
                    app_id=base.group_for("ai"),
                    pubsub_name=base.pubsub_name,
                    app_api_token=base.app_api_token,
                )
                await fake.start()
                stack.push_async_callback(fake.close)
                overrides = {"app_port": 0, "dapr_http_port": fake.http_port, **overrides}
            else:
                overrides = {"metrics_port": free_port(), **overrides}
            settings = registry_settings(**overrides)
            worker = create_worker("ai", settings, kind, table=TEST_FUNCTIONS)
            await stack.enter_async_context(running(worker))
            if fake is not None:
                assert isinstance(worker.transport, DaprTransport)
                await fake.attach_app(worker.transport.port)
                stack.push_async_callback(fake.stop_subscriptions)
                url = (
                    f"http://127.0.0.1:{fake.http_port}/v1.0/invoke/{settings.group_for('ai')}/method/execute"
                )
            else:
                url = f"http://127.0.0.1:{settings.metrics_port}/execute"
            yield Served(kind, worker, settings, url, fake)

    return factory


async def result_events(redis: Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    return {e["executionid"]: e for e in await read_results(redis, settings.results_topic, 0, timeout=0)}


async def wait_for_result(redis: Redis, settings: Settings, execution_id: str) -> dict[str, Any]:
    for _ in range(500):
        found = (await result_events(redis, settings)).get(execution_id)
        if found is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no result event for {execution_id}")


async def test_a_call_is_answered_with_its_result_and_published_like_any_other(
    kind: str, serve: Callable[..., Any], redis: Redis, pool: Any
) -> None:
    async with serve(kind) as s:
        status, body, _ = await s.post(
            {"function": "system/echo", "input": {"hello": "world"}, "execution_id": "call-1"}
        )
        assert status == 200, body
        assert body["success"] is True
        assert (body["execution_id"], body["function"], body["status"]) == (
            "call-1",
            "system/echo",
            "completed",
        )
        assert body["output"] == {"hello": "world"}
        assert body["attempt"] == 1
        # The same result went out on the results topic, and into the history.
        event = await wait_for_result(redis, s.settings, "call-1")
        assert event["type"] == "fleet.execution.completed"
        assert event["data"] == {k: v for k, v in body.items() if k != "success"}
        assert await redis.xlen(s.settings.topic_for("ai")) == 0  # nothing went through the stream
    row = await execution_row(pool, "call-1")
    assert row is not None
    assert row["status"] == "completed"
    if s.daprd is not None:
        # daprd reached the app channel as a service invocation, with the app's route.
        (call,) = s.daprd.invocations()
        assert (call.method, call.path, call.status) == ("POST", "/execute", 200)


async def test_the_origin_shape_with_templates_from_node_outputs(
    kind: str, serve: Callable[..., Any], pool: Any
) -> None:
    async with serve(kind) as s:
        status, body, _ = await s.post(
            {
                "function_slug": "system/echo",
                "input": {"greeting": "hello {{fetch.name}}", "count": "{{fetch.n}}"},
                "node_outputs": {"fetch": {"name": "ada", "n": 3}},
                "workflow_id": "wf-7",
                "node_id": "greet",
                "execution_id": "origin-1",
            }
        )
    assert status == 200, body
    assert body["output"] == {"greeting": "hello ada", "count": 3}
    assert body["function"] == "system/echo"  # results carry the contract's names
    row = await execution_row(pool, "origin-1")
    assert row is not None
    assert (row["workflow_execution_id"], row["node_id"]) == ("wf-7", "greet")


async def test_failures_are_results_with_their_code_not_http_errors(
    kind: str, serve: Callable[..., Any]
) -> None:
    async with serve(kind) as s:
        failed = await s.post({"function": "system/fail", "input": {"message": "boom", "code": "quota"}})
        unknown = await s.post({"function": "nope/missing", "input": {}})
        unknown_id = await s.post({"function_id": "0b7c6c1e-0000-4000-8000-00000000dead"})
        invalid = await s.post({"function": "system/sleep", "input": {"seconds": "soon"}})
    for status, body, _ in (failed, unknown, unknown_id, invalid):
        assert status == 200, body
        assert body["success"] is False
        assert body["status"] == "failed"
    assert failed[1]["error"]["code"] == "quota"
    assert failed[1]["error"]["message"] == "boom"
    assert unknown[1]["error"]["code"] == "unknown_function"
    assert unknown_id[1]["error"]["code"] == "unknown_function"
    assert invalid[1]["error"]["code"] == "invalid_input"
    assert [d["path"] for d in invalid[1]["error"]["details"]] == ["/seconds"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        ({"input": {}}, "names no function"),
        ({"function": "system/echo", "input": "text"}, "not a valid execution request"),
        ({"function": "system/echo", "function_slug": "system/fail"}, "disagree"),
        ({"function": "system/echo", "execution_id": 42}, "execution_id"),
        ({"function": "system/echo", "execution_id": "x" * 201}, "execution_id"),
    ],
)
async def test_an_unusable_request_is_400_and_nothing_runs(
    kind: str, serve: Callable[..., Any], redis: Redis, body: Any, message: str
) -> None:
    async with serve(kind) as s:
        status, answer, _ = await s.post(body)
        assert status == 400, answer
        assert answer["success"] is False
        assert answer["error"]["code"] == "invalid_event"
        assert message in answer["error"]["message"]
        assert await result_events(redis, s.settings) == {}


async def test_a_repeated_execution_id_returns_the_first_result_without_a_second_run(
    kind: str, serve: Callable[..., Any], redis: Redis, redis_url: str, namespace: str, pool: Any
) -> None:
    key = f"{namespace}counted"
    call = {"function": "testing/counted", "input": {"redis": redis_url, "key": key}, "execution_id": "once"}
    async with serve(kind) as s:
        first = await s.post(call)
        again = await s.post(call)
        # Two at once, of a new execution that takes a while: one runs, the other waits for it.
        slow = {
            **call,
            "input": {**call["input"], "key": f"{key}-slow", "hold": 0.5},
            "execution_id": "twice",
        }
        both = await asyncio.gather(s.post(slow), s.post(slow))
    assert first[0] == again[0] == 200
    assert first[1]["output"] == {"effect": 1, "runs": 1}
    assert again[1] == first[1]  # the stored result, timestamps and all
    assert int(await redis.get(f"{key}:runs") or 0) == 1
    assert both[0][1] == both[1][1]
    assert both[0][1]["output"] == {"effect": 1, "runs": 1}
    assert int(await redis.get(f"{key}-slow:runs") or 0) == 1
    row = await execution_row(pool, "once")
    assert row is not None
    assert row["attempt"] == 1


async def test_a_call_repeating_a_published_request_is_answered_from_its_result(
    kind: str, serve: Callable[..., Any], redis: Redis, redis_url: str, namespace: str
) -> None:
    key = f"{namespace}cross"
    counted = {"redis": redis_url, "key": key}
    async with serve(kind) as s:
        execution_id = await publish(redis, s.settings, "testing/counted", counted, execution_id="pubsub-1")
        published = await wait_for_result(redis, s.settings, execution_id)
        status, body, _ = await s.post(
            {"function": "testing/counted", "input": counted, "execution_id": execution_id}
        )
    assert status == 200
    assert {k: v for k, v in body.items() if k != "success"} == published["data"]
    assert int(await redis.get(f"{key}:runs") or 0) == 1


async def test_a_redelivery_request_is_run_again_until_max_deliveries(
    kind: str, serve: Callable[..., Any]
) -> None:
    async with serve(kind, max_deliveries=3, retry_initial_backoff=0.01, retry_max_backoff=0.02) as s:
        status, body, _ = await s.post({"function": "system/fail", "input": {"redeliver": True}})
    assert status == 200
    assert body["error"]["code"] == "max_deliveries_exceeded"
    assert body["attempt"] == 3
    assert body["error"]["details"]["deliveries"] == 3


async def test_a_draining_worker_answers_503_and_finishes_the_calls_it_took(
    kind: str, serve: Callable[..., Any]
) -> None:
    async with serve(kind) as s:
        taken = asyncio.create_task(s.post({"function": "system/sleep", "input": {"seconds": 0.5}}))
        for _ in range(500):
            if s.worker.executing:
                break
            await asyncio.sleep(0.01)
        assert s.worker.executing == 1
        s.worker.stop()
        status, body, headers = await s.post({"function": "system/echo", "input": {}})
        assert status == 503, body
        assert headers["Retry-After"] == "1"
        first = await taken
    assert first[0] == 200
    assert first[1]["output"] == {"slept": 0.5}


async def test_the_app_token_guards_the_call(kind: str, serve: Callable[..., Any]) -> None:
    async with serve(kind, app_api_token=APP_TOKEN) as s:
        # daprd adds the app token itself; a direct-mode caller presents it.
        own = {} if kind == "dapr" else {"dapr-api-token": APP_TOKEN}
        ok = await s.post({"function": "system/echo", "input": {"a": 1}}, headers=own)
        direct = s.app_channel if kind == "dapr" else s.url
        missing = await s.post({"function": "system/echo"}, url=direct)
        wrong = await s.post({"function": "system/echo"}, url=direct, headers={"dapr-api-token": "nope"})
        bearer = await s.post(
            {"function": "system/echo", "input": {"b": 2}},
            url=direct,
            headers={"Authorization": f"Bearer {APP_TOKEN}"},
        )
    assert ok[0] == 200
    assert ok[1]["output"] == {"a": 1}
    assert (missing[0], wrong[0]) == (401, 401)
    if kind == "redis":
        assert (bearer[0], bearer[1]["output"]) == (200, {"b": 2})
    else:  # the app channel takes daprd's header only
        assert bearer[0] == 401


async def test_a_body_over_the_payload_limit_is_413(
    kind: str, serve: Callable[..., Any], redis: Redis
) -> None:
    async with serve(kind, max_payload_bytes=2048) as s:
        big = {"function": "system/echo", "input": {"blob": "x" * 4096}}
        status, _, _ = await s.post(big)
        assert status == 413
        small = await s.post({"function": "system/echo", "input": {"blob": "x" * 100}})
        assert small[0] == 200
        assert len(await result_events(redis, s.settings)) == 1


async def test_a_slow_body_is_408(kind: str, serve: Callable[..., Any]) -> None:
    async with serve(kind, app_read_timeout=0.3) as s:
        target = s.app_channel if kind == "dapr" else s.url
        host_port = target.removeprefix("http://").split("/", 1)[0]
        host, port = host_port.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"function":'
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
    assert status_line.split()[1] == b"408"


def test_helpers_do_not_leak_tokens() -> None:
    # The token used above is not an environment default that could mask a missing header.
    assert os.environ.get("FLEET_APP_API_TOKEN") in (None, "")


# ------------------------------------------------------------------ FleetClient.call, fleet invoke --sync
async def test_the_client_calls_a_live_worker_skipping_dead_addresses(
    serve: Callable[..., Any], redis: Redis
) -> None:
    from shared.client import FleetClient
    from shared.discovery import endpoints_key

    async with serve("redis") as s:
        # A crashed worker's entry that has not expired yet: nothing listens there.
        dead = {"url": f"http://127.0.0.1:{free_port()}", "domain": "ai", "expires_at": 4e9}
        await redis.hset(endpoints_key(s.settings), "crashed", orjson.dumps(dead))
        async with FleetClient(settings=s.settings) as client:
            results = [await client.call("system/echo", {"n": n}, domain="ai", timeout=20) for n in range(4)]
        assert [r.output for r in results] == [{"n": n} for n in range(4)]
        assert all(r.status == "completed" for r in results)
        assert await redis.xlen(s.settings.topic_for("ai")) == 0  # no request went through the stream
        # ...and each result went out on the results topic like any other.
        for r in results:
            await wait_for_result(redis, s.settings, r.execution_id)


async def test_the_client_publishes_when_no_worker_answers_unless_told_not_to(
    serve: Callable[..., Any], redis: Redis
) -> None:
    from shared.client import FleetClient
    from shared.errors import TransportError

    # metrics_port=0: the worker serves no /execute and publishes no address.
    async with serve("redis", metrics_port=0) as s, FleetClient(settings=s.settings) as client:
        with pytest.raises(TransportError, match="no live worker"):
            await client.call("system/echo", {"a": 1}, domain="ai", fallback=False)
        assert await redis.xlen(s.settings.topic_for("ai")) == 0
        result = await client.call("system/echo", {"a": 2}, domain="ai", execution_id="fell-back", timeout=20)
        assert (result.execution_id, result.status, result.output) == ("fell-back", "completed", {"a": 2})
        assert await redis.xlen(s.settings.topic_for("ai")) == 1  # published, answered by the worker


async def test_the_client_turns_refusals_into_errors(serve: Callable[..., Any]) -> None:
    from shared.client import FleetClient
    from shared.errors import ConfigError, InvalidEvent

    async with serve("redis", app_api_token=APP_TOKEN) as s:
        tokenless = s.settings.model_copy(update={"app_api_token": None})
        async with FleetClient(settings=tokenless) as client:
            with pytest.raises(ConfigError, match="FLEET_APP_API_TOKEN"):
                await client.call("system/echo", {}, domain="ai", timeout=20)
        async with FleetClient(settings=s.settings) as client:
            ok = await client.call("system/echo", {"t": 1}, domain="ai", timeout=20)
            assert ok.output == {"t": 1}
            with pytest.raises(InvalidEvent, match="execution_id"):
                # Longer than the contract allows: refused before anything runs (HTTP 400).
                await client.call("system/echo", {}, domain="ai", execution_id="x" * 201, timeout=20)


async def test_fleet_invoke_sync_prints_the_answer(serve: Callable[..., Any], redis: Redis) -> None:
    from click.testing import CliRunner

    from shared.tools.cli.main import cli

    async with serve("redis") as s:
        env = {
            "FLEET_REDIS_URL": s.settings.redis_url or "",
            "FLEET_TOPIC_PREFIX": s.settings.topic_prefix,
            "FLEET_RESULTS_TOPIC": s.settings.results_topic,
            "FLEET_GROUP_PREFIX": s.settings.group_prefix,
            "FLEET_HOME": str(s.settings.home),
            "FLEET_DATABASE_URL": "",
        }
        args = ["invoke", "system/echo", "--input", '{"via": "sync"}', "--domain", "ai", "--sync", "--json"]
        # Click blocks: it runs in a thread while this loop serves the worker.
        outcome = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert outcome.exit_code == 0, outcome.output
    # The worker logs in this process too, and CliRunner captures its lines with the answer.
    answer = orjson.loads(outcome.stdout[outcome.stdout.index("{\n") :])
    assert (answer["status"], answer["output"]) == ("completed", {"via": "sync"})
    assert await redis.xlen(s.settings.topic_for("ai")) == 0
