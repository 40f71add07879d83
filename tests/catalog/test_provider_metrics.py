"""Provider calls are counted in the worker's metrics by provider and status class (each
attempt: a retried 503 and the 200 after it are two calls)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from shared.client import FleetClient
from shared.runtime.worker import Worker
from shared.settings import Settings
from tests.catalog.conftest import StartFake
from tests.observability import parse

RunWorker = Callable[..., AbstractAsyncContextManager[Worker]]


async def test_provider_calls_are_counted_by_status_class(
    fake: StartFake, run_worker: RunWorker, settings: Settings
) -> None:
    api = await fake("slack")
    api.fail_next(503, {"ok": False, "error": "service_unavailable"}, headers={"Retry-After": "0"})
    async with run_worker("comms") as worker, FleetClient(settings=settings) as client:
        result = await client.invoke(
            "slack/send-message", {"slackChannel": "#ops", "slackMessage": "hi"}, domain="comms", timeout=20
        )
        _, samples = parse(worker.metrics.render().decode())
    assert result.status == "completed", result.error
    assert len(api.requests) == 2
    calls = "fleet_provider_http_calls_total"
    assert samples[(calls, (("provider", "slack"), ("status_class", "5xx")))] == 1
    assert samples[(calls, (("provider", "slack"), ("status_class", "2xx")))] == 1
