"""`topic diff` on hand-written files: pairing rules, what is compared, --ignore, exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from shared.tools.cli.main import cli
from shared.tools.replay.diff import diff_results, load_results, parse_path, project


def request(eid: str, slug: str = "demo/greet") -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": eid,
        "source": "test",
        "type": "fleet.execution.requested",
        "data": {"function": slug, "input": {}},
    }
    return {"stream": "functions.ai", "id": "1-0", "event": event, "metadata": {}}


def result(
    eid: str, status: str = "completed", output: Any = None, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "execution_id": eid,
        "function": "demo/greet",
        "status": status,
        "attempt": extra.pop("attempt", 1),
        "started_at": extra.pop("started_at", "2024-01-01T00:00:00.000Z"),
        "duration_ms": extra.pop("duration_ms", 1.0),
        "worker": extra.pop("worker", "fleet-ai/a"),
    }
    if status == "completed":
        data["output"] = output
    else:
        data["error"] = {"code": code, "message": extra.pop("message", "boom"), "retryable": False}
    event = {
        "specversion": "1.0",
        "id": extra.pop("event_id", "r-" + eid),
        "source": "fleet/ai",
        "type": "fleet.execution.completed" if status == "completed" else "fleet.execution.failed",
        "executionid": eid,
        "time": extra.pop("time", "2024-01-01T00:00:00.000Z"),
        "data": data,
    }
    return {"stream": "functions.results", "id": "2-0", "event": event, "metadata": {}}


def replayed(original: str, new: str, res: dict[str, Any] | None) -> dict[str, Any]:
    record = res or {"stream": None, "id": None, "time": None, "event": None, "metadata": {}}
    outcome = "result" if res else "timeout"
    return {**record, "replay": {"original_id": original, "execution_id": new, "outcome": outcome}}


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def run_diff(*args: str) -> Any:
    return CliRunner().invoke(cli, ["topic", "diff", *args])


def test_identical_ignores_timing_and_pairs_new_ids_with_the_recording(tmp_path: Path) -> None:
    before = write(
        tmp_path / "before.jsonl",
        [
            request("a"),
            result("a", output={"x": 1}),
            request("b"),
            result("b", "failed", code="function_failed"),
        ],
    )
    after = write(
        tmp_path / "after.jsonl",
        [
            replayed("a", "a2", result("a2", output={"x": 1}, attempt=3, worker="other", duration_ms=99.0)),
            replayed("b", "b2", result("b2", "failed", code="function_failed", message="other text")),
        ],
    )
    outcome = run_diff(str(before), str(after))
    assert outcome.exit_code == 0, outcome.output
    assert "2 requests compared: 2 identical, 0 changed" in outcome.output


def test_changed_output_and_error_code_are_shown_and_exit_1(tmp_path: Path) -> None:
    before = write(
        tmp_path / "b.jsonl",
        [
            request("a"),
            result("a", output={"x": 1, "keep": True}),
            request("b"),
            result("b", "failed", code="timeout"),
        ],
    )
    after = write(
        tmp_path / "a.jsonl",
        [
            replayed("a", "a2", result("a2", output={"x": 2, "keep": True})),
            replayed("b", "b2", result("b2", "failed", code="handler_error")),
        ],
    )
    outcome = run_diff(str(before), str(after))
    assert outcome.exit_code == 1
    assert "~ a (demo/greet)" in outcome.output
    assert "output.x: 1 -> 2" in outcome.output
    assert 'error.code: "timeout" -> "handler_error"' in outcome.output
    assert "keep" not in outcome.output


def test_status_change_shows_output_and_error_appearing(tmp_path: Path) -> None:
    before = write(tmp_path / "b.jsonl", [result("a", output=1)])
    after = write(tmp_path / "a.jsonl", [result("a", "failed", code="timeout")])
    outcome = run_diff(str(before), str(after))
    assert outcome.exit_code == 1
    assert 'status: "completed" -> "failed"' in outcome.output
    assert "output: 1 -> (absent)" in outcome.output
    assert 'error: (absent) -> {"code":"timeout"}' in outcome.output


def test_result_on_one_side_only_differs(tmp_path: Path) -> None:
    before = write(
        tmp_path / "b.jsonl", [request("a"), result("a", output=1), request("b"), result("b", output=2)]
    )
    after = write(
        tmp_path / "a.jsonl", [replayed("a", "a2", result("a2", output=1)), replayed("b", "b2", None)]
    )
    outcome = run_diff(str(before), str(after))
    assert outcome.exit_code == 1
    assert "- b (demo/greet): result only in" in outcome.output
    reverse = run_diff(str(after), str(before))
    assert reverse.exit_code == 1
    assert "+ b (demo/greet): result only in" in reverse.output


def test_request_missing_from_the_replay_counts_as_one_side_only(tmp_path: Path) -> None:
    before = write(tmp_path / "b.jsonl", [request("a"), result("a", output=1)])
    after = write(tmp_path / "a.jsonl", [])
    assert run_diff(str(before), str(after)).exit_code == 1


def test_unanswered_on_both_sides_is_not_a_difference(tmp_path: Path) -> None:
    before = write(tmp_path / "b.jsonl", [request("a")])
    after = write(tmp_path / "a.jsonl", [replayed("a", "a2", None)])
    outcome = run_diff(str(before), str(after))
    assert outcome.exit_code == 0
    assert "1 unanswered on both sides" in outcome.output


def test_results_for_unrecorded_requests_are_set_aside(tmp_path: Path) -> None:
    # The recording started after request "old" was published: its result is not comparable.
    before = write(tmp_path / "b.jsonl", [result("old", output=0), request("a"), result("a", output=1)])
    after = write(tmp_path / "a.jsonl", [replayed("a", "a2", result("a2", output=1))])
    outcome = run_diff(str(before), str(after))
    assert outcome.exit_code == 0, outcome.output
    assert "(1 results in" in outcome.output


def test_results_only_files_pair_by_execution_id_and_last_result_wins(tmp_path: Path) -> None:
    before = write(tmp_path / "b.jsonl", [result("a", output=0), result("a", output=1)])
    after = write(tmp_path / "a.jsonl", [result("a", output=1)])
    assert run_diff(str(before), str(after)).exit_code == 0


def test_ignore_paths_drop_volatile_fields(tmp_path: Path) -> None:
    out_before = {"greeting": "hi", "timestamp": 1, "items": [{"id": "x", "v": 1}, {"id": "y", "v": 2}]}
    out_after = {"greeting": "hi", "timestamp": 2, "items": [{"id": "p", "v": 1}, {"id": "q", "v": 2}]}
    before = write(tmp_path / "b.jsonl", [result("a", output=out_before)])
    after = write(tmp_path / "a.jsonl", [result("a", output=out_after)])
    assert run_diff(str(before), str(after)).exit_code == 1
    outcome = run_diff(
        str(before), str(after), "--ignore", "output.timestamp", "--ignore", "/output/items/*/id"
    )
    assert outcome.exit_code == 0, outcome.output


def test_booleans_and_numbers_are_not_confused(tmp_path: Path) -> None:
    before = load_results(write(tmp_path / "b.jsonl", [result("a", output=True)]))
    after = load_results(write(tmp_path / "a.jsonl", [result("a", output=1)]))
    assert diff_results(before, after).differs


def test_project_and_parse_path() -> None:
    assert parse_path("output.a.b") == ["output", "a", "b"]
    assert parse_path("/output/a") == ["output", "a"]
    data = {"status": "completed", "output": {"a": 1, "b": [1, 2]}, "duration_ms": 5, "worker": "w"}
    assert project(data, [["output", "b", "0"]]) == {
        "status": "completed",
        "output": {"a": 1, "b": [None, 2]},
    }


def test_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    good = write(tmp_path / "good.jsonl", [])
    outcome = run_diff(str(bad), str(good))
    assert outcome.exit_code == 2
    assert "bad.jsonl:1" in outcome.output
