"""The SSRF-guarded HTTP client of the ``http`` worker: one :func:`send` per execution.

What :func:`send` guarantees (policy prose: ``docs/http.md``):

* every hop — the request and each redirect — is checked by :func:`workers.http.ssrf.vet_url`
  *before* any connection is opened, and connects only to the addresses that check resolved
  (:class:`~workers.http.ssrf.PinnedResolver`); a refused hop fails ``destination_blocked``;
* redirects are followed by hand, at most ``policy.max_redirects`` (one more fails
  ``too_many_redirects``): 303 (and 301/302 after a POST) become a GET without body, 307/308
  repeat the request; crossing to another origin drops ``Authorization``, ``Cookie``,
  ``Proxy-Authorization`` and the caller's ``sensitive_headers``;
* the body is read in chunks of at most :data:`CHUNK_SIZE` and the read stops as soon as it
  exceeds ``policy.max_response_bytes`` (after Content-Encoding), failing ``response_too_large``
  — at most the cap plus one chunk is ever held; a ``Content-Length`` above the cap fails at once;
* the whole exchange (DNS, connects, redirects, body) runs under one deadline: ``timeout``
  (retryable);
* DNS failures and refused/reset/dropped connections fail ``connection_failed`` (retryable);
  a rejected TLS certificate or handshake fails ``connection_failed`` (not retryable); a
  malformed response or ``Location`` fails ``http_error`` (not retryable);
* with the worker's ``tracing`` (tracing on), the exchange is one CLIENT span naming the method,
  scheme, host and port, the final status and the redirects — never the path or the query, which
  may carry tokens — and the request carries that span's ``traceparent`` (unless the caller set
  one), so the server can continue the trace.

Non-2xx statuses are not failures here: they are responses (callers decide).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from shared.contract import ErrorCode
from shared.errors import ExecutionFailed, ExecutionTimeout, InvalidInput
from shared.runtime.spans import Tracing
from workers.http import ssrf
from workers.http.ssrf import HttpPolicy, InvalidUrl, PinnedResolver

__all__ = [
    "CHUNK_SIZE",
    "CROSS_ORIGIN_STRIPPED",
    "FORBIDDEN_REQUEST_HEADERS",
    "METHODS",
    "HttpResponse",
    "check_headers",
    "decode_body",
    "read_capped",
    "send",
]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
CHUNK_SIZE = 65_536
USER_AGENT = "function-fleet-http/1"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Headers a caller may not set: they frame the message or the connection, so letting a caller
#: choose them invites request smuggling or a Host that disagrees with the vetted URL.
FORBIDDEN_REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "trailer",
        "expect",
    }
)
#: Dropped when a redirect leaves the origin (scheme, host, port) they were meant for.
CROSS_ORIGIN_STRIPPED = frozenset({"authorization", "proxy-authorization", "cookie"})
_BODY_HEADERS = frozenset({"content-type", "content-encoding", "content-language", "content-location"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """The final response of :func:`send`.

    ``headers`` has lower-case names; repeated headers are joined with ``", "``. ``body`` is
    the decoded (Content-Encoding removed) bytes. ``content_type`` is the lower-case media type
    (``application/octet-stream`` when the response has none).
    """

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str
    charset: str | None
    url: str
    redirects: int

    def decoded(self) -> Any:
        """The body as :func:`decode_body` reads it."""
        return decode_body(self.body, self.content_type, self.charset)

    def as_result(self) -> dict[str, Any]:
        """``{status, headers, body}`` with the body decoded: the output shape of the worker."""
        return {"status": self.status, "headers": self.headers, "body": self.decoded()}


def decode_body(body: bytes, content_type: str, charset: str | None) -> Any:
    """JSON (``application/json`` or any ``+json`` type) as the value it encodes; anything
    else — and JSON that does not parse — as text in the declared charset (UTF-8 when none or
    unknown; undecodable bytes replaced). An empty body is ``""``."""
    if not body:
        return ""
    media = content_type.lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def check_headers(headers: Mapping[str, str], *, what: str = "header") -> dict[str, str]:
    """Validate caller-supplied request headers: RFC 9110 token names, no CR/LF/NUL in values,
    none of :data:`FORBIDDEN_REQUEST_HEADERS`. Raises :class:`InvalidInput` listing every
    violation; returns a plain copy."""
    problems: list[dict[str, str]] = []
    for name, value in headers.items():
        if not _TOKEN.match(name):
            problems.append({"path": f"headers.{name}", "message": f"not a valid {what} name"})
        elif name.lower() in FORBIDDEN_REQUEST_HEADERS:
            problems.append({"path": f"headers.{name}", "message": "this header is set by the client"})
        if any(c in value for c in "\r\n\0"):
            problems.append({"path": f"headers.{name}", "message": "line breaks and NUL are not allowed"})
    if problems:
        raise InvalidInput("invalid request headers", details=problems)
    return dict(headers)


async def read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Concatenate ``chunks``, failing ``response_too_large`` as soon as the total exceeds
    ``limit`` — never holding more than ``limit`` plus the chunk that crossed it."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            raise _too_large(limit)
    return bytes(buffer)


def _too_large(limit: int, content_length: int | None = None) -> ExecutionFailed:
    details: dict[str, Any] = {"limit_bytes": limit}
    if content_length is not None:
        details["content_length"] = content_length
    return ExecutionFailed(
        f"response body exceeds {limit} bytes (FLEET_HTTP_MAX_RESPONSE_BYTES)",
        code=ErrorCode.RESPONSE_TOO_LARGE,
        retryable=False,
        details=details,
    )


async def send(
    method: str,
    url: str | URL,
    *,
    headers: Mapping[str, str] | None = None,
    query: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    timeout: float,
    policy: HttpPolicy,
    sensitive_headers: Collection[str] = (),
    ssl_context: ssl.SSLContext | None = None,
    tracing: Tracing | None = None,
) -> HttpResponse:
    """Send one request under the SSRF guard and return the final response (module docstring).

    ``url`` is the caller's URL (an unusable one fails ``invalid_input``); ``query`` pairs are
    appended to its query string; ``headers`` must already be checked (:func:`check_headers`)
    and are sent as given (plus a default ``User-Agent``); ``body`` is sent as is. ``policy``
    is the calling worker's (``ctx.resources.get(HttpPolicy)``); ``ssl_context`` defaults to
    the verifying context (tests pass one trusting their own CA); ``tracing`` is the calling
    worker's when it traces (``ctx.resources.find(Tracing)``).
    """
    method = method.upper()
    try:
        target = URL(url) if isinstance(url, str) else url
        if query:
            target = target.extend_query(list(query))
        target = target.with_fragment(None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"invalid URL: {exc}", details=[{"path": "url", "message": str(exc)}]) from None
    hop_headers = {"User-Agent": USER_AGENT} if not _has(headers or {}, "user-agent") else {}
    hop_headers.update(headers or {})
    if tracing is None:
        return await _guarded(
            method, target, hop_headers, body, timeout, policy, sensitive_headers, ssl_context
        )
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "url.scheme": target.scheme,
        "server.address": target.raw_host or "",
        "server.port": target.port or 0,
    }
    with tracing.span(method, kind="client", attributes=attributes) as current:
        tracing.inject(hop_headers)
        response = await _guarded(
            method, target, hop_headers, body, timeout, policy, sensitive_headers, ssl_context
        )
        current.set_attribute("http.response.status_code", response.status)
        if response.redirects:
            current.set_attribute("http.request.resend_count", response.redirects)
        return response


async def _guarded(
    method: str,
    target: URL,
    hop_headers: dict[str, str],
    body: bytes | None,
    timeout: float,
    policy: HttpPolicy,
    sensitive_headers: Collection[str],
    ssl_context: ssl.SSLContext | None,
) -> HttpResponse:
    """:func:`_exchange` under the call's deadline, refusals counted."""
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(
                method,
                target,
                hop_headers,
                body,
                policy,
                {h.lower() for h in sensitive_headers} | CROSS_ORIGIN_STRIPPED,
                ssl_context,
            )
    except ssrf.DestinationBlocked as exc:
        if policy.on_refusal is not None:
            policy.on_refusal(exc.reason)
        raise
    except TimeoutError:
        raise ExecutionTimeout(
            f"HTTP request to {target.raw_host} did not finish within {timeout:g}s",
            details={"timeout_seconds": timeout},
        ) from None


async def _exchange(
    method: str,
    url: URL,
    headers: dict[str, str],
    body: bytes | None,
    policy: HttpPolicy,
    sensitive: set[str],
    ssl_context: ssl.SSLContext | None,
) -> HttpResponse:
    resolver = PinnedResolver()
    # force_close: one fresh connection per hop, so each hop connects to the addresses vetted
    # for *that* hop (a pooled connection would skip the pinned resolver).
    connector = aiohttp.TCPConnector(
        resolver=resolver,
        use_dns_cache=False,
        force_close=True,
        limit=1,
        ssl=ssl_context if ssl_context is not None else True,
    )
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        # The caller's deadline (asyncio.timeout in send) is the only timeout.
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None),
        trust_env=False,  # never through an environment proxy: it would connect, not us
        read_bufsize=CHUNK_SIZE,
        auto_decompress=True,
    ) as session:
        redirects = 0
        first = True
        while True:
            try:
                target = await ssrf.vet_url(url, policy)
            except InvalidUrl as exc:
                if first:
                    raise InvalidInput(
                        f"invalid URL: {exc}", details=[{"path": "url", "message": str(exc)}]
                    ) from None
                raise ExecutionFailed(
                    f"redirect to an invalid URL: {exc}",
                    code=ErrorCode.HTTP_ERROR,
                    details={"location": str(url.with_query(None))},
                ) from None
            except OSError as exc:
                raise ExecutionFailed(
                    f"could not resolve {url.raw_host}: {exc.strerror or exc}",
                    code=ErrorCode.CONNECTION_FAILED,
                    retryable=True,
                    details={"host": url.raw_host, "reason": "dns"},
                ) from None
            first = False
            resolver.pin(target)
            host = target.host
            try:
                async with session.request(
                    method, url, headers=headers, data=body, allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in REDIRECT_STATUSES and location:
                        if redirects >= policy.max_redirects:
                            raise ExecutionFailed(
                                f"more than {policy.max_redirects} redirects (FLEET_HTTP_MAX_REDIRECTS)",
                                code=ErrorCode.TOO_MANY_REDIRECTS,
                                # Without the query: it may carry tokens.
                                details={"limit": policy.max_redirects, "url": str(url.with_query(None))},
                            )
                        url, method, body, headers = _redirect(
                            response.status, url, location, method, body, headers, sensitive
                        )
                    else:
                        limit = policy.max_response_bytes
                        # A HEAD answer announces the length of a body it does not send.
                        length = response.content_length if method != "HEAD" else None
                        if length is not None and length > limit:
                            raise _too_large(limit, length)
                        data = await read_capped(response.content.iter_chunked(CHUNK_SIZE), limit)
                        return HttpResponse(
                            status=response.status,
                            headers=_headers(response),
                            body=data,
                            content_type=response.content_type,
                            charset=response.charset,
                            url=str(url),
                            redirects=redirects,
                        )
            except aiohttp.ClientError as exc:
                raise _client_failure(exc, host) from None
            redirects += 1


def _redirect(
    status: int,
    current: URL,
    location: str,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    sensitive: set[str],
) -> tuple[URL, str, bytes | None, dict[str, str]]:
    """The next hop after a redirect response (browser/fetch-standard rules)."""
    try:
        following = current.join(URL(location)).with_fragment(None)
    except (ValueError, TypeError) as exc:
        raise ExecutionFailed(
            f"redirect with an invalid Location: {exc}",
            code=ErrorCode.HTTP_ERROR,
            details={"location": location},
        ) from None
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
        headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
    if _origin(following) != _origin(current):
        headers = {k: v for k, v in headers.items() if k.lower() not in sensitive}
    return following, method, body, headers


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme, (url.raw_host or "").lower().rstrip("."), url.port


def _has(headers: Mapping[str, str], name: str) -> bool:
    return any(k.lower() == name for k in headers)


def _headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in response.headers.items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _client_failure(exc: aiohttp.ClientError, host: str) -> ExecutionFailed:
    """Map an aiohttp error to the worker's codes (module docstring)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ExecutionFailed(
            f"TLS certificate of {host} rejected: {exc.certificate_error}",
            code=ErrorCode.CONNECTION_FAILED,
            retryable=False,
            details={"host": host, "reason": "tls-certificate"},
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return ExecutionFailed(
            f"TLS handshake with {host} failed: {exc}",
            code=ErrorCode.CONNECTION_FAILED,
            retryable=False,
            details={"host": host, "reason": "tls"},
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ExecutionFailed(
            f"could not connect to {host}: {exc.os_error.strerror or exc.os_error}",
            code=ErrorCode.CONNECTION_FAILED,
            retryable=True,
            details={"host": host, "reason": "connect"},
        )
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return ExecutionFailed(
            f"connection to {host} failed: {exc or type(exc).__name__}",
            code=ErrorCode.CONNECTION_FAILED,
            retryable=True,
            details={"host": host, "reason": "disconnected"},
        )
    return ExecutionFailed(
        f"bad HTTP exchange with {host}: {exc or type(exc).__name__}",
        code=ErrorCode.HTTP_ERROR,
        retryable=False,
        details={"host": host},
    )
