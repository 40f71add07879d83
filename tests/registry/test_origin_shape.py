"""The origin orchestrator's request shape on the pub/sub path: its field names are aliases of
the contract's, a function may be named by registry id, and contradictions are invalid_event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.contract import EVENT_REQUESTED
from shared.errors import InvalidEvent
from shared.registry.repository import FunctionRepository
from shared.registry.sync import sync_builtins
from shared.runtime.envelope import decode_request
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import execution_row
from tests.registry.fixtures_functions import TEST_FUNCTIONS


def _event(data: dict[str, Any], event_id: str = "e-1", **attributes: Any) -> bytes:
    event = {"specversion": "1.0", "id": event_id, "source": "origin", "type": EVENT_REQUESTED, "data": data}
    return orjson.dumps(event | attributes)


def test_origin_names_are_aliases_of_the_contracts() -> None:
    event = decode_request(
        _event(
            {
                "function_slug": "system/echo",
                "input": {"a": 1},
                "workflow_id": "wf-9",
                "node_id": "n-2",
                "node_outputs": {"fetch": {"status": 200}},
            }
        )
    )
    assert event.function == "system/echo"
    assert event.data.workflow_execution_id == "wf-9"
    assert event.data.context == {"fetch": {"status": 200}}
    # The same value under both names is one field given twice: fine.
    same = decode_request(_event({"function": "system/echo", "function_slug": "system/echo"}))
    assert same.function == "system/echo"


@pytest.mark.parametrize(
    "data",
    [
        {"function": "system/echo", "function_slug": "system/fail"},
        {"function": "system/echo", "workflow_id": "a", "workflow_execution_id": "b"},
        {"function": "system/echo", "node_outputs": {"x": 1}, "context": {"x": 2}},
    ],
)
def test_both_spellings_with_different_values_are_invalid(data: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent, match="disagree") as caught:
        decode_request(_event(data))
    assert caught.value.execution_id == "e-1"


def test_a_request_must_name_a_function_one_way_or_another() -> None:
    with pytest.raises(InvalidEvent, match="names no function"):
        decode_request(_event({"input": {}}))
    by_id = decode_request(_event({"function_id": "0b7c6c1e-0000-4000-8000-000000000001"}))
    assert by_id.function == ""
    assert by_id.data.function_id == "0b7c6c1e-0000-4000-8000-000000000001"


async def test_a_registry_worker_runs_a_function_named_by_its_id(
    registry_settings: Callable[..., Settings], redis: Redis, pool: Any
) -> None:
    settings = registry_settings()
    await sync_builtins(pool, TEST_FUNCTIONS)
    echo = await FunctionRepository(pool).get("system/echo")
    assert echo is not None
    topic = settings.topic_for("ai")
    requests = {
        "by-id": {"function_id": echo.id, "input": {"hi": 1}, "workflow_id": "wf-1", "node_id": "n-1"},
        "both": {"function_slug": "system/echo", "function_id": echo.id, "input": {"hi": 2}},
        "unknown-id": {"function_id": "0b7c6c1e-0000-4000-8000-00000000dead", "input": {}},
        "mismatch": {"function": "system/sleep", "function_id": echo.id, "input": {"seconds": 0}},
    }
    for execution_id, data in requests.items():
        await redis.xadd(topic, {"data": _event(data, execution_id), "metadata": b"{}"})

    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        results = {
            r["data"]["execution_id"]: r["data"] for r in await read_results(redis, settings.results_topic, 4)
        }

    assert results["by-id"]["status"] == "completed"
    assert results["by-id"]["function"] == "system/echo"  # results carry the contract's names
    assert results["by-id"]["output"] == {"hi": 1}
    assert results["both"]["output"] == {"hi": 2}
    assert results["unknown-id"]["error"]["code"] == "unknown_function"
    assert results["mismatch"]["error"]["code"] == "invalid_event"
    row = await execution_row(pool, "by-id")
    assert row is not None
    assert row["workflow_execution_id"] == "wf-1"
