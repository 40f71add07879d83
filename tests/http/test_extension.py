"""The ``http`` worker joins a worker as an extension: its policy and webhook executor are the
worker's own, so two ``http`` workers of one process each enforce their own allow-list."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import workers.http
from shared.assemble import create_worker
from shared.client import FleetClient
from shared.contract import ErrorCode
from shared.registry import executors as executors_module
from shared.registry.executors import Executors
from shared.settings import Settings
from tests.conftest import running
from tests.http.conftest import Fake
from workers.http import HttpExtension, HttpPolicy, WebhookExecutor


def test_importing_the_package_registers_nothing_process_wide(make_settings: Callable[..., Settings]) -> None:
    assert not hasattr(executors_module, "EXECUTORS")
    [first] = workers.http.extensions(make_settings(http_allow="127.0.0.1"))
    [second] = workers.http.extensions(make_settings(http_allow="127.0.0.1"))
    assert isinstance(first, HttpExtension)
    assert isinstance(second, HttpExtension)
    assert first.executor is not second.executor


async def test_two_http_workers_in_one_process_keep_their_own_allow_list(
    make_settings: Callable[..., Settings], fake: Fake
) -> None:
    allowing = make_settings(http_allow="127.0.0.1")
    # Same Redis, its own topics and group: the two workers never take each other's work.
    strict = make_settings(
        http_allow="10.0.0.0/8",
        topic_prefix=f"{allowing.topic_prefix}strict.",
        results_topic=f"{allowing.results_topic}.strict",
        group_prefix=f"{allowing.group_prefix}strict-",
    )
    open_worker, strict_worker = create_worker("http", allowing), create_worker("http", strict)
    request = {"url": fake.url("/ping")}
    async with (
        running(open_worker),
        running(strict_worker),
        FleetClient(settings=allowing) as open_client,
        FleetClient(settings=strict) as strict_client,
    ):
        reached, refused = await asyncio.gather(
            open_client.invoke("system/http-request", request, timeout=30),
            strict_client.invoke("system/http-request", request, timeout=30),
        )
        open_resources, strict_resources = open_worker.resources, strict_worker.resources

    assert reached.status == "completed", reached.error
    assert (reached.output["status"], reached.output["body"]) == (200, {"ok": True})
    assert refused.status == "failed"
    assert refused.error is not None
    assert refused.error.code == ErrorCode.DESTINATION_BLOCKED
    assert refused.error.details == {"host": "127.0.0.1", "reason": "loopback", "address": "127.0.0.1"}
    assert [r.path for r in fake.requests] == ["/ping"]

    assert open_resources.get(HttpPolicy) == HttpPolicy.from_settings(allowing)
    assert strict_resources.get(HttpPolicy) == HttpPolicy.from_settings(strict)
    open_webhooks = open_resources.get(Executors).get("http")
    strict_webhooks = strict_resources.get(Executors).get("http")
    assert isinstance(open_webhooks, WebhookExecutor)
    assert isinstance(strict_webhooks, WebhookExecutor)
    assert open_webhooks is not strict_webhooks
