"""`fleet up` serves the console: on loopback, its address printed and in up.json, the secret
store's key kept in FLEET_HOME (so `fleet secrets set` works with nothing configured and the
console sees the value resolve), stopped with the fleet; `FLEET_UI=false` leaves it out."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.registry.test_cli import ROOT, _fleet_up, _stop, fleet_env, fleet_home  # noqa: F401  (fixture)


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, url
        return await response.json()


async def _secrets_set(env: dict[str, str], name: str, value: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.tools.cli.main", "secrets", "set", name, "--value-stdin",
        cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate(value.encode())
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.slow
async def test_fleet_up_serves_the_console_and_keeps_a_local_secrets_key(
    fleet_home: Path,  # noqa: F811
    redis_url: str,
    namespace: str,
) -> None:
    env = fleet_env(fleet_home, redis_url, namespace, FLEET_UI_PORT="0")
    value = f"sk-{uuid.uuid4().hex}"
    process, state = await _fleet_up(fleet_home, env)
    try:
        ui_url = state["ui_url"]
        assert ui_url.startswith("http://127.0.0.1:")
        key_file = fleet_home / "secrets.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        async with aiohttp.ClientSession() as session:
            listing = await _get_json(session, f"{ui_url}api/v1/functions")
            assert listing["source"] == "registry"
            assert "system/echo" in {f["slug"] for f in listing["functions"]}
            async with session.get(f"{ui_url}functions") as page:
                assert page.status == 200
                assert "system/echo" in await page.text()

            # The laptop path: no key configured anywhere, and the CLI finds database and key.
            code, out = await _secrets_set(env, "OPENAI_API_KEY", value)
            assert code == 0, out
            assert "secret OPENAI_API_KEY stored" in out
            assert value not in out
            detail = await _get_json(session, f"{ui_url}api/v1/functions/openai/generate-text")
            (credential,) = detail["credentials"]
            assert credential["name"] == "OPENAI_API_KEY"
            assert (credential["resolves"], credential["source"]) == (True, "database")
            assert value not in json.dumps(detail)
    finally:
        assert await _stop(process) == 0
    log = (fleet_home / "up.log").read_text()
    assert f"console: {ui_url}" in log
    assert f"secrets: key created in {key_file}" in log
    assert value not in log
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{ui_url}functions")

    process, state = await _fleet_up(fleet_home, {**env, "FLEET_UI": "false"})
    try:
        assert state["ui_url"] is None
    finally:
        assert await _stop(process) == 0
    log = (fleet_home / "up.log").read_text()
    assert f"secrets: key kept in {key_file}" in log
