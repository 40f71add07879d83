"""The Kubernetes objects of one OCI execution: a hardened Job and its credentials Secret.

Pure functions (no I/O), so tests can assert the exact objects and validate them against the
Kubernetes JSON schemas. Hardening of every Job:

* ``backoffLimit: 0`` (the fleet, not the Job controller, decides about retries),
  ``activeDeadlineSeconds`` = the function's timeout, ``ttlSecondsAfterFinished``;
* pod: ``restartPolicy: Never``, ``automountServiceAccountToken: false``,
  ``enableServiceLinks: false``, ``runAsNonRoot`` with a fixed non-root UID/GID, seccomp
  ``RuntimeDefault``;
* container: ``allowPrivilegeEscalation: false``, ``privileged: false``, every capability
  dropped, read-only root filesystem with a size-limited ``emptyDir`` on ``/tmp``, resource
  requests and limits;
* credentials only through ``valueFrom.secretKeyRef`` into a per-execution Secret owned by the
  Job (never as plain values in the Job spec).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from shared.functions import ExecutionContext
from shared.settings import Settings
from workers.oci.protocol import OciFunction

__all__ = [
    "ANNOTATION_EXECUTION",
    "ANNOTATION_FUNCTION",
    "COMPONENT",
    "CONTAINER",
    "LABEL_EXECUTION",
    "LABEL_FUNCTION",
    "LABEL_JOB",
    "LABEL_WORKER",
    "MANAGED_BY",
    "dns_label",
    "job_manifest",
    "job_name",
    "label_value",
    "secret_manifest",
    "selector",
]

MANAGED_BY = "function-fleet"
COMPONENT = "oci-function"
CONTAINER = "function"
LABEL_EXECUTION = "fleet.dev/execution-id"
LABEL_FUNCTION = "fleet.dev/function"
LABEL_WORKER = "fleet.dev/worker"
LABEL_ATTEMPT = "fleet.dev/attempt"
LABEL_JOB = "fleet.dev/job"
ANNOTATION_EXECUTION = "fleet.dev/execution-id"
ANNOTATION_FUNCTION = "fleet.dev/function"

_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_DNS_BAD = re.compile(r"[^a-z0-9-]+")


def _digest(text: str, size: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def label_value(text: str) -> str:
    """``text`` as a valid label value (≤ 63 characters of ``[A-Za-z0-9_.-]``, alphanumeric at
    both ends): ``/`` becomes ``.``, other characters ``-``; when cut short or emptied, a hash
    of the original keeps it distinct. The exact text goes into an annotation."""
    clean = _LABEL_BAD.sub("-", text.replace("/", "."))
    if len(clean) > 63:
        clean = f"{clean[:52]}-{_digest(text)}"
    clean = clean.strip("-_.")
    return clean or _digest(text)


def dns_label(text: str, size: int) -> str:
    """``text`` as lower-case ``[a-z0-9-]``, at most ``size`` characters, no ``-`` at the ends."""
    return _DNS_BAD.sub("-", text.lower())[:size].strip("-")


def job_name(slug: str, ctx: ExecutionContext) -> str:
    """``fleet-<slug part>-<hash of execution id and attempt>`` (≤ 47 characters, so pod names
    and the ``job-name`` label the Job controller adds stay within limits). A redelivery (a new
    attempt) gets a new Job; a retried create of the same attempt finds its own."""
    part = dns_label(slug.replace("/", "-"), 28)
    digest = _digest(f"{ctx.execution_id}\x00{ctx.attempt}", 12)
    return f"fleet-{part}-{digest}" if part else f"fleet-{digest}"


def selector(**labels: str) -> str:
    """A ``labelSelector`` matching the fleet's OCI objects (and ``labels``, values sanitised)."""
    pairs = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": COMPONENT}
    pairs.update({k: label_value(v) for k, v in labels.items()})
    return ",".join(f"{k}={v}" for k, v in pairs.items())


def _metadata(name: str, fn: OciFunction, ctx: ExecutionContext, settings: Settings) -> dict[str, Any]:
    return {
        "labels": {
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "app.kubernetes.io/component": COMPONENT,
            LABEL_EXECUTION: label_value(ctx.execution_id),
            LABEL_FUNCTION: label_value(fn.slug),
            LABEL_WORKER: label_value(settings.consumer_name),
            LABEL_ATTEMPT: str(ctx.attempt),
            LABEL_JOB: name,
        },
        "annotations": {ANNOTATION_EXECUTION: ctx.execution_id, ANNOTATION_FUNCTION: fn.slug},
    }


def job_manifest(
    fn: OciFunction,
    ctx: ExecutionContext,
    settings: Settings,
    *,
    env: Mapping[str, str],
    secret_env: Mapping[str, str],
    secret_name: str | None,
) -> dict[str, Any]:
    """The Job of one execution.

    Parameters:
        env: plain variables (``INPUT``, ``FLEET_*``, ``container_env``).
        secret_env: variable name → key in the Secret ``secret_name``; when non-empty the Job is
            created **suspended** and resumed once its Secret exists (see
            :class:`~workers.oci.kubernetes.KubernetesBackend`).
    """
    name = job_name(fn.slug, ctx)
    meta = _metadata(name, fn, ctx, settings)
    variables: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    variables += [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key, "optional": False}}}
        for var, key in secret_env.items()
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": fn.image_ref,
        "env": variables,
        "resources": fn.resources.to_kubernetes(),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if fn.command:
        container["command"] = list(fn.command)
    if fn.working_dir:
        container["workingDir"] = fn.working_dir
    uid = settings.oci_run_as_user
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "activeDeadlineSeconds": fn.deadline_seconds,
        "ttlSecondsAfterFinished": settings.oci_job_ttl_seconds,
        "template": {
            "metadata": {"labels": dict(meta["labels"]), "annotations": dict(meta["annotations"])},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": 10,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": uid,
                    "runAsGroup": uid,
                    "fsGroup": uid,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": settings.oci_tmp_size}}],
            },
        },
    }
    if secret_env:
        spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.oci_namespace, **meta},
        "spec": spec,
    }


def secret_manifest(job: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """The credentials Secret of ``job`` (the Job as the API returned it, with its ``uid``):
    immutable, owned by the Job so Kubernetes deletes it with the Job."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": {
            "name": f"{meta['name']}-credentials",
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }
