"""Firecrawl: scrape a URL to markdown, search the web."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, LaxInt, bearer, call, provider_failure, unexpected_response

__all__ = ["scrape", "search"]

PROVIDER = "firecrawl"
KEY = "FIRECRAWL_API_KEY"
DOMAIN = "ai"


async def _post(ctx: ExecutionContext, key: str, path: str, payload: dict[str, Any]) -> Any:
    response = await call(ctx, PROVIDER, "POST", path, headers=bearer(key), json=payload, secrets=[key])
    try:
        body = response.json()
    except ValueError:
        raise unexpected_response(PROVIDER, response, "body is not JSON") from None
    if not isinstance(body, dict):
        raise unexpected_response(PROVIDER, response, "body is not an object")
    if body.get("success") is False:
        raise provider_failure(PROVIDER, response.status_code, response.text, secrets=[key], retryable=False)
    return body.get("data")


class ScrapeInput(CatalogInput):
    url: str = Field(title="URL")


class ScrapeOutput(BaseModel):
    markdown: str
    metadata: dict[str, Any] = Field(default_factory=dict)


@builtin(
    "firecrawl/scrape",
    domain=DOMAIN,
    name="Scrape URL",
    description="Scrapes a web page into markdown.",
    input_model=ScrapeInput,
    output_model=ScrapeOutput,
    credentials=(KEY,),
    timeout_seconds=120,
)
async def scrape(data: ScrapeInput, ctx: ExecutionContext) -> ScrapeOutput:
    key = ctx.credentials[KEY]
    page = await _post(ctx, key, "/v1/scrape", {"url": data.url, "formats": ["markdown"]})
    if not isinstance(page, dict) or not isinstance(page.get("markdown"), str):
        raise unexpected_response(PROVIDER, None, "no data.markdown")
    metadata = page.get("metadata")
    return ScrapeOutput(markdown=page["markdown"], metadata=metadata if isinstance(metadata, dict) else {})


class SearchInput(CatalogInput):
    query: str = Field(title="Query")
    limit: LaxInt | None = Field(default=None, ge=1, le=100, title="Limit")


class SearchOutput(BaseModel):
    data: list[dict[str, Any]]


@builtin(
    "firecrawl/search",
    domain=DOMAIN,
    name="Search Web",
    description="Searches the web with Firecrawl.",
    input_model=SearchInput,
    output_model=SearchOutput,
    credentials=(KEY,),
    timeout_seconds=120,
)
async def search(data: SearchInput, ctx: ExecutionContext) -> SearchOutput:
    key = ctx.credentials[KEY]
    payload: dict[str, Any] = {"query": data.query}
    if data.limit is not None:
        payload["limit"] = data.limit
    results = await _post(ctx, key, "/v1/search", payload)
    if not isinstance(results, list):
        raise unexpected_response(PROVIDER, None, "no data list")
    return SearchOutput(data=[r for r in results if isinstance(r, dict)])
