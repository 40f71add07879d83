"""The deadline sweeper behind TimeoutMiddleware: overruns become `timeout`, other
cancellations stay cancellations, and tasks are left clean either way."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.contract import RequestData
from shared.errors import ExecutionTimeout
from shared.functions import ExecutionContext, FunctionSpec
from shared.runtime.envelope import RequestEvent
from shared.runtime.middleware import Call, TimeoutMiddleware


async def _noop(data: Any, ctx: ExecutionContext) -> Any:
    return None


def make_call(timeout: float) -> Call:
    spec = FunctionSpec(slug="test/slow", name="Slow", description="", domain=None, handler=_noop)
    event = RequestEvent(
        id="e", source="s", type="fleet.execution.requested", data=RequestData(function="test/slow")
    )
    ctx = ExecutionContext(execution_id="e", function="test/slow", attempt=1, domain="ai")
    return Call(event=event, spec=spec, ctx=ctx, input={}, timeout=timeout, started_monotonic=0.0)


async def test_overrun_fails_with_timeout_and_leaves_the_task_clean() -> None:
    middleware = TimeoutMiddleware()

    async def sleepy(call: Call) -> Any:
        await asyncio.sleep(10)

    async def run() -> int:
        with pytest.raises(ExecutionTimeout) as caught:
            await middleware(make_call(0.1), sleepy)
        assert caught.value.details == {"timeout_seconds": 0.1}
        task = asyncio.current_task()
        assert task is not None
        await asyncio.sleep(0)  # the task goes on working normally afterwards
        return task.cancelling()

    assert await asyncio.create_task(run()) == 0


async def test_calls_that_finish_in_time_return_their_output() -> None:
    middleware = TimeoutMiddleware()

    async def quick(call: Call) -> Any:
        await asyncio.sleep(0.01)
        return {"ok": True}

    outputs = await asyncio.gather(*(middleware(make_call(5), quick) for _ in range(50)))
    assert outputs == [{"ok": True}] * 50


async def test_an_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    middleware = TimeoutMiddleware()
    started = asyncio.Event()

    async def sleepy(call: Call) -> Any:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(middleware(make_call(30), sleepy))
    await started.wait()
    task.cancel()  # e.g. the drain deadline at shutdown
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_only_the_overdue_call_is_cancelled() -> None:
    middleware = TimeoutMiddleware()

    async def sleep_for(call: Call) -> Any:
        await asyncio.sleep(call.timeout * 3 if call.timeout < 1 else 0.3)
        return call.timeout

    slow = asyncio.create_task(middleware(make_call(0.1), sleep_for))
    fine = asyncio.create_task(middleware(make_call(5), sleep_for))
    results = await asyncio.gather(slow, fine, return_exceptions=True)
    assert isinstance(results[0], ExecutionTimeout)
    assert results[1] == 5
