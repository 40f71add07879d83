"""The `fleet` command: one group, one module per command family, imported on demand.

Commands are loaded lazily so that `fleet worker` (a long-lived process) and quick commands
like `fleet invoke` only import what they use: a worker does not carry the manifest renderer,
the registry CLI or the benchmark in memory.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["COMMANDS", "cli", "main"]

#: command name → "module:attribute" of its click command, in the order `--help` lists them.
COMMANDS: dict[str, str] = {
    "up": "shared.tools.cli.up:up",
    "worker": "shared.tools.cli.worker:worker",
    "publish": "shared.tools.cli.invoke:publish",
    "invoke": "shared.tools.cli.invoke:invoke",
    "status": "shared.tools.cli.status:status",
    "ui": "shared.tools.cli.ui:ui",
    "scale": "shared.tools.cli.scale:scale",
    "workflow": "shared.tools.cli.workflow:workflow",
    "config": "shared.tools.cli.config:config",
    "bench": "shared.tools.cli.bench:bench",
    "topic": "shared.tools.cli.topic:topic",
    "dlq": "shared.tools.cli.topic:dlq",
    "manifests": "shared.tools.cli.manifests:manifests",
    "streams": "shared.tools.cli.manifests:streams",
    "contract": "shared.tools.cli.contract:contract",
    "db": "shared.tools.cli.db:db",
    "functions": "shared.tools.cli.db:functions",
    "executions": "shared.tools.cli.db:executions",
    "secrets": "shared.tools.cli.secrets:secrets",
    "new": "workers.oci.cli:new",
    "build": "workers.oci.cli:build",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when they are invoked or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(package_name="function-fleet")
def cli() -> None:
    """Function Fleet: event-driven workers for workflow functions.

    Every option has a FLEET_* environment fallback (shown in each command's --help).
    """


def main() -> None:
    cli(prog_name="fleet")


if __name__ == "__main__":
    main()
