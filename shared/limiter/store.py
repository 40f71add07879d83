"""Fleet-wide limits in Redis: concurrency leases and GCRA rate limits, each decision one Lua
script (atomic on the server, timed by the server's clock, so replicas never disagree).

Keys (under ``FLEET_GROUP_PREFIX``, on the one Redis node the streams live on):

* ``<prefix>limits:running:<slug>`` (or ``…:<slug>|<key>`` per concurrency key) — a sorted set
  of lease tokens scored by their expiry (epoch ms). A slot is taken by adding a token while
  fewer than ``max_concurrency`` unexpired ones are there, given back by removing it, and kept by
  renewing it (:meth:`LimitStore.renew`); a holder that dies stops renewing and its token
  expires: the slot comes back within one lease, nothing leaks.
* ``<prefix>limits:rate:function:<slug>`` and ``…:rate:provider:<provider>`` — the theoretical
  arrival time (TAT, epoch ms) of the Generic Cell Rate Algorithm: a start is allowed when
  ``TAT - tolerance <= now`` and moves TAT to ``max(TAT, now) + interval``. One key per limit,
  expiring when it no longer holds anything back.

:meth:`LimitStore.admit` takes the concurrency slot and a start from every rate limit of a call
together, or nothing: a call refused by its rate limit holds no slot, and one refused a slot
spends no start.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared.limits import RateLimit

__all__ = ["Admission", "LimitStore", "RateUsage"]

#: Pairs per renewal call: bounds one script's time on the server.
CHUNK = 256
#: Longest key value kept readable in a key name; longer ones are hashed.
MAX_KEY_TEXT = 64

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: [running set], rate keys...  ARGV: token, limit (0: no concurrency limit), lease ms,
# then per rate key its interval ms and tolerance ms.
# Reply: {admitted 0|1, wait ms (rate), holders}.
_ADMIT = (
    _NOW
    + """
local token, limit, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local first, holders = 1, 0
if limit > 0 then
  first = 2
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  holders = redis.call('ZCARD', KEYS[1])
  if holders >= limit and not redis.call('ZSCORE', KEYS[1], token) then
    return {0, 0, holders}
  end
end
local wait, tats = 0, {}
for i = first, #KEYS do
  local j = 4 + (i - first) * 2
  local interval, tolerance = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local allowed_at = tat - tolerance
  if allowed_at > now and allowed_at - now > wait then wait = allowed_at - now end
  tats[i] = tat + interval
end
if wait > 0 then return {0, wait, holders} end
for i = first, #KEYS do
  local ttl = string.format('%.0f', tats[i] - now + 1000)
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
end
if limit > 0 then
  redis.call('ZADD', KEYS[1], now + lease, token)
  if redis.call('PTTL', KEYS[1]) < lease + 1000 then redis.call('PEXPIRE', KEYS[1], lease + 1000) end
  holders = redis.call('ZCARD', KEYS[1])
end
return {1, 0, holders}
"""
)

# ARGV: lease ms, then (key, token) pairs. Renews each live lease; reply: the 1-based indexes
# of the pairs whose lease had already expired (the slot may have been given to another).
_RENEW = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local key, token = ARGV[i], ARGV[i + 1]
  local score = redis.call('ZSCORE', key, token)
  if score and tonumber(score) > now then
    redis.call('ZADD', key, 'XX', now + lease, token)
    if redis.call('PTTL', key) < lease + 1000 then redis.call('PEXPIRE', key, lease + 1000) end
  else
    if score then redis.call('ZREM', key, token) end
    lost[#lost + 1] = (i / 2)
  end
end
return lost
"""
)


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`LimitStore.admit` decided: ``admitted``; else ``wait`` seconds until the
    rate limits allow a start (0 when it was the concurrency limit); ``holders`` running."""

    admitted: bool
    wait: float
    holders: int


@dataclass(frozen=True, slots=True)
class RateUsage:
    """A rate limit's state: starts available right now (of ``burst``) and seconds until the
    next one is (0 when one is)."""

    available: int
    next_in: float


def _key_text(value: str) -> str:
    if len(value) <= MAX_KEY_TEXT and "*" not in value:
        return value
    return "#" + hashlib.sha256(value.encode()).hexdigest()[:32]


class LimitStore:
    """The Redis side of the limits (module docstring); ``prefix`` is ``FLEET_GROUP_PREFIX``."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self._prefix = prefix
        self._admit: Any = redis.register_script(_ADMIT)
        self._renew: Any = redis.register_script(_RENEW)

    # ------------------------------------------------------------------ key names
    def running_key(self, slug: str, key: str | None = None) -> str:
        base = f"{self._prefix}limits:running:{slug}"
        return base if key is None else f"{base}|{_key_text(key)}"

    def function_rate_key(self, slug: str) -> str:
        return f"{self._prefix}limits:rate:function:{slug}"

    def provider_rate_key(self, provider: str) -> str:
        return f"{self._prefix}limits:rate:provider:{provider}"

    # ------------------------------------------------------------------ decisions
    async def admit(
        self,
        token: str,
        *,
        running: tuple[str, int] | None,
        rates: Sequence[tuple[str, RateLimit]],
        lease: float,
    ) -> Admission:
        """A slot of ``running`` (key, max_concurrency) under ``token`` for ``lease`` seconds and
        one start of each ``(key, limit)`` of ``rates``, all or nothing."""
        keys = [running[0]] if running else []
        args: list[Any] = [token, running[1] if running else 0, int(lease * 1000)]
        for key, limit in rates:
            interval = max(1, math.ceil(limit.interval * 1000))
            keys.append(key)
            args += [interval, (limit.burst - 1) * interval]
        admitted, wait, holders = await self._admit(keys=keys, args=args)
        return Admission(bool(admitted), int(wait) / 1000, int(holders))

    async def release(self, key: str, token: str) -> None:
        await self.redis.zrem(key, token)

    async def renew(self, held: Sequence[tuple[str, str]], lease: float) -> list[int]:
        """Renew each ``(key, token)`` lease for ``lease`` seconds; returns the indexes (into
        ``held``) of leases that had expired already."""
        lost: list[int] = []
        for start in range(0, len(held), CHUNK):
            chunk = held[start : start + CHUNK]
            args: list[Any] = [int(lease * 1000)]
            for key, token in chunk:
                args += [key, token]
            reply = await self._renew(args=args)
            lost += [start + int(i) - 1 for i in reply]
        return lost

    # ------------------------------------------------------------------ usage
    async def running(self, slug: str) -> dict[str, int]:
        """Live leases of ``slug``: ``{"": n}`` without a key, else by key (as stored)."""
        now_ms = await self._now_ms()
        base = self.running_key(slug)
        keys: list[Any] = [base]
        keys += [k async for k in self.redis.scan_iter(match=f"{base}|*", count=1000)]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(key, f"({now_ms}", "+inf")
        counts = await pipe.execute()
        out: dict[str, int] = {}
        for key, count in zip(keys, counts, strict=True):
            name = key.decode() if isinstance(key, bytes) else str(key)
            if count:
                out[name[len(base) + 1 :]] = int(count)
        return out

    async def running_all(self) -> dict[str, int]:
        """Live leases of every function holding any now, all concurrency keys summed:
        ``{slug: n}`` (``fleet status``: what the fleet's concurrency limits hold, read from
        Redis alone; the limits themselves live in the registry)."""
        now_ms = await self._now_ms()
        base = f"{self._prefix}limits:running:"
        keys = [k async for k in self.redis.scan_iter(match=f"{base}*", count=1000)]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(key, f"({now_ms}", "+inf")
        counts = await pipe.execute() if keys else []
        out: dict[str, int] = {}
        for key, count in zip(keys, counts, strict=True):
            name = key.decode() if isinstance(key, bytes) else str(key)
            if count:
                slug = name[len(base) :].split("|", 1)[0]
                out[slug] = out.get(slug, 0) + int(count)
        return dict(sorted(out.items()))

    async def rate(self, key: str, limit: RateLimit) -> RateUsage:
        now_ms = await self._now_ms()
        raw = await self.redis.get(key)
        interval = max(1, math.ceil(limit.interval * 1000))
        tat = max(float(raw or 0), now_ms)
        tolerance = (limit.burst - 1) * interval
        backlog = tat - now_ms  # starts "owed", in ms of the steady rate
        available = max(0, limit.burst - math.ceil(backlog / interval))
        return RateUsage(available, max(0.0, (tat - tolerance - now_ms) / 1000))

    async def _now_ms(self) -> float:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
