"""Fake SaaS provider APIs for the catalog built-ins: aiohttp servers on loopback (port 0).

Each fake knows its API's documented surface (:data:`APIS`): the exact auth header form, the
routes (method + path) and the body fields each route requires. A request that gets any of it
wrong is answered like the real API would (401 bad auth, 404 unknown route, 422 missing field)
and recorded like every other request (``fake.requests``), so tests can assert what was sent.

Tests script failures with :meth:`FakeProvider.fail_next` (e.g. one 503 with ``Retry-After: 0``)
and override a route's answer with :meth:`FakeProvider.reply`.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

__all__ = ["APIS", "CREDENTIALS", "Api", "FakeProvider", "Recorded", "Reply", "Route"]


@dataclass
class Recorded:
    """One request a fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # path parameters of the matched route

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    @property
    def form_pairs(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True)


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[Recorded], Any]


@dataclass
class Route:
    method: str
    #: path with ``{name}`` segments (``{name:.+}`` for a tail that may contain slashes)
    pattern: str
    reply: Responder
    #: body fields the API requires (JSON body, or form body when ``form``)
    required: tuple[str, ...] = ()
    form: bool = False

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        regex = re.sub(
            r"\{(\w+)(?::([^}]+))?\}", lambda m: f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})", self.pattern
        )
        found = re.fullmatch(regex, path)
        return found.groupdict() if found else None


@dataclass
class Api:
    """A provider's documented surface."""

    #: exact headers every request must carry; ``{key}`` is replaced by the credential
    headers: dict[str, str]
    routes: list[Route]
    #: the path prefix of the real base URL (Slack's is ``/api``)
    base_path: str = ""
    #: how the API says "unauthorized"
    unauthorized: Any = field(default_factory=lambda: {"error": {"message": "invalid api key"}})


class FakeProvider:
    """One fake provider API; ``async with FakeProvider(...)`` or start/close."""

    def __init__(self, name: str, api: Api, key: str) -> None:
        self.name = name
        self.api = api
        self.key = key
        self.requests: list[Recorded] = []
        self._failures: deque[Reply] = deque()
        self._overrides: dict[tuple[str, str], Responder] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def base_url(self) -> str:
        return f"{self.url}{self.api.base_path}"

    async def start(self) -> FakeProvider:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- scripting ---------------------------------------------------------------------
    def fail_next(
        self,
        status: int,
        json: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        text: str | None = None,
    ) -> None:
        """Answer the next ``times`` well-formed requests with ``status`` instead."""
        for _ in range(times):
            self._failures.append(Reply(status, json, text, dict(headers or {})))

    def reply(self, method: str, pattern: str, responder: Responder | Any) -> None:
        """Override the answer of the route ``method pattern`` (a value or a function)."""
        if not any(r.method == method and r.pattern == pattern for r in self.api.routes):
            raise KeyError(f"{self.name} has no route {method} {pattern}")
        self._overrides[(method, pattern)] = responder if callable(responder) else (lambda _r: responder)

    def only(self) -> Recorded:
        assert len(self.requests) == 1, [f"{r.method} {r.path}" for r in self.requests]
        return self.requests[0]

    # -- serving -----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        self.requests.append(recorded)
        for name, expected in self.api.headers.items():
            if recorded.headers.get(name.lower()) != expected.replace("{key}", self.key):
                return _respond(Reply(401, self.api.unauthorized))
        path = recorded.path
        if self.api.base_path and path.startswith(self.api.base_path):
            path = path[len(self.api.base_path) :]
        for route in self.api.routes:
            params = route.match(recorded.method, path)
            if params is None:
                continue
            recorded.params = params
            missing = _missing_fields(route, recorded)
            if missing:
                return _respond(Reply(422, {"error": {"message": f"missing fields: {', '.join(missing)}"}}))
            if self._failures:
                return _respond(self._failures.popleft())
            responder = self._overrides.get((route.method, route.pattern), route.reply)
            answer = responder(recorded)
            return _respond(answer if isinstance(answer, Reply) else Reply(200, answer))
        return _respond(Reply(404, {"error": {"message": f"no route {recorded.method} {recorded.path}"}}))


def _missing_fields(route: Route, recorded: Recorded) -> list[str]:
    if not route.required:
        return []
    if route.form:
        if not recorded.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return list(route.required)
        present: Any = recorded.form
    else:
        if not recorded.headers.get("content-type", "").startswith("application/json"):
            return list(route.required)
        try:
            present = recorded.json
        except ValueError:
            return list(route.required)
        if not isinstance(present, dict):
            return list(route.required)
    return [name for name in route.required if present.get(name) in (None, "", [])]


def _respond(reply: Reply) -> web.Response:
    if reply.text is not None:
        return web.Response(status=reply.status, text=reply.text, headers=reply.headers)
    if reply.json is None and reply.status == 204:
        return web.Response(status=204, headers=reply.headers)
    return web.json_response(reply.json, status=reply.status, headers=reply.headers)


# ------------------------------------------------------------------------------ the APIs
BEARER = {"Authorization": "Bearer {key}"}
JSON_CT = "application/json"

#: provider → {credential key: test value}; the first key authenticates.
CREDENTIALS: dict[str, dict[str, str]] = {
    "slack": {"SLACK_API_KEY": "xoxb-test-slack-token"},
    "resend": {"RESEND_API_KEY": "re_test_resend_key"},
}


def _slack_post(recorded: Recorded) -> Any:
    body = recorded.json
    return {
        "ok": True,
        "channel": "C0123456789",
        "ts": "1700000000.000100",
        "message": {"text": body["text"]},
    }


APIS: dict[str, Api] = {
    "slack": Api(
        headers=BEARER,
        base_path="/api",
        unauthorized={"ok": False, "error": "invalid_auth"},
        routes=[Route("POST", "/chat.postMessage", _slack_post, required=("channel", "text"))],
    ),
    "resend": Api(
        headers=BEARER,
        routes=[
            Route(
                "POST",
                "/emails",
                lambda r: {"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"},
                required=("from", "to", "subject"),
            )
        ],
    ),
}
