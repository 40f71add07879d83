"""The local backend: the same protocol and error codes as Jobs, as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ExecutionFailed
from shared.settings import Settings
from tests.oci.conftest import knowing, make_ctx
from workers.oci.executor import OciExecutor
from workers.oci.protocol import MAX_INPUT_BYTES, OciFunction, Resources

PLANTED = "l0cal-pl4nted-s3cret-7c6b"


def function(tmp_path: Path, script: str, **overrides: Any) -> OciFunction:
    (tmp_path / "fn.py").write_text(script)
    values: dict[str, Any] = {
        "slug": "acme/local",
        "image_ref": "registry.example/acme/local:1",
        "command": (sys.executable, "fn.py"),
        "working_dir": str(tmp_path),
        "container_env": {"GREETING": "Hello"},
        "timeout_seconds": 20.0,
        "credentials": ("API_TOKEN",),
        "resources": Resources("100m", "128Mi", "1", "512Mi"),
    }
    values.update(overrides)
    return OciFunction(**values)


async def run(settings: Settings, fn: OciFunction, data: Any, **ctx: Any) -> Any:
    executor = OciExecutor(settings)
    try:
        return await executor.run(fn, data, make_ctx(**ctx))
    finally:
        await executor.close()


ECHO_ENV = """
import json, os, sys
print("log to stderr", file=sys.stderr)
print("an earlier stdout line")
keys = sorted(k for k in os.environ if k not in ("LC_CTYPE",))
print(json.dumps({"input": json.loads(os.environ["INPUT"]), "env": {k: os.environ[k] for k in keys},
                  "argv": sys.argv, "cwd": os.getcwd()}))
"""


async def test_success_reads_the_last_stdout_line_and_builds_a_clean_environment(
    tmp_path: Path, oci_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_SECRET_OTHER", "worker-only-secret")
    monkeypatch.setenv("FLEET_DATABASE_URL", "postgresql://leak")
    fn = function(tmp_path, ECHO_ENV, container_env={"GREETING": "Hello", "INPUT": "overridden?"})
    out = await run(oci_settings(), fn, {"name": "Ada"}, credentials={"API_TOKEN": PLANTED})
    assert out["input"] == {"name": "Ada"}
    env = out["env"]
    assert env["GREETING"] == "Hello"
    assert env["API_TOKEN"] == PLANTED
    assert env["FLEET_EXECUTION_ID"] == "exec-1"
    assert env["FLEET_FUNCTION"] == "acme/local"
    assert env["FLEET_ATTEMPT"] == "1"
    assert env["HOME"] == env["TMPDIR"]
    assert set(env) <= {
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
        "TMPDIR",
        "GREETING",
        "API_TOKEN",
        "INPUT",
    } | {
        "FLEET_EXECUTION_ID",
        "FLEET_FUNCTION",
        "FLEET_ATTEMPT",
    }
    assert PLANTED not in json.dumps(out["argv"])  # credentials never on the command line
    assert out["cwd"] == str(tmp_path)
    assert not Path(env["HOME"]).exists()  # the per-run scratch directory is gone


async def test_last_line_not_an_object_is_invalid_output(tmp_path: Path, oci_settings: Any) -> None:
    fn = function(tmp_path, "print('[1, 2]')")
    with pytest.raises(ExecutionFailed) as caught:
        await run(oci_settings(), fn, {})
    assert caught.value.code == "invalid_output"
    assert caught.value.details == {"last_line": "[1, 2]"}


async def test_no_output_is_invalid_output(tmp_path: Path, oci_settings: Any) -> None:
    with pytest.raises(ExecutionFailed) as caught:
        await run(oci_settings(), function(tmp_path, "pass"), {})
    assert caught.value.code == "invalid_output"


async def test_non_zero_exit_is_function_failed_with_a_scrubbed_tail(
    tmp_path: Path, oci_settings: Any
) -> None:
    script = "import os, sys\nfor i in range(50): print('step', i, file=sys.stderr)\n"
    script += "print('rejected', os.environ['API_TOKEN'], file=sys.stderr)\nsys.exit(7)\n"
    with pytest.raises(ExecutionFailed) as caught:
        await run(
            oci_settings(oci_log_tail_lines=5),
            function(tmp_path, script),
            {},
            credentials={"API_TOKEN": PLANTED},
            resources=knowing(PLANTED),  # the credentials middleware registers every value it resolves
        )
    error = caught.value
    assert error.code == "function_failed"
    assert error.details["exit_code"] == 7
    assert error.details["log_tail"] == ["step 46", "step 47", "step 48", "step 49", "rejected ***"]
    assert PLANTED not in json.dumps(error.to_error())


async def test_the_calls_own_credentials_are_scrubbed_even_when_no_registry_knows_them(
    tmp_path: Path, oci_settings: Any
) -> None:
    unregistered = "c4ll-only-cr3dential-0e1f"  # in no worker's registry
    script = "import os, sys\nprint('using', os.environ['API_TOKEN'], file=sys.stderr)\n"
    script += (
        "print('{\"error\": {\"message\": \"refused ' + os.environ['API_TOKEN'] + '\"}}')\nsys.exit(3)\n"
    )
    with pytest.raises(ExecutionFailed) as caught:
        await run(oci_settings(), function(tmp_path, script), {}, credentials={"API_TOKEN": unregistered})
    error = caught.value
    assert error.code == "function_failed"
    assert error.message == "acme/local failed: refused ***"
    assert error.details["log_tail"] == ["using ***"]
    assert unregistered not in json.dumps(error.to_error())


async def test_a_closed_executor_runs_nothing_more(tmp_path: Path, oci_settings: Any) -> None:
    executor = OciExecutor(oci_settings())
    fn = function(tmp_path, "print('{\"ok\": 1}')", credentials=())
    assert await executor.run(fn, {}, make_ctx("before")) == {"ok": 1}
    await executor.close()
    assert executor.closed
    with pytest.raises(ExecutionFailed) as caught:
        await executor.run(fn, {}, make_ctx("after"))
    assert caught.value.code == "backend_unavailable"
    assert caught.value.retryable is True


async def test_timeout_kills_the_whole_process_group(tmp_path: Path, oci_settings: Any) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(ExecutionFailed) as caught:
        await run(oci_settings(), function(tmp_path, script, timeout_seconds=1.0), {})
    assert caught.value.code == "timeout"
    assert caught.value.retryable is True
    assert not alive(int(pid_file.read_text()))


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


async def test_an_image_without_command_cannot_run_locally(tmp_path: Path, oci_settings: Any) -> None:
    with pytest.raises(ExecutionFailed) as caught:
        await run(oci_settings(), function(tmp_path, "", command=(), working_dir=None), {})
    assert caught.value.code == "backend_unavailable"
    assert caught.value.retryable is False
    assert "FLEET_OCI_BACKEND=kubernetes" in caught.value.message


async def test_missing_working_dir_and_missing_command_are_backend_unavailable(
    tmp_path: Path, oci_settings: Any
) -> None:
    with pytest.raises(ExecutionFailed) as caught:
        await run(oci_settings(), function(tmp_path, "", working_dir="/app"), {})
    assert caught.value.code == "backend_unavailable"
    assert "/app" in caught.value.message
    with pytest.raises(ExecutionFailed) as caught:
        await run(oci_settings(), function(tmp_path, "", command=("no-such-binary-here",)), {})
    assert caught.value.code == "backend_unavailable"


async def test_input_beyond_the_environment_limit_is_payload_too_large(
    tmp_path: Path, oci_settings: Any
) -> None:
    with pytest.raises(ExecutionFailed) as caught:
        await run(oci_settings(), function(tmp_path, "print('{}')"), {"text": "x" * MAX_INPUT_BYTES})
    assert caught.value.code == "payload_too_large"


async def test_max_concurrency_is_honoured_per_slug(tmp_path: Path, oci_settings: Any) -> None:
    import asyncio

    script = (
        "import json, os, time\n"
        "d = os.environ['DIR']\n"
        "open(os.path.join(d, 'start-' + os.environ['FLEET_EXECUTION_ID']), 'w').close()\n"
        "n = len([f for f in os.listdir(d) if f.startswith('start-')]) - "
        "len([f for f in os.listdir(d) if f.startswith('end-')])\n"
        "time.sleep(0.2)\n"
        "open(os.path.join(d, 'end-' + os.environ['FLEET_EXECUTION_ID']), 'w').close()\n"
        "print(json.dumps({'running': n}))\n"
    )
    marks = tmp_path / "marks"
    marks.mkdir()
    fn = function(tmp_path, script, max_concurrency=1, container_env={"DIR": str(marks)})
    executor = OciExecutor(oci_settings())
    try:
        outs = await asyncio.gather(*(executor.run(fn, {}, make_ctx(f"e{i}")) for i in range(3)))
    finally:
        await executor.close()
    assert [o["running"] for o in outs] == [1, 1, 1]


async def test_a_descendant_that_escaped_the_group_does_not_hang_the_run(
    tmp_path: Path, oci_settings: Any
) -> None:
    pid_file = tmp_path / "escaped.pid"
    script = (
        "import subprocess, sys, time\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(600)']\n"
        "child = subprocess.Popen(sleeper, start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    try:
        with pytest.raises(ExecutionFailed) as caught:
            await run(oci_settings(), function(tmp_path, script, timeout_seconds=1.0), {})
        assert caught.value.code == "timeout"
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
