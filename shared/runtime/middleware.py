"""Cross-cutting concerns around a function call, as an onion of middleware.

Each middleware is an async callable ``(call, call_next) -> output``: it may look at or change
the :class:`Call`, run code before and after ``await call_next(call)``, turn exceptions into
other exceptions, or answer without calling the next layer (idempotency does, from the
registry issue on). The chain is composed once per worker, not per message.

The order of the chain is the order of :class:`shared.runtime.extension.Slot` (defined there
once): a worker is assembled from layers placed at slots by its core and its extensions
(``shared/assemble.py``); :func:`default_middleware` is the core alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, ValidationError

from shared.errors import ControlSignal, Defer, ExecutionFailed, ExecutionTimeout, InvalidInput
from shared.functions import ExecutionContext, FunctionSpec
from shared.runtime.envelope import RequestEvent, violations
from shared.runtime.metrics import Metrics

__all__ = [
    "Answer",
    "Call",
    "CallNext",
    "InputValidationMiddleware",
    "LoggingMiddleware",
    "MetricsMiddleware",
    "Middleware",
    "ResultRecorder",
    "TimeoutMiddleware",
    "compose",
    "default_middleware",
]


@dataclass(slots=True)
class Call:
    """One execution on its way through the middleware chain.

    ``input`` starts as the request's raw input dict; middleware may replace it (templates
    resolve it, validation turns it into the function's input model). ``timeout`` is the
    effective limit in seconds. ``state`` is scratch space for middleware to share facts;
    ``state["warnings"]`` (a list of strings), when present, is published in the result's
    ``warnings`` (e.g. "function is deprecated").
    """

    event: RequestEvent
    spec: FunctionSpec
    ctx: ExecutionContext
    input: Any
    timeout: float
    started_monotonic: float
    state: dict[str, Any] = field(default_factory=dict)
    #: False when the request's bytes contain no ``{{`` at all, so template resolution can
    #: skip walking the input (one substring search of the body instead, done by the worker).
    may_have_templates: bool = True


CallNext = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete result ``data`` dict that middleware returns instead of an output, to be
    published verbatim (no new timestamps): how a duplicate of a finished execution is answered
    with the stored result, identical to the first one."""

    data: dict[str, Any]


class ResultRecorder(Protocol):
    """Sees the final ``data`` of every result before it is published (execution history).

    ``call`` is ``None`` when the request failed before a function was resolved (invalid event,
    unknown function, ...). ``answered`` is True when ``data`` is a stored :class:`Answer`
    being republished. The worker awaits it before settling; implementations batch their I/O
    so a batch of deliveries costs one round trip, and raise
    :class:`~shared.errors.InfrastructureError` only when the result must not be published.
    """

    async def record(
        self, data: dict[str, Any], call: Call | None, *, answered: bool, data_json: bytes | None = None
    ) -> None:
        """``data_json``: ``data`` as published (encoded, secrets scrubbed), when the worker has it."""

    async def before_settle(self) -> None:
        """Called by the settle loop before it publishes a batch (and again when it retries):
        whatever was recorded so far must be stored by the time this returns. Raises
        :class:`~shared.errors.InfrastructureError` to hold the batch back (it is retried)."""


class Middleware(Protocol):
    """``await call_next(call)`` to go on. A layer may also define ``applies(spec) -> bool``:
    for functions it returns False for, the chain skips the layer entirely (no coroutine) — for
    work that depends only on the function, never on the call (:func:`compose`)."""

    async def __call__(self, call: Call, call_next: CallNext, /) -> Any: ...


async def _run_handler(call: Call) -> Any:
    output = await call.spec.handler(call.input, call.ctx)
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    return output


def compose(middleware: Sequence[Middleware]) -> CallNext:
    """Fold ``middleware`` (outermost first) around the handler call into one callable."""
    call_next: CallNext = _run_handler
    for layer in reversed(middleware):
        call_next = _bind(layer, call_next)
    return call_next


def _bind(layer: Middleware, call_next: CallNext) -> CallNext:
    # A plain function returning the layer's coroutine: one coroutine per layer, not two.
    applies: Callable[[FunctionSpec], bool] | None = getattr(layer, "applies", None)
    if applies is None:

        def bound(call: Call) -> Awaitable[Any]:
            return layer(call, call_next)

        return bound

    # A layer with nothing to do for this function is stepped over without a coroutine.
    def bound_if(call: Call) -> Awaitable[Any]:
        if applies(call.spec):
            return layer(call, call_next)
        return call_next(call)

    return bound_if


#: How often the deadline sweeper looks for overdue calls: timeouts fire up to this late.
TIMEOUT_RESOLUTION = 0.05


class TimeoutMiddleware:
    """Runs the rest of the chain under ``call.timeout``; overrun fails with ``timeout``.

    One sweeper task per middleware instance (so per worker) cancels overdue calls every
    :data:`TIMEOUT_RESOLUTION` seconds, instead of a timer handle per call as
    ``asyncio.timeout`` sets up: measured at about 0.3 µs per call against 6 µs, on the path
    every message takes. A cancellation this middleware did not cause (shutdown) still
    propagates as a cancellation.
    """

    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + call.timeout
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep(), name="fleet-timeouts")
        try:
            return await call_next(call)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            raise ExecutionTimeout(
                f"{call.spec.slug} did not finish within {call.timeout:g}s",
                details={"timeout_seconds": call.timeout},
            ) from None
        finally:
            del self._deadlines[task]
            if task in self._expired:
                # Undo our own cancel request, so the task is not left "cancelling".
                self._expired.discard(task)
                task.uncancel()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while self._deadlines:
            await asyncio.sleep(TIMEOUT_RESOLUTION)
            now = loop.time()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()


class InputValidationMiddleware:
    """Validates the input into the function's pydantic model (``invalid_input`` with every
    violation as ``{path, message}``). Functions without a model get the dict as it is."""

    @staticmethod
    def applies(spec: FunctionSpec) -> bool:
        return spec.input_model is not None

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        model = call.spec.input_model
        if model is not None and not isinstance(call.input, model):
            try:
                call.input = model.model_validate(call.input)
            except ValidationError as exc:
                raise InvalidInput(
                    f"input does not match {call.spec.slug}'s schema",
                    details=violations(exc),
                ) from None
        return await call_next(call)


class LoggingMiddleware:
    """One log line per failed execution (``info``) and per completion (``debug``).

    Control signals (retry/drop) are logged as what they are, never as errors; a deferral (a
    call waiting for a limit or for its duplicate to finish) only at ``debug``: under load a
    limited function is deferred over and over, and ``fleet_deferrals_total`` counts it. Unexpected
    exceptions are logged with their traceback here, once, before the runtime turns them into
    ``handler_error``.
    """

    def __init__(self, logger: Any = None) -> None:
        self._log = logger or structlog.get_logger("fleet.execution")
        self._debug_enabled: bool | None = None

    @property
    def _debug(self) -> bool:
        # Building the completion line's arguments costs more than checking the level; the
        # level is read at the first call (logging is configured by then), not per message.
        if self._debug_enabled is None:
            is_enabled = getattr(self._log, "is_enabled_for", None)
            self._debug_enabled = True if is_enabled is None else bool(is_enabled(logging.DEBUG))
        return self._debug_enabled

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        try:
            output = await call_next(call)
        except ExecutionFailed as exc:
            self._log.info(
                "execution failed",
                execution_id=call.ctx.execution_id,
                function=call.spec.slug,
                code=str(exc.code),
                error=exc.message,
                attempt=call.ctx.attempt,
            )
            raise
        except Defer as signal:
            if self._debug:
                self._log.debug(
                    "execution deferred",
                    execution_id=call.ctx.execution_id,
                    function=call.spec.slug,
                    cause=signal.cause,
                    reason=str(signal),
                    delay=signal.delay,
                    attempt=call.ctx.attempt,
                )
            raise
        except ControlSignal as signal:
            self._log.info(
                "execution deferred",
                execution_id=call.ctx.execution_id,
                function=call.spec.slug,
                signal=type(signal).__name__,
                reason=str(signal),
                attempt=call.ctx.attempt,
            )
            raise
        except Exception:
            self._log.exception("handler raised", execution_id=call.ctx.execution_id, function=call.spec.slug)
            raise
        if self._debug:
            self._log.debug(
                "execution completed",
                execution_id=call.ctx.execution_id,
                function=call.spec.slug,
                duration_ms=round((time.monotonic() - call.started_monotonic) * 1000, 3),
            )
        return output


class MetricsMiddleware:
    """Counts executions by function and outcome and observes their duration; deferrals also by
    what they wait for (``fleet_deferrals_total``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        outcome = "completed"
        try:
            return await call_next(call)
        except ExecutionFailed as exc:
            outcome = str(exc.code)
            raise
        except ControlSignal as signal:
            outcome = type(signal).__name__.lower()
            if isinstance(signal, Defer):
                self._metrics.count_deferral(signal.cause)
            raise
        except BaseException:
            outcome = "handler_error"
            raise
        finally:
            self._metrics.observe_execution(
                call.spec.slug, outcome, time.monotonic() - call.started_monotonic
            )


def default_middleware(metrics: Metrics, *, before_timeout: Sequence[Middleware] = ()) -> list[Middleware]:
    """The core chain of a worker without extensions, in slot order (the order of
    :class:`~shared.runtime.extension.Slot`, defined once): metrics → logging → input model →
    ``before_timeout`` (at most one layer, at the credentials slot) → timeout → handler."""
    from shared.runtime.extension import Slot, chain_from

    return chain_from(
        [
            (Slot.METRICS, MetricsMiddleware(metrics)),
            (Slot.LOGGING, LoggingMiddleware()),
            (Slot.INPUT_MODEL, InputValidationMiddleware()),
            *((Slot.CREDENTIALS, layer) for layer in before_timeout),
            (Slot.TIMEOUT, TimeoutMiddleware()),
        ]
    )
