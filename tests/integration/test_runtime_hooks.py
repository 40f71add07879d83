"""How function packages and extensions join a worker: optional credentials, the extension
lifecycle, bad settings at start, dependency outages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.assemble import create_worker
from shared.client import FleetClient
from shared.functions import ExecutionContext, FunctionTable, builtin
from shared.runtime.extension import BaseExtension, WorkerContext
from shared.settings import Settings
from tests.conftest import running

table = FunctionTable()


@builtin(
    "test/which-sender",
    domain="comms",
    table=table,
    credentials=("TEST_API_KEY",),
    optional_credentials=("TEST_SENDER",),
)
async def which_sender(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    return {"sender": ctx.credentials.get("TEST_SENDER", "(none)"), "keys": sorted(ctx.credentials)}


async def test_optional_credentials_are_used_when_present_and_never_required(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_SECRET_TEST_API_KEY", "k-123456")
    worker = create_worker("comms", settings, resolver=table)
    async with running(worker), FleetClient(settings=settings, functions=table) as client:
        without = await client.invoke("test/which-sender", {}, timeout=10)
        monkeypatch.setenv("FLEET_SECRET_TEST_SENDER", "ops@example.com")
        with_sender = await client.invoke("test/which-sender", {}, timeout=10)
        monkeypatch.delenv("FLEET_SECRET_TEST_API_KEY")
        missing = await client.invoke("test/which-sender", {}, timeout=10)

    assert without.output == {"sender": "(none)", "keys": ["TEST_API_KEY"]}
    # The sender address is a secret-store value, so it is scrubbed from results like any other.
    assert with_sender.output == {"sender": "***", "keys": ["TEST_API_KEY", "TEST_SENDER"]}
    assert missing.error is not None
    assert missing.error.code == "credentials_missing"
    assert missing.error.details == {"missing": ["TEST_API_KEY"]}


class Recording(BaseExtension):
    """Records its life in ``events``; offers a resource that handlers and others can see."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.name, self.events = name, events
        self.seen_transport = False

    def attach(self, transport: Any) -> None:
        self.seen_transport = True

    async def start(self, ctx: WorkerContext) -> bool:
        self.events.append(f"start {self.name} ready={ctx.transport is not None}")
        if self.name == "first":
            ctx.resources.provide(Recording, self)
        return True

    async def stop(self) -> None:
        self.events.append(f"stop {self.name}")


async def test_extensions_start_in_order_before_intake_and_stop_in_reverse_after_the_drain(
    settings: Settings,
) -> None:
    events: list[str] = []
    first, second = Recording("first", events), Recording("second", events)
    worker = create_worker("ai", settings, extensions=[first, second])
    assert first.seen_transport
    assert second.seen_transport
    async with running(worker), FleetClient(settings=settings) as client:
        assert events == ["start first ready=True", "start second ready=True"]
        result = await client.invoke("system/echo", {"n": 1}, timeout=10)
        assert result.status == "completed"
        assert worker.resources.get(Recording) is first
    assert events[2:] == ["stop second", "stop first"]
    assert worker.state.value == "stopped"


def test_a_bad_setting_stops_the_worker_at_start(make_settings: Callable[..., Settings]) -> None:
    from shared.errors import ConfigError

    with pytest.raises(ConfigError):
        create_worker("http", make_settings(http_allow="10.0.0.0/33"))


class FlakyResolver:
    """A resolver whose backing store is down for the first `down` lookups."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls = 0

    async def resolve(self, slug: str) -> Any:
        from shared.errors import InfrastructureError
        from shared.functions import BUILTINS

        self.calls += 1
        if self.calls <= self.down:
            raise InfrastructureError("registry database unreachable")
        return BUILTINS.get(slug)


async def test_a_dependency_outage_leaves_deliveries_for_redelivery_without_failing_them(
    make_settings: Callable[..., Settings],
) -> None:
    import structlog.testing

    from shared.assemble import load_functions

    load_functions("ai")
    settings = make_settings(processing_timeout=0.3, redeliver_interval=0.05)
    resolver = FlakyResolver(down=3)
    worker = create_worker("ai", settings, resolver=resolver)
    with structlog.testing.capture_logs() as logs:
        async with running(worker), FleetClient(settings=settings) as client:
            result = await client.invoke("system/echo", {"after": "outage"}, timeout=20)
    assert result.status == "completed"
    assert result.output == {"after": "outage"}
    assert result.attempt == 4  # three deliveries met the outage and were redelivered
    assert worker.metrics.infra_errors >= 3
    warnings = [e for e in logs if e["event"].startswith("dependency unavailable")]
    assert len(warnings) == 1  # throttled: one line, not one per delivery
    assert not [e for e in logs if e["log_level"] == "error"]
