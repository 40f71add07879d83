"""The decision function against keda.md §4's worked trace and KEDA's/the HPA's edge cases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.tools.scaling.decision import Decision, ScalerState, advance_idle, decide, next_tick
from shared.tools.scaling.model import Observation
from shared.tools.scaling.spec import ScalingSpec, Trigger

LAG = Trigger(name="backlog", metric="lag", target=10)
PENDING = Trigger(name="in-flight", metric="pending", target=5)


def make_spec(**changes: object) -> ScalingSpec:
    """keda.md §4's worked-trace settings: lagCount 10, 0..20, polling 15 s, cooldown 120 s."""
    base = ScalingSpec(
        profile="test",
        min_replicas=0,
        max_replicas=20,
        polling_interval=15,
        cooldown_period=120,
        stabilization_window=300,
        sync_period=15,
        triggers=(LAG,),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def obs(lag: int | None = 0, pending: int | None = 0, **kw: object) -> Observation:
    return Observation(lag=lag, pending=pending, **kw)  # type: ignore[arg-type]


def at(replicas: int, now: float, spec: ScalingSpec, **kw: object) -> ScalerState:
    """A state whose loops are both due at ``now`` (a tick of both grids)."""
    polls = round(now / spec.polling_interval)
    syncs = round(now / spec.sync_period)
    return ScalerState(replicas=replicas, polls=polls, syncs=syncs, **kw)  # type: ignore[arg-type]


def run(spec: ScalingSpec, lags: list[int]) -> list[tuple[float, Decision]]:
    """Tick by tick from a fresh state, one observation per tick."""
    state, out = ScalerState(), []
    for lag in lags:
        now = next_tick(state, spec)
        d = decide(obs(lag), state, now, spec)
        out.append((now, d))
        state = d.state
    return out


def test_worked_trace_of_keda_md_section_4() -> None:
    spec = make_spec()
    steps = run(spec, [35, 35, 200, 200, 200, 200] + [0] * 12)
    replicas = [(t, d.desired, d.reason) for t, d in steps]
    # 35 queued → the next KEDA poll activates 0 → 1; the next HPA sync: ratio 3.5 → ceil 4
    # (cap max(2·1, 4) = 4); backlog 200 → 8, 16, 20 (caps 2·current, then max).
    assert replicas[:6] == [
        (0.0, 1, "activate"),
        (15.0, 4, "scale-up"),
        (30.0, 8, "scale-up"),
        (45.0, 16, "scale-up"),
        (60.0, 20, "scale-up"),
        (75.0, 20, "hold"),
    ]
    # lag 0 from t=90: the HPA would hold 20 for its 300 s window, but KEDA's cooldown takes
    # 20 → 0 in one step 120-135 s after the last active poll (t=75).
    last_active = 75.0
    zero = next(t for t, d in steps if d.desired == 0)
    assert last_active + 120 < zero <= last_active + 135
    assert all(d.desired == 20 for t, d in steps if 75 <= t < zero)
    assert next(d.reason for t, d in steps if t == zero) == "cooldown"


def test_near_target_is_within_tolerance() -> None:
    spec = make_spec()
    d = decide(obs(105), at(10, 150, spec), 150, spec)  # ratio 1.05
    assert (d.desired, d.reason) == (10, "hold")
    d = decide(obs(111), at(10, 150, spec), 150, spec)  # ratio 1.11 > 1.1
    assert d.desired == 12
    d = decide(obs(90), at(10, 150, spec), 150, spec)  # ratio 0.9: |1-0.9| <= 0.1
    assert d.desired == 10


def test_activation_is_strictly_above_the_threshold() -> None:
    spec = make_spec(triggers=(replace(LAG, activation=3),))
    at_threshold = decide(obs(3), ScalerState(), 0, spec)
    assert (at_threshold.desired, at_threshold.reason) == (0, "hold")
    above = decide(obs(4), ScalerState(), 0, spec)
    assert (above.desired, above.reason) == (1, "activate")
    assert above.state.last_active == 0


def test_one_queued_request_wakes_a_domain_with_activation_zero() -> None:
    d = decide(obs(1), ScalerState(), 0, make_spec())
    assert d.desired == 1


def test_null_lag_reads_as_zero_and_inactive() -> None:
    spec = make_spec()
    assert decide(obs(None), ScalerState(), 0, spec).desired == 0
    # ...so a running domain whose lag turned NULL cools down to zero (keda.md §5).
    state = at(3, 300, spec, last_active=100.0)
    d = decide(obs(None), state, 300, spec)
    assert (d.desired, d.reason) == (0, "cooldown")


def test_missing_group_counts_the_stream_length_as_lag() -> None:
    spec = make_spec()
    missing = obs(None, None, stream_length=35, group_exists=False)
    d = decide(missing, ScalerState(), 0, spec)
    assert (d.desired, d.reason) == (1, "activate")
    d2 = decide(missing, d.state, 15, spec)
    assert d2.desired == 4  # ceil(35 / 10) on XLEN


def test_missing_group_fails_the_pending_trigger_so_nothing_scales_down() -> None:
    spec = make_spec(triggers=(LAG, PENDING))
    # XLEN 0 and XPENDING fails (NOGROUP): inactive with an error → KEDA takes no action, and
    # the HPA never scales down while a metric fails.
    gone = obs(None, None, stream_length=0, group_exists=False)
    d = decide(gone, at(5, 600, spec, last_active=0.0), 600, spec)
    assert (d.desired, d.reason) == (5, "error")
    # Active on XLEN from zero: activation still happens although a trigger errored.
    d = decide(obs(None, None, stream_length=7, group_exists=False), ScalerState(), 0, spec)
    assert (d.desired, d.reason) == (1, "activate")
    # Active with an error at N > 0: no refresh of last_active, but the HPA may scale up.
    state = at(1, 600, spec, last_active=10.0)
    d = decide(obs(None, None, stream_length=95, group_exists=False), state, 600, spec)
    assert d.desired == 4
    assert d.state.last_active == 10.0


def test_a_read_error_takes_no_action() -> None:
    spec = make_spec()
    failed = obs(None, None, error="connection refused")
    state = at(8, 600, spec, last_active=0.0)  # cooldown long expired
    d = decide(failed, state, 600, spec)
    assert (d.desired, d.reason) == (8, "error")
    assert d.state.last_active == 0.0
    assert d.state.recommendations == ()
    assert decide(failed, ScalerState(), 0, spec).desired == 0
    assert d.state.polls == state.polls + 1  # the loop still ran


def test_min_above_zero_never_goes_below_min() -> None:
    spec = make_spec(min_replicas=2)
    d = decide(obs(0), ScalerState(), 0, spec)
    assert (d.desired, d.reason) == (2, "scale-up")  # inactive, current < min → min
    state = d.state
    for _ in range(60):  # 15 minutes idle: no cooldown to zero with min > 0
        now = next_tick(state, spec)
        d = decide(obs(0), state, now, spec)
        state = d.state
        assert d.desired == 2
    d = decide(obs(1), ScalerState(), 0, spec)
    assert d.desired == 2  # activation goes to max(1, min)


def test_min_above_zero_scales_down_to_min_through_the_hpa_window() -> None:
    spec = make_spec(min_replicas=2)
    state = at(10, 1000, spec, last_active=1000.0, recommendations=((1000.0, 10),))
    state = replace(state, syncs=state.syncs + 1, polls=state.polls + 1)
    times = [1015.0 + 15 * k for k in range(25)]
    desired = []
    for now in times:
        d = decide(obs(0), state, now, spec)
        state = d.state
        desired.append(d.desired)
    # The recommendation of 10 at t=1000 holds until it leaves the 300 s window.
    assert desired[times.index(1300.0)] == 10
    assert desired[times.index(1315.0)] == 2


def test_cooldown_waits_strictly_longer_than_the_period_then_drops_to_zero_at_once() -> None:
    spec = make_spec(cooldown_period=30, polling_interval=15)
    # (the HPA holds 7 within its window: it recommended 7 at t=15)
    state = at(7, 45, spec, last_active=15.0, recommendations=((15.0, 7),))
    d = decide(obs(0), state, 45, spec)  # 15 + 30 < 45 is false
    assert d.desired == 7
    d = decide(obs(0), d.state, 60, spec)
    assert (d.desired, d.reason) == (0, "cooldown")


def test_never_active_scales_to_zero_after_the_initial_cooldown() -> None:
    spec = make_spec(initial_cooldown=60)
    state = ScalerState(replicas=3, polls=2, syncs=2, recommendations=((0.0, 3),))
    assert decide(obs(0), state, 30, spec).desired == 3
    later = replace(state, polls=4, syncs=4)
    assert decide(obs(0), later, 60, spec).desired == 0


def test_scale_up_is_capped_at_twice_current_or_four() -> None:
    spec = make_spec(max_replicas=100)
    assert decide(obs(1000), at(1, 15, spec), 15, spec).desired == 4
    assert decide(obs(1000), at(3, 15, spec), 15, spec).desired == 6
    assert decide(obs(1000), at(30, 15, spec), 15, spec).desired == 60


def test_clamped_to_max() -> None:
    spec = make_spec(max_replicas=5)
    assert decide(obs(1000), at(4, 15, spec), 15, spec).desired == 5
    d = decide(obs(0), at(9, 15, spec, last_active=15.0), 15, spec)  # above max → max at once
    assert (d.desired, d.reason) == (5, "scale-down")


def test_the_largest_trigger_wins() -> None:
    spec = make_spec(triggers=(LAG, PENDING), max_replicas=50)
    # lag 20 → 2 replicas; pending 40 at target 5 → 8.
    assert decide(obs(20, 40), at(4, 15, spec), 15, spec).desired == 8
    assert decide(obs(80, 5), at(4, 15, spec), 15, spec).desired == 8


def test_pending_alone_keeps_a_domain_active() -> None:
    spec = make_spec(triggers=(LAG, PENDING), cooldown_period=0)
    d = decide(obs(0, 3), at(1, 600, spec, last_active=0.0), 600, spec)
    assert d.desired == 1
    assert d.state.last_active == 600


def test_stabilization_keeps_the_highest_recommendation_of_the_window() -> None:
    spec = make_spec(stabilization_window=60, cooldown_period=10_000)
    state = at(8, 0, spec)
    lags = [80, 10, 10, 10, 10, 10]  # proposals 8, 1, 1, 1, 1, 1 every 15 s
    desired = []
    for k, lag in enumerate(lags):
        d = decide(obs(lag), state, 15.0 * k, spec)
        state = d.state
        desired.append(d.desired)
    # the 8 of t=0 counts while t - 60 <= 0, i.e. through t=60; gone at t=75
    assert desired == [8, 8, 8, 8, 8, 1]


def test_hpa_and_keda_on_their_own_periods() -> None:
    spec = make_spec(polling_interval=30, sync_period=15)
    d = decide(obs(50), ScalerState(), 0, spec)
    assert d.desired == 1
    assert next_tick(d.state, spec) == 15
    d = decide(obs(50), d.state, 15, spec)  # only the HPA is due
    assert d.desired == 4
    assert d.state.polls == 1
    assert decide(obs(50), d.state, 20, spec).reason == "not-due"


def test_a_late_call_skips_the_missed_ticks() -> None:
    spec = make_spec()
    d = decide(obs(0), ScalerState(), 0, spec)
    d = decide(obs(0), d.state, 100.0, spec)
    assert next_tick(d.state, spec) == 105.0


def test_advance_idle_equals_stepping() -> None:
    spec = make_spec(polling_interval=30, sync_period=15)
    stepped = decide(obs(0), ScalerState(), 0, spec).state
    jumped = advance_idle(stepped, spec, 1000.0)
    while next_tick(stepped, spec) < 1000.0:
        d = decide(obs(0), stepped, next_tick(stepped, spec), spec)
        assert d.desired == 0
        stepped = d.state
    assert jumped == stepped
    with pytest.raises(ValueError, match="0 replicas"):
        advance_idle(replace(stepped, replicas=1), spec, 2000.0)
