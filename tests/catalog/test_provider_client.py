"""The shared provider client: retries and Retry-After, error mapping, timeouts, scrubbing,
settings and client lifecycle (driven through real built-ins against the fakes)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest
import structlog.testing

from shared.contract import ErrorCode
from shared.errors import ConfigError
from shared.settings import Settings
from tests.catalog.conftest import Invoke, ProviderConfig, StartFake
from tests.fakes.providers import CREDENTIALS, Reply
from workers.providers import ProviderClients, parse_retry_after

SLACK_INPUT = {"slackChannel": "#ops", "slackMessage": "hi"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Mon, 23 Nov 2026 12:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 11:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == expected


async def test_server_errors_are_retried_until_attempts_run_out(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("slack")
    api.fail_next(503, {"ok": False, "error": "service_unavailable"}, headers={"Retry-After": "0"}, times=3)
    result = await invoke("slack/send-message", SLACK_INPUT)
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.retryable is True
    assert result.error.details["status"] == 503
    assert result.error.details["attempts"] == 3
    assert len(api.requests) == 3


async def test_attempts_are_configurable(
    fake: StartFake, invoke: Invoke, provider_config: ProviderConfig
) -> None:
    provider_config["provider_max_attempts"] = 1
    api = await fake("slack")
    api.fail_next(500, {"ok": False, "error": "internal_error"})
    result = await invoke("slack/send-message", SLACK_INPUT)
    assert result.error is not None
    assert result.error.retryable is True
    assert len(api.requests) == 1


async def test_rate_limit_with_http_date_in_the_past_is_retried(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("slack")
    api.fail_next(
        429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "Thu, 01 Jan 2015 00:00:00 GMT"}
    )
    result = await invoke("slack/send-message", SLACK_INPUT)
    assert result.status == "completed", result.error
    assert len(api.requests) == 2


async def test_retry_after_beyond_the_limit_fails_at_once_retryable(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("slack")
    api.fail_next(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3600"})
    result = await invoke("slack/send-message", SLACK_INPUT)
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.retryable is True
    assert result.error.details["status"] == 429
    assert result.error.details["retry_after"] == 3600.0
    assert len(api.requests) == 1


async def test_retry_after_is_a_floor_under_the_backoff(
    fake: StartFake, invoke: Invoke, provider_config: ProviderConfig
) -> None:
    provider_config["provider_backoff"] = 0.02
    api = await fake("slack")
    # "Retry now" does not skip the backoff (0.02 s doubling, jittered ±50 %)...
    api.fail_next(503, {"ok": False, "error": "service_unavailable"}, headers={"Retry-After": "0"}, times=2)
    # ...and a provider asking for longer than the backoff is waited for as asked.
    api.fail_next(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "0.3"})
    provider_config["provider_max_attempts"] = 4
    with structlog.testing.capture_logs() as logs:
        result = await invoke("slack/send-message", SLACK_INPUT)
    assert result.status == "completed", result.error
    waits = [e["retry_in"] for e in logs if e["event"] == "provider busy; retrying"]
    assert len(waits) == 3
    assert 0.01 <= waits[0] <= 0.03
    assert 0.02 <= waits[1] <= 0.06
    assert waits[2] == 0.3


async def test_read_timeout_fails_with_timeout_retryable(
    fake: StartFake, invoke: Invoke, provider_config: ProviderConfig
) -> None:
    provider_config["provider_read_timeout"] = 0.2
    api = await fake("slack")
    api.reply("POST", "/chat.postMessage", Reply(200, {"ok": True, "ts": "1", "channel": "C1"}, delay=1.0))
    result = await invoke("slack/send-message", SLACK_INPUT)
    assert result.error is not None
    assert result.error.code == ErrorCode.TIMEOUT
    assert result.error.retryable is True
    assert result.error.details == {"provider": "slack", "phase": "read", "timeout_seconds": 0.2}
    assert len(api.requests) == 1  # a request that may have arrived is never resent


async def test_unreachable_provider_is_retried_then_fails_retryable(
    invoke: Invoke, provider_config: ProviderConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider_config["slack_base_url"] = f"http://127.0.0.1:{port}/api"
    monkeypatch.setenv("FLEET_SECRET_SLACK_API_KEY", CREDENTIALS["slack"]["SLACK_API_KEY"])
    result = await invoke("slack/send-message", SLACK_INPUT)
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.retryable is True
    assert result.error.details["status"] is None
    assert "unreachable" in result.error.message


async def test_secrets_echoed_by_a_provider_are_scrubbed(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    key = CREDENTIALS["stripe"]["STRIPE_SECRET_KEY"]
    api.fail_next(401, {"error": {"message": f"Invalid API Key provided: {key}"}})
    result = await invoke("stripe/get-customer", {"customerId": "cus_1"})
    assert result.error is not None
    assert result.error.details["status"] == 401
    dumped = result.model_dump_json()
    assert key not in dumped
    assert "Invalid API Key provided: ***" in result.error.message
    assert "***" in result.error.details["body"]


async def test_error_body_excerpt_is_bounded(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("github")
    api.fail_next(422, text="x" * 10_000)
    result = await invoke("github/get-issue", {"owner": "a", "repo": "b", "issueNumber": 1})
    assert result.error is not None
    assert result.error.details["status"] == 422
    assert result.error.details["body"] == "x" * 500


async def test_wrong_auth_form_is_rejected_by_the_fake(fake: StartFake, invoke: Invoke) -> None:
    # The fakes enforce the documented auth header; the wrong key fails like the real API.
    api = await fake("linear")
    api.key = "another-key"
    result = await invoke("linear/find-issues", {})
    assert result.error is not None
    assert result.error.details["status"] == 401
    assert api.only().headers["authorization"] == CREDENTIALS["linear"]["LINEAR_API_KEY"]


def test_settings_read_base_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_SLACK_BASE_URL", "http://slack.internal/api/")
    monkeypatch.setenv("FLEET_PROVIDER_MAX_ATTEMPTS", "5")
    settings = Settings()
    assert settings.provider_base_url("slack") == "http://slack.internal/api"
    assert settings.provider_base_url("openai") == "https://api.openai.com"
    assert settings.provider_max_attempts == 5
    with pytest.raises(KeyError):
        settings.provider_base_url("nope")
    with pytest.raises(ValueError, match="frozen"):
        settings.provider_max_attempts = 1


async def test_one_pooled_client_per_provider_closed_by_aclose() -> None:
    clients = ProviderClients(Settings())
    first = clients.client("slack")
    assert clients.client("slack") is first
    assert clients.client("github") is not first
    await clients.aclose()
    assert first.is_closed
    await clients.aclose()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        clients.client("slack")


async def test_redirects_are_not_followed(fake: StartFake, invoke: Invoke) -> None:
    # A redirect would carry the credential to wherever Location points.
    api = await fake("webflow")
    api.fail_next(302, text="", headers={"Location": "http://127.0.0.1:9/elsewhere"})
    result = await invoke("webflow/list-sites", {})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.details["status"] == 302
    assert result.error.retryable is False
    assert len(api.requests) == 1
