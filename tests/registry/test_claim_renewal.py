"""RedisClaimStore's short, renewed leases against a real Redis: a claim lasts two thirds of the
processing timeout and is renewed while its process holds it; it lapses once the process stops
renewing (dies, closes), is dropped from renewal when its result is stored, it is released or
someone else holds the key, and is never renewed past the lease its caller asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest
from redis.asyncio import Redis

from shared.registry.claims import LEASE_SHARE, RedisClaimStore, execution_key

#: The broker's redelivery time the stores are given: leases of 0.4 s, renewed every 0.1 s.
PROCESSING_TIMEOUT = 0.6

StoreFactory = Callable[..., RedisClaimStore]


@pytest.fixture
def prefix(namespace: str) -> str:
    return f"{namespace}fleet-"


@pytest.fixture
def make_store(redis: Redis, prefix: str) -> StoreFactory:
    def factory(owner: str, processing_timeout: float | None = PROCESSING_TIMEOUT) -> RedisClaimStore:
        return RedisClaimStore(
            redis, owner=owner, group_prefix=prefix, window=60, processing_timeout=processing_timeout
        )

    return factory


async def lease_left(redis: Redis, prefix: str, execution_id: str) -> float:
    """Seconds until the claim's expiry (Redis server time); negative once it has lapsed."""
    value = await redis.get(execution_key(prefix, execution_id))
    assert value is not None
    assert value.startswith(b"c")
    expires = int(value[1:].split(b"|", 1)[0])
    seconds, micros = await redis.time()
    return (expires - (seconds * 1000 + micros // 1000)) / 1000


async def test_a_held_claim_is_short_and_renewed_while_its_process_lives(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    try:
        assert (await a.claim("x", "ta", 30, 1)).won
        # Not the 30 s asked for: the short lease.
        assert await lease_left(redis, prefix, "x") <= PROCESSING_TIMEOUT * LEASE_SHARE
        assert a.held == 1
        # Many leases later the claim is still live: renewed, so another worker defers.
        for _ in range(6):
            await asyncio.sleep(PROCESSING_TIMEOUT * LEASE_SHARE)
            lost = await b.claim("x", "tb", 30, 1)
            assert not lost.won
            assert lost.lease_owner == "fleet-ai/a/1"
        assert 0 < await lease_left(redis, prefix, "x") <= PROCESSING_TIMEOUT * LEASE_SHARE
    finally:
        await a.close()
        await b.close()


async def test_a_claim_whose_process_stopped_renewing_lapses_and_is_taken_over(
    make_store: StoreFactory,
) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    try:
        assert (await a.claim("x", "ta", 3600, 1)).won
        await a.close()  # as a killed process: nothing renews its claims any more
        for _ in range(100):
            taken = await b.claim("x", "tb", 3600, 1)
            if taken.won:
                break
            await asyncio.sleep(0.05)
        assert taken.won
        assert taken.taken_over
        assert taken.attempt == 2
    finally:
        await b.close()


async def test_renewal_stops_when_the_result_is_stored_or_the_claim_released(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a = make_store("fleet-ai/a/1")
    try:
        assert (await a.claim("x", "tx", 30, 1)).won
        assert (await a.claim("y", "ty", 30, 1)).won
        assert a.held == 2
        data = {"execution_id": "x", "status": "completed", "output": 1}
        assert await a.store("x", "tx", orjson.dumps(data).decode())
        a.release("y", "ty")
        assert a.held == 0
        await a.close()
        assert (await redis.get(execution_key(prefix, "x"))) == b"r" + orjson.dumps(data)
        assert (await redis.get(execution_key(prefix, "y")) or b"").startswith(b"c0|1|ty|")
    finally:
        await a.close()


async def test_a_claim_no_longer_ours_is_not_renewed(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a = make_store("fleet-ai/a/1")
    try:
        assert (await a.claim("x", "ta", 30, 1)).won
        # Someone else's claim is in the key now (as after a takeover): renewal must not touch it.
        foreign = b"c1|2|tb|fleet-ai/b/2"
        await redis.set(execution_key(prefix, "x"), foreign)
        assert await a.renew() == 0
        assert a.held == 0
        assert await redis.get(execution_key(prefix, "x")) == foreign
    finally:
        await a.close()


async def test_a_claim_is_renewed_no_longer_than_its_caller_asked(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    try:
        # Asked for 0.6 s: the 0.4 s lease is renewed for 0.2 s more, then left to lapse.
        assert (await a.claim("x", "ta", 0.6, 1)).won
        for _ in range(100):
            if a.held == 0:
                break
            await asyncio.sleep(0.05)
        assert a.held == 0
        for _ in range(100):
            if (taken := await b.claim("x", "tb", 30, 1)).won:
                break
            await asyncio.sleep(0.05)
        assert taken.taken_over
    finally:
        await a.close()
        await b.close()


async def test_without_a_processing_timeout_a_claim_holds_the_whole_lease(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a = make_store("fleet-ai/a/1", processing_timeout=None)
    try:
        assert (await a.claim("x", "ta", 30, 1)).won
        assert a.held == 0
        assert await lease_left(redis, prefix, "x") > 25
    finally:
        await a.close()
