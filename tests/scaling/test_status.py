"""`fleet status`: the snapshot read from Redis, its --json shape, the table and --watch."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from redis.asyncio import Redis

from shared.client import FleetClient
from shared.domains import DOMAINS
from shared.settings import Settings
from shared.tools.cli.main import cli
from shared.tools.cli.status import CLEAR
from shared.tools.scaling import events
from shared.tools.scaling.model import ScaleEvent
from shared.tools.scaling.snapshot import percentile

ROOT = Path(__file__).resolve().parents[2]

#: The documented --json shape (docs/scaling.md, "fleet status").
TOP_KEYS = {"fleet", "domains", "scale_events", "limits"}
FLEET_KEYS = {"at", "local", "window_s", "results_sampled", "results_truncated"}
DOMAIN_KEYS = {
    "name",
    "topic",
    "group",
    "group_exists",
    "lag",
    "pending",
    "stream_length",
    "dead_letters",
    "error",
    "processes",
    "executions_per_s",
    "p50_ms",
    "p99_ms",
    "last_scale_event",
    "consumers",
}
PROCESS_KEYS = {"current", "desired", "min", "max"}
CONSUMER_KEYS = {"name", "in_flight", "idle_ms", "live"}
EVENT_KEYS = {"at", "domain", "current", "desired", "reason", "lag", "pending"}


def _env(settings: Settings) -> dict[str, str]:
    return {
        "FLEET_REDIS_URL": settings.redis_url or "",
        "FLEET_HOME": str(settings.home),
        "FLEET_TOPIC_PREFIX": settings.topic_prefix,
        "FLEET_RESULTS_TOPIC": settings.results_topic,
        "FLEET_GROUP_PREFIX": settings.group_prefix,
        "FLEET_PROCESSING_TIMEOUT": str(settings.processing_timeout),
    }


async def _status(settings: Settings, *args: str) -> Result:
    # The command runs its own event loop: off this test's loop, which keeps the worker going.
    return await asyncio.to_thread(CliRunner().invoke, cli, ["status", *args], env=_env(settings))


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in doc["domains"]}


async def test_json_document_of_a_running_worker(
    redis: Redis, settings: Settings, run_worker: Callable[..., Any]
) -> None:
    event = ScaleEvent(at=time.time(), domain="ai", current=0, desired=1, reason="activate", lag=3, pending=0)
    await events.append(redis, settings, event)
    await redis.xadd(settings.dlq_for(settings.topic_for("ai")), {"data": b"{}"})
    async with run_worker("ai"):
        async with FleetClient(settings=settings) as client:
            for n in range(5):
                result = await client.invoke("system/echo", {"n": n}, domain="ai", timeout=10)
                assert result.status == "completed"
        result = await _status(settings, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)

    assert set(doc) == TOP_KEYS
    assert set(doc["fleet"]) == FLEET_KEYS
    assert doc["fleet"]["local"] is False
    assert doc["fleet"]["results_sampled"] == 5
    assert [d["name"] for d in doc["domains"]] == [d.name for d in DOMAINS]
    for d in doc["domains"]:
        assert set(d) == DOMAIN_KEYS
        assert set(d["processes"]) == PROCESS_KEYS
    ai = _by_name(doc)["ai"]
    assert ai["group_exists"] is True
    assert ai["error"] is None
    assert (ai["lag"], ai["pending"], ai["dead_letters"]) == (0, 0, 1)
    assert ai["executions_per_s"] > 0
    assert ai["p50_ms"] is not None
    assert ai["p99_ms"] >= ai["p50_ms"]
    assert [set(c) for c in ai["consumers"]] == [CONSUMER_KEYS]
    assert ai["consumers"][0]["name"] == settings.consumer_name
    assert ai["consumers"][0]["live"] is True
    assert ai["processes"] == {"current": 1, "desired": 1, "min": 0, "max": 20}
    assert ai["last_scale_event"] == {
        "at": event.at,
        "domain": "ai",
        "current": 0,
        "desired": 1,
        "reason": "activate",
        "lag": 3,
        "pending": 0,
    }
    assert [set(e) for e in doc["scale_events"]] == [EVENT_KEYS]
    assert doc["limits"] == {"running": {}}
    comms = _by_name(doc)["comms"]
    assert comms["executions_per_s"] == 0
    assert comms["p50_ms"] is None
    assert comms["consumers"] == []
    assert comms["group_exists"] is False
    assert comms["processes"]["current"] == 0
    assert comms["last_scale_event"] is None
    assert comms["processes"]["desired"] is None


async def test_table_shows_every_domain_the_process_and_the_last_events(
    redis: Redis, settings: Settings, run_worker: Callable[..., Any]
) -> None:
    await events.append(
        redis,
        settings,
        ScaleEvent(at=time.time(), domain="ai", current=2, desired=1, reason="scale-down", lag=0),
    )
    await redis.xadd(settings.topic_for("comms"), {"data": b"{}"})
    async with run_worker("ai"):
        # Redis < 7.2 makes a consumer only when XREADGROUP delivers it something.
        async with FleetClient(settings=settings) as client:
            await client.invoke("system/echo", {}, domain="ai", timeout=10)
        result = await _status(settings)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for domain in DOMAINS:
        assert any(line.startswith(domain.name + " ") for line in lines), domain.name
    assert any(line.startswith(settings.consumer_name) and " ai " in line for line in lines)
    assert "2→1 scale-down (lag 0)" in result.output
    comms = next(line for line in lines if line.startswith("comms "))
    assert comms.split()[1] == "1*"  # no group yet: XLEN stands in, marked
    assert "XLEN" in result.output


async def test_a_consumer_idle_for_two_processing_timeouts_is_not_a_live_process(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(processing_timeout=0.1)
    topic, group = settings.topic_for("http"), settings.group_for("http")
    await redis.xadd(topic, {"data": b"{}"})
    await redis.xadd(topic, {"data": b"{}"})
    await redis.xgroup_create(topic, group, id="0")
    done = await redis.xreadgroup(group, "gone-worker", {topic: ">"}, count=1)
    await redis.xack(topic, group, done[0][1][0][0])
    await asyncio.sleep(0.3)
    await redis.xreadgroup(group, "busy-worker", {topic: ">"}, count=1)  # in flight: live
    await asyncio.sleep(0.3)
    result = await _status(settings, "--json")
    http = _by_name(json.loads(result.output))["http"]
    assert {c["name"]: (c["in_flight"], c["live"]) for c in http["consumers"]} == {
        "gone-worker": (0, False),
        "busy-worker": (1, True),
    }
    assert http["processes"]["current"] == 1
    assert http["pending"] == 1


async def test_local_fleet_is_recognised_by_its_state_file(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "up.json").write_text(json.dumps({"pid": os.getpid(), "redis_url": settings.redis_url}))
    result = await _status(settings, "--json")
    doc = json.loads(result.output)
    assert doc["fleet"]["local"] is True
    assert "fleet up on this machine" in (await _status(settings)).output


async def test_unreachable_broker_fails_with_a_message(settings: Settings) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["status", "--redis-url", "redis://127.0.0.1:1"], env=_env(settings)
    )
    assert result.exit_code == 1
    assert "fleet status" in result.output
    assert "Traceback" not in result.output


def test_watch_redraws_in_place_and_ctrl_c_exits_zero(settings: Settings) -> None:
    env = {**os.environ, **_env(settings), "FLEET_STATUS_INTERVAL": "0.2"}
    # A terminal on stdout: click drops ANSI sequences when writing to a pipe.
    terminal, screen = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.tools.cli.main", "status", "--watch"],
        cwd=ROOT,
        env=env,
        stdout=screen,
        stderr=subprocess.PIPE,
    )
    os.close(screen)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while seen.count(CLEAR.encode()) < 2 and time.monotonic() < deadline:
            if select.select([terminal], [], [], 1)[0]:
                seen += os.read(terminal, 65536)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        os.close(terminal)
    assert proc.returncode == 0, err.decode()
    assert seen.count(CLEAR.encode()) >= 2
    assert b"DOMAIN" in seen
    assert b"Traceback" not in err


def test_percentile_is_nearest_rank_over_timed_results() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99)) == (50.0, 99.0)
    assert percentile([7.0, float("nan")], 99) == 7.0
    assert percentile([], 50) is None


async def test_concurrency_limits_in_use_are_shown_by_function(redis: Redis, settings: Settings) -> None:
    from shared.limiter.store import LimitStore

    store = LimitStore(redis, settings.group_prefix)
    one = store.running_key("github/create-issue")
    keyed = store.running_key("slack/send-message", "#ops")
    for token, key in (("a", one), ("b", one), ("c", keyed)):
        assert (await store.admit(token, running=(key, 5), rates=[], lease=60)).admitted
    # An expired lease (a dead holder) is not counted.
    assert (
        await store.admit("d", running=(store.running_key("testing/dead"), 5), rates=[], lease=0.05)
    ).admitted
    await asyncio.sleep(0.2)
    result = await _status(settings, "--json")
    assert result.exit_code == 0, result.output
    running = json.loads(result.output)["limits"]["running"]
    assert running == {"github/create-issue": 2, "slack/send-message": 1}
    await store.release(one, "a")
    screen = await _status(settings)
    assert "CONCURRENCY LIMITS IN USE" in screen.output
    assert [line.split() for line in screen.output.splitlines() if "create-issue" in line] == [
        ["github/create-issue", "1"]
    ]
