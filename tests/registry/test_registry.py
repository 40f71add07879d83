"""The registry: resolution through the cache, NOTIFY invalidation across processes, built-in
sync, and every error code a registry worker adds."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.errors import ExecutionFailed, InfrastructureError
from shared.functions import ExecutionContext, FunctionTable, builtin
from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.registry.resolver import NotifyListener, RegistryResolver
from shared.registry.sync import sync_builtins
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import execution_row, publish, registry_of
from tests.registry.fixtures_functions import TEST_FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_executors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker without oci/http executors. Executors are per worker now (an ``ai`` worker's
    extensions add none), so whatever this session imported cannot leak one in."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_resolves_by_slug_and_id_through_a_ttl_cache(pool: Any) -> None:
    await sync_builtins(pool, TEST_FUNCTIONS)
    clock = FakeClock()
    resolver = RegistryResolver(pool, ttl=60, table=TEST_FUNCTIONS, clock=clock)
    spec = await resolver.resolve("system/echo")
    assert spec is not None
    assert spec.function_id is not None
    assert spec.execution_type == "builtin"
    assert spec.input_schema == {"type": "object"}
    by_id = await resolver.resolve(spec.function_id)
    assert by_id is not None
    assert by_id.slug == "system/echo"
    assert await resolver.resolve("nobody/nothing") is None
    loads = resolver.loads
    assert loads == 3
    # Fresh: no database reads, even after the row changed underneath.
    await pool.execute("UPDATE functions SET description = 'changed' WHERE slug = 'system/echo'")
    spec = await resolver.resolve("system/echo")
    assert spec is not None
    assert spec.description == "Returns its input unchanged."
    await resolver.resolve("nobody/nothing")
    assert resolver.loads == loads
    # Expired: read again.
    clock.now += 61
    spec = await resolver.resolve("system/echo")
    assert spec is not None
    assert spec.description == "changed"
    assert resolver.loads == loads + 1


async def test_concurrent_misses_load_once(pool: Any) -> None:
    await sync_builtins(pool, TEST_FUNCTIONS)
    resolver = RegistryResolver(pool, ttl=60, table=TEST_FUNCTIONS)
    specs = await asyncio.gather(*(resolver.resolve("system/echo") for _ in range(20)))
    assert {s.slug for s in specs if s} == {"system/echo"}
    assert resolver.loads == 1


async def test_disabled_raises_and_deprecated_resolves(pool: Any) -> None:
    await sync_builtins(pool, TEST_FUNCTIONS)
    repo = FunctionRepository(pool)
    await repo.set_enabled("system/echo", False)
    await repo.set_deprecated("system/sleep", True)
    resolver = RegistryResolver(pool, ttl=60, table=TEST_FUNCTIONS)
    with pytest.raises(ExecutionFailed) as caught:
        await resolver.resolve("system/echo")
    assert caught.value.code == "function_disabled"
    spec = await resolver.resolve("system/sleep")
    assert spec is not None
    assert spec.is_deprecated


async def test_notify_from_another_process_invalidates_the_cache(migrated_url: str, pool: Any) -> None:
    await sync_builtins(pool, TEST_FUNCTIONS)
    resolver = RegistryResolver(pool, ttl=3600, table=TEST_FUNCTIONS)
    listener = NotifyListener(migrated_url, resolver.invalidate, lambda: resolver.invalidate(None))
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 30)
        assert await resolver.resolve("system/echo") is not None
        loads = resolver.loads
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.tools.cli.main",
            "functions",
            "disable",
            "system/echo",
            cwd=ROOT,
            env={**os.environ, "FLEET_DATABASE_URL": migrated_url},
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await cli.communicate()
        assert cli.returncode == 0, out
        assert b"system/echo disabled" in out
        # The TTL is an hour: only the notification can make the resolver read again.
        for _ in range(200):
            if resolver.cached("system/echo") is None:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(ExecutionFailed) as caught:
            await resolver.resolve("system/echo")
        assert caught.value.code == "function_disabled"
        assert resolver.loads == loads + 1
    finally:
        await listener.close()


async def test_outage_serves_stale_cache_and_fails_unknown(pool: Any) -> None:
    await sync_builtins(pool, TEST_FUNCTIONS)
    clock = FakeClock()
    resolver = RegistryResolver(pool, ttl=1, table=TEST_FUNCTIONS, clock=clock)
    assert await resolver.resolve("system/echo") is not None

    class DownPool:
        async def fetchrow(self, *args: Any) -> Any:
            raise ConnectionRefusedError("database down")

    resolver.bind(DownPool())
    clock.now += 3600
    spec = await resolver.resolve("system/echo")
    assert spec is not None
    assert spec.slug == "system/echo"
    with pytest.raises(InfrastructureError):
        await resolver.resolve("system/sleep")


class ModelV1(BaseModel):
    text: str


class ModelV2(BaseModel):
    text: str
    count: int = 1


def table_with(model: type[BaseModel], description: str = "versioned") -> FunctionTable:
    table = FunctionTable()

    @builtin("testing/versioned", domain="ai", input_model=model, description=description, table=table)
    async def versioned(data: Any, ctx: ExecutionContext) -> dict[str, Any]:
        return {}

    return table


async def test_sync_upserts_bumps_versions_and_keeps_operator_choices(pool: Any) -> None:
    repo = FunctionRepository(pool)
    report = await sync_builtins(pool, table_with(ModelV1))
    assert report.inserted == ["testing/versioned"]
    record = await repo.get("testing/versioned")
    assert record is not None
    assert record.version == 1
    assert record.is_builtin
    assert record.input_schema == ModelV1.model_json_schema()
    first_id = record.id

    report = await sync_builtins(pool, table_with(ModelV1))
    assert report.unchanged == ["testing/versioned"]

    await repo.set_enabled("testing/versioned", False)
    await repo.set_deprecated("testing/versioned", True)
    # A description change updates the row without a new version.
    report = await sync_builtins(pool, table_with(ModelV1, "new words"))
    assert report.updated == ["testing/versioned"]
    record = await repo.get("testing/versioned")
    assert record is not None
    assert record.version == 1
    assert record.description == "new words"
    # A schema change bumps the version; the operator's flags survive every sync.
    await sync_builtins(pool, table_with(ModelV2, "new words"))
    record = await repo.get("testing/versioned")
    assert record is not None
    assert record.version == 2
    assert record.id == first_id
    assert record.input_schema == ModelV2.model_json_schema()
    assert not record.is_enabled
    assert record.is_deprecated


async def test_sync_never_replaces_a_registered_function(pool: Any) -> None:
    repo = FunctionRepository(pool)
    definition = FunctionDefinition(
        slug="testing/versioned", domain="ai", execution_type="http", webhook_url="https://example.com/hook"
    )
    await repo.register(definition)
    report = await sync_builtins(pool, table_with(ModelV1))
    assert report.conflicts == ["testing/versioned"]
    record = await repo.get("testing/versioned")
    assert record is not None
    assert record.execution_type == "http"


async def test_concurrent_syncs_agree(pool: Any) -> None:
    reports = await asyncio.gather(*(sync_builtins(pool, TEST_FUNCTIONS) for _ in range(4)))
    inserted = [slug for r in reports for slug in r.inserted]
    assert sorted(inserted) == sorted(s.slug for s in TEST_FUNCTIONS)
    assert await pool.fetchval("SELECT count(*) FROM functions") == len(TEST_FUNCTIONS)


def test_definitions_are_validated() -> None:
    with pytest.raises(ValueError, match="image_ref"):
        FunctionDefinition(slug="acme/x", domain="oci", execution_type="oci")
    with pytest.raises(ValueError, match="webhook_url"):
        FunctionDefinition(slug="acme/x", domain="http", execution_type="http")
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        FunctionDefinition(
            slug="acme/x", domain="oci", execution_type="oci", image_ref="x", input_schema={"type": "nope"}
        )
    with pytest.raises(ValueError, match="unknown domain"):
        FunctionDefinition(slug="acme/x", domain="nope", execution_type="oci", image_ref="x")
    with pytest.raises(ValueError, match="plugin"):
        FunctionDefinition(slug="Acme X", domain="oci", execution_type="oci", image_ref="x")
    # Credentials a webhook header uses are declared with the function.
    hook = FunctionDefinition(
        slug="acme/hook",
        domain="http",
        execution_type="http",
        webhook_url="https://hooks.example/h",
        webhook_headers={
            "Authorization": "Bearer {{credentials.ACME_TOKEN}}",
            "X-Key": "{{ credentials.K }}",
        },
        credentials=["K"],
    )
    assert hook.credentials == ["K", "ACME_TOKEN"]


async def test_register_updates_bump_the_version_and_keep_enabled(pool: Any) -> None:
    repo = FunctionRepository(pool)
    definition = FunctionDefinition(
        slug="acme/hook", domain="http", execution_type="http", webhook_url="https://a.example/h"
    )
    record, action = await repo.register(definition, created_by="tester")
    assert action == "created"
    assert record.version == 1
    assert record.created_by == "tester"
    record, action = await repo.register(definition)
    assert action == "unchanged"
    await repo.set_enabled("acme/hook", False)
    changed = definition.model_copy(update={"webhook_url": "https://b.example/h"})
    record, action = await repo.register(changed)
    assert action == "updated"
    assert record.version == 2
    assert not record.is_enabled
    await sync_builtins(pool, TEST_FUNCTIONS)
    with pytest.raises(ValueError, match="built-in"):
        await repo.register(
            FunctionDefinition(
                slug="system/echo", domain="ai", execution_type="http", webhook_url="https://x.example"
            )
        )


# ---------------------------------------------------------------- through a worker
async def run_requests(
    settings: Settings, redis: Redis, requests: list[tuple[str, dict[str, Any], dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    ids = []
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        for function, input_, options in requests:
            ids.append(await publish(redis, settings, function, input_, **options))
        results = await read_results(redis, settings.results_topic, len(requests), timeout=30)
    by_id = {r["data"]["execution_id"]: r["data"] for r in results}
    return {f"{i}": by_id[execution_id] for i, execution_id in enumerate(ids)}


async def test_error_codes_of_a_registry_worker(
    registry_settings: Callable[..., Settings],
    redis: Redis,
    pool: Any,
    monkeypatch: pytest.MonkeyPatch,
    no_executors: None,
) -> None:
    monkeypatch.delenv("FLEET_SECRET_PLANTED_TOKEN", raising=False)
    settings = registry_settings()
    await sync_builtins(pool, TEST_FUNCTIONS)
    repo = FunctionRepository(pool)
    await repo.set_enabled("system/fail", False)
    await repo.set_deprecated("system/sleep", True)
    await repo.register(
        FunctionDefinition(
            slug="acme/resize", domain="ai", execution_type="oci", image_ref="ghcr.io/acme/resize:1"
        )
    )
    await repo.register(
        FunctionDefinition(
            slug="acme/strict",
            domain="ai",
            execution_type="http",
            webhook_url="https://hooks.example/strict",
            input_schema={
                "type": "object",
                "required": ["url", "n"],
                "properties": {"url": {"type": "string"}, "n": {"type": "integer", "minimum": 1}},
                "additionalProperties": False,
            },
        )
    )
    results = await run_requests(
        settings,
        redis,
        [
            ("system/fail", {}, {}),
            ("system/sleep", {"seconds": 0}, {}),
            ("acme/resize", {}, {}),
            ("acme/strict", {"n": 0, "extra": True}, {}),
            ("system/sleep", {"seconds": "{{prev.missing}}"}, {"context": {"prev": {"x": 1}}}),
            ("testing/bad-output", {}, {}),
            ("testing/leak", {}, {}),
            ("system/sleep", {"seconds": "{{prev.wait}}"}, {"context": {"prev": {"wait": 0}}}),
            (
                "acme/strict",
                {"url": "{{fetch.items[0]}}", "n": "{{fetch.n}}"},
                {"context": {"fetch": {"items": ["u"], "n": 2}}},
            ),
            # A built-in: its model validates (its input_schema is that model's schema).
            ("system/sleep", {"seconds": "soon"}, {}),
        ],
    )
    assert results["0"]["error"]["code"] == "function_disabled"
    assert results["1"]["status"] == "completed"
    assert results["1"]["warnings"] == [
        "function system/sleep is deprecated and may be removed; move to its replacement"
    ]
    assert results["2"]["error"]["code"] == "backend_unavailable"
    assert results["3"]["error"]["code"] == "invalid_input"
    assert results["3"]["error"]["details"] == [
        {"path": "/", "message": "'url' is a required property"},
        {"path": "/", "message": "Additional properties are not allowed ('extra' was unexpected)"},
        {"path": "/n", "message": "0 is less than the minimum of 1"},
    ]
    assert results["4"]["error"]["code"] == "template_unresolved"
    assert results["4"]["error"]["details"] == {"path": "prev.missing", "at": "/seconds"}
    assert results["5"]["error"]["code"] == "invalid_output"
    assert results["9"]["error"]["code"] == "invalid_input"
    assert [v["path"] for v in results["9"]["error"]["details"]] == ["/seconds"]
    assert results["5"]["error"]["details"][0]["path"] == "/n"
    assert results["6"]["error"]["code"] == "credentials_missing"
    assert results["6"]["error"]["details"] == {"missing": ["PLANTED_TOKEN"]}
    assert results["7"]["status"] == "completed"
    assert results["7"]["output"] == {"slept": 0}
    # Templates resolved (types kept) and the schema passed: the missing executor is next.
    assert results["8"]["error"]["code"] == "backend_unavailable"
    for data in results.values():
        row = await execution_row(pool, data["execution_id"])
        assert row is not None
        assert row["status"] == data["status"]
        assert row["result"] == data


async def test_enable_and_disable_reach_a_running_worker(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any
) -> None:
    settings = registry_settings(registry_cache_ttl=3600)
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        await asyncio.wait_for(registry_of(worker).listener.listening.wait(), 30)
        await publish(redis, settings, "system/echo", {"n": 1})
        assert len(await read_results(redis, settings.results_topic, 1)) == 1
        await FunctionRepository(pool).set_enabled("system/echo", False)
        for _ in range(200):
            if registry_of(worker).resolver.cached("system/echo") is None:
                break
            await asyncio.sleep(0.05)
        await publish(redis, settings, "system/echo", {"n": 2})
        results = await read_results(redis, settings.results_topic, 2)
    assert results[1]["data"]["error"]["code"] == "function_disabled"


async def test_a_cancelled_load_does_not_fail_the_other_waiters() -> None:
    class SlowPool:
        def __init__(self) -> None:
            self.calls = 0
            self.release = asyncio.Event()

        async def fetchrow(self, *args: Any) -> Any:
            self.calls += 1
            await self.release.wait()
            return None

    pool = SlowPool()
    resolver = RegistryResolver(pool, ttl=60, table=TEST_FUNCTIONS)
    first = asyncio.create_task(resolver.resolve("nobody/nothing"))
    await asyncio.sleep(0)
    second = asyncio.create_task(resolver.resolve("nobody/nothing"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    pool.release.set()
    assert await second is None
    assert first.cancelled()
    assert pool.calls == 2


async def test_a_registration_reaches_a_running_worker_that_cached_its_absence(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any, no_executors: None
) -> None:
    settings = registry_settings(registry_cache_ttl=3600)
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    async with running(worker):
        await asyncio.wait_for(registry_of(worker).listener.listening.wait(), 30)
        await publish(redis, settings, "acme/late", {})
        first = await read_results(redis, settings.results_topic, 1)
        assert first[0]["data"]["error"]["code"] == "unknown_function"
        assert registry_of(worker).resolver.is_cached("acme/late")  # its absence, for an hour
        await FunctionRepository(pool).register(
            FunctionDefinition(
                slug="acme/late", domain="ai", execution_type="http", webhook_url="https://h.example/"
            )
        )
        for _ in range(200):
            if not registry_of(worker).resolver.is_cached("acme/late"):
                break
            await asyncio.sleep(0.05)
        await publish(redis, settings, "acme/late", {})
        results = await read_results(redis, settings.results_topic, 2)
    # Known now (its executor is not in this worker, which is what the code says).
    assert results[1]["data"]["error"]["code"] == "backend_unavailable"


async def test_a_builtin_row_without_code_in_this_worker_is_backend_unavailable(pool: Any) -> None:
    await sync_builtins(pool, TEST_FUNCTIONS)
    resolver = RegistryResolver(pool, ttl=60, table=FunctionTable())  # a worker without those built-ins
    spec = await resolver.resolve("testing/counted")
    assert spec is not None
    assert spec.execution_type == "builtin"
    with pytest.raises(ExecutionFailed) as caught:
        await spec.handler(
            {}, ExecutionContext(execution_id="e", function="testing/counted", attempt=1, domain="ai")
        )
    assert caught.value.code == "backend_unavailable"
    assert "not installed in this worker" in caught.value.message
