"""Secrets belong to a worker, not to the process: two workers in one process, each with its own
secrets file, each mask their own secret in results and in the lines their tasks log, and
neither knows the other's."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.credentials import SecretRegistry
from shared.logging import configure_logging
from shared.runtime.credentials import CredentialsExtension
from shared.settings import Settings
from tests.conftest import read_results, running
from tests.registry.conftest import publish
from tests.registry.fixtures_functions import TEST_FUNCTIONS


@pytest.fixture
def worker_logging() -> Iterator[Callable[[], None]]:
    """``worker_logging()`` configures logging as a worker process does (JSON lines on stderr:
    called in the test, where capsys captures stderr); pytest's root handlers, the root level
    and structlog are restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure() -> None:
        root.handlers.clear()
        configure_logging(Settings(log_format="json", log_level="info"))
        # The runtime's module-level loggers would otherwise keep this test's captured stderr
        # (closed after it) for the rest of the session.
        structlog.configure(cache_logger_on_first_use=False)

    try:
        yield configure
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def worker_settings(
    make_settings: Callable[..., Settings], tmp_path: Path, name: str, secret: str
) -> Settings:
    """Settings of worker ``name``: its own topics and results, and a secrets file of its own."""
    secrets_file = tmp_path / f"{name}-secrets.json"
    secrets_file.write_text(json.dumps({"PLANTED_TOKEN": secret}))
    base = make_settings()
    return make_settings(
        topic_prefix=f"{base.topic_prefix}{name}.",
        results_topic=f"{base.results_topic}.{name}",
        group_prefix=f"{base.group_prefix}{name}-",
        secrets_file=secrets_file,
    )


async def test_two_workers_in_one_process_each_scrub_their_own_secrets(
    make_settings: Callable[..., Settings],
    redis: Redis,
    tmp_path: Path,
    worker_logging: Callable[[], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    worker_logging()
    secret_a, secret_b = (f"Zq9v-{name}-{uuid.uuid4().hex[:12]}" for name in ("A", "B"))
    settings_a = worker_settings(make_settings, tmp_path, "a", secret_a)
    settings_b = worker_settings(make_settings, tmp_path, "b", secret_b)
    worker_a = create_worker("ai", settings_a, table=TEST_FUNCTIONS)
    worker_b = create_worker("ai", settings_b, table=TEST_FUNCTIONS)
    assert worker_a.extensions[0] is worker_a.extension(CredentialsExtension)  # first, always there
    async with running(worker_a), running(worker_b):
        leaked_a = await publish(redis, settings_a, "testing/leak", {})
        leaked_b = await publish(redis, settings_b, "testing/leak", {})
        # A echoes B's secret: B's secret is no secret of A's (a process-wide set would mask it).
        echoed = await publish(redis, settings_a, "system/echo", {"text": f"from b: {secret_b}"})
        results_a = {
            r["data"]["execution_id"]: r["data"]
            for r in await read_results(redis, settings_a.results_topic, 2)
        }
        results_b = {
            r["data"]["execution_id"]: r["data"]
            for r in await read_results(redis, settings_b.results_topic, 1)
        }
        # Each worker's registry is the one handlers reach through ctx.resources.
        assert worker_a.resources.get(SecretRegistry) is worker_a.secrets
        assert worker_b.resources.get(SecretRegistry) is worker_b.secrets
    assert results_a[leaked_a]["output"] == {"said": "the token is ***", "nested": {"token": "***"}}
    assert results_b[leaked_b]["output"] == {"said": "the token is ***", "nested": {"token": "***"}}
    assert results_a[echoed]["output"] == {"text": f"from b: {secret_b}"}
    assert worker_a.secrets.scrub(f"{secret_a} {secret_b}") == f"*** {secret_b}"
    assert worker_b.secrets.scrub(f"{secret_a} {secret_b}") == f"{secret_a} ***"

    lines: list[dict[str, Any]] = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    leaks = [line for line in lines if line["event"] == "about to leak"]
    assert len(leaks) == 2
    # Each worker's task logged its own secret, masked: the line and the event's values.
    assert all(line["token"] == "***" and line["text"] == "token is ***" for line in leaks)
    text = "\n".join(json.dumps(line) for line in lines)
    assert secret_a[:9] not in text
    assert secret_b[:9] not in text
