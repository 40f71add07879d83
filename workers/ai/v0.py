"""v0 Platform API: create a chat (generates an app), send a follow-up message."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, bearer, call_json, unexpected_response

__all__ = ["create_chat", "send_message"]

PROVIDER = "v0"
KEY = "V0_API_KEY"
DOMAIN = "ai"


def _demo_url(chat: dict[str, Any]) -> str | None:
    latest = chat.get("latestVersion")
    if isinstance(latest, dict) and isinstance(latest.get("demoUrl"), str):
        return str(latest["demoUrl"])
    demo = chat.get("demo")
    return demo if isinstance(demo, str) else None


def _chat(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise unexpected_response(PROVIDER, None, "not a chat")
    return body


class CreateChatInput(CatalogInput):
    message: str = Field(title="Message", description="What to build.")
    system: str | None = Field(default=None, title="System prompt")


class CreateChatOutput(BaseModel):
    success: bool = True
    chatId: str
    url: str | None = None
    demoUrl: str | None = None


@builtin(
    "v0/create-chat",
    domain=DOMAIN,
    name="Create Chat",
    description="Starts a v0 chat that generates an app; returns its chat and demo URLs.",
    input_model=CreateChatInput,
    output_model=CreateChatOutput,
    credentials=(KEY,),
    timeout_seconds=600,
)
async def create_chat(data: CreateChatInput, ctx: ExecutionContext) -> CreateChatOutput:
    key = ctx.credentials[KEY]
    payload: dict[str, Any] = {"message": data.message}
    if data.system:
        payload["system"] = data.system
    chat = _chat(
        await call_json(ctx, PROVIDER, "POST", "/v1/chats", headers=bearer(key), json=payload, secrets=[key])
    )
    url = chat.get("webUrl") or chat.get("url")
    return CreateChatOutput(
        chatId=chat["id"], url=url if isinstance(url, str) else None, demoUrl=_demo_url(chat)
    )


class SendMessageInput(CatalogInput):
    chatId: str = Field(title="Chat ID")
    message: str = Field(title="Message")


class SendMessageOutput(BaseModel):
    success: bool = True
    chatId: str
    demoUrl: str | None = None


@builtin(
    "v0/send-message",
    domain=DOMAIN,
    name="Send Message",
    description="Sends a follow-up message to a v0 chat.",
    input_model=SendMessageInput,
    output_model=SendMessageOutput,
    credentials=(KEY,),
    timeout_seconds=600,
)
async def send_message(data: SendMessageInput, ctx: ExecutionContext) -> SendMessageOutput:
    key = ctx.credentials[KEY]
    chat = _chat(
        await call_json(
            ctx,
            PROVIDER,
            "POST",
            f"/v1/chats/{quote(data.chatId, safe='')}/messages",
            headers=bearer(key),
            json={"message": data.message},
            secrets=[key],
        )
    )
    return SendMessageOutput(chatId=data.chatId, demoUrl=_demo_url(chat))
