"""`fleet workflow run FILE`: run a workflow (a DAG of function calls, shared/workflow.py) through
the fleet and print how each node ended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from shared.errors import ConfigError
from shared.tools.cli.common import EXIT_FAILED, echo_json, echo_table, make_settings, resolve_broker, run
from shared.tools.cli.options import home_option, redis_url_option

__all__ = ["workflow"]


@click.group()
def workflow() -> None:
    """Run workflows: DAGs of function calls whose outputs feed later nodes' templates."""


@workflow.command("run")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--run-id",
    envvar="FLEET_WORKFLOW_RUN_ID",
    show_envvar=True,
    help="workflow_execution_id of the run (default: new). The same id again is answered from "
    "the fleet's stored results instead of running anything twice.",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(1, 1000),
    default=16,
    show_default=True,
    envvar="FLEET_WORKFLOW_MAX_PARALLEL",
    show_envvar=True,
    help="Nodes running at once, at most.",
)
@click.option(
    "--json", "as_json", is_flag=True, envvar="FLEET_JSON", show_envvar=True, help="Print the run as JSON."
)
@redis_url_option
@home_option
def run_command(
    path: Path,
    run_id: str | None,
    max_parallel: int,
    as_json: bool,
    redis_url: str | None,
    home: str | None,
) -> None:
    """Run the workflow in PATH (YAML or JSON: {nodes: [{id, function, input, depends_on}]}).
    Exit 0 when every node completed, 1 otherwise."""
    from shared.client import FleetClient
    from shared.workflow import Workflow, describe, run_workflow

    try:
        workflow_ = Workflow.from_dict(_load(path))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    settings = resolve_broker(make_settings(redis_url=redis_url, home=home))

    async def main() -> Any:
        async with FleetClient(settings=settings) as client:
            return await run_workflow(
                client, workflow_, workflow_execution_id=run_id, max_parallel=max_parallel
            )

    result = run(main())
    if as_json:
        echo_json(
            {
                "workflow_execution_id": result.workflow_execution_id,
                "status": result.status,
                "nodes": {
                    node: {
                        "state": n.state,
                        "result": n.result.model_dump(mode="json", exclude_none=True) if n.result else None,
                        "reason": n.reason,
                    }
                    for node, n in result.nodes.items()
                },
            }
        )
    else:
        click.echo(f"workflow {result.workflow_execution_id}: {result.status}")
        echo_table(describe(result), ["node", "state", "detail"])
    raise SystemExit(0 if result.status == "completed" else EXIT_FAILED)


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise click.UsageError(f"{path}: not a workflow file: {exc}") from None
    if not isinstance(data, dict):
        raise click.UsageError(f"{path}: a workflow is a mapping with `nodes`")
    return data
