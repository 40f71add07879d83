"""Resend: ``resend/send-email`` (POST /emails), idempotent per execution."""

from __future__ import annotations

from pydantic import BaseModel, Field

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, CommaList, bearer, call_json, unexpected_response

__all__ = ["SendEmailInput", "SendEmailOutput", "send_email"]

PROVIDER = "resend"
KEY = "RESEND_API_KEY"
#: The default sender. Not declared (declared keys are mandatory); used when the runtime
#: supplies it, e.g. once optional credentials exist.
FROM_KEY = "RESEND_FROM_EMAIL"


class SendEmailInput(CatalogInput):
    emailFrom: str | None = Field(
        default=None, title="From", description="Sender; defaults to the integration's RESEND_FROM_EMAIL."
    )
    emailTo: CommaList = Field(title="To", description="Recipient address(es), comma-separated.")
    emailSubject: str = Field(title="Subject")
    emailBody: str = Field(title="Body", description="Plain-text body.")
    emailCc: CommaList | None = Field(default=None, title="CC")
    emailBcc: CommaList | None = Field(default=None, title="BCC")
    emailReplyTo: CommaList | None = Field(default=None, title="Reply-To")
    emailScheduledAt: str | None = Field(
        default=None, title="Schedule at", description="ISO 8601 time to send at (or natural language)."
    )
    emailTopicId: str | None = Field(default=None, title="Topic ID", description="Collected, not sent.")
    idempotencyKey: str | None = Field(
        default=None,
        title="Idempotency key",
        description="Resend Idempotency-Key; defaults to the execution id, so a redelivered "
        "request never sends the e-mail twice.",
    )


class SendEmailData(BaseModel):
    id: str


class SendEmailOutput(BaseModel):
    success: bool = True
    data: SendEmailData


@builtin(
    "resend/send-email",
    domain="comms",
    name="Send Email",
    description="Sends an e-mail through Resend.",
    input_model=SendEmailInput,
    output_model=SendEmailOutput,
    credentials=(KEY,),
    optional_credentials=(FROM_KEY,),
    timeout_seconds=30,
)
async def send_email(data: SendEmailInput, ctx: ExecutionContext) -> SendEmailOutput:
    key = ctx.credentials[KEY]
    sender = data.emailFrom or ctx.credentials.get(FROM_KEY)
    if not sender:
        raise ExecutionFailed(
            "emailFrom is required when the integration has no RESEND_FROM_EMAIL",
            code=ErrorCode.INVALID_INPUT,
            details=[{"path": "/emailFrom", "message": "Field required"}],
        )
    if not data.emailTo:
        raise ExecutionFailed(
            "emailTo names no recipient",
            code=ErrorCode.INVALID_INPUT,
            details=[{"path": "/emailTo", "message": "at least one address is required"}],
        )
    body: dict[str, object] = {
        "from": sender,
        "to": data.emailTo,
        "subject": data.emailSubject,
        "text": data.emailBody,
    }
    if data.emailCc:
        body["cc"] = data.emailCc
    if data.emailBcc:
        body["bcc"] = data.emailBcc
    if data.emailReplyTo:
        body["reply_to"] = data.emailReplyTo
    if data.emailScheduledAt:
        body["scheduled_at"] = data.emailScheduledAt
    answer = await call_json(
        ctx,
        PROVIDER,
        "POST",
        "/emails",
        headers={**bearer(key), "Idempotency-Key": data.idempotencyKey or ctx.execution_id},
        json=body,
        secrets=[key],
    )
    if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
        raise unexpected_response(PROVIDER, None, "no email id")
    return SendEmailOutput(data=SendEmailData(id=answer["id"]))
