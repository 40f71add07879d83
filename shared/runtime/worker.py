"""The consume loop: one per worker process, the same for every transport.

``receive → decode → resolve → middleware chain → result → settle (publish, then ack)``

Invariants (each has a test):

* the loop never dies of one message: a handler exception becomes a failed result, a bug in
  the runtime itself becomes a RETRY of that delivery, and infrastructure errors (broker down,
  publish failing) are logged, backed off and retried while the loop keeps running;
* at most ``concurrency`` deliveries are executing at once (from receipt until their outcome is
  decided), and at most twice that are held unsettled (until the transport accepted their
  settlement): the next batch is read while the last one is being published, and a broker
  that cannot take acks still stops intake;
* nothing is acknowledged that was not answered: a delivery is acked only by the transport's
  ``settle``, after its result was published;
* shutdown (:meth:`Worker.stop`, wired to SIGTERM/SIGINT) stops intake, lets in-flight work
  finish within ``shutdown_timeout``, settles it, and leaves whatever is unfinished pending
  for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import signal
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
import structlog

from shared.backoff import REDIS_RECONNECT, Backoff
from shared.contract import ErrorCode
from shared.credentials import SecretRegistry, scrub_then_truncate, working_for
from shared.errors import (
    Defer,
    Drop,
    ExecutionFailed,
    InfrastructureError,
    InvalidEvent,
    PayloadTooLarge,
    Retry,
    UndecodableEvent,
    UnknownFunction,
    WrongDomain,
)
from shared.functions import BUILTINS, ExecutionContext, FunctionResolver, FunctionSpec
from shared.resources import Resources
from shared.retry import effective_policy
from shared.runtime.credentials import CredentialsExtension
from shared.runtime.envelope import (
    RequestEvent,
    decode_request,
    encode_result,
    peek_id,
    utc_now_iso,
)
from shared.runtime.extension import DeliveryTracer, Extension, HealthReporter, WorkerContext
from shared.runtime.metrics import Metrics
from shared.runtime.middleware import (
    Answer,
    Call,
    Middleware,
    ResultRecorder,
    compose,
    default_middleware,
)
from shared.settings import Settings
from shared.transports.base import Delivery, Outcome, Settlement, Transport

__all__ = ["Backoff", "Worker", "WorkerState", "run_until_signalled"]

log = structlog.get_logger("fleet.worker")

E = TypeVar("E")

#: At most one "dependency unavailable" warning per this many seconds.
INFRA_WARNING_INTERVAL = 10.0
#: Backoff while the transport fails (broker or sidecar down): 0.05 s doubling to 0.5 s, ±50 %
#: jitter. A broker that comes back is tried again within 0.75 s, yet never more than a few
#: times a second (a refused connection costs next to nothing on either side).
RECONNECT_INITIAL, RECONNECT_MAX = REDIS_RECONNECT
#: Longest message text kept from an unexpected handler exception.
MAX_ERROR_MESSAGE = 1000


def reconnect_backoff() -> Backoff:
    """The backoff after a transport error (opening, receiving, settling)."""
    return Backoff(RECONNECT_INITIAL, RECONNECT_MAX)


class WorkerState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class _InProcess:
    """One delivery on its way through :meth:`Worker._process`: what is known of it so far."""

    __slots__ = ("call", "delivery", "event", "execution_id", "slug", "started", "started_at")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.started_at = utc_now_iso()
        self.started = time.monotonic()
        self.execution_id = ""
        self.slug = ""
        self.event: RequestEvent | None = None
        self.call: Call | None = None


class Worker:
    """Runs one domain's functions from one transport.

    Parameters:
        domain: the domain served (functions of other domains fail ``wrong_domain``).
        transport: where deliveries come from and settlements go (see ``shared.transports``).
        settings: concurrency, batch size, limits, shutdown timeout, names.
        resolver: looks functions up by slug (the in-code built-ins by default).
        middleware: the chain around each call, outermost first (:func:`default_middleware`).
        metrics: counters shared with ``/metrics`` and the benchmark.
        recorder: sees every result's final data before it is published (history).
        burst: stop by itself once the topic is idle (nothing received for ``block_ms``) and
            nothing is in flight — for one-shot jobs and tests (arq's burst mode).
        extensions: the pieces the worker was assembled from (``shared.runtime.extension``):
            started in order before the transport opens, stopped in reverse after it closed.
        resources: what the extensions provide to handlers (``ctx.resources``).

    :attr:`secrets` is the worker's :class:`~shared.credentials.SecretRegistry` (its
    :class:`~shared.runtime.credentials.CredentialsExtension`'s; an empty one without): results
    and handler errors are scrubbed with it, and so is every log line its tasks emit.
    """

    def __init__(
        self,
        *,
        domain: str,
        transport: Transport,
        settings: Settings,
        resolver: FunctionResolver = BUILTINS,
        middleware: Sequence[Middleware] | None = None,
        metrics: Metrics | None = None,
        recorder: ResultRecorder | None = None,
        burst: bool = False,
        extensions: Sequence[Extension] = (),
        resources: Resources | None = None,
    ) -> None:
        self.domain = domain
        self.burst = burst
        self.extensions = tuple(extensions)
        self.resources = resources if resources is not None else Resources()
        self.secrets = _secrets_of(self.extensions, self.resources)
        #: traces each delivery when tracing is configured (docs/observability.md); else None.
        self._tracer = next((e for e in self.extensions if isinstance(e, DeliveryTracer)), None)
        self.recorder = recorder
        self.transport = transport
        self.settings = settings
        self.resolver = resolver
        self.metrics = metrics or Metrics()
        self.resources.provide(Metrics, self.metrics)
        self.name = f"{settings.group_for(domain)}/{settings.consumer_name}"
        self._chain = compose(middleware if middleware is not None else default_middleware(self.metrics))
        self._concurrency = settings.concurrency
        self._batch_size = settings.batch_size
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._held = 0
        #: deliveries received and not yet decided (``_held`` minus those awaiting settlement).
        self._executing = 0
        #: delivery tasks and synchronous calls (the drain waits for both).
        self._tasks: set[asyncio.Task[Any]] = set()
        self._settle_queue: asyncio.Queue[Settlement] = asyncio.Queue()
        self._abandon_settling = False
        self._next_infra_warning = 0.0
        self._counts_deliveries = bool(getattr(transport, "counts_deliveries", False))
        self.state = WorkerState.NEW
        #: set once the transport is open and the loop is taking deliveries.
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the worker to drain and stop; safe to call from a signal handler, twice."""
        self._stopping.set()
        self._wake.set()

    def extension(self, kind: type[E]) -> E:
        """This worker's extension of class ``kind`` (``worker.extension(RegistryExtension)``);
        :class:`LookupError` when it has none."""
        for extension in self.extensions:
            if isinstance(extension, kind):
                return extension
        raise LookupError(f"worker {self.name} has no {kind.__name__}")

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def health(self) -> dict[str, Any]:
        """What ``/readyz`` reports: ``ready`` once the transport is open and intake runs (false
        again from :meth:`stop`), the state, and each extension's own report (``health()``; a
        degraded registry is reported there without making the worker unready)."""
        report: dict[str, Any] = {
            "ready": self.state is WorkerState.RUNNING and not self.stopping,
            "state": self.state.value,
            "worker": self.name,
            "domain": self.domain,
            "transport": self.transport.name,
            "in_flight": self._held,
        }
        for extension in self.extensions:
            if isinstance(extension, HealthReporter):
                report.setdefault("extensions", {})[extension.name] = extension.health()
        return report

    @property
    def held(self) -> int:
        """Deliveries received and not yet settled (at most twice the concurrency)."""
        return self._held

    @property
    def executing(self) -> int:
        """Deliveries received and not yet decided (at most the concurrency)."""
        return self._executing

    async def run(self) -> None:
        """Open the transport, consume until :meth:`stop`, then drain and close."""
        if self.state is not WorkerState.NEW:
            raise RuntimeError("a Worker runs once")
        self.state = WorkerState.STARTING
        # Every task started from here (extensions', deliveries', the settler) inherits it: a
        # line they log is scrubbed of this worker's secrets, not of another worker's.
        secrets_token = working_for(self.secrets)
        try:
            await self._run()
        finally:
            secrets_token.var.reset(secrets_token)

    async def _run(self) -> None:
        settler: asyncio.Task[None] | None = None
        started: list[Extension] = []
        try:
            if not await self._start_extensions(started):
                return
            if not await self._open():
                return
            settler = asyncio.create_task(self._settle_loop(), name="fleet-settle")
            self.state = WorkerState.RUNNING
            self.ready.set()
            log.info("worker started", worker=self.name, domain=self.domain, transport=self.transport.name)
            await self._intake_loop()
        finally:
            await self._drain(settler)
            await self._stop_extensions(started)
            self.state = WorkerState.STOPPED
            log.info("worker stopped", worker=self.name)

    async def _start_extensions(self, started: list[Extension]) -> bool:
        """Start each extension in order; False when the worker was stopped meanwhile."""
        ctx = WorkerContext(
            domain=self.domain,
            settings=self.settings,
            name=self.name,
            resources=self.resources,
            transport=self.transport,
            stopping=lambda: self.stopping,
            health=self.health,
            execute=self.execute,
            accepting=lambda: self.accepting,
            domain_of=self._other_domain,
        )
        for extension in self.extensions:
            started.append(extension)
            if not await extension.start(ctx) or self.stopping:
                return False
        return True

    async def _stop_extensions(self, started: list[Extension]) -> None:
        for extension in reversed(started):
            try:
                await extension.stop()
            except Exception as exc:
                log.warning("extension failed to stop", extension=extension.name, error=str(exc))

    async def _open(self) -> bool:
        backoff = reconnect_backoff()
        while not self.stopping:
            try:
                await self.transport.open()
                return True
            except InfrastructureError as exc:
                self.metrics.infra_errors += 1
                delay = backoff.next()
                log.warning("transport not reachable; retrying", error=str(exc), retry_in=round(delay, 2))
                await self._sleep(delay)
        return False

    async def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when the worker is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # ------------------------------------------------------------------ intake
    async def _intake_loop(self) -> None:
        backoff = reconnect_backoff()
        while not self.stopping:
            # At most `concurrency` executions at once, and at most twice that unsettled: the next
            # batch is read (and claimed) while the last one's results are being published, but
            # a broker that cannot take acks still stops intake.
            free = min(
                self._concurrency - self._executing, 2 * self._concurrency - self._held, self._batch_size
            )
            if free <= 0:
                # No await between computing `free` and clear(): no wake-up can be lost.
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                batch = await self.transport.receive(free)
            except InfrastructureError as exc:
                self.metrics.infra_errors += 1
                delay = backoff.next()
                now = time.monotonic()
                if now >= self._next_infra_warning:  # retries are frequent: one line per interval
                    self._next_infra_warning = now + INFRA_WARNING_INTERVAL
                    log.warning("receive failed; backing off", error=str(exc), retry_in=round(delay, 2))
                await self._sleep(delay)
                continue
            except Exception:
                self.metrics.infra_errors += 1
                delay = backoff.next()
                log.exception("receive raised unexpectedly; backing off", retry_in=round(delay, 2))
                await self._sleep(delay)
                continue
            backoff.reset()
            if not batch and self.burst and self._held == 0:
                log.info("burst: topic idle, stopping", worker=self.name)
                self.stop()
                break
            for delivery in batch:
                self._held += 1
                self._executing += 1
                task = asyncio.create_task(self._handle(delivery))
                self._tasks.add(task)
                task.add_done_callback(self._reap)
            self.metrics.in_flight = self._held

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            # Cancelled at the drain deadline: never settled, so it stays pending.
            self._held -= 1
            self._executing -= 1
            return
        # `_handle` never raises; if it did, surface the bug instead of losing it (arq's reaper).
        exc = task.exception()
        if exc is not None:
            log.error("runtime bug: delivery task raised", error=repr(exc))
            self._held -= 1
            self._executing -= 1

    async def _handle(self, delivery: Delivery) -> None:
        settlement = await self._fate(delivery)
        self._executing -= 1
        self._wake.set()
        self._settle_queue.put_nowait(settlement)

    async def _fate(self, delivery: Delivery) -> Settlement:
        """:meth:`_process`, with what escapes it turned into a RETRY of the delivery."""
        try:
            return await self._process(delivery)
        except asyncio.CancelledError:
            raise
        except InfrastructureError as exc:
            # A dependency of the function path (the registry's database) is down: not this
            # message's fault. Leave it for redelivery; one warning per interval, not per message.
            self.metrics.infra_errors += 1
            now = time.monotonic()
            if now >= self._next_infra_warning:
                self._next_infra_warning = now + INFRA_WARNING_INTERVAL
                log.warning("dependency unavailable; deliveries left for redelivery", error=str(exc))
            return Settlement(delivery, Outcome.RETRY, reason=f"unavailable: {exc}")
        except Exception as exc:
            log.exception(
                "runtime error while processing; will be redelivered", message_id=delivery.message_id
            )
            return Settlement(delivery, Outcome.RETRY, reason=f"runtime error: {exc!r}")

    # ------------------------------------------------------------------ synchronous calls
    @property
    def accepting(self) -> bool:
        """True while the worker takes work: running and not draining."""
        return self.state is WorkerState.RUNNING and not self.stopping

    async def execute(self, delivery: Delivery) -> Settlement:
        """Run a delivery that no transport received — a synchronous call (``POST /execute``,
        ``shared/runtime/sync.py``) — through the same pipeline as a received one, once.

        It counts as in flight (intake reads that many fewer) and the drain waits for it, as for
        any delivery. A result (ACK or DROP) is settled on its own as :attr:`Outcome.REPLY`:
        recorded, stored as its execution's answer and published, nothing acked or
        dead-lettered; the settlement returned carries it. RETRY and DEFER come back unsettled:
        the caller decides whether and when to run it again. The caller going away (its task
        cancelled) does not stop the run: its result is still recorded and published.
        Raises ``RuntimeError`` unless :attr:`accepting`.
        """
        if not self.accepting:
            raise RuntimeError(f"worker {self.name} is not taking work ({self.state.value})")
        self._held += 1
        self._executing += 1
        self.metrics.in_flight = self._held
        task = asyncio.create_task(self._execute(delivery), name="fleet-sync-call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                # The run itself was cancelled at the drain deadline, not its caller.
                return Settlement(delivery, Outcome.RETRY, reason="cancelled at the shutdown deadline")
            raise

    async def _execute(self, delivery: Delivery) -> Settlement:
        decided = False
        try:
            settlement = await self._fate(delivery)
            decided = True
            self._executing -= 1
            if settlement.outcome is Outcome.ACK or settlement.outcome is Outcome.DROP:
                settlement = dataclasses.replace(settlement, outcome=Outcome.REPLY)
                await self._settle_reply(settlement)
                self.metrics.count_delivery(settlement.outcome.value)
            return settlement
        finally:
            if not decided:  # cancelled at the drain deadline
                self._executing -= 1
            self._held -= 1
            self.metrics.in_flight = self._held
            self._wake.set()

    # ------------------------------------------------------------------ processing
    async def _process(self, delivery: Delivery) -> Settlement:
        """Decide the fate of one delivery: its result (completed or failed) and outcome."""
        d = _InProcess(delivery)
        body = delivery.body
        if len(body) > self.settings.max_payload_bytes:
            limit = self.settings.max_payload_bytes
            too_large = PayloadTooLarge(
                f"event is {len(body)} bytes; the limit is {limit}",
                details={"size": len(body), "limit": limit},
            )
            d.execution_id = peek_id(body) or ""
            if not d.execution_id:  # nobody to answer: dead-letter it
                return Settlement(delivery, Outcome.DROP, reason=f"{too_large.code}: {too_large.message}")
            return await self._failed(d, too_large)
        try:
            event = d.event = decode_request(body)
        except UndecodableEvent as exc:
            log.warning("undecodable delivery dropped", message_id=delivery.message_id, error=exc.message)
            return Settlement(delivery, Outcome.DROP, reason=f"{ErrorCode.INVALID_EVENT}: {exc.message}")
        except InvalidEvent as exc:
            d.execution_id, d.slug = exc.execution_id or "", exc.slug or ""
            return await self._failed(d, exc)
        d.execution_id, d.slug = event.id, event.function
        if self._tracer is not None:
            return await self._tracer.process(delivery, event, lambda: self._decide(d, event))
        return await self._decide(d, event)

    async def _decide(self, d: _InProcess, event: RequestEvent) -> Settlement:
        """The fate of a decoded request: its result (completed or failed) and outcome."""
        delivery = d.delivery
        if delivery.delivery_count > self.settings.max_deliveries:
            return await self._exhausted(d, delivery.last_error)
        try:
            spec = await self._resolve_request(d, event)
        except ExecutionFailed as exc:
            return await self._failed(d, exc)
        call = d.call = self._call(d, event, spec)
        try:
            output = await self._chain(call)
        except Defer as signal_:
            return Settlement(delivery, Outcome.DEFER, reason=signal_.reason, delay=signal_.delay)
        except Retry as signal_:
            if delivery.delivery_count >= self.settings.max_deliveries:
                return await self._exhausted(d, signal_.reason)
            return Settlement(delivery, Outcome.RETRY, reason=signal_.reason)
        except Drop as signal_:
            dropped = ExecutionFailed(signal_.reason, code=ErrorCode.DROPPED)
            return await self._failed(d, dropped, outcome=Outcome.DROP, reason=signal_.reason)
        except ExecutionFailed as exc:
            return await self._failed_or_retried(d, spec, exc)
        except Exception as exc:  # a handler bug: a failed result, never a dead worker
            # Scrubbed before the cut: a secret straddling it would leave its head otherwise.
            message = scrub_then_truncate(
                f"{type(exc).__name__}: {exc}",
                MAX_ERROR_MESSAGE,
                known=self.secrets,
                secrets=call.ctx.credentials.values(),
            )
            return await self._failed(d, ExecutionFailed(message, code=ErrorCode.HANDLER_ERROR))
        if isinstance(output, Answer):
            await self._record(output.data, call, answered=True)
            return Settlement(delivery, Outcome.ACK, result=self._encode(d, output.data)[0])
        return await self._completed(d, output)

    def _call(self, d: _InProcess, event: RequestEvent, spec: FunctionSpec) -> Call:
        request = event.data
        return Call(
            event=event,
            spec=spec,
            ctx=ExecutionContext(
                execution_id=event.id,
                function=d.slug,
                attempt=d.delivery.delivery_count,
                domain=self.domain,
                workflow_execution_id=request.workflow_execution_id,
                node_id=request.node_id,
                context=request.context,
                settings=self.settings,
                resources=self.resources,
            ),
            input=request.input,
            timeout=self._timeout_for(spec, event),
            started_monotonic=d.started,
            may_have_templates=b"{{" in d.delivery.body,
        )

    async def _completed(self, d: _InProcess, output: Any) -> Settlement:
        data = self._result_data(d, "completed")
        data["output"] = output
        warnings = d.call.state.get("warnings") if d.call is not None else None
        if warnings:
            data["warnings"] = list(warnings)
        try:
            result, data_json = self._encode(d, data)
        except TypeError as exc:
            failure = ExecutionFailed(f"output is not JSON-serialisable: {exc}", code=ErrorCode.HANDLER_ERROR)
            return await self._failed(d, failure)
        await self._record(data, d.call, answered=False, data_json=data_json)
        return Settlement(d.delivery, Outcome.ACK, result=result)

    async def _record(
        self, data: dict[str, Any], call: Call | None, *, answered: bool, data_json: bytes | None = None
    ) -> None:
        if self.recorder is not None:
            await self.recorder.record(data, call, answered=answered, data_json=data_json)

    async def _resolve_request(self, d: _InProcess, event: RequestEvent) -> FunctionSpec:
        """The function the request names by slug, by registry id (``function_id``), or both
        (then they must agree); ``d.slug`` is the resolved slug afterwards."""
        function_id = event.data.function_id
        if function_id is None:
            return await self._resolve(d.slug)
        spec = await self._resolve(d.slug or function_id)
        if d.slug and spec.function_id is not None and spec.function_id != function_id:
            raise InvalidEvent(
                f"function {d.slug!r} has id {spec.function_id}, not {function_id}",
                details={"function": d.slug, "function_id": function_id},
                execution_id=event.id,
                slug=d.slug,
            )
        d.slug = d.slug or spec.slug
        return spec

    async def _other_domain(self, slug: str) -> str | None:
        """The domain serving ``slug`` when it is not this worker's; ``None`` when this worker
        serves it, when no function has that slug, or when the lookup fails (the pipeline then
        answers as it would any delivery)."""
        try:
            spec = await self.resolver.resolve(slug)
        except Exception:  # a registry outage: the pipeline's own answer (retry, 503) applies
            return None
        if spec is None or spec.serves(self.domain):
            return None
        return spec.domain

    async def _resolve(self, slug: str) -> FunctionSpec:
        spec = await self.resolver.resolve(slug)
        if spec is None:
            raise UnknownFunction(f"no function {slug!r}", slug=slug)
        if not spec.serves(self.domain):
            raise WrongDomain(
                f"{slug!r} belongs to domain {spec.domain!r}, not {self.domain!r}",
                details={"domain": spec.domain, "topic": self.settings.topic_for(spec.domain or "")},
                slug=slug,
            )
        return spec

    def _timeout_for(self, spec: FunctionSpec, event: RequestEvent) -> float:
        limit = spec.timeout_seconds or self.settings.default_timeout_seconds
        requested = event.data.timeout_seconds
        return min(limit, requested) if requested else limit

    def _result_data(self, d: _InProcess, status: str) -> dict[str, Any]:
        return {
            "execution_id": d.execution_id,
            "function": d.slug,
            "status": status,
            "attempt": d.delivery.delivery_count,
            "started_at": d.started_at,
            "completed_at": utc_now_iso(),
            "duration_ms": round((time.monotonic() - d.started) * 1000, 3),
            "worker": self.name,
        }

    def _encode(self, d: _InProcess, data: dict[str, Any]) -> tuple[bytes, bytes]:
        """``(result CloudEvent, its data as JSON)``: the data is encoded once, for the event
        and for the recorder (which stores exactly what is published)."""
        data_json = orjson.dumps(data)
        if self.secrets:
            # Secret values a function saw never leave in a result, whatever the function did.
            data_json = self.secrets.scrub_bytes(data_json)
        event, tracer = d.event, self._tracer
        traceparent = tracestate = None
        if event is not None and tracer is not None:
            # The result carries the context of the span publishing it, not an invented span id.
            traceparent, tracestate = tracer.result_trace(d.delivery)
        elif event is not None:
            traceparent, tracestate = event.traceparent, event.tracestate
        result = encode_result(
            request_id=data["execution_id"],
            function=d.slug,
            domain=self.domain,
            data=data,
            data_json=data_json,
            traceparent=traceparent,
            tracestate=tracestate,
            continue_trace=tracer is None,
        )
        return result, data_json

    async def _failed(
        self,
        d: _InProcess,
        exc: ExecutionFailed,
        *,
        outcome: Outcome = Outcome.ACK,
        reason: str | None = None,
    ) -> Settlement:
        """The failed result for ``exc``, handed to the recorder before it is settled;
        ``outcome`` DROP dead-letters the delivery as well (with ``reason``)."""
        data = self._result_data(d, "failed")
        data["error"] = exc.to_error()
        try:
            result, data_json = self._encode(d, data)
        except TypeError:  # details that are not JSON: the failure still goes out, without them
            data["error"].pop("details", None)
            result, data_json = self._encode(d, data)
        await self._record(data, d.call, answered=False, data_json=data_json)
        return Settlement(d.delivery, outcome, result=result, reason=reason or str(exc.code))

    async def _failed_or_retried(self, d: _InProcess, spec: FunctionSpec, exc: ExecutionFailed) -> Settlement:
        """A function's failure under its retry policy (shared/retry.py): redelivered after the
        policy's backoff while attempts are left; on the last attempt answered with the failure
        and dead-lettered; otherwise (the policy does not retry it) answered as it is."""
        if (
            spec.retry_policy is None and self.settings.retry_max_attempts == 1
        ) or not self._counts_deliveries:
            # Nothing is retried (the common case, no policy built), or the transport cannot
            # count or delay deliveries (Dapr): answered at once, `retryable` tells the caller.
            return await self._failed(d, exc)
        policy = effective_policy(spec.retry_policy, self.settings)
        attempt, code = d.delivery.delivery_count, str(exc.code)
        if policy.retries(code, exc.retryable, attempt):
            details = exc.details if isinstance(exc.details, dict) else {}
            retry_after = details.get("retry_after")
            delay = policy.delay(attempt, retry_after if isinstance(retry_after, int | float) else None)
            return Settlement(d.delivery, Outcome.RETRY, reason=f"{code}: {exc.message}", delay=delay)
        if policy.retries(code, exc.retryable, 0):  # retried before, and this was the last attempt
            reason = f"{code}: retried {attempt} times: {exc.message}"
            return await self._failed(d, exc, outcome=Outcome.DROP, reason=reason)
        return await self._failed(d, exc)

    async def _exhausted(self, d: _InProcess, last_error: str | None) -> Settlement:
        deliveries = d.delivery.delivery_count
        exc = ExecutionFailed(
            f"not answered after {deliveries} deliveries; moved to the dead-letter topic",
            code=ErrorCode.MAX_DELIVERIES_EXCEEDED,
            details={"deliveries": deliveries, "last_error": last_error},
        )
        reason = f"{ErrorCode.MAX_DELIVERIES_EXCEEDED}: {last_error or 'unknown'}"
        return await self._failed(d, exc, outcome=Outcome.DROP, reason=reason)

    # ------------------------------------------------------------------ settling
    async def _settle_loop(self) -> None:
        queue = self._settle_queue
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            published = await self._settle(batch)
            if self._tracer is not None:
                self._tracer.settled(batch, published=published)
            self._held -= len(batch)
            self.metrics.in_flight = self._held
            for settlement in batch:
                self.metrics.count_delivery(settlement.outcome.value)
                queue.task_done()
            self._wake.set()

    async def _settle(self, batch: list[Settlement]) -> bool:
        """Hand ``batch`` to the transport, retrying; False when abandoned at shutdown."""
        backoff = reconnect_backoff()
        while True:
            try:
                if self.recorder is not None:
                    # Every result of this batch was recorded before it was queued here: it is
                    # stored (as a duplicate's answer) before it is published and acked.
                    await self.recorder.before_settle()
                await self.transport.settle(batch)
                return True
            except Exception as exc:  # infrastructure, or a transport bug: never ack, retry
                self.metrics.infra_errors += 1
                if self._abandon_settling:
                    log.error(
                        "settling abandoned at shutdown; deliveries stay pending for redelivery",
                        count=len(batch),
                        error=str(exc),
                    )
                    return False
                delay = backoff.next()
                log.warning(
                    "settle failed; retrying", count=len(batch), error=str(exc), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)

    async def _settle_reply(self, reply: Settlement) -> None:
        published = await self._settle([reply])
        if self._tracer is not None:
            self._tracer.settled([reply], published=published)

    # ------------------------------------------------------------------ shutdown
    async def _drain(self, settler: asyncio.Task[None] | None) -> None:
        self.state = WorkerState.DRAINING
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout
        try:
            await self.transport.stop_intake()
        except Exception as exc:
            log.warning("stop_intake failed", error=str(exc))
        in_flight = len(self._tasks)
        if self._tasks:
            log.info("draining", in_flight=in_flight, timeout=self.settings.shutdown_timeout)
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
            if pending:
                log.warning("drain deadline passed; left pending for redelivery", count=len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if settler is not None:
            try:
                await asyncio.wait_for(self._settle_queue.join(), max(0.1, deadline - loop.time()))
            except TimeoutError:
                self._abandon_settling = True
                log.error("results could not be settled before the deadline; left pending")
            settler.cancel()
            await asyncio.gather(settler, return_exceptions=True)
        try:
            # Closing gets what is left of the shutdown deadline (at least a moment to release
            # connections): the whole stop never waits much longer than FLEET_SHUTDOWN_TIMEOUT.
            await asyncio.wait_for(self.transport.close(), max(1.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("transport close cut short at the shutdown deadline")
        except Exception as exc:
            log.warning("transport close failed", error=str(exc))
        if in_flight:
            log.info("drained", worker=self.name, drained=in_flight)


def _secrets_of(extensions: Sequence[Extension], resources: Resources) -> SecretRegistry:
    """The worker's registry of secrets: its credentials extension's (known before anything
    starts, so the worker's tasks scrub with it from the first), else one already in
    ``resources``, else an empty one (a worker assembled without credentials)."""
    for extension in extensions:
        if isinstance(extension, CredentialsExtension):
            return extension.secrets
    provided = resources.find(SecretRegistry)
    return provided if provided is not None else SecretRegistry()


async def run_until_signalled(worker: Worker) -> None:
    """Run ``worker`` until SIGTERM/SIGINT, then drain (the CLI's entry point)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
