"""What a transport is: a source of :class:`Delivery` batches and a sink for :class:`Settlement`s.

The runtime's consume loop (``shared.runtime.worker``) drives every transport the same way::

    await transport.open()
    while running:
        batch = await transport.receive(max_count)        # [] when idle; TransportError if down
        ... run each delivery, producing a Settlement ...
        await transport.settle(settlements)               # publish results, THEN ack / drop
    await transport.stop_intake(); ...drain...; await transport.close()

A transport knows how to acknowledge, redeliver and dead-letter on its broker; it never
learns what a function is. Pull transports (Redis Streams) read in ``receive``; push
transports (the Dapr app channel) queue what their HTTP server is handed and answer the
sidecar when ``settle`` (or ``close``) decides the outcome.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Delivery",
    "ExecuteHandler",
    "JoinsSettle",
    "Outcome",
    "SettlePrelude",
    "Settlement",
    "SyncReply",
    "Transport",
]


class Outcome(enum.Enum):
    """What becomes of a delivery once it is settled."""

    #: answered: the result (if any) is published, then the delivery is acknowledged.
    ACK = "ack"
    #: not answered: left un-acknowledged so the broker delivers it again later.
    RETRY = "retry"
    #: given up: the result (if any) is published and the delivery is dead-lettered.
    DROP = "drop"
    #: like RETRY, but this delivery does not count toward ``FLEET_MAX_DELIVERIES`` (a
    #: duplicate waiting for its execution to finish elsewhere); where the broker cannot
    #: un-count a delivery (Dapr), it is a RETRY.
    DEFER = "defer"
    #: answered synchronously (``POST /execute``, ``shared/runtime/sync.py``): the result is
    #: published like any other, and there is no broker message to acknowledge, redeliver or
    #: dead-letter. The worker settles each reply on its own; a transport raises
    #: :class:`~shared.errors.TransportError` when the reply's result was not published.
    REPLY = "reply"


@dataclass(slots=True)
class Delivery:
    """One message as a transport received it.

    Parameters:
        message_id: the broker's id (Redis stream entry id; the CloudEvent id under Dapr).
        body: the exact bytes of the message (the CloudEvent JSON).
        metadata: the broker's string map (Redis ``metadata`` field / Dapr headers).
        delivery_count: 1 on first delivery; Redis counts redeliveries, Dapr does not say.
        last_error: why the previous delivery was not answered, when the transport knows.
        handle: transport-private state (e.g. the waiting HTTP request under Dapr).
    """

    message_id: str
    body: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    delivery_count: int = 1
    last_error: str | None = None
    handle: Any = None


@dataclass(slots=True)
class Settlement:
    """The decided fate of one delivery.

    ``result`` is the result CloudEvent to publish first (``None`` for RETRY and for
    undecodable input that has nobody to answer). ``reason`` says why for RETRY and DROP; it
    is kept with the dead letter (``fleet.error`` metadata) and in logs.
    """

    delivery: Delivery
    outcome: Outcome
    result: bytes | None = None
    reason: str | None = None
    #: RETRY and DEFER: redeliver no sooner than this many seconds from now (a retry policy's
    #: backoff, a limit's wait); a transport that cannot delay one delivery redelivers as it
    #: always does.
    delay: float | None = None


class Transport(Protocol):
    """The interface every transport implements (see module docstring for the call order)."""

    #: ``redis`` or ``dapr``; shown in logs and ``fleet up``'s listing.
    name: str
    #: True when ``Delivery.delivery_count`` counts deliveries and a RETRY's ``delay`` is
    #: honoured (Redis Streams); retry policies are enforced only then.
    counts_deliveries: bool

    async def open(self) -> None:
        """Connect and make sure topics/groups exist. Raises TransportError when unreachable."""

    async def receive(self, max_count: int) -> Sequence[Delivery]:
        """Up to ``max_count`` deliveries; waits a bounded time and returns ``[]`` when idle."""
        ...

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Publish each settlement's result, then ack / dead-letter / leave pending per its
        outcome. Must not ack a delivery whose result was not published. Raises
        :class:`~shared.errors.TransportError` (nothing partially acked) to be retried."""

    async def stop_intake(self) -> None:
        """Stop taking new deliveries; what was received is still settled normally."""

    async def close(self) -> None:
        """Release connections. Deliveries never settled stay pending for redelivery."""


#: ``prelude(pipe)`` queues commands at the start of a settle's ``MULTI … EXEC`` and returns
#: ``(how many, done)``, or ``None`` when it has nothing to add. ``done(replies)`` gets those
#: commands' replies once the transaction ran, or ``None`` when it did not (the prelude must
#: offer the same work again at the next settle).
SettlePrelude = Callable[[Any], "tuple[int, Callable[[list[Any] | None], None]] | None"]


@runtime_checkable
class JoinsSettle(Protocol):
    """A transport whose settle is one transaction on a Redis server that others may join
    (the Redis Streams transport): an extension's commands then commit with the acks."""

    def join_settle(self, prelude: SettlePrelude, *, redis: Any) -> bool:
        """Run ``prelude`` at the start of every settle transaction when ``redis`` is a client of
        the transport's own server (and database); returns False, changing nothing, otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class SyncReply:
    """The HTTP answer to one synchronous call (``POST /execute``): status, body and headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


#: What answers ``POST /execute`` (``shared.runtime.sync``): given the request's body and headers,
#: the reply. A transport that serves synchronous calls on its own HTTP server (the Dapr app
#: channel) is handed one through ``serve_execute(handler)``; it checks the caller's token and
#: bounds the body first.
ExecuteHandler = Callable[[bytes, Mapping[str, str]], Awaitable[SyncReply]]
