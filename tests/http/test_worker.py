"""End to end: ``system/http-request`` through a real ``http`` worker (Redis transport, the
production middleware chain) and the orchestrator client."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from aiohttp import web

from shared.client import FleetClient
from shared.contract import ErrorCode
from shared.runtime.worker import Worker
from shared.settings import Settings
from tests.http.conftest import Fake, Listener

RunWorker = Callable[..., AbstractAsyncContextManager[Worker]]


async def test_http_request_through_a_worker(
    run_worker: RunWorker, settings: Settings, fake: Fake, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's http extension provides the policy of its own settings to the handler.
    allowing = settings.model_copy(update={"http_allow": "127.0.0.1"})

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response({"got": await request.json(), "q": request.query.get("q")}, status=201)

    fake.routes["/echo"] = echo
    fake.routes["/escape"] = _redirect_to(f"http://127.0.0.2:{listener.port}/")
    async with run_worker("http", allowing), FleetClient(settings=settings) as fleet:
        ok = await fleet.invoke(
            "system/http-request",
            {
                "url": fake.url("/echo"),
                "method": "post",
                "query": {"q": "fleet"},
                "headers": "",
                "body": {"a": 1},
                "timeout_seconds": "5",
            },
            timeout=30,
        )
        blocked = await fleet.invoke(
            "system/http-request", {"url": "http://169.254.169.254/latest/meta-data/"}, timeout=30
        )
        escaped = await fleet.invoke("system/http-request", {"url": fake.url("/escape")}, timeout=30)
        invalid = await fleet.invoke("system/http-request", {"url": fake.url(), "timeout_seconds": "soon"})

    assert ok.status == "completed", ok.error
    output: dict[str, Any] = ok.output
    assert (output["status"], output["body"]) == (201, {"got": {"a": 1}, "q": "fleet"})
    assert output["headers"]["content-type"].startswith("application/json")

    assert blocked.status == "failed"
    assert blocked.error is not None
    assert (blocked.error.code, blocked.error.retryable) == (ErrorCode.DESTINATION_BLOCKED, False)
    assert blocked.error.details == {
        "host": "169.254.169.254",
        "reason": "metadata",
        "address": "169.254.169.254",
    }

    assert escaped.error is not None
    assert escaped.error.code == ErrorCode.DESTINATION_BLOCKED
    assert listener.accepted == 0

    assert invalid.error is not None
    assert invalid.error.code == ErrorCode.INVALID_INPUT
    assert [r.path for r in fake.requests] == ["/echo", "/escape"]


def _redirect_to(location: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": location})

    return handler
