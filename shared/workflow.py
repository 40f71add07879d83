"""A small orchestrator: run a DAG of function calls through :class:`~shared.client.FleetClient`.

The fleet runs single functions; a workflow engine decides what runs next. This module is the
smallest such engine, shipped as the example an orchestrator's developer starts from (and as
`fleet workflow run FILE`)::

    workflow = Workflow.from_dict({
        "nodes": [
            {"id": "fetch", "function": "system/http-request", "input": {"url": "https://example.com"}},
            {"id": "summary", "function": "openai/generate-text",
             "input": {"prompt": "Summarise: {{fetch.body}}"}, "depends_on": ["fetch"]},
        ]
    })
    async with FleetClient() as client:
        run = await run_workflow(client, workflow)
    print(run.status, run.outputs["summary"])

Semantics:

* a node runs once every node it ``depends_on`` completed; nodes whose dependencies are all
  done run in parallel (``max_parallel`` at most);
* a node's request carries the outputs of every node completed so far as its ``context``, so
  ``{{node.field}}`` templates in its input resolve against them (the worker resolves them);
  every request carries the run's ``workflow_execution_id`` and its ``node_id``;
* the fleet retries a failing node by the function's policy; a node that ends ``failed`` fails
  the run: nodes that depend on it (directly or not) are ``skipped``, independent branches
  still finish;
* execution ids are derived from the run id and the node id, so running the same run id again
  is answered from the fleet's stored results instead of running anything twice (with the
  registry's exactly-once claims).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from shared.contract import ExecutionResult
from shared.errors import ConfigError, ExecutionTimeout

__all__ = ["Node", "NodeRun", "Workflow", "WorkflowClient", "WorkflowRun", "run_workflow"]

NodeState = Literal["completed", "failed", "skipped", "timeout"]


class WorkflowClient(Protocol):
    """What :func:`run_workflow` needs of a client (:class:`~shared.client.FleetClient`)."""

    async def invoke(
        self, slug: str, input: dict[str, Any] | None = None, *, timeout: float = 30.0, **options: Any
    ) -> ExecutionResult: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One function call of a workflow. ``domain`` overrides routing; ``timeout`` is how long
    the run waits for its result (seconds)."""

    id: str
    function: str
    input: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    domain: str | None = None
    timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class Workflow:
    """A DAG of :class:`Node` s, validated on construction (unique ids, known dependencies,
    no cycles): :class:`~shared.errors.ConfigError` names the problem."""

    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        ids = [n.id for n in self.nodes]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"workflow: node ids used twice: {', '.join(duplicates)}")
        known = set(ids)
        for node in self.nodes:
            unknown = [d for d in node.depends_on if d not in known]
            if unknown:
                raise ConfigError(f"workflow: node {node.id!r} depends on unknown {', '.join(unknown)}")
        self.order()  # raises on a cycle

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Workflow:
        """From ``{"nodes": [{"id", "function", "input", "depends_on", "domain", "timeout"}]}``."""
        raw = data.get("nodes")
        if not isinstance(raw, list) or not raw:
            raise ConfigError("workflow: `nodes` must be a non-empty list")
        nodes = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise ConfigError(f"workflow: every node needs a string `id`: {item!r}")
            if not isinstance(item.get("function"), str):
                raise ConfigError(f"workflow: node {item['id']!r} needs a `function`")
            nodes.append(
                Node(
                    id=item["id"],
                    function=item["function"],
                    input=dict(item.get("input") or {}),
                    depends_on=tuple(item.get("depends_on") or ()),
                    domain=item.get("domain"),
                    timeout=float(item.get("timeout", 300.0)),
                )
            )
        return cls(tuple(nodes))

    def order(self) -> list[str]:
        """Node ids in an order where every node comes after its dependencies."""
        remaining = {n.id: set(n.depends_on) for n in self.nodes}
        ordered: list[str] = []
        while remaining:
            ready = sorted(i for i, deps in remaining.items() if not deps)
            if not ready:
                raise ConfigError(f"workflow: a cycle among {', '.join(sorted(remaining))}")
            for i in ready:
                ordered.append(i)
                del remaining[i]
            for deps in remaining.values():
                deps.difference_update(ready)
        return ordered


@dataclass(frozen=True, slots=True)
class NodeRun:
    """How one node ended: its ``state``, the fleet's result (``None`` when skipped or timed
    out) and why it was skipped or timed out."""

    node: str
    state: NodeState
    result: ExecutionResult | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """A finished run: ``status`` is ``completed`` when every node completed, else ``failed``."""

    workflow_execution_id: str
    nodes: dict[str, NodeRun]

    @property
    def status(self) -> Literal["completed", "failed"]:
        return "completed" if all(n.state == "completed" for n in self.nodes.values()) else "failed"

    @property
    def outputs(self) -> dict[str, Any]:
        """Outputs of the completed nodes, by node id."""
        return {i: n.result.output for i, n in self.nodes.items() if n.state == "completed" and n.result}


def execution_id_for(workflow_execution_id: str, node_id: str) -> str:
    """The execution id of ``node_id`` in a run: the same run id gives the same ids, so a rerun
    is answered by the fleet's stored results (exactly-once per node)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fleet-workflow:{workflow_execution_id}:{node_id}"))


async def run_workflow(
    client: WorkflowClient,
    workflow: Workflow,
    *,
    workflow_execution_id: str | None = None,
    max_parallel: int = 16,
    extra_context: Mapping[str, Any] | None = None,
) -> WorkflowRun:
    """Run ``workflow`` to its end (see the module docstring); never raises for a node's
    failure, only for a broken workflow or an unreachable broker."""
    run_id = workflow_execution_id or str(uuid.uuid4())
    by_id = {n.id: n for n in workflow.nodes}
    outputs: dict[str, Any] = dict(extra_context or {})
    finished: dict[str, NodeRun] = {}
    running: dict[asyncio.Task[NodeRun], str] = {}
    slots = asyncio.Semaphore(max_parallel)

    async def call(node: Node) -> NodeRun:
        async with slots:
            try:
                result = await client.invoke(
                    node.function,
                    dict(node.input),
                    timeout=node.timeout,
                    domain=node.domain,
                    execution_id=execution_id_for(run_id, node.id),
                    context=dict(outputs),
                    workflow_execution_id=run_id,
                    node_id=node.id,
                )
            except ExecutionTimeout as exc:
                return NodeRun(node.id, "timeout", reason=exc.message)
        return NodeRun(node.id, "completed" if result.ok else "failed", result)

    order = [by_id[i] for i in workflow.order()]

    def start_ready() -> None:
        # In dependency order, so a failure's skips cascade in one pass.
        for node in order:
            if node.id in finished or node.id in running.values():
                continue
            deps = [finished.get(d) for d in node.depends_on]
            broken = next((d.node for d in deps if d is not None and d.state != "completed"), None)
            if broken is not None:
                reason = f"depends on {broken}, which did not complete"
                finished[node.id] = NodeRun(node.id, "skipped", reason=reason)
            elif all(d is not None for d in deps):
                running[asyncio.create_task(call(node), name=f"workflow-node-{node.id}")] = node.id

    while len(finished) < len(by_id):
        start_ready()
        if not running:
            break  # everything left was skipped
        done, _ = await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            running.pop(task)
            node_run = task.result()
            finished[node_run.node] = node_run
            if node_run.state == "completed" and node_run.result is not None:
                outputs[node_run.node] = node_run.result.output
    return WorkflowRun(run_id, {i: finished[i] for i in workflow.order() if i in finished})


def describe(run: WorkflowRun) -> Sequence[tuple[str, str, str]]:
    """(node, state, detail) rows for people: the error code or skip reason of each node."""
    rows = []
    for node, node_run in run.nodes.items():
        detail = ""
        if node_run.result is not None and node_run.result.error is not None:
            detail = f"{node_run.result.error.code}: {node_run.result.error.message}"
        elif node_run.reason:
            detail = node_run.reason
        rows.append((node, node_run.state, detail))
    return rows
