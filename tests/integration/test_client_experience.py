"""The client as an orchestrator's developer meets it: `FleetClient()` finds a running `fleet up`
like the CLI does (and says where it looked when it finds none), the README's Python snippet
runs as printed, and `fleet invoke` shows a retried request's progress and has its own exit code
for a timeout."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.client import FleetClient
from shared.errors import ConfigError
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _fleet_env(settings: Settings, home: Path) -> dict[str, str]:
    """An environment with no broker URL, this test's names, and FLEET_HOME holding a state file
    that says a `fleet up` (this process) runs the test's broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(
        {
            "FLEET_HOME": str(home),
            "FLEET_TOPIC_PREFIX": settings.topic_prefix,
            "FLEET_RESULTS_TOPIC": settings.results_topic,
            "FLEET_GROUP_PREFIX": settings.group_prefix,
            "FLEET_MAX_DELIVERIES": str(settings.max_deliveries),
        }
    )
    home.mkdir(parents=True, exist_ok=True)
    state = {"pid": os.getpid(), "redis_url": settings.redis_url}
    (home / "up.json").write_text(json.dumps(state))
    return env


def test_a_client_without_a_url_says_where_it_looked(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "nowhere", redis_url=None)
    with pytest.raises(ConfigError) as caught:
        FleetClient(settings=settings)
    assert str(tmp_path / "nowhere" / "up.json") in str(caught.value)
    assert "fleet up" in str(caught.value)


async def test_a_client_without_a_url_uses_the_running_fleet_up(
    settings: Settings, tmp_path: Path, run_worker: Callable[..., Any]
) -> None:
    home = tmp_path / "home-up"
    _fleet_env(settings, home)
    bare = settings.model_copy(update={"redis_url": None, "home": home})
    async with run_worker("ai"), FleetClient(settings=bare) as client:
        assert client.settings.redis_url == settings.redis_url
        result = await client.invoke("system/echo", {"found": True}, timeout=10)
    assert result.output == {"found": True}


async def test_the_readme_python_snippet_runs_as_printed(
    settings: Settings, tmp_path: Path, run_worker: Callable[..., Any]
) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, "the README has one Python snippet"
    env = _fleet_env(settings, tmp_path / "home-readme")
    async with run_worker("ai"):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", blocks[0], cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "completed {'hello': 'world'}"
    assert lines[1].startswith("published ")


async def _fleet(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.tools.cli.main", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_invoke_shows_the_retries_of_a_request_then_its_dead_letter(
    make_settings: Callable[..., Settings], tmp_path: Path, run_worker: Callable[..., Any]
) -> None:
    settings = make_settings(max_deliveries=3, processing_timeout=1.0, redeliver_interval=0.2)
    env = _fleet_env(settings, tmp_path / "home-retry")
    async with run_worker("ai", settings):
        code, out, err = await _fleet(
            env, "invoke", "system/fail", "--input", '{"message": "flaky upstream", "redeliver": true}',
            "--timeout", "30", "--json",
        )  # fmt: skip
    assert code == 1
    assert json.loads(out)["error"]["code"] == "max_deliveries_exceeded"
    assert re.search(r"retrying \(attempt \d of 3\): flaky upstream", err), err


async def test_invoke_times_out_with_its_own_exit_code_and_says_the_request_is_queued(
    settings: Settings, tmp_path: Path
) -> None:
    env = _fleet_env(settings, tmp_path / "home-timeout")
    # No worker runs: the request stays queued.
    code, out, err = await _fleet(env, "invoke", "system/echo", "--timeout", "2", "--domain", "comms")
    assert code == 3
    assert "queued" in err
    assert "timeout:" in err
    assert out == ""
