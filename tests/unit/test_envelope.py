"""Request decoding and result encoding: the contract's bad-input table at the codec level."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from cloudevents.core.formats.json import JSONFormat

from shared.contract import EVENT_COMPLETED, EVENT_FAILED, ErrorCode
from shared.errors import InvalidEvent, UndecodableEvent
from shared.runtime.envelope import (
    child_traceparent,
    decode_request,
    encode_request,
    encode_result,
    peek_id,
)


def from_json(body: bytes) -> Any:
    """Parse with the official CloudEvents SDK (structured JSON format)."""
    return JSONFormat().read(None, body)


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def event(**overrides: Any) -> bytes:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "exec-1",
        "source": "orchestrator",
        "type": "fleet.execution.requested",
        "subject": "system/echo",
        "datacontenttype": "application/json",
        "data": {"function": "system/echo", "input": {"a": 1}},
    }
    base.update(overrides)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_decodes_a_request_with_every_optional_field() -> None:
    decoded = decode_request(
        event(
            data={
                "function": "system/echo",
                "input": {"a": 1},
                "context": {"fetch": {"items": [1]}},
                "workflow_execution_id": "wf-1",
                "node_id": "n-1",
                "timeout_seconds": 5,
            },
            traceparent=TRACEPARENT,
            tracestate="vendor=x",
        )
    )
    assert decoded.id == "exec-1"
    assert decoded.function == "system/echo"
    assert decoded.data.input == {"a": 1}
    assert decoded.data.context == {"fetch": {"items": [1]}}
    assert decoded.data.timeout_seconds == 5
    assert (decoded.traceparent, decoded.tracestate) == (TRACEPARENT, "vendor=x")


def test_accepts_events_built_by_daprds_publish_api() -> None:
    # daprd wraps an application/json publish: its own type, extra attributes, empty trace fields.
    body = orjson.dumps(
        {
            "data": {"function": "system/echo", "input": {}},
            "datacontenttype": "application/json",
            "id": "5929aaac-a5e2-4ca1-859c-edfe73f11565",
            "pubsubname": "fleet-pubsub",
            "source": "orchestrator",
            "specversion": "1.0",
            "time": "2026-11-23T10:00:00Z",
            "topic": "functions.ai",
            "traceid": "",
            "traceparent": "",
            "tracestate": "",
            "type": "com.dapr.event.sent",
        },
        option=orjson.OPT_SORT_KEYS,
    )
    decoded = decode_request(body)
    assert decoded.function == "system/echo"
    assert decoded.traceparent is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'"a string"',
        orjson.dumps({"id": "x", "data": {}}),  # no specversion: not a CloudEvent
        event(id=...),
        event(id=""),
        event(id=42),
    ],
    ids=["not-json", "array", "string", "no-specversion", "no-id", "empty-id", "numeric-id"],
)
def test_bodies_without_an_id_to_answer_are_undecodable(body: bytes) -> None:
    with pytest.raises(UndecodableEvent):
        decode_request(body)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"source": ...}, "source"),
        ({"type": "something.else"}, "event type"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"data": "a string"}, "data must be"),
        ({"data": {"input": {}}}, "names no function"),
        ({"data": {"function": "system/echo", "input": [1]}}, "not a valid execution request"),
        ({"data": {"function": "system/echo", "timeout_seconds": -1}}, "not a valid execution request"),
        ({"subject": "other/slug"}, "does not match"),
    ],
)
def test_cloudevents_with_an_id_but_bad_fields_are_invalid_events(
    overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_request(event(**overrides))
    assert caught.value.code == ErrorCode.INVALID_EVENT
    assert caught.value.execution_id == "exec-1"
    assert fragment in caught.value.message


def test_invalid_data_reports_every_violation_with_a_path() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_request(event(data={"function": "", "input": "x"}))
    paths = {v["path"] for v in caught.value.details}
    assert paths == {"/function", "/input"}


def test_structured_json_with_parameters_is_json() -> None:
    decode_request(event(datacontenttype="application/json; charset=utf-8"))
    decode_request(event(datacontenttype="application/cloudevents+json"))


def test_peek_id_finds_the_id_of_a_valid_event_only() -> None:
    assert peek_id(event()) == "exec-1"
    assert peek_id(b"garbage") is None
    assert peek_id(orjson.dumps({"id": "x"})) is None


def test_child_traceparent_keeps_trace_id_and_flags_with_a_new_span() -> None:
    child = child_traceparent(TRACEPARENT)
    assert child is not None
    version, trace_id, span_id, flags = child.split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert len(span_id) == 16
    assert span_id != "00f067aa0ba902b7"
    assert child_traceparent(None) is None
    assert child_traceparent("garbage") is None


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_results_parse_with_the_official_cloudevents_sdk(status: str) -> None:
    data: dict[str, Any] = {"execution_id": "exec-1", "function": "system/echo", "status": status}
    body = encode_result(
        request_id="exec-1",
        function="system/echo",
        domain="ai",
        data=data,
        traceparent=TRACEPARENT,
        tracestate="vendor=x",
    )
    parsed = from_json(body)
    attributes = parsed.get_attributes()
    assert attributes["type"] == (EVENT_COMPLETED if status == "completed" else EVENT_FAILED)
    assert attributes["source"] == "fleet/ai"
    assert attributes["subject"] == "system/echo"
    assert attributes["executionid"] == "exec-1"
    assert attributes["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    assert attributes["tracestate"] == "vendor=x"
    assert parsed.get_data() == data


def test_encoded_requests_round_trip_and_parse_with_the_sdk() -> None:
    execution_id, body = encode_request(
        function="system/sleep", input={"seconds": 1}, node_id="n", timeout_seconds=3
    )
    assert from_json(body).get_attributes()["id"] == execution_id
    decoded = decode_request(body)
    assert (decoded.id, decoded.function, decoded.data.node_id) == (execution_id, "system/sleep", "n")


def test_results_without_a_function_omit_subject_and_still_parse() -> None:
    data: dict[str, Any] = {"execution_id": "exec-1", "function": "", "status": "failed"}
    body = encode_result(request_id="exec-1", function="", domain="ai", data=data)
    assert "subject" not in orjson.loads(body)
    assert from_json(body).get_attributes()["executionid"] == "exec-1"


def test_results_carry_traceid_so_daprd_keeps_the_continued_trace() -> None:
    data: dict[str, Any] = {"execution_id": "e", "function": "system/echo", "status": "completed"}
    event = orjson.loads(
        encode_result(request_id="e", function="system/echo", domain="ai", data=data, traceparent=TRACEPARENT)
    )
    assert event["traceid"] == event["traceparent"]
    assert event["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
