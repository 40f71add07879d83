"""Execution claims and stored results in Redis: the exactly-once half of history.

One key per execution, ``<FLEET_GROUP_PREFIX>execution:<execution id>``, holding either

* a **claim** ``c<lease expires, ms>|<attempt>|<token>|<owner>`` — the execution is running
  under ``owner``'s lease until the expiry (server time); a released claim has expiry 0; or
* a **stored result** ``r<result data JSON>`` — the execution is final; duplicates are answered
  with exactly these bytes.

The key lives for ``FLEET_IDEMPOTENCY_WINDOW`` seconds from its last write: that is the window
in which a duplicate is recognised. Each operation is a Lua script (atomic on the server) and
the operations a worker issues in one event-loop turn are coalesced into **one script call**
(one round trip, however many deliveries): claims when a batch of deliveries starts, stored
results when it finishes.

**Leases are short and renewed.** Given the broker's redelivery time (``processing_timeout``,
``FLEET_PROCESSING_TIMEOUT``), a claim is taken for :data:`LEASE_SHARE` of it and renewed by a
loop this store owns, every :data:`RENEW_SHARE` of it, for every claim the process holds (one
script call, only the claims whose token is still the key's). So a live execution keeps its
claim however long it runs (even if two renewals in a row fail), while a dead holder's
claim lapses within two thirds of the processing timeout: before the broker hands its request
to another worker (a stream heartbeat is at most a third of it late), which then takes it over
at once instead of deferring it. The loop is the store's, not the transport's, so Redis
Streams and Dapr behave the same. Renewal stops when the result is stored, the claim released
or taken by someone else, or once the claim has lived as long as the caller asked (the
function's timeout plus the lease margin: a claim nothing ends is not kept forever).

Why Redis and not the history table: a claim must be answered before the function runs and a
result stored before it is published, so both sit on the hot path of every message. In Redis
they cost a fraction of a round trip per batch and no disk write; PostgreSQL keeps the history,
written off the hot path (``shared.registry.writer``). A script call carries a whole batch
in one argument and builds the keys itself, so the claim keys must live on one Redis node (no
Redis Cluster slot spreading; the request streams are on one node too).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
import structlog
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from shared.errors import TransportError

__all__ = ["LEASE_SHARE", "RENEW_SHARE", "ClaimResult", "RedisClaimStore", "execution_key"]

log = structlog.get_logger("fleet.claims")

T = TypeVar("T")
R = TypeVar("R")

#: Keys per script call: bounds one call's time on the server (scripts block Redis).
CHUNK = 256
#: A claim's lease, as a share of the broker's redelivery time (the processing timeout).
LEASE_SHARE = 2 / 3
#: How often held claims are renewed, as a share of the processing timeout.
RENEW_SHARE = 1 / 6


def execution_key(group_prefix: str, execution_id: str) -> str:
    """The Redis key of one execution's claim / stored result."""
    return f"{group_prefix}execution:{execution_id}"


@dataclass(slots=True)
class ClaimResult:
    """What a claim found. ``won``: this caller holds the lease and must run; ``attempt`` is
    then this run's attempt number (earlier claims + 1). Otherwise ``status`` is the
    execution's state (``running``, or the stored result's ``completed``/``failed``),
    ``result`` the stored result data of a final execution and ``lease_owner`` who runs it."""

    won: bool
    status: str | None
    result: dict[str, Any] | None = None
    lease_owner: str | None = None
    taken_over: bool = False
    attempt: int = 1


# Shared by the scripts. Each call carries its items in ONE argument, ``ARGV[1]``, as fields
# ``<byte length>:<bytes>`` back to back (:func:`_fields`): packing one argument per batch
# instead of several per item is what the client spends its time on. Keys are built in the
# script from ``ARGV[2]`` (the prefix) and each execution id.
_PRELUDE = """
local blob, prefix, pos = ARGV[1], ARGV[2], 1
local function field()
  local colon = string.find(blob, ':', pos, true)
  local len = tonumber(string.sub(blob, pos, colon - 1))
  local value = string.sub(blob, colon + 1, colon + len)
  pos = colon + len + 1
  return value
end
local function parse(v)
  local a = string.find(v, '|', 2, true)
  local b = string.find(v, '|', a + 1, true)
  local c = string.find(v, '|', b + 1, true)
  return tonumber(string.sub(v, 2, a - 1)), tonumber(string.sub(v, a + 1, b - 1)),
         string.sub(v, b + 1, c - 1), string.sub(v, c + 1)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# ARGV: items (id, token, lease ms, attempt), prefix, window ms, owner.
# Reply per item: the current value (stored result or another owner's live claim), or
# 'w<taken over 0|1><attempt>' when this caller now holds the claim.
_CLAIM = (
    _PRELUDE
    + """
local window, owner = tonumber(ARGV[3]), ARGV[4]
local out = {}
while pos <= #blob do
  local key = prefix .. field()
  local token, lease, attempt = field(), tonumber(field()), tonumber(field())
  local cur = redis.call('GET', key)
  local taken = 0
  if cur and string.sub(cur, 1, 1) == 'r' then
    out[#out + 1] = cur
  else
    local live = false
    if cur then
      local expires, previous, _, holder = parse(cur)
      live = expires > now and holder ~= owner
      if not live then
        -- A lapsed lease is taken over; a released one (expiry 0) is simply claimed again.
        if expires > 0 then taken = 1 end
        if previous + 1 > attempt then attempt = previous + 1 end
      end
    end
    if live then
      out[#out + 1] = cur
    else
      local ttl = window
      if lease + 1000 > ttl then ttl = lease + 1000 end
      local claim = 'c' .. (now + lease) .. '|' .. attempt .. '|' .. token .. '|' .. owner
      redis.call('SET', key, claim, 'PX', ttl)
      out[#out + 1] = 'w' .. taken .. attempt
    end
  end
end
return out
"""
)

# ARGV: items (id, token, counted 1|0), prefix, owner. Gives a claim back (expiry 0) keeping
# its attempt, so the next claim is the next attempt; an uncounted release (the run never
# started: deferred by a limit) keeps one less, so the next claim is this attempt again.
_RELEASE = (
    _PRELUDE
    + """
local owner, n = ARGV[3], 0
while pos <= #blob do
  local key, token, counted = prefix .. field(), field(), field()
  local cur = redis.call('GET', key)
  if cur and string.sub(cur, 1, 1) == 'c' then
    local _, attempt, held, holder = parse(cur)
    if counted == '0' and attempt > 0 then attempt = attempt - 1 end
    if held == token and holder == owner then
      redis.call('SET', key, 'c0|' .. attempt .. '|' .. token .. '|' .. owner, 'KEEPTTL')
      n = n + 1
    end
  end
end
return n
"""
)

# ARGV: items (id, token), prefix, lease ms, window ms, owner. Extends this owner's claims whose
# token is still the key's (an expired one too: nobody took it over, so nobody else ran it).
# Reply per item: 1 renewed; 0 not ours any more (stored, released or taken over).
_RENEW = (
    _PRELUDE
    + """
local lease, window, owner = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local ttl = window
if lease + 1000 > ttl then ttl = lease + 1000 end
local out = {}
while pos <= #blob do
  local key, token = prefix .. field(), field()
  local cur = redis.call('GET', key)
  local renewed = 0
  if cur and string.sub(cur, 1, 1) == 'c' then
    local expires, attempt, held, holder = parse(cur)
    if held == token and holder == owner and expires > 0 then
      local claim = 'c' .. (now + lease) .. '|' .. attempt .. '|' .. token .. '|' .. owner
      redis.call('SET', key, claim, 'PX', ttl)
      renewed = 1
    end
  end
  out[#out + 1] = renewed
end
return out
"""
)

# ARGV: items (id, token or '' for none, result JSON), prefix, window ms, owner.
# Reply per item: 1 stored; 0 kept what is there (a stored result: the first final result
# wins; or another worker's live claim, which a result without that claim must not overwrite).
_STORE = (
    _PRELUDE
    + """
local window, owner = tonumber(ARGV[3]), ARGV[4]
local out = {}
while pos <= #blob do
  local key, token, value = prefix .. field(), field(), field()
  local cur = redis.call('GET', key)
  local write = not cur
  if cur and string.sub(cur, 1, 1) == 'c' then
    local expires, _, held, holder = parse(cur)
    write = expires <= now or holder == owner or (token ~= '' and held == token)
  end
  if write then
    redis.call('SET', key, 'r' .. value, 'PX', window)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
)


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _fields(items: Sequence[Sequence[str | int]]) -> str:
    """``items`` as one script argument: every field ``<byte length>:<text>``, in order."""
    parts: list[str] = []
    append = parts.append
    for item in items:
        for value in item:
            text = value if isinstance(value, str) else str(value)
            append(f"{_size(text)}:{text}")
    return "".join(parts)


def _claims_blob(items: Sequence[tuple[str, str, float, int]]) -> str:
    """:func:`_fields` of ``(id, token, lease ms, attempt)`` items, one f-string per item (the
    token is ASCII hex; this runs for every claim)."""
    parts: list[str] = []
    append = parts.append
    for execution_id, token, lease, attempt in items:
        ms, tries = str(int(lease * 1000)), str(attempt)
        append(f"{_size(execution_id)}:{execution_id}{len(token)}:{token}{len(ms)}:{ms}{len(tries)}:{tries}")
    return "".join(parts)


def _stores_blob(items: Sequence[tuple[str, str | None, str]]) -> str:
    """:func:`_fields` of ``(id, token or '', result JSON)`` items, one f-string per item."""
    parts: list[str] = []
    append = parts.append
    for execution_id, token, value in items:
        token = token or ""
        append(f"{_size(execution_id)}:{execution_id}{_size(token)}:{token}{_size(value)}:{value}")
    return "".join(parts)


class _Coalescer(Generic[T, R]):
    """Items submitted during one event-loop turn go to ``run`` together (in chunks of
    :data:`CHUNK`); each submitter's future gets its item's reply."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R]]]) -> None:
        self._run = run
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._items:
            loop.call_soon(self._flush)
        self._items.append(item)
        self._futures.append(future)
        return future

    def _flush(self) -> None:
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        for start in range(0, len(items), CHUNK):
            task = asyncio.create_task(
                self._call(items[start : start + CHUNK], futures[start : start + CHUNK])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            replies = await self._run(items)
        except BaseException as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: a caller that went away is not an error
            if not isinstance(exc, Exception):
                raise
            return
        for future, reply in zip(futures, replies, strict=True):
            if not future.done():
                future.set_result(reply)

    async def drain(self) -> None:
        """Wait for the calls already started (``_flush`` runs at the next loop turn)."""
        await asyncio.sleep(0)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class RedisClaimStore:
    """Claims and stored results of executions in Redis (module docstring).

    Parameters:
        redis: the client (bytes in and out); not closed here.
        owner: this process's lease-holder name (``<group>/<consumer>/<process token>``).
        group_prefix: namespaces the keys (``FLEET_GROUP_PREFIX``).
        window: seconds a claim or stored result is kept (``FLEET_IDEMPOTENCY_WINDOW``).
        processing_timeout: seconds after which the broker redelivers a request whose worker
            went silent (``FLEET_PROCESSING_TIMEOUT``): claims are then short and renewed (module
            docstring). ``None``: each claim lasts the whole lease its caller asks for.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        owner: str,
        group_prefix: str,
        window: float,
        processing_timeout: float | None = None,
    ) -> None:
        self._redis = redis
        self.owner = owner
        self._prefix = f"{group_prefix}execution:"
        self._window_ms = int(window * 1000)
        self._claim_script = redis.register_script(_CLAIM)
        self._release_script = redis.register_script(_RELEASE)
        self._store_script = redis.register_script(_STORE)
        self._renew_script = redis.register_script(_RENEW)
        self._claims: _Coalescer[tuple[str, str, float, int], bytes] = _Coalescer(self._claim_many)
        self._releases: _Coalescer[tuple[str, str, str], int] = _Coalescer(self._release_many)
        #: the renewed lease and the renewal period (seconds); None: leases are not renewed.
        self.lease: float | None = None
        self.renew_every = 0.0
        if processing_timeout is not None:
            self.lease = processing_timeout * LEASE_SHARE
            self.renew_every = processing_timeout * RENEW_SHARE
        #: claims this process renews: execution id -> (token, renewed until this loop time).
        self._held: dict[str, tuple[str, float]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._renew_failing = False
        #: told ``(operation, seconds)`` of every script call (one per batch): the worker's metrics.
        self.timer: Callable[[str, float], None] | None = None
        self._operations = {
            self._claim_script: "claim",
            self._release_script: "release",
            self._store_script: "store",
            self._renew_script: "renew",
        }

    @property
    def held(self) -> int:
        """How many claims this process is renewing."""
        return len(self._held)

    # ------------------------------------------------------------------ operations
    async def claim(self, execution_id: str, token: str, lease_seconds: float, attempt: int) -> ClaimResult:
        """Claim ``execution_id`` for at most ``lease_seconds`` (see :class:`ClaimResult`): with
        renewal, for the short lease, renewed while the process lives until ``lease_seconds``
        have passed. Raises :class:`~shared.errors.TransportError` when Redis cannot be reached."""
        lease = lease_seconds if self.lease is None else min(lease_seconds, self.lease)
        reply = await self._claims.submit((execution_id, token, lease, attempt))
        kind = reply[:1]
        if kind == b"w":
            if lease < lease_seconds:
                loop = asyncio.get_running_loop()
                self._held[execution_id] = (token, loop.time() + lease_seconds - lease)
                if self._renewer is None or self._renewer.done():
                    self._renewer = loop.create_task(self._renew_loop(), name="fleet-claim-renewal")
            return ClaimResult(
                won=True, status="running", taken_over=reply[1:2] == b"1", attempt=int(reply[2:])
            )
        if kind == b"r":
            data = orjson.loads(reply[1:])
            return ClaimResult(won=False, status=str(data.get("status") or ""), result=data)
        holder = reply.split(b"|", 3)[3].decode(errors="replace")
        return ClaimResult(won=False, status="running", lease_owner=holder)

    def release(self, execution_id: str, token: str, *, counted: bool = True) -> None:
        """Give the claim back (the function asked for a retry): the next delivery runs at
        once instead of waiting for the lease. Not awaited: a lost release only delays it.

        ``counted=False``: the run never started (a limit deferred it), so it was no attempt:
        the next claim gets this claim's attempt again instead of the next one."""
        self.forget([(execution_id, token)])
        self._releases.submit((execution_id, token, "1" if counted else "0"))

    def forget(self, items: Iterable[Sequence[Any]]) -> None:
        """Stop renewing the claims of ``(execution id, token, ...)`` items: their results are
        stored (or the claims given back). A claim under another token is left alone."""
        held = self._held
        for item in items:
            entry = held.get(item[0])
            if entry is not None and entry[0] == item[1]:
                del held[item[0]]

    async def store(self, execution_id: str, token: str | None, result_json: str) -> bool:
        """Store the final result data (JSON text) of ``execution_id``; False when another
        final result was stored first, or another worker holds a live claim and ``token`` is
        not its claim (that worker's result will be stored instead)."""
        return (await self.store_many([(execution_id, token, result_json)]))[0]

    async def store_many(self, items: Sequence[tuple[str, str | None, str]]) -> list[bool]:
        """:meth:`store` for many ``(execution id, token, result JSON)`` at once, in script
        calls of at most :data:`CHUNK` keys; one bool per item."""
        stored: list[bool] = []
        for start in range(0, len(items), CHUNK):
            stored.extend(bool(r) for r in await self._store_many(list(items[start : start + CHUNK])))
        self.forget(items)
        return stored

    async def renew(self) -> int:
        """Renew every claim this process holds (one script call per :data:`CHUNK`); returns how
        many were renewed. Claims past the time their caller asked for, and claims no longer
        ours, are dropped. Raises :class:`~shared.errors.TransportError` when Redis cannot be
        reached (the claims stay held: the next pass tries again)."""
        if self.lease is None or not self._held:
            return 0
        now = asyncio.get_running_loop().time()
        items: list[tuple[str, str]] = []
        for execution_id, (token, until) in list(self._held.items()):
            if now >= until:
                del self._held[execution_id]
            else:
                items.append((execution_id, token))
        lease_ms = int(self.lease * 1000)
        renewed = 0
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            replies = await self._call(
                self._renew_script, _fields(chunk), lease_ms, self._window_ms, self.owner
            )
            renewed += sum(1 for r in replies if r)
            self.forget(item for item, r in zip(chunk, replies, strict=True) if not r)
        return renewed

    async def _renew_loop(self) -> None:
        # Ends when nothing is held; the next won claim starts it again.
        while self._held:
            await asyncio.sleep(self.renew_every)
            try:
                await self.renew()
            except Exception as exc:
                if not self._renew_failing:
                    log.warning("cannot renew execution claims; will try again", error=str(exc))
                self._renew_failing = True
            else:
                self._renew_failing = False

    async def close(self) -> None:
        """Let pending claims and releases reach Redis; stop renewing (the claims held lapse
        within the lease, as a dead process's do)."""
        for coalescer in (self._claims, self._releases):
            await coalescer.drain()
        self._held.clear()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    # ------------------------------------------------------------------ script calls
    async def _claim_many(self, items: list[tuple[str, str, float, int]]) -> list[bytes]:
        blob = _claims_blob(items)
        replies: list[bytes] = await self._call(self._claim_script, blob, self._window_ms, self.owner)
        return replies

    async def _release_many(self, items: list[tuple[str, str, str]]) -> list[int]:
        await self._call(self._release_script, _fields(items), self.owner)
        return [1] * len(items)

    def queue_store(self, pipe: Any, items: Sequence[tuple[str, str | None, str]]) -> None:
        """Add a :meth:`store_many` of ``items`` to ``pipe`` (a ``MULTI`` pipeline), as one
        ``EVAL`` with the script's text: inside ``MULTI`` a missing script (``NOSCRIPT`` after
        a Redis restart) could not be loaded and retried. Its reply is one 0/1 per item."""
        pipe.eval(_STORE, 0, _stores_blob(items), self._prefix, self._window_ms, self.owner)

    async def _store_many(self, items: list[tuple[str, str | None, str]]) -> list[int]:
        blob = _stores_blob(items)
        replies: list[int] = await self._call(self._store_script, blob, self._window_ms, self.owner)
        return replies

    async def _call(self, script: Any, blob: str, *args: Any) -> Any:
        started = time.monotonic()
        try:
            return await script(keys=[], args=[blob, self._prefix, *args])
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise TransportError(f"execution claims: Redis unreachable: {exc}") from exc
        finally:
            if self.timer is not None:
                self.timer(self._operations.get(script, "other"), time.monotonic() - started)
