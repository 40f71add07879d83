"""Provider clients belong to a worker: built from its Settings (shown by ``fleet config``),
provided by the provider extension of the ai, comms and dev-tools packages, closed with it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.contract import ExecutionResult
from shared.errors import ConfigError
from shared.settings import Settings
from shared.tools.cli.config import settings_rows
from tests.catalog.conftest import run_function
from tests.fakes.providers import APIS, CREDENTIALS, FakeProvider
from workers import ai, comms, dev_tools
from workers.providers import ProviderClients, ProvidersExtension

SLACK_INPUT = {"slackChannel": "#ops", "slackMessage": "hi"}


@pytest.fixture
async def two_slacks(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeProvider, FakeProvider]]:
    key = CREDENTIALS["slack"]["SLACK_API_KEY"]
    monkeypatch.setenv("FLEET_SECRET_SLACK_API_KEY", key)
    first = await FakeProvider("slack", APIS["slack"], key).start()
    second = await FakeProvider("slack", APIS["slack"], key).start()
    yield first, second
    await first.close()
    await second.close()


async def test_two_workers_in_one_process_reach_their_own_provider(
    two_slacks: tuple[FakeProvider, FakeProvider],
) -> None:
    first_fake, second_fake = two_slacks
    first = ProvidersExtension(Settings(slack_base_url=first_fake.base_url)).clients
    second = ProvidersExtension(Settings(slack_base_url=second_fake.base_url)).clients

    async def send(clients: ProviderClients) -> ExecutionResult:
        settings = clients.settings
        return await run_function("slack/send-message", SLACK_INPUT, settings=settings, clients=clients)

    try:
        one = await send(first)
        two = await send(second)
        assert one.status == "completed", one.error
        assert two.status == "completed", two.error
        assert len(first_fake.requests) == 1
        assert len(second_fake.requests) == 1

        await first.aclose()
        with pytest.raises(ConfigError, match="closed"):
            await send(first)
        assert len(first_fake.requests) == 1  # a closed worker's clients send nothing

        again = await send(second)
        assert again.status == "completed", again.error
        assert len(second_fake.requests) == 2
    finally:
        await first.aclose()
        await second.aclose()


def test_each_catalog_package_gives_its_worker_provider_clients() -> None:
    settings = Settings(slack_base_url="http://slack.internal/api")
    for package in (ai, comms, dev_tools):
        (extension,) = package.extensions(settings)
        assert isinstance(extension, ProvidersExtension)
        assert extension.clients.settings.provider_base_url("slack") == "http://slack.internal/api"
    assert ai.extensions(settings)[0] is not ai.extensions(settings)[0]  # one pool per worker


def test_fleet_config_lists_the_provider_settings() -> None:
    rows = {env: (default, meaning) for env, default, meaning in settings_rows()}
    assert rows["FLEET_OPENAI_BASE_URL"] == ("https://api.openai.com", "Base URL of the openai API.")
    assert rows["FLEET_PROVIDER_CONNECT_TIMEOUT"] == ("10.0", "Seconds to connect to a provider API.")
    assert rows["FLEET_FAL_POLL_INTERVAL"][0] == "unset"
