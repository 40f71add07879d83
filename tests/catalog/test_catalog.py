"""Every catalog function through the worker's middleware chain against its provider fake:
happy path (exact request, exact output), missing credential, 4xx, and 5xx-then-success."""

from __future__ import annotations

import pytest

from shared.assemble import load_functions
from shared.contract import ErrorCode
from shared.domains import get_domain
from shared.functions import BUILTINS
from tests.catalog.cases import CASES, Case, check_requests
from tests.catalog.conftest import Invoke, StartFake
from tests.fakes.providers import CREDENTIALS

CATALOG_DOMAINS = ("ai", "comms", "dev-tools")
by_id = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])


def test_every_catalog_builtin_has_a_case() -> None:
    for domain in CATALOG_DOMAINS:
        load_functions(domain)
    registered = {s.slug for s in BUILTINS if s.domain in CATALOG_DOMAINS}
    assert registered, "no catalog built-ins registered"
    assert registered <= {c.slug for c in CASES}


def test_cases_name_registered_functions_of_their_domain() -> None:
    load_functions()
    for case in CASES:
        spec = BUILTINS.get(case.slug)
        assert spec is not None, case.slug
        assert spec.domain in CATALOG_DOMAINS
        assert get_domain(spec.domain).name == spec.domain
        assert spec.credentials, f"{case.slug} declares no credential"
        assert set(spec.credentials) <= set(CREDENTIALS[case.provider])
        assert spec.input_model is not None
        assert spec.output_model is not None
        assert spec.timeout_seconds is not None


@by_id
async def test_happy_path(case: Case, fake: StartFake, invoke: Invoke) -> None:
    api = await fake(case.provider)
    if case.setup is not None:
        case.setup(api)
    result = await invoke(case.slug, case.input)
    assert result.status == "completed", result.error
    assert result.output == case.output
    check_requests(api.requests, case.requests)
    spec = BUILTINS.get(case.slug)
    assert spec is not None
    assert spec.output_model is not None
    spec.output_model.model_validate(result.output)


@by_id
async def test_missing_credential_fails_before_any_request(
    case: Case, fake: StartFake, invoke: Invoke
) -> None:
    api = await fake(case.provider, credentials=False)
    result = await invoke(case.slug, case.input)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.code == ErrorCode.CREDENTIALS_MISSING
    spec = BUILTINS.get(case.slug)
    assert spec is not None
    assert result.error.details == {"missing": list(spec.credentials)}
    assert api.requests == []


@by_id
async def test_client_error_is_a_provider_error_not_retried(
    case: Case, fake: StartFake, invoke: Invoke
) -> None:
    api = await fake(case.provider)
    if case.setup is not None:
        case.setup(api)
    api.fail_next(400, {"error": {"message": "something is off"}})
    result = await invoke(case.slug, case.input)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.retryable is False
    assert result.error.details["status"] == 400
    assert result.error.details["provider"] == case.provider
    assert "something is off" in result.error.message
    assert len(api.requests) == 1
    for secret in CREDENTIALS[case.provider].values():
        assert secret not in result.model_dump_json()


@by_id
async def test_server_error_then_success_is_retried(case: Case, fake: StartFake, invoke: Invoke) -> None:
    api = await fake(case.provider)
    if case.setup is not None:
        case.setup(api)
    api.fail_next(503, {"error": {"message": "overloaded"}}, headers={"Retry-After": "0"})
    result = await invoke(case.slug, case.input)
    assert result.status == "completed", result.error
    assert result.output == case.output
    assert len(api.requests) == len(case.requests) + 1
    first, second = api.requests[0], api.requests[1]
    assert (first.method, first.path, first.body) == (second.method, second.path, second.body)
