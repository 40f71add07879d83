"""RedisClaimStore against a real Redis: the claim, release and store scripts, the key's
lifetime, and the coalescing of one event-loop turn's operations into one script call."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shared.errors import TransportError
from shared.registry.claims import CHUNK, RedisClaimStore, execution_key
from shared.transports.redis import connect

WINDOW = 60.0

StoreFactory = Callable[..., RedisClaimStore]


@pytest.fixture
def prefix(namespace: str) -> str:
    """A group prefix of this test's own, under its namespace (whose keys are deleted after)."""
    return f"{namespace}fleet-"


@pytest.fixture
def make_store(redis: Redis, prefix: str) -> StoreFactory:
    def factory(owner: str, *, window: float = WINDOW, cls: type[RedisClaimStore] = RedisClaimStore) -> Any:
        return cls(redis, owner=owner, group_prefix=prefix, window=window)

    return factory


def result(status: str = "completed", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"execution_id": "x", "status": status, "output": None, "error": None}
    if status == "completed":
        data["output"] = {"n": 1}
    else:
        data["error"] = {"code": "function_failed", "message": "nope"}
    data.update(extra)
    return data


def text(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


async def raw(redis: Redis, prefix: str, execution_id: str) -> bytes | None:
    value: bytes | None = await redis.get(execution_key(prefix, execution_id))
    return value


async def wait_until_expired(redis: Redis, prefix: str, execution_id: str) -> None:
    """Until the claim's lease (expiry in ms, Redis server time) lies in the past."""
    for _ in range(200):
        value = await raw(redis, prefix, execution_id)
        assert value is not None
        assert value.startswith(b"c")
        expires = int(value[1:].split(b"|", 1)[0])
        seconds, micros = await redis.time()
        if expires < seconds * 1000 + micros // 1000:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the lease never expired")


# ---------------------------------------------------------------------- claims
async def test_the_first_claim_wins(make_store: StoreFactory, redis: Redis, prefix: str) -> None:
    a = make_store("fleet-ai/a/1")
    claim = await a.claim("x", "ta", 30, 1)
    assert claim.won
    assert claim.status == "running"
    assert claim.attempt == 1
    assert not claim.taken_over
    assert claim.result is None
    value = await raw(redis, prefix, "x")
    assert value is not None
    assert value.startswith(b"c")
    assert value.endswith(b"|1|ta|fleet-ai/a/1")


async def test_another_owner_loses_to_a_live_claim_and_learns_the_holder(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 30, 1)).won
    before = await raw(redis, prefix, "x")
    lost = await b.claim("x", "tb", 30, 1)
    assert not lost.won
    assert lost.status == "running"
    assert lost.lease_owner == "fleet-ai/a/1"
    assert lost.result is None
    # The losing claim changed nothing.
    assert await raw(redis, prefix, "x") == before


async def test_the_same_owner_reclaims_with_the_next_attempt(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a = make_store("fleet-ai/a/1")
    assert (await a.claim("x", "t1", 30, 1)).attempt == 1
    again = await a.claim("x", "t2", 30, 1)
    assert again.won
    assert again.attempt == 2
    value = await raw(redis, prefix, "x")
    assert value is not None
    assert value.endswith(b"|2|t2|fleet-ai/a/1")
    # Another owner still sees the live claim, under the new token.
    lost = await make_store("fleet-ai/b/2").claim("x", "tb", 30, 1)
    assert not lost.won
    assert lost.lease_owner == "fleet-ai/a/1"


async def test_an_expired_lease_is_taken_over(make_store: StoreFactory, redis: Redis, prefix: str) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 0.05, 1)).won
    await wait_until_expired(redis, prefix, "x")
    taken = await b.claim("x", "tb", 30, 1)
    assert taken.won
    assert taken.taken_over
    assert taken.attempt == 2
    value = await raw(redis, prefix, "x")
    assert value is not None
    assert value.endswith(b"|2|tb|fleet-ai/b/2")
    # Now the old owner is the one that waits.
    lost = await a.claim("x", "ta2", 30, 1)
    assert not lost.won
    assert lost.lease_owner == "fleet-ai/b/2"


async def test_a_higher_attempt_from_the_caller_is_kept(make_store: StoreFactory) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 30, 5)).attempt == 5
    assert (await a.claim("x", "ta2", 30, 1)).attempt == 6  # earlier claims + 1
    assert (await b.claim("y", "tb", 30, 3)).attempt == 3


async def test_a_release_gives_the_claim_back_at_once(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 60, 1)).won
    # A release with the wrong token, or by another owner, gives nothing back.
    a.release("x", "not-ta")
    b.release("x", "ta")
    await a.close()
    await b.close()
    assert not (await b.claim("x", "tb", 60, 1)).won

    a.release("x", "ta")
    await a.close()  # lets the (not awaited) release reach Redis
    value = await raw(redis, prefix, "x")
    assert value == b"c0|1|ta|fleet-ai/a/1"
    claim = await b.claim("x", "tb", 60, 1)
    assert claim.won
    assert claim.attempt == 2
    # The attempt keeps counting across releases.
    b.release("x", "tb")
    await b.close()
    assert (await a.claim("x", "ta3", 60, 1)).attempt == 3


async def test_an_uncounted_release_gives_the_next_claim_the_same_attempt(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    # A deferral (a limit said "not yet") gives the claim back before the function started:
    # however often that happens, the run that finally starts is still the same attempt.
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    for owner, token in [(a, "t1"), (b, "t2"), (a, "t3"), (a, "t4")]:
        claim = await owner.claim("x", token, 60, 1)
        assert (claim.won, claim.attempt, claim.taken_over) == (True, 1, False)
        owner.release("x", token, counted=False)
        await owner.close()
    assert await raw(redis, prefix, "x") == b"c0|0|t4|fleet-ai/a/1"
    # A counted release (the function ran and asked for a retry) still moves to the next one,
    # and deferrals after it keep that one.
    assert (await b.claim("x", "t5", 60, 1)).attempt == 1
    b.release("x", "t5")
    await b.close()
    assert (await a.claim("x", "t6", 60, 1)).attempt == 2
    a.release("x", "t6", counted=False)
    await a.close()
    assert (await b.claim("x", "t7", 60, 1)).attempt == 2


# ---------------------------------------------------------------------- stored results
async def test_a_stored_result_answers_every_later_claim(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 60, 1)).won
    data = result("completed", duration_ms=1.5, note="ünïcode ✓")
    assert await a.store("x", "ta", text(data))
    assert await raw(redis, prefix, "x") == b"r" + text(data).encode()
    for store in (a, b):
        answered = await store.claim("x", "t-new", 60, 1)
        assert not answered.won
        assert answered.status == "completed"
        assert answered.result == data
        assert answered.lease_owner is None
    # A release after the result changes nothing.
    a.release("x", "ta")
    await a.close()
    assert (await b.claim("x", "tb", 60, 1)).result == data

    failed = result("failed")
    assert (await b.claim("y", "tb", 60, 1)).won
    assert await b.store("y", "tb", text(failed))
    answered = await a.claim("y", "ta", 60, 1)
    assert (answered.won, answered.status, answered.result) == (False, "failed", failed)


async def test_the_first_final_result_wins(make_store: StoreFactory, redis: Redis, prefix: str) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 60, 1)).won
    first = result("completed")
    assert await a.store("x", "ta", text(first))
    stored = await raw(redis, prefix, "x")
    # Nobody replaces it: not the same claim, not another owner, with or without a token.
    assert not await a.store("x", "ta", text(result("failed")))
    assert not await b.store("x", None, text(result("failed")))
    assert not await b.store("x", "tb", text(result("completed", output={"n": 2})))
    assert await raw(redis, prefix, "x") == stored
    assert (await b.claim("x", "tb", 60, 1)).result == first


async def test_a_result_without_a_claim_is_stored(make_store: StoreFactory) -> None:
    a = make_store("fleet-ai/a/1")
    assert await a.store("never-claimed", None, text(result("failed")))
    answered = await a.claim("never-claimed", "ta", 60, 1)
    assert not answered.won
    assert answered.status == "failed"


async def test_a_tokenless_result_respects_another_owners_live_claim(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 60, 1)).won
    claimed = await raw(redis, prefix, "x")
    # e.g. a duplicate's dead-letter failure: it must not replace the running execution.
    assert not await b.store("x", None, text(result("failed")))
    assert not await b.store("x", "someone-elses-token", text(result("failed")))
    assert await raw(redis, prefix, "x") == claimed
    assert (await b.claim("x", "tb", 60, 1)).status == "running"
    # The holder's own result is stored.
    done = result("completed")
    assert await a.store("x", "ta", text(done))
    assert (await b.claim("x", "tb", 60, 1)).result == done


async def test_a_tokenless_result_replaces_an_expired_claim(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 0.05, 1)).won
    await wait_until_expired(redis, prefix, "x")
    failed = result("failed")
    assert await b.store("x", None, text(failed))
    answered = await a.claim("x", "ta2", 60, 1)
    assert (answered.won, answered.status, answered.result) == (False, "failed", failed)


async def test_a_tokenless_result_of_the_holder_itself_is_stored(make_store: StoreFactory) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("x", "ta", 60, 1)).won
    assert await a.store("x", None, text(result("failed")))
    assert (await b.claim("x", "tb", 60, 1)).status == "failed"


async def test_store_many_answers_one_bool_per_item(make_store: StoreFactory) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    assert (await a.claim("mine", "ta", 60, 1)).won
    assert (await b.claim("theirs", "tb", 60, 1)).won
    assert await a.store("done", None, text(result("completed")))
    kept = await a.store_many(
        [
            ("mine", "ta", text(result("completed"))),
            ("theirs", None, text(result("failed"))),
            ("done", None, text(result("failed"))),
            ("fresh", None, text(result("completed"))),
        ]
    )
    assert kept == [True, False, False, True]
    assert (await b.claim("mine", "t", 60, 1)).status == "completed"
    assert (await a.claim("theirs", "t", 60, 1)).status == "running"
    assert (await b.claim("done", "t", 60, 1)).status == "completed"
    assert await a.store_many([]) == []


async def test_store_many_past_one_chunk(make_store: StoreFactory) -> None:
    a, b = make_store("fleet-ai/a/1"), make_store("fleet-ai/b/2")
    n = CHUNK + 44
    assert (await b.claim("id-3", "tb", 60, 1)).won  # one refused, in the first chunk
    assert (await b.claim(f"id-{n - 1}", "tb", 60, 1)).won  # and one in the second
    kept = await a.store_many([(f"id-{i}", None, text(result("completed", i=i))) for i in range(n)])
    assert len(kept) == n
    assert [i for i, ok in enumerate(kept) if not ok] == [3, n - 1]
    answered = await b.claim(f"id-{CHUNK + 5}", "t", 60, 1)
    assert answered.result is not None
    assert answered.result["i"] == CHUNK + 5


async def test_ids_owners_and_results_of_any_text(
    make_store: StoreFactory, redis: Redis, prefix: str
) -> None:
    # Execution ids are CloudEvent ids: any text. Separators, digits and multi-byte characters
    # must neither split an item nor shift the ones after it in a batch.
    ids = ["12:34", "a|b|c", "ünï-cødé ✓", "x" * 300, "7", " spaced id "]
    a = make_store("fleet-ai/ä:1/ß")
    b = make_store("fleet-ai/b/2")
    claims = await asyncio.gather(*(a.claim(i, f"tok{n}", 60, n + 1) for n, i in enumerate(ids)))
    assert [(c.won, c.attempt) for c in claims] == [(True, n + 1) for n in range(len(ids))]
    for i in ids:
        assert await redis.exists(execution_key(prefix, i))
    lost = await asyncio.gather(*(b.claim(i, "tb", 60, 1) for i in ids))
    assert all(not c.won and c.lease_owner == "fleet-ai/ä:1/ß" for c in lost)
    data = [result("completed", output={"id": i, "text": f"{n}: ✓ 12:34 |"}) for n, i in enumerate(ids)]
    kept = await a.store_many(
        [(i, f"tok{n}", text(d)) for n, (i, d) in enumerate(zip(ids, data, strict=True))]
    )
    assert kept == [True] * len(ids)
    answered = await asyncio.gather(*(b.claim(i, "tb", 60, 1) for i in ids))
    assert [c.result for c in answered] == data


# ---------------------------------------------------------------------- key lifetime
async def test_the_key_lives_about_the_window(make_store: StoreFactory, redis: Redis, prefix: str) -> None:
    a = make_store("fleet-ai/a/1", window=30)
    key = execution_key(prefix, "x")
    assert (await a.claim("x", "ta", 5, 1)).won
    assert 25_000 < await redis.pttl(key) <= 30_000
    assert await a.store("x", "ta", text(result()))
    assert 25_000 < await redis.pttl(key) <= 30_000
    # A lease longer than the window keeps the claim as long as the lease (plus a second).
    assert (await a.claim("long", "ta", 100, 1)).won
    assert 95_000 < await redis.pttl(execution_key(prefix, "long")) <= 101_000
    # The stored result then lives the window from its own write.
    assert await a.store("long", "ta", text(result()))
    assert 25_000 < await redis.pttl(execution_key(prefix, "long")) <= 30_000


# ---------------------------------------------------------------------- coalescing
class CountingStore(RedisClaimStore):
    """Counts claim script calls and the keys each carried."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.calls: list[int] = []
        super().__init__(*args, **kwargs)

    async def _claim_many(self, items: list[tuple[str, str, float, int]]) -> list[bytes]:
        self.calls.append(len(items))
        return await super()._claim_many(items)


async def test_one_turns_claims_go_in_one_script_call(make_store: StoreFactory) -> None:
    a: CountingStore = make_store("fleet-ai/a/1", cls=CountingStore)
    b = make_store("fleet-ai/b/2")
    # Some executions already held by another owner, some already final.
    for i in range(0, 40, 4):
        assert (await b.claim(f"e{i}", "tb", 60, 1)).won
    for i in range(1, 40, 4):
        assert await b.store(f"e{i}", None, text(result("completed", i=i)))
    assert (await a.claim("e2", "old", 60, 1)).won  # our own: the next claim is attempt 2
    a.calls.clear()

    claims = await asyncio.gather(*(a.claim(f"e{i}", f"t{i}", 60, 1) for i in range(40)))
    assert a.calls == [40]
    for i, claim in enumerate(claims):
        if i % 4 == 0:
            assert (claim.won, claim.status, claim.lease_owner) == (False, "running", "fleet-ai/b/2")
        elif i % 4 == 1:
            assert not claim.won
            assert claim.result == result("completed", i=i)
        elif i == 2:
            assert (claim.won, claim.attempt) == (True, 2)
        else:
            assert (claim.won, claim.attempt, claim.taken_over) == (True, 1, False)


async def test_more_than_a_chunk_of_claims_is_split(make_store: StoreFactory) -> None:
    a: CountingStore = make_store("fleet-ai/a/1", cls=CountingStore)
    n = CHUNK + 10
    claims = await asyncio.gather(*(a.claim(f"c{i}", "t", 60, 1) for i in range(n)))
    assert sorted(a.calls) == [10, CHUNK]
    assert all(c.won and c.attempt == 1 for c in claims)


async def test_concurrent_owners_of_one_execution_have_one_winner(make_store: StoreFactory) -> None:
    stores = [make_store(f"fleet-ai/w{i}/{i}") for i in range(20)]
    claims = await asyncio.gather(*(s.claim("contended", f"t{i}", 60, 1) for i, s in enumerate(stores)))
    winners = [s.owner for s, c in zip(stores, claims, strict=True) if c.won]
    assert len(winners) == 1
    assert all(c.lease_owner == winners[0] for c in claims if not c.won)


# ---------------------------------------------------------------------- outage
async def test_an_unreachable_redis_raises_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}")
    try:
        store = RedisClaimStore(client, owner="fleet-ai/a/1", group_prefix="nowhere-", window=WINDOW)
        with pytest.raises(TransportError):
            await store.claim("x", "t", 60, 1)
        with pytest.raises(TransportError):
            await store.store("x", "t", text(result()))
        with pytest.raises(TransportError):
            await store.store_many([("x", "t", text(result()))])
        # Every claim of the failed call gets the error, not only the first.
        outcomes = await asyncio.gather(
            *(store.claim(f"x{i}", "t", 60, 1) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, TransportError) for o in outcomes)
        store.release("x", "t")
        await store.close()  # a lost release is not an error
    finally:
        await client.aclose()
