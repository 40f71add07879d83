"""``system/http-request``: its input model (the orchestrator's lax shapes) and its handler."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.contract import ErrorCode
from shared.errors import ConfigError, ExecutionFailed
from shared.functions import BUILTINS, ExecutionContext
from tests.http.conftest import Fake, allowing, with_policy
from workers.http.request import HttpRequestInput, HttpRequestOutput, http_request, query_pairs
from workers.http.ssrf import HttpPolicy


def context(policy: HttpPolicy) -> ExecutionContext:
    """The context a worker whose extension provided ``policy`` gives the handler."""
    return ExecutionContext(
        execution_id="e-1",
        function="system/http-request",
        attempt=1,
        domain="http",
        resources=with_policy(policy),
    )


def test_registered_for_the_http_domain() -> None:
    spec = BUILTINS.get("system/http-request")
    assert spec is not None
    assert spec.domain == "http"
    assert spec.input_model is HttpRequestInput
    assert spec.output_model is HttpRequestOutput
    assert spec.timeout_seconds is not None
    assert spec.timeout_seconds > 600


@pytest.mark.parametrize(
    ("given", "seconds"), [("30", 30.0), (" 2.5 ", 2.5), (7, 7.0), (0.25, 0.25), ("", 30.0)]
)
def test_timeout_seconds_accepts_text(given: object, seconds: float) -> None:
    assert (
        HttpRequestInput.model_validate({"url": "https://x.test", "timeout_seconds": given}).timeout_seconds
        == seconds
    )


@pytest.mark.parametrize("given", ["abc", "0", -1, "601", "30s"])
def test_bad_timeouts(given: object) -> None:
    with pytest.raises(ValidationError):
        HttpRequestInput.model_validate({"url": "https://x.test", "timeout_seconds": given})


def test_defaults_and_lax_shapes() -> None:
    data = HttpRequestInput.model_validate(
        {
            "url": "https://x.test/a",
            "method": " post ",
            "headers": '{"X-A": "1", "X-N": 2, "X-B": true}',
            "query": '{"q": "x", "page": 2, "tag": ["a", "b"], "on": false}',
            "body": "",
            "_context": {"ignored": True},
            "integrationId": "",
        }
    )
    assert data.method == "POST"
    assert data.headers == {"X-A": "1", "X-N": "2", "X-B": "true"}
    assert data.body is None
    assert query_pairs(data.query) == [("q", "x"), ("page", "2"), ("tag", "a"), ("tag", "b"), ("on", "false")]
    plain = HttpRequestInput.model_validate({"url": " https://x.test\n", "method": "", "headers": ""})
    assert plain.url == "https://x.test"
    assert (plain.method, plain.headers, plain.query, plain.body, plain.timeout_seconds) == (
        "GET",
        {},
        {},
        None,
        30.0,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "https://x.test", "method": "TRACE"},
        {"url": "https://x.test", "headers": "not json"},
        {"url": "https://x.test", "query": {"a": {"nested": 1}}},
        {"url": ""},
        {},
    ],
)
def test_invalid_inputs(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HttpRequestInput.model_validate(bad)


async def test_json_body_and_json_response(fake: Fake) -> None:
    data = HttpRequestInput.model_validate(
        {"url": fake.url("/items"), "method": "POST", "body": {"name": "x", "n": [1]}, "query": {"v": 1}}
    )
    result = await http_request(data, context(allowing("127.0.0.1")))
    assert (result["status"], result["body"]) == (200, {"ok": True})
    HttpRequestOutput.model_validate(result)
    [seen] = fake.requests
    assert (seen.method, seen.path, seen.query) == ("POST", "/items", {"v": ["1"]})
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == b'{"name":"x","n":[1]}'


async def test_string_body_and_text_response(fake: Fake) -> None:
    from aiohttp import web

    async def text(request: web.Request) -> web.StreamResponse:
        return web.Response(status=418, text="short and stout")

    fake.routes["/tea"] = text
    data = HttpRequestInput.model_validate(
        {"url": fake.url("/tea"), "method": "PUT", "body": "raw text", "timeout_seconds": "5"}
    )
    result = await http_request(data, context(allowing("127.0.0.1")))
    assert (result["status"], result["body"]) == (418, "short and stout")  # a status, not a failure
    assert result["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert fake.requests[0].headers["Content-Type"] == "text/plain; charset=utf-8"
    assert fake.requests[0].body == b"raw text"


async def test_caller_content_type_wins(fake: Fake) -> None:
    data = HttpRequestInput.model_validate(
        {
            "url": fake.url(),
            "method": "POST",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
            "body": "a=1&b=2",
        }
    )
    await http_request(data, context(allowing("127.0.0.1")))
    assert fake.requests[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert fake.requests[0].body == b"a=1&b=2"


@pytest.mark.parametrize(
    "headers",
    [{"Host": "evil.test"}, {"Transfer-Encoding": "chunked"}, {"X-A": "a\r\nX-B: b"}, {"Bad Name": "x"}],
)
async def test_forbidden_or_malformed_headers_are_invalid_input(fake: Fake, headers: dict[str, str]) -> None:
    data = HttpRequestInput.model_validate({"url": fake.url(), "headers": headers})
    with pytest.raises(ExecutionFailed) as caught:
        await http_request(data, context(allowing("127.0.0.1")))
    assert caught.value.code == ErrorCode.INVALID_INPUT
    assert fake.requests == []


async def test_handler_uses_the_workers_policy(fake: Fake) -> None:
    data = HttpRequestInput.model_validate({"url": fake.url()})
    with pytest.raises(ExecutionFailed) as caught:
        await http_request(data, context(HttpPolicy()))
    assert caught.value.code == ErrorCode.DESTINATION_BLOCKED
    # Without the http extension's policy there is no policy at all: nothing is sent.
    bare = ExecutionContext(execution_id="e-2", function="system/http-request", attempt=1, domain="http")
    with pytest.raises(ConfigError, match="HttpPolicy"):
        await http_request(data, bare)
    assert fake.requests == []
