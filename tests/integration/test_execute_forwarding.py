"""One app id for the whole fleet: a synchronous call (``POST /execute``) that reaches a domain
worker for a function of another domain is forwarded to that domain's app by Dapr service
invocation through the worker's own sidecar, and answered with that app's result."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

import shared.diagnostics  # noqa: F401  (registers system/* in BUILTINS)
from shared.assemble import create_worker
from shared.functions import BUILTINS, ExecutionContext, FunctionTable, builtin
from shared.runtime.sync import FORWARDED_HEADER
from shared.settings import Settings
from shared.transports.dapr_http import DaprTransport
from tests.conftest import running
from tests.fakes.daprd import FakeDaprd

TABLE = FunctionTable()
for _spec in list(BUILTINS):
    if _spec.slug.startswith("system/"):
        TABLE.add(_spec)


@builtin("testing/comms-only", domain="comms", timeout_seconds=5, table=TABLE)
async def comms_only(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    return {"shout": str(data["text"]).upper()}


@contextlib.asynccontextmanager
async def dapr_worker(domain: str, settings: Settings, redis_url: str) -> AsyncIterator[FakeDaprd]:
    fake = FakeDaprd(redis_url, app_id=settings.group_for(domain), pubsub_name=settings.pubsub_name)
    await fake.start()
    try:
        worker_settings = settings.model_copy(update={"app_port": 0, "dapr_http_port": fake.http_port})
        worker = create_worker(domain, worker_settings, "dapr", table=TABLE)
        async with running(worker):
            assert isinstance(worker.transport, DaprTransport)
            await fake.attach_app(worker.transport.port)
            yield fake
            await fake.stop_subscriptions()
    finally:
        await fake.close()


async def _invoke(fake: FakeDaprd, app_id: str, body: Any) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{fake.http_port}/v1.0/invoke/{app_id}/method/execute"
    async with aiohttp.ClientSession() as session, session.post(url, data=orjson.dumps(body)) as response:
        return response.status, orjson.loads(await response.read())


async def test_a_call_for_another_domains_function_is_forwarded_to_its_app(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings()
    ai_app, comms_app = settings.group_for("ai"), settings.group_for("comms")
    async with (
        dapr_worker("ai", settings, redis_url) as ai,
        dapr_worker("comms", settings, redis_url) as comms,
    ):
        ai.peers[comms_app] = comms
        status, body = await _invoke(
            ai, ai_app, {"function": "testing/comms-only", "input": {"text": "hi"}, "execution_id": "fwd-1"}
        )
        # The function of the ai domain runs where it is: no forwarding.
        local_status, local = await _invoke(ai, ai_app, {"function": "system/echo", "input": {"a": 1}})
    assert status == 200, body
    assert (body["execution_id"], body["status"], body["output"]) == ("fwd-1", "completed", {"shout": "HI"})
    assert body["success"] is True
    assert comms_app in body["worker"]  # answered by the comms worker
    (forwarded,) = [c for c in comms.app_calls if c.invocation and c.path == "/execute"]
    assert forwarded.headers[FORWARDED_HEADER] == comms_app
    assert orjson.loads(forwarded.body)["execution_id"] == "fwd-1"  # the same execution
    assert local_status == 200
    assert ai_app in local["worker"]
    assert not [
        c for c in comms.app_calls if c.invocation and orjson.loads(c.body).get("function") == "system/echo"
    ]


async def test_a_forwarded_call_is_not_forwarded_again(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings()
    ai_app = settings.group_for("ai")
    async with dapr_worker("ai", settings, redis_url) as ai:
        url = f"http://127.0.0.1:{ai.http_port}/v1.0/invoke/{ai_app}/method/execute"
        body = orjson.dumps({"function": "testing/comms-only", "input": {"text": "x"}})
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers={FORWARDED_HEADER: "elsewhere"}) as response,
        ):
            status, answer = response.status, orjson.loads(await response.read())
    # Answered here, as the pipeline answers a function of another domain.
    assert status == 200
    assert answer["status"] == "failed"
    assert answer["error"]["code"] == "wrong_domain"
