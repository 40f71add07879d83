"""Function-specific behaviour beyond the table in ``cases.py``: idempotency keys, provider
errors inside 2xx answers, multi-call flows, input coercion and refusals, schemas."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from shared.assemble import load_functions
from shared.contract import ErrorCode
from shared.functions import BUILTINS, ExecutionContext
from shared.resources import Resources
from shared.settings import Settings
from tests.catalog.cases import CASES, Case
from tests.catalog.conftest import Invoke, ProviderConfig, StartFake
from tests.fakes.providers import CREDENTIALS
from workers.providers import ProviderClients

EMAIL = {
    "emailFrom": "ops@acme.test",
    "emailTo": "a@acme.test",
    "emailSubject": "Hi",
    "emailBody": "Hello",
}
INVOICE = {"customerId": "cus_123", "lineItems": [{"description": "Seats", "amount": 100, "quantity": 2}]}


# ----------------------------------------------------------------------------- idempotency
async def test_resend_sends_the_execution_id_as_idempotency_key(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("resend")
    first = await invoke("resend/send-email", EMAIL, execution_id="exec-123")
    redelivered = await invoke("resend/send-email", EMAIL, execution_id="exec-123")
    assert first.status == redelivered.status == "completed"
    assert [r.headers["idempotency-key"] for r in api.requests] == ["exec-123", "exec-123"]


async def test_resend_idempotency_key_from_the_input_wins(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("resend")
    result = await invoke("resend/send-email", {**EMAIL, "idempotencyKey": "welcome/42"}, execution_id="e-1")
    assert result.status == "completed"
    assert api.only().headers["idempotency-key"] == "welcome/42"


async def test_stripe_create_customer_is_idempotent_per_execution(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    result = await invoke("stripe/create-customer", {"email": "ada@acme.test"}, execution_id="exec-9")
    assert result.status == "completed"
    assert api.only().headers["idempotency-key"] == "exec-9"


async def test_stripe_create_invoice_derives_one_key_per_call(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    items = [*INVOICE["lineItems"], {"description": "Setup", "amount": 500}]
    result = await invoke("stripe/create-invoice", {**INVOICE, "lineItems": items}, execution_id="exec-7")
    assert result.status == "completed", result.error
    assert [(r.path, r.headers["idempotency-key"]) for r in api.requests] == [
        ("/v1/invoices", "exec-7:invoice"),
        ("/v1/invoiceitems", "exec-7:item:0"),
        ("/v1/invoiceitems", "exec-7:item:1"),
        ("/v1/invoices/in_123/finalize", "exec-7:finalize"),
    ]


async def test_stripe_retried_call_keeps_its_idempotency_key(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    api.fail_next(500, {"error": {"message": "try again"}}, headers={"Retry-After": "0"})
    result = await invoke("stripe/create-customer", {"email": "ada@acme.test"}, execution_id="exec-5")
    assert result.status == "completed"
    assert [r.headers["idempotency-key"] for r in api.requests] == ["exec-5", "exec-5"]


# ----------------------------------------------------------------------------- stripe
async def test_stripe_invoice_without_auto_advance_is_left_a_draft(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    result = await invoke(
        "stripe/create-invoice",
        {
            **INVOICE,
            "autoAdvance": "false",
            "collectionMethod": "charge_automatically",
            "metadata": {"po": 7},
        },
    )
    assert result.status == "completed", result.error
    assert result.output == {
        "success": True,
        "id": "in_123",
        "number": None,
        "hostedInvoiceUrl": None,
        "status": "draft",
    }
    assert [r.path for r in api.requests] == ["/v1/invoices", "/v1/invoiceitems"]
    assert api.requests[0].form == {
        "customer": "cus_123",
        "collection_method": "charge_automatically",
        "auto_advance": "false",
        "metadata[po]": "7",
    }


async def test_stripe_invoice_line_items_are_validated(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    for bad in ("[]", "not json", '[{"amount": 1}]'):
        result = await invoke("stripe/create-invoice", {**INVOICE, "lineItems": bad})
        assert result.error is not None
        assert result.error.code == ErrorCode.INVALID_INPUT, bad
    assert api.requests == []


async def test_stripe_get_customer_by_id(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    result = await invoke("stripe/get-customer", {"customerId": "cus_9", "email": "ignored@acme.test"})
    assert result.output == {
        "success": True,
        "id": "cus_9",
        "email": "ada@acme.test",
        "name": "Ada",
        "created": 1700000000,
    }
    assert api.only().path == "/v1/customers/cus_9"


async def test_stripe_get_customer_needs_an_id_or_email(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    result = await invoke("stripe/get-customer", {"customerId": "", "email": ""})
    assert result.error is not None
    assert result.error.code == ErrorCode.INVALID_INPUT
    assert api.requests == []


async def test_stripe_get_customer_unknown_email(fake: StartFake, invoke: Invoke) -> None:
    await fake("stripe")
    result = await invoke("stripe/get-customer", {"email": "nobody@acme.test"})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.details["status"] == 404
    assert result.error.retryable is False


# ----------------------------------------------------------------------------- 2xx errors
@pytest.mark.parametrize(("slack_error", "retryable"), [("channel_not_found", False), ("ratelimited", True)])
async def test_slack_ok_false_is_a_provider_error(
    fake: StartFake, invoke: Invoke, slack_error: str, retryable: bool
) -> None:
    api = await fake("slack")
    api.reply("POST", "/chat.postMessage", {"ok": False, "error": slack_error})
    result = await invoke("slack/send-message", {"slackChannel": "#nope", "slackMessage": "hi"})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.retryable is retryable
    assert result.error.details["status"] == 200
    assert result.error.details["slack_error"] == slack_error
    assert slack_error in result.error.message


async def test_linear_graphql_errors_are_provider_errors(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("linear")
    api.reply("POST", "/graphql", {"errors": [{"message": "Argument Validation Error"}], "data": None})
    result = await invoke("linear/find-issues", {"linearStatus": "done"})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert "Argument Validation Error" in result.error.message
    assert result.error.retryable is False


async def test_firecrawl_success_false_is_a_provider_error(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("firecrawl")
    api.reply("POST", "/v1/scrape", {"success": False, "error": "Site blocked"})
    result = await invoke("firecrawl/scrape", {"url": "https://blocked.test"})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert "Site blocked" in result.error.message


async def test_unexpected_answer_shape_is_a_provider_error(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("openai")
    api.reply("POST", "/v1/images/generations", {"data": []})
    result = await invoke("openai/generate-image", {"imagePrompt": "x"})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert "unexpected response" in result.error.message


async def test_superagent_guard_accepts_content_as_json_text(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("superagent")
    content = '{"classification": "allow", "violation_types": [], "cwe_codes": []}'
    api.reply("POST", "/api/guard", {"choices": [{"message": {"content": content}}]})
    result = await invoke("superagent/guard", {"text": "hello"})
    assert result.output == {
        "classification": "allow",
        "violationTypes": [],
        "cweCodes": [],
        "reasoning": None,
    }


async def test_superagent_redact_falls_back_to_the_input(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("superagent")
    api.reply("POST", "/api/redact", {"choices": [{"message": {"content": ""}}]})
    result = await invoke("superagent/redact", {"text": "nothing here"})
    assert result.output == {"redactedText": "nothing here", "reasoning": None}
    assert api.only().json == {"text": "nothing here"}


# ----------------------------------------------------------------------------- multi-step flows
async def test_fal_polls_the_queue_until_completed(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("fal")
    states = iter(["IN_QUEUE", "IN_PROGRESS", "COMPLETED"])
    api.reply("GET", "/{model:.+}/requests/{id}/status", lambda r: {"status": next(states)})
    result = await invoke("fal/generate-image", {"prompt": "x"})
    assert result.status == "completed", result.error
    assert [(r.method, r.path) for r in api.requests] == [
        ("POST", "/fal-ai/flux/schnell"),
        ("GET", "/fal-ai/flux/schnell/requests/req-1/status"),
        ("GET", "/fal-ai/flux/schnell/requests/req-1/status"),
        ("GET", "/fal-ai/flux/schnell/requests/req-1/status"),
        ("GET", "/fal-ai/flux/schnell/requests/req-1"),
    ]
    assert all(r.headers["authorization"].startswith("Key ") for r in api.requests)


async def test_fal_never_follows_urls_to_another_host(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("fal")
    api.reply(
        "POST",
        "/{model:.+}",
        {"status": "IN_QUEUE", "status_url": "https://evil.test/s", "response_url": "https://evil.test/r"},
    )
    result = await invoke("fal/remove-background", {"imageUrl": "https://img.test/a.png"})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert "another host" in result.error.message
    assert len(api.requests) == 1


async def test_fal_gives_up_after_the_poll_budget(
    fake: StartFake, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.ai.fal as fal

    api = await fake("fal")
    api.reply("GET", "/{model:.+}/requests/{id}/status", {"status": "IN_PROGRESS"})
    original = fal.run_queue

    async def small_budget(*args: Any, **kwargs: Any) -> Any:
        return await original(*args, **{**kwargs, "max_polls": 3})

    monkeypatch.setattr(fal, "run_queue", small_budget)
    result = await invoke("fal/generate-video", {"prompt": "x"})
    assert result.error is not None
    assert result.error.code == ErrorCode.TIMEOUT
    assert result.error.retryable is True
    assert len(api.requests) == 4


async def test_linear_uses_the_configured_team_without_querying_teams(
    fake: StartFake, provider_config: ProviderConfig
) -> None:
    # LINEAR_TEAM_ID is optional, so not declared: used when the runtime supplies it.
    from workers.dev_tools import linear

    api = await fake("linear")
    clients = ProviderClients(Settings(**provider_config))
    resources = Resources()
    resources.provide(ProviderClients, clients)
    ctx = ExecutionContext(
        resources=resources,
        execution_id="e-1",
        function="linear/create-ticket",
        attempt=1,
        domain="dev-tools",
        credentials={"LINEAR_API_KEY": CREDENTIALS["linear"]["LINEAR_API_KEY"], "LINEAR_TEAM_ID": "team-42"},
    )
    data = linear.CreateTicketInput.model_validate({"ticketTitle": "T", "ticketPriority": 0})
    try:
        output = await linear.create_ticket(data, ctx)
    finally:
        await clients.aclose()
    assert output.data.id == "issue-1"
    assert api.only().json["variables"]["input"] == {"title": "T", "teamId": "team-42", "priority": 0}


async def test_linear_workspace_without_team(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("linear")
    api.reply("POST", "/graphql", {"data": {"teams": {"nodes": []}}})
    result = await invoke("linear/create-ticket", {"ticketTitle": "T"})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert "no team" in result.error.message


async def test_webflow_publish_without_domains_is_forced_to_the_subdomain(
    fake: StartFake, invoke: Invoke
) -> None:
    api = await fake("webflow")
    result = await invoke("webflow/publish-site", {"siteId": "s1", "publishToWebflowSubdomain": "false"})
    assert result.output == {"success": True, "data": {"publishedDomains": [], "publishedToSubdomain": True}}
    assert api.only().json == {"customDomains": [], "publishToWebflowSubdomain": True}


async def test_blob_put_with_random_suffix_sends_no_query(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("blob")
    result = await invoke("blob/put", {"pathname": "a/b.txt", "body": "x"})
    assert result.output is not None
    assert result.output["pathname"] == "a/b-Ab12Cd.txt"
    request = api.only()
    assert request.query == {}
    assert "x-content-type" not in request.headers


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("slug", "input", "path"),
    [
        (
            "github/update-issue",
            {"owner": "a", "repo": "b", "issueNumber": "3", "title": "", "state": ""},
            "/",
        ),
        ("clerk/update-user", {"userId": "user_1", "firstName": ""}, "/"),
        ("openai/generate-text", {"aiFormat": "object", "aiPrompt": "x"}, "/aiSchema"),
        ("anthropic/generate-text", {"aiFormat": "object", "aiPrompt": "x", "aiSchema": ""}, "/aiSchema"),
        ("resend/send-email", {**EMAIL, "emailFrom": ""}, "/emailFrom"),
        ("resend/send-email", {**EMAIL, "emailTo": " , "}, "/emailTo"),
    ],
)
async def test_requests_that_cannot_work_fail_invalid_input_before_any_call(
    fake: StartFake, invoke: Invoke, slug: str, input: dict[str, Any], path: str
) -> None:
    api = await fake(slug.split("/")[0])
    result = await invoke(slug, input)
    assert result.error is not None
    assert result.error.code == ErrorCode.INVALID_INPUT
    assert result.error.details[0]["path"] == path
    assert api.requests == []


@pytest.mark.parametrize(
    ("slug", "input", "path"),
    [
        ("github/list-issues", {"owner": "a", "repo": "b", "perPage": "lots"}, "/perPage"),
        ("github/list-issues", {"owner": "a", "repo": "b", "state": "merged"}, "/state"),
        ("github/get-issue", {"owner": "a", "repo": "b", "issueNumber": ""}, "/issueNumber"),
        ("slack/send-message", {"slackChannel": "#x", "slackMessage": "   "}, "/slackMessage"),
        ("fal/upscale-image", {"imageUrl": "https://i.test/a.png", "scale": "3"}, "/scale"),
        ("clerk/create-user", {"emailAddress": "a@b.test", "publicMetadata": "{oops"}, "/publicMetadata"),
    ],
)
async def test_invalid_input_names_the_field(
    fake: StartFake, invoke: Invoke, slug: str, input: dict[str, Any], path: str
) -> None:
    api = await fake(slug.split("/")[0])
    result = await invoke(slug, input)
    assert result.error is not None
    assert result.error.code == ErrorCode.INVALID_INPUT
    assert [v["path"] for v in result.error.details] == [path]
    assert api.requests == []


async def test_numbers_booleans_and_lists_arrive_as_native_json_too(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("github")
    result = await invoke(
        "github/list-issues",
        {"owner": "a", "repo": "b", "perPage": 5, "labels": ["bug", "ui"], "_context": {}},
    )
    assert result.status == "completed", result.error
    assert api.only().query == {"state": "open", "per_page": "5", "labels": "bug,ui"}


# ----------------------------------------------------------------------------- schemas
def _registered() -> list[Any]:
    load_functions()
    return [s for s in BUILTINS if s.domain in ("ai", "comms", "dev-tools")]


def test_input_schemas_carry_titles_defaults_and_enums() -> None:
    specs = _registered()
    per_domain: dict[str | None, int] = {}
    for spec in specs:
        per_domain[spec.domain] = per_domain.get(spec.domain, 0) + 1
    # the catalog's 37 plugin functions (16 ai, 2 comms, 10 dev-tools + 9 SaaS admin) + anthropic
    assert per_domain == {"ai": 17, "comms": 2, "dev-tools": 19}
    for spec in specs:
        assert spec.input_model is not None
        schema = spec.input_model.model_json_schema()
        for name, prop in schema.get("properties", {}).items():
            assert prop.get("title"), f"{spec.slug}.{name} has no title"
    github = BUILTINS.get("github/list-issues")
    assert github is not None
    assert github.input_model is not None
    props = github.input_model.model_json_schema()["properties"]
    assert props["perPage"]["default"] == 30
    assert props["state"]["default"] == "open"
    assert props["state"]["anyOf"][0]["enum"] == ["open", "closed", "all"]


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    """Validate like ``shared.validation`` does (draft 2020-12, format checks)."""
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(instance)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_orchestrator_inputs_and_outputs_match_the_published_schemas(case: Case) -> None:
    """What the origin's orchestrator sends (strings, blanks) passes the JSON Schema the
    registry publishes, and the output the function returns matches its output schema."""
    load_functions()
    spec = BUILTINS.get(case.slug)
    assert spec is not None
    assert spec.input_model is not None
    assert spec.output_model is not None
    _validate(case.input, spec.input_model.model_json_schema())
    _validate(case.output, spec.output_model.model_json_schema())


def test_blank_optional_fields_pass_the_schema_but_blank_required_ones_do_not() -> None:
    load_functions()
    spec = BUILTINS.get("github/update-issue")
    assert spec is not None
    assert spec.input_model is not None
    schema = spec.input_model.model_json_schema()
    _validate({"owner": "a", "repo": "b", "issueNumber": "1", "state": "", "labels": ""}, schema)
    with pytest.raises(jsonschema.ValidationError):
        _validate({"owner": "a", "repo": "b", "issueNumber": ""}, schema)


async def test_stripe_deleted_customer_is_not_found(fake: StartFake, invoke: Invoke) -> None:
    api = await fake("stripe")
    api.reply("GET", "/v1/customers/{id}", {"id": "cus_gone", "object": "customer", "deleted": True})
    result = await invoke("stripe/get-customer", {"customerId": "cus_gone"})
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_ERROR
    assert result.error.details["status"] == 404
    assert "deleted" in result.error.message


# ----------------------------------------------------------------------------- optional credentials
async def test_resend_falls_back_to_the_configured_sender(
    fake: StartFake, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await fake("resend")
    monkeypatch.setenv("FLEET_SECRET_RESEND_FROM_EMAIL", "Acme Ops <ops@acme.test>")
    result = await invoke("resend/send-email", {**EMAIL, "emailFrom": ""})
    assert result.status == "completed", result.error
    assert api.only().json["from"] == "Acme Ops <ops@acme.test>"


async def test_linear_uses_the_configured_team_when_there_is_one(
    fake: StartFake, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await fake("linear")
    monkeypatch.setenv("FLEET_SECRET_LINEAR_TEAM_ID", "team-configured")
    result = await invoke("linear/create-ticket", {"ticketTitle": "Broken", "ticketDescription": "x"})
    assert result.status == "completed", result.error
    bodies = [r.json for r in api.requests]
    assert any("team-configured" in str(body) for body in bodies)
