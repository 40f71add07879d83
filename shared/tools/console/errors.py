"""Errors as the console answers them: JSON ``{"error": {code, message[, fields]}}`` under
``/api/``, a page otherwise; never a traceback (unexpected errors are logged, not shown)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

__all__ = ["error_middleware", "error_response"]

log = structlog.get_logger("fleet.console")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
}


def error_response(
    request: web.Request, status: int, code: str, message: str, fields: dict[str, str] | None = None
) -> web.Response:
    if request.path.startswith("/api/"):
        body: dict[str, Any] = {"code": code, "message": message}
        if fields:
            body["fields"] = fields
        return web.json_response({"error": body}, status=status)
    from shared.tools.console.app import render

    return render(
        request,
        "error.html",
        {"status": status, "code": code, "message": message, "fields": fields or {}},
        status=status,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRedirection:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "error")
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return error_response(request, exc.status, code, message or exc.reason)
    except Exception:
        log.exception("console request failed", path=request.path, method=request.method)
        return error_response(
            request, 500, "internal_error", "the console failed on this request; see its log"
        )
