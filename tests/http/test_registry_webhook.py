"""End to end: a registered ``http`` function (a webhook) through a real registry worker —
Redis transport, PostgreSQL registry, the credentials middleware — and the SSRF guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.contract import ErrorCode
from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.http.conftest import Fake
from tests.registry.conftest import (  # noqa: F401 (fixtures)
    database_server,
    database_url,
    migrated_url,
    pool,
    publish,
    registry_settings,
)
from workers.http import webhook_credential_keys


async def test_registered_webhook_runs_with_injected_credentials(
    registry_settings: Callable[..., Settings],  # noqa: F811
    pool: Any,  # noqa: F811
    redis: Redis,
    fake: Fake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEET_SECRET_ACME_TOKEN", "tok-very-secret")

    async def created(request: web.Request) -> web.StreamResponse:
        # A careless webhook echoing the header: the result must not carry the secret.
        return web.json_response({"id": "T-9", "auth": request.headers["Authorization"]}, status=201)

    fake.routes["/hooks/ticket"] = created
    headers = {"Authorization": "Bearer {{credentials.ACME_TOKEN}}"}
    repository = FunctionRepository(pool)
    await repository.register(
        FunctionDefinition(
            slug="acme/create-ticket",
            domain="http",
            execution_type="http",
            webhook_url=fake.url("/hooks/ticket"),
            webhook_method="POST",
            webhook_headers=headers,
            credentials=list(webhook_credential_keys(headers)),
            timeout_seconds=30,
        )
    )
    await repository.register(
        FunctionDefinition(
            slug="acme/metadata",
            domain="http",
            execution_type="http",
            webhook_url="http://169.254.169.254/latest/meta-data/",
        )
    )
    settings = registry_settings(http_allow="127.0.0.1")
    async with running(create_worker("http", settings)):
        ok = await publish(redis, settings, "acme/create-ticket", {"title": "Disk full"}, domain="http")
        blocked = await publish(redis, settings, "acme/metadata", {}, domain="http")
        results = await read_results(redis, settings.results_topic, 2, timeout=30)
    by_id = {r["data"]["execution_id"]: r["data"] for r in results}

    assert by_id[ok]["status"] == "completed", by_id[ok]
    assert by_id[ok]["output"]["status"] == 201
    assert by_id[ok]["output"]["body"] == {"id": "T-9", "auth": "Bearer ***"}
    [seen] = fake.requests
    assert seen.headers["Authorization"] == "Bearer tok-very-secret"
    assert seen.headers["X-Fleet-Execution-Id"] == ok
    assert orjson.loads(seen.body) == {"title": "Disk full"}

    assert by_id[blocked]["status"] == "failed"
    assert by_id[blocked]["error"]["code"] == ErrorCode.DESTINATION_BLOCKED
