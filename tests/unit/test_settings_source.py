"""Every knob is a setting: CLI-only options became fields, and `fleet config --effective` shows
what commands really use (the URLs a running `fleet up` recorded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.settings import Settings
from shared.tools.cli.main import cli


def test_transport_and_burst_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TRANSPORT", "dapr")
    monkeypatch.setenv("FLEET_BURST", "true")
    settings = Settings()
    assert settings.transport == "dapr"
    assert settings.burst is True
    monkeypatch.setenv("FLEET_TRANSPORT", "carrier-pigeon")
    with pytest.raises(ValueError, match="transport"):
        Settings()


def test_config_effective_shows_the_urls_of_a_running_fleet_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FLEET_REDIS_URL", "FLEET_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    runner = CliRunner()

    before = json.loads(runner.invoke(cli, ["config", "--effective"]).output)
    assert before["redis_url"] is None
    assert before["database_url"] is None

    # A live `fleet up` (this process stands in for its pid) recorded its servers.
    state = {
        "pid": os.getpid(),
        "redis_url": "unix:///tmp/fleet-test/valkey.sock",
        "database_url": "postgresql://fleet@127.0.0.1:54329/fleet",
    }
    (tmp_path / "up.json").write_text(json.dumps(state))
    after = json.loads(runner.invoke(cli, ["config", "--effective"]).output)
    assert after["redis_url"] == state["redis_url"]
    assert after["database_url"] == state["database_url"]

    # An explicit setting still wins over the recorded one.
    monkeypatch.setenv("FLEET_REDIS_URL", "redis://127.0.0.1:6390/0")
    explicit = json.loads(runner.invoke(cli, ["config", "--effective"]).output)
    assert explicit["redis_url"] == "redis://127.0.0.1:6390/0"
    assert explicit["database_url"] == state["database_url"]
