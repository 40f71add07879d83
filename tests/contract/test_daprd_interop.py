"""Results are readable by Dapr subscribers, whichever transport produced them.

An orchestrator that subscribes to the results topic through its own daprd must receive every
result as a CloudEvent: daprd parses the stream entry's ``data`` as CloudEvent JSON (else it
dead-letters or retries it) and its ``metadata`` as a JSON string map (§1, §2).
"""

from __future__ import annotations

import asyncio

import orjson
from cloudevents.v1.http import from_json

from tests.contract.conftest import Harness
from tests.contract.recording_app import RecordingApp
from tests.fakes.daprd import FakeDaprd


async def test_results_are_delivered_to_a_dapr_subscriber_as_cloudevents(harness: Harness) -> None:
    async with harness.start() as run:
        orchestrator = RecordingApp(
            pubsub=run.settings.pubsub_name,
            topic=run.results_topic,
            dead_letter_topic=f"{run.results_topic}.orchestrator-dlq",
        )
        async with (
            orchestrator.serve(),
            FakeDaprd(
                harness.redis_url, app_id="orchestrator", pubsub_name=run.settings.pubsub_name
            ) as daprd,
        ):
            await daprd.attach_app(orchestrator.port)
            try:
                ok_id, _ = await run.request("system/echo", {"hello": "<world>"})
                failed_id, _ = await run.request("nope/missing")
                deadline = asyncio.get_running_loop().time() + 15
                while len(orchestrator.received) < 2:
                    assert asyncio.get_running_loop().time() < deadline, "results not delivered"
                    await asyncio.sleep(0.02)
            finally:
                await daprd.stop_subscriptions()

            entries = {fields[b"data"]: fields for _, fields in await run.redis.xrange(run.results_topic)}
            by_execution = {}
            for received in orchestrator.received:
                # daprd hands over the stored data bytes unchanged, as a structured CloudEvent.
                assert received.body in entries
                assert received.headers["Content-Type"] == "application/cloudevents+json"
                assert received.headers["pubsubname"] == run.settings.pubsub_name
                metadata = orjson.loads(entries[received.body][b"metadata"])
                assert isinstance(metadata, dict)
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
                event = from_json(received.body)
                by_execution[event["executionid"]] = event
            assert by_execution[ok_id]["type"] == "fleet.execution.completed"
            assert by_execution[ok_id].data["output"] == {"hello": "<world>"}
            assert by_execution[failed_id]["type"] == "fleet.execution.failed"
            assert by_execution[failed_id].data["error"]["code"] == "unknown_function"
            # Taken as valid CloudEvents: acked, nothing dead-lettered by the orchestrator's daprd.
            assert daprd.dead_lettered == []
            assert len(daprd.acked) == 2
            summary = await run.redis.xpending(run.results_topic, "orchestrator")
            assert summary["pending"] == 0
