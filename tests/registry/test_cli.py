"""`fleet db`, `fleet functions`, `fleet executions` (tables for people, JSON for scripts), and
`fleet up` with its embedded PostgreSQL kept between runs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shared.tools.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str, database_url: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(cli, list(args), env={"FLEET_DATABASE_URL": database_url}, input=input)
    return result


def test_sync_json_is_clean_on_a_fresh_database(database_url: str) -> None:
    result = fleet("functions", "sync", "--domain", "ai", "--json", database_url=database_url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # migrations applied on the way, not printed to stdout
    assert "system/echo" in report["inserted"]


def test_db_migrate_and_status(database_url: str) -> None:
    result = fleet("db", "migrate", database_url=database_url)
    assert result.exit_code == 0, result.output
    assert "applied 0001_registry" in result.output
    assert "applied 0002_function_resources" in result.output
    assert "applied 0003_hot_history_updates" in result.output
    assert "applied 0004_function_limits" in result.output
    assert "applied 0005_console" in result.output
    assert "applied 0006_secrets" in result.output
    assert fleet("db", "migrate", database_url=database_url).output.strip().endswith("up to date")
    status = json.loads(fleet("db", "status", "--json", database_url=database_url).output)
    assert [s["version"] for s in status] == [1, 2, 3, 4, 5, 6]
    assert all(s["applied_at"] is not None for s in status)


def test_functions_commands(migrated_url: str, tmp_path: Path) -> None:
    result = fleet("functions", "sync", "--domain", "ai", database_url=migrated_url)
    assert result.exit_code == 0, result.output
    listed = json.loads(
        fleet("functions", "list", "--domain", "ai", "--json", database_url=migrated_url).output
    )
    slugs = [f["slug"] for f in listed]
    assert "system/echo" in slugs
    assert slugs == sorted(slugs)
    assert all(f["domain"] in ("ai", None) for f in listed)
    table = fleet("functions", "list", database_url=migrated_url).output.splitlines()
    assert table[0].split() == ["SLUG", "TYPE", "DOMAIN", "VERSION", "ENABLED", "DEPRECATED", "DESCRIPTION"]

    definition = tmp_path / "hook.yaml"
    definition.write_text(
        "slug: acme/notify\ndomain: http\nexecution_type: http\nwebhook_url: https://hooks.example/n\n"
        "webhook_method: POST\ncredentials: [ACME_TOKEN]\n"
        "input_schema: {type: object, required: [text], properties: {text: {type: string}}}\n"
    )
    result = fleet("functions", "register", str(definition), "--json", database_url=migrated_url)
    assert result.exit_code == 0, result.output
    registered = json.loads(result.output)
    assert registered["action"] == "created"
    assert registered["function"]["execution_type"] == "http"
    assert registered["function"]["credentials"] == ["ACME_TOKEN"]

    shown = json.loads(fleet("functions", "show", "acme/notify", "--json", database_url=migrated_url).output)
    assert shown["webhook_url"] == "https://hooks.example/n"
    assert shown["input_schema"]["required"] == ["text"]
    by_id = json.loads(fleet("functions", "show", shown["id"], "--json", database_url=migrated_url).output)
    assert by_id["slug"] == "acme/notify"
    assert "webhook_url" in fleet("functions", "show", "acme/notify", database_url=migrated_url).output

    assert "disabled" in fleet("functions", "disable", "acme/notify", database_url=migrated_url).output
    shown = json.loads(fleet("functions", "show", "acme/notify", "--json", database_url=migrated_url).output)
    assert shown["is_enabled"] is False
    assert "enabled" in fleet("functions", "enable", "acme/notify", database_url=migrated_url).output
    assert fleet("functions", "deprecate", "acme/notify", database_url=migrated_url).exit_code == 0
    shown = json.loads(fleet("functions", "show", "acme/notify", "--json", database_url=migrated_url).output)
    assert shown["is_enabled"] is True
    assert shown["is_deprecated"] is True

    missing = fleet("functions", "show", "nobody/nothing", database_url=migrated_url)
    assert missing.exit_code == 1
    assert "no function" in missing.output


def test_register_rejects_invalid_definitions(migrated_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"slug": "acme/x", "domain": "oci", "execution_type": "oci", "input_schema": {"type": 5}})
    )
    result = fleet("functions", "register", str(bad), database_url=migrated_url)
    assert result.exit_code == 2
    assert "input_schema" in result.output
    assert "not a valid JSON Schema" in result.output
    listed = json.loads(fleet("functions", "list", "--json", database_url=migrated_url).output)
    assert listed == []


async def test_executions_commands(migrated_url: str, pool: Any) -> None:
    await pool.execute(
        """INSERT INTO function_executions (id, function_slug, status, attempt, started_at, completed_at,
               duration_ms, input, output, error, result, created_at) VALUES
           ('e-1', 'system/echo', 'completed', 1, now(), now(), 1.5, '{"a": 1}', '{"a": 1}', NULL,
            '{"status": "completed"}', now() - interval '2 seconds'),
           ('e-2', 'system/fail', 'failed', 2, now(), now(), 2.5, '{}', NULL,
            '{"code": "function_failed", "message": "no"}', '{"status": "failed"}',
            now() - interval '1 second'),
           ('e-old', 'system/echo', 'completed', 1, now(), now(), 1, '{}', '{}', NULL, '{}',
            now() - interval '90 days')"""
    )

    def run(*args: str) -> Any:
        return fleet(*args, database_url=migrated_url)

    rows = await asyncio.to_thread(lambda: json.loads(run("executions", "list", "--json").output))
    assert [r["id"] for r in rows] == ["e-2", "e-1", "e-old"]
    rows = await asyncio.to_thread(
        lambda: json.loads(run("executions", "list", "--status", "failed", "--json").output)
    )
    assert [(r["id"], r["error_code"]) for r in rows] == [("e-2", "function_failed")]
    rows = await asyncio.to_thread(
        lambda: json.loads(run("executions", "list", "--function", "system/echo", "--json").output)
    )
    assert [r["id"] for r in rows] == ["e-1", "e-old"]
    shown = await asyncio.to_thread(lambda: json.loads(run("executions", "show", "e-1", "--json").output))
    assert shown["input"] == {"a": 1}
    assert shown["output"] == {"a": 1}
    assert shown["duration_ms"] == 1.5
    table = await asyncio.to_thread(lambda: run("executions", "list").output)
    assert table.splitlines()[0].split() == ["ID", "FUNCTION", "STATUS", "ERROR", "ATTEMPT", "STARTED", "MS"]
    pruned = await asyncio.to_thread(lambda: run("executions", "prune", "--older-than-days", "30").output)
    assert "deleted 1 executions" in pruned
    missing = await asyncio.to_thread(lambda: run("executions", "show", "e-old"))
    assert missing.exit_code == 1


def test_commands_explain_an_unreachable_or_unmigrated_database(database_url: str) -> None:
    result = fleet("functions", "list", database_url="postgresql://postgres@127.0.0.1:1/postgres")
    assert result.exit_code == 1
    assert "database unreachable" in result.output
    result = fleet("executions", "list", database_url=database_url)
    assert result.exit_code == 1
    assert "fleet db migrate" in result.output


@pytest.fixture
def fleet_home() -> Iterator[Path]:
    # Not under pytest's basetemp (concurrent sessions prune it under a live server).
    home = Path(tempfile.mkdtemp(prefix="fleet-up-test-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def fleet_env(home: Path, redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """The environment of a `fleet up` under test: this test's names on the given broker, its
    own FLEET_HOME, the embedded database (no FLEET_DATABASE_URL or secrets of the caller's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_DATABASE_URL", "FLEET_SECRET"))}
    env.update(
        {
            "FLEET_HOME": str(home),
            "FLEET_REDIS_URL": redis_url,
            "FLEET_TOPIC_PREFIX": f"{namespace}functions.",
            "FLEET_RESULTS_TOPIC": f"{namespace}functions.results",
            "FLEET_GROUP_PREFIX": f"{namespace}fleet-",
            **extra,
        }
    )
    return env


async def _fleet_up(
    home: Path, env: dict[str, str], domains: tuple[str, ...] = ("ai",)
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    # Its output (and its workers') is kept for the assertion messages of a failing run.
    with (home / "up.log").open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.tools.cli.main",
            "up",
            *(arg for domain in domains for arg in ("--domain", domain)),
            cwd=ROOT,
            env=env,
            stderr=log_file,
        )
    for _ in range(1200):
        state_file = home / "up.json"
        if state_file.exists():
            state: dict[str, Any] = json.loads(state_file.read_text())
            if state.get("pid") == process.pid:
                return process, state
        if process.returncode is not None:
            break
        await asyncio.sleep(0.05)
    process.kill()
    await process.wait()
    raise AssertionError("fleet up did not start")


async def _stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.wait(), 60)


async def _cli(env: dict[str, str], *args: str) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.tools.cli.main",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    home = Path(env["FLEET_HOME"])
    log = (home / "up.log").read_text()[-4000:] if (home / "up.log").exists() else ""
    assert process.returncode == 0, f"{out.decode()}\n--- fleet up log ---\n{log}"
    return json.loads(out)


async def test_fleet_up_runs_an_embedded_database_kept_between_runs(
    fleet_home: Path, redis_url: str, namespace: str
) -> None:
    env = fleet_env(fleet_home, redis_url, namespace, FLEET_LOG_LEVEL="info")
    process, state = await _fleet_up(fleet_home, env)
    try:
        assert state["database_url"].startswith("postgresql://")
        # The commands find the database through the state file.
        functions = await _cli(env, "functions", "list", "--json")
        assert "system/echo" in {f["slug"] for f in functions}
        invoked = await _cli(env, "invoke", "system/echo", "--input", '{"kept": true}', "--json")
        execution_id = invoked.get("execution_id") or invoked["data"]["execution_id"]
        for _ in range(100):
            executions = await _cli(env, "executions", "list", "--json")
            if executions and executions[0]["status"] == "completed":
                break
            await asyncio.sleep(0.1)
        assert [e["id"] for e in executions] == [execution_id]
    finally:
        assert await _stop(process) == 0
    assert (fleet_home / "postgres" / "PG_VERSION").exists()

    process, _ = await _fleet_up(fleet_home, env)
    try:
        executions = await _cli(env, "executions", "show", execution_id, "--json")
        assert executions["status"] == "completed"
        assert executions["output"] == {"kept": True}
    finally:
        assert await _stop(process) == 0
