"""Record → replay → diff against live workers: identical results pass, a changed function
fails the diff and shows the change; --same-ids republishes the recorded events unchanged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.client import FleetClient
from shared.settings import Settings
from shared.tools.replay.capture import record_topics
from tests.conftest import running
from tests.replay.conftest import CliCall, read_jsonl
from tests.replay.functions import COUNT, GREET, Counter, greeting_table

NAMES = ["ada", "grace", "", "linus"]  # "" fails with code empty_name


@contextlib.asynccontextmanager
async def recording(redis: Redis, settings: Settings, path: Path, count: int) -> AsyncIterator[None]:
    """Record the ai topic and the results topic into ``path`` until ``count`` entries."""
    ready = asyncio.Event()
    with path.open("wb") as out:
        task = asyncio.create_task(
            record_topics(
                redis,
                [settings.topic_for("ai"), settings.results_topic],
                out,
                stop=asyncio.Event(),
                count=count,
                on_ready=lambda _: ready.set(),
            )
        )
        await asyncio.wait_for(ready.wait(), 10)
        yield
        assert await asyncio.wait_for(task, 30) == count


async def publish_all(settings: Settings, slug: str, inputs: list[dict[str, Any]]) -> list[str]:
    async with FleetClient(settings=settings) as client:
        return [await client.publish(slug, data, domain="ai") for data in inputs]


async def test_round_trip_identical_then_changed_function(
    settings: Settings, redis: Redis, run_worker: Callable[..., Any], fleet: CliCall, tmp_path: Path
) -> None:
    before = tmp_path / "before.jsonl"
    async with run_worker("ai", resolver=greeting_table("hello")):
        async with recording(redis, settings, before, count=2 * len(NAMES)):
            ids = await publish_all(settings, GREET, [{"name": n} for n in NAMES])
        recorded = read_jsonl(before)
        assert sorted(r["stream"] for r in recorded) == sorted(
            [settings.topic_for("ai")] * 4 + [settings.results_topic] * 4
        )

        same = tmp_path / "same.jsonl"
        replay = await fleet(
            "topic", "replay", str(before), "--timing", "original", "--results", str(same), "--timeout", "30"
        )
        assert replay.exit_code == 0, replay.output
        results = read_jsonl(same)
        assert sorted(r["replay"]["original_id"] for r in results) == sorted(ids)
        assert all(r["replay"]["execution_id"] not in ids for r in results)  # --new-ids is the default
        assert all(r["event"]["executionid"] == r["replay"]["execution_id"] for r in results)

        diff = await fleet("topic", "diff", str(before), str(same))
        assert diff.exit_code == 0, diff.output
        assert "4 requests compared: 4 identical" in diff.output

    # The release under test: the same slug now says "hi".
    changed = tmp_path / "changed.jsonl"
    async with run_worker("ai", resolver=greeting_table("hi")):
        replay = await fleet("topic", "replay", str(before), "--results", str(changed), "--timeout", "30")
        assert replay.exit_code == 0, replay.output
    diff = await fleet("topic", "diff", str(before), str(changed))
    assert diff.exit_code == 1, diff.output
    assert 'output.greeting: "hello ada" -> "hi ada"' in diff.output
    assert 'output.greeting: "hello linus" -> "hi linus"' in diff.output
    assert "4 requests compared: 1 identical, 3 changed" in diff.output  # the failure is unchanged
    # Two replay files compare too (both keyed by the original ids).
    assert (await fleet("topic", "diff", str(same), str(changed))).exit_code == 1


async def test_same_ids_against_the_registry_runs_nothing_twice(
    registry_settings: Callable[..., Settings], redis: Redis, fleet: CliCall, tmp_path: Path
) -> None:
    settings = registry_settings()
    counter = Counter()
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    async with running(create_worker("ai", settings, table=counter.table)):
        async with recording(redis, settings, before, count=6):
            ids = await publish_all(settings, COUNT, [{"n": n} for n in range(3)])
        replay = await fleet(
            "topic",
            "replay",
            str(before),
            "--same-ids",
            "--results",
            str(after),
            "--timeout",
            "30",
            settings_=settings,
        )
        assert replay.exit_code == 0, replay.output
    # The execution history answered every duplicate from the store: each function ran once.
    assert sorted(counter.runs) == sorted(ids)
    results = read_jsonl(after)
    assert sorted(r["replay"]["execution_id"] for r in results) == sorted(ids)
    recorded = {
        r["event"]["executionid"]: r["event"]["data"]
        for r in read_jsonl(before)
        if "executionid" in r["event"]
    }
    # ... and verbatim: the stored result is the first one, timing fields and all.
    assert {r["replay"]["original_id"]: r["event"]["data"] for r in results} == recorded
    assert (await fleet("topic", "diff", str(before), str(after))).exit_code == 0


async def test_same_ids_without_history_republishes_the_recorded_events_unchanged(
    settings: Settings, redis: Redis, run_worker: Callable[..., Any], fleet: CliCall, tmp_path: Path
) -> None:
    counter = Counter()
    before = tmp_path / "before.jsonl"
    topic = settings.topic_for("ai")
    async with run_worker("ai", resolver=counter.table):
        async with recording(redis, settings, before, count=6):
            ids = await publish_all(settings, COUNT, [{"n": n} for n in range(3)])
        start = bytes((await redis.xrevrange(topic, count=1))[0][0]).decode()

        after = tmp_path / "after.jsonl"
        replay = await fleet(
            "topic", "replay", str(before), "--same-ids", "--results", str(after), "--timeout", "30"
        )
        assert replay.exit_code == 0, replay.output

    republished = [orjson.loads(f[b"data"]) for _, f in await redis.xrange(topic, min="(" + start)]
    recorded = [r["event"] for r in read_jsonl(before) if r["stream"] == topic]
    assert republished == recorded
    results = read_jsonl(after)
    assert sorted(r["replay"]["original_id"] for r in results) == sorted(ids)
    assert all(r["replay"]["execution_id"] == r["replay"]["original_id"] for r in results)
    # This worker has no execution history wired in, so a duplicate is not answered from a
    # store: each request simply ran again (what `--same-ids --help` says).
    assert sorted(counter.runs) == sorted(ids * 2)
    assert (await fleet("topic", "diff", str(before), str(after))).exit_code == 0


async def test_replay_to_another_topic_at_a_rate_and_timeout_without_worker(
    settings: Settings, redis: Redis, fleet: CliCall, tmp_path: Path
) -> None:
    # No worker: every request times out, is reported as such, and replay exits 1.
    recorded = tmp_path / "rec.jsonl"
    async with recording(redis, settings, recorded, count=2):
        await publish_all(settings, GREET, [{"name": "a"}, {"name": "b"}])
    target = settings.topic_for("comms")
    out = tmp_path / "out.jsonl"
    replay = await fleet(
        "topic",
        "replay",
        str(recorded),
        "--to",
        "comms",
        "--rate",
        "50",
        "--results",
        str(out),
        "--timeout",
        "0.2",
    )
    assert replay.exit_code == 1
    assert "2 without a result" in replay.output
    assert [r["replay"]["outcome"] for r in read_jsonl(out)] == ["timeout", "timeout"]
    assert await redis.xlen(target) == 2
    both = await fleet("topic", "replay", str(recorded), "--rate", "5", "--timing", "original")
    assert both.exit_code == 2
