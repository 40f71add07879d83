"""Fixtures for the catalog built-ins: provider fakes wired in through the base URL settings
(``Settings.<provider>_base_url``) and credentials through ``FLEET_SECRET_<KEY>``, and a harness
that runs a function through the worker's own middleware chain (validation, credentials,
timeout) with the provider clients a worker would have, without a broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from shared.assemble import create_worker, load_functions
from shared.contract import EVENT_REQUESTED, ExecutionResult, RequestData
from shared.credentials import CredentialResolver, EnvSecretSource, SecretRegistry
from shared.errors import ExecutionFailed
from shared.functions import BUILTINS, ExecutionContext
from shared.resources import Resources
from shared.runtime.credentials import CredentialsMiddleware
from shared.runtime.envelope import RequestEvent
from shared.runtime.metrics import Metrics
from shared.runtime.middleware import Call, compose, default_middleware
from shared.settings import Settings
from tests.conftest import running
from tests.fakes.providers import APIS, CREDENTIALS, FakeProvider
from workers.providers import ProviderClients

Invoke = Callable[..., Awaitable[ExecutionResult]]
StartFake = Callable[..., Awaitable[FakeProvider]]
#: Settings fields of this test's provider clients (base URLs of the fakes started, timings).
ProviderConfig = dict[str, Any]


@pytest.fixture
def provider_config() -> ProviderConfig:
    """What the provider clients of this test are built with, on top of the defaults: no backoff
    or poll wait; :func:`fake` adds the base URL of each fake it starts. A test may add more
    (``provider_config["provider_max_attempts"] = 1``) before it invokes."""
    return {"provider_backoff": 0.0, "fal_poll_interval": 0.0}


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch, provider_config: ProviderConfig) -> AsyncIterator[StartFake]:
    """``await fake("slack")`` starts the Slack fake, points ``slack_base_url`` at it and sets
    its credentials (``credentials=False``: makes sure they are absent)."""
    started: list[FakeProvider] = []

    async def start(provider: str, *, credentials: bool = True) -> FakeProvider:
        keys = CREDENTIALS[provider]
        instance = await FakeProvider(provider, APIS[provider], next(iter(keys.values()))).start()
        started.append(instance)
        provider_config[f"{provider}_base_url"] = instance.base_url
        for key, value in keys.items():
            if credentials:
                monkeypatch.setenv(f"FLEET_SECRET_{key}", value)
            else:
                monkeypatch.delenv(f"FLEET_SECRET_{key}", raising=False)
        return instance

    yield start
    for instance in started:
        await instance.close()


@pytest.fixture
def run_worker(settings: Settings, provider_config: ProviderConfig) -> Callable[..., Any]:
    """Like the root ``run_worker``, with this test's provider settings (read when it is called,
    so after the fakes started)."""

    def factory(domain: str = "ai", worker_settings: Settings | None = None, **kwargs: Any) -> Any:
        base = worker_settings or settings
        return running(create_worker(domain, base.model_copy(update=provider_config), **kwargs))

    return factory


async def run_function(
    slug: str,
    input: dict[str, Any],
    *,
    execution_id: str | None = None,
    settings: Settings | None = None,
    clients: ProviderClients | None = None,
) -> ExecutionResult:
    """Run ``slug`` through the default middleware chain + credentials, like a worker does, with
    ``clients`` (default: a fresh :class:`ProviderClients` of ``settings``, closed after)."""
    settings = settings or Settings()
    if clients is not None:
        return await _run(slug, input, execution_id, settings, clients)
    clients = ProviderClients(settings)
    try:
        return await _run(slug, input, execution_id, settings, clients)
    finally:
        await clients.aclose()


async def _run(
    slug: str, input: dict[str, Any], execution_id: str | None, settings: Settings, clients: ProviderClients
) -> ExecutionResult:
    load_functions()
    spec = BUILTINS.get(slug)
    assert spec is not None, f"no built-in {slug}"
    execution_id = execution_id or str(uuid.uuid4())
    resources = Resources()
    resources.provide(ProviderClients, clients)
    secrets = SecretRegistry()  # as a worker's credentials extension provides it
    resources.provide(SecretRegistry, secrets)
    chain = compose(
        default_middleware(
            Metrics(),
            before_timeout=[CredentialsMiddleware(CredentialResolver([EnvSecretSource()], secrets))],
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
        ctx=ExecutionContext(
            execution_id=execution_id,
            function=slug,
            attempt=1,
            domain=spec.domain or "ai",
            settings=settings,
            resources=resources,
        ),
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
def invoke(provider_config: ProviderConfig) -> Invoke:
    """``await invoke(slug, input)`` runs ``slug`` with provider clients built from this test's
    :func:`provider_config` as it is at the call."""

    async def run(slug: str, input: dict[str, Any], **kwargs: Any) -> ExecutionResult:
        kwargs.setdefault("settings", Settings(**provider_config))
        return await run_function(slug, input, **kwargs)

    return run
