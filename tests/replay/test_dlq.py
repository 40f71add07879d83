"""Dead letters end to end: a poison request is dead-lettered after the configured deliveries
with a failed result; `dlq list/show` read it (and daprd-written entries alike); `dlq redrive`
moves it back atomically with a fresh delivery count, and a fixed function completes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.client import FleetClient
from shared.settings import Settings
from tests.conftest import read_results
from tests.replay.conftest import CliCall, read_jsonl
from tests.replay.functions import FLAKY, Flaky


async def test_poison_request_dead_letters_then_redrive_after_fix_completes(
    make_settings: Callable[..., Settings], redis: Redis, run_worker: Callable[..., Any], fleet: CliCall
) -> None:
    settings = make_settings(max_deliveries=2, processing_timeout=0.3)
    topic, dlq = settings.topic_for("ai"), settings.dlq_for(settings.topic_for("ai"))
    flaky = Flaky()
    async with run_worker("ai", worker_settings=settings, resolver=flaky.table):
        async with FleetClient(settings=settings) as client:
            execution_id = await client.publish(FLAKY, {"x": 1}, domain="ai")
        [failed] = await read_results(redis, settings.results_topic, 1, timeout=30)
        assert failed["executionid"] == execution_id
        assert failed["data"]["status"] == "failed"
        assert failed["data"]["error"]["code"] == "max_deliveries_exceeded"
        assert failed["data"]["error"]["details"]["deliveries"] == 2

        listed = await fleet("dlq", "list", "ai", "--json", settings_=settings)
        assert listed.exit_code == 0, listed.output
        [letter] = orjson.loads(listed.output)
        assert letter["execution_id"] == execution_id
        assert letter["function"] == FLAKY
        assert letter["deliveries"] == 2
        assert letter["topic"] == topic
        assert "flaky is broken" in letter["error"]
        assert letter["writer"] == "fleet"

        shown = await fleet("dlq", "show", letter["id"], settings_=settings)
        assert shown.exit_code == 0, shown.output
        assert f"execution id: {execution_id}" in shown.output
        assert '"function": "replaytest/flaky"' in shown.output

        flaky.fixed = True
        redriven = await fleet("dlq", "redrive", "ai", "--all", settings_=settings)
        assert redriven.exit_code == 0, redriven.output
        assert "redrove 1 dead letters" in redriven.output
        results = await read_results(redis, settings.results_topic, 2, timeout=30)
        assert len(results) == 2
        completed = results[1]
        assert completed["executionid"] == execution_id
        assert completed["data"]["status"] == "completed"
        # A new entry in the topic: its delivery count started afresh.
        assert completed["data"]["output"] == {"ok": True, "attempt": 1}
    assert await redis.xlen(dlq) == 0
    newest = await redis.xrevrange(topic, count=1)
    assert orjson.loads(newest[0][1][b"metadata"]) == {"fleet.redriven-from": letter["id"]}


async def test_dapr_written_dead_letters_look_the_same(
    settings: Settings, redis: Redis, run_worker: Callable[..., Any], fleet: CliCall, tmp_path: Path
) -> None:
    topic, dlq = settings.topic_for("ai"), settings.dlq_for(settings.topic_for("ai"))
    # What daprd's deadLetterTopic writes: the original data (its own envelope, Go's sorted
    # compact JSON) and the original metadata plus pubsubName, nothing else.
    data = (
        b'{"data":{"function":"system/echo","input":{"hello":"dapr"}},"datacontenttype":"application/json",'
        b'"id":"dapr-1","pubsubname":"fleet-pubsub","source":"orchestrator","specversion":"1.0",'
        b'"time":"2024-11-23T08:20:00Z","topic":"functions.ai","traceid":"","traceparent":"","tracestate":"",'
        b'"type":"com.dapr.event.sent"}'
    )
    entry_id = (await redis.xadd(dlq, {"data": data, "metadata": b'{"pubsubName":"fleet-pubsub"}'})).decode()

    listed = await fleet("dlq", "list", "ai", "--json")
    [letter] = orjson.loads(listed.output)
    assert letter == {
        "id": entry_id,
        "dlq": dlq,
        "topic": topic,
        "execution_id": "dapr-1",
        "function": "system/echo",
        "error": None,
        "deliveries": None,
        "message_id": None,
        "dead_lettered_at": letter["dead_lettered_at"],
        "writer": "dapr",
    }
    assert letter["dead_lettered_at"].endswith("Z")
    table = await fleet("dlq", "list")
    assert entry_id in table.output
    assert "unknown" in table.output
    shown = await fleet("dlq", "show", entry_id)
    assert "error: unknown" in shown.output
    assert "deliveries: unknown" in shown.output

    # An export of the DLQ replays to the topic it serves, under a new id.
    exported = tmp_path / "dlq.jsonl"
    assert (await fleet("topic", "export", dlq, "--out", str(exported))).exit_code == 0
    replayed = tmp_path / "replayed.jsonl"
    async with run_worker("ai"):
        replay = await fleet("topic", "replay", str(exported), "--results", str(replayed), "--timeout", "30")
    assert replay.exit_code == 0, replay.output
    [again_result] = read_jsonl(replayed)
    assert again_result["replay"]["original_id"] == "dapr-1"
    assert again_result["event"]["data"]["output"] == {"hello": "dapr"}
    assert await redis.xlen(dlq) == 1

    moved = await fleet("dlq", "redrive", "ai", "--id", entry_id)
    assert moved.exit_code == 0, moved.output
    again = await fleet("dlq", "redrive", "ai", "--id", entry_id)
    assert again.exit_code == 1  # already moved: nothing duplicated
    assert f"not in {dlq}: {entry_id}" in again.output
    assert await redis.xlen(dlq) == 0
    [(_, fields)] = await redis.xrevrange(topic, count=1)
    assert fields[b"data"] == data  # the bytes daprd wrote, untouched
    assert orjson.loads(fields[b"metadata"]) == {"fleet.redriven-from": entry_id}

    async with run_worker("ai"):
        [_, result] = await read_results(redis, settings.results_topic, 2, timeout=30)
    assert result["executionid"] == "dapr-1"
    assert result["data"]["output"] == {"hello": "dapr"}


async def test_show_unknown_id_and_redrive_usage(settings: Settings, fleet: CliCall) -> None:
    assert (await fleet("dlq", "show", "1-1")).exit_code == 1
    assert (await fleet("dlq", "redrive", "ai")).exit_code == 2
    assert (await fleet("dlq", "redrive", "ai", "--all", "--id", "1-1")).exit_code == 2
    empty = await fleet("dlq", "list")
    assert empty.exit_code == 0
    assert "no dead letters" in empty.output
    assert (
        (await fleet("dlq", "redrive", "ai", "--all"))
        .output.strip()
        .endswith(
            "redrove 0 dead letters from "
            f"{settings.dlq_for(settings.topic_for('ai'))} to {settings.topic_for('ai')}"
        )
    )


async def test_undecodable_dead_letter_shows_its_raw_data(
    settings: Settings, redis: Redis, run_worker: Callable[..., Any], fleet: CliCall
) -> None:
    dlq = settings.dlq_for(settings.topic_for("ai"))
    async with run_worker("ai"):
        await redis.xadd(settings.topic_for("ai"), {"data": b"definitely not json", "metadata": b"{}"})
        for _ in range(500):
            if await redis.xlen(dlq):
                break
            await asyncio.sleep(0.02)
    listed = await fleet("dlq", "list", "--json")
    [letter] = orjson.loads(listed.output)
    assert letter["execution_id"] is None
    assert letter["function"] is None
    assert letter["writer"] == "fleet"
    assert letter["error"].startswith("invalid_event")
    shown = await fleet("dlq", "show", letter["id"])
    assert "execution id: unknown" in shown.output
    assert "data (not a CloudEvent):\ndefinitely not json" in shown.output
