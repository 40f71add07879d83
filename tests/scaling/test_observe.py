"""KEDA's metric reads (observe.py) and the scale-event log (events.py) against a real Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import structlog.testing
from redis.asyncio import Redis

from shared.domains import get_domain
from shared.errors import TransportError
from shared.settings import Settings
from shared.tools.scaling import events
from shared.tools.scaling.model import Observation, ScaleEvent, scale_events_stream
from shared.tools.scaling.observe import observe, observe_all, parse_reads
from shared.transports.redis import connect

#: Nothing listens on port 1: every command fails with a connection error.
UNREACHABLE = "redis://127.0.0.1:1"


async def _fill(redis: Redis, topic: str, n: int) -> list[bytes]:
    return [await redis.xadd(topic, {"data": str(i)}) for i in range(n)]


async def test_lag_of_a_group_that_has_not_read_yet(redis: Redis, namespace: str) -> None:
    topic, group = f"{namespace}s", f"{namespace}g"
    await _fill(redis, topic, 3)
    await redis.xgroup_create(topic, group, id="0")
    assert await observe(redis, topic, group) == Observation(lag=3, pending=0, stream_length=3)


async def test_read_but_unacked_entries_leave_the_lag_and_count_as_pending(
    redis: Redis, namespace: str
) -> None:
    topic, group = f"{namespace}s", f"{namespace}g"
    await _fill(redis, topic, 5)
    await redis.xgroup_create(topic, group, id="0")
    await redis.xreadgroup(group, "c1", {topic: ">"}, count=2)
    assert await observe(redis, topic, group) == Observation(lag=3, pending=2, stream_length=5)
    entries = await redis.xreadgroup(group, "c1", {topic: ">"}, count=1)
    await redis.xack(topic, group, entries[0][1][0][0])
    assert await observe(redis, topic, group) == Observation(lag=2, pending=2, stream_length=5)


async def test_missing_group_falls_back_to_the_stream_length(redis: Redis, namespace: str) -> None:
    topic = f"{namespace}s"
    await _fill(redis, topic, 4)
    await redis.xgroup_create(topic, f"{namespace}other", id="0")
    observed = await observe(redis, topic, f"{namespace}g")
    assert observed == Observation(lag=None, pending=None, stream_length=4, group_exists=False)


async def test_missing_stream_is_a_missing_group_with_length_zero(redis: Redis, namespace: str) -> None:
    observed = await observe(redis, f"{namespace}none", f"{namespace}g")
    assert observed == Observation(lag=None, pending=None, stream_length=0, group_exists=False)


async def test_null_lag_after_an_entry_is_deleted_is_reported_as_none(redis: Redis, namespace: str) -> None:
    # Redis cannot count the lag of a group that has not read past a deleted entry: it says NULL.
    topic, group = f"{namespace}s", f"{namespace}g"
    ids = await _fill(redis, topic, 5)
    await redis.xgroup_create(topic, group, id="0")
    await redis.xdel(topic, ids[2])
    observed = await observe(redis, topic, group)
    assert observed == Observation(lag=None, pending=0, stream_length=4, group_exists=True)


async def test_unreachable_broker_is_an_observation_with_an_error() -> None:
    client = connect(UNREACHABLE)
    try:
        observed = await observe(client, "s", "g")
    finally:
        await client.aclose()
    assert observed.error is not None
    assert "onnect" in observed.error
    assert (observed.lag, observed.pending) == (None, None)


async def test_wrong_key_type_is_an_observation_with_an_error(redis: Redis, namespace: str) -> None:
    await redis.set(f"{namespace}s", "not a stream")
    observed = await observe(redis, f"{namespace}s", f"{namespace}g")
    assert observed.error is not None
    assert "WRONGTYPE" in observed.error


def test_group_reply_without_lag_is_the_redis_7_error_keda_gives() -> None:
    # Redis 6 replies to XINFO GROUPS without a lag field; KEDA refuses lag mode there.
    group_reply = [{"name": b"g", "consumers": 0, "pending": 0, "last-delivered-id": b"0-0"}]
    observed = parse_reads([group_reply, 3, {"pending": 0}], "g")
    assert observed.error is not None
    assert "7+" in observed.error


async def test_observe_all_reads_every_domain_of_the_fleet(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    await _fill(redis, settings.topic_for("ai"), 2)
    await redis.xgroup_create(settings.topic_for("ai"), settings.group_for("ai"), id="0")
    await _fill(redis, settings.topic_for("comms"), 7)
    observed = await observe_all(redis, settings, [get_domain("ai"), get_domain("comms"), get_domain("http")])
    assert observed == {
        "ai": Observation(lag=2, pending=0, stream_length=2),
        "comms": Observation(lag=None, pending=None, stream_length=7, group_exists=False),
        "http": Observation(lag=None, pending=None, stream_length=0, group_exists=False),
    }


def _event(n: int, domain: str = "ai") -> ScaleEvent:
    return ScaleEvent(
        at=1000.0 + n, domain=domain, current=n, desired=n + 1, reason="scale-up", lag=10 * n, pending=n
    )


async def test_events_read_back_newest_first_and_by_domain(redis: Redis, settings: Settings) -> None:
    for n in range(6):
        await events.append(redis, settings, _event(n, "ai" if n % 2 == 0 else "comms"))
    assert await events.read_last(redis, settings, 2) == [_event(5, "comms"), _event(4)]
    assert await events.read_last(redis, settings, 10, domain="ai") == [_event(4), _event(2), _event(0)]
    assert await events.read_last(redis, settings, 10, domain="oci") == []


async def test_events_stream_stays_bounded(redis: Redis, settings: Settings) -> None:
    for n in range(450):
        await events.append(redis, settings, _event(n), maxlen=100)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default).
    assert 100 <= await redis.xlen(scale_events_stream(settings.group_prefix)) <= 200
    assert await events.read_last(redis, settings, 3) == [_event(449), _event(448), _event(447)]


async def test_default_bound_is_applied_without_asking(redis: Redis, settings: Settings) -> None:
    stream = scale_events_stream(settings.group_prefix)
    pipe = redis.pipeline(transaction=False)
    for n in range(events.SCALE_EVENTS_MAXLEN + 300):
        pipe.xadd(stream, {"event": _event(n).encode()})
    await pipe.execute()
    await events.append(redis, settings, _event(9999))
    assert await redis.xlen(stream) <= events.SCALE_EVENTS_MAXLEN + 100


async def test_undecodable_entries_are_skipped(redis: Redis, settings: Settings) -> None:
    stream = scale_events_stream(settings.group_prefix)
    await events.append(redis, settings, _event(1))
    await redis.xadd(stream, {"event": b'{"unknown": 1}'})
    await redis.xadd(stream, {"other": b"x"})
    assert await events.read_last(redis, settings, 5) == [_event(1)]


async def test_append_to_an_unreachable_broker_is_a_transport_error(settings: Settings) -> None:
    client = connect(UNREACHABLE)
    try:
        with pytest.raises(TransportError):
            await events.append(client, settings, _event(1))
    finally:
        await client.aclose()


def test_log_event_is_one_structured_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with structlog.testing.capture_logs() as logs:
        # configure_logging caches loggers on first use, so a logger another test already
        # used would bypass the capture: log through a fresh proxy of the same name.
        monkeypatch.setattr(events, "log", structlog.get_logger("fleet.scaling"))
        events.log_event(_event(2, "oci"))
        events.log_event(ScaleEvent(at=5.0, domain="ai", current=1, desired=1, reason="error"))
    assert logs[0] == {
        "event": "scale decision",
        "log_level": "info",
        "domain": "oci",
        "current": 2,
        "desired": 3,
        "reason": "scale-up",
        "lag": 20,
        "pending": 2,
        "at": 1002.0,
    }
    assert logs[1]["log_level"] == "warning"
    assert len(logs) == 2
