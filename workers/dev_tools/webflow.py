"""Webflow Data API v2: list sites, get a site, publish a site."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, CommaList, LaxBool, bearer, call_json, unexpected_response

__all__ = ["get_site", "list_sites", "publish_site"]

PROVIDER = "webflow"
KEY = "WEBFLOW_API_KEY"
DOMAIN = "dev-tools"


class CustomDomain(BaseModel):
    id: str | None = None
    url: str | None = None
    lastPublished: str | None = None


class Site(BaseModel):
    id: str
    displayName: str | None = None
    shortName: str | None = None
    previewUrl: str | None = None
    lastPublished: str | None = None
    lastUpdated: str | None = None
    customDomains: list[CustomDomain] = Field(default_factory=list)


class SiteDetail(Site):
    timeZone: str | None = None


def _site(raw: Any, model: type[Site] = Site) -> Site:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise unexpected_response(PROVIDER, None, "not a site")
    domains = [
        CustomDomain(id=d.get("id"), url=d.get("url"), lastPublished=d.get("lastPublished"))
        for d in raw.get("customDomains") or []
        if isinstance(d, dict)
    ]
    fields = {name: raw.get(name) for name in model.model_fields if name not in ("id", "customDomains")}
    return model(id=raw["id"], customDomains=domains, **fields)


# ------------------------------------------------------------------------- list-sites
class ListSitesInput(CatalogInput):
    pass


class SitesData(BaseModel):
    sites: list[Site]
    count: int


class ListSitesOutput(BaseModel):
    success: bool = True
    data: SitesData


@builtin(
    "webflow/list-sites",
    domain=DOMAIN,
    name="List Sites",
    description="Lists the Webflow sites the token can access.",
    input_model=ListSitesInput,
    output_model=ListSitesOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def list_sites(data: ListSitesInput, ctx: ExecutionContext) -> ListSitesOutput:
    key = ctx.credentials[KEY]
    body = await call_json(ctx, PROVIDER, "GET", "/v2/sites", headers=bearer(key), secrets=[key])
    raw = body.get("sites") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        raise unexpected_response(PROVIDER, None, "no sites list")
    sites = [_site(s) for s in raw]
    return ListSitesOutput(data=SitesData(sites=sites, count=len(sites)))


# ------------------------------------------------------------------------- get-site
class SiteInput(CatalogInput):
    siteId: str = Field(title="Site ID")


class GetSiteOutput(BaseModel):
    success: bool = True
    data: SiteDetail


@builtin(
    "webflow/get-site",
    domain=DOMAIN,
    name="Get Site",
    description="Fetches one Webflow site.",
    input_model=SiteInput,
    output_model=GetSiteOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def get_site(data: SiteInput, ctx: ExecutionContext) -> GetSiteOutput:
    key = ctx.credentials[KEY]
    body = await call_json(
        ctx, PROVIDER, "GET", f"/v2/sites/{quote(data.siteId, safe='')}", headers=bearer(key), secrets=[key]
    )
    site = _site(body, SiteDetail)
    assert isinstance(site, SiteDetail)
    return GetSiteOutput(data=site)


# ------------------------------------------------------------------------- publish-site
class PublishSiteInput(SiteInput):
    publishToWebflowSubdomain: LaxBool = Field(
        default=True,
        title="Publish to Webflow subdomain",
        description="Forced on when no custom domain is given.",
    )
    customDomainIds: CommaList | None = Field(
        default=None, title="Custom domain IDs", description="Comma-separated custom domain ids."
    )


class PublishData(BaseModel):
    publishedDomains: list[str]
    publishedToSubdomain: bool


class PublishSiteOutput(BaseModel):
    success: bool = True
    data: PublishData


@builtin(
    "webflow/publish-site",
    domain=DOMAIN,
    name="Publish Site",
    description="Publishes a Webflow site to its subdomain and/or custom domains.",
    input_model=PublishSiteInput,
    output_model=PublishSiteOutput,
    credentials=(KEY,),
    timeout_seconds=60,
)
async def publish_site(data: PublishSiteInput, ctx: ExecutionContext) -> PublishSiteOutput:
    key = ctx.credentials[KEY]
    domains = data.customDomainIds or []
    payload = {
        "customDomains": domains,
        "publishToWebflowSubdomain": data.publishToWebflowSubdomain or not domains,
    }
    body = await call_json(
        ctx,
        PROVIDER,
        "POST",
        f"/v2/sites/{quote(data.siteId, safe='')}/publish",
        headers=bearer(key),
        json=payload,
        secrets=[key],
    )
    if not isinstance(body, dict):
        raise unexpected_response(PROVIDER, None, "body is not an object")
    published = [
        str(d.get("url") or d.get("id"))
        for d in body.get("customDomains") or []
        if isinstance(d, dict) and (d.get("url") or d.get("id"))
    ]
    return PublishSiteOutput(
        data=PublishData(
            publishedDomains=published,
            publishedToSubdomain=bool(
                body.get("publishToWebflowSubdomain", payload["publishToWebflowSubdomain"])
            ),
        )
    )
