"""Fake SaaS provider APIs for the catalog built-ins: aiohttp servers on loopback (port 0).

Each fake knows its API's documented surface (:data:`APIS`): the exact auth header form, the
routes (method + path) and the body fields each route requires. A request that gets any of it
wrong is answered like the real API would (401 bad auth, 404 unknown route, 422 missing field)
and recorded like every other request (``fake.requests``), so tests can assert what was sent.

Tests script failures with :meth:`FakeProvider.fail_next` (e.g. one 503 with ``Retry-After: 0``)
and override a route's answer with :meth:`FakeProvider.reply`.
"""

from __future__ import annotations

import asyncio
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
    origin: str = ""  # scheme://host:port the request was sent to

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
    #: seconds to wait before answering (to provoke client timeouts)
    delay: float = 0.0


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
            origin=f"{request.scheme}://{request.host}",
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
                reply = self._failures.popleft()
            else:
                responder = self._overrides.get((route.method, route.pattern), route.reply)
                answer = responder(recorded)
                reply = answer if isinstance(answer, Reply) else Reply(200, answer)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            return _respond(reply)
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
    "github": {"GITHUB_TOKEN": "ghp_testgithubtoken"},
    "linear": {"LINEAR_API_KEY": "lin_api_testlinearkey"},
    "webflow": {"WEBFLOW_API_KEY": "wf-test-webflow-key"},
    "clerk": {"CLERK_SECRET_KEY": "sk_test_clerk_secret"},
    "stripe": {"STRIPE_SECRET_KEY": "sk_test_stripe_secret"},
    "blob": {"BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_test_token"},
    "openai": {"OPENAI_API_KEY": "sk-test-openai-key"},
    "anthropic": {"ANTHROPIC_API_KEY": "sk-ant-test-anthropic-key"},
    "perplexity": {"PERPLEXITY_API_KEY": "pplx-test-perplexity-key"},
    "fal": {"FAL_API_KEY": "fal-test-key-id:fal-test-secret"},
    "firecrawl": {"FIRECRAWL_API_KEY": "fc-test-firecrawl-key"},
    "superagent": {"SUPERAGENT_API_KEY": "sa-test-superagent-key"},
    "v0": {"V0_API_KEY": "v0-test-key"},
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


# -- github ------------------------------------------------------------------------------
def github_issue(number: int = 42, **overrides: Any) -> dict[str, Any]:
    issue = {
        "id": 1000 + number,
        "number": number,
        "title": "Crash on start",
        "html_url": f"https://github.com/acme/app/issues/{number}",
        "state": "open",
        "body": "It crashes.",
        "labels": [{"id": 1, "name": "bug"}],
        "assignees": [{"login": "octocat"}],
        "user": {"login": "hubot"},
        "comments": 3,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-02T00:00:00Z",
        "closed_at": None,
    }
    issue.update(overrides)
    return issue


def _github_created(r: Recorded) -> Any:
    body = r.json
    return Reply(201, github_issue(7, title=body["title"], body=body.get("body")))


def _github_patched(r: Recorded) -> Any:
    return github_issue(int(r.params["number"]), **r.json)


# -- linear ------------------------------------------------------------------------------
def _linear(r: Recorded) -> Any:
    query = r.json["query"]
    if "teams" in query:
        return {"data": {"teams": {"nodes": [{"id": "team-1", "name": "Engineering"}]}}}
    if "issueCreate" in query:
        issue = r.json["variables"]["input"]
        return {
            "data": {
                "issueCreate": {
                    "success": True,
                    "issue": {
                        "id": "issue-1",
                        "identifier": "ENG-1",
                        "title": issue["title"],
                        "url": "https://linear.app/acme/issue/ENG-1",
                    },
                }
            }
        }
    if "issues(" in query:
        return {
            "data": {
                "issues": {
                    "nodes": [
                        {
                            "id": "issue-1",
                            "title": "Crash on start",
                            "url": "https://linear.app/acme/issue/ENG-1",
                            "priority": 2,
                            "state": {"name": "In Progress"},
                            "assignee": {"id": "user-1"},
                        },
                        {
                            "id": "issue-2",
                            "title": "Docs",
                            "url": "https://linear.app/acme/issue/ENG-2",
                            "priority": 0,
                            "state": {"name": "In Progress"},
                            "assignee": None,
                        },
                    ]
                }
            }
        }
    return {"errors": [{"message": "unknown query"}]}


# -- webflow -----------------------------------------------------------------------------
def webflow_site(site_id: str = "site-1") -> dict[str, Any]:
    return {
        "id": site_id,
        "workspaceId": "ws-1",
        "displayName": "Acme",
        "shortName": "acme",
        "previewUrl": "https://screenshots.webflow.com/acme.png",
        "timeZone": "Europe/Berlin",
        "createdOn": "2025-01-01T00:00:00Z",
        "lastUpdated": "2026-01-02T00:00:00Z",
        "lastPublished": "2026-01-01T00:00:00Z",
        "customDomains": [{"id": "dom-1", "url": "acme.test", "lastPublished": "2026-01-01T00:00:00Z"}],
    }


def _webflow_publish(r: Recorded) -> Any:
    body = r.json
    domains = [{"id": d, "url": f"{d}.acme.test"} for d in body.get("customDomains", [])]
    return Reply(
        202, {"customDomains": domains, "publishToWebflowSubdomain": body["publishToWebflowSubdomain"]}
    )


# -- clerk -------------------------------------------------------------------------------
def clerk_user(user_id: str = "user_1", **overrides: Any) -> dict[str, Any]:
    user = {
        "id": user_id,
        "object": "user",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "primary_email_address_id": "idn_2",
        "email_addresses": [
            {"id": "idn_1", "email_address": "old@acme.test"},
            {"id": "idn_2", "email_address": "ada@acme.test"},
        ],
        "created_at": 1700000000000,
        "updated_at": 1700000001000,
    }
    user.update(overrides)
    return user


def _clerk_created(r: Recorded) -> Any:
    body = r.json
    return clerk_user(
        "user_new",
        first_name=body.get("first_name"),
        last_name=body.get("last_name"),
        primary_email_address_id="idn_9",
        email_addresses=[{"id": "idn_9", "email_address": body["email_address"][0]}],
    )


def _clerk_updated(r: Recorded) -> Any:
    body = r.json
    return clerk_user(r.params["id"], **{k: v for k, v in body.items() if k in ("first_name", "last_name")})


# -- stripe ------------------------------------------------------------------------------
STRIPE_ERROR = {"error": {"type": "invalid_request_error", "message": "No such customer"}}


def _stripe_customer(r: Recorded) -> Any:
    form = r.form
    return {"id": "cus_123", "object": "customer", "email": form["email"], "name": form.get("name")}


def _stripe_customer_get(r: Recorded) -> Any:
    return {
        "id": r.params["id"],
        "object": "customer",
        "email": "ada@acme.test",
        "name": "Ada",
        "created": 1700000000,
    }


def _stripe_customer_search(r: Recorded) -> Any:
    email = r.query.get("email")
    rows = [{"id": "cus_123", "object": "customer", "email": email, "name": "Ada", "created": 1700000000}]
    return {"object": "list", "data": rows if email == "ada@acme.test" else [], "has_more": False}


def _stripe_invoice(r: Recorded) -> Any:
    return {
        "id": "in_123",
        "object": "invoice",
        "number": None,
        "hosted_invoice_url": None,
        "status": "draft",
    }


def _stripe_invoice_item(r: Recorded) -> Any:
    return {"id": "ii_1", "object": "invoiceitem", "invoice": r.form["invoice"]}


def _stripe_finalize(r: Recorded) -> Any:
    return {
        "id": r.params["id"],
        "object": "invoice",
        "number": "ACME-0001",
        "hosted_invoice_url": "https://invoice.stripe.com/i/acme_1",
        "status": "open",
    }


# -- blob --------------------------------------------------------------------------------
def _blob_put(r: Recorded) -> Any:
    pathname = r.params["pathname"]
    if r.query.get("addRandomSuffix") != "false":
        stem, dot, ext = pathname.rpartition(".")
        pathname = f"{stem}-Ab12Cd{dot}{ext}" if dot else f"{pathname}-Ab12Cd"
    url = f"https://store1.public.blob.vercel-storage.com/{pathname}"
    return {"url": url, "downloadUrl": f"{url}?download=1", "pathname": pathname, "contentType": "text/plain"}


def _blob_list(r: Recorded) -> Any:
    blob = {
        "url": "https://store1.public.blob.vercel-storage.com/reports/a.txt",
        "downloadUrl": "https://store1.public.blob.vercel-storage.com/reports/a.txt?download=1",
        "pathname": "reports/a.txt",
        "size": 12,
        "uploadedAt": "2026-01-01T00:00:00.000Z",
    }
    return {"blobs": [blob], "cursor": "cur_2", "hasMore": True}


GITHUB_HEADERS = {
    "Authorization": "Bearer {key}",
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
}

APIS.update(
    {
        "github": Api(
            headers=GITHUB_HEADERS,
            unauthorized={"message": "Bad credentials"},
            routes=[
                Route("POST", "/repos/{owner}/{repo}/issues", _github_created, required=("title",)),
                Route("GET", "/repos/{owner}/{repo}/issues", lambda r: [github_issue(1), github_issue(2)]),
                Route(
                    "GET",
                    "/repos/{owner}/{repo}/issues/{number}",
                    lambda r: github_issue(int(r.params["number"])),
                ),
                Route("PATCH", "/repos/{owner}/{repo}/issues/{number}", _github_patched),
                Route(
                    "GET",
                    "/repos/{owner}/{repo}",
                    lambda r: {
                        "id": 1,
                        "full_name": f"{r.params['owner']}/{r.params['repo']}",
                        "html_url": f"https://github.com/{r.params['owner']}/{r.params['repo']}",
                        "default_branch": "main",
                    },
                ),
            ],
        ),
        "linear": Api(
            headers={"Authorization": "{key}"},
            unauthorized={"errors": [{"message": "Authentication required"}]},
            routes=[Route("POST", "/graphql", _linear, required=("query",))],
        ),
        "webflow": Api(
            headers=BEARER,
            unauthorized={"message": "Request not authorized", "code": "not_authorized"},
            routes=[
                Route(
                    "GET", "/v2/sites", lambda r: {"sites": [webflow_site("site-1"), webflow_site("site-2")]}
                ),
                Route("GET", "/v2/sites/{id}", lambda r: webflow_site(r.params["id"])),
                Route(
                    "POST",
                    "/v2/sites/{id}/publish",
                    _webflow_publish,
                    required=("publishToWebflowSubdomain",),
                ),
            ],
        ),
        "clerk": Api(
            headers=BEARER,
            unauthorized={"errors": [{"message": "Unauthorized request", "code": "authentication_invalid"}]},
            routes=[
                Route("GET", "/v1/users/{id}", lambda r: clerk_user(r.params["id"])),
                Route("POST", "/v1/users", _clerk_created, required=("email_address",)),
                Route("PATCH", "/v1/users/{id}", _clerk_updated),
                Route(
                    "DELETE",
                    "/v1/users/{id}",
                    lambda r: {"id": r.params["id"], "object": "user", "deleted": True},
                ),
            ],
        ),
        "stripe": Api(
            headers=BEARER,
            unauthorized={"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}},
            routes=[
                Route("POST", "/v1/customers", _stripe_customer, required=("email",), form=True),
                Route("GET", "/v1/customers", _stripe_customer_search),
                Route("GET", "/v1/customers/{id}", _stripe_customer_get),
                Route("POST", "/v1/invoices", _stripe_invoice, required=("customer",), form=True),
                Route(
                    "POST",
                    "/v1/invoiceitems",
                    _stripe_invoice_item,
                    required=("customer", "invoice", "currency"),
                    form=True,
                ),
                Route("POST", "/v1/invoices/{id}/finalize", _stripe_finalize),
            ],
        ),
        "blob": Api(
            headers={"Authorization": "Bearer {key}", "x-api-version": "7"},
            unauthorized={"error": {"code": "forbidden", "message": "Access denied"}},
            routes=[
                Route("PUT", "/{pathname:.+}", _blob_put),
                Route("GET", "/", _blob_list),
            ],
        ),
    }
)


# -- openai ------------------------------------------------------------------------------
def _openai_chat(r: Recorded) -> Any:
    body = r.json
    if "response_format" in body:
        content = json.dumps({"summary": "All good", "score": 9, "urgent": False})
    else:
        content = "Hello from the model."
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }


# -- anthropic ---------------------------------------------------------------------------
def _anthropic_messages(r: Recorded) -> Any:
    body = r.json
    if "tools" in body:
        content: list[dict[str, Any]] = [
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "result",
                "input": {"summary": "All good", "score": 9},
            }
        ]
    else:
        content = [{"type": "text", "text": "Hello from "}, {"type": "text", "text": "Claude."}]
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": "end_turn",
    }


# -- perplexity --------------------------------------------------------------------------
def _perplexity(r: Recorded) -> Any:
    body = r.json
    return {
        "id": "pplx-1",
        "model": body["model"],
        "citations": ["https://example.org/a", "https://example.org/b"],
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": f"Answer about: {body['messages'][-1]['content']}",
                },
            }
        ],
    }


# -- fal ---------------------------------------------------------------------------------
def _fal_submit(r: Recorded) -> Any:
    model = r.params["model"]
    base = f"{r.origin}/{model}/requests/req-1"
    return {
        "request_id": "req-1",
        "status": "IN_QUEUE",
        "queue_position": 0,
        "status_url": f"{base}/status",
        "response_url": base,
    }


def _fal_result(r: Recorded) -> Any:
    model = r.params["model"]
    if any(word in model for word in ("video", "minimax", "luma", "runway")):
        return {"video": {"url": "https://fal.media/files/out.mp4"}}
    if any(word in model for word in ("upscaler", "esrgan", "birefnet")):
        return {"image": {"url": "https://fal.media/files/out.png", "width": 2048, "height": 1536}}
    return {"images": [{"url": "https://fal.media/files/out.jpg", "width": 1024, "height": 576}], "seed": 1}


# -- superagent --------------------------------------------------------------------------
def _superagent_guard(r: Recorded) -> Any:
    return {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": {
                        "classification": "block",
                        "violation_types": ["prompt_injection"],
                        "cwe_codes": ["CWE-77"],
                    },
                    "reasoning": "Tries to override instructions.",
                }
            }
        ]
    }


def _superagent_redact(r: Recorded) -> Any:
    return {
        "choices": [
            {"message": {"role": "assistant", "content": "Call me at <PHONE>.", "reasoning": "phone number"}}
        ]
    }


# -- v0 ----------------------------------------------------------------------------------
def _v0_chat(r: Recorded) -> Any:
    chat_id = r.params.get("id", "chat-1")
    return {
        "id": chat_id,
        "object": "chat",
        "webUrl": f"https://v0.dev/chat/{chat_id}",
        "latestVersion": {
            "id": "ver-1",
            "status": "completed",
            "demoUrl": f"https://demo-{chat_id}.vusercontent.net",
        },
    }


APIS.update(
    {
        "openai": Api(
            headers=BEARER,
            routes=[
                Route("POST", "/v1/chat/completions", _openai_chat, required=("model", "messages")),
                Route(
                    "POST",
                    "/v1/images/generations",
                    lambda r: {"created": 1, "data": [{"b64_json": "aGVsbG8="}]},
                    required=("model", "prompt"),
                ),
            ],
        ),
        "anthropic": Api(
            headers={"x-api-key": "{key}", "anthropic-version": "2023-06-01"},
            unauthorized={
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            },
            routes=[
                Route(
                    "POST", "/v1/messages", _anthropic_messages, required=("model", "max_tokens", "messages")
                )
            ],
        ),
        "perplexity": Api(
            headers=BEARER,
            routes=[Route("POST", "/chat/completions", _perplexity, required=("model", "messages"))],
        ),
        "fal": Api(
            headers={"Authorization": "Key {key}"},
            unauthorized={"detail": "No user found for Key ID and Secret"},
            routes=[
                Route(
                    "GET",
                    "/{model:.+}/requests/{id}/status",
                    lambda r: {"status": "COMPLETED", "request_id": r.params["id"]},
                ),
                Route("GET", "/{model:.+}/requests/{id}", _fal_result),
                Route("POST", "/{model:.+}", _fal_submit),
            ],
        ),
        "firecrawl": Api(
            headers=BEARER,
            routes=[
                Route(
                    "POST",
                    "/v1/scrape",
                    lambda r: {
                        "success": True,
                        "data": {
                            "markdown": "# Example",
                            "metadata": {"title": "Example", "statusCode": 200},
                        },
                    },
                    required=("url",),
                ),
                Route(
                    "POST",
                    "/v1/search",
                    lambda r: {
                        "success": True,
                        "data": [
                            {"url": "https://example.org", "title": "Example", "description": "An example"}
                        ],
                    },
                    required=("query",),
                ),
            ],
        ),
        "superagent": Api(
            headers=BEARER,
            routes=[
                Route("POST", "/api/guard", _superagent_guard, required=("text",)),
                Route("POST", "/api/redact", _superagent_redact, required=("text",)),
            ],
        ),
        "v0": Api(
            headers=BEARER,
            routes=[
                Route("POST", "/v1/chats", _v0_chat, required=("message",)),
                Route("POST", "/v1/chats/{id}/messages", _v0_chat, required=("message",)),
            ],
        ),
    }
)
