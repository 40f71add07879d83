"""`topic export` (bounded memory over 100k entries; id and time bounds) and `topic record`
as a process (captures requests and results together; SIGINT flushes and exits 0)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import orjson
from redis.asyncio import Redis

from shared.runtime.envelope import encode_request
from shared.settings import Settings
from tests.replay.conftest import CliCall, fleet_env, read_jsonl

ENTRIES = 100_000
MEMORY_BOUND = 30 * 1024 * 1024


async def test_export_of_100k_entries_stays_in_bounded_memory(
    settings: Settings, redis: Redis, fleet: CliCall, tmp_path: Path
) -> None:
    topic = settings.topic_for("ai")
    _, body = encode_request(function="system/echo", input={"pad": "x" * 200})
    try:
        for start in range(0, ENTRIES, 5000):
            pipe = redis.pipeline(transaction=False)
            for _ in range(start, start + 5000):
                pipe.xadd(topic, {"data": body, "metadata": b"{}"})
            await pipe.execute()
        out = tmp_path / "export.jsonl"
        tracemalloc.start()
        try:
            exported = await fleet("topic", "export", "ai", "--out", str(out))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert exported.exit_code == 0, exported.output
        assert f"exported {ENTRIES} entries" in exported.output
        with out.open("rb") as lines:
            assert sum(1 for _ in lines) == ENTRIES
        # The file is ~50 MB; holding it (or the stream) in memory would exceed the bound.
        assert out.stat().st_size > MEMORY_BOUND
        assert peak < MEMORY_BOUND, f"peak traced memory {peak / 2**20:.1f} MiB"
    finally:
        await redis.delete(topic)


async def test_export_bounds_by_id_and_time(
    settings: Settings, redis: Redis, fleet: CliCall, tmp_path: Path
) -> None:
    topic = settings.topic_for("ai")
    base = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    for second in range(10):
        _, body = encode_request(function="system/echo", input={"second": second})
        await redis.xadd(topic, {"data": body, "metadata": b'{"k":"v"}'}, id=f"{base + second * 1000}-0")
    await redis.xadd(topic, {"data": b"not json", "metadata": b"{}"}, id=f"{base + 10_000}-0")

    by_time = tmp_path / "time.jsonl"
    result = await fleet(
        "topic",
        "export",
        topic,
        "--from",
        "2024-01-01T00:00:03Z",
        "--to",
        "2024-01-01T00:00:05",
        "--out",
        str(by_time),
    )
    assert result.exit_code == 0, result.output
    records = read_jsonl(by_time)
    assert [r["event"]["data"]["input"]["second"] for r in records] == [3, 4, 5]
    assert records[0] == {
        "stream": topic,
        "id": f"{base + 3000}-0",
        "time": "2024-01-01T00:00:03.000Z",
        "event": records[0]["event"],
        "metadata": {"k": "v"},
    }

    by_id = tmp_path / "id.jsonl"
    result = await fleet(
        "topic", "export", "ai", "--from", f"{base + 8000}-0", "--page-size", "1", "--out", str(by_id)
    )
    assert result.exit_code == 0, result.output
    records = read_jsonl(by_id)
    assert len(records) == 3
    assert records[-1]["event"] is None
    assert records[-1]["raw"] == "not json"

    stdout = await fleet("topic", "export", "ai", "--to", str(base))
    assert orjson.loads(stdout.stdout.splitlines()[0])["id"] == f"{base}-0"
    assert (await fleet("topic", "export", "ai", "--from", "yesterday")).exit_code == 2


async def test_record_process_captures_requests_and_results_until_sigint(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    topic = settings.topic_for("ai")
    await redis.xadd(topic, {"data": b"{}", "metadata": b"{}"})  # before the recording: not captured
    out = tmp_path / "live.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.tools.cli.main",
        "topic",
        "record",
        "ai",
        "--out",
        str(out),
        env={**os.environ, **fleet_env(settings)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        ready = b""
        while not ready.startswith(b"recording "):  # skip anything printed while importing
            ready = await asyncio.wait_for(process.stderr.readline(), 60)
            assert ready, "the recorder exited before it was ready"
        request_id, body = encode_request(function="system/echo", input={})
        await redis.xadd(topic, {"data": body, "metadata": b"{}"})
        result = {
            "specversion": "1.0",
            "id": "r1",
            "type": "fleet.execution.completed",
            "executionid": request_id,
        }
        await redis.xadd(settings.results_topic, {"data": orjson.dumps(result), "metadata": b"{}"})
        for _ in range(500):  # the recorder flushes after every read
            if out.exists() and out.read_bytes().count(b"\n") >= 2:
                break
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr
    assert b"recorded 2 entries" in stderr
    records = read_jsonl(out)
    assert [r["stream"] for r in records] == [topic, settings.results_topic]
    assert records[0]["event"]["id"] == request_id
    assert records[1]["event"]["executionid"] == request_id


async def test_record_stops_after_duration(settings: Settings, fleet: CliCall, tmp_path: Path) -> None:
    out = tmp_path / "quiet.jsonl"
    result = await fleet("topic", "record", "ai", "--no-results", "--duration", "0.2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "recorded 0 entries" in result.output
    assert out.read_bytes() == b""
