"""Clerk Backend API: get, create, update and delete users."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, JsonObject, bearer, call_json, unexpected_response

__all__ = ["create_user", "delete_user", "get_user", "update_user"]

PROVIDER = "clerk"
KEY = "CLERK_SECRET_KEY"
DOMAIN = "dev-tools"


class User(BaseModel):
    id: str
    firstName: str | None = None
    lastName: str | None = None
    primaryEmailAddress: str | None = None
    createdAt: int | None = None
    updatedAt: int | None = None


class UserOutput(BaseModel):
    success: bool = True
    data: User


def _user(raw: Any) -> UserOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise unexpected_response(PROVIDER, None, "not a user")
    primary = None
    for address in raw.get("email_addresses") or []:
        if isinstance(address, dict) and address.get("id") == raw.get("primary_email_address_id"):
            primary = address.get("email_address")
    return UserOutput(
        data=User(
            id=raw["id"],
            firstName=raw.get("first_name"),
            lastName=raw.get("last_name"),
            primaryEmailAddress=primary,
            createdAt=raw.get("created_at"),
            updatedAt=raw.get("updated_at"),
        )
    )


def _user_path(user_id: str) -> str:
    return f"/v1/users/{quote(user_id, safe='')}"


class UserIdInput(CatalogInput):
    userId: str = Field(title="User ID")


class MetadataFields(CatalogInput):
    publicMetadata: JsonObject | None = Field(
        default=None, title="Public metadata", description="JSON object, readable from the frontend."
    )
    privateMetadata: JsonObject | None = Field(
        default=None, title="Private metadata", description="JSON object, backend only."
    )


def _profile(data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for source, target in (
        ("firstName", "first_name"),
        ("lastName", "last_name"),
        ("publicMetadata", "public_metadata"),
        ("privateMetadata", "private_metadata"),
    ):
        value = getattr(data, source)
        if value is not None:
            body[target] = value
    return body


# ------------------------------------------------------------------------- get-user
@builtin(
    "clerk/get-user",
    domain=DOMAIN,
    name="Get User",
    description="Fetches a Clerk user.",
    input_model=UserIdInput,
    output_model=UserOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def get_user(data: UserIdInput, ctx: ExecutionContext) -> UserOutput:
    key = ctx.credentials[KEY]
    return _user(
        await call_json(ctx, PROVIDER, "GET", _user_path(data.userId), headers=bearer(key), secrets=[key])
    )


# ------------------------------------------------------------------------- create-user
class CreateUserInput(MetadataFields):
    emailAddress: str = Field(title="Email address")
    firstName: str | None = Field(default=None, title="First name")
    lastName: str | None = Field(default=None, title="Last name")
    password: str | None = Field(default=None, title="Password")


@builtin(
    "clerk/create-user",
    domain=DOMAIN,
    name="Create User",
    description="Creates a Clerk user.",
    input_model=CreateUserInput,
    output_model=UserOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def create_user(data: CreateUserInput, ctx: ExecutionContext) -> UserOutput:
    key = ctx.credentials[KEY]
    body: dict[str, Any] = {"email_address": [data.emailAddress], **_profile(data)}
    if data.password:
        body["password"] = data.password
    return _user(
        await call_json(ctx, PROVIDER, "POST", "/v1/users", headers=bearer(key), json=body, secrets=[key])
    )


# ------------------------------------------------------------------------- update-user
class UpdateUserInput(MetadataFields):
    userId: str = Field(title="User ID")
    firstName: str | None = Field(default=None, title="First name")
    lastName: str | None = Field(default=None, title="Last name")


@builtin(
    "clerk/update-user",
    domain=DOMAIN,
    name="Update User",
    description="Updates a Clerk user's name or metadata.",
    input_model=UpdateUserInput,
    output_model=UserOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def update_user(data: UpdateUserInput, ctx: ExecutionContext) -> UserOutput:
    key = ctx.credentials[KEY]
    body = _profile(data)
    if not body:
        raise ExecutionFailed(
            "nothing to update: set firstName, lastName, publicMetadata or privateMetadata",
            code=ErrorCode.INVALID_INPUT,
            details=[{"path": "/", "message": "no field to update"}],
        )
    return _user(
        await call_json(
            ctx, PROVIDER, "PATCH", _user_path(data.userId), headers=bearer(key), json=body, secrets=[key]
        )
    )


# ------------------------------------------------------------------------- delete-user
class DeletedData(BaseModel):
    deleted: bool = True


class DeleteUserOutput(BaseModel):
    success: bool = True
    data: DeletedData


@builtin(
    "clerk/delete-user",
    domain=DOMAIN,
    name="Delete User",
    description="Deletes a Clerk user.",
    input_model=UserIdInput,
    output_model=DeleteUserOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def delete_user(data: UserIdInput, ctx: ExecutionContext) -> DeleteUserOutput:
    key = ctx.credentials[KEY]
    body = await call_json(
        ctx, PROVIDER, "DELETE", _user_path(data.userId), headers=bearer(key), secrets=[key]
    )
    if isinstance(body, dict) and body.get("deleted") is False:
        raise unexpected_response(PROVIDER, None, "user not deleted")
    return DeleteUserOutput(data=DeletedData(deleted=True))
