"""With Redis claims and the Redis Streams transport on one server, a result is stored as the
duplicates' answer inside the settle's own MULTI ... EXEC (stored, published and acked in one
step): no separate store call, and a settle that fails offers the same results again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.registry.claims import RedisClaimStore, execution_key
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import publish, registry_of
from tests.registry.fixtures_functions import TEST_FUNCTIONS


async def test_results_are_stored_in_the_settle_transaction(
    registry_settings: Callable[..., Settings], redis: Redis, monkeypatch: Any
) -> None:
    separate_calls: list[int] = []
    original = RedisClaimStore.store_many

    async def counting(self: RedisClaimStore, items: Any) -> list[bool]:
        separate_calls.append(len(items))
        return await original(self, items)

    monkeypatch.setattr(RedisClaimStore, "store_many", counting)
    settings = registry_settings()
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    assert worker.transport.prelude is not None  # type: ignore[attr-defined]
    async with running(worker):
        ids = [await publish(redis, settings, "system/echo", {"n": n}) for n in range(20)]
        results = await read_results(redis, settings.results_topic, 20)
        # A duplicate of an answered request is answered from the stored result.
        await publish(redis, settings, "system/echo", {"n": 0}, execution_id=ids[0])
        results += (await read_results(redis, settings.results_topic, 21))[20:]
    assert separate_calls == []
    by_id = {r["data"]["execution_id"]: r["data"] for r in results[:20]}
    for execution_id in ids:
        stored = await redis.get(execution_key(settings.group_prefix, execution_id))
        assert stored is not None
        assert stored[:1] == b"r"
        assert orjson.loads(stored[1:]) == by_id[execution_id]
    assert results[20]["data"] == by_id[ids[0]]
    assert registry_of(worker).claims.answered == 1  # type: ignore[attr-defined]


class RecordingPipe:
    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def eval(self, *args: Any) -> None:
        self.commands.append(("EVAL", *args))


async def test_a_failed_settle_offers_the_same_results_again(
    registry_settings: Callable[..., Settings], redis: Redis
) -> None:
    worker = create_worker("ai", registry_settings(), table=TEST_FUNCTIONS)
    backend = registry_of(worker).backend  # type: ignore[attr-defined]
    backend._unstored.extend([("a", "t1", '{"status":"completed"}'), ("b", None, '{"status":"failed"}')])
    pipe = RecordingPipe()
    staged = backend.stage(pipe)
    assert staged is not None
    assert staged[0] == 1
    assert len(pipe.commands) == 1
    assert pipe.commands[0][0] == "EVAL"
    assert backend._unstored == []
    staged[1](None)  # the transaction did not run
    assert [item[0] for item in backend._unstored] == ["a", "b"]
    again = backend.stage(RecordingPipe())
    assert again is not None
    again[1]([[1, 0]])  # ran: "b" kept what was stored before
    assert backend._unstored == []
    assert backend.stage(RecordingPipe()) is None  # nothing left to add
    await registry_of(worker)._redis.aclose()  # type: ignore[attr-defined]
    await worker.transport.close()


async def test_no_settle_store_with_claims_in_the_database(
    registry_settings: Callable[..., Settings],
) -> None:
    worker = create_worker("ai", registry_settings(claims="database"), table=TEST_FUNCTIONS)
    assert worker.transport.prelude is None  # type: ignore[attr-defined]
    await worker.transport.close()
