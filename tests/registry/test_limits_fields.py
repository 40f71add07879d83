"""Limits in the registry: validated at registration and in code, stored (migration 0004),
synced for built-ins like their retry policy, and handed to the runtime by the resolver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from shared.errors import ConfigError
from shared.functions import ExecutionContext, FunctionTable, builtin
from shared.limiter.extension import provider_of
from shared.limiter.store import LimitStore
from shared.limits import RateLimit, provider_rate_limits, render_concurrency_key
from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.registry.resolver import record_to_spec
from shared.registry.sync import sync_builtins
from shared.settings import Settings
from shared.tools.cli.main import cli
from shared.transports.redis import connect


def _definition(**fields: Any) -> FunctionDefinition:
    return FunctionDefinition(
        slug="acme/notify", domain="http", execution_type="http", webhook_url="https://e.com", **fields
    )


def test_limits_are_validated_at_registration() -> None:
    with pytest.raises(ValidationError, match="limit"):
        _definition(rate_limit={"limit": 0, "period_seconds": 1})
    with pytest.raises(ValidationError, match="extra"):
        _definition(rate_limit={"limit": 1, "per": "minute"})
    with pytest.raises(ValidationError, match="reads the input only"):
        _definition(max_concurrency=1, concurrency_key="{{node.channel}}")
    with pytest.raises(ValidationError, match="at least one"):
        _definition(max_concurrency=1, concurrency_key="channel")
    with pytest.raises(ValidationError, match="needs max_concurrency"):
        _definition(concurrency_key="{{input.channel}}")
    stored = _definition(
        max_concurrency=1,
        concurrency_key="{{ input.channel }}",
        rate_limit={"limit": 20, "period_seconds": 60},
    )
    assert stored.rate_limit == {"limit": 20, "period_seconds": 60.0}


def test_builtin_declarations_are_checked() -> None:
    table = FunctionTable()

    async def handler(data: Any, ctx: ExecutionContext) -> None:
        return None

    with pytest.raises(ConfigError, match="needs max_concurrency"):
        builtin("acme/a", domain=None, table=table, concurrency_key="{{input.x}}")(handler)
    with pytest.raises(ConfigError, match="at least 1"):
        builtin("acme/b", domain=None, table=table, max_concurrency=0)(handler)


def test_keys_providers_and_provider_overrides() -> None:
    assert render_concurrency_key("{{input.team}}/{{input.channel}}", {"team": "t", "channel": 7}) == "t/7"
    assert render_concurrency_key("{{input.missing}}", {}) == ""
    assert provider_of("ai/generate-text") == "openai"
    limits = provider_rate_limits(
        Settings(provider_rate_limits={"openai": {"limit": 500, "period_seconds": 60}, "github": None})
    )
    assert limits["openai"] == RateLimit(limit=500, period_seconds=60)
    assert "github" not in limits
    assert limits["resend"] == RateLimit(limit=2, period_seconds=1)
    with pytest.raises(ConfigError, match="FLEET_PROVIDER_RATE_LIMITS"):
        provider_rate_limits(Settings(provider_rate_limits={"openai": {"limit": -1, "period_seconds": 1}}))


async def test_registered_and_builtin_limits_are_stored_and_resolved(pool: Any) -> None:
    repo = FunctionRepository(pool)
    definition = _definition(
        max_concurrency=2,
        concurrency_key="{{input.channel}}",
        rate_limit={"limit": 5, "period_seconds": 1, "burst": 2},
    )
    record, action = await repo.register(definition)
    assert action == "created"
    assert (record.max_concurrency, record.concurrency_key) == (2, "{{input.channel}}")
    assert record.rate_limit == {"limit": 5, "period_seconds": 1.0, "burst": 2}
    spec = record_to_spec(record)
    assert spec.rate_limit == RateLimit(limit=5, period_seconds=1, burst=2)
    assert (spec.max_concurrency, spec.concurrency_key) == (2, "{{input.channel}}")
    # A change of a limit alone is a change (version bumped).
    record, action = await repo.register(_definition(max_concurrency=3))
    assert (action, record.version, record.rate_limit, record.concurrency_key) == ("updated", 2, None, None)

    table = FunctionTable()

    @builtin(
        "acme/limited",
        domain=None,
        table=table,
        max_concurrency=1,
        concurrency_key="{{input.channel}}",
        rate_limit=RateLimit(limit=1, period_seconds=2),
    )
    async def limited(data: Any, ctx: ExecutionContext) -> None:
        return None

    await sync_builtins(pool, table)
    row = await repo.get("acme/limited")
    assert row is not None
    assert (row.max_concurrency, row.concurrency_key, row.rate_limit) == (
        1,
        "{{input.channel}}",
        {"limit": 1, "period_seconds": 2.0},
    )
    assert record_to_spec(row, table).rate_limit == RateLimit(limit=1, period_seconds=2)


def test_functions_show_reports_the_usage_of_each_limit(
    migrated_url: str, redis_url: str, namespace: str, tmp_path: Any
) -> None:
    definition = tmp_path / "notify.yaml"
    definition.write_text(
        "slug: acme/notify\ndomain: http\nexecution_type: http\nwebhook_url: https://e.com\n"
        "max_concurrency: 2\nconcurrency_key: '{{input.channel}}'\n"
        "rate_limit: {limit: 1, period_seconds: 60}\n"
    )
    env = {
        "FLEET_DATABASE_URL": migrated_url,
        "FLEET_REDIS_URL": redis_url,
        "FLEET_GROUP_PREFIX": f"{namespace}fleet-",
        "FLEET_HOME": str(tmp_path / "home"),
    }
    assert CliRunner().invoke(cli, ["functions", "register", str(definition)], env=env).exit_code == 0

    async def one_running_and_the_rate_spent() -> None:
        client = connect(redis_url)
        store = LimitStore(client, env["FLEET_GROUP_PREFIX"])
        admission = await store.admit(
            "token-1",
            running=(store.running_key("acme/notify", "general"), 2),
            rates=[(store.function_rate_key("acme/notify"), RateLimit(limit=1, period_seconds=60))],
            lease=30,
        )
        assert admission.admitted
        await client.aclose()

    asyncio.run(one_running_and_the_rate_spent())
    shown = CliRunner().invoke(cli, ["functions", "show", "acme/notify", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    usage = json.loads(shown.output)["limits_usage"]
    assert usage["concurrency"] == {"max": 2, "running": 1, "running_by_key": {"general": 1}}
    assert usage["rate"]["limit"] == "1 per 60s"
    assert usage["rate"]["available_now"] == 0
    assert 50 < usage["rate"]["next_start_in_seconds"] <= 60


async def test_a_registry_worker_defers_over_a_limit_and_runs_each_execution_once(
    registry_settings: Callable[..., Settings], redis: Any, pool: Any, namespace: str
) -> None:
    # The limits sit inside the claim: a deferred call gives its claim back, the redelivery
    # takes it again, and every execution still runs once with a final history row.
    from shared.assemble import create_worker
    from shared.client import FleetClient
    from tests.conftest import running
    from tests.integration.limited_functions import declare

    table = FunctionTable()
    declare(table)
    settings = registry_settings(processing_timeout=30.0, concurrency=4)
    key = f"{namespace}log:registry"
    async with (
        running(create_worker("ai", settings, table=table)),
        FleetClient(settings=settings) as client,
    ):
        ids = [
            await client.publish("test/one-at-a-time", {"log": key, "seconds": 0.2}, domain="ai")
            for _ in range(4)
        ]
        results = await asyncio.gather(*(client.wait(i, timeout=30) for i in ids))
    assert {r.status for r in results} == {"completed"}
    assert {r.attempt for r in results} == {1}
    assert await redis.llen(key) == 4  # each ran once
    for execution_id in ids:
        row = await pool.fetchrow("SELECT status FROM function_executions WHERE id = $1", execution_id)
        assert row is not None
        assert row["status"] == "completed"
