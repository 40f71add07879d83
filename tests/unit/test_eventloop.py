"""FLEET_EVENT_LOOP: which loop a worker process runs on (shared/eventloop.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.errors import ConfigError
from shared.eventloop import loop_name, run


async def _which() -> str:
    return loop_name()


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    assert run(_which(), "auto") == "uvloop"
    assert run(_which(), "uvloop") == "uvloop"


def test_asyncio_keeps_the_standard_loop() -> None:
    assert run(_which(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert run(_which(), "auto") == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        run(_which(), "uvloop")


def test_fleet_worker_takes_the_loop_from_the_environment() -> None:
    # An invalid choice is refused by the CLI before anything starts: the option is wired.
    done = subprocess.run(
        [sys.executable, "-m", "shared.tools.cli.main", "worker", "ai", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "FLEET_EVENT_LOOP" in done.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "shared.tools.cli.main", "worker", "ai"],
        capture_output=True,
        text=True,
        env={"FLEET_EVENT_LOOP": "trio", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert refused.returncode == 2
    assert "trio" in refused.stderr
