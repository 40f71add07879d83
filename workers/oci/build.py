"""`fleet build`: build a function's image in the cluster with a Kaniko Job.

* **Context**: the function directory as a ``tar.gz`` in a ConfigMap (``binaryData``), at most
  ``FLEET_OCI_BUILD_CONTEXT_MAX_BYTES`` gzipped (ConfigMaps hold 1 MiB; ``node_modules``,
  ``.git``, ``__pycache__``, ``.gocache`` and ``function.local.yaml`` are left out), mounted
  read-only and read by Kaniko as ``tar:///workspace/context.tar.gz``. Larger contexts: pass a
  context URL Kaniko understands (``git://…``, ``s3://…``, ``gs://…``, ``https://…tar.gz``)
  instead, and no ConfigMap is made.
* **Job**: Kaniko ``--destination=<ref> --cache=true``; ``backoffLimit: 0``, a deadline,
  a TTL, no service-account token, seccomp ``RuntimeDefault``, no privilege escalation. Kaniko
  must run as root to unpack base images, so unlike function Jobs it keeps root and its
  capabilities. Registry push credentials: a ``kubernetes.io/dockerconfigjson`` Secret, mounted
  as ``/kaniko/.docker/config.json`` (``--push-secret``).
* The Job is created suspended, the ConfigMap is created owned by it, then the Job is resumed
  (as for function credentials), followed by watch to its end, and deleted afterwards with its
  ConfigMap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigError
from shared.settings import Settings
from workers.oci.kube import KubeClient, KubeConfig, KubeError, load_config
from workers.oci.kubernetes import _condition, follow
from workers.oci.manifests import MANAGED_BY, dns_label

__all__ = ["BuildPlan", "BuildResult", "pack_context", "plan_build", "run_build"]

EXCLUDED = frozenset(
    {"node_modules", ".git", "__pycache__", ".gocache", "function.local.yaml", "dist-newstyle"}
)
CONTEXT_KEY = "context.tar.gz"
#: Seconds a build may run (``activeDeadlineSeconds``).
BUILD_DEADLINE = 1800


def pack_context(directory: Path, max_bytes: int) -> bytes:
    """``directory`` as a reproducible ``tar.gz`` (sorted, zeroed owners and times).

    Raises:
        ConfigError: no Dockerfile, or larger than ``max_bytes`` gzipped.
    """
    if not (directory / "Dockerfile").is_file():
        raise ConfigError(f"{directory} has no Dockerfile")
    buffer = io.BytesIO()
    # gzip's header carries a timestamp (the current time unless told otherwise): zero it too,
    # or the same directory packs differently from one second to the next.
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if any(part in EXCLUDED for part in relative.parts) or path.is_symlink():
                continue
            info = tar.gettarinfo(str(path), arcname=str(relative))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        raise ConfigError(
            f"the build context is {len(data)} bytes gzipped; a ConfigMap context holds at most {max_bytes} "
            "(FLEET_OCI_BUILD_CONTEXT_MAX_BYTES): pass --context-url instead"
        )
    return data


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """The objects of one build: the Job and (with a directory context) its ConfigMap."""

    job: dict[str, Any]
    configmap: dict[str, Any] | None

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])


def plan_build(
    image: str,
    settings: Settings,
    *,
    directory: Path | None = None,
    context_url: str | None = None,
    push_secret: str | None = None,
    dockerfile: str = "Dockerfile",
) -> BuildPlan:
    """Render the Kaniko Job (and ConfigMap) that builds ``image`` (see module docstring)."""
    if (directory is None) == (context_url is None):
        raise ConfigError("give a directory or a context URL (not both)")
    context = pack_context(directory, settings.oci_build_context_max_bytes) if directory is not None else None
    digest = hashlib.sha256((context or (context_url or "").encode()) + image.encode()).hexdigest()[:10]
    name = f"fleet-build-{dns_label(image.rsplit('/', 1)[-1].replace(':', '-'), 30)}-{digest}"
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": "image-build",
        "fleet.dev/job": name,
    }
    args = [
        f"--dockerfile={dockerfile}",
        f"--destination={image}",
        "--cache=true",
        "--snapshot-mode=redo",
        "--verbosity=info",
    ]
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if context is not None:
        args.insert(0, f"--context=tar:///workspace/{CONTEXT_KEY}")
        mounts.append({"name": "context", "mountPath": "/workspace", "readOnly": True})
        volumes.append({"name": "context", "configMap": {"name": f"{name}-context"}})
    else:
        args.insert(0, f"--context={context_url}")
    if push_secret:
        mounts.append({"name": "push-credentials", "mountPath": "/kaniko/.docker", "readOnly": True})
        volumes.append(
            {
                "name": "push-credentials",
                "secret": {
                    "secretName": push_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
    container: dict[str, Any] = {
        "name": "kaniko",
        "image": settings.oci_kaniko_image,
        "args": args,
        "volumeMounts": mounts,
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.oci_namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": BUILD_DEADLINE,
            "ttlSecondsAfterFinished": settings.oci_job_ttl_seconds,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    configmap = None
    if context is not None:
        job["spec"]["suspend"] = True
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{name}-context",
                "namespace": settings.oci_namespace,
                "labels": dict(labels),
            },
            "binaryData": {CONTEXT_KEY: base64.b64encode(context).decode()},
            "immutable": True,
        }
    return BuildPlan(job=job, configmap=configmap)


@dataclass(frozen=True, slots=True)
class BuildResult:
    ok: bool
    job: str
    reason: str
    log_tail: list[str]


async def run_build(plan: BuildPlan, settings: Settings, config: KubeConfig | None = None) -> BuildResult:
    """Create the build, follow it to its end (watch), read the log tail, delete it.

    Raises:
        KubeError: the API failed (after retries) or refused.
    """
    config = config or await load_config(settings)
    ns = settings.oci_namespace
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    async with KubeClient.from_settings(config, settings) as kube:
        try:
            created = await kube.request("POST", jobs, body=plan.job)
            if plan.configmap is not None:
                configmap = dict(plan.configmap)
                configmap["metadata"] = {
                    **plan.configmap["metadata"],
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": plan.name,
                            "uid": created["metadata"]["uid"],
                        }
                    ],
                }
                await kube.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body=configmap)
                await kube.request(
                    "PATCH",
                    f"{jobs}/{plan.name}",
                    body={"spec": {"suspend": False}},
                    content_type="application/merge-patch+json",
                )

            async def lister() -> tuple[list[dict[str, Any]], str]:
                job = await kube.request("GET", f"{jobs}/{plan.name}")
                return [job], str(job["metadata"].get("resourceVersion", ""))

            def check(kind: str, job: dict[str, Any]) -> dict[str, Any] | None:
                return job if (_condition(job, "Complete") or _condition(job, "Failed")) else None

            job = await follow(kube, jobs, {"fieldSelector": f"metadata.name={plan.name}"}, lister, check)
            failed = _condition(job, "Failed")
            pods = await kube.request(
                "GET", f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": f"fleet.dev/job={plan.name}"}
            )
            tail: list[str] = []
            for pod in (pods.get("items") or [])[-1:]:
                text = await kube.request(
                    "GET",
                    f"/api/v1/namespaces/{ns}/pods/{pod['metadata']['name']}/log",
                    params={"container": "kaniko", "tailLines": str(settings.oci_log_tail_lines)},
                    text=True,
                )
                tail = str(text).splitlines()
            reason = (
                "built and pushed"
                if failed is None
                else f"{failed.get('reason')}: {failed.get('message', '')}"
            )
            return BuildResult(ok=failed is None, job=plan.name, reason=reason, log_tail=tail)
        finally:
            await asyncio.shield(_delete(kube, f"{jobs}/{plan.name}"))
            if plan.configmap is not None:
                await asyncio.shield(_delete(kube, f"/api/v1/namespaces/{ns}/configmaps/{plan.name}-context"))


async def _delete(kube: KubeClient, path: str) -> None:
    """Delete ``path`` (Background propagation); 404 and outages are ignored (the TTL catches up)."""
    with contextlib.suppress(KubeError):
        await kube.request(
            "DELETE",
            path,
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
