"""Decoding request CloudEvents and encoding result CloudEvents (structured JSON mode).

Decoding rules, in order (docs/contract.md, "Bad input"):

1. not JSON, not an object, no ``specversion`` or no string ``id`` → :class:`UndecodableEvent`
   (the delivery is dropped / dead-lettered: there is no id to answer to);
2. anything else wrong (type, source, datacontenttype, ``data`` shape, ``subject`` ≠
   ``data.function``) → :class:`InvalidEvent`, answered with a failed ``invalid_event`` result.

Events built by daprd's publish API are accepted as they are: extra attributes (``topic``,
``pubsubname``, ``traceid``, empty ``traceparent``) are ignored, and type
``com.dapr.event.sent`` is taken when ``data`` is a request object.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from shared.clock import utc_now_iso
from shared.contract import (
    DAPR_DEFAULT_EVENT_TYPE,
    EVENT_COMPLETED,
    EVENT_FAILED,
    EVENT_REQUESTED,
    ORIGIN_ALIASES,
    RequestData,
    apply_origin_aliases,
)
from shared.errors import InvalidEvent, UndecodableEvent

__all__ = [
    "RequestEvent",
    "child_traceparent",
    "decode_request",
    "encode_request",
    "encode_result",
    "new_event_id",
    "peek_id",
    "utc_now_iso",
    "violations",
]

_ACCEPTED_TYPES = frozenset({EVENT_REQUESTED, DAPR_DEFAULT_EVENT_TYPE})
_ALIAS_KEYS = frozenset(ORIGIN_ALIASES)


@dataclass(slots=True)
class RequestEvent:
    """A decoded ``fleet.execution.requested`` CloudEvent."""

    id: str
    source: str
    type: str
    data: RequestData
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def function(self) -> str:
        """The slug as requested (empty when the request names only a ``function_id``)."""
        return self.data.function or ""


def violations(error: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as the contract's ``[{path, message}]`` (path in JSON-pointer form)."""
    return [
        {"path": "/" + "/".join(str(p) for p in e["loc"]), "message": e["msg"]}
        for e in error.errors(include_url=False)
    ]


def decode_request(body: bytes) -> RequestEvent:
    """Decode one delivery body into a :class:`RequestEvent` (rules in the module docstring)."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UndecodableEvent(f"body is not JSON: {exc}", raw=body) from None
    if not isinstance(event, dict) or "specversion" not in event:
        raise UndecodableEvent("body is not a CloudEvent (no specversion)", raw=body)
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise UndecodableEvent("CloudEvent has no id to answer to", raw=body)

    raw_data = event.get("data")
    if isinstance(raw_data, dict) and not _ALIAS_KEYS.isdisjoint(raw_data):
        try:
            raw_data = apply_origin_aliases(raw_data)
        except ValueError as exc:
            raise InvalidEvent(str(exc), execution_id=event_id) from None
    guess = raw_data.get("function") if isinstance(raw_data, dict) else None
    slug = guess if isinstance(guess, str) else event.get("subject")

    def invalid(message: str, details: Any = None) -> InvalidEvent:
        return InvalidEvent(
            message,
            details=details,
            execution_id=event_id,
            slug=slug if isinstance(slug, str) else None,
        )

    if event["specversion"] != "1.0":
        raise invalid(f"unsupported specversion {event['specversion']!r}; expected '1.0'")
    source = event.get("source")
    if not isinstance(source, str) or not source:
        raise invalid("CloudEvent has no source")
    event_type = event.get("type")
    if event_type not in _ACCEPTED_TYPES:
        raise invalid(f"unexpected event type {event_type!r}; expected {EVENT_REQUESTED!r}")
    content_type = event.get("datacontenttype")
    if content_type is not None and not _is_json(content_type):
        raise invalid(f"datacontenttype {content_type!r} is not application/json")
    if not isinstance(raw_data, dict):
        raise invalid("data must be a JSON object {function, input, ...}")
    try:
        request = RequestData.model_validate(raw_data)
    except ValidationError as exc:
        raise invalid("data is not a valid execution request", violations(exc)) from None
    if request.function is None and request.function_id is None:
        raise invalid("data names no function: give `function` (slug) or `function_id`")
    subject = event.get("subject")
    if subject is not None and request.function is not None and subject != request.function:
        raise invalid(f"subject {subject!r} does not match data.function {request.function!r}")
    return RequestEvent(
        id=event_id,
        source=source,
        type=event_type,
        data=request,
        traceparent=event.get("traceparent") or None,
        tracestate=event.get("tracestate") or None,
    )


def peek_id(body: bytes) -> str | None:
    """The ``id`` of an event too large to decode fully, or ``None``. Used only on the
    oversized-payload path, so a full parse is acceptable there."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(event, dict) and "specversion" in event:
        event_id = event.get("id")
        if isinstance(event_id, str) and event_id:
            return event_id
    return None


def _is_json(content_type: object) -> bool:
    if not isinstance(content_type, str):
        return False
    base = content_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


def new_event_id() -> str:
    """A random (version 4) UUID string, built from 16 random bytes directly (``uuid.uuid4``
    plus ``str`` costs twice as much on the per-result path)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def child_traceparent(traceparent: str | None) -> str | None:
    """Continue a W3C trace: same trace id and flags, a new parent (span) id.

    A malformed header is not continued (W3C: ignore it) rather than failing the request.
    """
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return f"{parts[0]}-{parts[1]}-{os.urandom(8).hex()}-{parts[3]}"


def encode_result(
    *,
    request_id: str,
    function: str,
    domain: str,
    data: dict[str, Any],
    data_json: bytes | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    continue_trace: bool = True,
) -> bytes:
    """The result CloudEvent for ``data`` (an :class:`~shared.contract.ExecutionResult` dict);
    ``data_json``, when given, is ``data`` already encoded (embedded as it is).

    ``traceparent`` is the request's, continued with a new span id (:func:`child_traceparent`);
    with ``continue_trace=False`` it is the context of the span publishing the result (tracing
    on) and written as it is."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": new_event_id(),
        "source": f"fleet/{domain}",
        "type": EVENT_COMPLETED if data["status"] == "completed" else EVENT_FAILED,
        "time": data.get("completed_at") or utc_now_iso(),
        "datacontenttype": "application/json",
        "executionid": request_id,
        "data": data if data_json is None else orjson.Fragment(data_json),
    }
    if function:
        # CloudEvents forbids an empty subject; a request too broken to name its function has none.
        event["subject"] = function
    child = child_traceparent(traceparent) if continue_trace else traceparent
    if child:
        event["traceparent"] = child
        # daprd replaces `traceparent` with its own publish span unless `traceid` is present
        # (dapr-wire.md §3), so both carry the continued trace through a Dapr publish.
        event["traceid"] = child
        if tracestate:
            event["tracestate"] = tracestate
    return orjson.dumps(event)


def encode_request(
    *,
    function: str,
    input: dict[str, Any],
    execution_id: str | None = None,
    source: str = "fleet-client",
    context: dict[str, Any] | None = None,
    workflow_execution_id: str | None = None,
    node_id: str | None = None,
    timeout_seconds: float | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> tuple[str, bytes]:
    """Build a request CloudEvent; returns ``(execution_id, body)``."""
    execution_id = execution_id or str(uuid.uuid4())
    data: dict[str, Any] = {"function": function, "input": input}
    if context is not None:
        data["context"] = context
    if workflow_execution_id is not None:
        data["workflow_execution_id"] = workflow_execution_id
    if node_id is not None:
        data["node_id"] = node_id
    if timeout_seconds is not None:
        data["timeout_seconds"] = timeout_seconds
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": execution_id,
        "source": source,
        "type": EVENT_REQUESTED,
        "subject": function,
        "time": utc_now_iso(),
        "datacontenttype": "application/json",
        "data": data,
    }
    if traceparent:
        event["traceparent"] = traceparent
    if tracestate:
        event["tracestate"] = tracestate
    return execution_id, orjson.dumps(event)
