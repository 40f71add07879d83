"""Small pieces: settings, the function table, metrics, backoff, errors, secret scrubbing."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

import shared
from shared.credentials import SecretRegistry
from shared.domains import DOMAINS, get_domain
from shared.errors import ConfigError, ExecutionFailed, ExecutionTimeout
from shared.functions import ExecutionContext, FunctionTable, builtin
from shared.runtime.metrics import Metrics
from shared.runtime.worker import Backoff
from shared.settings import Settings


def test_public_surface_is_complete_and_sorted() -> None:
    assert set(shared.__all__) == set(shared._HOMES)
    assert shared.__all__ == sorted(shared.__all__)
    for name in shared.__all__:
        assert hasattr(shared, name), name


def test_settings_read_fleet_env_and_dapr_injected_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_CONCURRENCY", "7")
    monkeypatch.setenv("APP_PORT", "9000")
    monkeypatch.setenv("DAPR_HTTP_PORT", "3600")
    monkeypatch.setenv("FLEET_TOPIC_PREFIX", "jobs.")
    settings = Settings()
    assert settings.concurrency == 7
    assert (settings.app_port, settings.dapr_http_port) == (9000, 3600)
    assert settings.topic_for("ai") == "jobs.ai"
    assert settings.dlq_for("jobs.ai") == "jobs.ai.dlq"
    assert settings.group_for("dev-tools") == "fleet-dev-tools"


def test_settings_are_immutable_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.concurrency = 3  # type: ignore[misc]
    monkeypatch.setenv("FLEET_CONCURRENCY", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("FLEET_CONCURRENCY")
    with pytest.raises(ValidationError):
        Settings(topic_prefix="  ")


def test_domains_are_declared_once_and_found_by_either_spelling() -> None:
    assert [d.name for d in DOMAINS] == ["ai", "comms", "dev-tools", "oci", "http"]
    assert get_domain("dev_tools") is get_domain("dev-tools")
    with pytest.raises(ConfigError, match="unknown domain"):
        get_domain("nope")


def test_builtin_registers_a_spec_and_rejects_duplicates() -> None:
    table = FunctionTable()

    @builtin("test/hello", domain="comms", table=table, credentials=("KEY",))
    async def hello(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
        """Says hello."""
        return {}

    spec = table.get("test/hello")
    assert spec is not None
    assert (spec.name, spec.description, spec.domain, spec.credentials) == (
        "Hello",
        "Says hello.",
        "comms",
        ("KEY",),
    )
    assert spec.serves("comms")
    assert not spec.serves("ai")
    assert [s.slug for s in table.for_domain("comms")] == ["test/hello"]

    with pytest.raises(ConfigError, match="declared twice"):

        @builtin("test/hello", domain="comms", table=table)
        async def other(data: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
            return {}

    with pytest.raises(ConfigError, match="must look like"):
        builtin("noslash", domain=None, table=table)


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.observe_execution("system/echo", "completed", 0.0007)
    metrics.observe_execution("system/echo", "timeout", 12.0)
    metrics.count_delivery("ack", 2)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert samples[("fleet_deliveries_total", (("outcome", "ack"),))] == 2
    assert samples[("fleet_executions_total", (("function", "system/echo"), ("outcome", "timeout")))] == 1
    bucket = "fleet_execution_duration_seconds_bucket"
    assert samples[(bucket, (("function", "system/echo"), ("le", "0.001")))] == 1
    assert samples[(bucket, (("function", "system/echo"), ("le", "+Inf")))] == 2
    assert samples[("fleet_execution_duration_seconds_count", (("function", "system/echo"),))] == 2


def test_backoff_grows_to_a_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=4.0, factor=2.0)
    delays = [backoff.next() for _ in range(5)]
    assert 0.5 <= delays[0] <= 1.5
    assert all(d <= 6.0 for d in delays)  # cap 4, jitter up to 1.5x
    assert delays[4] >= 2.0  # capped at 4, jitter ≥ 0.5
    backoff.reset()
    assert backoff.next() <= 1.5


def test_execution_failed_builds_the_contract_error_object() -> None:
    error = ExecutionFailed("nope", code="x_code", retryable=True, details={"k": 1}).to_error()
    assert error == {"code": "x_code", "message": "nope", "retryable": True, "details": {"k": 1}}
    assert ExecutionTimeout("slow").to_error() == {"code": "timeout", "message": "slow", "retryable": True}


def test_secret_registry_scrubs_raw_and_json_escaped_forms() -> None:
    registry = SecretRegistry()
    registry.add('s3cr3t-"quoted"')
    registry.add("abc")  # too short to scrub safely: ignored
    assert registry.scrub('token=s3cr3t-"quoted" abc') == "token=*** abc"
    assert registry.scrub_bytes(b'{"t":"s3cr3t-\\"quoted\\""}') == b'{"t":"***"}'
    assert registry.scrub_value({"a": ['x s3cr3t-"quoted"']}) == {"a": ["x ***"]}


def test_every_cli_command_loads_and_has_help() -> None:
    from click.testing import CliRunner

    from shared.tools.cli.main import COMMANDS, cli

    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"])
    assert listing.exit_code == 0
    for name in COMMANDS:
        assert name in listing.output
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output
