"""``/api/v1``: the data of every page as JSON (docs/console.md, "API").

Errors are ``{"error": {"code", "message"[, "fields"]}}`` with 400 (bad input), 401/403
(security), 404 (unknown id), 422 (a definition refused, ``fields`` per field), 503 (no
database or broker).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shared.tools.console import service
from shared.tools.console.app import CONSOLE
from shared.tools.console.data import BadInput
from shared.tools.console.edit import EditRefused
from shared.tools.console.errors import error_response

__all__ = ["add_routes", "guarded", "slug_of"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def slug_of(request: web.Request) -> str:
    return f"{request.match_info['plugin']}/{request.match_info['action']}"


def guarded(handler: Handler) -> Handler:
    """Map the service's exceptions to answers (JSON or page, by path)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except service.NotFound as exc:
            return error_response(request, 404, "not_found", str(exc))
        except BadInput as exc:
            return error_response(
                request, 400, "bad_request", str(exc), {exc.field: str(exc)} if exc.field else None
            )
        except EditRefused as exc:
            return error_response(
                request, 422, "invalid_definition", "the definition was refused", exc.fields
            )
        except service.Unavailable as exc:
            return error_response(request, 503, exc.code, str(exc))

    return wrapped


async def _body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise BadInput("send a JSON body (Content-Type: application/json)", None)
    try:
        return json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"the body is not valid JSON: {exc}", None) from None


def _object(value: Any, what: str = "the body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object", None)
    return value


def _flag(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise BadInput(f"{name} must be true or false", name)


async def list_functions(request: web.Request) -> web.StreamResponse:
    return web.json_response(await service.functions(request.app[CONSOLE], request.query))


async def create_function(request: web.Request) -> web.StreamResponse:
    body = _object(await _body(request))
    saved = await service.save(request.app[CONSOLE], None, body)
    return web.json_response(saved, status=201)


async def create_from_template(request: web.Request) -> web.StreamResponse:
    body = _object(await _body(request))
    made = await service.from_template(request.app[CONSOLE], body.get("template"), body.get("name"))
    return web.json_response(made, status=201)


async def get_function(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        await service.function_page(request.app[CONSOLE], slug_of(request), request.query)
    )


async def edit_function(request: web.Request) -> web.StreamResponse:
    body = _object(await _body(request))
    return web.json_response(await service.save(request.app[CONSOLE], slug_of(request), body))


async def function_state(request: web.Request) -> web.StreamResponse:
    body = _object(await _body(request))
    unknown = set(body) - {"enabled", "deprecated"}
    if unknown:
        raise BadInput(f"unknown fields: {sorted(unknown)}", sorted(unknown)[0])
    updated = await service.set_state(
        request.app[CONSOLE],
        slug_of(request),
        enabled=_flag(body.get("enabled"), "enabled"),
        deprecated=_flag(body.get("deprecated"), "deprecated"),
    )
    return web.json_response(updated)


async def function_versions(request: web.Request) -> web.StreamResponse:
    return web.json_response({"versions": await service.versions(request.app[CONSOLE], slug_of(request))})


async def function_diff(request: web.Request) -> web.StreamResponse:
    return web.json_response(await service.diff(request.app[CONSOLE], slug_of(request), request.query))


async def function_stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(await service.stats(request.app[CONSOLE], slug_of(request)))


async def run_function(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    return web.json_response(await service.run(request.app[CONSOLE], slug_of(request), body))


async def list_executions(request: web.Request) -> web.StreamResponse:
    return web.json_response(await service.executions(request.app[CONSOLE], request.query))


async def get_execution(request: web.Request) -> web.StreamResponse:
    return web.json_response(await service.execution(request.app[CONSOLE], request.match_info["id"]))


async def rerun_execution(request: web.Request) -> web.StreamResponse:
    result = await service.rerun(request.app[CONSOLE], request.match_info["id"])
    return web.json_response(result, status=201)


async def fleet(request: web.Request) -> web.StreamResponse:
    return web.json_response(await service.fleet(request.app[CONSOLE]))


async def dead_letters(request: web.Request) -> web.StreamResponse:
    domain = request.query.get("domain") or None
    return web.json_response(await service.dead_letters(request.app[CONSOLE], domain))


async def dead_letter(request: web.Request) -> web.StreamResponse:
    found = await service.dead_letter(
        request.app[CONSOLE], request.match_info["domain"], request.match_info["id"]
    )
    return web.json_response(found)


async def redrive(request: web.Request) -> web.StreamResponse:
    body = _object(await _body(request))
    if body.get("all") is True:
        ids = None
    elif isinstance(body.get("ids"), list):
        ids = body["ids"]
    else:
        raise BadInput('give {"ids": [...]} or {"all": true}', "ids")
    report = await service.redrive(request.app[CONSOLE], request.match_info["domain"], ids)
    return web.json_response(report)


async def list_secrets(request: web.Request) -> web.StreamResponse:
    return web.json_response(await service.secrets(request.app[CONSOLE]))


async def put_secret(request: web.Request) -> web.StreamResponse:
    body = _object(await _body(request))
    unknown = set(body) - {"value"}
    if unknown or "value" not in body:
        raise BadInput('send {"value": "<the secret>"}', "value")
    saved = await service.set_secret(request.app[CONSOLE], request.match_info["name"], body["value"])
    return web.json_response(saved, status=201 if saved["created"] else 200)


async def delete_secret(request: web.Request) -> web.StreamResponse:
    return web.json_response(await service.delete_secret(request.app[CONSOLE], request.match_info["name"]))


FUNCTION = "/api/v1/functions/{plugin}/{action}"


def add_routes(app: web.Application) -> None:
    routes = [
        ("GET", "/api/v1/functions", list_functions),
        ("POST", "/api/v1/functions", create_function),
        ("POST", "/api/v1/functions/from-template", create_from_template),
        ("GET", FUNCTION, get_function),
        ("PUT", FUNCTION, edit_function),
        ("POST", f"{FUNCTION}/state", function_state),
        ("GET", f"{FUNCTION}/versions", function_versions),
        ("GET", f"{FUNCTION}/diff", function_diff),
        ("GET", f"{FUNCTION}/stats", function_stats),
        ("POST", f"{FUNCTION}/run", run_function),
        ("GET", "/api/v1/executions", list_executions),
        ("GET", "/api/v1/executions/{id}", get_execution),
        ("POST", "/api/v1/executions/{id}/rerun", rerun_execution),
        ("GET", "/api/v1/fleet", fleet),
        ("GET", "/api/v1/dead-letters", dead_letters),
        ("GET", "/api/v1/dead-letters/{domain}/{id}", dead_letter),
        ("POST", "/api/v1/dead-letters/{domain}/redrive", redrive),
        ("GET", "/api/v1/secrets", list_secrets),
        ("PUT", "/api/v1/secrets/{name}", put_secret),
        ("DELETE", "/api/v1/secrets/{name}", delete_secret),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, guarded(handler))
