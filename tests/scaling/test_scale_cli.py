"""`fleet scale simulate`: the --json document's shape, trace files, and clear errors."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shared.tools.cli.main import cli

PROFILE_KEYS = {
    "profile",
    "spec",
    "requests",
    "replica_seconds",
    "peak_replicas",
    "cold_starts",
    "wait_p50_s",
    "wait_p99_s",
    "wait_max_s",
    "waited_over_bound",
    "wait_bound_s",
    "end_s",
}


def simulate(*args: str) -> Any:
    return CliRunner().invoke(cli, ["scale", "simulate", *args], catch_exceptions=False)


def test_json_shape_side_by_side_with_keda_defaults() -> None:
    result = simulate(
        "--generate", "burst", "--count", "200", "--domain", "oci", "--json", "--wait-bound", "30"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) == {"trace", "cold_start_s", "wait_bound_s", "domains"}
    assert doc["trace"]["requests"] == 200
    assert doc["wait_bound_s"] == 30
    [domain] = doc["domains"]
    assert (domain["name"], domain["concurrency"], domain["requests"]) == ("oci", 16, 200)
    assert [p["profile"] for p in domain["profiles"]] == ["cluster", "keda-defaults"]
    for p in domain["profiles"]:
        assert set(p) == PROFILE_KEYS
        assert p["cold_starts"] >= 1
        assert p["peak_replicas"] >= 1
        assert p["wait_p50_s"] <= p["wait_p99_s"] <= p["wait_max_s"]
    cluster, defaults = domain["profiles"]
    assert (cluster["spec"]["polling_interval"], defaults["spec"]["polling_interval"]) == (15, 30)
    assert {t["name"] for t in cluster["spec"]["triggers"]} == {"backlog", "in-flight"}
    # polling twice as often wakes the domain sooner
    assert cluster["wait_max_s"] < defaults["wait_max_s"]


def test_trace_file_per_domain_text_report(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("time,domain,duration\n1,ai,2\n2,http,1\n3,ai,2\n")
    result = simulate("--trace", str(trace), "--profile", "local")
    assert result.exit_code == 0, result.output
    assert "ai (concurrency 64, 2 requests)" in result.output
    assert "http (concurrency 128, 1 requests)" in result.output
    assert "local" in result.output
    assert "keda-defaults" not in result.output
    only = simulate("--trace", str(trace), "--domain", "http", "--json")
    assert [d["name"] for d in json.loads(only.output)["domains"]] == ["http"]


def test_usage_errors() -> None:
    neither = simulate()
    assert neither.exit_code == 2
    assert "exactly one of --trace" in neither.output
    wrong = simulate("--generate", "burst", "--steps", "3")
    assert wrong.exit_code == 2
    assert "--steps does not apply" in wrong.output
    unknown = simulate("--generate", "steady", "--domain", "nope")
    assert unknown.exit_code == 2
    assert "unknown domain 'nope'" in unknown.output


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = simulate("--generate", "burst", "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 2
    assert "--plot needs matplotlib: pip install 'function-fleet[plot]'" in result.output
    assert not (tmp_path / "p.png").exists()
