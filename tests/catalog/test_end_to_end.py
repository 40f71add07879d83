"""One catalog function per domain through the real path: FleetClient → Redis stream → domain
worker (create_worker: validation, credentials, timeout middleware) → provider fake → result."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from shared.client import FleetClient
from shared.contract import ErrorCode
from shared.runtime.worker import Worker
from shared.settings import Settings
from tests.catalog.conftest import StartFake
from tests.fakes.providers import CREDENTIALS

RunWorker = Callable[..., AbstractAsyncContextManager[Worker]]


async def test_comms_worker_sends_a_slack_message(
    fake: StartFake, run_worker: RunWorker, settings: Settings
) -> None:
    api = await fake("slack")
    async with run_worker("comms"), FleetClient(settings=settings) as client:
        result = await client.invoke(
            "slack/send-message",
            {"slackChannel": "#ops", "slackMessage": "deployed"},
            domain="comms",
            timeout=20,
        )
    assert result.status == "completed", result.error
    assert result.output == {"success": True, "ts": "1700000000.000100", "channel": "C0123456789"}
    assert api.only().json == {"channel": "#ops", "text": "deployed"}


async def test_comms_worker_answers_credentials_missing_without_calling(
    fake: StartFake, run_worker: RunWorker, settings: Settings
) -> None:
    api = await fake("resend", credentials=False)
    email = {"emailFrom": "a@acme.test", "emailTo": "b@acme.test", "emailSubject": "s", "emailBody": "b"}
    async with run_worker("comms"), FleetClient(settings=settings) as client:
        result = await client.invoke("resend/send-email", email, domain="comms", timeout=20)
    assert result.error is not None
    assert result.error.code == ErrorCode.CREDENTIALS_MISSING
    assert api.requests == []


async def test_dev_tools_worker_creates_a_stripe_customer_once_per_execution(
    fake: StartFake, run_worker: RunWorker, settings: Settings
) -> None:
    api = await fake("stripe")
    async with run_worker("dev-tools"), FleetClient(settings=settings) as client:
        result = await client.invoke(
            "stripe/create-customer",
            {"email": "ada@acme.test", "name": "Ada"},
            domain="dev-tools",
            execution_id="exec-e2e-1",
            timeout=20,
        )
    assert result.status == "completed", result.error
    assert result.output == {"success": True, "id": "cus_123", "email": "ada@acme.test"}
    request = api.only()
    assert request.headers["idempotency-key"] == "exec-e2e-1"
    assert request.form == {"email": "ada@acme.test", "name": "Ada"}


async def test_dev_tools_worker_reports_provider_errors_scrubbed(
    fake: StartFake, run_worker: RunWorker, settings: Settings
) -> None:
    api = await fake("github")
    token = CREDENTIALS["github"]["GITHUB_TOKEN"]
    api.fail_next(404, {"message": f"Not Found (token {token})"})
    async with run_worker("dev-tools"), FleetClient(settings=settings) as client:
        result = await client.invoke(
            "github/get-issue",
            {"owner": "acme", "repo": "app", "issueNumber": "9"},
            domain="dev-tools",
            timeout=20,
        )
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.retryable is False
    details: dict[str, Any] = result.error.details
    assert (details["provider"], details["status"]) == ("github", 404)
    assert token not in result.model_dump_json()


async def test_ai_worker_generates_text_with_anthropic_after_a_retry(
    fake: StartFake, run_worker: RunWorker, settings: Settings
) -> None:
    api = await fake("anthropic")
    api.fail_next(529, {"type": "error", "error": {"type": "overloaded_error"}}, headers={"Retry-After": "0"})
    async with run_worker("ai"), FleetClient(settings=settings) as client:
        result = await client.invoke(
            "anthropic/generate-text", {"aiPrompt": "Say hello"}, domain="ai", timeout=20
        )
    assert result.status == "completed", result.error
    assert result.output == {"success": True, "text": "Hello from Claude."}
    assert len(api.requests) == 2
    assert api.requests[1].headers["anthropic-version"] == "2023-06-01"
