"""Credentials: the Dapr secret store (a fake daprd on loopback), the secrets file, the
environment, their order, and secret values kept out of logs, results, errors and history."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.credentials import (
    CredentialResolver,
    DaprSecretSource,
    EnvSecretSource,
    FileSecretSource,
    SecretRegistry,
    scrub_log_event,
)
from shared.errors import InfrastructureError
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import publish
from tests.registry.fake_secrets import FakeSecretStore
from tests.registry.fixtures_functions import TEST_FUNCTIONS


@pytest.fixture
async def daprd() -> AsyncIterator[FakeSecretStore]:
    fake = FakeSecretStore(
        store="vault",
        secrets={"SLACK_API_KEY": "xoxb-from-dapr", "db:password": "pw-dapr"},
        empty={"EMPTY"},
        token="tok",
    )
    await fake.start()
    yield fake
    await fake.close()


def dapr_settings(port: int, **extra: Any) -> Settings:
    return Settings(dapr_http_port=port, dapr_secret_store="vault", dapr_api_token="tok", **extra)


async def test_dapr_secret_store_answers_per_the_wire_protocol(daprd: FakeSecretStore) -> None:
    source = DaprSecretSource(dapr_settings(daprd.port))
    try:
        assert await source.get("SLACK_API_KEY") == "xoxb-from-dapr"
        assert await source.get("db:password") == "pw-dapr"
        assert await source.get("EMPTY") is None  # 204
        assert await source.get("MISSING") is None  # 500 ERR_SECRET_GET
    finally:
        await source.close()
    assert daprd.requests == [
        ("/v1.0/secrets/vault/SLACK_API_KEY", "tok"),
        ("/v1.0/secrets/vault/db:password", "tok"),
        ("/v1.0/secrets/vault/EMPTY", "tok"),
        ("/v1.0/secrets/vault/MISSING", "tok"),
    ]


async def test_dapr_errors_other_than_a_missing_key_are_infrastructure(daprd: FakeSecretStore) -> None:
    wrong_store = DaprSecretSource(dapr_settings(daprd.port).model_copy(update={"dapr_secret_store": "nope"}))
    unreachable = DaprSecretSource(Settings(dapr_http_port=1, dapr_secret_store="vault"))
    try:
        with pytest.raises(InfrastructureError, match="401"):
            await wrong_store.get("SLACK_API_KEY")
        with pytest.raises(InfrastructureError, match="unreachable"):
            await unreachable.get("SLACK_API_KEY")
    finally:
        await wrong_store.close()
        await unreachable.close()


async def test_resolution_order_dapr_then_file_then_env(daprd: FakeSecretStore, tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(
        json.dumps({"SLACK_API_KEY": "from-file", "ONLY_FILE": "file-value", "db": {"user": "u"}})
    )
    environ = {"FLEET_SECRET_ONLY_ENV": "env-value", "FLEET_SECRET_ONLY_FILE": "env-loses"}
    registry = SecretRegistry()
    resolver = CredentialResolver.from_settings(dapr_settings(daprd.port, secrets_file=secrets_file))
    assert [s.name for s in resolver.sources] == ["dapr", "file", "env"]
    resolver = CredentialResolver(
        [resolver.sources[0], resolver.sources[1], EnvSecretSource(environ)], registry=registry
    )
    try:
        found, missing = await resolver.resolve(
            ["SLACK_API_KEY", "ONLY_FILE", "ONLY_ENV", "db:user", "NOWHERE"]
        )
    finally:
        dapr = resolver.sources[0]
        assert isinstance(dapr, DaprSecretSource)
        await dapr.close()
    assert found == {
        "SLACK_API_KEY": "xoxb-from-dapr",
        "ONLY_FILE": "file-value",
        "ONLY_ENV": "env-value",
        "db:user": "u",
    }
    assert missing == ["NOWHERE"]
    assert registry.scrub("x xoxb-from-dapr file-value env-value") == "x *** *** ***"


def test_dapr_is_only_asked_when_the_sidecar_is_configured() -> None:
    assert [s.name for s in CredentialResolver.from_settings(Settings()).sources] == ["env"]
    assert [s.name for s in CredentialResolver.from_settings(Settings(dapr_secrets="on")).sources] == [
        "dapr",
        "env",
    ]
    assert [
        s.name
        for s in CredentialResolver.from_settings(Settings(dapr_http_port=3500, dapr_secrets="off")).sources
    ] == ["env"]


async def test_file_source_flattens_yaml_and_rereads_changes(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text("smtp:\n  password: p1\nlist:\n  - a\n  - b\nport: 25\n")
    source = FileSecretSource(path)
    assert await source.get("smtp:password") == "p1"
    assert await source.get("list:1") == "b"
    assert await source.get("port") == "25"
    path.write_text("smtp:\n  password: p2\n")
    os.utime(path, (1, 1))  # a different mtime whatever the clock's resolution
    assert await source.get("smtp:password") == "p2"
    assert await FileSecretSource(tmp_path / "absent.json").get("x") is None


def test_scrubbing_masks_raw_and_json_escaped_values() -> None:
    registry = SecretRegistry()
    registry.add('s3cr"et\\value')
    registry.add("abc")  # too short to scrub safely
    data = json.dumps({"v": 'prefix s3cr"et\\value suffix', "w": "abc"}).encode()
    assert b"s3cr" not in registry.scrub_bytes(data)
    assert b'"w": "abc"' in registry.scrub_bytes(data)
    assert registry.scrub_value({"a": ['s3cr"et\\value']}) == {"a": ["***"]}


@pytest.fixture
def captured_logs() -> Any:
    buffer = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.add_log_level, scrub_log_event, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    yield buffer
    structlog.reset_defaults()


async def test_a_planted_secret_never_reaches_logs_results_or_history(
    registry_settings: Callable[..., Settings],
    redis: Redis,
    pool: Any,
    monkeypatch: pytest.MonkeyPatch,
    captured_logs: io.StringIO,
) -> None:
    secret = f"planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("FLEET_SECRET_PLANTED_TOKEN", secret)
    settings = registry_settings()
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        ok = await publish(redis, settings, "testing/leak", {})
        bad = await publish(redis, settings, "testing/leak", {"fail": True})
        await read_results(redis, settings.results_topic, 2)
    raw_results = b"".join(fields[b"data"] for _, fields in await redis.xrange(settings.results_topic))
    results = {
        r["data"]["execution_id"]: r["data"] for r in await read_results(redis, settings.results_topic, 2)
    }
    history = await pool.fetchval("SELECT string_agg(t::text, '\n') FROM function_executions t")
    logs = captured_logs.getvalue()

    assert results[ok]["output"] == {"said": "the token is ***", "nested": {"token": "***"}}
    assert results[bad]["error"]["message"] == "failed with ***"
    assert results[bad]["error"]["details"] == {"token": "***"}
    assert "about to leak" in logs
    assert "***" in logs
    assert "***" in history
    for where, text in (("results", raw_results.decode()), ("logs", logs), ("history", history)):
        assert secret not in text, where
