"""Dapr-only behaviour of the app channel, against the fake daprd (tests/fakes/daprd.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
import structlog.testing

from shared.errors import TransportError
from shared.runtime.envelope import encode_request
from shared.settings import Settings
from shared.transports import dapr_http
from shared.transports.base import Outcome, Settlement
from shared.transports.dapr_http import DaprTransport
from tests.contract.conftest import DOMAIN, Harness, Running, new_traceparent
from tests.fakes.daprd import FakeDaprd, InboundRetry


def app_url(run: Running, path: str) -> str:
    assert isinstance(run.worker.transport, DaprTransport)
    return f"http://127.0.0.1:{run.worker.transport.port}{path}"


def answers_for(fake: FakeDaprd, execution_id: str) -> list[str]:
    """The statuses the app answered for the request ``execution_id``, in order."""
    statuses: list[str] = []
    for call in fake.deliveries():
        if call.bulk:
            body = orjson.loads(call.body)
            ids = {e["entryId"] for e in body["entries"] if e["event"].get("id") == execution_id}
            if ids and call.reply is not None:
                statuses += [s["status"] for s in orjson.loads(call.reply)["statuses"] if s["entryId"] in ids]
        elif orjson.loads(call.body).get("id") == execution_id and call.reply is not None:
            statuses.append(orjson.loads(call.reply)["status"])
    return statuses


# ---------------------------------------------------------------------- discovery
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "single"])
async def test_subscribe_declares_topic_route_dead_letter_and_bulk(dapr_harness: Harness, bulk: bool) -> None:
    async with dapr_harness.start(dapr_bulk_subscribe=bulk, batch_size=50) as run:
        topic = run.settings.topic_for(DOMAIN)
        expected: dict[str, Any] = {
            "pubsubname": run.settings.pubsub_name,
            "topic": topic,
            "route": "/events",
            "deadLetterTopic": f"{topic}.dlq",
        }
        if bulk:
            expected["bulkSubscribe"] = {"enabled": True, "maxMessagesCount": 50, "maxAwaitDurationMs": 5}
        assert run.daprd is not None
        config, subscribe = run.daprd.app_calls[:2]
        assert (config.path, config.status) == ("/dapr/config", 200)
        assert orjson.loads(config.reply or b"") == {}
        assert (subscribe.path, subscribe.status) == ("/dapr/subscribe", 200)
        assert orjson.loads(subscribe.reply or b"") == [expected]
        [sub] = run.daprd.subscriptions
        assert (sub.topic, sub.path, sub.dead_letter_topic, sub.bulk) == (
            topic,
            "/events",
            f"{topic}.dlq",
            bulk,
        )

        event = await run.echo()
        calls = run.daprd.deliveries()
        assert calls
        assert all(c.bulk is bulk for c in calls)
        assert event["pubsubname"] == run.settings.pubsub_name  # daprd's envelope fields


async def test_single_delivery_carries_daprds_headers_and_the_exact_bytes(dapr_harness: Harness) -> None:
    async with dapr_harness.start(dapr_bulk_subscribe=False) as run:
        assert run.daprd is not None
        traceparent = new_traceparent()
        execution_id, body = encode_request(function="system/echo", input={"k": "v"}, traceparent=traceparent)
        await run.publish_raw(body, metadata=b'{"tenant":"acme"}')

        event, _, _ = await run.result_for(execution_id)
        await run.wait_settled()  # acked after the answer: the fake has recorded it by then

        [call] = run.daprd.deliveries()
        assert call.body == body
        assert call.headers["Content-Type"] == "application/cloudevents+json"
        assert call.headers["pubsubname"] == run.settings.pubsub_name
        assert call.headers["tenant"] == "acme"
        assert call.headers["traceparent"].split("-")[1] == traceparent.split("-")[1]
        assert orjson.loads(call.reply or b"") == {"status": "SUCCESS"}
        # The result went out through the publish API, as a CloudEvent the app built.
        [publish] = run.daprd.publishes
        assert publish.path == f"/v1.0/publish/{run.settings.pubsub_name}/{run.settings.results_topic}"
        assert publish.headers["Content-Type"] == "application/cloudevents+json"
        assert publish.status == 204
        sent = orjson.loads(publish.body)
        assert sent["executionid"] == execution_id
        assert sent["id"] == event["id"]  # daprd keeps our id and data
        assert sent["data"] == event["data"]
        assert "topic" not in sent
        assert event["topic"] == run.settings.results_topic


async def test_bulk_delivery_answers_each_entry(dapr_harness: Harness) -> None:
    async with dapr_harness.start() as run:
        assert run.daprd is not None
        pipe = run.redis.pipeline(transaction=True)
        ids = []
        for n in range(5):
            execution_id, body = encode_request(function="system/echo", input={"n": n})
            ids.append(execution_id)
            pipe.xadd(run.topic, {"data": body, "metadata": b"{}"})
        await pipe.execute()

        for n, execution_id in enumerate(ids):
            event, _, _ = await run.result_for(execution_id)
            assert event["data"]["output"] == {"n": n}
        await run.wait_settled()

        calls = run.daprd.deliveries()
        assert calls
        assert all(c.bulk for c in calls)
        entries = 0
        for call in calls:
            sent = orjson.loads(call.body)
            assert sent["type"] == "com.dapr.event.sent.bulk"
            reply = orjson.loads(call.reply or b"")
            assert [s["entryId"] for s in reply["statuses"]] == [e["entryId"] for e in sent["entries"]]
            assert {s["status"] for s in reply["statuses"]} == {"SUCCESS"}
            entries += len(sent["entries"])
        assert entries == 5


async def test_bulk_entries_are_settled_one_by_one(dapr_harness: Harness) -> None:
    """A hand-made bulk request mixing good and bad entries (object and string events)."""
    async with dapr_harness.start() as run:
        ok_id, ok_body = encode_request(function="system/echo", input={"a": 1})
        str_id, str_body = encode_request(function="system/echo", input={"b": 2})
        bulk = {
            "id": "bulk-1",
            "type": "com.dapr.event.sent.bulk",
            "topic": run.topic,
            "pubsubname": run.settings.pubsub_name,
            "metadata": {},
            "entries": [
                {
                    "entryId": "e1",
                    "event": orjson.loads(ok_body),
                    "metadata": {},
                    "contentType": "application/cloudevents+json",
                },
                {
                    "entryId": "e2",
                    "event": {"not": "a cloudevent"},
                    "metadata": {},
                    "contentType": "application/json",
                },
                {
                    "entryId": "e3",
                    "event": str_body.decode(),
                    "metadata": {},
                    "contentType": "application/cloudevents+json",
                },
                {"entryId": "e4", "event": "garbage", "metadata": {}, "contentType": "text/plain"},
            ],
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(app_url(run, "/events"), data=orjson.dumps(bulk)) as response,
        ):
            assert response.status == 200
            reply = orjson.loads(await response.read())
        assert reply == {
            "statuses": [
                {"entryId": "e1", "status": "SUCCESS"},
                {"entryId": "e2", "status": "DROP"},
                {"entryId": "e3", "status": "SUCCESS"},
                {"entryId": "e4", "status": "DROP"},
            ]
        }
        for execution_id, output in ((ok_id, {"a": 1}), (str_id, {"b": 2})):
            event, _, _ = await run.result_for(execution_id)
            assert event["data"]["output"] == output
        assert len(await run.results()) == 2


# ---------------------------------------------------------------------- bad input, tokens
async def test_non_json_delivery_is_answered_drop_and_logged(
    dapr_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured = structlog.testing.CapturingLogger()
    monkeypatch.setattr(dapr_http, "log", captured)
    async with dapr_harness.start() as run:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                app_url(run, "/events"),
                data=b"\x00 not json",
                headers={"Content-Type": "application/cloudevents+json"},
            ) as response,
        ):
            assert response.status == 200
            assert orjson.loads(await response.read()) == {"status": "DROP"}
        drops = [c for c in captured.calls if c.args and "dropped" in str(c.args[0])]
        assert len(drops) == 1
        assert drops[0].method_name == "warning"
        assert drops[0].kwargs["reason"].startswith("invalid_event")
        await run.echo()
        assert len(await run.results()) == 1


async def test_tokens_are_checked_both_ways(dapr_harness: Harness) -> None:
    async with dapr_harness.start(app_api_token="app-secret", dapr_api_token="api-secret") as run:
        assert run.daprd is not None
        await run.echo()
        # daprd → app carries APP_API_TOKEN; app → daprd carries DAPR_API_TOKEN.
        assert all(c.headers.get("dapr-api-token") == "app-secret" for c in run.daprd.app_calls)
        assert run.daprd.publishes
        assert all(p.headers["dapr-api-token"] == "api-secret" for p in run.daprd.publishes)

        execution_id, body = encode_request(function="system/echo", input={"sneaky": True})
        async with aiohttp.ClientSession() as session:
            for headers in ({"dapr-api-token": "wrong"}, {}):
                async with session.post(app_url(run, "/events"), data=body, headers=headers) as response:
                    assert response.status == 401
                    assert await response.text() == "invalid api token"
            async with session.get(app_url(run, "/dapr/subscribe")) as response:
                assert response.status == 401
            async with session.get(app_url(run, "/healthz")) as response:
                assert response.status == 200  # health probes carry no token
            # The fake sidecar enforces DAPR_API_TOKEN the same way.
            publish_url = f"http://127.0.0.1:{run.daprd.http_port}/v1.0/publish/{run.settings.pubsub_name}/x"
            async with session.post(publish_url, data=b"{}") as response:
                assert response.status == 401
                assert await response.text() == "invalid api token"

        await run.echo()  # barrier: anything the rejected request started would be done by now
        await run.wait_settled()
        deliveries = sum(run.worker.metrics.deliveries.values())
        assert deliveries == 2
        results = [orjson.loads(fields[b"data"]) for _, fields in await run.results()]
        assert execution_id not in {r["executionid"] for r in results}


# ---------------------------------------------------------------------- publish failures
async def test_failed_results_publish_answers_retry_then_redelivery_succeeds(dapr_harness: Harness) -> None:
    async with dapr_harness.start(daprd={"inbound_retry": InboundRetry(max_retries=3)}) as run:
        assert run.daprd is not None
        run.daprd.fail_next_publishes = 1
        execution_id, _ = await run.request("system/echo", {"x": 1})

        event, _, _ = await run.result_for(execution_id)
        await run.wait_settled()  # acked after the answer: the fake has recorded it by then

        assert answers_for(run.daprd, execution_id) == ["RETRY", "SUCCESS"]
        assert [p.status for p in run.daprd.publishes] == [500, 204]
        assert event["data"]["attempt"] == 2  # the transport counts daprd's redeliveries
        assert run.worker.metrics.infra_errors >= 1
        await run.wait_settled()
        assert len(await run.results()) == 1
        assert await run.dead_letters() == []


async def test_failed_results_publish_without_retry_policy_ends_in_the_dead_letter_topic(
    dapr_harness: Harness,
) -> None:
    """Without an inbound resiliency policy daprd does not redeliver a RETRY: it copies the
    request to the subscription's dead-letter topic and acks it (dapr-wire.md §2)."""
    async with dapr_harness.start() as run:
        assert run.daprd is not None
        run.daprd.fail_next_publishes = 1
        execution_id, body = await run.request("system/echo", {"x": 1})

        [dead] = await run.wait_dead_letters(1)

        assert dead[b"data"] == body
        assert answers_for(run.daprd, execution_id) == ["RETRY"]
        await run.echo()
        assert len(await run.results()) == 1
        await run.wait_settled()


# ---------------------------------------------------------------------- health, metrics, lifecycle
async def test_metrics_endpoint_serves_prometheus_text(dapr_harness: Harness) -> None:
    async with dapr_harness.start() as run:
        await run.echo()
        await run.wait_settled()
        async with aiohttp.ClientSession() as session, session.get(app_url(run, "/metrics")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
        assert 'fleet_executions_total{function="system/echo",outcome="completed"} 1' in text


@pytest.fixture
async def sidecar(redis_url: str) -> Any:
    async with FakeDaprd(redis_url, app_id="fleet-ai", outbound_ready=False) as fake:
        yield fake


@pytest.fixture
def transport_settings(make_settings: Callable[..., Settings], sidecar: FakeDaprd) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        return make_settings(app_port=0, dapr_http_port=sidecar.http_port, **overrides)

    return factory


async def test_open_waits_for_the_sidecar_and_healthz_follows(
    sidecar: FakeDaprd, transport_settings: Callable[..., Settings]
) -> None:
    settings = transport_settings(dapr_ready_timeout=30)
    transport = DaprTransport(topic=settings.topic_for(DOMAIN), domain=DOMAIN, settings=settings)
    opening = asyncio.create_task(transport.open())
    try:
        while True:  # the server is up before the sidecar is ready
            try:
                port = transport.port
                break
            except RuntimeError:
                await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 503
            assert not opening.done()
            sidecar.outbound_ready = True
            await asyncio.wait_for(opening, 10)
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            await transport.stop_intake()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 503
    finally:
        opening.cancel()
        await asyncio.gather(opening, return_exceptions=True)
        await transport.close()


async def test_open_raises_when_the_sidecar_never_gets_ready(
    sidecar: FakeDaprd, transport_settings: Callable[..., Settings]
) -> None:
    settings = transport_settings(dapr_ready_timeout=0.3)
    transport = DaprTransport(topic=settings.topic_for(DOMAIN), domain=DOMAIN, settings=settings)
    try:
        with pytest.raises(TransportError, match="not ready"):
            await transport.open()
    finally:
        await transport.close()


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> Any:
    async with session.post(url, data=body) as response:
        assert response.status == 200
        return orjson.loads(await response.read())


async def test_stop_intake_answers_new_deliveries_retry_and_still_settles_held_ones(
    sidecar: FakeDaprd, transport_settings: Callable[..., Settings]
) -> None:
    sidecar.outbound_ready = True
    settings = transport_settings()
    transport = DaprTransport(topic=settings.topic_for(DOMAIN), domain=DOMAIN, settings=settings)
    await transport.open()
    url = f"http://127.0.0.1:{transport.port}/events"
    try:
        async with aiohttp.ClientSession() as session:
            _, held_body = encode_request(function="system/echo", input={})
            held = asyncio.create_task(_post(session, url, held_body))
            [delivery] = await transport.receive(10)
            assert delivery.body == held_body

            await transport.stop_intake()
            _, late_body = encode_request(function="system/echo", input={})
            assert await _post(session, url, late_body) == {"status": "RETRY"}
            assert await transport.receive(10) == []

            result = b'{"specversion":"1.0","id":"r1","source":"fleet/ai","type":"t","data":{}}'
            await transport.settle([Settlement(delivery, Outcome.ACK, result=result)])
            assert await held == {"status": "SUCCESS"}
            [publish] = sidecar.publishes
            assert publish.body == result
            assert publish.status == 204
    finally:
        await transport.close()


async def test_close_answers_retry_to_every_waiting_delivery(
    sidecar: FakeDaprd, transport_settings: Callable[..., Settings]
) -> None:
    sidecar.outbound_ready = True
    settings = transport_settings()
    transport = DaprTransport(topic=settings.topic_for(DOMAIN), domain=DOMAIN, settings=settings)
    await transport.open()
    url = f"http://127.0.0.1:{transport.port}/events"
    async with aiohttp.ClientSession() as session:
        bodies = [encode_request(function="system/echo", input={"n": n})[1] for n in range(2)]
        posts = [asyncio.create_task(_post(session, url, body)) for body in bodies]
        received = await transport.receive(1)  # one held by the runtime, one still queued
        assert len(received) == 1
        await transport.close()
        assert await asyncio.gather(*posts) == [{"status": "RETRY"}, {"status": "RETRY"}]
        with pytest.raises(TransportError):
            await transport.settle([Settlement(received[0], Outcome.ACK, result=b"{}")])
    assert sidecar.publishes == []


async def test_worker_shutdown_leaves_unfinished_work_to_daprd(
    dapr_harness: Harness,
) -> None:
    """SIGTERM with a long execution in flight: the delivery is answered RETRY at close, no
    result is published, and (without a retry policy) daprd dead-letters it."""
    async with dapr_harness.start(shutdown_timeout=0.2) as run:
        assert run.daprd is not None
        execution_id, _ = await run.request("system/sleep", {"seconds": 60})
        while run.worker.held == 0:
            await asyncio.sleep(0.01)
        run.worker.stop()
        [dead] = await run.wait_dead_letters(1)
        assert orjson.loads(dead[b"data"])["id"] == execution_id
        assert answers_for(run.daprd, execution_id) == ["RETRY"]
        assert await run.results() == []


async def test_a_delivery_daprd_hung_up_on_is_not_published(
    sidecar: FakeDaprd, transport_settings: Callable[..., Settings]
) -> None:
    """daprd closed the connection (e.g. an inbound resiliency timeout): the result is not
    published — daprd delivers the request again and that delivery answers it, counted."""
    sidecar.outbound_ready = True
    settings = transport_settings()
    transport = DaprTransport(topic=settings.topic_for(DOMAIN), domain=DOMAIN, settings=settings)
    await transport.open()
    url = f"http://127.0.0.1:{transport.port}/events"
    _, body = encode_request(function="system/echo", input={})
    try:
        async with aiohttp.ClientSession() as session:
            post = asyncio.create_task(_post(session, url, body))
            [gone] = await transport.receive(1)
            post.cancel()  # the client side goes away, closing the connection
            await asyncio.gather(post, return_exceptions=True)
            while not gone.handle.done():
                await asyncio.sleep(0.01)
            await transport.settle([Settlement(gone, Outcome.ACK, result=b'{"id":"r"}')])
            assert sidecar.publishes == []

            again = asyncio.create_task(_post(session, url, body))
            [redelivered] = await transport.receive(1)
            assert redelivered.delivery_count == 2
            assert redelivered.last_error == "daprd closed the connection before the answer"
            await transport.settle([Settlement(redelivered, Outcome.ACK, result=b'{"id":"r"}')])
            assert await again == {"status": "SUCCESS"}
            assert [p.status for p in sidecar.publishes] == [204]
    finally:
        await transport.close()


def test_declarative_deployments_get_no_programmatic_subscription(
    make_settings: Callable[..., Settings],
) -> None:
    """With Subscription resources deployed, answering /dapr/subscribe too would make daprd see
    the subscription twice; the rendered ConfigMap sets FLEET_DAPR_SUBSCRIPTIONS=declarative."""
    topic = "functions.ai"
    declarative = DaprTransport(
        topic=topic, domain="ai", settings=make_settings(dapr_subscriptions="declarative")
    )
    programmatic = DaprTransport(topic=topic, domain="ai", settings=make_settings())
    assert declarative.subscriptions() == []
    assert [s["topic"] for s in programmatic.subscriptions()] == [topic]
