"""Stripe API (form-encoded): create and get customers, create invoices.

Writes carry an ``Idempotency-Key`` derived from the execution id, so a redelivered request
cannot create a second customer or invoice: ``create-customer`` sends the execution id itself;
``create-invoice`` makes several calls and sends ``<execution id>:invoice``,
``<execution id>:item:<n>`` and ``<execution id>:finalize`` (Stripe rejects one key reused with
different parameters)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, model_validator

from shared.functions import ExecutionContext, builtin
from workers.providers import (
    CatalogInput,
    JsonObject,
    LaxBool,
    LaxInt,
    bearer,
    call_json,
    parse_json_text,
    provider_failure,
    unexpected_response,
)

__all__ = ["create_customer", "create_invoice", "get_customer"]

PROVIDER = "stripe"
KEY = "STRIPE_SECRET_KEY"
DOMAIN = "dev-tools"
CURRENCY = "usd"


def _headers(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    headers = bearer(key)
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def _metadata(form: dict[str, str], metadata: dict[str, Any] | None) -> None:
    for name, value in (metadata or {}).items():
        form[f"metadata[{name}]"] = value if isinstance(value, str) else str(value)


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise unexpected_response(PROVIDER, None, what)
    if body.get("deleted") is True:
        raise provider_failure(PROVIDER, 404, "", retryable=False, message=f"{what} {body['id']} is deleted")
    return body


# ------------------------------------------------------------------------- create-customer
class CreateCustomerInput(CatalogInput):
    email: str = Field(title="Email")
    name: str | None = Field(default=None, title="Name")
    phone: str | None = Field(default=None, title="Phone")
    description: str | None = Field(default=None, title="Description")
    metadata: JsonObject | None = Field(default=None, title="Metadata", description="JSON object of strings.")


class CreateCustomerOutput(BaseModel):
    success: bool = True
    id: str
    email: str | None = None


@builtin(
    "stripe/create-customer",
    domain=DOMAIN,
    name="Create Customer",
    description="Creates a Stripe customer (idempotent per execution).",
    input_model=CreateCustomerInput,
    output_model=CreateCustomerOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def create_customer(data: CreateCustomerInput, ctx: ExecutionContext) -> CreateCustomerOutput:
    key = ctx.credentials[KEY]
    form: dict[str, str] = {"email": data.email}
    for name in ("name", "phone", "description"):
        value = getattr(data, name)
        if value:
            form[name] = value
    _metadata(form, data.metadata)
    customer = _object(
        await call_json(
            ctx,
            PROVIDER,
            "POST",
            "/v1/customers",
            headers=_headers(key, ctx.execution_id),
            data=form,
            secrets=[key],
        ),
        "customer",
    )
    return CreateCustomerOutput(id=customer["id"], email=customer.get("email"))


# ------------------------------------------------------------------------- get-customer
class GetCustomerInput(CatalogInput):
    customerId: str | None = Field(default=None, title="Customer ID", description="`cus_…`; or give email.")
    email: str | None = Field(default=None, title="Email", description="Looked up when no customer id.")

    @model_validator(mode="after")
    def _one_of(self) -> GetCustomerInput:
        if not self.customerId and not self.email:
            raise ValueError("give customerId or email")
        return self


class GetCustomerOutput(BaseModel):
    success: bool = True
    id: str
    email: str | None = None
    name: str | None = None
    created: int | None = None


@builtin(
    "stripe/get-customer",
    domain=DOMAIN,
    name="Get Customer",
    description="Fetches a Stripe customer by id, or the first one with an e-mail address.",
    input_model=GetCustomerInput,
    output_model=GetCustomerOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def get_customer(data: GetCustomerInput, ctx: ExecutionContext) -> GetCustomerOutput:
    key = ctx.credentials[KEY]
    if data.customerId:
        body = await call_json(
            ctx,
            PROVIDER,
            "GET",
            f"/v1/customers/{quote(data.customerId, safe='')}",
            headers=_headers(key),
            secrets=[key],
        )
    else:
        found = await call_json(
            ctx,
            PROVIDER,
            "GET",
            "/v1/customers",
            headers=_headers(key),
            params={"email": data.email, "limit": 1},
            secrets=[key],
        )
        rows = found.get("data") if isinstance(found, dict) else None
        if not isinstance(rows, list):
            raise unexpected_response(PROVIDER, None, "no customer list")
        if not rows:
            raise provider_failure(PROVIDER, 404, "", retryable=False, message="no customer with that email")
        body = rows[0]
    customer = _object(body, "customer")
    return GetCustomerOutput(
        id=customer["id"],
        email=customer.get("email"),
        name=customer.get("name"),
        created=customer.get("created"),
    )


# ------------------------------------------------------------------------- create-invoice
class LineItem(BaseModel):
    description: str
    amount: LaxInt = Field(description="Unit amount in cents.")
    quantity: LaxInt = Field(default=1, ge=1)


LineItems = Annotated[
    list[LineItem],
    BeforeValidator(parse_json_text),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "description": "JSON array of {description, amount, quantity}"},
                {"type": "array", "items": LineItem.model_json_schema()},
            ]
        }
    ),
]


class CreateInvoiceInput(CatalogInput):
    customerId: str = Field(title="Customer ID")
    description: str | None = Field(default=None, title="Description")
    lineItems: LineItems = Field(
        min_length=1,
        title="Line items",
        description='JSON array, e.g. [{"description": "Item", "amount": 1000, "quantity": 1}] (cents, USD).',
    )
    daysUntilDue: LaxInt = Field(default=30, ge=0, title="Days until due")
    autoAdvance: LaxBool = Field(default=True, title="Auto-advance", description="Finalize the invoice.")
    collectionMethod: Literal["send_invoice", "charge_automatically"] = Field(
        default="send_invoice", title="Collection method"
    )
    metadata: JsonObject | None = Field(default=None, title="Metadata")


class CreateInvoiceOutput(BaseModel):
    success: bool = True
    id: str
    number: str | None = None
    hostedInvoiceUrl: str | None = None
    status: str | None = None


@builtin(
    "stripe/create-invoice",
    domain=DOMAIN,
    name="Create Invoice",
    description="Creates a Stripe invoice with line items and finalizes it (idempotent per execution).",
    input_model=CreateInvoiceInput,
    output_model=CreateInvoiceOutput,
    credentials=(KEY,),
    timeout_seconds=60,
)
async def create_invoice(data: CreateInvoiceInput, ctx: ExecutionContext) -> CreateInvoiceOutput:
    key = ctx.credentials[KEY]
    base = ctx.execution_id
    form: dict[str, str] = {
        "customer": data.customerId,
        "collection_method": data.collectionMethod,
        "auto_advance": "true" if data.autoAdvance else "false",
    }
    if data.collectionMethod == "send_invoice":
        # Stripe rejects days_until_due for charge_automatically.
        form["days_until_due"] = str(data.daysUntilDue)
    if data.description:
        form["description"] = data.description
    _metadata(form, data.metadata)
    invoice = _object(
        await call_json(
            ctx,
            PROVIDER,
            "POST",
            "/v1/invoices",
            headers=_headers(key, f"{base}:invoice"),
            data=form,
            secrets=[key],
        ),
        "invoice",
    )
    invoice_id = invoice["id"]
    for index, item in enumerate(data.lineItems):
        await call_json(
            ctx,
            PROVIDER,
            "POST",
            "/v1/invoiceitems",
            headers=_headers(key, f"{base}:item:{index}"),
            data={
                "customer": data.customerId,
                "invoice": invoice_id,
                "description": item.description,
                "quantity": str(item.quantity),
                "unit_amount": str(item.amount),
                "currency": CURRENCY,
            },
            secrets=[key],
        )
    if data.autoAdvance:
        invoice = _object(
            await call_json(
                ctx,
                PROVIDER,
                "POST",
                f"/v1/invoices/{quote(invoice_id, safe='')}/finalize",
                headers=_headers(key, f"{base}:finalize"),
                secrets=[key],
            ),
            "invoice",
        )
    return CreateInvoiceOutput(
        id=invoice["id"],
        number=invoice.get("number"),
        hostedInvoiceUrl=invoice.get("hosted_invoice_url"),
        status=invoice.get("status"),
    )
