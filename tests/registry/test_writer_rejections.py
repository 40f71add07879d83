"""A row the database rejects for itself (bad data) is reported and counted, and only that row:
the rest of its batch is written, in a few statements, and the log does not quote the row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog.testing

from shared.registry.claims_writer import Claim, ClaimsWriter
from shared.registry.history_writer import HistoryWriter
from tests.registry.conftest import execution_row
from tests.registry.test_history_writer import OWNER, finish_record, new_id
from tests.registry.test_writer import finish

SECRET = "sk_live_4f9a0c1e7b2d"


@pytest.fixture
async def writer(pool: Any) -> AsyncIterator[HistoryWriter]:
    w = HistoryWriter(pool, owner=OWNER)
    w.start()
    yield w
    await w.close()


async def stored(pool: Any, ids: list[str]) -> set[str]:
    rows = await pool.fetch("SELECT id FROM function_executions WHERE id = ANY($1::text[])", ids)
    return {r["id"] for r in rows}


async def test_one_bad_row_is_rejected_and_the_rest_of_its_batch_written(
    writer: HistoryWriter, pool: Any
) -> None:
    ids = [new_id() for _ in range(64)]
    bad = ids[37]
    with structlog.testing.capture_logs() as logs:
        # Queued without yielding: one batch of 64, one of them with a time PostgreSQL refuses.
        for execution_id in ids:
            record = finish_record(execution_id, input={"api_key": SECRET})
            if execution_id == bad:
                record.started_at = "not-a-timestamp"
            await writer.finish(record, wait=False)
        await writer.close()  # flushes what is queued, waits for statements in flight

    assert await stored(pool, ids) == set(ids) - {bad}
    assert writer.rejected_rows == 1
    assert writer.ops_flushed == 63
    # Bisected: one successful statement per halving (64 → 1), not one per good row.
    assert writer.flushes <= 6
    assert not writer.down
    rejections = [e for e in logs if e["event"] == "history write rejected by the database"]
    assert len(rejections) == 1
    assert rejections[0]["execution_ids"] == [bad]
    assert rejections[0]["sqlstate"] == "22007"
    assert SECRET not in repr(logs)


async def test_a_rejection_log_does_not_quote_the_row(writer: HistoryWriter, pool: Any) -> None:
    # Invalid JSON: PostgreSQL's DETAIL names the offending token, which is the row's data.
    ids = [new_id() for _ in range(5)]
    with structlog.testing.capture_logs() as logs:
        for execution_id in ids:
            record = finish_record(execution_id)
            if execution_id == ids[2]:
                record.result_json = f'{{"output": {SECRET}}}'
            await writer.finish(record, wait=False)
        await writer.close()  # flushes what is queued, waits for statements in flight

    assert await stored(pool, ids) == set(ids) - {ids[2]}
    assert writer.rejected_rows == 1
    rejections = [e for e in logs if e["event"] == "history write rejected by the database"]
    assert [e["execution_ids"] for e in rejections] == [[ids[2]]]
    assert SECRET not in repr(logs)


async def test_with_database_claims_a_bad_finish_does_not_fail_the_claims_beside_it(pool: Any) -> None:
    writer = ClaimsWriter(pool, owner="fleet-ai/a/1")
    writer.start()
    try:
        good, bad = finish("good", "completed", "t-good"), finish("bad", "completed", "t-bad")
        bad.attempt = 2**40  # out of int range: refused for this row alone
        with structlog.testing.capture_logs() as logs:
            await writer.finish(good, wait=False)
            await writer.finish(bad, wait=False)
            claims = await asyncio.gather(
                *(writer.claim(Claim(id=f"c{n}", token=f"t{n}", lease_seconds=60)) for n in range(3))
            )
            await writer.close()  # flushes what is queued, waits for statements in flight
        assert [c.won for c in claims] == [True, True, True]
        assert await stored(pool, ["good", "bad", "c0", "c1", "c2"]) == {"good", "c0", "c1", "c2"}
        assert (await execution_row(pool, "good") or {}).get("status") == "completed"
        assert writer.rejected_rows == 1
        assert not writer.down
        rejections = [e for e in logs if e["event"] == "history write rejected by the database"]
        assert [e["execution_ids"] for e in rejections] == [["bad"]]
    finally:
        await writer.close()
