"""The Kubernetes backend against a fake API: exact objects sent, outcomes, retries, cleanup, reaper."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ExecutionFailed
from shared.registry.models import FunctionRecord
from shared.settings import Settings
from tests.fakes.kube import FakeKube, Scenario
from tests.oci.conftest import knowing, make_ctx
from tests.oci.schemas import validate
from workers.oci.executor import OciExecutor
from workers.oci.kubernetes import KubernetesBackend
from workers.oci.manifests import job_name

PLANTED = "pl4nted-s3cret-value-9f8e7d"


def record(**overrides: Any) -> FunctionRecord:
    values: dict[str, Any] = {
        "id": "5f0c6a8e-8d44-4d1b-9a43-1f2f7c4c0a11",
        "slug": "acme/greet",
        "name": "Greet",
        "description": "says hello",
        "plugin_id": "acme",
        "version": 1,
        "domain": "oci",
        "execution_type": "oci",
        "image_ref": "registry.example/acme/greet:1.0.0",
        "command": ["python", "main.py"],
        "working_dir": "/app",
        "container_env": {"GREETING": "Hello"},
        "timeout_seconds": 30.0,
        "credentials": ("API_TOKEN",),
    }
    values.update(overrides)
    return FunctionRecord(**values)


async def run(settings: Settings, data: dict[str, Any], **kwargs: Any) -> Any:
    executor = OciExecutor(settings)
    try:
        return await executor.execute(kwargs.pop("function", None) or record(), data, make_ctx(**kwargs))
    finally:
        await executor.close()


def expected_job(name: str) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/managed-by": "function-fleet",
        "app.kubernetes.io/component": "oci-function",
        "fleet.dev/execution-id": "exec-1",
        "fleet.dev/function": "acme.greet",
        "fleet.dev/worker": "oci-test-worker",
        "fleet.dev/attempt": "1",
        "fleet.dev/job": name,
    }
    annotations = {"fleet.dev/execution-id": "exec-1", "fleet.dev/function": "acme/greet"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "fleet-functions",
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": 30,
            "ttlSecondsAfterFinished": 600,
            "suspend": True,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 10,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "function",
                            "image": "registry.example/acme/greet:1.0.0",
                            "command": ["python", "main.py"],
                            "workingDir": "/app",
                            "env": [
                                {"name": "GREETING", "value": "Hello"},
                                {"name": "INPUT", "value": '{"name":"Ada"}'},
                                {"name": "FLEET_EXECUTION_ID", "value": "exec-1"},
                                {"name": "FLEET_FUNCTION", "value": "acme/greet"},
                                {"name": "FLEET_ATTEMPT", "value": "1"},
                                {
                                    "name": "API_TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": f"{name}-credentials",
                                            "key": "API_TOKEN",
                                            "optional": False,
                                        }
                                    },
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
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
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def assert_cleaned_up(fake: FakeKube, name: str, *, secret: bool = True) -> None:
    deletes = fake.calls("DELETE", f"/jobs/{name}")
    assert deletes, "the Job was not deleted"
    assert deletes[-1].body["propagationPolicy"] == "Background"
    if secret:
        assert f"{name}-credentials" in fake.deleted("secrets")
    assert name not in fake.objects["jobs"]
    assert not fake.objects["secrets"]
    assert not fake.objects["pods"]


async def test_success_sends_the_exact_hardened_job_and_an_owned_secret(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    fake_kube.scenario = Scenario(log='starting\nstill going\n{"greeting": "Hello, Ada!"}\n')
    output = await run(kube_settings, {"name": "Ada"}, credentials={"API_TOKEN": PLANTED})
    assert output == {"greeting": "Hello, Ada!"}

    name = job_name("acme/greet", make_ctx())
    (create,) = fake_kube.calls("POST", "/jobs")
    assert create.body == expected_job(name)
    validate(create.body, "job-batch-v1.json")
    assert PLANTED not in json.dumps(create.body)

    (secret,) = fake_kube.calls("POST", "/secrets")
    job_uid = next(e.obj for e in fake_kube._history if e.kind == "jobs")["metadata"]["uid"]
    assert secret.body["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uid}
    ]
    assert secret.body["metadata"]["name"] == f"{name}-credentials"
    assert secret.body["type"] == "Opaque"
    assert secret.body["immutable"] is True
    assert base64.b64decode(secret.body["data"]["API_TOKEN"]).decode() == PLANTED
    assert secret.body["metadata"]["labels"] == create.body["metadata"]["labels"]

    (patch,) = fake_kube.calls("PATCH", f"/jobs/{name}")
    assert patch.body == {"spec": {"suspend": False}}
    assert patch.content_type == "application/merge-patch+json"
    order = [
        (r.method, r.path.rsplit("/", 1)[-1]) for r in fake_kube.requests if r.method in ("POST", "PATCH")
    ]
    assert order == [("POST", "jobs"), ("POST", "secrets"), ("PATCH", name)]

    # watched, not polled: one GET of the Job, then a watch
    watches = [r for r in fake_kube.calls("GET", "/jobs") if r.query.get("watch") == "1"]
    assert watches
    assert watches[0].query["fieldSelector"] == f"metadata.name={name}"
    assert len(fake_kube.calls("GET", f"/jobs/{name}")) == 1
    (log_call,) = fake_kube.calls("GET", "/log")
    assert log_call.query == {"container": "function", "tailLines": "40"}
    assert_cleaned_up(fake_kube, name)


async def test_without_credentials_the_job_starts_unsuspended_and_no_secret_exists(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    fake_kube.scenario = Scenario(log='{"ok": true}')
    assert await run(kube_settings, {}, function=record(credentials=())) == {"ok": True}
    (create,) = fake_kube.calls("POST", "/jobs")
    assert "suspend" not in create.body["spec"]
    validate(create.body, "job-batch-v1.json")
    assert not fake_kube.calls("POST", "/secrets")
    assert not fake_kube.calls("PATCH")
    assert_cleaned_up(fake_kube, create.body["metadata"]["name"], secret=False)


async def test_last_line_not_json_is_invalid_output(fake_kube: FakeKube, kube_settings: Settings) -> None:
    fake_kube.scenario = Scenario(log='{"partial": 1}\nall done, no result\n')
    with pytest.raises(ExecutionFailed) as caught:
        await run(kube_settings, {"name": "Ada"}, credentials={"API_TOKEN": PLANTED})
    assert caught.value.code == "invalid_output"
    assert caught.value.details == {"last_line": "all done, no result"}
    assert_cleaned_up(fake_kube, job_name("acme/greet", make_ctx()))


async def test_non_zero_exit_is_function_failed_with_a_scrubbed_log_tail(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    lines = [f"line {i}" for i in range(60)] + [f"boom: token {PLANTED} rejected"]
    fake_kube.scenario = Scenario(outcome="exit", exit_code=3, log="\n".join(lines) + "\n")
    with pytest.raises(ExecutionFailed) as caught:
        # The credentials middleware registers every value it resolves in the worker's registry.
        await run(
            kube_settings, {"name": "Ada"}, credentials={"API_TOKEN": PLANTED}, resources=knowing(PLANTED)
        )
    error = caught.value
    assert error.code == "function_failed"
    assert error.retryable is False
    assert error.details["exit_code"] == 3
    assert error.details["log_tail"][-1] == "boom: token *** rejected"
    assert len(error.details["log_tail"]) == 40
    assert PLANTED not in json.dumps(error.to_error())
    assert_cleaned_up(fake_kube, job_name("acme/greet", make_ctx()))


async def test_a_reported_error_line_gives_message_and_retryable(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    fake_kube.scenario = Scenario(
        outcome="exit", exit_code=1, log='{"error": {"message": "upstream busy", "retryable": true}}\n'
    )
    with pytest.raises(ExecutionFailed) as caught:
        await run(kube_settings, {}, function=record(credentials=()))
    assert caught.value.code == "function_failed"
    assert caught.value.message == "acme/greet failed: upstream busy"
    assert caught.value.retryable is True


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
async def test_image_pull_errors_fail_fast(fake_kube: FakeKube, kube_settings: Settings, reason: str) -> None:
    fake_kube.scenario = Scenario(outcome="image_pull", pull_reason=reason)
    with pytest.raises(ExecutionFailed) as caught:
        await run(kube_settings, {}, credentials={"API_TOKEN": PLANTED})
    assert caught.value.code == "image_pull_failed"
    assert caught.value.details["reason"] == reason
    assert caught.value.details["image"] == "registry.example/acme/greet:1.0.0"
    assert_cleaned_up(fake_kube, job_name("acme/greet", make_ctx()))


async def test_deadline_exceeded_is_timeout(fake_kube: FakeKube, kube_settings: Settings) -> None:
    fake_kube.scenario = Scenario(outcome="deadline", log="working...\n")
    with pytest.raises(ExecutionFailed) as caught:
        await run(kube_settings, {}, credentials={"API_TOKEN": PLANTED})
    assert caught.value.code == "timeout"
    assert caught.value.retryable is True
    assert caught.value.details["log_tail"] == ["working..."]
    assert_cleaned_up(fake_kube, job_name("acme/greet", make_ctx()))


async def test_a_pod_that_never_exited_is_function_failed_and_retryable(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    fake_kube.scenario = Scenario(outcome="evicted", log="partial work\n")
    with pytest.raises(ExecutionFailed) as caught:
        await run(kube_settings, {}, function=record(credentials=()))
    assert caught.value.code == "function_failed"
    assert caught.value.retryable is True
    assert caught.value.details["exit_code"] is None
    assert caught.value.details["reason"].startswith("BackoffLimitExceeded")
    assert caught.value.message.startswith("acme/greet did not run to completion")


async def test_api_500s_are_retried_then_the_run_succeeds(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    fake_kube.scenario = Scenario(log='{"ok": 1}\n')
    fake_kube.fail_next(2, 500, method="POST", path="/apis/batch/v1/namespaces/fleet-functions/jobs")
    fake_kube.fail_next(1, 503, method="GET", path="/api/v1/namespaces/fleet-functions/pods")
    assert await run(kube_settings, {}, credentials={"API_TOKEN": PLANTED}) == {"ok": 1}
    assert len(fake_kube.calls("POST", "/jobs")) == 3
    assert_cleaned_up(fake_kube, job_name("acme/greet", make_ctx()))


async def test_api_that_keeps_failing_is_backend_unavailable_and_cleanup_is_still_tried(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    fake_kube.fail_all = 503
    with pytest.raises(ExecutionFailed) as caught:
        await run(kube_settings, {}, credentials={"API_TOKEN": PLANTED})
    assert caught.value.code == "backend_unavailable"
    assert caught.value.retryable is True
    assert len(fake_kube.calls("POST", "/jobs")) == 3  # 1 + FLEET_OCI_API_RETRIES=2
    name = job_name("acme/greet", make_ctx())
    assert fake_kube.deleted("jobs").count(name) == 3
    assert fake_kube.deleted("secrets").count(f"{name}-credentials") == 3


async def test_api_down_is_backend_unavailable(
    oci_settings: Any, fake_kube: FakeKube, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = fake_kube.kubeconfig(tmp_path / "down", server=f"http://127.0.0.1:{port}")
    settings = oci_settings(oci_backend="kubernetes", oci_kubeconfig=config)
    with pytest.raises(ExecutionFailed) as caught:
        await run(settings, {}, credentials={"API_TOKEN": PLANTED})
    assert caught.value.code == "backend_unavailable"
    assert caught.value.retryable is True
    assert "unavailable" in caught.value.message


async def test_api_refusal_is_backend_unavailable_not_retryable(
    fake_kube: FakeKube, oci_settings: Any, tmp_path: Path
) -> None:
    settings = oci_settings(
        oci_backend="kubernetes",
        oci_kubeconfig=fake_kube.kubeconfig(tmp_path / "kc"),
        oci_namespace="somewhere-else",
    )
    with pytest.raises(ExecutionFailed) as caught:
        await run(settings, {}, credentials={"API_TOKEN": PLANTED})
    assert caught.value.code == "backend_unavailable"
    assert caught.value.retryable is False
    assert caught.value.details["status"] == 403
    assert len(fake_kube.calls("POST", "/jobs")) == 1  # a refusal is not retried


async def test_cancelled_run_still_deletes_its_job(fake_kube: FakeKube, kube_settings: Settings) -> None:
    fake_kube.scenario = Scenario(outcome="hang")
    executor = OciExecutor(kube_settings)
    task = asyncio.create_task(executor.execute(record(), {}, make_ctx(credentials={"API_TOKEN": PLANTED})))
    while not fake_kube.objects["pods"]:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await executor.close()
    assert_cleaned_up(fake_kube, job_name("acme/greet", make_ctx()))


async def test_reaper_removes_only_jobs_of_executions_no_longer_running(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    now = datetime.now(UTC)

    def job(name: str, execution: str, worker: str, age: float, deadline: int = 60) -> dict[str, Any]:
        labels = {
            "app.kubernetes.io/managed-by": "function-fleet",
            "app.kubernetes.io/component": "oci-function",
            "fleet.dev/worker": worker,
        }
        return {
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"fleet.dev/execution-id": execution},
            },
            "spec": {"activeDeadlineSeconds": deadline},
            "_age": age,
        }

    jobs = [
        (job("finished", "e1", "other", 5), True),
        (job("mine-from-before", "e2", "oci-test-worker", 5), False),
        (job("others-running", "e3", "other", 5), False),
        (job("overdue", "e4", "other", 60 + 300 + 10), False),
        (job("live-here", "e5", "oci-test-worker", 5), False),
        (job("history-says-done", "e6", "other", 5), False),
    ]
    for spec, finished in jobs:
        age = spec.pop("_age")
        created = (now - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
        fake_kube.add_job(spec, created=created, finished=finished)
    unrelated = {"metadata": {"name": "not-ours", "labels": {"app": "x"}}, "spec": {}}
    fake_kube.add_job(unrelated, finished=True)

    async def still_running(execution_id: str) -> bool | None:
        return {"e6": False, "e3": True}.get(execution_id)

    backend = KubernetesBackend(kube_settings)
    deleted = await backend.reap({"e5"}, still_running=still_running, now=now)
    assert sorted(deleted) == ["finished", "history-says-done", "mine-from-before", "overdue"]
    assert sorted(fake_kube.objects["jobs"]) == ["live-here", "not-ours", "others-running"]
    for name in deleted:
        assert fake_kube.calls("DELETE", f"/jobs/{name}")[0].body["propagationPolicy"] == "Background"
    (listing,) = fake_kube.calls("GET", "/jobs")
    assert listing.query["labelSelector"] == (
        "app.kubernetes.io/managed-by=function-fleet,app.kubernetes.io/component=oci-function"
    )


async def test_the_executor_reaps_once_before_its_first_job(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    fake_kube.add_job(
        {
            "metadata": {
                "name": "leftover",
                "labels": {
                    "app.kubernetes.io/managed-by": "function-fleet",
                    "app.kubernetes.io/component": "oci-function",
                    "fleet.dev/worker": "oci-test-worker",
                },
            },
            "spec": {"activeDeadlineSeconds": 60},
        }
    )
    fake_kube.scenario = Scenario(log='{"n": 1}')
    executor = OciExecutor(kube_settings)
    try:
        for i in range(2):
            assert await executor.execute(record(credentials=()), {}, make_ctx(f"run-{i}")) == {"n": 1}
    finally:
        await executor.close()
    assert fake_kube.deleted("jobs")[0] == "leftover"
    assert len([r for r in fake_kube.calls("GET", "/jobs") if "labelSelector" in r.query]) == 1


async def test_the_reaper_asks_the_execution_history(
    fake_kube: FakeKube, kube_settings: Settings, migrated_url: str, pool: Any
) -> None:
    rows = [
        ("done", "completed", "now()"),
        ("crashed", "running", "now() - interval '1 minute'"),
        ("running", "running", "now() + interval '10 minutes'"),
    ]
    for execution_id, status, lease in rows:
        await pool.execute(
            "INSERT INTO function_executions (id, function_slug, status, lease_expires_at) "
            f"VALUES ($1, 'acme/greet', $2, {lease})",
            execution_id,
            status,
        )
    labels = {
        "app.kubernetes.io/managed-by": "function-fleet",
        "app.kubernetes.io/component": "oci-function",
        "fleet.dev/worker": "another-replica",
    }
    for execution_id in ("done", "crashed", "running", "unknown"):
        fake_kube.add_job(
            {
                "metadata": {
                    "name": f"job-{execution_id}",
                    "labels": labels,
                    "annotations": {"fleet.dev/execution-id": execution_id},
                },
                "spec": {"activeDeadlineSeconds": 60},
            }
        )
    fake_kube.scenario = Scenario(log='{"ok": true}')
    settings = kube_settings.model_copy(update={"database_url": migrated_url})
    executor = OciExecutor(settings)
    try:
        assert await executor.execute(record(credentials=()), {}, make_ctx("fresh")) == {"ok": True}
    finally:
        await executor.close()
    assert sorted(fake_kube.objects["jobs"]) == ["job-running", "job-unknown"]


async def test_a_large_input_travels_through_job_and_watch_events(
    fake_kube: FakeKube, kube_settings: Settings
) -> None:
    fake_kube.scenario = Scenario(log='{"ok": true}\n')
    text = "word " * 25_000  # 125 000 bytes of INPUT: every watch event carries it
    assert await run(kube_settings, {"text": text}, credentials={"API_TOKEN": PLANTED}) == {"ok": True}
    (create,) = fake_kube.calls("POST", "/jobs")
    env = create.body["spec"]["template"]["spec"]["containers"][0]["env"]
    assert json.loads(next(e["value"] for e in env if e["name"] == "INPUT")) == {"text": text}
