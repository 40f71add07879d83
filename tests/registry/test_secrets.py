"""The secret store in PostgreSQL: values encrypted with FLEET_SECRETS_KEY (round trip, rotation,
refusals without a key), a registry worker's last source of credentials (scrubbed like every
other secret), the credentials_missing message naming what to set, and `fleet secrets`, which
never prints a value."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from shared.assemble import create_worker
from shared.registry.models import FunctionDefinition
from shared.registry.repository import FunctionRepository
from shared.registry.secret_keys import (
    NoSecretsKey,
    SecretCipher,
    UnreadableSecret,
    ensure_key_file,
    load_keys,
)
from shared.registry.secrets import InvalidSecret, SecretStore
from shared.settings import Settings
from shared.tools.cli.main import cli
from tests.conftest import read_results, running
from tests.registry.conftest import publish
from tests.registry.fixtures_functions import TEST_FUNCTIONS

KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def settings_with(tmp_path: Path, key: str | None) -> Settings:
    return Settings(home=tmp_path / "home", secrets_key=key)


async def test_round_trip_lists_names_and_users_never_values(pool: Any, tmp_path: Path) -> None:
    await FunctionRepository(pool).register(
        FunctionDefinition.model_validate(
            {
                "slug": "acme/notify",
                "execution_type": "http",
                "domain": "http",
                "webhook_url": "https://example.com/hook",
                "credentials": ["ACME_TOKEN"],
            }
        )
    )
    store = SecretStore.from_settings(pool, settings_with(tmp_path, KEY_A))
    value = f"acme-{uuid.uuid4().hex}"
    info, created = await store.put("ACME_TOKEN", value, by="test")
    assert created
    assert info.used_by == ("acme/notify",)
    assert await store.get("ACME_TOKEN") == value

    replacement = f"acme-{uuid.uuid4().hex}"
    info, created = await store.put("ACME_TOKEN", replacement)
    assert not created
    assert info.updated_at >= info.created_at
    assert await store.get("ACME_TOKEN") == replacement
    assert await store.get("NOBODY") is None

    everything = await pool.fetchval("SELECT string_agg(t::text, '\n') FROM fleet_secrets t")
    assert value not in everything
    assert replacement not in everything
    listed = [i.as_json() for i in await store.listing()]
    assert [(i["name"], i["used_by"]) for i in listed] == [("ACME_TOKEN", ["acme/notify"])]
    assert replacement not in json.dumps(listed)

    assert await store.delete("ACME_TOKEN")
    assert not await store.delete("ACME_TOKEN")
    assert await store.get("ACME_TOKEN") is None


async def test_rotation_reencrypts_with_the_first_key(pool: Any, tmp_path: Path) -> None:
    old = SecretStore.from_settings(pool, settings_with(tmp_path, KEY_A))
    await old.put("ONE_KEY", "value-one")
    await old.put("TWO_KEY", "value-two")
    before = dict(await pool.fetch("SELECT name, token FROM fleet_secrets"))

    # Only the new key: the old tokens are unreadable, named, value not shown.
    with pytest.raises(UnreadableSecret, match="ONE_KEY"):
        await SecretStore.from_settings(pool, settings_with(tmp_path, KEY_B)).get("ONE_KEY")

    both = SecretStore.from_settings(pool, settings_with(tmp_path, f"{KEY_B}, {KEY_A}"))
    assert await both.get("ONE_KEY") == "value-one"  # decrypted by the second key
    assert await both.rotate() == 2
    after = dict(await pool.fetch("SELECT name, token FROM fleet_secrets"))
    assert all(after[name] != before[name] for name in before)

    new_only = SecretStore.from_settings(pool, settings_with(tmp_path, KEY_B))
    assert await new_only.get("ONE_KEY") == "value-one"
    assert await new_only.get("TWO_KEY") == "value-two"
    with pytest.raises(UnreadableSecret):
        await old.get("TWO_KEY")


async def test_rotation_is_all_or_nothing(pool: Any, tmp_path: Path) -> None:
    await SecretStore.from_settings(pool, settings_with(tmp_path, KEY_A)).put("A_KEY", "value-a")
    await SecretStore.from_settings(pool, settings_with(tmp_path, KEY_B)).put("B_KEY", "value-b")
    before = dict(await pool.fetch("SELECT name, token FROM fleet_secrets"))
    with pytest.raises(UnreadableSecret, match="B_KEY"):
        await SecretStore.from_settings(pool, settings_with(tmp_path, KEY_A)).rotate()
    assert dict(await pool.fetch("SELECT name, token FROM fleet_secrets")) == before


async def test_without_a_key_the_store_refuses_to_write(pool: Any, tmp_path: Path) -> None:
    store = SecretStore.from_settings(pool, settings_with(tmp_path, None))
    assert not store.has_key
    with pytest.raises(NoSecretsKey, match="FLEET_SECRETS_KEY") as refused:
        await store.put("SOME_KEY", "some-value")
    assert "fleet secrets keygen" in str(refused.value)
    assert await pool.fetchval("SELECT count(*) FROM fleet_secrets") == 0


async def test_a_token_moved_to_another_name_does_not_decrypt(pool: Any, tmp_path: Path) -> None:
    store = SecretStore.from_settings(pool, settings_with(tmp_path, KEY_A))
    await store.put("REAL_KEY", "the-real-value")
    await store.put("OTHER_KEY", "other-value")
    await pool.execute(
        "UPDATE fleet_secrets SET token = (SELECT token FROM fleet_secrets WHERE name = 'REAL_KEY') "
        "WHERE name = 'OTHER_KEY'"
    )
    with pytest.raises(UnreadableSecret, match="OTHER_KEY"):
        await store.get("OTHER_KEY")


async def test_names_and_values_are_checked(pool: Any, tmp_path: Path) -> None:
    store = SecretStore.from_settings(pool, settings_with(tmp_path, KEY_A))
    with pytest.raises(InvalidSecret, match="credential key"):
        await store.put("bad name", "long-enough")
    with pytest.raises(InvalidSecret, match="at least 4"):
        await store.put("SHORT_KEY", "abc")


def test_a_bad_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key 2 of 2 is not a Fernet key") as refused:
        SecretCipher.from_settings(settings_with(tmp_path, f"{KEY_A},not-a-key-at-all"))
    assert "not-a-key-at-all" not in str(refused.value)


def test_the_local_key_file_is_private_and_read_when_no_key_is_set(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, None)
    assert load_keys(settings) == []
    path, created = ensure_key_file(settings)
    assert created
    assert path == tmp_path / "home" / "secrets.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = load_keys(settings)
    assert len(keys) == 1
    assert ensure_key_file(settings) == (path, False)
    assert load_keys(settings) == keys  # kept, not replaced
    assert load_keys(settings_with(tmp_path, KEY_B)) == [KEY_B]  # the setting wins


async def test_a_worker_resolves_a_credential_from_the_store_and_scrubs_it(
    registry_settings: Callable[..., Settings],
    redis: Redis,
    pool: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLEET_SECRET_PLANTED_TOKEN", raising=False)
    secret = f"stored-{uuid.uuid4().hex}"
    settings = registry_settings(secrets_key=KEY_A)
    await SecretStore.from_settings(pool, settings).put("PLANTED_TOKEN", secret)
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        ok = await publish(redis, settings, "testing/leak", {})
        bad = await publish(redis, settings, "testing/leak", {"fail": True})
        results = {
            r["data"]["execution_id"]: r["data"]
            for r in await read_results(redis, settings.results_topic, 2, timeout=30)
        }
    raw = b"".join(fields[b"data"] for _, fields in await redis.xrange(settings.results_topic)).decode()
    history = await pool.fetchval("SELECT string_agg(t::text, '\n') FROM function_executions t")
    # The function got the stored value (it echoes it) and every copy of it was masked.
    assert results[ok]["status"] == "completed"
    assert results[ok]["output"] == {"said": "the token is ***", "nested": {"token": "***"}}
    assert results[bad]["error"]["message"] == "failed with ***"
    assert secret not in raw
    assert secret not in (history or "")


async def test_the_environment_overrides_the_store(
    registry_settings: Callable[..., Settings],
    redis: Redis,
    pool: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = registry_settings(secrets_key=KEY_A, secrets_cache_ttl=0)
    await SecretStore.from_settings(pool, settings).put("PLANTED_TOKEN", "from-the-store")
    monkeypatch.setenv("FLEET_SECRET_PLANTED_TOKEN", "from-the-environment")
    worker = create_worker("ai", settings, table=TEST_FUNCTIONS)
    from shared.runtime.credentials import CredentialsExtension

    credentials = worker.extension(CredentialsExtension)
    assert credentials is not None
    assert [s.name for s in credentials.resolver.sources][-2:] == ["env", "database"]
    async with running(worker):
        found, _ = await credentials.resolver.resolve(["PLANTED_TOKEN"])
        assert found == {"PLANTED_TOKEN": "from-the-environment"}
        monkeypatch.delenv("FLEET_SECRET_PLANTED_TOKEN")
        found, _ = await credentials.resolver.resolve(["PLANTED_TOKEN"])
        assert found == {"PLANTED_TOKEN": "from-the-store"}


async def test_credentials_missing_says_what_to_set(
    registry_settings: Callable[..., Settings],
    redis: Redis,
    pool: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLEET_SECRET_PLANTED_TOKEN", raising=False)
    settings = registry_settings(secrets_key=KEY_A)
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        await publish(redis, settings, "testing/leak", {})
        (result,) = await read_results(redis, settings.results_topic, 1, timeout=30)
    error = result["data"]["error"]
    assert error["code"] == "credentials_missing"
    assert error["details"] == {"missing": ["PLANTED_TOKEN"]}
    assert "FLEET_SECRET_PLANTED_TOKEN" in error["message"]
    assert "`fleet secrets set PLANTED_TOKEN`" in error["message"]


async def test_a_stored_value_this_worker_cannot_decrypt_says_why(
    registry_settings: Callable[..., Settings],
    redis: Redis,
    pool: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLEET_SECRET_PLANTED_TOKEN", raising=False)
    await SecretStore.from_settings(pool, registry_settings(secrets_key=KEY_A)).put(
        "PLANTED_TOKEN", "stored-with-key-a"
    )
    settings = registry_settings(secrets_key=KEY_B)
    async with running(create_worker("ai", settings, table=TEST_FUNCTIONS)):
        await publish(redis, settings, "testing/leak", {})
        (result,) = await read_results(redis, settings.results_topic, 1, timeout=30)
    error = result["data"]["error"]
    assert error["code"] == "credentials_missing"
    assert "decrypts it" in error["message"]
    assert "stored-with-key-a" not in json.dumps(result)


def _fleet(args: list[str], env: dict[str, str], input: str | None = None) -> Any:
    result = CliRunner().invoke(cli, args, env=env, input=input)
    return result


async def test_the_cli_never_prints_a_value(migrated_url: str, pool: Any, tmp_path: Path) -> None:
    import asyncio

    env = {
        "FLEET_DATABASE_URL": migrated_url,
        "FLEET_HOME": str(tmp_path / "home"),
        "FLEET_SECRETS_KEY": KEY_A,
    }
    piped, prompted = f"piped-{uuid.uuid4().hex}", f"prompted-{uuid.uuid4().hex}"

    def run(args: list[str], input: str | None = None) -> Any:
        return _fleet(args, env, input)

    outputs = []
    done = await asyncio.to_thread(run, ["secrets", "set", "PIPED_KEY", "--value-stdin"], piped + "\n")
    assert done.exit_code == 0, done.output
    assert "secret PIPED_KEY stored" in done.output
    outputs.append(done.output)
    done = await asyncio.to_thread(run, ["secrets", "set", "PROMPTED_KEY"], f"{prompted}\n{prompted}\n")
    assert done.exit_code == 0, done.output
    outputs.append(done.output)
    settings = Settings(home=tmp_path / "home", secrets_key=KEY_A)
    store = SecretStore.from_settings(pool, settings)
    assert await store.get("PIPED_KEY") == piped  # the newline was the line's, not the value's
    assert await store.get("PROMPTED_KEY") == prompted

    listed = await asyncio.to_thread(run, ["secrets", "list"])
    assert listed.exit_code == 0
    assert listed.output.splitlines()[0].split() == ["NAME", "CREATED", "UPDATED", "USED", "BY"]
    as_json = await asyncio.to_thread(run, ["secrets", "list", "--json"])
    assert [s["name"] for s in json.loads(as_json.output)] == ["PIPED_KEY", "PROMPTED_KEY"]
    rotated = await asyncio.to_thread(
        _fleet, ["secrets", "rotate"], {**env, "FLEET_SECRETS_KEY": f"{KEY_B},{KEY_A}"}
    )
    assert rotated.exit_code == 0, rotated.output
    assert "re-encrypted 2 secrets" in rotated.output
    deleted = await asyncio.to_thread(run, ["secrets", "delete", "PIPED_KEY"])
    assert deleted.exit_code == 0
    missing = await asyncio.to_thread(run, ["secrets", "delete", "PIPED_KEY"])
    assert missing.exit_code == 1
    assert "no secret 'PIPED_KEY'" in missing.output
    outputs += [listed.output, as_json.output, rotated.output, deleted.output, missing.output]
    for output in outputs:
        assert piped not in output
        assert prompted not in output

    # No key: refused before a value is asked for, saying what to set; nothing stored.
    no_key = {k: v for k, v in env.items() if k != "FLEET_SECRETS_KEY"}
    refused = await asyncio.to_thread(_fleet, ["secrets", "set", "NEW_KEY", "--value-stdin"], no_key, "x" * 9)
    assert refused.exit_code == 2
    assert "FLEET_SECRETS_KEY" in refused.output
    assert "xxxxxxxxx" not in refused.output
    assert await store.get("NEW_KEY") is None
