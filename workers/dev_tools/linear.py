"""Linear GraphQL API: create a ticket, find issues."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shared.functions import ExecutionContext, builtin
from workers.providers import (
    NUMBER_AS_TEXT,
    CatalogInput,
    call,
    numeric_options_schema,
    provider_failure,
    unexpected_response,
)

__all__ = ["create_ticket", "find_issues"]

PROVIDER = "linear"
KEY = "LINEAR_API_KEY"
#: Optional team; when the runtime does not supply it the first team is used.
TEAM_KEY = "LINEAR_TEAM_ID"
DOMAIN = "dev-tools"

TEAMS_QUERY = "query Teams { teams(first: 1) { nodes { id name } } }"
CREATE_MUTATION = (
    "mutation IssueCreate($input: IssueCreateInput!) "
    "{ issueCreate(input: $input) { success issue { id identifier title url } } }"
)
ISSUES_QUERY = (
    "query Issues($filter: IssueFilter, $first: Int) { issues(filter: $filter, first: $first) "
    "{ nodes { id title url priority state { name } assignee { id } } } }"
)
STATUS_NAMES = {
    "backlog": "Backlog",
    "todo": "Todo",
    "in_progress": "In Progress",
    "done": "Done",
    "canceled": "Canceled",
}


async def graphql(
    ctx: ExecutionContext, key: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run one GraphQL operation; GraphQL ``errors`` fail like an HTTP error would."""
    response = await call(
        ctx,
        PROVIDER,
        "POST",
        "/graphql",
        headers={"Authorization": key},
        json={"query": query, "variables": variables or {}},
        secrets=[key],
    )
    try:
        body = response.json()
    except ValueError:
        raise unexpected_response(PROVIDER, response, "body is not JSON") from None
    if not isinstance(body, dict):
        raise unexpected_response(PROVIDER, response, "body is not an object")
    if body.get("errors"):
        raise provider_failure(PROVIDER, response.status_code, response.text, secrets=[key], retryable=False)
    data = body.get("data")
    if not isinstance(data, dict):
        raise unexpected_response(PROVIDER, response, "no data")
    return data


# ------------------------------------------------------------------------- create-ticket
class CreateTicketInput(CatalogInput):
    ticketTitle: str = Field(title="Title")
    ticketDescription: str | None = Field(default=None, title="Description", description="Markdown.")
    ticketPriority: Annotated[
        Literal["0", "1", "2", "3", "4"], NUMBER_AS_TEXT, numeric_options_schema("0", "1", "2", "3", "4")
    ] = Field(
        default="2",
        title="Priority",
        description="0 none, 1 urgent, 2 high, 3 normal, 4 low.",
    )


class TicketData(BaseModel):
    id: str
    url: str
    title: str


class CreateTicketOutput(BaseModel):
    success: bool = True
    data: TicketData


@builtin(
    "linear/create-ticket",
    domain=DOMAIN,
    name="Create Ticket",
    description="Creates a Linear issue in the configured (or first) team.",
    input_model=CreateTicketInput,
    output_model=CreateTicketOutput,
    credentials=(KEY,),
    optional_credentials=(TEAM_KEY,),
    timeout_seconds=30,
)
async def create_ticket(data: CreateTicketInput, ctx: ExecutionContext) -> CreateTicketOutput:
    key = ctx.credentials[KEY]
    team_id = ctx.credentials.get(TEAM_KEY)
    if not team_id:
        teams = (await graphql(ctx, key, TEAMS_QUERY)).get("teams") or {}
        nodes = teams.get("nodes") if isinstance(teams, dict) else None
        if not nodes or not isinstance(nodes[0], dict) or not nodes[0].get("id"):
            raise provider_failure(PROVIDER, 200, "", retryable=False, message="the workspace has no team")
        team_id = str(nodes[0]["id"])
    issue_input: dict[str, Any] = {
        "title": data.ticketTitle,
        "teamId": team_id,
        "priority": int(data.ticketPriority),
    }
    if data.ticketDescription:
        issue_input["description"] = data.ticketDescription
    created = (await graphql(ctx, key, CREATE_MUTATION, {"input": issue_input})).get("issueCreate")
    issue = created.get("issue") if isinstance(created, dict) else None
    if not isinstance(issue, dict) or not created or not created.get("success"):
        raise provider_failure(PROVIDER, 200, "", retryable=False, message="issueCreate did not succeed")
    try:
        return CreateTicketOutput(data=TicketData(id=issue["id"], url=issue["url"], title=issue["title"]))
    except (KeyError, ValueError):
        raise unexpected_response(PROVIDER, None, "issue without id/url/title") from None


# ------------------------------------------------------------------------- find-issues
class FindIssuesInput(CatalogInput):
    linearAssigneeId: str | None = Field(default=None, title="Assignee ID")
    linearTeamId: str | None = Field(default=None, title="Team ID")
    linearStatus: Literal["any", "backlog", "todo", "in_progress", "done", "canceled"] = Field(
        default="any", title="Status"
    )
    linearLabel: str | None = Field(default=None, title="Label")


class IssueRow(BaseModel):
    id: str
    title: str
    url: str
    state: str | None = None
    priority: float | None = None
    assigneeId: str | None = None


class IssuesData(BaseModel):
    issues: list[IssueRow]
    count: int


class FindIssuesOutput(BaseModel):
    success: bool = True
    data: IssuesData


@builtin(
    "linear/find-issues",
    domain=DOMAIN,
    name="Find Issues",
    description="Finds Linear issues by assignee, team, status and label.",
    input_model=FindIssuesInput,
    output_model=FindIssuesOutput,
    credentials=(KEY,),
    optional_credentials=(TEAM_KEY,),
    timeout_seconds=30,
)
async def find_issues(data: FindIssuesInput, ctx: ExecutionContext) -> FindIssuesOutput:
    key = ctx.credentials[KEY]
    issue_filter: dict[str, Any] = {}
    if data.linearAssigneeId:
        issue_filter["assignee"] = {"id": {"eq": data.linearAssigneeId}}
    if data.linearTeamId:
        issue_filter["team"] = {"id": {"eq": data.linearTeamId}}
    if data.linearStatus != "any":
        issue_filter["state"] = {"name": {"eqIgnoreCase": STATUS_NAMES[data.linearStatus]}}
    if data.linearLabel:
        issue_filter["labels"] = {"some": {"name": {"eqIgnoreCase": data.linearLabel}}}
    found = (await graphql(ctx, key, ISSUES_QUERY, {"filter": issue_filter, "first": 50})).get("issues")
    nodes = found.get("nodes") if isinstance(found, dict) else None
    if not isinstance(nodes, list):
        raise unexpected_response(PROVIDER, None, "no issues.nodes")
    rows: list[IssueRow] = []
    for node in nodes:
        state = node.get("state") if isinstance(node, dict) else None
        assignee = node.get("assignee") if isinstance(node, dict) else None
        try:
            rows.append(
                IssueRow(
                    id=node["id"],
                    title=node["title"],
                    url=node["url"],
                    state=state.get("name") if isinstance(state, dict) else None,
                    priority=node.get("priority"),
                    assigneeId=assignee.get("id") if isinstance(assignee, dict) else None,
                )
            )
        except (KeyError, TypeError, ValueError):
            raise unexpected_response(PROVIDER, None, "issue without id/title/url") from None
    return FindIssuesOutput(data=IssuesData(issues=rows, count=len(rows)))
