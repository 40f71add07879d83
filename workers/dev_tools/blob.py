"""Vercel Blob: put and list blobs."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, LaxBool, LaxInt, bearer, call_json, unexpected_response

__all__ = ["list_blobs", "put_blob"]

PROVIDER = "blob"
KEY = "BLOB_READ_WRITE_TOKEN"
DOMAIN = "dev-tools"
API_VERSION = "7"


def _headers(token: str) -> dict[str, str]:
    return {**bearer(token), "x-api-version": API_VERSION}


# ------------------------------------------------------------------------- put
class PutBlobInput(CatalogInput):
    pathname: str = Field(title="Pathname", description="Path of the blob, e.g. `reports/today.txt`.")
    body: str = Field(title="Body", description="Content to store (text).")
    contentType: str | None = Field(default=None, title="Content type")
    access: Literal["public"] = Field(default="public", title="Access")
    addRandomSuffix: LaxBool = Field(default=True, title="Add random suffix")


class PutBlobOutput(BaseModel):
    success: bool = True
    url: str
    downloadUrl: str | None = None
    pathname: str


@builtin(
    "blob/put",
    domain=DOMAIN,
    name="Put Blob",
    description="Stores text as a public Vercel Blob.",
    input_model=PutBlobInput,
    output_model=PutBlobOutput,
    credentials=(KEY,),
    timeout_seconds=60,
)
async def put_blob(data: PutBlobInput, ctx: ExecutionContext) -> PutBlobOutput:
    token = ctx.credentials[KEY]
    headers = _headers(token)
    if data.contentType:
        headers["x-content-type"] = data.contentType
    body = await call_json(
        ctx,
        PROVIDER,
        "PUT",
        f"/{quote(data.pathname.lstrip('/'), safe='/')}",
        headers=headers,
        content=data.body.encode(),
        params=None if data.addRandomSuffix else {"addRandomSuffix": "false"},
        secrets=[token],
    )
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise unexpected_response(PROVIDER, None, "no blob url")
    return PutBlobOutput(
        url=body["url"],
        downloadUrl=body.get("downloadUrl"),
        pathname=str(body.get("pathname") or data.pathname),
    )


# ------------------------------------------------------------------------- list
class ListBlobsInput(CatalogInput):
    prefix: str | None = Field(default=None, title="Prefix")
    limit: LaxInt = Field(default=1000, ge=1, le=1000, title="Limit")
    cursor: str | None = Field(default=None, title="Cursor", description="From a previous page.")


class ListBlobsOutput(BaseModel):
    success: bool = True
    blobs: list[dict[str, Any]]
    cursor: str | None = None
    hasMore: bool = False


@builtin(
    "blob/list",
    domain=DOMAIN,
    name="List Blobs",
    description="Lists Vercel Blobs, optionally under a prefix.",
    input_model=ListBlobsInput,
    output_model=ListBlobsOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def list_blobs(data: ListBlobsInput, ctx: ExecutionContext) -> ListBlobsOutput:
    token = ctx.credentials[KEY]
    body = await call_json(
        ctx,
        PROVIDER,
        "GET",
        "/",
        headers=_headers(token),
        params={"prefix": data.prefix, "limit": data.limit, "cursor": data.cursor},
        secrets=[token],
    )
    blobs = body.get("blobs") if isinstance(body, dict) else None
    if not isinstance(blobs, list):
        raise unexpected_response(PROVIDER, None, "no blobs list")
    return ListBlobsOutput(
        blobs=[b for b in blobs if isinstance(b, dict)],
        cursor=body.get("cursor"),
        hasMore=bool(body.get("hasMore")),
    )
