"""Fixtures of the OCI tests: a fake Kubernetes API, settings pointing at it, contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shared.credentials import SecretRegistry
from shared.functions import ExecutionContext
from shared.resources import Resources
from shared.settings import Settings
from tests.fakes.kube import FakeKube, running_fake_kube


@pytest.fixture
async def fake_kube() -> AsyncIterator[FakeKube]:
    async with running_fake_kube() as fake:
        yield fake


@pytest.fixture
def oci_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for OCI tests (no broker needed): fast API retries; keyword overrides on top."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "consumer_name": "oci-test-worker",
            "oci_api_retries": 2,
            "oci_api_backoff": 0.01,
            "log_level": "warning",
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def kube_settings(fake_kube: FakeKube, oci_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return oci_settings(
        oci_backend="kubernetes", oci_kubeconfig=fake_kube.kubeconfig(tmp_path / "kubeconfig")
    )


def knowing(*secrets: str) -> Resources:
    """A worker's resources whose registry of secrets (as its credentials extension fills it)
    holds ``secrets``."""
    registry = SecretRegistry()
    for secret in secrets:
        registry.add(secret)
    resources = Resources()
    resources.provide(SecretRegistry, registry)
    return resources


def make_ctx(
    execution_id: str = "exec-1",
    *,
    credentials: dict[str, str] | None = None,
    attempt: int = 1,
    resources: Resources | None = None,
) -> ExecutionContext:
    return ExecutionContext(
        execution_id=execution_id,
        function="acme/greet",
        attempt=attempt,
        domain="oci",
        credentials=credentials or {},
        resources=resources if resources is not None else Resources(),
    )


# A real PostgreSQL per test for the registry path (the registry suite's fixtures:
# FLEET_TEST_DATABASE_URL, else an embedded server).
from tests.registry.conftest import (  # noqa: E402, F401
    database_server,
    database_url,
    migrated_url,
    pool,
    registry_settings,
)
