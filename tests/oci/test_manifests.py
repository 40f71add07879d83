"""Names, labels and resources of the Job manifest; the output/failure mapping of the protocol."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.credentials import SecretRegistry
from shared.errors import ExecutionFailed
from shared.registry.models import FunctionRecord
from tests.oci.conftest import knowing, make_ctx
from tests.oci.schemas import validate
from workers.oci.manifests import dns_label, job_manifest, job_name, label_value
from workers.oci.protocol import (
    OciFunction,
    Resources,
    RunOutcome,
    credential_env,
    interpret,
    parse_output,
    run_secrets,
)

NO_SECRETS = SecretRegistry()

LABEL = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@given(st.text(max_size=300))
def test_label_values_are_always_valid_and_distinct_when_cut(text: str) -> None:
    value = label_value(text)
    assert LABEL.match(value)
    assert 0 < len(value) <= 63


def test_label_value_examples() -> None:
    assert label_value("acme/greet") == "acme.greet"
    assert label_value("exec 1/ä") == "exec-1"
    assert label_value("-x-") == "x"
    long_a, long_b = "a" * 80, "a" * 79 + "b"
    assert label_value(long_a) != label_value(long_b)
    assert len(label_value(long_a)) == 63


@given(st.text(min_size=1, max_size=200), st.integers(min_value=1, max_value=10_000))
def test_job_names_are_dns_labels_short_enough_for_pods(execution_id: str, attempt: int) -> None:
    name = job_name("Acme_Corp/Some.Very-Long-Action-Name-Indeed", make_ctx(execution_id, attempt=attempt))
    assert DNS_LABEL.match(name)
    assert len(name) <= 47
    assert job_name("acme/x", make_ctx(execution_id, attempt=attempt)) != job_name(
        "acme/x", make_ctx(execution_id, attempt=attempt + 1)
    )


def test_dns_label() -> None:
    assert dns_label("Acme_Corp--x", 8) == "acme-cor"


def test_registry_resources_override_the_defaults(oci_settings: Any) -> None:
    settings = oci_settings()
    record = FunctionRecord(
        id="1",
        slug="acme/big",
        name="Big",
        description="",
        plugin_id="acme",
        version=1,
        domain="oci",
        execution_type="oci",
        image_ref="r.example/big:1",
        extra={"resources": {"limits": {"memory": "4Gi"}, "requests": {"cpu": "2"}}},
    )
    fn = OciFunction.from_record(record, settings)
    assert fn.timeout_seconds == settings.default_timeout_seconds
    job = job_manifest(fn, make_ctx(), settings, env={"INPUT": "{}"}, secret_env={}, secret_name=None)
    validate(job, "job-batch-v1.json")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "4Gi"},
    }
    assert "command" not in container
    assert "workingDir" not in container
    assert job["spec"]["activeDeadlineSeconds"] == 300


def test_credential_env_names() -> None:
    assert credential_env(["github:token", "SLACK_API_KEY", "9lives"]) == {
        "github:token": "GITHUB_TOKEN",
        "SLACK_API_KEY": "SLACK_API_KEY",
        "9lives": "_9LIVES",
    }
    with pytest.raises(ExecutionFailed) as caught:
        credential_env(["a-b", "A_B"])
    assert caught.value.code == "backend_unavailable"
    with pytest.raises(ExecutionFailed):
        credential_env(["input"])


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('log\n{"a": 1}\n\n  \n', {"a": 1}),
        ('{"a": 1}\r\n', {"a": 1}),
    ],
)
def test_parse_output(stdout: str, expected: dict[str, Any]) -> None:
    assert parse_output(stdout, "x/y", secrets=NO_SECRETS) == expected


@pytest.mark.parametrize("stdout", ["", "\n\n", "plain", "[1]", '"s"', "1", '{"a": 1} trailing'])
def test_parse_output_refuses(stdout: str) -> None:
    with pytest.raises(ExecutionFailed) as caught:
        parse_output(stdout, "x/y", secrets=NO_SECRETS)
    assert caught.value.code == "invalid_output"


def test_oom_killed_is_named() -> None:
    fn = OciFunction(
        slug="x/y",
        image_ref="i",
        timeout_seconds=1,
        resources=Resources("1", "1", "1", "1"),
    )
    with pytest.raises(ExecutionFailed) as caught:
        interpret(
            fn,
            RunOutcome(exit_code=137, stdout="", log="", reason="OOMKilled"),
            tail_lines=5,
            secrets=NO_SECRETS,
        )
    assert caught.value.message == "x/y exited with code 137 (OOMKilled)"
    assert caught.value.details == {"exit_code": 137, "log_tail": [], "reason": "OOMKilled"}


def test_a_runs_text_is_scrubbed_of_the_calls_own_credentials_and_of_the_known_ones() -> None:
    """The call's credential values are masked even when the registry of known secrets never saw
    them (a value resolved by another worker's resolver, or registered after the run began)."""
    own, known_value = "c4ll-own-t0ken-51de", "kn0wn-w0rker-v4lue-77"
    resources = knowing(known_value)  # the worker's registry, as its credentials extension fills it
    secrets = run_secrets(make_ctx(credentials={"API_TOKEN": own}, resources=resources))
    fn = OciFunction(slug="x/y", image_ref="i", timeout_seconds=1, resources=Resources("1", "1", "1", "1"))
    failed = RunOutcome(
        exit_code=1,
        stdout=f'{{"error": {{"message": "refused {own}"}}}}',
        log=f"using {own}\nand {known_value}\n",
    )
    with pytest.raises(ExecutionFailed) as caught:
        interpret(fn, failed, tail_lines=5, secrets=secrets)
    assert caught.value.message == "x/y failed: refused ***"
    assert caught.value.details["log_tail"] == ["using ***", "and ***"]

    with pytest.raises(ExecutionFailed) as invalid:
        interpret(fn, RunOutcome(exit_code=0, stdout=f"token={own}", log=""), tail_lines=5, secrets=secrets)
    assert invalid.value.code == "invalid_output"
    assert invalid.value.details == {"last_line": "token=***"}
    # The known registry itself is left as it was (the call's values are this run's only).
    assert resources.get(SecretRegistry).scrub(own) == own
