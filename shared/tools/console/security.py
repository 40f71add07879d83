"""The console's security model (docs/console.md, "Security").

* **Bind**: loopback by default. Any other address needs ``FLEET_UI_TOKEN``
  (:func:`check_bind` refuses to start without it).
* **Authentication** (when a token is set): ``Authorization: Bearer <token>``, or the session
  cookie the login form sets (HttpOnly, SameSite=Strict). The cookie holds an HMAC of the token,
  not the token, so it is worthless elsewhere and a new token logs every browser out. Both are
  compared with :func:`hmac.compare_digest`.
* **Host check** (no token, loopback): the ``Host`` header must name a loopback host, so a
  page on another site cannot reach the console through DNS rebinding.
* **CSRF**: double submit. Every response sets a random ``fleet_csrf`` cookie (HttpOnly,
  SameSite=Strict) if the browser has none; pages carry its value in a hidden ``_csrf`` field
  and a ``<meta name="csrf-token">`` that the script sends as ``X-CSRF-Token``. A POST, PUT,
  PATCH or DELETE without a matching value is refused (403). Requests authenticated with a
  bearer header are exempt: a browser never adds that header on its own.
* **Headers**: a CSP without inline script or style, ``frame-ancestors 'none'``,
  ``X-Content-Type-Options: nosniff``, no referrer, no caching of pages.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from shared.errors import ConfigError

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "CSRF_KEY",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "Middleware",
    "check_bind",
    "is_loopback",
    "security_middleware",
    "session_value",
]

SESSION_COOKIE = "fleet_ui_session"
CSRF_COOKIE = "fleet_csrf"
CSRF_FIELD = "_csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Paths reachable without a session (the login form and the assets it uses).
PUBLIC_PREFIXES = ("/login", "/static/")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: This request's CSRF value (what pages put in their forms).
CSRF_KEY = web.RequestKey("csrf", str)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 possibly in brackets) is this machine only."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (ConfigError) to serve on a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"the console binds {host}, which is reachable from other machines: set FLEET_UI_TOKEN "
            "(a long random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


def session_value(token: str) -> str:
    """What the session cookie holds for ``token`` (an HMAC of it, never the token itself)."""
    return hmac.new(token.encode(), b"fleet-ui-session", hashlib.sha256).hexdigest()


def _equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _host_name(request: web.Request) -> str:
    host = request.host or ""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def security_middleware(token: str | None) -> Middleware:
    """The middleware enforcing the module docstring's rules on every request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        csrf = request.cookies.get(CSRF_COOKIE) or ""
        fresh = not csrf or len(csrf) < 32
        if fresh:
            csrf = secrets.token_urlsafe(32)
        request[CSRF_KEY] = csrf
        response = await _checked(request, handler, token, fresh)
        if fresh:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="Strict", path="/")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return middleware


async def _checked(
    request: web.Request, handler: Handler, token: str | None, fresh_csrf: bool
) -> web.StreamResponse:
    from shared.tools.console.errors import error_response

    with_bearer = False
    if token:
        given = bearer(request)
        if given is not None:
            if not _equal(given, token):
                return error_response(request, 401, "unauthorized", "the bearer token is not the console's")
            with_bearer = True
        authenticated = with_bearer or _equal(request.cookies.get(SESSION_COOKIE), session_value(token))
        if not authenticated and not request.path.startswith(PUBLIC_PREFIXES):
            if _wants_json(request) or request.method != "GET":
                return error_response(
                    request, 401, "unauthorized", "send Authorization: Bearer <FLEET_UI_TOKEN> or log in"
                )
            raise web.HTTPSeeOther(f"/login?next={request.path_qs}")
    else:
        if not is_loopback(_host_name(request)):
            return error_response(
                request,
                403,
                "forbidden_host",
                "without FLEET_UI_TOKEN the console answers loopback hosts only",
            )
    if request.method in UNSAFE_METHODS and not with_bearer:
        submitted = request.headers.get(CSRF_HEADER)
        if submitted is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            value = form.get(CSRF_FIELD)
            submitted = value if isinstance(value, str) else None
        if fresh_csrf or not _equal(submitted, request.cookies.get(CSRF_COOKIE, "")):
            return error_response(
                request, 403, "csrf_failed", "missing or wrong CSRF token: reload the page and try again"
            )
    return await handler(request)
