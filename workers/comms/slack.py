"""Slack: ``slack/send-message`` (Web API ``chat.postMessage`` with a bot token)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, bearer, call, provider_failure, unexpected_response

__all__ = ["SendMessageInput", "SendMessageOutput", "send_message"]

PROVIDER = "slack"
KEY = "SLACK_API_KEY"


class SendMessageInput(CatalogInput):
    slackChannel: str = Field(title="Channel", description="Channel name (`#general`) or id (`C0123456789`).")
    slackMessage: str = Field(title="Message", description="The message text (Slack mrkdwn).")


class SendMessageOutput(BaseModel):
    success: bool = True
    ts: str = Field(description="Timestamp id of the posted message.")
    channel: str = Field(description="Id of the channel it was posted to.")


@builtin(
    "slack/send-message",
    domain="comms",
    name="Send Slack Message",
    description="Posts a message to a Slack channel.",
    input_model=SendMessageInput,
    output_model=SendMessageOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def send_message(data: SendMessageInput, ctx: ExecutionContext) -> SendMessageOutput:
    key = ctx.credentials[KEY]
    response = await call(
        ctx,
        PROVIDER,
        "POST",
        "/chat.postMessage",
        headers=bearer(key),
        json={"channel": data.slackChannel, "text": data.slackMessage},
        secrets=[key],
    )
    try:
        body: Any = response.json()
    except ValueError:
        raise unexpected_response(PROVIDER, response, "body is not JSON") from None
    if not isinstance(body, dict):
        raise unexpected_response(PROVIDER, response, "body is not an object")
    if not body.get("ok"):
        # Slack answers HTTP 200 with {"ok": false, "error": "<code>"} for API errors.
        code = str(body.get("error") or "unknown_error")
        raise provider_failure(
            PROVIDER,
            response.status_code,
            response.text,
            secrets=[key],
            retryable=code in {"ratelimited", "internal_error", "fatal_error", "service_unavailable"},
            message=code,
            extra={"slack_error": code},
        )
    if not isinstance(body.get("ts"), str) or not isinstance(body.get("channel"), str):
        raise unexpected_response(PROVIDER, response, "no ts/channel")
    return SendMessageOutput(ts=body["ts"], channel=body["channel"])
