"""The scaling decision: KEDA's scale loop and the HPA's sync in one pure function.

:func:`decide` takes what one poll observed, the scaler's state, the time and the
:class:`~shared.tools.scaling.spec.ScalingSpec`, and returns the replica count to run with the
next state. No I/O, no clock: the tests, `fleet up`'s autoscaler and `fleet scale simulate` run
this same code (docs/scaling.md, "The arithmetic"; keda.md §4).

How to drive it: call ``decide`` at :func:`next_tick` (or any later time; missed ticks are
skipped, as a late loop would). Each call runs the loops that are due at ``now``:

1. the HPA sync (every ``sync_period``; nothing while at 0 replicas): per trigger
   ``ceil(metric / target)`` unless ``|1 - metric / (target * current)| <= tolerance``; the
   largest proposal; the maximum recommendation of the stabilization window; scale-up capped
   at ``max(2 * current, 4)``; clamped to ``[max(min, 1), max]``;
2. KEDA's poll (every ``polling_interval``), on the count the HPA left: activation 0 → max(1,
   min) when any trigger is above its activation threshold (strictly), ``last_active`` refreshed
   while active, N → 0 once ``last_active + cooldown < now`` (min 0 only), raise to min.

The HPA runs first so that a domain activated at this tick is scaled 1..N by the *next* sync,
as in keda.md's worked trace. A read error (``Observation.error``) takes no action at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from shared.tools.scaling.model import Observation
from shared.tools.scaling.spec import ScalingSpec, Trigger

__all__ = ["EPSILON", "Decision", "ScalerState", "advance_idle", "decide", "next_tick", "trigger_values"]

#: Slack for "is a loop due": a tick computed as ``origin + k * interval`` is due at itself.
EPSILON = 1e-9

#: KEDA's value for a lag Redis reports as NULL: go-redis returns -1 (keda.md §1), which is not
#: above any activation threshold and publishes as 0.
NULL_LAG = -1.0


@dataclass(frozen=True, slots=True)
class ScalerState:
    """The autoscaler's memory of one domain. Immutable: :func:`decide` returns the next one.

    ``replicas``: the count it last set (KEDA's scale ``spec.replicas``, the HPA's ``R``);
    ``last_active``: KEDA's ``lastActiveTime`` (``None``: never active, so the
    ``initialCooldownPeriod`` from ``origin`` applies); ``origin``: when the loops started
    (their ticks are ``origin + k * interval``); ``polls`` / ``syncs``: the index of the next
    KEDA poll / HPA sync; ``recommendations``: the HPA's ``(time, replicas)`` proposals still
    inside the stabilization window.
    """

    origin: float = 0.0
    replicas: int = 0
    last_active: float | None = None
    polls: int = 0
    syncs: int = 0
    recommendations: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """``desired`` replicas, the ``state`` to pass next time, and why: ``activate`` (0 → 1+),
    ``scale-up`` / ``scale-down`` (the HPA, or KEDA raising to min), ``cooldown`` (N → 0),
    ``hold`` (a loop ran, no change), ``error`` (a read failed: no action) or ``not-due``."""

    desired: int
    state: ScalerState
    reason: str


def trigger_values(trigger: Trigger, observation: Observation) -> tuple[float, float] | None:
    """``(raw, metric)`` of ``trigger`` as KEDA's scaler reports them for ``observation``, or
    ``None`` when that scaler would fail. ``raw`` decides activation (``raw > activation``);
    ``metric`` (``raw`` clamped at 0) feeds the HPA.

    lag: the group's lag; a NULL lag is -1 (inactive, metric 0); a missing group or stream →
    XLEN (0 for no stream). pending: the XPENDING count; a missing group fails (NOGROUP).
    xlen: the stream length.
    """
    if observation.error is not None:
        return None
    raw: float
    if trigger.metric == "lag":
        if not observation.group_exists:
            raw = float(observation.stream_length or 0)
        else:
            raw = NULL_LAG if observation.lag is None else float(observation.lag)
    elif trigger.metric == "pending":
        if not observation.group_exists or observation.pending is None:
            return None
        raw = float(observation.pending)
    else:
        if observation.stream_length is None:
            return None
        raw = float(observation.stream_length)
    return raw, max(raw, 0.0)


def next_tick(state: ScalerState, spec: ScalingSpec) -> float:
    """When a loop is next due: call :func:`decide` then."""
    return min(_next_poll(state, spec), _next_sync(state, spec))


def decide(observation: Observation, state: ScalerState, now: float, spec: ScalingSpec) -> Decision:
    """Run the loops due at ``now`` on ``observation``; see the module docstring. Pure."""
    poll_due = now >= _next_poll(state, spec) - EPSILON
    sync_due = now >= _next_sync(state, spec) - EPSILON
    if not poll_due and not sync_due:
        return Decision(state.replicas, state, "not-due")
    values = [trigger_values(t, observation) for t in spec.triggers]
    replicas, recommendations = state.replicas, state.recommendations
    reasons: list[str] = []
    syncs, polls, last_active = state.syncs, state.polls, state.last_active
    if sync_due:
        syncs = _index_after(now, state.origin, spec.sync_period)
        replicas, recommendations, reason = _hpa(values, replicas, recommendations, now, spec)
        reasons.append(reason)
    if poll_due:
        polls = _index_after(now, state.origin, spec.polling_interval)
        replicas, last_active, reason = _keda(values, replicas, last_active, now, state.origin, spec)
        reasons.append(reason)
    new_state = ScalerState(
        origin=state.origin,
        replicas=replicas,
        last_active=last_active,
        polls=polls,
        syncs=syncs,
        recommendations=recommendations,
    )
    return Decision(replicas, new_state, _summary(reasons, changed=replicas != state.replicas))


def advance_idle(state: ScalerState, spec: ScalingSpec, until: float) -> ScalerState:
    """The state after :func:`decide` ran every tick before ``until`` on an idle observation
    (no lag, nothing pending, no error) of a domain at 0 replicas with ``min_replicas`` 0: only
    the tick indices move (the HPA does nothing at 0, KEDA holds). Lets the simulator jump over
    idle hours in one step; a test checks it against stepping."""
    if state.replicas != 0 or spec.min_replicas != 0:
        raise ValueError("advance_idle needs a domain at 0 replicas with min_replicas 0")
    return replace(
        state,
        polls=max(state.polls, _index_at_or_after(until, state.origin, spec.polling_interval)),
        syncs=max(state.syncs, _index_at_or_after(until, state.origin, spec.sync_period)),
    )


# --------------------------------------------------------------------------- the two loops
def _hpa(
    values: Sequence[tuple[float, float] | None],
    current: int,
    recommendations: tuple[tuple[float, int], ...],
    now: float,
    spec: ScalingSpec,
) -> tuple[int, tuple[tuple[float, int], ...], str]:
    """One HPA sync (behavior unset): ``(replicas, recommendations, reason)``."""
    if current == 0:  # spec.replicas 0 and HPA min >= 1: ScalingDisabled
        return current, recommendations, "hold"
    low = max(spec.min_replicas, 1)
    if current > spec.max_replicas:
        return spec.max_replicas, recommendations, "scale-down"
    if current < low:
        return low, recommendations, "scale-up"
    proposals = []
    for trigger, value in zip(spec.triggers, values, strict=True):
        if value is None:
            continue
        metric = value[1]
        ratio = metric / (trigger.target * current)
        proposals.append(
            current if abs(1.0 - ratio) <= spec.tolerance else math.ceil(metric / trigger.target)
        )
    if not proposals:
        return current, recommendations, "error"
    proposal = max(proposals)
    if len(proposals) < len(values) and proposal < current:
        return current, recommendations, "error"  # some metrics failed: never scale down then
    cutoff = now - spec.stabilization_window
    kept = (*tuple(r for r in recommendations if r[0] >= cutoff), (now, proposal))
    stabilized = max(r[1] for r in kept)
    desired = max(low, min(stabilized, spec.max_replicas, max(2 * current, 4)))
    reason = "scale-up" if desired > current else "scale-down" if desired < current else "hold"
    return desired, kept, reason


def _keda(
    values: Sequence[tuple[float, float] | None],
    current: int,
    last_active: float | None,
    now: float,
    origin: float,
    spec: ScalingSpec,
) -> tuple[int, float | None, str]:
    """One KEDA poll (no idleReplicaCount, no fallback): ``(replicas, last_active, reason)``."""
    errored = any(v is None for v in values)
    active = any(v is not None and v[0] > t.activation for t, v in zip(spec.triggers, values, strict=True))
    if active:
        if current == 0:
            return max(1, spec.min_replicas), now, "activate"
        if errored:
            return current, last_active, "error"  # lastActiveTime is not refreshed
        return current, now, "hold"
    if errored:
        return current, last_active, "error"
    if spec.min_replicas == 0 and current > 0:
        if last_active is None:
            expired = now - origin >= spec.initial_cooldown
        else:
            expired = last_active + spec.cooldown_period < now
        return (0, last_active, "cooldown") if expired else (current, last_active, "hold")
    if current < spec.min_replicas:
        return spec.min_replicas, last_active, "scale-up"
    return current, last_active, "hold"


# --------------------------------------------------------------------------- ticks
def _next_poll(state: ScalerState, spec: ScalingSpec) -> float:
    return state.origin + state.polls * spec.polling_interval


def _next_sync(state: ScalerState, spec: ScalingSpec) -> float:
    return state.origin + state.syncs * spec.sync_period


def _index_after(now: float, origin: float, interval: float) -> int:
    """The index of the first tick strictly after ``now`` (a tick at ``now`` has run)."""
    return math.floor((now - origin) / interval + EPSILON) + 1


def _index_at_or_after(until: float, origin: float, interval: float) -> int:
    return max(math.ceil((until - origin) / interval - EPSILON), 0)


def _summary(reasons: list[str], *, changed: bool) -> str:
    if changed:
        return next(r for r in reversed(reasons) if r not in {"hold", "error"})
    return "error" if "error" in reasons else "hold"
