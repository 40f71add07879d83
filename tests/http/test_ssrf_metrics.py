"""Destinations refused by the SSRF guard are counted in the worker's metrics, by reason."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from shared.client import FleetClient
from shared.contract import ErrorCode
from shared.runtime.worker import Worker
from shared.settings import Settings
from tests.observability import parse

RunWorker = Callable[..., AbstractAsyncContextManager[Worker]]


async def test_refusals_are_counted_by_reason(run_worker: RunWorker, settings: Settings) -> None:
    async with run_worker("http") as worker, FleetClient(settings=settings) as fleet:
        blocked = await fleet.invoke(
            "system/http-request", {"url": "http://169.254.169.254/latest/meta-data/"}, timeout=30
        )
        scheme = await fleet.invoke("system/http-request", {"url": "http://user:pw@example.com/"}, timeout=30)
        _, samples = parse(worker.metrics.render().decode())
    assert blocked.error is not None
    assert blocked.error.code == ErrorCode.DESTINATION_BLOCKED
    assert scheme.error is not None
    assert scheme.error.code == ErrorCode.DESTINATION_BLOCKED
    assert samples[("fleet_ssrf_refusals_total", (("reason", "metadata"),))] == 1
    assert samples[("fleet_ssrf_refusals_total", (("reason", "userinfo"),))] == 1
