"""The batch writer's rules on one row, with two writers (two workers) on one database."""

from __future__ import annotations

from typing import Any

import orjson

from shared.registry.claims_writer import Claim, ClaimsWriter
from shared.registry.writer import FinishRecord


def finish(execution_id: str, status: str, token: str | None, output: Any = None) -> FinishRecord:
    return FinishRecord(
        id=execution_id,
        function_id=None,
        slug="system/echo",
        workflow_execution_id=None,
        node_id=None,
        status=status,
        input={},
        result_json=orjson.dumps(
            {"status": status, "output": output}
            if status == "completed"
            else {"status": status, "output": None, "error": {"code": "max_deliveries_exceeded"}}
        ).decode(),
        attempt=1,
        started_at=None,
        completed_at=None,
        duration_ms=1.0,
        worker="w",
        token=token,
    )


async def test_claims_and_finishes_respect_the_lease(pool: Any) -> None:
    a = ClaimsWriter(pool, owner="fleet-ai/a/1")
    b = ClaimsWriter(pool, owner="fleet-ai/b/2")
    a.start()
    b.start()
    try:
        won = await a.claim(Claim(id="x", token="ta", slug="system/echo", lease_seconds=60))
        assert won.won
        assert not won.taken_over
        lost = await b.claim(Claim(id="x", token="tb", slug="system/echo", lease_seconds=60))
        assert not lost.won
        assert lost.status == "pending"
        assert lost.lease_owner == "fleet-ai/a/1"

        # A duplicate's dead-letter failure must not overwrite the live execution.
        await b.finish(finish("x", "failed", None))
        assert await pool.fetchval("SELECT status FROM function_executions WHERE id = 'x'") == "pending"

        await a.finish(finish("x", "completed", "ta", {"ok": True}))
        row = await pool.fetchrow(
            "SELECT status, output, lease_owner FROM function_executions WHERE id = 'x'"
        )
        assert (row["status"], row["output"], row["lease_owner"]) == ("completed", {"ok": True}, None)

        # A final row answers every later claim with the stored result and is never replaced.
        again = await b.claim(Claim(id="x", token="tb2", slug="system/echo", lease_seconds=60))
        assert not again.won
        assert again.result == {"status": "completed", "output": {"ok": True}}
        assert await pool.fetchval("SELECT error FROM function_executions WHERE id = 'x'") is None
        await b.finish(finish("x", "failed", "tb2"))
        assert await pool.fetchval("SELECT status FROM function_executions WHERE id = 'x'") == "completed"

        # An expired lease is taken over; a released one at once.
        await a.claim(Claim(id="y", token="ty", slug="system/echo", lease_seconds=0.01))
        await pool.execute("SELECT pg_sleep(0.05)")
        taken = await b.claim(Claim(id="y", token="ty2", slug="system/echo", lease_seconds=60))
        assert taken.won
        assert taken.taken_over
        await b.claim(Claim(id="z", token="tz", slug="system/echo", lease_seconds=60))
        b.released("z", "tz")
        await b.finish(finish("other", "completed", None))  # a flush after the release
        released = await a.claim(Claim(id="z", token="tz2", slug="system/echo", lease_seconds=60))
        assert released.won
        assert not released.taken_over
        assert await pool.fetchval("SELECT attempt FROM function_executions WHERE id = 'z'") == 2
        # An uncounted release (a deferral: the function never started) is no attempt: the
        # next claim is the same attempt again, however many deferrals came before.
        for token in ("tz3", "tz4"):
            a.released("z", "tz2" if token == "tz3" else "tz3", counted=False)
            await a.finish(finish("other", "completed", None))  # a flush after the release
            again = await a.claim(Claim(id="z", token=token, slug="system/echo", lease_seconds=60))
            assert (again.won, again.taken_over) == (True, False)
            assert await pool.fetchval("SELECT attempt FROM function_executions WHERE id = 'z'") == 2
    finally:
        await a.close()
        await b.close()


async def test_a_finish_written_alone_keeps_to_the_claim_rules(pool: Any) -> None:
    # A worker whose expired claim was taken over finishes late, in a statement of its own (no
    # claim beside it): the row stays the new holder's, whose finish then lands.
    a = ClaimsWriter(pool, owner="fleet-ai/a/1")
    b = ClaimsWriter(pool, owner="fleet-ai/b/2")
    a.start()
    b.start()
    try:
        await a.claim(Claim(id="y", token="ty", slug="system/echo", lease_seconds=0.01))
        await pool.execute("SELECT pg_sleep(0.05)")
        assert (await b.claim(Claim(id="y", token="ty2", slug="system/echo", lease_seconds=60))).taken_over
        await a.finish(finish("y", "completed", "ty", {"by": "a"}))
        row = await pool.fetchrow(
            "SELECT status, lease_owner, lease_token FROM function_executions WHERE id = 'y'"
        )
        assert (row["status"], row["lease_owner"], row["lease_token"]) == ("pending", "fleet-ai/b/2", "ty2")

        await b.finish(finish("y", "completed", "ty2", {"by": "b"}))
        row = await pool.fetchrow("SELECT status, output FROM function_executions WHERE id = 'y'")
        assert (row["status"], row["output"]) == ("completed", {"by": "b"})
    finally:
        await a.close()
        await b.close()
