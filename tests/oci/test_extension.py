"""The OCI executor joins each worker as an extension: built from that worker's settings, added to
that worker's executors at start, closed at its stop; importing the package registers nothing."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import pytest

from shared.assemble import create_worker
from shared.errors import ConfigError
from shared.registry import executors as executors_module
from shared.registry.executors import Executors
from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.resources import Resources
from shared.runtime.extension import WorkerContext
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import publish
from workers.oci.executor import OciExecutor
from workers.oci.extension import OciExtension

#: Ten log lines on stderr, then a failure: the log tail's length shows the worker's settings.
NOISY_FAILURE = "import sys\nfor i in range(10): print('line', i, file=sys.stderr)\nsys.exit(4)\n"


def test_importing_the_package_registers_nothing_and_each_call_builds_its_own_extension(
    oci_settings: Callable[..., Settings],
) -> None:
    package = importlib.reload(sys.modules.get("workers.oci") or importlib.import_module("workers.oci"))
    # No process-wide table or hook list exists for an import to fill.
    assert not hasattr(executors_module, "EXECUTORS")
    assert not any(isinstance(value, OciExecutor) for value in vars(package).values())

    first, second = oci_settings(oci_log_tail_lines=3), oci_settings(oci_log_tail_lines=9)
    [one] = package.extensions(first)
    [two] = package.extensions(second)
    assert isinstance(one, OciExtension)
    assert isinstance(two, OciExtension)
    assert one.executor is not two.executor
    assert (one.executor.settings, two.executor.settings) == (first, second)


def test_a_blank_namespace_for_the_kubernetes_backend_fails_when_the_worker_is_built(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ConfigError, match="FLEET_OCI_NAMESPACE must not be blank"):
        create_worker("oci", make_settings(oci_backend="kubernetes", oci_namespace="  "))
    # The local backend does not use the namespace.
    worker = create_worker("oci", make_settings(oci_backend="local", oci_namespace="  "))
    assert worker.extension(OciExtension).executor.settings.oci_namespace == "  "


async def test_start_adds_the_executor_to_the_workers_table_and_stop_closes_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    worker = create_worker("oci", settings)
    extension = worker.extension(OciExtension)
    try:
        # A table another extension provided first is joined, not replaced.
        resources, table = Resources(), Executors()
        resources.provide(Executors, table)
        ctx = WorkerContext(
            domain="oci", settings=settings, name="w", resources=resources, transport=worker.transport
        )
        assert await extension.start(ctx)
        assert table.get("oci") is extension.executor
        # Without one, the extension provides it.
        alone = OciExtension(settings)
        fresh = Resources()
        ctx = WorkerContext(
            domain="oci", settings=settings, name="w", resources=fresh, transport=worker.transport
        )
        assert await alone.start(ctx)
        assert fresh.get(Executors).get("oci") is alone.executor
        await alone.stop()
        assert alone.executor.closed
        assert not extension.executor.closed
    finally:
        await extension.stop()
        await worker.transport.close()
    assert extension.executor.closed


async def test_two_oci_workers_in_one_process_each_run_with_their_own_settings(
    registry_settings: Callable[..., Settings], namespace: str, redis: Any, pool: Any
) -> None:
    definition = FunctionDefinition(
        slug="acme/noisy",
        domain="oci",
        execution_type="oci",
        image_ref="registry.example/acme/noisy:1",
        command=[sys.executable, "-c", NOISY_FAILURE],
        timeout_seconds=20,
    )
    await FunctionRepository(pool).register(definition, created_by="test")

    def settings_of(name: str, tail: int) -> Settings:
        return registry_settings(
            topic_prefix=f"{namespace}{name}.functions.",
            results_topic=f"{namespace}{name}.results",
            group_prefix=f"{namespace}{name}.fleet-",
            consumer_name=f"oci-{name}",
            oci_log_tail_lines=tail,
        )

    a_settings, b_settings = settings_of("a", 2), settings_of("b", 4)
    a, b = create_worker("oci", a_settings), create_worker("oci", b_settings)
    a_executor, b_executor = a.extension(OciExtension).executor, b.extension(OciExtension).executor
    assert a_executor is not b_executor
    assert (a_executor.settings, b_executor.settings) == (a.settings, b.settings)

    async def tail_of(settings: Settings, expected: int) -> list[str]:
        await publish(redis, settings, "acme/noisy", {}, domain="oci")
        results = await read_results(redis, settings.results_topic, expected, timeout=30)
        assert len(results) == expected
        result = results[-1]["data"]
        assert result["status"] == "failed"
        assert result["error"]["code"] == "function_failed"
        tail: list[str] = result["error"]["details"]["log_tail"]
        return tail

    async with running(b):
        async with running(a):
            assert a.resources.get(Executors).get("oci") is a_executor
            assert b.resources.get(Executors).get("oci") is b_executor
            assert await tail_of(a_settings, 1) == ["line 8", "line 9"]
            assert await tail_of(b_settings, 1) == ["line 6", "line 7", "line 8", "line 9"]
        # Stopping a closed a's executor only: b keeps running with its own.
        assert a_executor.closed
        assert not b_executor.closed
        assert await tail_of(b_settings, 2) == ["line 6", "line 7", "line 8", "line 9"]
    assert b_executor.closed
