"""`fleet new` (scaffold an OCI function from a template) and `fleet build` (build its image
with a Kaniko Job). The work is done in ``shared/tools/scaffold.py`` (the console scaffolds
too) and ``workers/oci/build.py``; ``shared/tools/cli/main.py`` names these commands by string
and imports this module on demand."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from shared.errors import ConfigError
from shared.tools.cli.common import EXIT_FAILED, make_settings, run

__all__ = ["build", "new"]


@click.command("new")
@click.argument("language", type=click.Choice(["python", "typescript", "go"]))
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    envvar="FLEET_NEW_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to create the function's directory.",
)
def new(language: str, name: str, directory: Path) -> None:
    """Scaffold an OCI function NAME (`action` or `plugin/action`) from the LANGUAGE template.

    Creates DIR/<action> with the source, a Dockerfile, function.yaml (for a cluster) and
    function.local.yaml (for `fleet up`). Refuses to overwrite an existing directory.
    """
    from shared.tools.scaffold import scaffold

    try:
        made = scaffold(language, name, directory)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"created {made.directory} ({made.language}, slug {made.slug})")
    click.echo("next:")
    click.echo(
        f"  fleet functions register {made.directory / 'function.local.yaml'}   # run it under `fleet up`"
    )
    click.echo(
        f"  fleet build {made.directory} --image <registry>/{made.slug}:0.1.0     # build for a cluster"
    )


def _update_definition(directory: Path, image: str) -> dict[str, Any] | None:
    """Point ``image_ref`` of ``directory``'s function.yaml (and function.local.yaml) at ``image``;
    the updated definition, or ``None`` without a function.yaml."""
    import re

    definition: dict[str, Any] | None = None
    for file in ("function.yaml", "function.local.yaml"):
        path = directory / file
        if path.is_file():
            text = re.sub(r"^image_ref:.*$", f"image_ref: {image}", path.read_text(), count=1, flags=re.M)
            path.write_text(text)
            if file == "function.yaml":
                definition = yaml.safe_load(text)
    return definition


async def _register(database_url: str, definition: dict[str, Any]) -> str:
    from shared.registry.database import connect
    from shared.registry.models import FunctionDefinition
    from shared.registry.repository import FunctionRepository

    connection = await connect(database_url)
    try:
        record, action = await FunctionRepository(connection).register(
            FunctionDefinition.model_validate(definition), created_by="fleet build"
        )
    finally:
        await connection.close()
    return f"{record.slug} {action} (version {record.version}, image_ref {record.image_ref})"


@click.command("build")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--image", required=True, envvar="FLEET_BUILD_IMAGE", show_envvar=True, help="Image reference to push."
)
@click.option("--dry-run", is_flag=True, help="Print the ConfigMap and Job as YAML; create nothing.")
@click.option(
    "--context-url",
    envvar="FLEET_BUILD_CONTEXT_URL",
    show_envvar=True,
    help="Build from this context (git://, s3://, gs://, https://…tar.gz) instead of DIRECTORY's files.",
)
@click.option(
    "--push-secret",
    envvar="FLEET_BUILD_PUSH_SECRET",
    show_envvar=True,
    help="A kubernetes.io/dockerconfigjson Secret with push credentials for the registry.",
)
@click.option(
    "--namespace", envvar="FLEET_OCI_NAMESPACE", show_envvar=True, help="Namespace of the build Job."
)
@click.option(
    "--kubeconfig",
    envvar="FLEET_OCI_KUBECONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Kubeconfig (default: in-cluster, else KUBECONFIG / ~/.kube/config).",
)
@click.option(
    "--database-url",
    envvar="FLEET_DATABASE_URL",
    show_envvar=True,
    help="Registry to update with the new image_ref (unset: only function.yaml is updated).",
)
def build(
    directory: Path,
    image: str,
    dry_run: bool,
    context_url: str | None,
    push_secret: str | None,
    namespace: str | None,
    kubeconfig: Path | None,
    database_url: str | None,
) -> None:
    """Build DIRECTORY's image with a Kaniko Job in the cluster and push it to IMAGE.

    The context is DIRECTORY as a tar.gz in a ConfigMap (FLEET_OCI_BUILD_CONTEXT_MAX_BYTES at
    most) unless --context-url is given. On success, function.yaml's image_ref becomes IMAGE and,
    with a registry, the function is re-registered with it.
    """
    from workers.oci.build import plan_build, run_build
    from workers.oci.kube import KubeError

    settings = make_settings(oci_namespace=namespace, oci_kubeconfig=kubeconfig, database_url=database_url)
    try:
        plan = plan_build(
            image,
            settings,
            directory=None if context_url else directory,
            context_url=context_url,
            push_secret=push_secret,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    documents = [d for d in (plan.configmap, plan.job) if d is not None]
    if dry_run:
        click.echo(yaml.safe_dump_all(documents, sort_keys=False), nl=False)
        return
    click.echo(f"building {image} in Job {settings.oci_namespace}/{plan.name} …")
    try:
        result = run(run_build(plan, settings))
    except KubeError as exc:
        click.echo(f"build failed: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if not result.ok:
        click.echo(f"build failed: {result.reason}", err=True)
        for line in result.log_tail:
            click.echo(f"  {line}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"built and pushed {image}")
    definition = _update_definition(directory, image)
    if definition is None:
        click.echo("no function.yaml in the directory: register the image_ref yourself")
    elif settings.database_url:
        click.echo(f"registry: {run(_register(settings.database_url, definition))}")
    else:
        click.echo(
            "function.yaml updated; no registry configured (FLEET_DATABASE_URL): register it to use the image"
        )
