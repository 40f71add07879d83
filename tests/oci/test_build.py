"""`fleet build`: the Kaniko Job and ConfigMap it renders (schema-valid), and a build against the
fake Kubernetes API, ending with the registry's image_ref updated."""

from __future__ import annotations

import base64
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from shared.registry.repository import FunctionRepository
from shared.settings import Settings
from shared.tools.cli.main import cli
from shared.tools.scaffold import scaffold
from tests.fakes.kube import FakeKube, Scenario
from tests.oci.schemas import validate
from workers.oci.build import plan_build, run_build
from workers.oci.cli import _register, _update_definition


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    made = scaffold("python", "acme/counter", tmp_path)
    (made.directory / "__pycache__").mkdir()
    (made.directory / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    return made.directory


def context_files(configmap: dict[str, Any]) -> dict[str, bytes]:
    data = base64.b64decode(configmap["binaryData"]["context.tar.gz"])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_dry_run_prints_a_schema_valid_configmap_and_kaniko_job(function_dir: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["build", str(function_dir), "--image", "registry.example.com/acme/counter:0.2.0", "--dry-run"],
        env={"FLEET_OCI_NAMESPACE": "builds"},
    )
    assert result.exit_code == 0, result.output
    configmap, job = list(yaml.safe_load_all(result.output))
    validate(configmap, "configmap-v1.json")
    validate(job, "job-batch-v1.json")
    name = job["metadata"]["name"]
    assert name.startswith("fleet-build-counter-0-2-0-")
    assert job["metadata"]["namespace"] == configmap["metadata"]["namespace"] == "builds"
    assert configmap["metadata"]["name"] == f"{name}-context"
    assert configmap["immutable"] is True
    assert sorted(context_files(configmap)) == [
        ".dockerignore",
        ".gitignore",
        "Dockerfile",
        "function.yaml",
        "main.py",
    ]
    assert context_files(configmap)["main.py"] == (function_dir / "main.py").read_bytes()
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["suspend"] is True
    assert spec["activeDeadlineSeconds"] == 1800
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == "gcr.io/kaniko-project/executor:v1.23.2"
    assert container["args"] == [
        "--context=tar:///workspace/context.tar.gz",
        "--dockerfile=Dockerfile",
        "--destination=registry.example.com/acme/counter:0.2.0",
        "--cache=true",
        "--snapshot-mode=redo",
        "--verbosity=info",
    ]
    assert container["volumeMounts"] == [{"name": "context", "mountPath": "/workspace", "readOnly": True}]
    assert pod["volumes"] == [{"name": "context", "configMap": {"name": f"{name}-context"}}]
    # the same input renders the same objects (a reproducible context)
    again = CliRunner().invoke(
        cli,
        ["build", str(function_dir), "--image", "registry.example.com/acme/counter:0.2.0", "--dry-run"],
        env={"FLEET_OCI_NAMESPACE": "builds"},
    )
    assert again.output == result.output


def test_context_url_and_push_secret(function_dir: Path, oci_settings: Any) -> None:
    plan = plan_build(
        "r.example/x:1", oci_settings(), context_url="git://github.com/acme/x.git#main", push_secret="regcred"
    )
    assert plan.configmap is None
    validate(plan.job, "job-batch-v1.json")
    assert "suspend" not in plan.job["spec"]
    container = plan.job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "--context=git://github.com/acme/x.git#main"
    assert container["volumeMounts"] == [
        {"name": "push-credentials", "mountPath": "/kaniko/.docker", "readOnly": True}
    ]
    assert plan.job["spec"]["template"]["spec"]["volumes"] == [
        {
            "name": "push-credentials",
            "secret": {
                "secretName": "regcred",
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
            },
        }
    ]


def test_a_context_over_the_limit_is_refused(function_dir: Path) -> None:
    (function_dir / "blob.bin").write_bytes(os.urandom(4096))
    result = CliRunner().invoke(
        cli,
        ["build", str(function_dir), "--image", "r.example/x:1", "--dry-run"],
        env={"FLEET_OCI_BUILD_CONTEXT_MAX_BYTES": "2048"},
    )
    assert result.exit_code == 2
    assert "--context-url" in result.output


async def test_build_against_the_api_then_the_registry_gets_the_image(
    fake_kube: FakeKube, kube_settings: Settings, function_dir: Path, pool: Any, migrated_url: str
) -> None:
    fake_kube.scenario = Scenario(log="INFO Pushed registry.example.com/acme/counter@sha256:abc\n")
    plan = plan_build("registry.example.com/acme/counter:0.2.0", kube_settings, directory=function_dir)
    result = await run_build(plan, kube_settings)
    assert result.ok, result
    assert result.log_tail == ["INFO Pushed registry.example.com/acme/counter@sha256:abc"]

    (job_call,) = fake_kube.calls("POST", "/jobs")
    assert job_call.body == plan.job
    (cm_call,) = fake_kube.calls("POST", "/configmaps")
    uid = next(e.obj for e in fake_kube._history if e.kind == "jobs")["metadata"]["uid"]
    assert cm_call.body["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": plan.name, "uid": uid}
    ]
    validate(cm_call.body, "configmap-v1.json")
    assert fake_kube.calls("PATCH", f"/jobs/{plan.name}")[0].body == {"spec": {"suspend": False}}
    assert any(r.query.get("watch") == "1" for r in fake_kube.calls("GET", "/jobs"))
    assert plan.name in fake_kube.deleted("jobs")
    assert f"{plan.name}-context" in fake_kube.deleted("configmaps")
    assert not fake_kube.objects["jobs"]
    assert not fake_kube.objects["configmaps"]

    definition = _update_definition(function_dir, "registry.example.com/acme/counter:0.2.0")
    assert definition is not None
    assert (
        "image_ref: registry.example.com/acme/counter:0.2.0" in (function_dir / "function.yaml").read_text()
    )
    assert "registry.example.com/acme/counter:0.2.0" in await _register(migrated_url, definition)
    record = await FunctionRepository(pool).get("acme/counter")
    assert record is not None
    assert record.image_ref == "registry.example.com/acme/counter:0.2.0"


async def test_a_failed_build_reports_its_log(
    fake_kube: FakeKube, kube_settings: Settings, function_dir: Path
) -> None:
    fake_kube.scenario = Scenario(outcome="exit", exit_code=1, log="error building image: FROM nope\n")
    result = await run_build(
        plan_build("r.example/x:1", kube_settings, directory=function_dir), kube_settings
    )
    assert not result.ok
    assert result.reason.startswith("BackoffLimitExceeded")
    assert result.log_tail == ["error building image: FROM nope"]
    assert not fake_kube.objects["jobs"]


def test_fleet_build_cli_creates_the_job_waits_and_updates_function_yaml(
    function_dir: Path, tmp_path: Path
) -> None:
    """The command itself (it runs its own event loop), against the fake served from a thread."""
    import asyncio
    import threading

    from tests.fakes.kube import running_fake_kube

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    served = running_fake_kube()
    try:
        fake = asyncio.run_coroutine_threadsafe(served.__aenter__(), loop).result(10)
        fake.scenario = Scenario(log="INFO Pushed\n")
        config = fake.kubeconfig(tmp_path / "kubeconfig")
        image = "registry.example.com/acme/counter:0.3.0"
        runner = CliRunner()
        env = {"FLEET_OCI_API_BACKOFF": "0.01", "FLEET_DATABASE_URL": ""}
        result = runner.invoke(
            cli, ["build", str(function_dir), "--image", image, "--kubeconfig", str(config)], env=env
        )
        assert result.exit_code == 0, result.output
        assert f"built and pushed {image}" in result.output
        assert "no registry configured" in result.output
        assert f"image_ref: {image}" in (function_dir / "function.yaml").read_text()
        assert f"image_ref: {image}" in (function_dir / "function.local.yaml").read_text()
        assert len(fake.calls("POST", "/jobs")) == 1
        assert not fake.objects["jobs"]

        fake.scenario = Scenario(outcome="exit", exit_code=1, log="error: no such base image\n")
        failed = runner.invoke(
            cli,
            ["build", str(function_dir), "--image", "r.example/y:1", "--kubeconfig", str(config)],
            env=env,
        )
        assert failed.exit_code == 1
        assert "error: no such base image" in failed.output
        assert "image_ref: r.example/y:1" not in (function_dir / "function.yaml").read_text()
    finally:
        asyncio.run_coroutine_threadsafe(served.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_the_context_packs_to_the_same_bytes_whatever_the_time(
    function_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from workers.oci.build import pack_context

    first = pack_context(function_dir, 1 << 20)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)  # gzip stamps its header with time.time()
    assert pack_context(function_dir, 1 << 20) == first
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        assert "Dockerfile" in tar.getnames()
