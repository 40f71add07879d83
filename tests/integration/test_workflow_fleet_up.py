"""A five-node workflow end to end through a real `fleet up` (docs/workflows.md, "End to end").

The fleet runs as a user runs it (embedded PostgreSQL, the loopback Redis, autoscaled workers of
the ai, http and oci domains from zero); functions are registered with `fleet functions
register`; the workflow runs with `fleet workflow run --json`:

    start (system/echo) ──┬── greet  (http webhook to a loopback server, allowed by FLEET_HTTP_ALLOW)
                          ├── count  (oci function on the local backend: a subprocess)
                          └── flaky  (http webhook answering 503 once: retried by its policy)
                                 └──┴──┴── join (system/echo of the three outputs)

The topics are recorded during the run (`fleet topic record`), replayed against the same fleet
(`fleet topic replay`) and the two compared (`fleet topic diff`): no difference.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.registry.test_cli import ROOT, _fleet_up, _stop, fleet_env, fleet_home  # noqa: F401  (fixture)

COUNT_SCRIPT = """
import json, os
data = json.loads(os.environ["INPUT"])
print(json.dumps({"count": len(data["text"].split())}))
"""


class Hooks:
    """The loopback webhooks: ``/greet`` answers at once; ``/flaky`` answers 503 to its first
    call and 200 after, so the first run fails retryably and the policy's second succeeds."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"greet": 0, "flaky": 0}

    async def greet(self, request: web.Request) -> web.Response:
        self.calls["greet"] += 1
        body = await request.json()
        return web.json_response({"greeting": f"hello {body['name']}"})

    async def flaky(self, request: web.Request) -> web.Response:
        self.calls["flaky"] += 1
        if self.calls["flaky"] == 1:
            return web.json_response({"error": "warming up"}, status=503)
        body = await request.json()
        return web.json_response({"ok": True, "seen": body["n"]})


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[Hooks, int]]:
    served = Hooks()
    app = web.Application()
    app.router.add_post("/greet", served.greet)
    app.router.add_post("/flaky", served.flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield served, port
    await runner.cleanup()


async def _fleet(env: dict[str, str], *args: str, check: bool = True) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.tools.cli.main", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    if check:
        log = (Path(env["FLEET_HOME"]) / "up.log").read_text()[-4000:]
        assert process.returncode == 0, f"{args}: {out.decode()}{err.decode()}\n--- fleet up ---\n{log}"
    return process.returncode, out.decode()


def _definitions(tmp: Path, port: int) -> list[Path]:
    (tmp / "count").mkdir()
    (tmp / "count" / "fn.py").write_text(COUNT_SCRIPT)
    webhook = {"domain": "http", "execution_type": "http", "timeout_seconds": 10}
    definitions = {
        "greet": {**webhook, "slug": "e2e/greet", "webhook_url": f"http://127.0.0.1:{port}/greet"},
        "flaky": {
            **webhook,
            "slug": "e2e/flaky",
            "webhook_url": f"http://127.0.0.1:{port}/flaky",
            "retry_policy": {"max_attempts": 3, "initial_backoff_seconds": 0.2, "jitter": 0},
        },
        "count": {
            "slug": "e2e/count",
            "domain": "oci",
            "execution_type": "oci",
            "image_ref": "registry.example/e2e/count:1",
            "command": [sys.executable, "fn.py"],
            "working_dir": str(tmp / "count"),
            "timeout_seconds": 30,
        },
    }
    paths = []
    for name, definition in definitions.items():
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(definition))
        paths.append(path)
    return paths


WORKFLOW = textwrap.dedent(
    """\
    nodes:
      - id: start
        function: system/echo
        input: {name: Ada, text: "one two three four"}
      - id: greet
        function: e2e/greet
        input: {name: "{{start.name}}"}
        depends_on: [start]
      - id: count
        function: e2e/count
        input: {text: "{{start.text}}"}
        depends_on: [start]
      - id: flaky
        function: e2e/flaky
        input: {n: "{{start.name}}"}
        depends_on: [start]
      - id: join
        function: system/echo
        input: {greeting: "{{greet.body.greeting}}", words: "{{count.count}}", ok: "{{flaky.body.ok}}"}
        depends_on: [greet, count, flaky]
    """
)


FUNCTIONS = {
    "start": "system/echo",
    "greet": "e2e/greet",
    "count": "e2e/count",
    "flaky": "e2e/flaky",
    "join": "system/echo",
}


@pytest.mark.slow
async def test_a_five_node_workflow_through_fleet_up_then_replayed_identically(
    fleet_home: Path,  # noqa: F811
    redis_url: str,
    namespace: str,
    hooks: tuple[Hooks, int],
    tmp_path: Path,
) -> None:
    served, port = hooks
    env = fleet_env(fleet_home, redis_url, namespace, FLEET_HTTP_ALLOW=f"127.0.0.1:{port}", FLEET_UI="false")
    process, _ = await _fleet_up(fleet_home, env, domains=("ai", "http", "oci"))
    try:
        for path in _definitions(tmp_path, port):
            await _fleet(env, "functions", "register", str(path))
        workflow = tmp_path / "five-nodes.yaml"
        workflow.write_text(WORKFLOW)

        # Record the three request topics and the results while the workflow runs.
        recording = tmp_path / "recorded.jsonl"
        recorder = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.tools.cli.main", "topic", "record", "ai", "http", "oci",
            "--out", str(recording),
            cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert recorder.stderr is not None
        ready = await asyncio.wait_for(recorder.stderr.readline(), 60)
        assert b"recording" in ready, ready

        _, out = await _fleet(env, "workflow", "run", str(workflow), "--json", "--run-id", "e2e-run")
        run = json.loads(out)
        assert run["status"] == "completed", run
        nodes = run["nodes"]
        assert {n: nodes[n]["state"] for n in nodes} == dict.fromkeys(FUNCTIONS, "completed")
        assert nodes["join"]["result"]["output"] == {"greeting": "hello Ada", "words": 4, "ok": True}
        assert served.calls == {"greet": 1, "flaky": 2}  # one failure, one retry, nothing more

        # History: one final row per node, the retried node at attempt 2.
        attempts = {}
        for node, function in FUNCTIONS.items():
            _, listed = await _fleet(env, "executions", "list", "--function", function, "--json")
            rows = [r for r in json.loads(listed) if r.get("node_id") == node]
            assert len(rows) == 1, rows
            assert rows[0]["status"] == "completed"
            assert rows[0]["workflow_execution_id"] == "e2e-run"
            assert rows[0]["id"] == nodes[node]["result"]["execution_id"]
            attempts[node] = rows[0]["attempt"]
        assert attempts == {"start": 1, "greet": 1, "count": 1, "flaky": 2, "join": 1}

        recorder.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(recorder.wait(), 30) == 0
        entries = [json.loads(line) for line in recording.read_text().splitlines()]
        assert len(entries) == 10  # five requests and their five final results

        # Replayed (new ids) against the same fleet: every result as recorded.
        after = tmp_path / "after.jsonl"
        await _fleet(env, "topic", "replay", str(recording), "--results", str(after))
        # A webhook's output carries the response headers (Date): the one volatile part.
        code, diff = await _fleet(
            env, "topic", "diff", str(recording), str(after), "--ignore", "output.headers", check=False
        )
        assert code == 0, diff
        assert "5 requests compared: 5 identical" in diff
    finally:
        assert await _stop(process) == 0
