"""Credentials join every worker as one extension: the middleware that fills ``ctx.credentials``
and the worker's own :class:`~shared.credentials.SecretRegistry` of every value it resolved.

Where values come from and how they are masked is ``shared/credentials.py``; this module is the
runtime side (it needs :class:`~shared.runtime.middleware.Call`), so that module imports nothing
of the runtime.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shared.contract import ErrorCode
from shared.credentials import CredentialResolver, SecretRegistry, SecretSource
from shared.errors import ExecutionFailed
from shared.functions import FunctionSpec
from shared.runtime.extension import BaseExtension, Slot, WorkerContext
from shared.runtime.middleware import Call, CallNext, Middleware
from shared.settings import Settings

__all__ = ["CredentialsExtension", "CredentialsMiddleware"]


class CredentialsMiddleware:
    """Fills ``ctx.credentials`` with the function's declared keys before it runs; a missing
    key fails ``credentials_missing`` (naming the key and what to set) without calling the
    function."""

    def __init__(self, resolver: CredentialResolver) -> None:
        self._resolver = resolver

    @staticmethod
    def applies(spec: FunctionSpec) -> bool:
        return bool(spec.credentials or spec.optional_credentials)

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        keys = call.spec.credentials
        optional = call.spec.optional_credentials
        if keys or optional:
            found, missing = await self._resolver.resolve((*keys, *optional))
            missing = [key for key in missing if key not in optional]
            if missing:
                raise ExecutionFailed(
                    f"missing credentials for {call.spec.slug}: {', '.join(missing)}; "
                    + self._resolver.how_to_provide(missing),
                    code=ErrorCode.CREDENTIALS_MISSING,
                    details={"missing": missing},
                )
            call.ctx = dataclasses.replace(call.ctx, credentials=found)
        return await call_next(call)


class CredentialsExtension(BaseExtension):
    """One worker's credentials: :attr:`secrets` (every value this worker resolved; the worker
    scrubs its results and its tasks' log lines with it, and provides it in ``ctx.resources``)
    and the resolver filling it (sources from the settings, then ``store``: the secret store in
    the database, which ``shared/assemble.py`` gives a worker with a registry), behind the
    middleware at ``Slot.CREDENTIALS``. Every worker has one (``shared/assemble.py``)."""

    name = "credentials"

    def __init__(self, settings: Settings, *, store: SecretSource | None = None) -> None:
        self.secrets = SecretRegistry()
        self.resolver = CredentialResolver.from_settings(settings, self.secrets, store=store)
        self._middleware = CredentialsMiddleware(self.resolver)

    def middleware(self) -> Mapping[Slot, Middleware]:
        return {Slot.CREDENTIALS: self._middleware}

    async def start(self, ctx: WorkerContext) -> bool:
        ctx.resources.provide(SecretRegistry, self.secrets)
        return True

    async def stop(self) -> None:
        await self.resolver.close()
