"""docs/asyncapi.yaml: valid AsyncAPI 3.0, generated from the contract models, and current."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from shared import contract
from shared.domains import DOMAINS
from shared.tools import asyncapi
from shared.tools.asyncapi import DEFAULT_PATH, REF_TEMPLATE, build_document, render
from shared.tools.cli.main import cli
from shared.tools.manifests.render import default_settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "tests" / "schemas" / "asyncapi" / "asyncapi-3.0.0-without-id.json"
CHECKED_IN = ROOT / DEFAULT_PATH
REGENERATE = f"regenerate it: fleet contract asyncapi --out {DEFAULT_PATH}"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft7Validator, schema["$schema"]
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(default_settings())


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _errors(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> list[str]:
    # Through JSON, as a consumer of the YAML would see it (no tuples or other Python-only types).
    plain = json.loads(json.dumps(document))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(plain)]


def test_the_document_is_valid_asyncapi_3(validator: jsonschema.protocols.Validator) -> None:
    checked_in = yaml.safe_load(CHECKED_IN.read_text(encoding="utf-8"))
    assert checked_in["asyncapi"] == "3.0.0"
    assert _errors(validator, checked_in) == []


@pytest.mark.parametrize(
    ("what", "path", "value"),
    [
        ("an AsyncAPI 2 action", ("operations", "sendResult", "action"), "publish"),
        ("a channel address that is not a string", ("channels", "results", "address"), 42),
        ("a server without a protocol", ("servers", "redis", "protocol"), None),
        ("an unknown top-level field", ("publish",), {"x": 1}),
        ("a payload schema of the wrong shape", ("components", "schemas", "RequestEvent", "type"), 7),
    ],
)
def test_the_validator_rejects_a_broken_copy(
    validator: jsonschema.protocols.Validator,
    document: dict[str, Any],
    what: str,
    path: tuple[str, ...],
    value: Any,
) -> None:
    broken = copy.deepcopy(document)
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    assert _errors(validator, broken), f"{what} was accepted"


def test_the_checked_in_document_is_current() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == render(build_document(default_settings())), (
        f"{DEFAULT_PATH} is out of date with shared/contract.py, shared/domains.py or the settings "
        f"defaults; {REGENERATE}"
    )


def test_a_model_change_changes_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    class RequestData(contract.RequestData):
        priority: int = 0

    monkeypatch.setattr(asyncapi, "_MODELS", ((RequestData, "validation"), asyncapi._MODELS[1]))
    changed = build_document(default_settings())
    assert "priority" in changed["components"]["schemas"]["RequestData"]["properties"]
    assert render(changed) != CHECKED_IN.read_text(encoding="utf-8")


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    refs = _refs(document)
    assert len(refs) > 20
    for ref in refs:
        _resolve(document, ref)


def test_every_domain_has_a_request_and_a_dead_letter_channel(document: dict[str, Any]) -> None:
    settings = default_settings()
    channels = document["channels"]
    for domain in DOMAINS:
        topic = settings.topic_for(domain.name)
        requests = channels[f"requests.{domain.name}"]
        assert requests["address"] == topic
        assert requests["x-redis-stream"]["consumerGroup"] == settings.group_for(domain.name)
        assert list(requests["messages"]) == ["executionRequested"]
        dead_letters = channels[f"deadLetters.{domain.name}"]
        assert dead_letters["address"] == settings.dlq_for(topic)
        assert list(dead_letters["messages"]) == ["deadLetter"]
    assert channels["results"]["address"] == settings.results_topic
    assert len(channels) == 2 * len(DOMAINS) + 1


def test_the_fleet_receives_requests_and_sends_results_and_dead_letters(document: dict[str, Any]) -> None:
    by_channel: dict[str, set[str]] = {}
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"]
        by_channel.setdefault(channel, set()).add(operation["action"])
        # AsyncAPI 3: an operation's messages are messages of its own channel.
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), (channel, message)
    for domain in DOMAINS:
        assert by_channel[f"#/channels/requests.{domain.name}"] == {"receive"}
        assert by_channel[f"#/channels/deadLetters.{domain.name}"] == {"send"}
    assert by_channel["#/channels/results"] == {"send"}
    replies = {op["reply"]["channel"]["$ref"] for op in document["operations"].values() if "reply" in op}
    assert replies == {"#/channels/results"}


def _data_schema(document: dict[str, Any], message: str) -> dict[str, Any]:
    payload = _resolve(document, document["components"]["messages"][message]["payload"]["$ref"])
    schema = _resolve(document, payload["properties"]["data"]["$ref"])
    assert isinstance(schema, dict)
    return schema


def test_request_data_is_the_pydantic_models_schema(document: dict[str, Any]) -> None:
    expected = contract.RequestData.model_json_schema(ref_template=REF_TEMPLATE)
    assert _data_schema(document, "executionRequested") == expected


def test_result_data_is_the_pydantic_models_schema(document: dict[str, Any]) -> None:
    expected = contract.ExecutionResult.model_json_schema(mode="serialization", ref_template=REF_TEMPLATE)
    nested = expected.pop("$defs")
    assert _data_schema(document, "executionResult") == expected
    schemas = document["components"]["schemas"]
    assert nested == {name: schemas[name] for name in nested}
    assert schemas["ErrorCode"]["enum"] == [code.value for code in contract.ErrorCode]


def test_the_cloudevent_envelopes_carry_the_contracts_attributes(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    request, result = schemas["RequestEvent"], schemas["ResultEvent"]
    assert request["properties"]["type"]["enum"] == [
        contract.EVENT_REQUESTED,
        contract.DAPR_DEFAULT_EVENT_TYPE,
    ]
    assert result["properties"]["type"]["enum"] == [contract.EVENT_COMPLETED, contract.EVENT_FAILED]
    for event in (request, result):
        assert {"specversion", "id", "source", "type", "data"} <= set(event["required"])
        assert {"subject", "time", "datacontenttype", "traceparent", "tracestate"} <= set(event["properties"])
    assert "executionid" in result["required"]
    # The examples are what a validator of the payload schemas would accept.
    for name in ("executionRequested", "executionResult"):
        message = document["components"]["messages"][name]
        payload_schema = {
            **_resolve(document, message["payload"]["$ref"]),
            "components": document["components"],
        }
        for example in message["examples"]:
            jsonschema.Draft7Validator(payload_schema).validate(example["payload"])


def test_cli_prints_writes_and_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shell's settings must not leak into the document.
    monkeypatch.setenv("FLEET_RESULTS_TOPIC", "elsewhere.results")
    monkeypatch.setenv("FLEET_TOPIC_PREFIX", "elsewhere.")
    runner = CliRunner()
    expected = CHECKED_IN.read_text(encoding="utf-8")

    printed = runner.invoke(cli, ["contract", "asyncapi"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == expected

    target = tmp_path / "asyncapi.yaml"
    written = runner.invoke(cli, ["contract", "asyncapi", "--out", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_text(encoding="utf-8") == expected

    assert runner.invoke(cli, ["contract", "asyncapi", "--check", "--out", str(target)]).exit_code == 0

    target.write_text(expected.replace("functions.results", "functions.answers"), encoding="utf-8")
    stale = runner.invoke(cli, ["contract", "asyncapi", "--check", "--out", str(target)])
    assert stale.exit_code == 1
    assert "fleet contract asyncapi --out" in stale.stderr
    assert "functions.answers" in target.read_text(encoding="utf-8"), "--check must write nothing"


def test_cli_check_defaults_to_docs_asyncapi_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(cli, ["contract", "asyncapi", "--check"])
    assert missing.exit_code == 1
    assert "is missing" in missing.stderr
    (tmp_path / "docs").mkdir()
    (tmp_path / DEFAULT_PATH).write_text(CHECKED_IN.read_text(encoding="utf-8"), encoding="utf-8")
    assert runner.invoke(cli, ["contract", "asyncapi", "--check"]).exit_code == 0
