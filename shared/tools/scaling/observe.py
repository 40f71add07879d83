"""The metric reads KEDA's redis-streams scaler sends for the triggers the manifests render
(docs/scaling.md, keda.md §1): ``XINFO GROUPS`` for the lag of the domain's group (``XLEN`` of
the stream when the group is missing), and the ``XPENDING`` summary for the in-flight count.

All reads of one poll go in one pipeline: one round trip per call, however many domains.
``INFO`` is not sent: KEDA uses it only to refuse Redis < 7, which shows here as a group
reply without a ``lag`` field (reported as an error, as KEDA does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis import exceptions as redis_errors

from shared.domains import Domain
from shared.settings import Settings
from shared.tools.scaling.model import Observation

__all__ = ["READS_PER_OBSERVATION", "observe", "observe_all", "parse_reads", "queue_reads"]

#: How many pipeline replies :func:`queue_reads` adds (and :func:`parse_reads` consumes).
READS_PER_OBSERVATION = 3

#: What a failed round trip can raise: the pipeline's connection errors and socket errors.
REDIS_FAILURES: tuple[type[BaseException], ...] = (redis_errors.RedisError, OSError)


def queue_reads(pipe: Any, topic: str, group: str) -> None:
    """Add one poll's reads of ``topic``/``group`` to ``pipe`` (a non-transactional pipeline
    executed with ``raise_on_error=False``): XINFO GROUPS, XLEN, XPENDING summary. XLEN is
    always sent (O(1)) so the fallback for a missing group needs no second round trip."""
    pipe.xinfo_groups(topic)
    pipe.xlen(topic)
    pipe.xpending(topic, group)


def parse_reads(replies: Sequence[Any], group: str) -> Observation:
    """The observation in the :data:`READS_PER_OBSERVATION` replies :func:`queue_reads` queued.

    As KEDA reads them: a missing stream (``ERR no such key``) or a missing group leaves
    ``lag`` unset, ``group_exists`` False and ``stream_length`` = XLEN (0 for no stream), the
    stand-in for the lag; XPENDING then fails with NOGROUP, so ``pending`` is ``None``. Any
    other error reply sets ``error``."""
    groups, length, pending = replies
    stream_length = None if isinstance(length, Exception) else int(length)
    if isinstance(groups, Exception):
        if "no such key" in str(groups).lower():
            return Observation(lag=None, pending=None, stream_length=stream_length or 0, group_exists=False)
        return _failed(f"XINFO GROUPS: {groups}")
    if isinstance(length, Exception):
        return _failed(f"XLEN: {length}")
    found = next((g for g in groups if _text(g.get("name")) == group), None)
    if found is None:
        return Observation(lag=None, pending=None, stream_length=stream_length, group_exists=False)
    if "lag" not in found:
        return _failed("redis version 7+ required for lag (XINFO GROUPS has no lag field)")
    lag = found["lag"]
    if isinstance(pending, Exception):
        if "nogroup" in str(pending).lower():  # deleted between the two reads
            return Observation(lag=None, pending=None, stream_length=stream_length, group_exists=False)
        return _failed(f"XPENDING: {pending}")
    return Observation(
        lag=None if lag is None else int(lag),
        pending=int(pending["pending"]),
        stream_length=stream_length,
    )


async def observe(redis: Any, topic: str, group: str) -> Observation:
    """One poll of ``group`` on ``topic`` (one round trip). Never raises for Redis errors: a
    failed read is an :class:`Observation` with ``error`` set."""
    return (await _observe_many(redis, [(topic, group)]))[0]


async def observe_all(redis: Any, settings: Settings, domains: Iterable[Domain]) -> dict[str, Observation]:
    """One poll of every domain in ``domains`` (their request topic and consumer group under
    ``settings``), in one round trip; keyed by domain name. Never raises for Redis errors."""
    domains = list(domains)
    pairs = [(settings.topic_for(d.name), settings.group_for(d.name)) for d in domains]
    observations = await _observe_many(redis, pairs)
    return {d.name: o for d, o in zip(domains, observations, strict=True)}


async def _observe_many(redis: Any, pairs: Sequence[tuple[str, str]]) -> list[Observation]:
    pipe = redis.pipeline(transaction=False)
    for topic, group in pairs:
        queue_reads(pipe, topic, group)
    try:
        replies = await pipe.execute(raise_on_error=False)
    except REDIS_FAILURES as exc:
        failed = _failed(f"{type(exc).__name__}: {exc}")
        return [failed for _ in pairs]
    n = READS_PER_OBSERVATION
    return [parse_reads(replies[i * n : (i + 1) * n], group) for i, (_, group) in enumerate(pairs)]


def _failed(message: str) -> Observation:
    return Observation(lag=None, pending=None, error=message)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
