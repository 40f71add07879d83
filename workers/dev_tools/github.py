"""GitHub REST API: issues (create, list, get, update) and a repository access check."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed
from shared.functions import ExecutionContext, builtin
from workers.providers import CatalogInput, CommaList, LaxInt, bearer, call_json, unexpected_response

__all__ = ["clone_repository", "create_issue", "get_issue", "list_issues", "update_issue"]

PROVIDER = "github"
KEY = "GITHUB_TOKEN"
DOMAIN = "dev-tools"


def _headers(token: str) -> dict[str, str]:
    return {
        **bearer(token),
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }


def _repo_path(owner: str, repo: str) -> str:
    return f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"


class RepoInput(CatalogInput):
    owner: str = Field(title="Owner", description="User or organisation that owns the repository.")
    repo: str = Field(title="Repository", description="Repository name.")


class IssueSummary(BaseModel):
    success: bool = True
    id: int
    number: int
    title: str
    url: str
    state: str


class IssueItem(BaseModel):
    id: int
    number: int
    title: str
    url: str
    state: str
    body: str | None = None
    labels: list[str]
    assignees: list[str]
    createdAt: str | None = None
    updatedAt: str | None = None


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise unexpected_response(PROVIDER, None, what)
    return body


def _summary(issue: dict[str, Any]) -> IssueSummary:
    try:
        return IssueSummary(
            id=issue["id"],
            number=issue["number"],
            title=issue["title"],
            url=issue["html_url"],
            state=issue["state"],
        )
    except (KeyError, ValueError):
        raise unexpected_response(PROVIDER, None, "not an issue") from None


def _names(items: Any, key: str) -> list[str]:
    out: list[str] = []
    for item in items or []:
        if isinstance(item, dict) and isinstance(item.get(key), str):
            out.append(item[key])
        elif isinstance(item, str):
            out.append(item)
    return out


def _item(issue: dict[str, Any]) -> IssueItem:
    try:
        return IssueItem(
            id=issue["id"],
            number=issue["number"],
            title=issue["title"],
            url=issue["html_url"],
            state=issue["state"],
            body=issue.get("body"),
            labels=_names(issue.get("labels"), "name"),
            assignees=_names(issue.get("assignees"), "login"),
            createdAt=issue.get("created_at"),
            updatedAt=issue.get("updated_at"),
        )
    except (KeyError, ValueError):
        raise unexpected_response(PROVIDER, None, "not an issue") from None


# ------------------------------------------------------------------------- create-issue
class CreateIssueInput(RepoInput):
    title: str = Field(title="Title")
    body: str | None = Field(default=None, title="Body", description="Markdown body.")
    labels: CommaList | None = Field(default=None, title="Labels", description="Comma-separated label names.")
    assignees: CommaList | None = Field(
        default=None, title="Assignees", description="Comma-separated GitHub logins."
    )


@builtin(
    "github/create-issue",
    domain=DOMAIN,
    name="Create Issue",
    description="Creates an issue in a GitHub repository.",
    input_model=CreateIssueInput,
    output_model=IssueSummary,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def create_issue(data: CreateIssueInput, ctx: ExecutionContext) -> IssueSummary:
    token = ctx.credentials[KEY]
    payload: dict[str, Any] = {"title": data.title}
    if data.body:
        payload["body"] = data.body
    if data.labels:
        payload["labels"] = data.labels
    if data.assignees:
        payload["assignees"] = data.assignees
    issue = await call_json(
        ctx,
        PROVIDER,
        "POST",
        f"{_repo_path(data.owner, data.repo)}/issues",
        headers=_headers(token),
        json=payload,
        secrets=[token],
    )
    return _summary(_object(issue, "not an issue"))


# ------------------------------------------------------------------------- list-issues
class ListIssuesInput(RepoInput):
    state: Literal["open", "closed", "all"] = Field(default="open", title="State")
    labels: CommaList | None = Field(default=None, title="Labels", description="Comma-separated label names.")
    assignee: str | None = Field(default=None, title="Assignee", description="Login, `none` or `*`.")
    perPage: LaxInt = Field(default=30, ge=1, le=100, title="Per page")


class ListIssuesOutput(BaseModel):
    success: bool = True
    issues: list[IssueItem]
    count: int


@builtin(
    "github/list-issues",
    domain=DOMAIN,
    name="List Issues",
    description="Lists a repository's issues (GitHub includes pull requests).",
    input_model=ListIssuesInput,
    output_model=ListIssuesOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def list_issues(data: ListIssuesInput, ctx: ExecutionContext) -> ListIssuesOutput:
    token = ctx.credentials[KEY]
    params: dict[str, Any] = {"state": data.state, "per_page": data.perPage}
    if data.labels:
        params["labels"] = ",".join(data.labels)
    if data.assignee:
        params["assignee"] = data.assignee
    body = await call_json(
        ctx,
        PROVIDER,
        "GET",
        f"{_repo_path(data.owner, data.repo)}/issues",
        headers=_headers(token),
        params=params,
        secrets=[token],
    )
    if not isinstance(body, list):
        raise unexpected_response(PROVIDER, None, "not a list of issues")
    issues = [_item(_object(i, "not an issue")) for i in body]
    return ListIssuesOutput(issues=issues, count=len(issues))


# ------------------------------------------------------------------------- get-issue
class IssueInput(RepoInput):
    issueNumber: LaxInt = Field(ge=1, title="Issue number")


class GetIssueOutput(IssueItem):
    success: bool = True
    author: str | None = None
    closedAt: str | None = None
    commentsCount: int = 0


@builtin(
    "github/get-issue",
    domain=DOMAIN,
    name="Get Issue",
    description="Fetches one issue of a GitHub repository.",
    input_model=IssueInput,
    output_model=GetIssueOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def get_issue(data: IssueInput, ctx: ExecutionContext) -> GetIssueOutput:
    token = ctx.credentials[KEY]
    issue = _object(
        await call_json(
            ctx,
            PROVIDER,
            "GET",
            f"{_repo_path(data.owner, data.repo)}/issues/{data.issueNumber}",
            headers=_headers(token),
            secrets=[token],
        ),
        "not an issue",
    )
    user = issue.get("user")
    return GetIssueOutput(
        **_item(issue).model_dump(),
        author=user.get("login") if isinstance(user, dict) else None,
        closedAt=issue.get("closed_at"),
        commentsCount=int(issue.get("comments") or 0),
    )


# ------------------------------------------------------------------------- update-issue
class UpdateIssueInput(IssueInput):
    title: str | None = Field(default=None, title="Title")
    body: str | None = Field(default=None, title="Body")
    state: Literal["open", "closed"] | None = Field(
        default=None, title="State", description="Empty = no change."
    )
    labels: CommaList | None = Field(
        default=None, title="Labels", description="Replaces the existing labels."
    )
    assignees: CommaList | None = Field(
        default=None, title="Assignees", description="Replaces the existing assignees."
    )


@builtin(
    "github/update-issue",
    domain=DOMAIN,
    name="Update Issue",
    description="Updates an issue's title, body, state, labels or assignees.",
    input_model=UpdateIssueInput,
    output_model=IssueSummary,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def update_issue(data: UpdateIssueInput, ctx: ExecutionContext) -> IssueSummary:
    token = ctx.credentials[KEY]
    patch: dict[str, Any] = {}
    for name in ("title", "body", "state", "labels", "assignees"):
        value = getattr(data, name)
        if value is not None:
            patch[name] = value
    if not patch:
        raise ExecutionFailed(
            "nothing to update: set at least one of title, body, state, labels, assignees",
            code=ErrorCode.INVALID_INPUT,
            details=[{"path": "/", "message": "no field to update"}],
        )
    issue = await call_json(
        ctx,
        PROVIDER,
        "PATCH",
        f"{_repo_path(data.owner, data.repo)}/issues/{data.issueNumber}",
        headers=_headers(token),
        json=patch,
        secrets=[token],
    )
    return _summary(_object(issue, "not an issue"))


# ------------------------------------------------------------------------- clone-repository
class CloneRepositoryInput(RepoInput):
    branch: str = Field(default="main", title="Branch")
    workspace_dir: str = Field(default="/workspace", title="Workspace directory")


class CloneRepositoryOutput(BaseModel):
    success: bool = True
    path: str
    owner: str
    repo: str
    branch: str
    url: str
    message: str


@builtin(
    "github/clone-repository",
    domain=DOMAIN,
    name="Clone Repository",
    description="Verifies access to a repository (like the origin, it does not clone).",
    input_model=CloneRepositoryInput,
    output_model=CloneRepositoryOutput,
    credentials=(KEY,),
    timeout_seconds=30,
)
async def clone_repository(data: CloneRepositoryInput, ctx: ExecutionContext) -> CloneRepositoryOutput:
    token = ctx.credentials[KEY]
    repo = _object(
        await call_json(
            ctx, PROVIDER, "GET", _repo_path(data.owner, data.repo), headers=_headers(token), secrets=[token]
        ),
        "not a repository",
    )
    url = repo.get("html_url")
    if not isinstance(url, str):
        raise unexpected_response(PROVIDER, None, "repository without html_url")
    return CloneRepositoryOutput(
        path=f"{data.workspace_dir.rstrip('/')}/{data.repo}",
        owner=data.owner,
        repo=data.repo,
        branch=data.branch,
        url=url,
        message=f"access to {data.owner}/{data.repo} verified; the repository was not cloned",
    )
