"""The console's security model: token off loopback, login cookie, CSRF, host check, headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from shared.errors import ConfigError
from shared.settings import Settings
from shared.tools.console.app import create_app
from shared.tools.console.security import check_bind, is_loopback

TOKEN = "a-long-random-console-token-for-tests"


def test_loopback_only_without_a_token() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.0.0.5")
    check_bind("127.0.0.1", None)
    with pytest.raises(ConfigError, match="FLEET_UI_TOKEN"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", TOKEN)


def test_the_app_refuses_a_public_bind_without_a_token(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError):
        create_app(make_settings(ui_token=None), host="0.0.0.0")


async def test_token_required_by_bearer_or_login_cookie(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(ui_token=TOKEN, database_url=None), host="0.0.0.0")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        denied = await client.get("/api/v1/functions")
        assert denied.status == 401
        assert (await denied.json())["error"]["code"] == "unauthorized"
        redirected = await client.get("/functions", allow_redirects=False)
        assert redirected.status == 303
        assert redirected.headers["Location"].startswith("/login")
        wrong = await client.get("/api/v1/functions", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        ok = await client.get("/api/v1/functions", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200
        # Bearer requests need no CSRF token (a browser never adds the header by itself).
        run = await client.post(
            "/api/v1/functions/system/echo/state",
            json={"enabled": False},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert run.status == 503  # reached the handler: no database here

        login_page = await client.get("/login")
        assert login_page.status == 200
        csrf = client.session.cookie_jar.filter_cookies(client.make_url("/"))["fleet_csrf"].value
        bad = await client.post("/login", data={"token": "wrong", "_csrf": csrf, "next": "/functions"})
        assert bad.status == 401
        good = await client.post(
            "/login", data={"token": TOKEN, "_csrf": csrf, "next": "//evil.example/"}, allow_redirects=False
        )
        assert good.status == 303
        assert good.headers["Location"] == "/functions"
        cookie = good.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert TOKEN not in cookie
        assert (await client.get("/functions")).status == 200


async def test_csrf_refused_without_the_token(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(ui_token=None, database_url=None), host="127.0.0.1")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        no_cookie = await client.post("/api/v1/functions/system/echo/state", json={"enabled": False})
        assert no_cookie.status == 403
        assert (await no_cookie.json())["error"]["code"] == "csrf_failed"
        await client.get("/functions")
        csrf = client.session.cookie_jar.filter_cookies(client.make_url("/"))["fleet_csrf"].value
        wrong = await client.post(
            "/api/v1/functions/system/echo/state", json={"enabled": False}, headers={"X-CSRF-Token": "x" * 43}
        )
        assert wrong.status == 403
        form = await client.post("/functions/system/echo/state", data={"enabled": "false"})
        assert form.status == 403
        assert "csrf_failed" in await form.text()
        right = await client.post(
            "/api/v1/functions/system/echo/state", json={"enabled": False}, headers={"X-CSRF-Token": csrf}
        )
        assert right.status == 503  # past the CSRF check: no database here


async def test_foreign_host_refused_without_a_token_and_headers_set(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(ui_token=None, database_url=None), host="127.0.0.1")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        rebound = await client.get("/api/v1/functions", headers={"Host": "attacker.example"})
        assert rebound.status == 403
        page = await client.get("/functions")
        assert page.status == 200
        headers: Any = page.headers
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "unsafe-inline" not in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        first: Any = rebound.headers  # the CSRF cookie is set on the first answer
        assert "HttpOnly" in first["Set-Cookie"]
        assert "SameSite=Strict" in first["Set-Cookie"]


async def test_without_a_database_the_pages_say_so(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(ui_token=None, database_url=None, redis_url=None), host="127.0.0.1")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        listing = await client.get("/functions")
        text = await listing.text()
        assert listing.status == 200
        assert "system/echo" in text
        assert "no database is configured" in text
        assert (await client.get("/functions/system/echo")).status == 200
        executions = await client.get("/executions")
        assert executions.status == 503
        assert "no database is configured" in await executions.text()
        api = await client.get("/api/v1/executions")
        assert (await api.json())["error"]["code"] == "database_unavailable"
        fleet = await client.get("/fleet")
        assert fleet.status == 200
        assert "no broker is configured" in await fleet.text()
