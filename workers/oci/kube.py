"""A small asyncio client for the few Kubernetes API calls the OCI worker makes.

Why raw HTTP (aiohttp) and not the ``kubernetes`` package's API classes: that client is
synchronous. Run in threads, every execution's *watch* would pin a pool thread for minutes and
could not be cancelled (a cancelled execution must stop watching and clean up at once), and a
worker runs up to ``FLEET_CONCURRENCY`` of them. aiohttp is already a dependency, streams watch
events line by line, and cancels cleanly. The ``kubernetes`` package is still what loads the
configuration — in-cluster service account (token re-read as it rotates) or kubeconfig (contexts,
client certificates, exec plugins) — into its ``Configuration``, which this client reads per request.

Errors: 5xx, 429, connection failures and timeouts are retried ``FLEET_OCI_API_RETRIES`` times
with doubling, jittered backoff (:class:`~shared.backoff.Backoff` from ``FLEET_OCI_API_BACKOFF``,
at most 10 s before jitter), then raise
:class:`KubeUnavailable`; any other non-2xx status raises :class:`KubeApiError` at once (404 and
409 are meaningful to callers).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import ssl
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import structlog

from shared.backoff import Backoff
from shared.errors import FleetError
from shared.settings import Settings

__all__ = ["KubeApiError", "KubeClient", "KubeConfig", "KubeError", "KubeUnavailable", "load_config"]

log = structlog.get_logger("fleet.oci.kube")

#: Longest single backoff between retries.
MAX_BACKOFF = 10.0
#: Seconds a plain (non-watch) request may take.
REQUEST_TIMEOUT = 30.0
#: Largest watch event accepted (a Job or Pod object; the API server caps objects near 1.5 MiB).
MAX_EVENT_BYTES = 4 * 1024 * 1024
#: Seconds the server keeps one watch open (``timeoutSeconds``); the caller re-lists and watches again.
WATCH_SECONDS = 240


class KubeError(FleetError):
    """The Kubernetes API could not do what was asked."""


@dataclass
class KubeApiError(KubeError):
    """A non-2xx answer: ``status`` and the ``Status`` object's ``reason`` and ``message``."""

    status: int
    reason: str
    message: str

    def __str__(self) -> str:
        return f"Kubernetes API {self.status} {self.reason}: {self.message}"


class KubeUnavailable(KubeError):
    """The API stayed unreachable or kept failing (5xx/429) through every retry."""


@dataclass(frozen=True)
class KubeConfig:
    """Where the API is and how to authenticate (read from a ``kubernetes`` ``Configuration``)."""

    host: str
    configuration: Any = None  # kubernetes.client.Configuration, for the token refresh hook
    token: str | None = None

    def authorization(self) -> str | None:
        """The ``Authorization`` header value, refreshed through the configuration's hook."""
        if self.configuration is not None:
            value = self.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
            return str(value) if value else None
        return f"Bearer {self.token}" if self.token else None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS settings of the configuration (``True`` = system defaults)."""
        cfg = self.configuration
        if cfg is None or not self.host.startswith("https"):
            return True
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _load_sync(settings: Settings) -> KubeConfig:
    # The kubernetes package is untyped: reach it through Any.
    client: Any = importlib.import_module("kubernetes.client")
    config: Any = importlib.import_module("kubernetes.config")
    configuration = client.Configuration()
    if settings.oci_kubeconfig is not None:
        config.load_kube_config(config_file=str(settings.oci_kubeconfig), client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    return KubeConfig(host=str(configuration.host).rstrip("/"), configuration=configuration)


async def load_config(settings: Settings) -> KubeConfig:
    """The API configuration (``FLEET_OCI_KUBECONFIG``, else in-cluster, else the default
    kubeconfig), loaded in a thread (kubeconfig exec plugins run subprocesses).

    Raises:
        KubeUnavailable: no usable configuration.
    """
    try:
        return await asyncio.to_thread(_load_sync, settings)
    except Exception as exc:
        raise KubeUnavailable(f"no usable Kubernetes configuration: {exc}") from exc


class KubeClient:
    """Kubernetes API calls over one aiohttp session; use as ``async with KubeClient(...)``.

    Parameters:
        config: where the API is and its credentials.
        retries / backoff: retry budget for outages (see module docstring).
    """

    def __init__(self, config: KubeConfig, *, retries: int = 4, backoff: float = 0.5) -> None:
        self.config = config
        self._retries = retries
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, config: KubeConfig, settings: Settings) -> KubeClient:
        return cls(config, retries=settings.oci_api_retries, backoff=settings.oci_api_backoff)

    async def __aenter__(self) -> KubeClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.config.ssl_context()),
            timeout=aiohttp.ClientTimeout(total=None, connect=10),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        authorization = self.config.authorization()
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def backoff(self) -> Backoff:
        """A fresh retry schedule: ``FLEET_OCI_API_BACKOFF`` doubling to :data:`MAX_BACKOFF`,
        jittered (the workers of a fleet do not retry against the API server in step)."""
        return Backoff(self._backoff, max(self._backoff, MAX_BACKOFF))

    @property
    def retries(self) -> int:
        return self._retries

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        text: bool = False,
    ) -> Any:
        """One API call with retries; the decoded JSON answer (or text when ``text``).

        Raises:
            KubeApiError: a 4xx other than 429 (at once).
            KubeUnavailable: outages through every retry.
        """
        if self._session is None:
            raise RuntimeError("KubeClient used outside `async with`")
        data = json.dumps(body).encode() if body is not None else None
        last = ""
        backoff = self.backoff()
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(backoff.next())
            try:
                async with self._session.request(
                    method,
                    self.config.host + path,
                    params=params,
                    data=data,
                    headers=self._headers(content_type if data is not None else None),
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                ) as response:
                    payload = await response.read()
                    if response.status < 300:
                        if text:
                            return payload.decode(errors="replace")
                        try:
                            return json.loads(payload) if payload else None
                        except ValueError:
                            last = f"{response.status} with a body that is not JSON"
                            log.warning("kubernetes API answer unreadable", method=method, path=path)
                            continue
                    error = _api_error(response.status, payload)
                    if response.status < 500 and response.status != 429:
                        raise error
                    last = str(error)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            log.warning(
                "kubernetes API call failed", method=method, path=path, error=last, attempt=attempt + 1
            )
        raise KubeUnavailable(f"{method} {path} failed {self._retries + 1} times; last: {last}")

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncGenerator[dict[str, Any], None]:
        """The events of one watch (``?watch=1``) on the collection ``path``, until the server
        ends it. No retries here: the caller re-lists and watches again (see
        :func:`workers.oci.kubernetes.follow`).

        Raises:
            KubeApiError / KubeUnavailable: the watch could not be opened or broke off.
        """
        if self._session is None:
            raise RuntimeError("KubeClient used outside `async with`")
        query = {**params, "watch": "1", "timeoutSeconds": str(WATCH_SECONDS), "allowWatchBookmarks": "true"}
        try:
            async with self._session.get(
                self.config.host + path,
                params=query,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30),
            ) as response:
                if response.status >= 300:
                    error = _api_error(response.status, await response.read())
                    if response.status >= 500 or response.status == 429:
                        raise KubeUnavailable(str(error))
                    raise error
                # Not StreamReader.readline: it refuses lines over 128 KiB, and an event carries
                # the whole object (a Job's INPUT alone may be 128 KiB).
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    if len(pending) > MAX_EVENT_BYTES:
                        raise ValueError(f"a watch event over {MAX_EVENT_BYTES} bytes")
                    for line in lines:
                        if line.strip():
                            event = json.loads(line)
                            if isinstance(event, dict):
                                yield event
                if pending.strip():
                    event = json.loads(pending)
                    if isinstance(event, dict):
                        yield event
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise KubeUnavailable(f"watch {path} broke off: {type(exc).__name__}: {exc}") from exc


def _api_error(status: int, payload: bytes) -> KubeApiError:
    reason, message = "", payload[:300].decode(errors="replace")
    with contextlib.suppress(ValueError):
        body = json.loads(payload)
        if isinstance(body, dict):
            reason = str(body.get("reason", ""))
            message = str(body.get("message", message))
    return KubeApiError(status, reason, message)
