"""Compare two sets of results by request (``fleet topic diff BEFORE AFTER``).

Either file may be a recording (``record``/``export`` output: requests and results mixed) or
a replay results file. Results are keyed by the request they answer: a replay record by its
``replay.original_id`` (so new-id replays pair with the recording), any other result by its
``executionid``. When a file holds requests (request records or replay records), exactly
those requests are its side — results for requests it did not record are set aside and
counted; a file with results only is keyed by those results. The last result for a request
wins (a redelivered duplicate answers the same request again).

What is compared: ``status``, ``output`` and ``error.code``. Timing and placement (started_at,
completed_at, duration_ms, worker, attempt, the event's id and time) never are; ``ignore`` paths
(``output.timestamp``, ``/output/items/*/id``; ``*`` matches any key or index) drop volatile
parts before comparing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from shared.tools.replay.records import is_request, is_result, read_records, request_id, result_execution_id

__all__ = [
    "DiffReport",
    "RequestDiff",
    "ResultSet",
    "diff_results",
    "format_report",
    "load_results",
    "parse_path",
    "project",
]

#: Shown in place of a value that is not there.
ABSENT_TEXT = "(absent)"
_MAX_VALUE_TEXT = 200


class _Absent:
    def __repr__(self) -> str:
        return ABSENT_TEXT


_ABSENT: Any = _Absent()


def parse_path(path: str) -> list[str]:
    """``output.timestamp`` or ``/output/timestamp`` → ``["output", "timestamp"]``."""
    text = path.strip()
    parts = text.lstrip("/").split("/") if text.startswith("/") else text.split(".")
    segments = [p for p in parts if p]
    if not segments:
        raise ValueError(f"empty ignore path {path!r}")
    return segments


def _drop(value: Any, segments: Sequence[str]) -> None:
    head, rest = segments[0], segments[1:]
    if isinstance(value, dict):
        keys = list(value) if head == "*" else [head] if head in value else []
        for key in keys:
            if rest:
                _drop(value[key], rest)
            else:
                del value[key]
    elif isinstance(value, list):
        indexes = range(len(value)) if head == "*" else [int(head)] if head.isdigit() else []
        for index in sorted((i for i in indexes if i < len(value)), reverse=True):
            if rest:
                _drop(value[index], rest)
            else:
                # Drop by blanking, so the other indexes keep their meaning.
                value[index] = None


def project(data: dict[str, Any], ignore: Iterable[Sequence[str]] = ()) -> dict[str, Any]:
    """The compared part of a result's ``data``: status, output (when present), error code
    (when present), with the ``ignore`` paths (parsed) removed."""
    compared: dict[str, Any] = {"status": data.get("status")}
    if "output" in data:
        compared["output"] = data["output"]
    error = data.get("error")
    if isinstance(error, dict):
        compared["error"] = {"code": error.get("code")}
    for segments in ignore:
        _drop(compared, segments)
    return compared


@dataclass(slots=True)
class ResultSet:
    """One side of a diff: request key → compared result (``None``: no result), in file order."""

    outcomes: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)
    #: results whose request is not among this file's requests (set aside).
    unpaired: int = 0


def load_results(path: Path, ignore: Sequence[str] = ()) -> ResultSet:
    """Read one side from a records file (see module docstring). Streams the file; keeps only
    the compared part of each result. Raises RecordFormatError / ValueError for bad input."""
    paths = [parse_path(p) for p in ignore]
    requests: dict[str, None] = {}
    results: dict[str, dict[str, Any]] = {}
    functions: dict[str, str] = {}
    for record in read_records(path):
        event = record.get("event")
        replay = record.get("replay")
        if isinstance(replay, dict) and isinstance(replay.get("original_id"), str):
            key = replay["original_id"]
            requests[key] = None
            if is_result(event):
                results[key] = project(event["data"], paths)
                _note_function(functions, key, event["data"])
        elif is_request(event):
            key = request_id(event)
            requests[key] = None
            _note_function(functions, key, event["data"])
        elif is_result(event):
            answered = result_execution_id(event)
            if answered is not None:
                results[answered] = project(event["data"], paths)
                _note_function(functions, answered, event["data"])
    side = ResultSet(functions=functions)
    if requests:
        side.outcomes = {key: results.get(key) for key in requests}
        side.unpaired = sum(1 for key in results if key not in requests)
    else:
        side.outcomes = dict(results)
    return side


def _note_function(functions: dict[str, str], key: str, data: Any) -> None:
    slug = data.get("function") if isinstance(data, dict) else None
    if isinstance(slug, str) and key not in functions:
        functions[key] = slug


@dataclass(frozen=True, slots=True)
class RequestDiff:
    """How one request's results differ. ``changes`` lists ``(path, before, after)`` for
    ``changed``; ``only_before`` / ``only_after`` mean a result exists on one side only."""

    key: str
    function: str | None
    kind: Literal["changed", "only_before", "only_after"]
    changes: tuple[tuple[str, Any, Any], ...] = ()


@dataclass(slots=True)
class DiffReport:
    """The outcome of a diff; ``differs`` decides the exit code."""

    compared: int = 0
    identical: int = 0
    unanswered: int = 0
    differences: list[RequestDiff] = field(default_factory=list)
    unpaired_before: int = 0
    unpaired_after: int = 0

    @property
    def differs(self) -> bool:
        return bool(self.differences)


def _changes(before: Any, after: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in list(before) + [k for k in after if k not in before]:
            yield from _changes(
                before.get(key, _ABSENT), after.get(key, _ABSENT), f"{path}.{key}" if path else str(key)
            )
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (b, a) in enumerate(zip(before, after, strict=True)):
            yield from _changes(b, a, f"{path}.{index}")
    elif before is _ABSENT or after is _ABSENT or type(before) is not type(after) or before != after:
        # `type` too: JSON's true and 1 are different answers though Python finds them equal.
        yield (path or "(result)", before, after)


def diff_results(before: ResultSet, after: ResultSet) -> DiffReport:
    """Pair ``before`` and ``after`` by request and collect what differs (module docstring)."""
    report = DiffReport(unpaired_before=before.unpaired, unpaired_after=after.unpaired)
    keys = list(before.outcomes) + [k for k in after.outcomes if k not in before.outcomes]
    for key in keys:
        report.compared += 1
        old, new = before.outcomes.get(key), after.outcomes.get(key)
        function = before.functions.get(key) or after.functions.get(key)
        if old is None and new is None:
            report.unanswered += 1
        elif new is None:
            report.differences.append(RequestDiff(key, function, "only_before"))
        elif old is None:
            report.differences.append(RequestDiff(key, function, "only_after"))
        else:
            changes = tuple(_changes(old, new, ""))
            if changes:
                report.differences.append(RequestDiff(key, function, "changed", changes))
            else:
                report.identical += 1
    return report


def _show(value: Any) -> str:
    if value is _ABSENT:
        return ABSENT_TEXT
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= _MAX_VALUE_TEXT else text[: _MAX_VALUE_TEXT - 1] + "…"


def format_report(
    report: DiffReport, before_name: str = "BEFORE", after_name: str = "AFTER"
) -> Iterator[str]:
    """Lines for people: one block per differing request, then a summary line."""
    for item in report.differences:
        label = f"{item.key} ({item.function or 'unknown function'})"
        if item.kind == "only_before":
            yield f"- {label}: result only in {before_name}"
        elif item.kind == "only_after":
            yield f"+ {label}: result only in {after_name}"
        else:
            yield f"~ {label}"
            for path, old, new in item.changes:
                yield f"    {path}: {_show(old)} -> {_show(new)}"
    summary = (
        f"{report.compared} requests compared: {report.identical} identical, "
        f"{sum(1 for d in report.differences if d.kind == 'changed')} changed, "
        f"{sum(1 for d in report.differences if d.kind != 'changed')} answered on one side only"
    )
    if report.unanswered:
        summary += f", {report.unanswered} unanswered on both sides"
    yield summary
    for count, name in ((report.unpaired_before, before_name), (report.unpaired_after, after_name)):
        if count:
            yield f"({count} results in {name} answer requests it did not record; not compared)"
