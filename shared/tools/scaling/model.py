"""The values the scaling pieces pass each other: what one poll observed of a domain's stream,
and one scaling decision as it is logged (structured log line + the bounded scale-event stream).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

__all__ = ["Observation", "ScaleEvent", "scale_events_stream"]


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll of a domain, as KEDA's redis-streams scaler reads it (keda.md §1).

    ``lag``: the group's ``lag`` from ``XINFO GROUPS`` (``None`` when Redis reports it as NULL,
    or when the group is missing and ``XLEN`` stood in: then ``stream_length`` holds it);
    ``pending``: the ``XPENDING`` summary count (``None`` when the group is missing);
    ``group_exists``: whether the consumer group was found; ``error``: set when the read failed
    (the decision then takes no action, as KEDA does).
    """

    lag: int | None
    pending: int | None
    stream_length: int | None = None
    group_exists: bool = True
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """One decision of the autoscaler: ``current`` → ``desired`` processes of ``domain`` and why
    (``reason``: e.g. ``activate``, ``scale-up``, ``scale-down``, ``cooldown``, ``hold``,
    ``error``), with the metrics it saw. ``at`` is a Unix timestamp (seconds)."""

    at: float
    domain: str
    current: int
    desired: int
    reason: str
    lag: int | None = None
    pending: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> ScaleEvent:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(**data)


def scale_events_stream(group_prefix: str) -> str:
    """The bounded Redis stream the autoscaler appends its decisions to (one per fleet)."""
    return f"{group_prefix}scale-events"
