"""Dead letters: read them, find one, move them back (``fleet dlq …``).

Two writers put entries on ``<topic>.dlq``, both keeping the original ``data`` bytes:

* this fleet's Redis transport: ``metadata`` = the original map plus ``fleet.error``,
  ``fleet.deliveries``, ``fleet.topic``, ``fleet.message-id``, ``fleet.dead-lettered-at``;
* daprd's ``deadLetterTopic``: the original map plus ``pubsubName`` and nothing else.

:class:`DeadLetter` reads both the same way; what a writer did not say is ``None`` (shown as
"unknown"). The dead-lettering time falls back to the DLQ entry id, which is when it was added.

Redrive moves an entry back to its domain topic with a Lua script that does ``XADD <topic>``
and ``XDEL <dlq>`` together (scripts run atomically), so an interrupted redrive neither loses
nor duplicates an entry. The new entry has a new id, so its delivery count starts afresh; the
republished metadata drops the ``fleet.*`` keys and ``pubsubName`` and adds
``fleet.redriven-from`` (the DLQ entry id) so the move stays traceable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.tools.replay.records import entry_time, is_request, result_execution_id
from shared.transports.redis import redis_errors_as_transport

__all__ = ["DeadLetter", "RedriveReport", "find_dead_letter", "iter_dead_letters", "redrive"]

_PAGE = 200

# KEYS: dlq, topic. ARGV: dlq entry id. Returns the new entry id, or false when the entry is
# gone (already redriven, or never there). cjson ships with Redis and Valkey scripting.
_REDRIVE_LUA = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entries == 0 then return false end
local fields = entries[1][2]
local data, raw_meta = nil, nil
for i = 1, #fields, 2 do
  if fields[i] == 'data' then data = fields[i + 1]
  elseif fields[i] == 'metadata' then raw_meta = fields[i + 1] end
end
local kept = {}
if raw_meta then
  local ok, meta = pcall(cjson.decode, raw_meta)
  if ok and type(meta) == 'table' then
    for k, v in pairs(meta) do
      if type(k) == 'string' and string.sub(k, 1, 6) ~= 'fleet.' and k ~= 'pubsubName' then
        kept[k] = tostring(v)
      end
    end
  end
end
kept['fleet.redriven-from'] = ARGV[1]
local new_id = redis.call('XADD', KEYS[2], '*', 'data', data or '', 'metadata', cjson.encode(kept))
redis.call('XDEL', KEYS[1], ARGV[1])
return new_id
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """One DLQ entry, whoever wrote it. ``None`` = the writer did not record it."""

    dlq: str
    id: str
    topic: str
    execution_id: str | None
    function: str | None
    error: str | None
    deliveries: int | None
    message_id: str | None
    dead_lettered_at: str
    writer: str
    metadata: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] | None = None
    data: bytes = b""

    def summary(self) -> dict[str, Any]:
        """The listing fields as a JSON-ready dict (missing ones ``None``)."""
        return {
            "id": self.id,
            "dlq": self.dlq,
            "topic": self.topic,
            "execution_id": self.execution_id,
            "function": self.function,
            "error": self.error,
            "deliveries": self.deliveries,
            "message_id": self.message_id,
            "dead_lettered_at": self.dead_lettered_at,
            "writer": self.writer,
        }

    def details(self) -> dict[str, Any]:
        """Everything: the summary, the metadata, and the CloudEvent (or the raw data)."""
        shown = self.summary()
        shown["metadata"] = self.metadata
        if self.event is not None:
            shown["event"] = self.event
        else:
            shown["raw"] = self.data.decode(errors="replace")
        return shown


def parse_dead_letter(dlq: str, topic: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    """A :class:`DeadLetter` from a DLQ entry; ``topic`` is the topic the DLQ belongs to."""
    entry = _text(entry_id)
    data = fields.get(b"data", b"")
    metadata: dict[str, Any] = {}
    try:
        parsed = orjson.loads(fields.get(b"metadata", b"{}"))
        if isinstance(parsed, dict):
            metadata = parsed
    except orjson.JSONDecodeError:
        pass
    event: dict[str, Any] | None = None
    try:
        loaded = orjson.loads(data)
        event = loaded if isinstance(loaded, dict) else None
    except orjson.JSONDecodeError:
        pass
    execution_id = function = None
    if event is not None:
        if is_request(event):
            execution_id, function = str(event["id"]), str(event["data"]["function"])
        else:
            execution_id = result_execution_id(event) or (
                event["id"] if isinstance(event.get("id"), str) else None
            )
            body = event.get("data")
            slug = body.get("function") if isinstance(body, dict) else None
            function = slug if isinstance(slug, str) else None
    deliveries = metadata.get("fleet.deliveries")
    fleet_wrote = any(str(k).startswith("fleet.") for k in metadata)
    return DeadLetter(
        dlq=dlq,
        id=entry,
        topic=str(metadata.get("fleet.topic") or topic),
        execution_id=execution_id,
        function=function,
        error=_opt(metadata.get("fleet.error")),
        deliveries=int(deliveries) if isinstance(deliveries, str) and deliveries.isdigit() else None,
        message_id=_opt(metadata.get("fleet.message-id")),
        dead_lettered_at=_opt(metadata.get("fleet.dead-lettered-at")) or entry_time(entry),
        writer="fleet" if fleet_wrote else "dapr" if "pubsubName" in metadata else "unknown",
        metadata=metadata,
        event=event,
        data=data,
    )


def _opt(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


async def iter_dead_letters(
    redis: Redis, dlq: str, topic: str, *, limit: int | None = None
) -> AsyncIterator[DeadLetter]:
    """The entries of ``dlq`` oldest first, paged (bounded memory), at most ``limit``."""
    lower, seen = "-", 0
    while limit is None or seen < limit:
        count = _PAGE if limit is None else min(_PAGE, limit - seen)
        async with redis_errors_as_transport(f"XRANGE {dlq}"):
            page: Any = await redis.xrange(dlq, min=lower, max="+", count=count)
        for entry_id, fields in page:
            yield parse_dead_letter(dlq, topic, entry_id, fields)
        seen += len(page)
        if len(page) < count:
            return
        lower = "(" + _text(page[-1][0])


async def find_dead_letter(
    redis: Redis, queues: Sequence[tuple[str, str]], entry_id: str
) -> DeadLetter | None:
    """The entry ``entry_id`` in the first of ``queues`` (``(dlq, topic)`` pairs) holding it."""
    for dlq, topic in queues:
        async with redis_errors_as_transport(f"XRANGE {dlq}"):
            found: Any = await redis.xrange(dlq, min=entry_id, max=entry_id, count=1)
        if found:
            return parse_dead_letter(dlq, topic, found[0][0], found[0][1])
    return None


@dataclass(slots=True)
class RedriveReport:
    """``moved``: ``(dlq id, new topic id)`` pairs; ``missing``: ids that were not in the DLQ."""

    moved: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


async def redrive(redis: Redis, dlq: str, topic: str, ids: Sequence[str] | None = None) -> RedriveReport:
    """Move the entries ``ids`` (all entries present now when ``None``) from ``dlq`` back to
    ``topic``, each atomically (module docstring). With ``None``, entries dead-lettered while
    this runs are left alone, so a request that fails again cannot make it loop forever."""
    script = redis.register_script(_REDRIVE_LUA)
    report = RedriveReport()

    async def move(entry_id: str) -> None:
        async with redis_errors_as_transport(f"redriving {dlq} {entry_id}"):
            new_id = await script(keys=[dlq, topic], args=[entry_id])
        if new_id:
            report.moved.append((entry_id, _text(new_id)))
        else:
            report.missing.append(entry_id)

    if ids is not None:
        for entry_id in ids:
            await move(entry_id)
        return report
    async with redis_errors_as_transport(f"XREVRANGE {dlq}"):
        newest: Any = await redis.xrevrange(dlq, count=1)
    if not newest:
        return report
    upper, lower = _text(newest[0][0]), "-"
    while True:
        async with redis_errors_as_transport(f"XRANGE {dlq}"):
            page: Any = await redis.xrange(dlq, min=lower, max=upper, count=_PAGE)
        for entry_id, _ in page:
            await move(_text(entry_id))
        if len(page) < _PAGE:
            return report
        lower = "(" + _text(page[-1][0])
