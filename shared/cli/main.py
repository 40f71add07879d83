"""The `fleet` command: one group, one module per command family."""

from __future__ import annotations

import click

from shared.cli.bench import bench
from shared.cli.config import config
from shared.cli.db import db, executions, functions
from shared.cli.invoke import invoke, publish
from shared.cli.manifests import manifests, streams
from shared.cli.oci import build, new
from shared.cli.topic import dlq, topic
from shared.cli.up import up
from shared.cli.worker import worker

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="function-fleet")
def cli() -> None:
    """Function Fleet: event-driven workers for workflow functions.

    Every option has a FLEET_* environment fallback (shown in each command's --help).
    """


for command in (
    up,
    worker,
    publish,
    invoke,
    config,
    bench,
    topic,
    dlq,
    db,
    functions,
    new,
    build,
    executions,
    manifests,
    streams,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="fleet")


if __name__ == "__main__":
    main()
