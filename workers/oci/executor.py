"""The ``oci`` executor: what the registry calls for every function whose ``execution_type`` is
``oci`` (``shared.registry.executors``), in front of the configured backend.

* ``FLEET_OCI_BACKEND`` picks the backend: ``local`` (subprocess, the default under `fleet up`)
  or ``kubernetes`` (one Job per execution);
* at most ``FLEET_CONCURRENCY`` runs (Jobs) at once per worker — the runtime already holds
  no more deliveries than that; the semaphore also covers cleanups of cancelled runs;
* a function's ``max_concurrency`` is honoured **per worker** (a semaphore per slug).
  A cluster-wide cap would need a counter shared by all replicas (the registry's execution
  history); with N replicas up to N x ``max_concurrency`` runs may overlap;
* on first use with the Kubernetes backend, the reaper removes Jobs left by dead workers
  (:meth:`~workers.oci.kubernetes.KubernetesBackend.reap`) before the first Job is created;
* when the worker traces, each run (the Job or the subprocess, from start to output) is an
  ``oci run`` span naming the backend and the image (docs/observability.md).

Each worker has its own executor, built from its settings by its
:class:`~workers.oci.extension.OciExtension`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import structlog

from shared.errors import ConfigError
from shared.functions import ExecutionContext
from shared.runtime.spans import span
from shared.settings import Settings
from workers.oci.protocol import OciFunction, backend_unavailable, encode_input

__all__ = ["Backend", "OciExecutor", "check_settings", "create_backend"]

log = structlog.get_logger("fleet.oci")


class Backend(Protocol):
    """Runs one execution of an OCI function (same protocol and error codes for every backend)."""

    name: str

    async def run(self, fn: OciFunction, input_json: str, ctx: ExecutionContext) -> dict[str, Any]: ...

    async def close(self) -> None: ...


def check_settings(settings: Settings) -> None:
    """Refuse OCI settings no execution could run with.

    Raises:
        ConfigError: the Kubernetes backend with a blank ``FLEET_OCI_NAMESPACE``.
    """
    if settings.oci_backend == "kubernetes" and not settings.oci_namespace.strip():
        raise ConfigError("FLEET_OCI_NAMESPACE must not be blank")


def create_backend(settings: Settings) -> Backend:
    """The backend ``FLEET_OCI_BACKEND`` names."""
    if settings.oci_backend == "kubernetes":
        from workers.oci.kubernetes import KubernetesBackend

        return KubernetesBackend(settings)
    from workers.oci.local import LocalBackend

    return LocalBackend(settings)


class OciExecutor:
    """Runs ``oci`` registry functions (implements ``shared.registry.executors.Executor``).

    Parameters:
        settings: the worker's (checked with :func:`check_settings`).
        backend: built from ``settings`` on first use when omitted.
        still_running: execution id → False when the execution is known to be over; passed to
            the reaper. Default: the execution history (``function_executions``: completed,
            failed, or a claim whose lease expired) when ``FLEET_DATABASE_URL`` is set, else
            nothing (the reaper goes by finished state, worker label and age).

    Raises:
        ConfigError: ``settings`` cannot work (:func:`check_settings`).
    """

    def __init__(
        self,
        settings: Settings,
        backend: Backend | None = None,
        *,
        still_running: Callable[[str], Awaitable[bool | None]] | None = None,
    ) -> None:
        check_settings(settings)
        self._settings = settings
        self._backend = backend
        self._still_running = still_running
        self._lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._slots: asyncio.Semaphore | None = None
        self._per_slug: dict[str, tuple[int, asyncio.Semaphore]] = {}
        #: execution ids this executor is running (the reaper never touches their Jobs).
        self.live: set[str] = set()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: the executor runs nothing more."""
        return self._closed

    async def start(self) -> Backend:
        """Build the backend and run the reaper once (Kubernetes); idempotent."""
        async with self._lock:
            if self._backend is None:
                self._backend = create_backend(self.settings)
            if not self._started:
                self._started = True
                self._slots = asyncio.Semaphore(self.settings.concurrency)
                reap = getattr(self._backend, "reap", None)
                if reap is not None:
                    try:
                        async with self._history_probe() as still_running:
                            await reap(set(self.live), still_running=still_running)
                    except Exception as exc:
                        log.warning("OCI reaper failed; leftovers stay until their TTL", error=str(exc))
            return self._backend

    @contextlib.asynccontextmanager
    async def _history_probe(self) -> AsyncIterator[Callable[[str], Awaitable[bool | None]] | None]:
        """The reaper's ``still_running``: the one given, else the execution history when
        ``FLEET_DATABASE_URL`` is set (one connection for the whole reap), else ``None``."""
        if self._still_running is not None or not self.settings.database_url:
            yield self._still_running
            return
        from shared.registry.database import connect

        connection = await connect(self.settings.database_url, timeout=self.settings.database_timeout)

        async def still_running(execution_id: str) -> bool | None:
            row = await connection.fetchrow(
                "SELECT status, lease_expires_at IS NOT NULL AND lease_expires_at < now() AS expired "
                "FROM function_executions WHERE id = $1",
                execution_id,
            )
            if row is None:
                return None
            return row["status"] in ("pending", "running") and not row["expired"]

        try:
            yield still_running
        finally:
            await connection.close()

    async def close(self) -> None:
        """Release the backend (waits for in-flight cleanups); later runs fail
        ``backend_unavailable`` (retryable: another worker takes the redelivery)."""
        self._closed = True
        if self._backend is not None:
            await self._backend.close()

    def _slug_slot(self, fn: OciFunction) -> asyncio.Semaphore | None:
        if not fn.max_concurrency:
            return None
        current = self._per_slug.get(fn.slug)
        if current is None or current[0] != fn.max_concurrency:
            # A changed limit applies to runs that start from now on.
            current = (fn.max_concurrency, asyncio.Semaphore(fn.max_concurrency))
            self._per_slug[fn.slug] = current
        return current[1]

    async def execute(self, function: Any, data: Any, ctx: ExecutionContext) -> Any:
        """Run the ``oci`` registry row ``function`` with validated input ``data``."""
        fn = OciFunction.from_record(function, self.settings)
        return await self.run(fn, data, ctx)

    async def run(self, fn: OciFunction, data: Any, ctx: ExecutionContext) -> dict[str, Any]:
        """Run ``fn`` with ``data`` under the worker's and the per-slug limits; its output dict.

        Raises:
            ExecutionFailed: the codes of docs/oci.md (``backend_unavailable``,
                ``image_pull_failed``, ``function_failed``, ``invalid_output``, ``timeout``,
                ``payload_too_large``).
        """
        if self._closed:
            # Its worker stopped: a Job started now would have nobody to await its cleanup.
            raise backend_unavailable(f"the OCI executor is closed; {fn.slug} was not run", retryable=True)
        if not fn.image_ref and not fn.command:
            raise backend_unavailable(f"{fn.slug} has neither image_ref nor command", retryable=False)
        input_json = encode_input(data)
        backend = await self.start()
        assert self._slots is not None
        slot = self._slug_slot(fn)
        async with self._slots:
            if slot is None:
                return await self._run(backend, fn, input_json, ctx)
            async with slot:
                return await self._run(backend, fn, input_json, ctx)

    async def _run(
        self, backend: Backend, fn: OciFunction, input_json: str, ctx: ExecutionContext
    ) -> dict[str, Any]:
        self.live.add(ctx.execution_id)
        attributes = {"fleet.oci.backend": backend.name, "fleet.function": fn.slug}
        if fn.image_ref:
            attributes["container.image.name"] = fn.image_ref
        try:
            with span(ctx.resources, "oci run", attributes=attributes):
                return await backend.run(fn, input_json, ctx)
        finally:
            self.live.discard(ctx.execution_id)
