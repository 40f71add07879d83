"""The HTML pages. Each renders the data its ``/api/v1`` twin answers (shared.tools.console.service)."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from shared.domains import DOMAINS
from shared.tools.console import service
from shared.tools.console.api import guarded, slug_of
from shared.tools.console.app import CONSOLE, render
from shared.tools.console.data import EXECUTION_STATUSES, BadInput
from shared.tools.console.edit import EDITABLE, EditRefused, form_changes, form_values
from shared.tools.console.security import SESSION_COOKIE, session_value

__all__ = ["add_routes"]


def _render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    return render(request, template, context, status)


def _safe_next(value: str | None) -> str:
    # Only a path on this console: never an absolute or protocol-relative URL.
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/functions"


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/functions")


async def login_form(request: web.Request) -> web.StreamResponse:
    return _render(request, "login.html", {"next": _safe_next(request.query.get("next")), "failed": False})


async def login(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await request.post()
    target = _safe_next(str(form.get("next") or ""))
    if console.token is None:
        raise web.HTTPSeeOther(target)
    given = str(form.get("token") or "")
    if not hmac.compare_digest(given.encode(), console.token.encode()):
        return _render(request, "login.html", {"next": target, "failed": True}, status=401)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE, session_value(console.token), httponly=True, samesite="Strict", path="/"
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def functions(request: web.Request) -> web.StreamResponse:
    listing = await service.functions(request.app[CONSOLE], request.query)
    return _render(request, "functions.html", {"listing": listing, "domains": [d.name for d in DOMAINS]})


async def _function_context(request: web.Request, slug: str) -> dict[str, Any]:
    page = await service.function_page(request.app[CONSOLE], slug, request.query)
    return {
        **page,
        "form": form_values(page["function"]),
        "errors": {},
        "editable": EDITABLE,
        "saved": request.query.get("saved"),
        "secret_done": (
            {"name": request.query.get("secret"), "did": request.query.get("did")}
            if request.query.get("secret") and request.query.get("did") in ("set", "deleted")
            else None
        ),
    }


async def function(request: web.Request) -> web.StreamResponse:
    return _render(request, "function.html", await _function_context(request, slug_of(request)))


async def edit(request: web.Request) -> web.StreamResponse:
    slug = slug_of(request)
    form = await request.post()
    try:
        saved = await service.save(request.app[CONSOLE], slug, form_changes(form))
    except EditRefused as exc:
        context = await _function_context(request, slug)
        context["form"] = {name: str(form.get(name) or "") for name in EDITABLE}
        context["errors"] = exc.fields
        return _render(request, "function.html", context, status=422)
    version = saved["function"]["version"]
    raise web.HTTPSeeOther(f"/functions/{quote(slug)}?saved={version}")


async def state(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    changes: dict[str, bool | None] = {"enabled": None, "deprecated": None}
    for name in changes:
        raw = form.get(name)
        if raw is not None:
            if raw not in ("true", "false"):
                raise BadInput(f"{name} must be true or false", name)
            changes[name] = raw == "true"
    slug = slug_of(request)
    await service.set_state(request.app[CONSOLE], slug, **changes)
    raise web.HTTPSeeOther(f"/functions/{quote(slug)}")


async def new_form(request: web.Request) -> web.StreamResponse:
    kind = request.query.get("type", "http")
    if kind not in ("http", "oci"):
        raise BadInput("type must be http or oci", "type")
    values = form_values({"domain": kind, "webhook_method": "POST" if kind == "http" else None})
    return _render(request, "new.html", _new_context(request, kind, values, {}, ""))


def _new_context(
    request: web.Request, kind: str, values: dict[str, str], errors: dict[str, str], slug: str
) -> dict[str, Any]:
    return {"kind": kind, "form": values, "errors": errors, "slug": slug, "editable": EDITABLE}


async def new(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    kind = str(form.get("execution_type") or "")
    if kind not in ("http", "oci"):
        raise BadInput("execution_type must be http or oci", "execution_type")
    slug = str(form.get("slug") or "").strip()
    try:
        changes = form_changes(form)
        changes.update(slug=slug, execution_type=kind)
        saved = await service.save(request.app[CONSOLE], None, changes)
    except EditRefused as exc:
        values = {name: str(form.get(name) or "") for name in EDITABLE}
        return _render(request, "new.html", _new_context(request, kind, values, exc.fields, slug), status=422)
    raise web.HTTPSeeOther(f"/functions/{quote(saved['function']['slug'])}?saved=1")


async def new_from_template(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        made = await service.from_template(request.app[CONSOLE], form.get("template"), form.get("name"))
    except BadInput as exc:
        values = form_values({"domain": "oci"})
        errors = {exc.field or "_form": str(exc)}
        return _render(request, "new.html", _new_context(request, "oci", values, errors, ""), status=422)
    raise web.HTTPSeeOther(f"/functions/{quote(made['function']['slug'])}?saved=1")


async def executions(request: web.Request) -> web.StreamResponse:
    listing = await service.executions(request.app[CONSOLE], request.query)
    return _render(
        request,
        "executions.html",
        {"listing": listing, "statuses": EXECUTION_STATUSES, "paged": bool(request.query.get("cursor"))},
    )


async def execution(request: web.Request) -> web.StreamResponse:
    found = await service.execution(request.app[CONSOLE], request.match_info["id"])
    return _render(request, "execution.html", {"execution": found})


async def rerun(request: web.Request) -> web.StreamResponse:
    result = await service.rerun(request.app[CONSOLE], request.match_info["id"])
    raise web.HTTPSeeOther(f"/executions/{quote(result['execution_id'])}")


async def fleet(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    snapshot = await service.fleet(console) if console.redis is not None else None
    return _render(request, "fleet.html", {"snapshot": snapshot})


async def dead_letters(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    listing = await service.dead_letters(console, request.query.get("domain") or None)
    return _render(request, "dead_letters.html", {"listing": listing, "domains": [d.name for d in DOMAINS]})


async def dead_letter(request: web.Request) -> web.StreamResponse:
    domain, entry = request.match_info["domain"], request.match_info["id"]
    found = await service.dead_letter(request.app[CONSOLE], domain, entry)
    return _render(request, "dead_letter.html", {"letter": found, "domain": domain})


async def redrive(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    domain = request.match_info["domain"]
    ids = None if form.get("all") == "true" else [str(v) for v in form.getall("id", [])]
    await service.redrive(request.app[CONSOLE], domain, ids)
    raise web.HTTPSeeOther(f"/dead-letters?domain={quote(domain)}")


async def set_secret(request: web.Request) -> web.StreamResponse:
    """The write-only field of a function page's credentials: store, then back to the page."""
    form = await request.post()
    name = request.match_info["name"]
    await service.set_secret(request.app[CONSOLE], name, str(form.get("value") or ""))
    target = _safe_next(str(form.get("next") or "")).split("?")[0]
    raise web.HTTPSeeOther(f"{target}?{urlencode({'secret': name, 'did': 'set'})}#credentials")


async def delete_secret(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = request.match_info["name"]
    await service.delete_secret(request.app[CONSOLE], name)
    target = _safe_next(str(form.get("next") or "")).split("?")[0]
    raise web.HTTPSeeOther(f"{target}?{urlencode({'secret': name, 'did': 'deleted'})}#credentials")


PAGE = "/functions/{plugin}/{action}"


def add_routes(app: web.Application) -> None:
    routes = [
        ("GET", "/", index),
        ("GET", "/login", login_form),
        ("POST", "/login", login),
        ("POST", "/logout", logout),
        ("GET", "/functions", functions),
        ("GET", PAGE, function),
        ("POST", f"{PAGE}/edit", edit),
        ("POST", f"{PAGE}/state", state),
        ("GET", "/new", new_form),
        ("POST", "/new", new),
        ("POST", "/new/from-template", new_from_template),
        ("GET", "/executions", executions),
        ("GET", "/executions/{id}", execution),
        ("POST", "/executions/{id}/rerun", rerun),
        ("GET", "/fleet", fleet),
        ("GET", "/dead-letters", dead_letters),
        ("GET", "/dead-letters/{domain}/{id}", dead_letter),
        ("POST", "/dead-letters/{domain}/redrive", redrive),
        ("POST", "/secrets/{name}", set_secret),
        ("POST", "/secrets/{name}/delete", delete_secret),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, guarded(handler))
