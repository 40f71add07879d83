"""A fake Kubernetes API on loopback (aiohttp, port 0) for the OCI worker and `fleet build`.

It serves exactly the endpoints the fleet uses, with the API's semantics where they matter:

* ``POST/GET/PATCH/DELETE`` Jobs (``/apis/batch/v1/namespaces/{ns}/jobs[/{name}]``), Secrets and
  ConfigMaps (``/api/v1/namespaces/{ns}/{secrets,configmaps}[/{name}]``): 409 on a duplicate
  create, 404 on a missing object, ``uid``/``resourceVersion``/``creationTimestamp`` assigned;
* list and **watch** (``?watch=1&resourceVersion=N``) of Jobs and Pods with ``labelSelector``
  (``k=v,...``) and ``fieldSelector=metadata.name=...``: a watch replays every change after ``N``
  and then streams new ones (one JSON event per line) until the client goes away;
* pod logs (``/pods/{name}/log?tailLines=N``);
* bearer-token auth (401 without it).

What the "cluster" does with a Job is a :class:`Scenario` (succeed, exit non-zero, image pull
failure, deadline): once a Job is created and not suspended, the fake creates its pod and walks
it through its states, updating the Job's conditions like the Job controller. Tests script API
failures with :meth:`FakeKube.fail_next` / :attr:`FakeKube.fail_all` and read every request in
:attr:`FakeKube.requests` (deletes included) to assert what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

__all__ = ["TOKEN", "FakeKube", "Recorded", "Scenario", "running_fake_kube"]

TOKEN = "fake-kube-token"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str


@dataclass
class Scenario:
    """What happens to a Job's pod.

    ``outcome``: ``succeed`` (exit 0), ``exit`` (``exit_code``), ``image_pull`` (the container
    waits in ``pull_reason`` forever), ``deadline`` (the Job fails ``DeadlineExceeded``),
    ``evicted`` (the pod fails without an exit status), ``hang`` (runs until deleted).
    """

    outcome: str = "succeed"
    log: str = ""
    exit_code: int = 0
    pull_reason: str = "ErrImagePull"
    term_reason: str = "Error"
    #: the pod only finishes once someone watches its Job (so the client's watch path is the
    #: one that sees the end, as with any real run that takes longer than a round trip)
    wait_for_watch: bool = True


@dataclass
class _Event:
    version: int
    kind: str  # "jobs" | "pods"
    type: str
    obj: dict[str, Any]


@dataclass
class FakeKube:
    namespace: str = "fleet-functions"
    scenario: Scenario = field(default_factory=Scenario)
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"jobs": {}, "secrets": {}, "configmaps": {}, "pods": {}}
    )
    logs: dict[str, str] = field(default_factory=dict)
    #: every status code answered to every request with this prefix (None = none)
    fail_all: int | None = None
    url: str = ""
    _version: int = 100
    _history: list[_Event] = field(default_factory=list)
    _changed: asyncio.Condition | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _failures: list[tuple[int, str | None, str, int]] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _job_watchers: int = 0
    _watching: asyncio.Event = field(default_factory=asyncio.Event)

    # ------------------------------------------------------------------ scripting
    def fail_next(self, count: int, status: int = 500, *, method: str | None = None, path: str = "") -> None:
        """Answer the next ``count`` requests matching ``method`` and path prefix with ``status``."""
        self._failures.append((count, method, path, status))

    def calls(self, method: str, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and contains in r.path]

    def deleted(self, kind: str) -> list[str]:
        """Names of ``kind`` objects a DELETE was sent for (found or not)."""
        return [
            r.path.rsplit("/", 1)[1] for r in self.requests if r.method == "DELETE" and f"/{kind}/" in r.path
        ]

    def add_job(self, job: dict[str, Any], *, created: str | None = None, finished: bool = False) -> None:
        """Put a Job in the store as if some earlier worker created it (for the reaper)."""
        job = copy.deepcopy(job)
        meta = job.setdefault("metadata", {})
        meta.update(uid=str(uuid.uuid4()), namespace=self.namespace)
        meta["creationTimestamp"] = created or _now()
        if finished:
            job["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
        self._put("jobs", job, "ADDED")

    # ------------------------------------------------------------------ store
    def _bump(self) -> int:
        self._version += 1
        return self._version

    def _put(self, kind: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self.objects[kind][obj["metadata"]["name"]] = obj
        self._emit(kind, event, obj)
        return obj

    def _emit(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        if kind in ("jobs", "pods"):
            self._history.append(
                _Event(int(obj["metadata"]["resourceVersion"]), kind, event, copy.deepcopy(obj))
            )
            self._notify()

    def _notify(self) -> None:
        if self._changed is None:
            return
        changed = self._changed

        async def wake() -> None:
            async with changed:
                changed.notify_all()

        self._spawn(wake())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the "cluster"
    def _start_job(self, job: dict[str, Any]) -> None:
        if (job.get("spec") or {}).get("suspend"):
            return
        if job["metadata"].get("_started"):
            return
        job["metadata"]["_started"] = True
        self._spawn(self._run_job(job["metadata"]["name"], copy.deepcopy(self.scenario)))

    async def _run_job(self, name: str, scenario: Scenario) -> None:
        job = self.objects["jobs"].get(name)
        if job is None:
            return
        template = job["spec"]["template"]
        pod_name = f"{name}-x7k2p"
        labels = dict(template["metadata"].get("labels") or {})
        labels.update({"batch.kubernetes.io/job-name": name, "job-name": name})
        container = template["spec"]["containers"][0]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": self.namespace,
                "labels": labels,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {
                "phase": "Pending",
                "containerStatuses": [_status(container, {"waiting": {"reason": "ContainerCreating"}})],
            },
        }
        self._put("pods", pod, "ADDED")
        self.logs[pod_name] = scenario.log
        await asyncio.sleep(0)
        if scenario.outcome == "image_pull":
            pod = copy.deepcopy(pod)
            message = f'Back-off pulling image "{container["image"]}"'
            pod["status"]["containerStatuses"] = [
                _status(container, {"waiting": {"reason": scenario.pull_reason, "message": message}})
            ]
            self._put("pods", pod, "MODIFIED")
            return
        pod = copy.deepcopy(pod)
        pod["status"] = {
            "phase": "Running",
            "containerStatuses": [_status(container, {"running": {"startedAt": _now()}})],
        }
        self._put("pods", pod, "MODIFIED")
        await asyncio.sleep(0)
        if scenario.outcome == "hang" or name not in self.objects["jobs"]:
            return
        if scenario.wait_for_watch:
            await self._watching.wait()
        code = (
            0
            if scenario.outcome == "succeed"
            else (137 if scenario.outcome == "deadline" else scenario.exit_code)
        )
        pod = copy.deepcopy(pod)
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else scenario.term_reason}
        pod["status"] = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [_status(container, {"terminated": terminated})],
        }
        if scenario.outcome == "evicted":  # the kubelet gave up on the pod: no exit status
            pod["status"] = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}
        self._put("pods", pod, "MODIFIED")
        job = copy.deepcopy(self.objects["jobs"].get(name))
        if job is None:
            return
        if scenario.outcome == "succeed":
            conditions = [{"type": "Complete", "status": "True"}]
            job["status"] = {"succeeded": 1, "conditions": conditions}
        else:
            reason = "DeadlineExceeded" if scenario.outcome == "deadline" else "BackoffLimitExceeded"
            message = (
                "Job was active longer than specified deadline"
                if reason == "DeadlineExceeded"
                else "Job has reached the specified backoff limit"
            )
            job["status"] = {
                "failed": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}],
            }
        self._put("jobs", job, "MODIFIED")

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        content_type = request.headers.get("Content-Type", "")
        body: Any = None
        if raw:
            body = json.loads(raw)
        self.requests.append(Recorded(request.method, request.path, dict(request.query), body, content_type))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status_response(401, "Unauthorized", "no or wrong bearer token")
        if self.fail_all is not None:
            return _status_response(self.fail_all, "ServiceUnavailable", "injected outage")
        for i, (count, method, prefix, status) in enumerate(self._failures):
            if (method is None or method == request.method) and request.path.startswith(prefix):
                self._failures[i] = (count - 1, method, prefix, status)
                if count - 1 <= 0:
                    del self._failures[i]
                return _status_response(status, "InternalError", "injected failure")
        parts = request.path.strip("/").split("/")
        # /apis/batch/v1/namespaces/ns/jobs[/name]  or  /api/v1/namespaces/ns/<kind>[/name[/log]]
        if parts[:3] == ["apis", "batch", "v1"]:
            parts = parts[3:]
        elif parts[:2] == ["api", "v1"]:
            parts = parts[2:]
        else:
            return _status_response(404, "NotFound", f"no route {request.path}")
        if len(parts) < 3 or parts[0] != "namespaces" or parts[2] not in self.objects:
            return _status_response(404, "NotFound", f"no route {request.path}")
        if parts[1] != self.namespace:
            return _status_response(403, "Forbidden", f"namespace {parts[1]} is not allowed")
        kind, name = parts[2], (parts[3] if len(parts) > 3 else None)
        if kind == "pods" and len(parts) == 5 and parts[4] == "log" and request.method == "GET":
            return self._log(name or "", request.query)
        if name is None:
            if request.method == "POST":
                return self._create(kind, body)
            if request.method == "GET":
                if request.query.get("watch") in ("1", "true"):
                    return await self._watch(request, kind)
                return self._list(kind, request.query)
        else:
            if request.method == "GET":
                obj = self.objects[kind].get(name)
                return (
                    web.json_response(obj)
                    if obj
                    else _status_response(404, "NotFound", f"{kind} {name} not found")
                )
            if request.method == "DELETE":
                return self._delete(kind, name, body)
            if request.method == "PATCH" and kind == "jobs":
                return self._patch_job(name, body, content_type)
        return _status_response(405, "MethodNotAllowed", f"{request.method} {request.path}")

    def _create(self, kind: str, body: Any) -> web.Response:
        name = body["metadata"]["name"]
        if name in self.objects[kind]:
            return _status_response(409, "AlreadyExists", f'{kind} "{name}" already exists')
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), namespace=self.namespace)
        if kind in ("secrets", "configmaps"):
            owners = meta.get("ownerReferences") or []
            for owner in owners:
                job = self.objects["jobs"].get(owner.get("name"))
                if job is None or job["metadata"]["uid"] != owner.get("uid"):
                    return _status_response(422, "Invalid", "ownerReference names no such Job")
        self._put(kind, obj, "ADDED")
        if kind == "jobs":
            self._start_job(obj)
        return web.json_response(_public(obj), status=201)

    def _patch_job(self, name: str, body: Any, content_type: str) -> web.Response:
        if content_type != "application/merge-patch+json":
            return _status_response(415, "UnsupportedMediaType", content_type)
        job = self.objects["jobs"].get(name)
        if job is None:
            return _status_response(404, "NotFound", f"job {name} not found")
        job = copy.deepcopy(job)
        job["spec"].update(body.get("spec") or {})
        self._put("jobs", job, "MODIFIED")
        self._start_job(job)
        return web.json_response(_public(job))

    def _delete(self, kind: str, name: str, body: Any) -> web.Response:
        obj = self.objects[kind].pop(name, None)
        if obj is None:
            return _status_response(404, "NotFound", f"{kind} {name} not found")
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self._emit(kind, "DELETED", obj)
        if kind == "jobs" and (body or {}).get("propagationPolicy") in ("Background", "Foreground"):
            for pod in [
                p for p in self.objects["pods"].values() if p["metadata"]["labels"].get("job-name") == name
            ]:
                self._delete("pods", pod["metadata"]["name"], None)
            uid = obj["metadata"]["uid"]
            for owned_kind in ("secrets", "configmaps"):  # the garbage collector, at once
                for owned in list(self.objects[owned_kind].values()):
                    if any(o.get("uid") == uid for o in owned["metadata"].get("ownerReferences") or []):
                        del self.objects[owned_kind][owned["metadata"]["name"]]
        return web.json_response({"kind": "Status", "status": "Success"})

    def _matches(self, obj: dict[str, Any], query: Any) -> bool:
        labels = obj["metadata"].get("labels") or {}
        for term in filter(None, (query.get("labelSelector") or "").split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        fields = query.get("fieldSelector") or ""
        if fields:
            key, _, value = fields.partition("=")
            assert key == "metadata.name", f"unsupported fieldSelector {fields}"
            return bool(obj["metadata"]["name"] == value)
        return True

    def _list(self, kind: str, query: Any) -> web.Response:
        items = [_public(o) for o in self.objects[kind].values() if self._matches(o, query)]
        return web.json_response(
            {
                "kind": "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._version)},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, kind: str) -> web.StreamResponse:
        if self._changed is None:
            self._changed = asyncio.Condition()
        since = int(request.query.get("resourceVersion") or self._version)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        sent = 0
        if kind == "jobs":
            self._job_watchers += 1
            self._watching.set()
        try:
            while not self._closing.is_set():
                events = [e for e in self._history if e.version > since and e.kind == kind]
                for event in events[sent:]:
                    if self._matches(event.obj, request.query):
                        line = json.dumps({"type": event.type, "object": _public(event.obj)}) + "\n"
                        await response.write(line.encode())
                sent = len(events)
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.5)
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            if kind == "jobs":
                self._job_watchers -= 1
                if not self._job_watchers:
                    self._watching.clear()
        return response

    def _log(self, pod: str, query: Any) -> web.Response:
        if pod not in self.logs:
            return _status_response(404, "NotFound", f"pod {pod} not found")
        lines = self.logs[pod].splitlines(keepends=True)
        tail = int(query.get("tailLines") or 0)
        return web.Response(text="".join(lines[-tail:] if tail else lines))

    async def close(self) -> None:
        self._closing.set()
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def kubeconfig(self, path: Path, *, server: str | None = None) -> Path:
        """Write a kubeconfig pointing at this fake (token auth) to ``path``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server or self.url}}],
            "users": [{"name": "fleet", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fleet", "namespace": self.namespace}}
            ],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"] = {k: v for k, v in out["metadata"].items() if not k.startswith("_")}
    return out


def _status(container: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container["image"],
        "ready": False,
        "restartCount": 0,
        "state": state,
    }


def _status_response(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        status=code,
    )


@contextlib.asynccontextmanager
async def running_fake_kube(namespace: str = "fleet-functions") -> AsyncIterator[FakeKube]:
    """A :class:`FakeKube` served on 127.0.0.1 (``fake.url``) for the block."""
    fake = FakeKube(namespace=namespace)
    runner = web.AppRunner(fake.app(), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await fake.close()
        await runner.cleanup()
