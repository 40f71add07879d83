"""A fake daprd secrets API on loopback (dapr-wire.md §4), recording every request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeSecretStore:
    """``GET /v1.0/secrets/<store>/<key>``: 200 ``{key: value}``; 204 for keys in ``empty``;
    500 ``ERR_SECRET_GET`` for unknown keys; 401 ``ERR_SECRET_STORE_NOT_FOUND`` for another
    store; 401 when ``token`` is set and ``dapr-api-token`` differs."""

    store: str
    secrets: dict[str, str]
    empty: set[str] = field(default_factory=set)
    token: str | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _get(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, request.headers.get("dapr-api-token")))
        if self.token is not None and request.headers.get("dapr-api-token") != self.token:
            return web.json_response(
                {"errorCode": "ERR_UNAUTHORIZED", "message": "invalid api token"}, status=401
            )
        store, key = request.match_info["store"], request.match_info["key"]
        if store != self.store:
            return web.json_response(
                {"errorCode": "ERR_SECRET_STORE_NOT_FOUND", "message": f"secret store {store} not found"},
                status=401,
            )
        if key in self.empty:
            return web.Response(status=204)
        if key not in self.secrets:
            return web.json_response(
                {"errorCode": "ERR_SECRET_GET", "message": f"failed getting secret with key {key}"},
                status=500,
            )
        return web.json_response({key: self.secrets[key]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1.0/secrets/{store}/{key}", self._get)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
