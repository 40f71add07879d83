"""Secrets in the console: a function's credentials show where they resolve; an operator sets,
replaces and deletes a value from the function page or the API (write-only, CSRF and token
rules as everywhere), and no answer ever carries a value."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet

from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.registry.secrets import SecretStore
from shared.settings import Settings
from shared.tools.console.app import create_app
from tests.console.conftest import Console

KEY = Fernet.generate_key().decode()
TOKEN = "a-long-random-console-token-for-secret-tests"
NOTIFY = {
    "slug": "acme/notify",
    "domain": "http",
    "execution_type": "http",
    "webhook_url": "https://example.com/hook",
    "webhook_headers": {"Authorization": "Bearer {{credentials.ACME_TOKEN}}"},
}


@pytest.fixture
def console_settings(registry_settings: Callable[..., Settings]) -> Settings:
    return registry_settings(ui_token=None, secrets_key=KEY)


@pytest.fixture
async def notify(pool: Any) -> None:
    await FunctionRepository(pool).register(FunctionDefinition.model_validate(NOTIFY))


def _csrf_of(page: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def test_set_and_delete_from_the_function_page(
    console: Console, notify: None, pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEET_SECRET_ACME_TOKEN", raising=False)
    value = f"acme-{uuid.uuid4().hex}"
    client = console.client
    page = await (await client.get("/functions/acme/notify")).text()
    assert 'id="credential-table"' in page
    assert "missing" in page
    csrf = _csrf_of(page)

    # Without the CSRF value: refused, nothing stored.
    refused = await client.post("/secrets/ACME_TOKEN", data={"value": value}, allow_redirects=False)
    assert refused.status == 403
    assert await pool.fetchval("SELECT count(*) FROM fleet_secrets") == 0

    stored = await client.post(
        "/secrets/ACME_TOKEN",
        data={"value": value, "_csrf": csrf, "next": "/functions/acme/notify"},
        allow_redirects=False,
    )
    assert stored.status == 303
    assert stored.headers["Location"].startswith("/functions/acme/notify?")
    page = await (await client.get(stored.headers["Location"])).text()
    assert 'id="secret-done"' in page
    assert "resolves" in page
    assert "(database)" in page
    assert value not in page
    assert await SecretStore.from_settings(pool, console.settings).get("ACME_TOKEN") == value

    detail = await (await client.get("/api/v1/functions/acme/notify")).json()
    assert detail["credentials"] == [
        {"name": "ACME_TOKEN", "resolves": True, "source": "database", "problem": None, "stored": True}
    ]
    assert value not in str(detail)

    # An off-site `next` is not followed.
    deleted = await client.post(
        "/secrets/ACME_TOKEN/delete",
        data={"_csrf": csrf, "next": "https://evil.example/"},
        allow_redirects=False,
    )
    assert deleted.status == 303
    assert deleted.headers["Location"].startswith("/functions?")
    assert await pool.fetchval("SELECT count(*) FROM fleet_secrets") == 0
    detail = await (await client.get("/api/v1/functions/acme/notify")).json()
    assert detail["credentials"][0]["resolves"] is False
    assert detail["credentials"][0]["stored"] is False


async def test_the_api_is_write_only_and_checks_its_input(console: Console, notify: None, pool: Any) -> None:
    value = f"acme-{uuid.uuid4().hex}"
    client = console.client
    no_csrf = await client.put("/api/v1/secrets/ACME_TOKEN", json={"value": value})
    assert no_csrf.status == 403
    assert (await no_csrf.json())["error"]["code"] == "csrf_failed"

    created = await console.put_json("/api/v1/secrets/ACME_TOKEN", {"value": value})
    assert created.status == 201
    body = await created.json()
    assert body["created"] is True
    assert body["secret"]["name"] == "ACME_TOKEN"
    assert body["secret"]["used_by"] == ["acme/notify"]
    replaced = await console.put_json("/api/v1/secrets/ACME_TOKEN", {"value": value + "-2"})
    assert replaced.status == 200
    listing = await client.get("/api/v1/secrets")
    text = await listing.text()
    assert [s["name"] for s in (await listing.json())["secrets"]] == ["ACME_TOKEN"]
    for answer in (str(body), str(await replaced.json()), text):
        assert value not in answer

    for name, sent, field in (
        ("bad name", {"value": "long-enough"}, "name"),
        ("ACME_TOKEN", {"value": "abc"}, "value"),
        ("ACME_TOKEN", {"value": 12345}, "value"),
        ("ACME_TOKEN", {"secret": "x"}, "value"),
    ):
        answer = await console.put_json(f"/api/v1/secrets/{name}", sent)
        assert answer.status == 400, (name, sent)
        error = (await answer.json())["error"]
        assert error["code"] == "bad_request"
        assert field in error["fields"]

    deleted = await client.delete("/api/v1/secrets/ACME_TOKEN", headers={"X-CSRF-Token": console.csrf})
    assert deleted.status == 200
    again = await client.delete("/api/v1/secrets/ACME_TOKEN", headers={"X-CSRF-Token": console.csrf})
    assert again.status == 404


async def test_without_a_key_writes_are_refused_and_the_page_says_what_to_set(
    registry_settings: Callable[..., Settings], notify: None, pool: Any
) -> None:
    app = create_app(registry_settings(ui_token=None, secrets_key=None), host="127.0.0.1")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        page = await (await client.get("/functions/acme/notify")).text()
        assert 'id="secrets-key-problem"' in page
        assert "FLEET_SECRETS_KEY" in page
        assert 'class="secret-form"' not in page
        csrf = client.session.cookie_jar.filter_cookies(client.make_url("/"))["fleet_csrf"].value
        refused = await client.put(
            "/api/v1/secrets/ACME_TOKEN", json={"value": "long-enough"}, headers={"X-CSRF-Token": csrf}
        )
        assert refused.status == 503
        assert (await refused.json())["error"]["code"] == "secrets_key_missing"
    assert await pool.fetchval("SELECT count(*) FROM fleet_secrets") == 0


async def test_off_loopback_the_token_is_required(
    registry_settings: Callable[..., Settings], notify: None, pool: Any
) -> None:
    app = create_app(registry_settings(ui_token=TOKEN, secrets_key=KEY), host="0.0.0.0")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        denied = await client.put("/api/v1/secrets/ACME_TOKEN", json={"value": "long-enough"})
        assert denied.status == 401
        ok = await client.put(
            "/api/v1/secrets/ACME_TOKEN",
            json={"value": "long-enough"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert ok.status == 201
    assert await pool.fetchval("SELECT count(*) FROM fleet_secrets") == 1
