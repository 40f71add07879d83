"""The simulator: deterministic traces with known answers, its decisions equal to calling
`decide` directly, trace reading and generators."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.tools.scaling.decision import ScalerState, decide, next_tick
from shared.tools.scaling.model import Observation
from shared.tools.scaling.simulate import (
    Arrival,
    burst,
    diurnal,
    group_by_domain,
    read_trace,
    simulate_domain,
    steady,
    workflow,
)
from shared.tools.scaling.spec import ScalingSpec, Trigger

SPEC = ScalingSpec(
    profile="test",
    min_replicas=0,
    max_replicas=20,
    polling_interval=15,
    cooldown_period=300,
    stabilization_window=300,
    sync_period=15,
    triggers=(
        Trigger(name="backlog", metric="lag", target=20),
        Trigger(name="in-flight", metric="pending", target=4),
    ),
)


def test_a_single_request_from_zero_waits_for_the_poll_and_the_cold_start() -> None:
    run = simulate_domain([1.0], [5.0], SPEC, concurrency=4, cold_start=10, wait_bound=20)
    # polls at 0, 15: activation at 15, ready at 25, so it waited 24 s (polling - 1 + cold start)
    assert run.cold_starts == 1
    assert run.peak_replicas == 1
    assert run.wait_max == pytest.approx(24.0)
    assert run.wait_p50 == pytest.approx(24.0)
    assert run.over_bound == 1
    # it finishes at 30, just before that poll, so the last active poll is 15 (lag 1):
    # 15 + 300 < now first holds at the poll of 330 → 0, after 315 replica-seconds
    assert run.end == 330.0
    assert run.replica_seconds == pytest.approx(330.0 - 15.0)


def test_warm_replicas_start_requests_at_once() -> None:
    spec = replace(SPEC, min_replicas=1)
    run = simulate_domain([100.0, 101.0], [1.0, 1.0], spec, concurrency=4, cold_start=10, wait_bound=0.5)
    assert run.wait_max == 0.0
    assert run.over_bound == 0
    assert run.cold_starts == 1  # the min replica, started at the first poll


def test_concurrency_limits_what_a_replica_runs() -> None:
    spec = replace(SPEC, min_replicas=1, max_replicas=1)
    # 3 requests of 10 s at t=50 on one replica with concurrency 2: the third waits 10 s
    run = simulate_domain(
        [50.0, 50.0, 50.0], [10.0, 10.0, 10.0], spec, concurrency=2, cold_start=0, wait_bound=5
    )
    assert run.wait_max == pytest.approx(10.0)
    assert run.over_bound == 1
    assert run.wait_p50 == 0.0


def test_a_burst_scales_up_by_the_hpa_rules() -> None:
    times = [1.0] * 400
    run = simulate_domain(
        times, [60.0] * 400, SPEC, concurrency=4, cold_start=0, wait_bound=1000, record=True
    )
    replicas = [(t.time, t.desired) for t in run.ticks if t.time <= 75]
    # (the idle tick at 0 is jumped over) activate at 15; then the cap max(2,4), x2, x2, max 20
    assert replicas == [(15.0, 1), (30.0, 4), (45.0, 8), (60.0, 16), (75.0, 20)]
    assert run.peak_replicas == 20
    assert run.cold_starts == 20


def test_the_simulator_decides_exactly_as_decide_does() -> None:
    arrivals = workflow("ai", rate=1 / 200, span=2000, steps=4, gap=8, fan_out=30, seed=3)
    times, durations = group_by_domain(arrivals)["ai"]
    run = simulate_domain(times, durations, SPEC, concurrency=4, cold_start=12, wait_bound=60, record=True)
    assert len({t.desired for t in run.ticks}) > 3  # the trace exercises scaling
    # Replay the same observations through decide tick by tick (also over the idle stretches
    # the simulator jumps: there decide must see an idle domain and change nothing).
    recorded = {t.time: t for t in run.ticks}
    state, now = ScalerState(), 0.0
    while now <= run.end:
        tick = recorded.get(now)
        observation = tick.observation if tick else Observation(lag=0, pending=0)
        d = decide(observation, state, now, SPEC)
        if tick is not None:
            assert (d.desired, d.reason) == (tick.desired, tick.reason), now
        else:
            assert d.desired == state.replicas == 0, now
        state, now = d.state, next_tick(d.state, SPEC)
    assert now > max(recorded)


def test_faster_polling_shortens_the_wait_from_zero() -> None:
    trace = burst("ai", count=50, at=100, spread=2, seed=1)
    times, durations = group_by_domain(trace)["ai"]
    fast = simulate_domain(times, durations, SPEC, concurrency=8, cold_start=20, wait_bound=30)
    slow = simulate_domain(
        times, durations, replace(SPEC, polling_interval=30), concurrency=8, cold_start=20, wait_bound=30
    )
    assert fast.wait_max is not None
    assert slow.wait_max is not None
    assert fast.wait_max < slow.wait_max
    assert fast.requests == slow.requests == 50


def test_read_trace_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(
        json.dumps({"time": 2, "domain": "ai", "duration": 1.5})
        + "\n\n"
        + json.dumps({"time": 1, "domain": "http", "duration": 0.2})
        + "\n"
    )
    assert read_trace(jsonl) == [Arrival(2.0, "ai", 1.5), Arrival(1.0, "http", 0.2)]
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("time,domain,duration\n0.5,oci,30\n")
    assert read_trace(csv_file) == [Arrival(0.5, "oci", 30.0)]
    bad = tmp_path / "bad.csv"
    bad.write_text("time,domain,duration\n-1,ai,1\n")
    with pytest.raises(ConfigError, match=r"bad.csv:2"):
        read_trace(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"time": 1, "domain": "ai"}\n')
    with pytest.raises(ConfigError, match=r"broken.jsonl:1"):
        read_trace(broken)


def test_generators_are_deterministic_and_shaped() -> None:
    assert burst("ai", count=10, seed=5) == burst("ai", count=10, seed=5)
    b = burst("ai", count=100, at=60, spread=5)
    assert len(b) == 100
    assert all(60 <= a.time <= 65 for a in b)
    s = steady("ai", rate=2, span=1000)
    assert 1800 < len(s) < 2200
    assert all(0 <= a.time < 1000 for a in s)
    d = diurnal("ai", rate=1, span=86400)
    night = sum(1 for a in d if a.time < 3600 or a.time > 82800)
    noon = sum(1 for a in d if 41400 <= a.time < 48600)
    assert noon > 10 * night
    w = workflow("ai", rate=1 / 100, span=1000, steps=3, gap=10, fan_out=2)
    assert len(w) % 6 == 0
    assert [a.time for a in w] == sorted(a.time for a in w)
