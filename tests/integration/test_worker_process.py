"""Worker processes as production runs them (`fleet worker`): killed with SIGKILL mid-batch,
stopped with SIGTERM while work is in flight, and the CLI's `fleet up` / `fleet invoke`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.client import FleetClient
from shared.settings import Settings
from tests.conftest import read_results

pytestmark = pytest.mark.slow


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a `fleet worker` subprocess use this test's names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(
        {
            "FLEET_REDIS_URL": settings.redis_url or "",
            "FLEET_HOME": str(settings.home),
            "FLEET_TOPIC_PREFIX": settings.topic_prefix,
            "FLEET_RESULTS_TOPIC": settings.results_topic,
            "FLEET_GROUP_PREFIX": settings.group_prefix,
            "FLEET_CONSUMER_NAME": settings.consumer_name,
            "FLEET_BLOCK_MS": str(settings.block_ms),
            "FLEET_PROCESSING_TIMEOUT": str(settings.processing_timeout),
            "FLEET_REDELIVER_INTERVAL": str(settings.redeliver_interval),
            "FLEET_SHUTDOWN_TIMEOUT": str(settings.shutdown_timeout),
            "FLEET_CONCURRENCY": str(settings.concurrency),
            "FLEET_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


@asynccontextmanager
async def worker_process(settings: Settings, domain: str = "ai") -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.tools.cli.main", "worker", domain,
        env=worker_env(settings), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def pending_for(redis: Redis, settings: Settings, consumer: str) -> int:
    try:
        consumers = await redis.xinfo_consumers(settings.topic_for("ai"), settings.group_for("ai"))
    except ResponseError:  # the worker has not created its group yet
        return 0
    return sum(c["pending"] for c in consumers if c["name"] in (consumer, consumer.encode()))


async def test_kill_9_mid_batch_then_restart_answers_every_request(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(consumer_name="victim", concurrency=20, processing_timeout=30.0)
    async with FleetClient(settings=settings) as client:
        ids = [await client.publish("system/sleep", {"seconds": 1.5}) for _ in range(20)]

    async with worker_process(settings) as victim:
        await wait_for(lambda: _eq(pending_for(redis, settings, "victim"), 20))
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
    assert await redis.xlen(settings.results_topic) == 0  # died before answering anything

    # Same consumer name (a restarted pod): it takes its pending entries back at once,
    # without waiting for the 30 s processing timeout.
    async with worker_process(settings):
        results = await read_results(redis, settings.results_topic, 20, timeout=30)

    assert sorted(r["executionid"] for r in results) == sorted(ids)
    assert all(r["data"]["status"] == "completed" for r in results)
    assert {r["data"]["attempt"] for r in results} == {2}
    assert (await redis.xpending(settings.topic_for("ai"), settings.group_for("ai")))["pending"] == 0


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_sigterm_drains_in_flight_work_and_leaves_the_rest_pending(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(consumer_name="draining", concurrency=20, shutdown_timeout=2.0)
    async with FleetClient(settings=settings) as client:
        short = [await client.publish("system/sleep", {"seconds": 0.5}) for _ in range(10)]
        long = [await client.publish("system/sleep", {"seconds": 6}) for _ in range(10)]

    async with worker_process(settings) as proc:
        await wait_for(lambda: _eq(pending_for(redis, settings, "draining"), 20))
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 15)
        assert proc.stderr is not None
        log_lines = (await proc.stderr.read()).decode().splitlines()

    assert code == 0
    results = await read_results(redis, settings.results_topic, 10, timeout=1)
    assert sorted(r["executionid"] for r in results) == sorted(short)  # answered within the drain
    # The long ones were neither answered nor acked: still pending, nothing lost.
    assert await pending_for(redis, settings, "draining") == 10
    assert any('"drain deadline passed' in line for line in log_lines)

    # Another worker reclaims them once idle past the processing timeout and answers them.
    rescue = settings.model_copy(update={"consumer_name": "rescuer", "processing_timeout": 0.5})
    async with worker_process(rescue):
        results = await read_results(redis, settings.results_topic, 20, timeout=60)
    assert sorted(r["executionid"] for r in results) == sorted(short + long)


async def test_cli_up_and_invoke_exit_codes(tmp_path: Path) -> None:
    """`fleet up` with nothing configured (embedded broker), then `fleet invoke` with no flags
    finds it; exit codes 0 / 1 / 2; SIGTERM stops everything with exit 0."""
    home = tmp_path / "fleet-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update({"FLEET_HOME": str(home), "FLEET_SHUTDOWN_TIMEOUT": "3", "FLEET_LOG_FORMAT": "json"})
    fleet = [sys.executable, "-m", "shared.tools.cli.main"]
    up = await asyncio.create_subprocess_exec(*fleet, "up", env=env, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_for(lambda: _exists(home / "up.json"), timeout=30)

        async def invoke(*args: str) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                *fleet, "invoke", *args, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out.decode(), err.decode()

        code, out, _ = await invoke("system/echo", "--input", '{"hello": "world"}', "--timeout", "20")
        assert (code, json.loads(out)) == (0, {"hello": "world"})
        code, out, _ = await invoke("system/fail", "--input", '{"message": "nope"}', "--json")
        assert code == 1
        assert json.loads(out)["error"]["code"] == "function_failed"
        code, _, err = await invoke("system/echo", "--input", "not json")
        assert code == 2
        assert "not JSON" in err
        code, _, err = await invoke("nobody/knows", "--domain", "comms", "--timeout", "20")
        assert code == 1
        assert "unknown_function" in err
    finally:
        up.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(up.wait(), 30)
    assert code == 0
    assert not (home / "up.json").exists()
    assert (home / "valkey").is_dir()  # embedded broker data kept between runs


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_burst_mode_answers_everything_then_exits_by_itself(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(consumer_name="burst")
    async with FleetClient(settings=settings) as client:
        ids = [await client.publish("system/echo", {"n": n}) for n in range(50)]
    env = worker_env(settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.tools.cli.main", "worker", "ai", "--burst", env=env
    )
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    results = await read_results(redis, settings.results_topic, 50, timeout=1)
    assert sorted(r["executionid"] for r in results) == sorted(ids)
    assert (await redis.xpending(settings.topic_for("ai"), settings.group_for("ai")))["pending"] == 0


async def test_ctrl_c_drains_workers_before_the_embedded_broker_stops(tmp_path: Path) -> None:
    """Ctrl-C reaches the terminal's whole process group. `fleet up` orders the stop anyway:
    workers drain while the embedded broker still runs, so a clean stop logs no warning."""
    home = tmp_path / "fleet-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update({"FLEET_HOME": str(home), "FLEET_SHUTDOWN_TIMEOUT": "3", "FLEET_LOG_FORMAT": "json"})
    # Its own process group, like a job in a terminal, so the whole group can get the SIGINT.
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.tools.cli.main", "up", "--domain", "ai",
        env=env, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        await wait_for(lambda: _exists(home / "up.json"), timeout=60)
        state = json.loads((home / "up.json").read_text())
        async with FleetClient(redis_url=state["redis_url"]) as client:
            result = await client.invoke("system/echo", {"before": "ctrl-c"}, timeout=20)
            assert result.status == "completed"
    finally:
        os.killpg(up.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, err = await asyncio.wait_for(up.communicate(), 60)
    assert up.returncode == 0
    lines = err.decode().splitlines()
    warnings = [line for line in lines if '"level": "warning"' in line or '"level": "error"' in line]
    assert warnings == []
    assert any('"worker stopped"' in line for line in lines)
    assert "fleet stopped" in lines[-1]
