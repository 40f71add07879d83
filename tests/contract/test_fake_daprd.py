"""The fake daprd against the facts in dapr-wire.md, so the contract suite can trust it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from tests.contract.conftest import new_traceparent
from tests.contract.recording_app import RecordingApp
from tests.fakes.daprd import (
    FakeDaprd,
    GoNumber,
    PublishError,
    envelope_from_cloudevent,
    go_json,
    new_envelope,
    parse_json_exact,
)


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (sync, or returning an awaitable) until it is truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def no_pending(redis: Redis, topic: str) -> Callable[[], Any]:
    async def check() -> bool:
        return await pending(redis, topic) == 0

    return check


# ---------------------------------------------------------------------- Go encoding/json
def test_go_json_sorts_keys_compacts_and_escapes_like_encoding_json() -> None:
    value = {
        "b": "<a href='x'>&</a>",
        "a": [1.0, 1.5, 1e21, 1e-7, 0.000001, 100.0, -0.0, 12345678.9],
        "é": "line\u2028sep\n\t\x01\x7f\b\fé",
        "A": {"z": None, "y": True, "x": False},
    }
    assert go_json(value) == (
        b'{"A":{"x":false,"y":true,"z":null},'
        b'"a":[1,1.5,1e+21,1e-7,0.000001,100,-0,12345678.9],'
        b'"b":"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e",'
        b'"\xc3\xa9":"line\\u2028sep\\n\\t\\u0001\x7f\\b\\f\xc3\xa9"}'
    )


def test_exact_numbers_keep_their_literal_text() -> None:
    parsed = parse_json_exact(b'{"n": 12.50, "big": 12345678901234567890, "e": 1E5}')
    assert parsed == {"n": GoNumber("12.50"), "big": GoNumber("12345678901234567890"), "e": GoNumber("1E5")}
    assert go_json(parsed) == b'{"big":12345678901234567890,"e":1E5,"n":12.50}'


# ---------------------------------------------------------------------- envelopes (§3)
NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_plain_json_publish_is_wrapped_in_a_dapr_cloudevent() -> None:
    event = new_envelope(
        b'{"function": "system/echo", "input": {"x": 1.50}}',
        "application/json; charset=utf-8",
        topic="functions.ai",
        pubsub="fleet-pubsub",
        source="orchestrator",
        now=NOW,
    )
    assert set(event) == {
        "id",
        "source",
        "type",
        "specversion",
        "datacontenttype",
        "data",
        "topic",
        "pubsubname",
        "traceid",
        "traceparent",
        "tracestate",
        "time",
    }
    assert event["type"] == "com.dapr.event.sent"
    assert event["source"] == "orchestrator"
    assert event["datacontenttype"] == "application/json; charset=utf-8"
    assert event["time"] == "2026-01-02T03:04:05Z"
    assert (event["traceid"], event["traceparent"], event["tracestate"]) == ("", "", "")
    assert b'"data":{"function":"system/echo","input":{"x":1.50}}' in go_json(event)


@pytest.mark.parametrize(
    ("content_type", "key", "value"),
    [
        (None, "data", "hi <there>"),
        ("text/plain", "data", "hi <there>"),
        ("application/cloudevents+json+x", "data", "hi <there>"),
        ("application/octet-stream", "data_base64", base64.b64encode(b"hi <there>").decode()),
        ("application/json", "data", "hi <there>"),  # invalid JSON is kept as a string
    ],
)
def test_other_content_types(content_type: str | None, key: str, value: str) -> None:
    event = new_envelope(b"hi <there>", content_type, topic="t", pubsub="p", source="a", now=NOW)
    assert event[key] == value
    assert event["datacontenttype"] == (content_type or "text/plain")


def test_cloudevent_metadata_overrides_case_insensitively() -> None:
    traceparent = new_traceparent()
    event = new_envelope(
        b"{}",
        "application/json",
        topic="t",
        pubsub="p",
        source="a",
        span_traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        metadata={
            "CloudEvent.Id": "my-id",
            "cloudevent.type": "fleet.execution.requested",
            "cloudevent.traceid": "ignored-when-traceparent-given",
            "cloudevent.traceparent": traceparent,
            "cloudevent.subject": "system/echo",
            "ttlInSeconds": "60",
        },
        now=NOW,
    )
    assert event["id"] == "my-id"
    assert event["type"] == "fleet.execution.requested"
    assert event["traceparent"] == event["traceid"] == traceparent
    assert event["subject"] == "system/echo"
    assert event["expiration"] == "2026-01-02T03:05:05Z"


def test_cloudevent_publish_keeps_id_and_data_and_applies_the_rules() -> None:
    user_traceparent = new_traceparent()
    span = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    body = orjson.dumps(
        {
            "specversion": "1.0",
            "id": "result-1",
            "source": "fleet/ai",
            "type": "fleet.execution.completed",
            "topic": "spoofed",
            "traceparent": user_traceparent,
            "data": {"n": 1.0, "text": "<&>"},
        }
    )
    event = envelope_from_cloudevent(
        body, topic="results", pubsub="fleet-pubsub", span_traceparent=span, now=NOW
    )
    assert event["id"] == "result-1"
    assert event["data"] == {"n": 1.0, "text": "<&>"}
    assert (event["topic"], event["pubsubname"]) == ("results", "fleet-pubsub")
    assert event["time"] == "2026-01-02T03:04:05Z"
    assert event["tracestate"] == ""
    # No traceid: both trace fields come from daprd's span, clobbering the user's traceparent.
    assert event["traceid"] == event["traceparent"] == span
    assert go_json(event).startswith(b'{"data":{"n":1,"text":"\\u003c\\u0026\\u003e"},"id":"result-1"')

    with_traceid = orjson.loads(body) | {"traceid": "x", "time": "then", "tracestate": "s=1"}
    kept = envelope_from_cloudevent(orjson.dumps(with_traceid), topic="r", pubsub="p", span_traceparent=span)
    assert (kept["traceid"], kept["traceparent"], kept["time"], kept["tracestate"]) == (
        "x",
        user_traceparent,
        "then",
        "s=1",
    )

    defaulted = envelope_from_cloudevent(b'{"id": "i", "type": null}', topic="r", pubsub="p")
    assert (defaulted["source"], defaulted["type"], defaulted["specversion"]) == (
        "Dapr",
        "com.dapr.event.sent",
        "1.0",
    )
    assert "id" not in envelope_from_cloudevent(b"{}", topic="r", pubsub="p")  # no id is invented

    for bad in (b"[1]", b"nope"):
        with pytest.raises(PublishError) as info:
            envelope_from_cloudevent(bad, topic="r", pubsub="p")
        assert (info.value.status, info.value.code) == (500, "ERR_PUBSUB_CLOUD_EVENTS_SER")


# ---------------------------------------------------------------------- publish API
@pytest.fixture
async def fake(redis_url: str) -> AsyncIterator[FakeDaprd]:
    async with FakeDaprd(redis_url, app_id="publisher", api_token="tok") as daprd:
        yield daprd


async def test_publish_api_writes_daprds_stream_entry(fake: FakeDaprd, redis: Redis, namespace: str) -> None:
    topic = f"{namespace}orders"
    url = f"http://127.0.0.1:{fake.http_port}/v1.0/publish/fleet-pubsub/{topic}"
    async with aiohttp.ClientSession(headers={"dapr-api-token": "tok"}) as session:
        async with session.post(
            url + "?metadata.tenant=acme&metadata.cloudevent.id=fixed&other=ignored",
            data=b'{"b": 2, "a": [1.0]}',
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 204
            assert await response.read() == b""
        async with session.put(
            url, data=b"[1]", headers={"Content-Type": "application/cloudevents+json"}
        ) as response:
            assert response.status == 500
            assert (await response.json())["errorCode"] == "ERR_PUBSUB_CLOUD_EVENTS_SER"
        async with session.post(url.replace("fleet-pubsub", "other"), data=b"{}") as response:
            assert response.status == 404
            assert (await response.json())["errorCode"] == "ERR_PUBSUB_NOT_FOUND"
        fake.fail_next_publishes = 1
        async with session.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as response:
            assert response.status == 500
            assert (await response.json())["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
        async with session.post(url + "?metadata.rawPayload=true", data=b"raw \x00 bytes") as response:
            assert response.status == 204
        async with session.post(url + "?metadata.rawPayload=maybe", data=b"x") as response:
            assert response.status == 400

    entries = await redis.xrange(topic)
    assert len(entries) == 2
    (_, first), (_, raw) = entries
    assert first[b"metadata"] == b'{"cloudevent.id":"fixed","tenant":"acme"}'
    stored = orjson.loads(first[b"data"])
    assert stored["id"] == "fixed"
    assert stored["source"] == "publisher"
    assert stored["topic"] == topic
    assert first[b"data"].startswith(
        b'{"data":{"a":[1.0],"b":2},"datacontenttype":"application/json","id":"fixed"'
    )
    assert raw == {b"data": b"raw \x00 bytes", b"metadata": b'{"rawPayload":"true"}'}
    assert [p.status for p in fake.publishes] == [204, 500, 404, 500, 204, 400]


async def test_api_token_is_required_except_for_health(fake: FakeDaprd) -> None:
    base = f"http://127.0.0.1:{fake.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1.0/publish/fleet-pubsub/t", data=b"{}") as response:
            assert response.status == 401
            assert await response.text() == "invalid api token"
        async with session.get(f"{base}/v1.0/healthz/outbound") as response:
            assert response.status == 204
        fake.outbound_ready = False
        async with session.get(f"{base}/v1.0/healthz/outbound") as response:
            assert response.status == 500
    assert fake.publishes == []


# ---------------------------------------------------------------------- subscribe side
@contextlib.asynccontextmanager
async def subscribed(
    redis_url: str, app: RecordingApp, **options: Any
) -> AsyncIterator[tuple[FakeDaprd, RecordingApp]]:
    async with app.serve(), FakeDaprd(redis_url, app_id="subscriber", **options) as daprd:
        await daprd.attach_app(app.port)
        try:
            yield daprd, app
        finally:
            await daprd.stop_subscriptions()


async def pending(redis: Redis, topic: str) -> int:
    return int((await redis.xpending(topic, "subscriber"))["pending"])


async def test_delivery_headers_and_body(redis_url: str, redis: Redis, namespace: str) -> None:
    topic = f"{namespace}events"
    app = RecordingApp(pubsub="fleet-pubsub", topic=topic)
    traceparent = new_traceparent()
    body = orjson.dumps({"specversion": "1.0", "id": "1", "traceparent": traceparent, "tracestate": "k=v"})
    metadata = b'{"tenant":"acme","grpc-timeout":"5s","Content-Type":"text/evil","connection":"close"}'
    async with subscribed(redis_url, app, app_api_token="app-tok") as (daprd, _):
        await redis.xadd(topic, {"data": body, "metadata": metadata})
        await wait_until(lambda: app.received)
        await wait_until(lambda: daprd.acked)
        await wait_until(no_pending(redis, topic))
    [received] = app.received
    assert received.body == body
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert headers["content-type"] == "application/cloudevents+json"
    assert headers["pubsubname"] == "fleet-pubsub"
    assert headers["tenant"] == "acme"
    assert headers["dapr-grpc-timeout"] == "5s"
    assert "grpc-timeout" not in headers
    assert headers["dapr-api-token"] == "app-tok"
    assert headers["traceparent"].split("-")[1] == traceparent.split("-")[1]
    assert headers["traceparent"] != traceparent
    assert headers["tracestate"] == "k=v"
    # Discovery: /dapr/config (404 here: fine) then /dapr/subscribe, both with the app token.
    assert [(c.path, c.status) for c in daprd.app_calls[:2]] == [
        ("/dapr/config", 404),
        ("/dapr/subscribe", 200),
    ]
    # XGROUP <topic> <app-id>; consumer name = app id.
    [group] = await redis.xinfo_groups(topic)
    assert group["name"] == b"subscriber"
    [consumer] = await redis.xinfo_consumers(topic, "subscriber")
    assert consumer["name"] == b"subscriber"


async def test_drop_and_invalid_json_go_to_the_dead_letter_topic(
    redis_url: str, redis: Redis, namespace: str
) -> None:
    topic, dlq = f"{namespace}events", f"{namespace}events.dlq"
    app = RecordingApp(pubsub="fleet-pubsub", topic=topic, dead_letter_topic=dlq, default="DROP")
    async with subscribed(redis_url, app) as (daprd, _):
        await redis.xadd(topic, {"data": b'{"id":"x"}', "metadata": b'{"k":"v"}'})
        await redis.xadd(topic, {"data": b"not json", "metadata": b"{}"})
        await wait_until(lambda: len(daprd.dead_lettered) == 2)
        await wait_until(no_pending(redis, topic))
    assert len(app.received) == 1  # invalid CloudEvent JSON never reaches the app
    letters = {fields[b"data"]: fields[b"metadata"] for _, fields in await redis.xrange(dlq)}
    assert letters == {
        b'{"id":"x"}': b'{"k":"v","pubsubName":"fleet-pubsub"}',
        b"not json": b'{"pubsubName":"fleet-pubsub"}',
    }


async def test_retry_without_dead_letter_topic_depends_on_the_version(
    redis_url: str, redis: Redis, namespace: str
) -> None:
    # ≤ 1.16: left pending, re-claimed after processingTimeout and delivered again.
    topic = f"{namespace}old"
    app = RecordingApp(pubsub="fleet-pubsub", topic=topic, answers=["RETRY", 500])
    async with subscribed(
        redis_url, app, version="1.16", processing_timeout_ms=200, redeliver_interval_ms=50
    ) as (daprd, _):
        entry_id = (await redis.xadd(topic, {"data": b'{"id":"1"}'})).decode()
        await wait_until(lambda: len(app.received) == 3)
        await wait_until(no_pending(redis, topic))
        assert daprd.left_pending == [(topic, entry_id), (topic, entry_id)]
        assert daprd.lost == []

    # ≥ 1.17: acked and lost.
    topic = f"{namespace}new"
    app = RecordingApp(pubsub="fleet-pubsub", topic=topic, default="RETRY")
    async with subscribed(redis_url, app, version="1.17") as (daprd, _):
        entry_id = (await redis.xadd(topic, {"data": b'{"id":"1"}'})).decode()
        await wait_until(lambda: daprd.lost)
        assert daprd.lost == [(topic, entry_id)]
        assert await pending(redis, topic) == 0
        assert len(app.received) == 1


@pytest.mark.parametrize(("version", "dead_lettered"), [("1.16", False), ("1.17", True)])
async def test_app_404_is_a_drop_from_1_17(
    redis_url: str, redis: Redis, namespace: str, version: str, dead_lettered: bool
) -> None:
    topic, dlq = f"{namespace}events", f"{namespace}events.dlq"
    app = RecordingApp(pubsub="fleet-pubsub", topic=topic, dead_letter_topic=dlq, default=404)
    async with subscribed(redis_url, app, version=version) as (daprd, _):
        await redis.xadd(topic, {"data": b'{"id":"1"}'})
        await wait_until(lambda: daprd.acked)
    assert await pending(redis, topic) == 0
    assert len(await redis.xrange(dlq)) == (1 if dead_lettered else 0)
