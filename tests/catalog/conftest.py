"""Fixtures for the catalog built-ins: provider fakes wired through ``FLEET_<PROVIDER>_BASE_URL``
and credentials through ``FLEET_SECRET_<KEY>``, and a harness that runs a function through the
worker's own middleware chain (validation, credentials, timeout) without a broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from shared.assemble import load_functions
from shared.contract import EVENT_REQUESTED, ExecutionResult, RequestData
from shared.credentials import CredentialResolver, CredentialsMiddleware, EnvSecretSource
from shared.errors import ExecutionFailed
from shared.functions import BUILTINS, ExecutionContext
from shared.runtime.envelope import RequestEvent
from shared.runtime.metrics import Metrics
from shared.runtime.middleware import Call, compose, default_middleware
from tests.fakes.providers import APIS, CREDENTIALS, FakeProvider
from workers.providers import close_providers

Invoke = Callable[..., Awaitable[ExecutionResult]]
StartFake = Callable[..., Awaitable[FakeProvider]]


@pytest.fixture(autouse=True)
async def _provider_clients(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Fresh provider settings and clients per test; every client closed after it."""
    monkeypatch.setenv("FLEET_PROVIDER_BACKOFF", "0")
    monkeypatch.setenv("FLEET_FAL_POLL_INTERVAL", "0")
    await close_providers()
    yield
    await close_providers()


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartFake]:
    """``await fake("slack")`` starts the Slack fake, points FLEET_SLACK_BASE_URL at it and sets
    its credentials (``credentials=False``: makes sure they are absent)."""
    started: list[FakeProvider] = []

    async def start(provider: str, *, credentials: bool = True) -> FakeProvider:
        keys = CREDENTIALS[provider]
        instance = await FakeProvider(provider, APIS[provider], next(iter(keys.values()))).start()
        started.append(instance)
        monkeypatch.setenv(f"FLEET_{provider.upper()}_BASE_URL", instance.base_url)
        for key, value in keys.items():
            if credentials:
                monkeypatch.setenv(f"FLEET_SECRET_{key}", value)
            else:
                monkeypatch.delenv(f"FLEET_SECRET_{key}", raising=False)
        return instance

    yield start
    for instance in started:
        await instance.close()


async def run_function(
    slug: str, input: dict[str, Any], *, execution_id: str | None = None
) -> ExecutionResult:
    """Run ``slug`` through the default middleware chain + credentials, like a worker does."""
    load_functions()
    spec = BUILTINS.get(slug)
    assert spec is not None, f"no built-in {slug}"
    execution_id = execution_id or str(uuid.uuid4())
    chain = compose(
        default_middleware(
            Metrics(), before_timeout=[CredentialsMiddleware(CredentialResolver([EnvSecretSource()]))]
        )
    )
    event = RequestEvent(
        id=execution_id,
        source="tests",
        type=EVENT_REQUESTED,
        data=RequestData(function=slug, input=input),
    )
    call = Call(
        event=event,
        spec=spec,
        ctx=ExecutionContext(execution_id=execution_id, function=slug, attempt=1, domain=spec.domain or "ai"),
        input=input,
        timeout=spec.timeout_seconds or 300.0,
        started_monotonic=time.monotonic(),
    )
    try:
        output = await chain(call)
    except ExecutionFailed as exc:
        return ExecutionResult.model_validate(
            {"execution_id": execution_id, "function": slug, "status": "failed", "error": exc.to_error()}
        )
    return ExecutionResult(
        execution_id=execution_id,
        function=slug,
        status="completed",
        output=orjson.loads(orjson.dumps(output)),
    )


@pytest.fixture
def invoke() -> Invoke:
    return run_function
