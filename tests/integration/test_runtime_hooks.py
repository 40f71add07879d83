"""Runtime hooks used by function packages: optional credentials and shutdown hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.assemble import create_worker
from shared.client import FleetClient
from shared.functions import SHUTDOWN_HOOKS, ExecutionContext, FunctionTable, builtin, on_shutdown
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


async def test_shutdown_hooks_run_once_after_the_worker_drains(
    settings: Settings, run_worker: Callable[..., Any]
) -> None:
    calls: list[str] = []

    async def close_pool() -> None:
        calls.append("closed")

    on_shutdown(close_pool)
    on_shutdown(close_pool)  # registering twice still runs it once
    try:
        async with run_worker("ai") as worker:
            assert calls == []
        assert calls == ["closed"]
        assert worker.state.value == "stopped"
    finally:
        SHUTDOWN_HOOKS.remove(close_pool)


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
