"""Plugin aliases of the origin builder (function-catalog.md section 2): ``ai/*`` and
``ai-gateway/*`` name ``openai/*``, in the built-ins table, the registry and client routing; a
function registered under the aliased name itself keeps it."""

from __future__ import annotations

from typing import Any

from shared.client import FleetClient
from shared.functions import BUILTINS, FunctionTable, canonical_slug
from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.registry.resolver import RegistryResolver
from shared.settings import Settings
from tests.registry.fixtures_functions import TEST_FUNCTIONS


def test_canonical_slugs() -> None:
    assert canonical_slug("ai/generate-text") == "openai/generate-text"
    assert canonical_slug("ai-gateway/generate-image") == "openai/generate-image"
    assert canonical_slug("openai/generate-text") == "openai/generate-text"
    assert canonical_slug("aim/generate-text") == "aim/generate-text"
    assert canonical_slug("ai") == "ai"
    assert canonical_slug("ai/") == "ai/"


def test_the_built_ins_answer_to_their_aliases() -> None:
    from shared.assemble import load_functions

    load_functions("ai")
    spec = BUILTINS.get("ai/generate-text")
    assert spec is not None
    assert spec.slug == "openai/generate-text"
    assert BUILTINS.get("ai-gateway/generate-image") is BUILTINS.get("openai/generate-image")
    assert BUILTINS.get("ai/no-such-thing") is None


def test_an_exact_name_wins_over_an_alias() -> None:
    table = FunctionTable()
    for spec in (BUILTINS.get("openai/generate-text"), BUILTINS.get("system/echo")):
        assert spec is not None
        table.add(spec)
    echo = BUILTINS.get("system/echo")
    assert echo is not None
    import dataclasses

    table.add(dataclasses.replace(echo, slug="ai/generate-text"))
    assert table.get("ai/generate-text") is not None
    assert table.get("ai/generate-text").slug == "ai/generate-text"  # type: ignore[union-attr]
    assert table.get("ai-gateway/generate-text").slug == "openai/generate-text"  # type: ignore[union-attr]


def test_the_client_routes_an_alias_to_its_functions_domain(settings: Settings) -> None:
    client = FleetClient(settings=settings)
    assert client.topic_for("ai/generate-text") == settings.topic_for("ai")


async def test_the_registry_resolves_aliases_and_keeps_exact_names(pool: Any) -> None:
    repo = FunctionRepository(pool)
    await repo.register(
        FunctionDefinition(
            slug="openai/moderate", domain="http", execution_type="http", webhook_url="https://example.com/m"
        )
    )
    await repo.register(
        FunctionDefinition(
            slug="ai/own", domain="http", execution_type="http", webhook_url="https://example.com/own"
        )
    )
    resolver = RegistryResolver(pool, ttl=60, table=TEST_FUNCTIONS)
    moderate = await resolver.resolve("ai/moderate")
    assert moderate is not None
    assert moderate.slug == "openai/moderate"
    gateway = await resolver.resolve("ai-gateway/moderate")
    assert gateway is not None
    assert gateway.slug == "openai/moderate"
    own = await resolver.resolve("ai/own")
    assert own is not None
    assert own.slug == "ai/own"
    assert await resolver.resolve("ai/nothing") is None


async def test_a_worker_answers_a_request_named_by_an_alias(make_settings: Any, redis: Any) -> None:
    import dataclasses

    from shared.assemble import create_worker
    from tests.conftest import read_results, running
    from tests.registry.conftest import publish

    echo = BUILTINS.get("system/echo")
    assert echo is not None
    table = FunctionTable()
    table.add(dataclasses.replace(echo, slug="openai/echo", domain="ai"))
    settings = make_settings()
    async with running(create_worker("ai", settings, resolver=table)):
        execution_id = await publish(redis, settings, "ai-gateway/echo", {"said": "hi"})
        (result,) = await read_results(redis, settings.results_topic, 1)
    data = result["data"]
    assert data["execution_id"] == execution_id
    assert data["status"] == "completed"
    assert data["output"] == {"said": "hi"}
    assert data["function"] == "ai-gateway/echo"  # answered under the name it was asked by
