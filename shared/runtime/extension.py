"""The one seam a piece uses to join a worker: an :class:`Extension`.

A worker is assembled (``shared/runtime/assembly.py``) from a transport, a function resolver and a
list of extensions. Each extension is built from the worker's :class:`~shared.settings.Settings`
(a bad setting raises :class:`~shared.errors.ConfigError` there, before anything runs) and may:

* put middleware at named :class:`Slot` s of the chain (the order of the chain is the order of the
  slots, defined here once);
* provide per-worker resources to handlers and to other extensions (:class:`Resources`: the
  provider HTTP clients, the executors of registry functions, the SSRF policy, the secrets seen);
* take part in the transport's settle step (:meth:`Extension.attach`);
* trace each delivery (:class:`DeliveryTracer`: the tracing extension, when tracing is on);
* start before the worker takes deliveries and stop after it has drained and closed its
  transport (:meth:`Extension.start`, :meth:`Extension.stop`), in reverse order.

Nothing here is process-wide: two workers in one process, with different settings, share no
state. A worked example (the registry) is in docs/developing.md.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shared.errors import ConfigError
from shared.resources import Resources

if TYPE_CHECKING:
    from shared.runtime.envelope import RequestEvent
    from shared.runtime.middleware import Middleware
    from shared.settings import Settings
    from shared.transports.base import Delivery, Settlement, Transport

__all__ = [
    "BaseExtension",
    "DeliveryTracer",
    "Extension",
    "HealthReporter",
    "Slot",
    "WorkerContext",
    "chain_from",
    "extension_layers",
]


class Slot(enum.IntEnum):
    """The places in the middleware chain, outermost first. Each slot holds at most one layer.

    ``TRACING`` (the execution's span, when tracing is on), ``METRICS`` and ``LOGGING`` see every
    outcome; ``ADMISSION`` may refuse or annotate a call
    before any work (deprecation warnings); ``CLAIM`` makes the effect exactly-once (it may
    answer with a stored result); ``TEMPLATES``, ``SCHEMA`` and ``INPUT_MODEL`` turn the request's
    input into the function's; ``CREDENTIALS`` fills ``ctx.credentials``; ``LIMITS`` waits for
    fleet-wide concurrency and rate limits; ``TIMEOUT`` bounds the handler.
    """

    TRACING = 5
    METRICS = 10
    LOGGING = 20
    ADMISSION = 30
    CLAIM = 40
    TEMPLATES = 50
    SCHEMA = 60
    INPUT_MODEL = 70
    CREDENTIALS = 80
    LIMITS = 85
    TIMEOUT = 90


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerContext:
    """What an extension is given when its worker starts.

    ``name`` is ``<group>/<consumer>``; ``stopping()`` turns true once the worker was asked to
    stop (an extension retrying a dependency at start gives up then).
    """

    domain: str
    settings: Settings
    name: str
    resources: Resources
    transport: Transport
    stopping: Callable[[], bool] = field(default=lambda: False)
    #: the worker's readiness report (:meth:`~shared.runtime.worker.Worker.health`): ``ready``,
    #: ``state`` and the extensions' own reports (:class:`HealthReporter`).
    health: Callable[[], Mapping[str, Any]] = field(default=lambda: {"ready": True})
    #: runs a delivery no transport received (a synchronous call) through the worker's pipeline
    #: once and settles its result (:meth:`~shared.runtime.worker.Worker.execute`); ``None``
    #: outside a worker.
    execute: Callable[[Delivery], Awaitable[Settlement]] | None = None
    #: True while the worker takes work (running, not draining); synchronous calls are refused
    #: (503) otherwise.
    accepting: Callable[[], bool] = field(default=lambda: True)
    #: the domain serving ``slug`` when it is not this worker's (``None``: this worker serves it,
    #: or nobody does and the pipeline will say so); a synchronous call for another domain's
    #: function is forwarded there (``shared/runtime/sync.py``).
    domain_of: Callable[[str], Awaitable[str | None]] | None = None


@runtime_checkable
class Extension(Protocol):
    """A piece a worker is assembled from (see module docstring).

    Every method has a default in :class:`BaseExtension`; implement what the piece needs.
    """

    #: shown in logs ("registry", "providers", "http-policy", ...).
    name: str

    def middleware(self) -> Mapping[Slot, Middleware]:
        """Layers this extension puts in the chain, by slot (read once, when the worker is built)."""
        ...

    def attach(self, transport: Transport) -> None:
        """Called once with the worker's transport before it opens (e.g. to join its settle)."""
        ...

    async def start(self, ctx: WorkerContext) -> bool:
        """Open what the extension needs before deliveries are taken. Returns False when the
        worker was stopped first (``ctx.stopping()``); raises to fail the worker's start."""
        ...

    async def stop(self) -> None:
        """Release what :meth:`start` opened; called once the worker has drained, also after a
        failed or interrupted start. Must not raise for a start that never happened."""
        ...


@runtime_checkable
class HealthReporter(Protocol):
    """An extension whose state belongs in ``/readyz`` (the registry: database up or degraded)."""

    name: str

    def health(self) -> Mapping[str, Any]:
        """A small JSON-able report; it never makes the worker unready by itself."""
        ...


@runtime_checkable
class DeliveryTracer(Protocol):
    """An extension that traces the worker's deliveries (``shared/runtime/tracing.py``; only
    there when tracing is configured, so an untraced worker makes none of these calls)."""

    name: str

    def process(
        self, delivery: Delivery, event: RequestEvent, run: Callable[[], Awaitable[Settlement]]
    ) -> Awaitable[Settlement]:
        """``run()`` decides the fate of a decoded request: await it inside the delivery's span."""
        ...

    def result_trace(self, delivery: Delivery) -> tuple[str, str | None]:
        """``(traceparent, tracestate)`` of the span that publishes ``delivery``'s result (called
        while its result is encoded, inside :meth:`process`); the same span on a second call."""
        ...

    def settled(self, settlements: Sequence[Settlement], *, published: bool) -> None:
        """The transport settled these (``published``: their results went out; False when the
        worker gave up at its shutdown deadline)."""
        ...


class BaseExtension:
    """Defaults for :class:`Extension`: no middleware, no transport hook, nothing to open."""

    name = "extension"

    def middleware(self) -> Mapping[Slot, Middleware]:
        return {}

    def attach(self, transport: Transport) -> None:
        return None

    async def start(self, ctx: WorkerContext) -> bool:
        return True

    async def stop(self) -> None:
        return None


def chain_from(layers: Iterable[tuple[Slot, Middleware]]) -> list[Middleware]:
    """``layers`` in slot order, outermost first; two layers in one slot is a wiring bug."""
    by_slot: dict[Slot, Middleware] = {}
    for slot, layer in layers:
        if slot in by_slot:
            raise ConfigError(f"two middleware layers in slot {slot.name}")
        by_slot[slot] = layer
    return [by_slot[slot] for slot in sorted(by_slot)]


def extension_layers(extensions: Sequence[Extension]) -> list[tuple[Slot, Middleware]]:
    """Every ``(slot, layer)`` the extensions contribute."""
    return [(slot, layer) for ext in extensions for slot, layer in ext.middleware().items()]
