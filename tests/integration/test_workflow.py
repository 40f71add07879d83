"""shared.workflow: a DAG of nodes through FleetClient against a real worker — outputs flow into
later nodes' templates, independent nodes run in parallel, a failure skips its dependents only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from shared.client import FleetClient
from shared.errors import ConfigError
from shared.settings import Settings
from shared.workflow import Workflow, execution_id_for, run_workflow

DIAMOND = {
    "nodes": [
        {"id": "start", "function": "system/echo", "input": {"user": "ada", "n": 3}},
        {"id": "left", "function": "system/sleep", "input": {"seconds": 0.5}, "depends_on": ["start"]},
        {"id": "right", "function": "system/sleep", "input": {"seconds": 0.5}, "depends_on": ["start"]},
        {
            "id": "join",
            "function": "system/echo",
            "input": {"greeting": "hi {{start.user}}", "n": "{{start.n}}", "slept": "{{left.slept}}"},
            "depends_on": ["left", "right"],
        },
        {
            "id": "last",
            "function": "system/echo",
            "input": {"from_join": "{{join.greeting}}"},
            "depends_on": ["join"],
        },
    ]
}


async def test_a_diamond_runs_in_order_with_outputs_in_templates(
    settings: Settings, run_worker: Callable[..., Any]
) -> None:
    workflow = Workflow.from_dict(DIAMOND)
    async with run_worker("ai"), FleetClient(settings=settings) as client:
        started = time.monotonic()
        run = await run_workflow(client, workflow, workflow_execution_id="wf-diamond")
        elapsed = time.monotonic() - started
    assert run.status == "completed", run.nodes
    assert run.outputs["join"] == {
        "greeting": "hi ada",
        "n": 3,
        "slept": run.outputs["left"]["slept"],
    }
    assert run.outputs["last"] == {"from_join": "hi ada"}
    for node_id, node_run in run.nodes.items():
        assert node_run.result is not None
        assert node_run.result.execution_id == execution_id_for("wf-diamond", node_id)
    # left and right overlap: their runs intersect in time (each took 0.5 s).
    left, right = run.nodes["left"].result, run.nodes["right"].result
    assert left is not None
    assert right is not None
    spans = [(r.started_at or "", r.completed_at or "") for r in (left, right)]
    assert all(start and end for start, end in spans)
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    assert elapsed > 0.5


async def test_a_failed_node_skips_its_dependents_and_the_rest_finishes(
    settings: Settings, run_worker: Callable[..., Any]
) -> None:
    workflow = Workflow.from_dict(
        {
            "nodes": [
                {"id": "a", "function": "system/echo", "input": {"v": 1}},
                {
                    "id": "bad",
                    "function": "system/fail",
                    "input": {"message": "nope", "code": "invalid_input"},
                },
                {"id": "after_bad", "function": "system/echo", "input": {}, "depends_on": ["bad"]},
                {
                    "id": "after_after",
                    "function": "system/echo",
                    "input": {},
                    "depends_on": ["after_bad", "a"],
                },
                {"id": "after_a", "function": "system/echo", "input": {"v": "{{a.v}}"}, "depends_on": ["a"]},
            ]
        }
    )
    async with run_worker("ai"), FleetClient(settings=settings) as client:
        run = await run_workflow(client, workflow)
    states = {node: n.state for node, n in run.nodes.items()}
    assert states == {
        "a": "completed",
        "bad": "failed",
        "after_bad": "skipped",
        "after_after": "skipped",
        "after_a": "completed",
    }
    assert run.status == "failed"
    assert run.outputs["after_a"] == {"v": 1}
    bad = run.nodes["bad"].result
    assert bad is not None
    assert bad.error is not None
    assert bad.error.code == "invalid_input"


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            [
                {"id": "a", "function": "x/y", "depends_on": ["b"]},
                {"id": "b", "function": "x/y", "depends_on": ["a"]},
            ],
            "cycle",
        ),
        ([{"id": "a", "function": "x/y", "depends_on": ["ghost"]}], "unknown ghost"),
        ([{"id": "a", "function": "x/y"}, {"id": "a", "function": "x/z"}], "used twice"),
        ([], "non-empty"),
    ],
)
def test_broken_workflows_are_refused_with_the_reason(nodes: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Workflow.from_dict({"nodes": nodes})


async def test_fleet_workflow_run_prints_every_node_and_exits_by_the_outcome(
    settings: Settings, run_worker: Callable[..., Any], tmp_path: Any
) -> None:
    import asyncio
    import json
    import os
    import sys

    import yaml

    path = tmp_path / "diamond.yaml"
    path.write_text(yaml.safe_dump(DIAMOND))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(
        {
            "FLEET_REDIS_URL": settings.redis_url or "",
            "FLEET_HOME": str(tmp_path / "home"),
            "FLEET_TOPIC_PREFIX": settings.topic_prefix,
            "FLEET_RESULTS_TOPIC": settings.results_topic,
        }
    )
    async with run_worker("ai"):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.tools.cli.main", "workflow", "run", str(path), "--json",
            "--run-id", "wf-cli", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    document = json.loads(out)
    assert document["workflow_execution_id"] == "wf-cli"
    assert document["status"] == "completed"
    assert list(document["nodes"]) == ["start", "left", "right", "join", "last"]
    assert document["nodes"]["last"]["result"]["output"] == {"from_join": "hi ada"}
