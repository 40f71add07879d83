"""Perplexity (Sonar chat completions with web search): search, ask, research."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, bearer, call_json, unexpected_response

__all__ = ["ask", "research", "search"]

PROVIDER = "perplexity"
KEY = "PERPLEXITY_API_KEY"
DOMAIN = "ai"

SEARCH_SYSTEM = (
    "You are a search assistant. Answer the query concisely with the most relevant, up-to-date "
    "information from the web, and cite your sources."
)
ASK_SYSTEM = "You are a helpful assistant. Answer accurately and concisely, citing sources where useful."
RESEARCH_SYSTEMS = {
    "brief": "You are a research assistant. Give a brief overview of the topic in a few paragraphs, "
    "with the key facts and sources.",
    "detailed": "You are a research assistant. Write a detailed report on the topic: background, key "
    "findings, different perspectives and sources.",
    "comprehensive": "You are a research assistant. Write a comprehensive, well-structured report on "
    "the topic: background, history, current state, key findings, debates, open questions, "
    "and an extensive list of sources.",
}
SEARCH_DOMAINS: dict[str, list[str]] = {
    "academic": ["scholar.google.com", "arxiv.org", "pubmed.ncbi.nlm.nih.gov", "researchgate.net"],
    "news": ["reuters.com", "apnews.com", "bbc.com", "nytimes.com", "theguardian.com"],
    "youtube": ["youtube.com"],
    "reddit": ["reddit.com"],
}


async def _complete(
    ctx: ExecutionContext, key: str, model: str, system: str, user: str, domains: list[str] | None = None
) -> tuple[str, list[str], str]:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "return_citations": True,
    }
    if domains:
        payload["search_domain_filter"] = domains
    body = await call_json(
        ctx, PROVIDER, "POST", "/chat/completions", headers=bearer(key), json=payload, secrets=[key]
    )
    try:
        answer = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        answer = None
    if not isinstance(answer, str):
        raise unexpected_response(PROVIDER, None, "no choices[0].message.content")
    citations = body.get("citations")
    if not isinstance(citations, list):
        results = body.get("search_results") or []
        citations = [r.get("url") for r in results if isinstance(r, dict)]
    return answer, [str(c) for c in citations if c], str(body.get("model") or model)


class AnswerData(BaseModel):
    answer: str
    citations: list[str]
    model: str


class AnswerOutput(BaseModel):
    success: bool = True
    data: AnswerData


# ------------------------------------------------------------------------- search
class SearchInput(CatalogInput):
    query: str = Field(title="Search query")
    searchFocus: Literal["internet", "academic", "news", "youtube", "reddit"] = Field(
        default="internet", title="Search focus", description="Restricts the sources searched."
    )


@builtin(
    "perplexity/search",
    domain=DOMAIN,
    name="Search Web",
    description="Searches the web with Perplexity and answers with citations.",
    input_model=SearchInput,
    output_model=AnswerOutput,
    credentials=(KEY,),
    timeout_seconds=120,
)
async def search(data: SearchInput, ctx: ExecutionContext) -> AnswerOutput:
    key = ctx.credentials[KEY]
    answer, citations, model = await _complete(
        ctx, key, "sonar", SEARCH_SYSTEM, data.query, SEARCH_DOMAINS.get(data.searchFocus)
    )
    return AnswerOutput(data=AnswerData(answer=answer, citations=citations, model=model))


# ------------------------------------------------------------------------- ask
class AskInput(CatalogInput):
    question: str = Field(title="Question")
    systemPrompt: str | None = Field(default=None, title="System prompt", description="Optional.")
    model: Literal["sonar", "sonar-pro", "sonar-reasoning"] = Field(default="sonar", title="Model")


@builtin(
    "perplexity/ask",
    domain=DOMAIN,
    name="Ask Question",
    description="Asks Perplexity a question; answers with citations.",
    input_model=AskInput,
    output_model=AnswerOutput,
    credentials=(KEY,),
    timeout_seconds=120,
)
async def ask(data: AskInput, ctx: ExecutionContext) -> AnswerOutput:
    key = ctx.credentials[KEY]
    answer, citations, model = await _complete(
        ctx, key, data.model, data.systemPrompt or ASK_SYSTEM, data.question
    )
    return AnswerOutput(data=AnswerData(answer=answer, citations=citations, model=model))


# ------------------------------------------------------------------------- research
class ResearchInput(CatalogInput):
    topic: str = Field(title="Topic")
    depth: Literal["brief", "detailed", "comprehensive"] = Field(default="detailed", title="Depth")


class ReportData(BaseModel):
    report: str
    citations: list[str]
    model: str


class ReportOutput(BaseModel):
    success: bool = True
    data: ReportData


@builtin(
    "perplexity/research",
    domain=DOMAIN,
    name="Research Topic",
    description="Writes a cited research report on a topic with sonar-pro.",
    input_model=ResearchInput,
    output_model=ReportOutput,
    credentials=(KEY,),
    timeout_seconds=300,
)
async def research(data: ResearchInput, ctx: ExecutionContext) -> ReportOutput:
    key = ctx.credentials[KEY]
    report, citations, model = await _complete(
        ctx, key, "sonar-pro", RESEARCH_SYSTEMS[data.depth], data.topic
    )
    return ReportOutput(data=ReportData(report=report, citations=citations, model=model))
