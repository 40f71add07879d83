"""Fixtures for the console: the app on this test's Redis namespace and fresh database, with an
``ai`` worker (which also serves ``system/*``) answering test runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from shared.assemble import create_worker
from shared.settings import Settings
from shared.tools.console.app import create_app
from tests.conftest import running
from tests.registry.conftest import (  # noqa: F401  (fixtures)
    database_server,
    database_url,
    migrated_url,
    pool,
    registry_settings,
)
from tests.registry.fixtures_functions import TEST_FUNCTIONS

HTTP_FUNCTION = {
    "slug": "hooks/notify",
    "description": "Posts to a webhook",
    "domain": "http",
    "execution_type": "http",
    "webhook_url": "https://example.com/hook",
    "webhook_method": "POST",
    "webhook_headers": {"Authorization": "Bearer s3cr3t-literal-value"},
    "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
    "tags": ["notify"],
}


class Console:
    """A console app under test: ``client`` (aiohttp test client) plus its settings."""

    def __init__(self, client: TestClient[Any, Any], settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.csrf = ""

    async def prime(self) -> str:
        """GET a page so the client holds the CSRF cookie; returns its value."""
        await self.client.get("/functions")
        cookie = self.client.session.cookie_jar.filter_cookies(self.client.make_url("/")).get("fleet_csrf")
        assert cookie is not None
        self.csrf = cookie.value
        return self.csrf

    async def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        if not self.csrf:
            await self.prime()
        return await self.client.post(path, json=body, headers={"X-CSRF-Token": self.csrf}, **kwargs)

    async def put_json(self, path: str, body: Any) -> Any:
        if not self.csrf:
            await self.prime()
        return await self.client.put(path, json=body, headers={"X-CSRF-Token": self.csrf})


@pytest.fixture
def console_settings(registry_settings: Callable[..., Settings]) -> Settings:  # noqa: F811
    return registry_settings(ui_token=None)


@pytest.fixture
async def console(console_settings: Settings, pool: Any) -> AsyncIterator[Console]:  # noqa: F811
    """The console with a running ``ai`` worker on the same broker and database."""
    from shared.registry.models import FunctionDefinition
    from shared.registry.repository import FunctionRepository

    await FunctionRepository(pool).register(FunctionDefinition.model_validate(HTTP_FUNCTION))
    async with running(create_worker("ai", console_settings, table=TEST_FUNCTIONS)):
        app = create_app(console_settings, host="127.0.0.1")
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield Console(client, console_settings)
