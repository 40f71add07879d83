"""The JSON Lines record format shared by ``export``, ``record``, ``replay`` and ``diff``.

One line per stream entry::

    {"stream": "functions.ai", "id": "1732350000000-0", "time": "2024-11-23T08:20:00.000Z",
     "event": {...the CloudEvent...}, "metadata": {...the entry's metadata map...}}

* ``time`` is the entry id's millisecond part (when Redis stored it), in UTC;
* ``event`` is the ``data`` field parsed as JSON; when ``data`` is not a JSON object (an
  undecodable dead letter, say) ``event`` is ``null`` and the bytes are kept in ``raw`` (UTF-8
  text) or ``raw_base64``, so nothing is lost;
* replay results files add ``replay``: ``{"original_id", "execution_id", "outcome"}`` where
  ``outcome`` is ``"result"`` or ``"timeout"`` (no result arrived; then ``event`` is ``null``).

Classification is by CloudEvent type: requests are ``fleet.execution.requested`` events, or
daprd's ``com.dapr.event.sent`` whose ``data`` is a request object; results are
``fleet.execution.completed`` / ``fleet.execution.failed``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import orjson

from shared.contract import DAPR_DEFAULT_EVENT_TYPE, EVENT_COMPLETED, EVENT_FAILED, EVENT_REQUESTED
from shared.errors import FleetError

__all__ = [
    "RecordFormatError",
    "entry_record",
    "entry_time",
    "is_request",
    "is_result",
    "read_records",
    "record_line",
    "request_id",
    "result_execution_id",
]

_RESULT_TYPES = frozenset({EVENT_COMPLETED, EVENT_FAILED})


class RecordFormatError(FleetError, ValueError):
    """A line of a records file is not a record (names the file and line)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entry_time(entry_id: str) -> str:
    """The UTC time (ISO 8601, milliseconds, ``Z``) encoded in a stream entry id."""
    ms = int(entry_id.partition("-")[0])
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _metadata(raw: bytes | None) -> dict[str, Any]:
    # Dapr's wire format: a JSON string map; anything else is ignored, as daprd does.
    if not raw:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def entry_record(stream: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """The record (see module docstring) of one stream entry as redis-py returns it."""
    entry = _text(entry_id)
    data = fields.get(b"data", b"")
    record: dict[str, Any] = {"stream": stream, "id": entry, "time": entry_time(entry), "event": None}
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        event = None
    if isinstance(event, dict):
        record["event"] = event
    else:
        try:
            record["raw"] = data.decode()
        except UnicodeDecodeError:
            record["raw_base64"] = base64.b64encode(data).decode()
    record["metadata"] = _metadata(fields.get(b"metadata"))
    return record


def record_line(record: dict[str, Any]) -> bytes:
    """One record as a JSON Lines line (compact, newline-terminated)."""
    return orjson.dumps(record) + b"\n"


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines file, one at a time (blank lines skipped).

    Raises :class:`RecordFormatError` for a line that is not a JSON object.
    """
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise RecordFormatError(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(record, dict):
                raise RecordFormatError(f"{path}:{number}: not a record (a JSON object)")
            yield record


def is_request(event: Any) -> TypeGuard[dict[str, Any]]:
    """Whether ``event`` is an execution request (ours, or daprd's default type with a request)."""
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
        return False
    event_type = event.get("type")
    if event_type == EVENT_REQUESTED:
        return True
    data = event.get("data")
    return (
        event_type == DAPR_DEFAULT_EVENT_TYPE
        and isinstance(data, dict)
        and isinstance(data.get("function"), str)
    )


def request_id(event: dict[str, Any]) -> str:
    """The execution id of a request event (its CloudEvent id)."""
    return str(event["id"])


def is_result(event: Any) -> TypeGuard[dict[str, Any]]:
    """Whether ``event`` is a result event with a ``data`` object."""
    return (
        isinstance(event, dict) and event.get("type") in _RESULT_TYPES and isinstance(event.get("data"), dict)
    )


def result_execution_id(event: dict[str, Any]) -> str | None:
    """The request id a result answers: the ``executionid`` extension, else ``data.execution_id``."""
    value = event.get("executionid")
    if not isinstance(value, str) or not value:
        data = event.get("data")
        value = data.get("execution_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None
