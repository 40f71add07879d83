"""Ports in FLEET_HTTP_ALLOW entries bind every hop: a webhook allowed as ``127.0.0.1:PORT``
cannot be redirected to another port of the same address (a Redis, an admin port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext
from tests.http.conftest import Fake, Listener, Spies, allowing, fake_dns
from workers.http.webhook import run_webhook

StartFake = Callable[..., Awaitable[Fake]]
CTX = ExecutionContext(execution_id="exec-1", function="acme/hook", attempt=1, domain="http")


@pytest.fixture
async def other_port() -> AsyncIterator[Listener]:
    """A TCP listener on 127.0.0.1 — the allow-listed address, another port (where a Redis
    would listen) — counting accepted connections."""
    result = Listener(host="127.0.0.1")
    result.server = await asyncio.start_server(result._on_connect, result.host, 0)
    result.port = result.server.sockets[0].getsockname()[1]
    yield result
    result.server.close()
    await result.server.wait_closed()


def redirect(location: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": location})

    return handler


async def test_a_redirect_to_another_port_of_an_allowed_address_is_refused(
    fake: Fake, other_port: Listener, spies: Spies
) -> None:
    fake.routes["/hook"] = redirect(f"http://127.0.0.1:{other_port.port}/")
    with pytest.raises(ExecutionFailed) as caught:
        await run_webhook(
            url=fake.url("/hook"),
            input={"a": 1},
            ctx=CTX,
            timeout_seconds=10,
            policy=allowing(f"127.0.0.1:{fake.port}"),
        )
    assert caught.value.code == ErrorCode.DESTINATION_BLOCKED
    assert caught.value.details == {"host": "127.0.0.1", "reason": "loopback", "address": "127.0.0.1"}
    assert f"admits it on port {fake.port} only" in str(caught.value)
    assert [r.path for r in fake.requests] == ["/hook"]
    assert other_port.accepted == 0
    assert len(spies.connects) == 1  # the webhook's hop only


async def test_a_redirect_between_allowed_ports_is_followed(start_fake: StartFake) -> None:
    first, second = await start_fake(), await start_fake()
    first.routes["/hook"] = redirect(second.url("/moved"))
    result = await run_webhook(
        url=first.url("/hook"),
        input={"a": 1},
        ctx=CTX,
        timeout_seconds=10,
        policy=allowing(f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"),
    )
    assert (result["status"], result["body"]) == (200, {"ok": True})
    assert [r.path for r in second.requests] == ["/moved"]


async def test_a_name_allowed_on_one_port_is_refused_on_another(
    fake: Fake, other_port: Listener, spies: Spies, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, ["127.0.0.1"])
    fake.routes["/hook"] = redirect(f"http://hooks.internal:{other_port.port}/")
    with pytest.raises(ExecutionFailed) as caught:
        await run_webhook(
            url=fake.url("/hook", host="hooks.internal"),
            input={},
            ctx=CTX,
            timeout_seconds=10,
            policy=allowing(f"hooks.internal:{fake.port}"),
        )
    assert caught.value.code == ErrorCode.DESTINATION_BLOCKED
    assert caught.value.details == {"host": "hooks.internal", "reason": "loopback", "address": "127.0.0.1"}
    assert [r.path for r in fake.requests] == ["/hook"]
    assert other_port.accepted == 0
    assert len(spies.connects) == 1
