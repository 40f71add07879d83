"""Registered functions route to their domain's topic without the caller naming it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from redis.asyncio import Redis

from shared.client import FleetClient
from shared.errors import UnknownFunction
from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.settings import Settings
from shared.tools.cli.main import cli


async def test_client_routes_registered_functions_by_the_registry(
    registry_settings: Callable[..., Settings], pool: Any
) -> None:
    settings = registry_settings()
    await FunctionRepository(pool).register(
        FunctionDefinition(
            slug="acme/hook", domain="http", execution_type="http", webhook_url="https://h.example/"
        )
    )
    async with FleetClient(settings=settings) as client:
        assert await client.route("acme/hook") == settings.topic_for("http")
        assert await client.route("system/echo") == settings.topic_for("ai")  # built-ins first
        assert await client.route("acme/hook", "comms") == settings.topic_for("comms")  # explicit wins
        with pytest.raises(UnknownFunction):
            await client.route("acme/nowhere")
    without_registry = settings.model_copy(update={"database_url": None})
    async with FleetClient(settings=without_registry) as client:
        with pytest.raises(UnknownFunction):
            await client.route("acme/hook")


async def test_fleet_publish_routes_a_registered_function_and_refuses_an_unknown_one(
    registry_settings: Callable[..., Settings], pool: Any, redis: Redis
) -> None:
    settings = registry_settings()
    await FunctionRepository(pool).register(
        FunctionDefinition(slug="acme/resize", domain="oci", execution_type="oci", image_ref="ghcr.io/a/r:1")
    )
    env = {
        "FLEET_REDIS_URL": settings.redis_url or "",
        "FLEET_DATABASE_URL": settings.database_url or "",
        "FLEET_TOPIC_PREFIX": settings.topic_prefix,
        "FLEET_RESULTS_TOPIC": settings.results_topic,
        "FLEET_HOME": str(settings.home),
    }
    runner = CliRunner()
    # The CLI runs its own event loop: call it from a thread, as a terminal would from outside.
    published = await asyncio.to_thread(
        runner.invoke, cli, ["publish", "acme/resize", "--input", '{"w": 10}'], env=env
    )
    assert published.exit_code == 0, published.output
    execution_id = published.output.strip()
    entries = await redis.xrange(settings.topic_for("oci"))
    assert [execution_id.encode() in fields[b"data"] for _, fields in entries] == [True]

    unknown = await asyncio.to_thread(runner.invoke, cli, ["publish", "acme/nowhere"], env=env)
    assert unknown.exit_code == 1
    assert "unknown_function" in unknown.output
