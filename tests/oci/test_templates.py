"""Function templates: `fleet new` scaffolds them; the scaffolded functions are registered in a
real registry and invoked through the registry's executor lookup (the worker's ``Executors``) and
the local backend."""

from __future__ import annotations

import ast
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from shared.errors import ExecutionFailed
from shared.registry.executors import Executors
from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.registry.resolver import RegistryResolver
from shared.resources import Resources
from shared.settings import Settings
from shared.tools.cli.main import cli
from shared.tools.scaffold import TEMPLATES_DIR
from tests.oci.conftest import make_ctx
from workers.oci.executor import OciExecutor
from workers.oci.extension import OciExtension

LANGUAGES = ["python", "typescript", "go"]
TEXT = "The cat and the hat.\nThe end, isn't it? The END\n"
EXPECTED = {
    "words": 11,
    "lines": 2,
    "characters": len(TEXT),
    "top": [{"word": "the", "count": 4}, {"word": "end", "count": 2}],
}


@pytest.fixture
async def oci_resources(oci_settings: Any) -> AsyncIterator[Resources]:
    """A worker's resources holding an oci executor (local backend), closed after."""
    executor = OciExecutor(oci_settings(oci_backend="local"))
    executors = Executors()
    executors.add("oci", executor)
    resources = Resources()
    resources.provide(Executors, executors)
    yield resources
    await executor.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_template_files(language: str) -> None:
    root = TEMPLATES_DIR / language
    definition = yaml.safe_load((root / "function.yaml").read_text())
    parsed = FunctionDefinition.model_validate(definition)  # what `fleet functions register` accepts
    assert parsed.execution_type == "oci"
    assert parsed.domain == "oci"
    assert parsed.working_dir == "/app"
    dockerfile = (root / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2, "multi-stage"
    assert "\nUSER 65532:65532\n" in dockerfile, "numeric non-root user"
    python = yaml.safe_load((TEMPLATES_DIR / "python" / "function.yaml").read_text())
    assert definition["input_schema"] == python["input_schema"]
    assert definition["output_schema"] == python["output_schema"]
    if language == "python":
        tree = ast.parse((root / "main.py").read_text())
        schema = next(
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "INPUT_SCHEMA"
        )
        assert schema == definition["input_schema"]
    if language == "typescript":
        source = (root / "src" / "main.ts").read_text()
        built = (root / "dist" / "main.js").read_text()
        for name in ("function check(", "function wordCount(", "function fail(", "function main("):
            assert name in source
            assert name in built, f"dist/main.js is stale: run `npm run build` ({name})"
    if language == "go":
        source = (root / "main.go").read_text()
        assert 'os.Getenv("INPUT")' in source
        assert "DisallowUnknownFields" in source
        assert (root / "go.mod").read_text().startswith("module ")


def test_fleet_new_scaffolds_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["new", "python", "acme/counter", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    target = tmp_path / "counter"
    assert (target / "main.py").is_file()
    assert (target / "Dockerfile").is_file()
    cluster = FunctionDefinition.model_validate(yaml.safe_load((target / "function.yaml").read_text()))
    local = FunctionDefinition.model_validate(yaml.safe_load((target / "function.local.yaml").read_text()))
    assert (cluster.slug, cluster.name, cluster.image_ref) == (
        "acme/counter",
        "Counter",
        "registry.example.com/acme/counter:0.1.0",
    )
    assert cluster.working_dir == "/app"
    assert local.slug == "acme/counter"
    assert local.working_dir == str(target.resolve())
    assert local.command == ["python3", "main.py"]

    (target / "main.py").write_text("# mine\n")
    again = runner.invoke(cli, ["new", "python", "acme/counter", "--dir", str(tmp_path)])
    assert again.exit_code == 2
    assert "already exists" in again.output
    assert (target / "main.py").read_text() == "# mine\n"

    bad = runner.invoke(cli, ["new", "python", "Bad Name", "--dir", str(tmp_path)])
    assert bad.exit_code == 2

    made = runner.invoke(cli, ["new", "typescript", "shout", "--dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    assert '"name": "shout"' in (tmp_path / "shout" / "package.json").read_text()
    assert yaml.safe_load((tmp_path / "shout" / "function.yaml").read_text())["slug"] == "custom/shout"


@pytest.mark.parametrize("language", LANGUAGES)
async def test_scaffolded_template_runs_through_the_registry_and_the_local_backend(
    language: str, tmp_path: Path, pool: Any, oci_resources: Resources
) -> None:
    if language == "go" and shutil.which("go") is None:
        # No Go toolchain on this machine: the files were checked by test_template_files.
        assert (TEMPLATES_DIR / "go" / "main.go").is_file()
        return
    result = CliRunner().invoke(cli, ["new", language, f"acme/wc-{language}", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    definition = FunctionDefinition.model_validate(
        yaml.safe_load((tmp_path / f"wc-{language}" / "function.local.yaml").read_text())
    )
    record, action = await FunctionRepository(pool).register(definition, created_by="test")
    assert action == "created"
    assert record.execution_type == "oci"
    assert record.max_concurrency == 8

    resolver = RegistryResolver(pool, ttl=60)
    spec = await resolver.resolve(f"acme/wc-{language}")
    assert spec is not None
    assert spec.execution_type == "oci"
    output = await spec.handler({"text": TEXT, "top": 2}, make_ctx(f"wc-{language}", resources=oci_resources))
    assert output == EXPECTED

    with pytest.raises(ExecutionFailed) as caught:
        await spec.handler(
            {"text": 5, "extra": True}, make_ctx(f"wc-{language}-bad", resources=oci_resources)
        )
    assert caught.value.code == "function_failed"
    assert "invalid input" in caught.value.message
    assert caught.value.details["exit_code"] == 2


def test_settings_default_to_the_local_backend() -> None:
    assert Settings().oci_backend == "local"


async def test_end_to_end_a_request_to_an_oci_registry_worker_runs_the_scaffolded_function(
    tmp_path: Path, registry_settings: Any, redis: Any, pool: Any
) -> None:
    """fleet new → fleet functions register → publish on the oci topic → registry worker →
    the worker's oci executor → local backend → result on the results topic (`fleet up` with an
    oci function)."""
    import asyncio

    from shared.assemble import create_worker
    from tests.conftest import read_results, running
    from tests.registry.conftest import publish

    result = CliRunner().invoke(cli, ["new", "python", "acme/e2e-count", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    settings = registry_settings(oci_backend="local")
    # `fleet functions register` runs its own event loop: give it a thread.
    registered = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["functions", "register", str(tmp_path / "e2e-count" / "function.local.yaml")],
        env={"FLEET_DATABASE_URL": settings.database_url},
    )
    assert registered.exit_code == 0, registered.output
    assert registered.output.startswith("created acme/e2e-count (version 1")

    worker = create_worker("oci", settings)
    async with running(worker):
        ok = await publish(redis, settings, "acme/e2e-count", {"text": TEXT, "top": 2}, domain="oci")
        bad = await publish(redis, settings, "acme/e2e-count", {"text": 7}, domain="oci")
        results = await read_results(redis, settings.results_topic, 2, timeout=60)
    by_id = {r["data"]["execution_id"]: r["data"] for r in results}
    assert by_id[ok]["status"] == "completed"
    assert by_id[ok]["output"] == EXPECTED
    # The registry's JSON Schema check answers before the function runs.
    assert by_id[bad]["status"] == "failed"
    assert by_id[bad]["error"]["code"] == "invalid_input"
    # The worker's own executor ran them, with the worker's settings (its copy: it fills in the
    # domain's declared concurrency, so compare the values too).
    executor = worker.extension(OciExtension).executor
    assert worker.resources.get(Executors).get("oci") is executor
    assert executor.settings is worker.settings
    assert executor.settings.model_dump(exclude={"concurrency"}) == settings.model_dump(
        exclude={"concurrency"}
    )
    assert executor.closed  # stopped with its worker
