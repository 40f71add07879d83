"""The Kubernetes backend: one hardened Job per execution (``FLEET_OCI_BACKEND=kubernetes``).

One run:

1. create the Job (``workers/oci/manifests.py``). With credentials it is created **suspended**;
   then its Secret is created with an ``ownerReference`` to the Job's ``uid`` (so Kubernetes
   deletes it with the Job, whoever deletes the Job), then the Job is resumed. No pod exists
   before its Secret does, and a failure between the steps leaves nothing that ran.
   A 409 on create (our own retried POST) adopts the existing object;
2. follow the Job with list + **watch** (no polling) until it is ``Complete`` or ``Failed``,
   and its pods likewise, to fail fast on image pull errors (``ErrImagePull`` /
   ``ImagePullBackOff`` / ``InvalidImageName`` in a container's waiting state);
3. read the tail of the pod log (``tailLines``), map the outcome (``protocol.interpret``):
   ``DeadlineExceeded`` → ``timeout``, exit 0 → the last log line as JSON, else
   ``function_failed`` with exit code and scrubbed tail; API outages after retries →
   ``backend_unavailable`` (retryable), API refusals (4xx) → ``backend_unavailable`` (not);
4. **always** delete the Job (``propagationPolicy: Background``: pods and the owned Secret go
   with it) and the Secret — also when the run failed or was cancelled (runtime timeout,
   shutdown); the cleanup runs on its own connection, shielded from a second cancellation.

The pod log merges stdout and stderr: the result line must be the last line the function writes
to either. :meth:`KubernetesBackend.reap` removes Jobs left behind by dead workers (see its doc).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext
from shared.settings import Settings
from workers.oci.kube import KubeApiError, KubeClient, KubeConfig, KubeUnavailable, load_config
from workers.oci.manifests import (
    ANNOTATION_EXECUTION,
    CONTAINER,
    LABEL_JOB,
    LABEL_WORKER,
    job_manifest,
    job_name,
    label_value,
    secret_manifest,
    selector,
)
from workers.oci.protocol import (
    OciFunction,
    RunOutcome,
    backend_unavailable,
    credential_env,
    function_env,
    interpret,
    run_secrets,
)

__all__ = ["IMAGE_PULL_REASONS", "KubernetesBackend", "follow"]

log = structlog.get_logger("fleet.oci.kubernetes")

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
T = TypeVar("T")


async def follow(
    kube: KubeClient,
    path: str,
    params: dict[str, str],
    lister: Callable[[], Awaitable[tuple[list[dict[str, Any]], str]]],
    check: Callable[[str, dict[str, Any]], T | None],
) -> T:
    """List, then watch from the list's ``resourceVersion``, until ``check(event_type, object)``
    returns something other than ``None``; re-list after the server ends a watch or answers
    410 Gone. A watch that breaks off is retried with backoff (the client's retry budget, reset
    by every event received); listing failures propagate (the client already retried them)."""
    broken = 0
    backoff = kube.backoff()
    while True:
        items, version = await lister()
        for item in items:
            found = check("ADDED", item)
            if found is not None:
                return found
        try:
            async with contextlib.aclosing(
                kube.watch(path, {**params, "resourceVersion": version})
            ) as events:
                async for event in events:
                    if broken:
                        broken = 0
                        backoff.reset()
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "BOOKMARK":
                        continue
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            break
                        raise KubeApiError(
                            int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message"))
                        )
                    found = check(str(kind), obj)
                    if found is not None:
                        return found
        except KubeUnavailable:
            broken += 1
            if broken > kube.retries:
                raise
            await asyncio.sleep(backoff.next())


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _image_pull_error(pod: dict[str, Any]) -> dict[str, str] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            return {
                "reason": str(waiting["reason"]),
                "message": str(waiting.get("message") or ""),
                "image": str(status.get("image") or ""),
            }
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            state = (status.get("state") or {}).get("terminated")
            return dict(state) if state else None
    return None


def _created(obj: dict[str, Any]) -> datetime | None:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return None


class KubernetesBackend:
    """Runs OCI functions as Kubernetes Jobs (see module docstring).

    Parameters:
        settings: namespace, resources, TTL, retries, log tail.
        config: API location and credentials; loaded from ``settings`` on first use when omitted.
    """

    name = "kubernetes"

    def __init__(self, settings: Settings, config: KubeConfig | None = None) -> None:
        self._settings = settings
        self._config = config
        self._config_lock = asyncio.Lock()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._ns = settings.oci_namespace

    async def _kube_config(self) -> KubeConfig:
        async with self._config_lock:
            if self._config is None:
                self._config = await load_config(self._settings)
            return self._config

    def _client(self, config: KubeConfig) -> KubeClient:
        return KubeClient.from_settings(config, self._settings)

    def _jobs(self, name: str = "") -> str:
        base = f"/apis/batch/v1/namespaces/{self._ns}/jobs"
        return f"{base}/{name}" if name else base

    def _secrets(self, name: str = "") -> str:
        base = f"/api/v1/namespaces/{self._ns}/secrets"
        return f"{base}/{name}" if name else base

    def _pods(self) -> str:
        return f"/api/v1/namespaces/{self._ns}/pods"

    async def close(self) -> None:
        """Wait for cleanups still in flight (they were shielded from cancellation)."""
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    # ------------------------------------------------------------------ one run
    async def run(self, fn: OciFunction, input_json: str, ctx: ExecutionContext) -> dict[str, Any]:
        """Run ``fn`` once as a Job; its output, or an ``ExecutionFailed`` (module docstring)."""
        names = credential_env(fn.credentials)
        secret_values = {names[key]: value for key, value in ctx.credentials.items() if key in names}
        name = job_name(fn.slug, ctx)
        secret_name = f"{name}-credentials" if secret_values else None
        job = job_manifest(
            fn,
            ctx,
            self._settings,
            env=function_env(fn, input_json, ctx),
            secret_env={var: var for var in secret_values},
            secret_name=secret_name,
        )
        try:
            config = await self._kube_config()
        except KubeUnavailable as exc:
            raise backend_unavailable(str(exc), retryable=True, backend=self.name) from None
        try:
            async with self._client(config) as kube:
                created = await self._create(kube, self._jobs(), job)
                if secret_values:
                    await self._create(kube, self._secrets(), secret_manifest(created, secret_values))
                    await kube.request(
                        "PATCH",
                        self._jobs(name),
                        body={"spec": {"suspend": False}},
                        content_type="application/merge-patch+json",
                    )
                outcome = await self._await_outcome(kube, fn, name)
        except KubeUnavailable as exc:
            raise backend_unavailable(
                f"the Kubernetes API is unavailable: {exc}", retryable=True, backend=self.name, job=name
            ) from None
        except KubeApiError as exc:
            raise backend_unavailable(
                f"the Kubernetes API refused: {exc}",
                retryable=False,
                backend=self.name,
                job=name,
                status=exc.status,
                reason=exc.reason,
            ) from None
        finally:
            await self._cleanup_shielded(config, name, secret_name)
        return interpret(fn, outcome, tail_lines=self._settings.oci_log_tail_lines, secrets=run_secrets(ctx))

    async def _create(self, kube: KubeClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            created: dict[str, Any] = await kube.request("POST", path, body=body)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            # Our own earlier POST went through (a 5xx hid it): take what is there.
            created = await kube.request("GET", f"{path}/{body['metadata']['name']}")
        return created

    async def _await_outcome(self, kube: KubeClient, fn: OciFunction, name: str) -> RunOutcome:
        job_task = asyncio.create_task(self._await_job_end(kube, name))
        pull_task = asyncio.create_task(self._await_image_pull_error(kube, name))
        try:
            done, _ = await asyncio.wait({job_task, pull_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (job_task, pull_task):
                task.cancel()
            await asyncio.gather(job_task, pull_task, return_exceptions=True)
        if pull_task in done and not pull_task.cancelled() and pull_task.exception() is None:
            error = pull_task.result()
            raise ExecutionFailed(
                f"{fn.slug}: image {error['image'] or fn.image_ref} could not be pulled ({error['reason']})",
                code=ErrorCode.IMAGE_PULL_FAILED,
                details={"image": error["image"] or fn.image_ref, **error},
            )
        finished = job_task if job_task in done else pull_task
        job = finished.result()  # re-raises the API error of whichever watch failed
        assert isinstance(job, dict)
        return await self._outcome(kube, job, name)

    async def _await_job_end(self, kube: KubeClient, name: str) -> dict[str, Any]:
        async def lister() -> tuple[list[dict[str, Any]], str]:
            try:
                job = await kube.request("GET", self._jobs(name))
            except KubeApiError as exc:
                if exc.status == 404:
                    raise KubeUnavailable(f"job {name} disappeared before it finished") from None
                raise
            return [job], str(job["metadata"].get("resourceVersion", ""))

        def check(kind: str, job: dict[str, Any]) -> dict[str, Any] | None:
            if kind == "DELETED":
                raise KubeUnavailable(f"job {name} was deleted before it finished")
            if _condition(job, "Complete") or _condition(job, "Failed"):
                return job
            return None

        return await follow(kube, self._jobs(), {"fieldSelector": f"metadata.name={name}"}, lister, check)

    async def _list_pods(self, kube: KubeClient, name: str) -> tuple[list[dict[str, Any]], str]:
        listing = await kube.request(
            "GET", self._pods(), params={"labelSelector": selector(**{LABEL_JOB: name})}
        )
        return list(listing.get("items") or []), str(
            (listing.get("metadata") or {}).get("resourceVersion", "")
        )

    async def _await_image_pull_error(self, kube: KubeClient, name: str) -> dict[str, str]:
        def check(kind: str, pod: dict[str, Any]) -> dict[str, str] | None:
            return None if kind == "DELETED" else _image_pull_error(pod)

        return await follow(
            kube,
            self._pods(),
            {"labelSelector": selector(**{LABEL_JOB: name})},
            lambda: self._list_pods(kube, name),
            check,
        )

    async def _outcome(self, kube: KubeClient, job: dict[str, Any], name: str) -> RunOutcome:
        pods, _ = await self._list_pods(kube, name)
        pods.sort(key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
        pod = pods[-1] if pods else None
        log_text = ""
        if pod is not None:
            try:
                log_text = await kube.request(
                    "GET",
                    f"{self._pods()}/{pod['metadata']['name']}/log",
                    params={"container": CONTAINER, "tailLines": str(self._settings.oci_log_tail_lines)},
                    text=True,
                )
            except KubeApiError as exc:
                log.warning("pod log unavailable", job=name, error=str(exc))
        failed = _condition(job, "Failed")
        if failed is not None and failed.get("reason") == "DeadlineExceeded":
            return RunOutcome(exit_code=None, stdout=log_text, log=log_text, timed_out=True)
        terminated = _terminated(pod) if pod is not None else None
        if failed is None:
            return RunOutcome(exit_code=0, stdout=log_text, log=log_text)
        exit_code = int(terminated["exitCode"]) if terminated and "exitCode" in terminated else None
        reason = (terminated or {}).get("reason") or failed.get("reason")
        if reason == "Error":
            reason = None  # the default for a non-zero exit: says nothing
        if exit_code is None:
            reason = f"{failed.get('reason')}: {failed.get('message', '')}".strip(": ")
        return RunOutcome(exit_code=exit_code, stdout=log_text, log=log_text, reason=reason)

    # ------------------------------------------------------------------ cleanup
    async def _cleanup_shielded(self, config: KubeConfig, name: str, secret_name: str | None) -> None:
        task = asyncio.create_task(self._cleanup(config, name, secret_name))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    async def _cleanup(self, config: KubeConfig, name: str, secret_name: str | None) -> None:
        """Delete the Job (Background propagation: its pods and owned Secret follow) and the
        Secret; 404 is fine, failures are logged (the reaper and the Job TTL catch up)."""
        async with self._client(config) as kube:
            targets = [(self._jobs(name), {"propagationPolicy": "Background"})]
            if secret_name:
                targets.append((self._secrets(secret_name), {}))
            for path, options in targets:
                try:
                    await kube.request(
                        "DELETE",
                        path,
                        body={"kind": "DeleteOptions", "apiVersion": "v1", **options},
                    )
                except KubeApiError as exc:
                    if exc.status != 404:
                        log.warning("cleanup failed", path=path, error=str(exc))
                except KubeUnavailable as exc:
                    log.warning(
                        "cleanup failed; the reaper or the Job TTL will remove it", path=path, error=str(exc)
                    )

    # ------------------------------------------------------------------ reaper
    async def reap(
        self,
        live: Collection[str] = (),
        *,
        still_running: Callable[[str], Awaitable[bool | None]] | None = None,
        now: datetime | None = None,
    ) -> list[str]:
        """Delete the fleet's Jobs whose execution is no longer running; their names.

        A Job is kept while its execution id is in ``live`` (running in this process). Otherwise
        it is deleted when any of these holds:

        * it has finished (``Complete`` / ``Failed``): its worker died before cleaning up;
        * it carries this worker's ``fleet.dev/worker`` label (``FLEET_CONSUMER_NAME``): it was
          started by an earlier incarnation of this worker, and nothing of that one is live;
        * it is older than its ``activeDeadlineSeconds`` plus ``FLEET_OCI_REAP_GRACE_SECONDS``
          (a Job left suspended, or one the deadline did not end);
        * ``still_running(execution_id)`` — the execution history, when the wiring passes it —
          answers False.

        Jobs of other live workers are never touched by the first three rules before their
        deadline has long passed, so several replicas can share a namespace.
        """
        config = await self._kube_config()
        now = now or datetime.now(UTC)
        me = label_value(self._settings.consumer_name)
        deleted: list[str] = []
        async with self._client(config) as kube:
            listing = await kube.request("GET", self._jobs(), params={"labelSelector": selector()})
            for job in listing.get("items") or []:
                meta = job.get("metadata") or {}
                execution = str((meta.get("annotations") or {}).get(ANNOTATION_EXECUTION, ""))
                if execution in live:
                    continue
                finished = _condition(job, "Complete") or _condition(job, "Failed")
                mine = (meta.get("labels") or {}).get(LABEL_WORKER) == me
                created = _created(job)
                deadline = float((job.get("spec") or {}).get("activeDeadlineSeconds") or 0)
                overdue = created is not None and (now - created).total_seconds() > (
                    deadline + self._settings.oci_reap_grace_seconds
                )
                gone = still_running is not None and execution and await still_running(execution) is False
                if not (finished or mine or overdue or gone):
                    continue
                try:
                    await kube.request(
                        "DELETE",
                        self._jobs(str(meta["name"])),
                        body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
                    )
                except KubeApiError as exc:
                    if exc.status != 404:
                        raise
                deleted.append(str(meta["name"]))
        if deleted:
            log.info("reaped leftover OCI jobs", jobs=deleted)
        return deleted
