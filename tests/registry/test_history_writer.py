"""The batch writer in history mode (claims in Redis): ``open`` and ``finish`` rows against a
real PostgreSQL — held-back running marks, the rules on which write may replace a row, the
columns derived from the result JSON, and finishes nobody waits for."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import orjson
import pytest

from shared.registry.history_writer import HistoryWriter
from shared.registry.writer import FinishRecord
from tests.registry.conftest import execution_row

OWNER = "fleet-ai/a/1"
STARTED = "2026-01-02T03:04:05.250000+00:00"
COMPLETED = "2026-01-02T03:04:06.500000+00:00"


@pytest.fixture
async def writer(pool: Any) -> AsyncIterator[HistoryWriter]:
    w = HistoryWriter(pool, owner=OWNER)
    w.start()
    yield w
    await w.close()


def new_id() -> str:
    return f"e-{uuid.uuid4().hex}"


class RowCalls:
    """A ``row`` callable for an ``open`` op (as RedisClaims.claim builds it) that counts calls."""

    def __init__(self, execution_id: str, *, attempt: int = 1, input: Any = None) -> None:
        self.execution_id = execution_id
        self.attempt = attempt
        self.input = {"q": "hello"} if input is None else input
        self.opened = time.time()
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {
            "id": self.execution_id,
            "function_id": None,
            "slug": "system/echo",
            "wf": "wf-1",
            "node": "n1",
            "input": self.input,
            "attempt": self.attempt,
            "opened": self.opened,
        }


def open_row(
    writer: HistoryWriter,
    execution_id: str,
    token: str,
    *,
    lease_seconds: float = 60.0,
    row: RowCalls | None = None,
) -> None:
    """What RedisClaims.claim does for a won claim."""
    row = row if row is not None else RowCalls(execution_id)
    writer.open(execution_id, token, lease_seconds=lease_seconds, row=row)


def result_data(
    execution_id: str, status: str = "completed", output: Any = None, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "execution_id": execution_id,
        "function": "system/echo",
        "status": status,
        "output": output if status == "completed" else None,
        "error": None if status == "completed" else {"code": "function_failed", "message": "nope"},
        "attempt": 1,
        "started_at": STARTED,
        "completed_at": COMPLETED,
        "duration_ms": 1250.0,
        "worker": "fleet-ai/a",
    }
    data.update(extra)
    return data


def finish_record(
    execution_id: str,
    status: str = "completed",
    token: str | None = None,
    *,
    output: Any = None,
    data: dict[str, Any] | None = None,
    result_json: str | None = None,
    input: Any = None,
    attempt: int = 1,
) -> FinishRecord:
    if data is None:
        data = result_data(execution_id, status, output)
    return FinishRecord(
        id=execution_id,
        function_id=None,
        slug="system/echo",
        workflow_execution_id="wf-1",
        node_id="n1",
        status=status,
        input=input,
        result_json=result_json if result_json is not None else orjson.dumps(data).decode(),
        attempt=attempt,
        started_at=STARTED,
        completed_at=COMPLETED,
        duration_ms=1250.0,
        worker="fleet-ai/a",
        token=token,
    )


async def wait_for(
    pool: Any, execution_id: str, accept: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """Poll the row until ``accept(row)``; fail with the last row seen."""
    row: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await execution_row(pool, execution_id)
        if row is not None and accept(row):
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"row {execution_id} never reached the expected state; last seen: {row}")


async def wait_until_lease_expired(pool: Any, execution_id: str) -> None:
    for _ in range(500):
        if await pool.fetchval(
            "SELECT lease_expires_at < now() FROM function_executions WHERE id = $1", execution_id
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the row's lease never expired")


# ---------------------------------------------------------------------- open / finish
async def test_an_open_superseded_by_its_finish_is_written_once(writer: HistoryWriter, pool: Any) -> None:
    execution_id = new_id()
    row = RowCalls(execution_id)
    open_row(writer, execution_id, "t1", row=row)
    for _ in range(20):  # the dispatcher's turns: it sees the op, and holds it back
        await asyncio.sleep(0)
    assert writer.pending == 1
    assert writer.ops_flushed == 0
    await writer.finish(finish_record(execution_id, "completed", "t1", output={"ok": True}, input={"q": 1}))
    assert writer.pending == 0
    assert (writer.flushes, writer.ops_flushed) == (1, 1)
    stored = await execution_row(pool, execution_id)
    assert stored is not None
    assert stored["status"] == "completed"
    assert stored["output"] == {"ok": True}
    assert stored["input"] == {"q": 1}
    assert stored["lease_owner"] is None
    assert stored["lease_expires_at"] is None
    await writer.close()
    # Nothing more was written at close, and the running row was never even built.
    assert (writer.flushes, writer.ops_flushed) == (1, 1)
    assert row.calls == 0


async def test_an_open_left_alone_becomes_a_running_row(writer: HistoryWriter, pool: Any) -> None:
    execution_id = new_id()
    row = RowCalls(execution_id, attempt=2)
    open_row(writer, execution_id, "t1", lease_seconds=60, row=row)
    # Held back, not written yet.
    assert writer.pending == 1
    assert writer.ops_flushed == 0
    running = await wait_for(pool, execution_id, lambda r: r["status"] == "running")
    assert running["lease_owner"] == writer.owner
    assert running["lease_token"] == "t1"
    assert running["worker"] == writer.owner
    assert running["function_slug"] == "system/echo"
    assert running["input"] == {"q": "hello"}
    assert running["workflow_execution_id"] == "wf-1"
    assert running["node_id"] == "n1"
    assert running["attempt"] == 2
    assert running["started_at"] is not None
    assert abs(running["started_at"].timestamp() - row.opened) < 0.01
    assert running["completed_at"] is None
    assert running["result"] is None
    assert await pool.fetchval(
        "SELECT lease_expires_at > now() + interval '50 seconds' FROM function_executions WHERE id = $1",
        execution_id,
    )
    assert row.calls == 1

    # Its finish (under the same claim) completes it and drops the lease; the started_at
    # of the result replaces the open's.
    await writer.finish(finish_record(execution_id, "completed", "t1", output={"done": 1}))
    done = await execution_row(pool, execution_id)
    assert done is not None
    assert (done["status"], done["output"], done["lease_owner"], done["lease_expires_at"]) == (
        "completed",
        {"done": 1},
        None,
        None,
    )
    assert done["input"] == {"q": "hello"}  # kept from the open (the finish sent none)
    assert done["attempt"] == 2  # the higher of the two
    assert done["started_at"].isoformat() == STARTED


async def test_a_released_open_is_a_pending_row(writer: HistoryWriter, pool: Any) -> None:
    # Released while still held back: written once, as pending.
    held = new_id()
    open_row(writer, held, "t1")
    writer.released(held, "t1")
    assert writer.pending == 1
    row = await wait_for(pool, held, lambda r: r["status"] is not None)
    assert row["status"] == "pending"
    assert row["lease_owner"] is None
    assert row["function_slug"] == "system/echo"
    assert row["input"] == {"q": "hello"}

    # Released after the running row was written: it turns pending again.
    written = new_id()
    open_row(writer, written, "t2")
    await wait_for(pool, written, lambda r: r["status"] == "running")
    writer.released(written, "t2")
    row = await wait_for(pool, written, lambda r: r["status"] == "pending")
    assert row["lease_owner"] is None
    assert row["input"] == {"q": "hello"}  # the release carries no row: the rest is kept
    assert row["function_slug"] == "system/echo"
    assert await pool.fetchval(
        "SELECT lease_expires_at <= now() FROM function_executions WHERE id = $1", written
    )

    # The next claim (another worker, attempt 2) opens it as running again.
    other = HistoryWriter(pool, owner="fleet-ai/b/2")
    other.start()
    try:
        open_row(other, written, "t3", row=RowCalls(written, attempt=2))
        row = await wait_for(pool, written, lambda r: r["status"] == "running")
        assert (row["lease_owner"], row["lease_token"], row["attempt"]) == ("fleet-ai/b/2", "t3", 2)
    finally:
        await other.close()


# ---------------------------------------------------------------------- who may replace a row
async def test_a_tokenless_finish_waits_for_the_lease_to_expire(writer: HistoryWriter, pool: Any) -> None:
    other = HistoryWriter(pool, owner="fleet-ai/b/2")
    other.start()
    try:
        live = new_id()
        open_row(writer, live, "t1", lease_seconds=60)
        await wait_for(pool, live, lambda r: r["status"] == "running")
        # e.g. a duplicate's dead-letter failure, from another worker: refused.
        await other.finish(finish_record(live, "failed", None))
        assert other.ops_flushed == 1  # it was written, and changed nothing
        row = await execution_row(pool, live)
        assert row is not None
        assert (row["status"], row["lease_owner"], row["result"]) == ("running", OWNER, None)
        # Not from the lease holder's own process either: only under a claim.
        await writer.finish(finish_record(live, "failed", None))
        assert (await execution_row(pool, live) or {})["status"] == "running"

        expired = new_id()
        open_row(writer, expired, "t1", lease_seconds=0.05)
        await wait_for(pool, expired, lambda r: r["status"] == "running")
        await wait_until_lease_expired(pool, expired)
        await other.finish(finish_record(expired, "failed", None))
        row = await execution_row(pool, expired)
        assert row is not None
        assert (row["status"], row["lease_owner"]) == ("failed", None)
        assert row["error"] == {"code": "function_failed", "message": "nope"}
    finally:
        await other.close()


async def test_a_final_row_is_never_replaced(writer: HistoryWriter, pool: Any) -> None:
    other = HistoryWriter(pool, owner="fleet-ai/b/2")
    other.start()
    try:
        execution_id = new_id()
        first = result_data(execution_id, "completed", {"n": 1})
        await writer.finish(finish_record(execution_id, "completed", "t1", data=first))
        for later in (
            finish_record(execution_id, "failed", "t1"),  # the same claim
            finish_record(execution_id, "completed", "t2", output={"n": 2}),  # another claim
            finish_record(execution_id, "failed", None),  # no claim
        ):
            await other.finish(later)
        # Nor does a late running mark or release reopen it.
        open_row(other, execution_id, "t3")
        other.released(execution_id, "t3")
        await other.close()
        assert other.ops_flushed == 4
        row = await execution_row(pool, execution_id)
        assert row is not None
        assert row["status"] == "completed"
        assert row["result"] == first
        assert row["output"] == {"n": 1}
        assert row["error"] is None
        assert row["lease_token"] == "t1"
    finally:
        await other.close()


# ---------------------------------------------------------------------- columns
async def test_columns_are_derived_from_the_result(writer: HistoryWriter, pool: Any) -> None:
    ok, failed, bare = new_id(), new_id(), new_id()
    ok_data = result_data(ok, "completed", {"answer": [1, 2, {"x": None}]}, warnings=["w"])
    failed_data = result_data(failed, "failed")
    bare_data = {"execution_id": bare, "status": "completed"}  # no output, no error keys
    await asyncio.gather(
        writer.finish(finish_record(ok, "completed", "t1", data=ok_data, input={"in": True})),
        writer.finish(finish_record(failed, "failed", "t2", data=failed_data)),
        writer.finish(finish_record(bare, "completed", "t3", data=bare_data)),
    )
    row = await execution_row(pool, ok)
    assert row is not None
    assert row["result"] == ok_data
    assert row["output"] == {"answer": [1, 2, {"x": None}]}
    assert await pool.fetchval("SELECT error IS NULL FROM function_executions WHERE id = $1", ok)
    assert row["input"] == {"in": True}
    assert row["started_at"].isoformat() == STARTED
    assert row["completed_at"].isoformat() == COMPLETED
    assert row["duration_ms"] == 1250.0
    assert row["worker"] == "fleet-ai/a"
    assert (row["function_slug"], row["workflow_execution_id"], row["node_id"]) == (
        "system/echo",
        "wf-1",
        "n1",
    )

    row = await execution_row(pool, failed)
    assert row is not None
    assert row["status"] == "failed"
    assert row["error"] == {"code": "function_failed", "message": "nope"}
    assert row["result"] == failed_data
    assert await pool.fetchval("SELECT output IS NULL FROM function_executions WHERE id = $1", failed)

    assert await pool.fetchval(
        "SELECT output IS NULL AND error IS NULL FROM function_executions WHERE id = $1", bare
    )


async def test_a_nul_character_is_replaced_not_fatal(writer: HistoryWriter, pool: Any) -> None:
    nul, plain, opened = new_id(), new_id(), new_id()
    await writer.finish(
        finish_record(nul, "completed", "t1", output={"text": "a\u0000b"}, input={"in": "\u0000"}), wait=False
    )
    await writer.finish(finish_record(plain, "completed", "t2", output={"text": "fine"}), wait=False)
    open_row(writer, opened, "t3", row=RowCalls(opened, input={"in": "x\u0000y"}))
    await writer.close()
    # Every op went in the statements: none was rejected and isolated.
    assert writer.ops_flushed == 3
    row = await execution_row(pool, nul)
    assert row is not None
    assert row["output"] == {"text": "a\ufffdb"}
    assert row["input"] == {"in": "\ufffd"}
    assert row["result"]["output"] == {"text": "a\ufffdb"}
    assert (await execution_row(pool, plain) or {}).get("output") == {"text": "fine"}
    assert (await execution_row(pool, opened) or {}).get("input") == {"in": "x\ufffdy"}


async def test_text_that_only_looks_like_a_nul_escape_is_kept(writer: HistoryWriter, pool: Any) -> None:
    # A backslash followed by "u0000" is six ordinary characters (source code, a regex, a log
    # line): nothing to replace.
    execution_id = new_id()
    literal = 'printf("\\u0000")'
    assert "\u0000" not in literal
    await writer.finish(finish_record(execution_id, "completed", "t1", output={"code": literal}))
    row = await execution_row(pool, execution_id)
    assert row is not None
    assert row["output"] == {"code": literal}


# ---------------------------------------------------------------------- nobody waiting
async def test_a_finish_nobody_waits_for_is_written_at_close(
    writer: HistoryWriter, pool: Any, migrated_url: str
) -> None:
    execution_id = new_id()
    # Hold every insert back, so that "returned before the row exists" does not depend on timing.
    blocker = await asyncpg.connect(migrated_url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE function_executions IN SHARE MODE")
        await asyncio.wait_for(
            writer.finish(finish_record(execution_id, "completed", "t1", output={"n": 1}), wait=False), 2
        )
        assert await execution_row(pool, execution_id) is None
        await transaction.rollback()
    finally:
        await blocker.close()
    await writer.close()
    row = await execution_row(pool, execution_id)
    assert row is not None
    assert row["status"] == "completed"
    assert row["output"] == {"n": 1}
    assert writer.pending == 0
