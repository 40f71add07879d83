"""The webhook executor (``run_webhook``) called directly, as the registry will call it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext
from shared.registry.models import FunctionRecord
from tests.http.conftest import Fake, Spies, allowing, with_policy
from workers.http.ssrf import HttpPolicy
from workers.http.webhook import WebhookExecutor, render_headers, run_webhook, webhook_credential_keys

StartFake = Callable[..., Awaitable[Fake]]
ALLOW = allowing("127.0.0.1")


def context(**credentials: str) -> ExecutionContext:
    return ExecutionContext(
        execution_id="exec-42",
        function="acme/create-ticket",
        attempt=2,
        domain="http",
        workflow_execution_id="wf-7",
        node_id="node-3",
        credentials=credentials,
        resources=with_policy(ALLOW),
    )


async def failure(awaitable: Awaitable[object]) -> ExecutionFailed:
    with pytest.raises(ExecutionFailed) as caught:
        await awaitable
    return caught.value


async def test_post_with_json_body_headers_and_credentials(fake: Fake) -> None:
    async def created(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": "T-1"}, status=201)

    fake.routes["/hooks/ticket"] = created
    result = await run_webhook(
        url=fake.url("/hooks/ticket"),
        method="POST",
        headers={
            "Authorization": "Bearer {{credentials.ACME_TOKEN}}",
            "X-Api-Key": "{{ credentials.ACME_KEY }}",
            "X-Plain": "static",
        },
        timeout_seconds=10,
        input={"title": "Disk full", "priority": 2, "tags": ["ops"]},
        ctx=context(ACME_TOKEN="tok-secret", ACME_KEY="key-secret"),
        policy=ALLOW,
    )
    assert (result["status"], result["body"]) == (201, {"id": "T-1"})
    [seen] = fake.requests
    assert (seen.method, seen.path) == ("POST", "/hooks/ticket")
    assert orjson.loads(seen.body) == {"title": "Disk full", "priority": 2, "tags": ["ops"]}
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == "Bearer tok-secret"
    assert seen.headers["X-Api-Key"] == "key-secret"
    assert seen.headers["X-Plain"] == "static"
    assert seen.headers["X-Fleet-Execution-Id"] == "exec-42"
    assert seen.headers["X-Fleet-Function"] == "acme/create-ticket"
    assert seen.headers["X-Fleet-Attempt"] == "2"
    assert seen.headers["X-Fleet-Workflow-Execution-Id"] == "wf-7"
    assert seen.headers["X-Fleet-Node-Id"] == "node-3"


@pytest.mark.parametrize("method", ["PUT", "patch", "DELETE"])
async def test_other_methods_carry_the_json_body(fake: Fake, method: str) -> None:
    await run_webhook(url=fake.url("/h"), method=method, input={"a": 1}, ctx=context(), policy=ALLOW)
    assert (fake.requests[0].method, fake.requests[0].body) == (method.upper(), b'{"a":1}')


async def test_get_sends_the_input_as_query(fake: Fake) -> None:
    await run_webhook(
        url=fake.url("/lookup?fixed=1"),
        method="GET",
        input={"q": "disk", "n": 3, "exact": True, "skip": None, "filter": {"a": [1]}},
        ctx=context(),
        policy=ALLOW,
    )
    [seen] = fake.requests
    assert seen.method == "GET"
    assert seen.body == b""
    assert seen.query == {
        "fixed": ["1"],
        "q": ["disk"],
        "n": ["3"],
        "exact": ["true"],
        "filter": ['{"a":[1]}'],
    }
    assert "Content-Type" not in seen.headers


async def test_function_headers_win_over_fleet_headers(fake: Fake) -> None:
    await run_webhook(
        url=fake.url(),
        headers={"content-type": "application/vnd.acme+json", "X-Fleet-Attempt": "custom"},
        input={},
        ctx=context(),
        policy=ALLOW,
    )
    headers = fake.requests[0].headers
    assert headers["Content-Type"] == "application/vnd.acme+json"
    assert headers["X-Fleet-Attempt"] == "custom"


async def test_missing_credential_fails_before_any_request(fake: Fake, spies: Spies) -> None:
    error = await failure(
        run_webhook(
            url=fake.url(),
            headers={"Authorization": "Bearer {{credentials.ACME_TOKEN}}", "X-K": "{{credentials.OTHER}}"},
            input={},
            ctx=context(OTHER="x"),
            policy=ALLOW,
        )
    )
    assert error.code == ErrorCode.CREDENTIALS_MISSING
    assert error.details == {"missing": ["ACME_TOKEN"]}
    assert fake.requests == []
    assert spies.connects == []


async def test_unknown_placeholder_is_not_sent_literally(fake: Fake) -> None:
    error = await failure(
        run_webhook(url=fake.url(), headers={"X-Id": "{{node.id}}"}, input={}, ctx=context(), policy=ALLOW)
    )
    assert error.code == ErrorCode.FUNCTION_FAILED
    assert error.details == {"header": "X-Id"}
    assert fake.requests == []


async def test_placeholder_in_url_is_refused(fake: Fake) -> None:
    error = await failure(
        run_webhook(
            url=fake.url("/?key={{credentials.K}}"), input={}, ctx=context(K="secret-v"), policy=ALLOW
        )
    )
    assert error.code == ErrorCode.FUNCTION_FAILED
    assert fake.requests == []


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (404, False), (429, True), (500, True), (503, True)]
)
async def test_non_2xx_fails(fake: Fake, status: int, retryable: bool) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "nope"}, status=status)

    fake.routes["/h"] = answer
    error = await failure(run_webhook(url=fake.url("/h"), input={}, ctx=context(), policy=ALLOW))
    assert error.code == ErrorCode.FUNCTION_FAILED
    assert error.retryable is retryable
    assert error.details == {"status": status, "body": {"error": "nope"}}


async def test_long_error_bodies_are_excerpted(fake: Fake) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="x" * 10_000)

    fake.routes["/h"] = answer
    error = await failure(run_webhook(url=fake.url("/h"), input={}, ctx=context(), policy=ALLOW))
    assert error.details["body"] == "x" * 2048 + "…"


async def test_timeout(fake: Fake) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await fake.release.wait()
        return web.Response()

    fake.routes["/slow"] = stall
    error = await failure(
        run_webhook(url=fake.url("/slow"), timeout_seconds=0.2, input={}, ctx=context(), policy=ALLOW)
    )
    assert error.code == ErrorCode.TIMEOUT
    assert error.retryable is True


async def test_webhook_urls_are_ssrf_guarded(spies: Spies) -> None:
    error = await failure(
        run_webhook(url="http://169.254.169.254/latest/", input={}, ctx=context(), policy=HttpPolicy())
    )
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert spies.connects == []


async def test_credential_headers_do_not_follow_a_cross_origin_redirect(start_fake: StartFake) -> None:
    hook, elsewhere = await start_fake(), await start_fake()

    async def moved(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": elsewhere.url("/new")})

    hook.routes["/old"] = moved
    await run_webhook(
        url=hook.url("/old"),
        headers={"X-Api-Key": "{{credentials.K}}", "X-Plain": "p"},
        input={"a": 1},
        ctx=context(K="key-secret"),
        policy=ALLOW,
    )
    assert hook.requests[0].headers["X-Api-Key"] == "key-secret"
    landed = elsewhere.requests[0]
    assert "X-Api-Key" not in landed.headers
    assert landed.headers["X-Plain"] == "p"
    assert (landed.method, landed.body) == ("POST", b'{"a":1}')


def test_credential_keys_for_the_registry() -> None:
    headers = {
        "Authorization": "Bearer {{credentials.TOKEN}}",
        "X-Both": "{{credentials.A}}:{{ credentials.TOKEN }}:{{credentials.B}}",
    }
    assert webhook_credential_keys(headers) == ("TOKEN", "A", "B")
    assert webhook_credential_keys(None) == ()
    rendered, carrying = render_headers(headers | {"X-None": "v"}, {"TOKEN": "t", "A": "a", "B": "b"})
    assert rendered == {"Authorization": "Bearer t", "X-Both": "a:t:b", "X-None": "v"}
    assert carrying == {"Authorization", "X-Both"}


async def test_unsupported_method(fake: Fake) -> None:
    error = await failure(run_webhook(url=fake.url(), method="TRACE", input={}, ctx=context(), policy=ALLOW))
    assert error.code == ErrorCode.FUNCTION_FAILED
    assert fake.requests == []


def record(**fields: object) -> FunctionRecord:
    values: dict[str, Any] = {
        "id": "00000000-0000-0000-0000-000000000001",
        "slug": "acme/create-ticket",
        "name": "Create ticket",
        "description": "",
        "plugin_id": "acme",
        "version": 1,
        "domain": "http",
        "execution_type": "http",
    }
    values.update(fields)
    return FunctionRecord(**values)


async def test_executor_runs_a_registry_row(fake: Fake) -> None:
    executor = WebhookExecutor()
    result = await executor.execute(
        record(
            webhook_url=fake.url("/rows"),
            webhook_method="PUT",
            webhook_headers={"Authorization": "Token {{credentials.ACME_TOKEN}}"},
            credentials=("ACME_TOKEN",),
        ),
        {"title": "x"},
        context(ACME_TOKEN="tok-secret"),
    )
    assert (result["status"], result["body"]) == (200, {"ok": True})
    [seen] = fake.requests
    assert (seen.method, seen.path, seen.body) == ("PUT", "/rows", b'{"title":"x"}')
    assert seen.headers["Authorization"] == "Token tok-secret"


async def test_executor_timeout_prefers_the_webhook_timeout(fake: Fake) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await fake.release.wait()
        return web.Response()

    fake.routes["/slow"] = stall
    error = await failure(
        WebhookExecutor().execute(
            record(webhook_url=fake.url("/slow"), webhook_timeout_seconds=0.2, timeout_seconds=300),
            {},
            context(),
        )
    )
    assert error.code == ErrorCode.TIMEOUT
    assert error.details == {"timeout_seconds": 0.2}


async def test_executor_without_url() -> None:
    error = await failure(WebhookExecutor().execute(record(), {}, context()))
    assert error.code == ErrorCode.FUNCTION_FAILED


async def test_executor_uses_the_policy_of_the_calling_worker(fake: Fake) -> None:
    strict = ExecutionContext(
        execution_id="exec-43",
        function="acme/create-ticket",
        attempt=1,
        domain="http",
        resources=with_policy(HttpPolicy()),
    )
    error = await failure(WebhookExecutor().execute(record(webhook_url=fake.url("/rows")), {}, strict))
    assert error.code == ErrorCode.DESTINATION_BLOCKED
    assert error.details == {"host": "127.0.0.1", "reason": "loopback", "address": "127.0.0.1"}
    assert fake.requests == []
    # The same executor, called from a worker whose policy admits loopback, reaches it.
    result = await WebhookExecutor().execute(record(webhook_url=fake.url("/rows")), {}, context())
    assert result["status"] == 200
    assert [r.path for r in fake.requests] == ["/rows"]
