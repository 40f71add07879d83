"""Secrets are masked in the rendered log line, tracebacks included: logging configured as a
worker does, a secret registered as the credentials middleware does (in its worker's registry,
the one the worker's tasks log with), then an exception whose message holds it, logged through
structlog (JSON and console) and through stdlib logging."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from shared.credentials import CredentialResolver, EnvSecretSource, SecretRegistry, working_for
from shared.logging import configure_logging
from shared.settings import Settings


@pytest.fixture
def configure() -> Iterator[Callable[[str], None]]:
    """``configure(log_format)``: logging as a worker configures it. pytest's own root handlers
    (added for the test's call) are removed first, so ``basicConfig`` installs the worker's;
    the root logger and structlog are restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def configure(log_format: str) -> None:
        root.handlers.clear()
        configure_logging(Settings(log_format=log_format, log_level="info"))

    try:
        yield configure
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


@pytest.fixture
def registry() -> Iterator[SecretRegistry]:
    """A worker's registry of secrets, made this task's as ``Worker.run`` does for its tasks."""
    registry = SecretRegistry()
    token = working_for(registry)
    try:
        yield registry
    finally:
        token.var.reset(token)


async def registered_secret(shape: str, registry: SecretRegistry) -> str:
    """A fresh secret resolved (and therefore registered in ``registry``) the way a function's
    credentials are."""
    tail = uuid.uuid4().hex[:12]
    value = {
        "plain": f"Zq9vTOKEN-{tail}",
        # A quote, a backslash and a non-ASCII letter: spelt differently in JSON and in reprs.
        "escaped": f'Zq9v"q\\b-w\u00f6rd-{tail}',
    }[shape]
    resolver = CredentialResolver([EnvSecretSource({"FLEET_SECRET_API_KEY": value})], registry)
    found, _ = await resolver.resolve(["API_KEY"])
    assert found == {"API_KEY": value}
    return value


def log_a_failure(secret: str) -> None:
    try:
        raise RuntimeError(f"provider refused key {secret}")
    except RuntimeError:
        structlog.get_logger("test").exception("call failed", url="https://api.example/", attempt=1)
        structlog.get_logger("test").error("echoed", key=secret)
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)


def assert_masked(text: str, secret: str) -> None:
    assert secret[:4] not in text
    assert "***" in text


@pytest.mark.parametrize("shape", ["plain", "escaped"])
async def test_json_lines_mask_secrets_in_exception_messages_and_tracebacks(
    shape: str,
    configure: Callable[[str], None],
    registry: SecretRegistry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("json")
    secret = await registered_secret(shape, registry)
    log_a_failure(secret)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert_masked(err, secret)
    events: list[dict[str, Any]] = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["call failed", "echoed"]
    # Decoded, the JSON holds no spelling of the secret either.
    assert_masked(events[0]["exception"], secret)
    assert "RuntimeError: provider refused key ***" in events[0]["exception"]
    assert events[1]["key"] == "***"
    # The library record (stdlib logging) went through the worker's handler, traceback and all.
    assert "asyncio: Task exception was never retrieved" in err


@pytest.mark.parametrize("shape", ["plain", "escaped"])
async def test_console_lines_mask_secrets_in_exception_messages_and_tracebacks(
    shape: str,
    configure: Callable[[str], None],
    registry: SecretRegistry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("console")
    secret = await registered_secret(shape, registry)
    log_a_failure(secret)
    err = capsys.readouterr().err
    assert "call failed" in err
    assert err.count("Traceback (most recent call last)") == 2
    assert "RuntimeError: provider refused key ***" in err
    assert_masked(err, secret)


async def test_a_line_outside_any_worker_is_masked_with_the_registry_given_to_configure_logging(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A process that resolves secrets outside a worker's tasks passes their registry."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    process = SecretRegistry()
    secret = await registered_secret("plain", process)
    try:
        root.handlers.clear()
        configure_logging(Settings(log_format="json", log_level="info"), secrets=process)
        log_a_failure(secret)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "RuntimeError: provider refused key ***" in err
    assert_masked(err, secret)
