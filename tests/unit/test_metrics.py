"""The metrics object: bounded labels, escaping by the library, no process-wide state."""

from __future__ import annotations

from prometheus_client import REGISTRY

from shared.runtime.metrics import DEFERRAL_REASONS, EXECUTION_OUTCOMES, OTHER, Metrics, status_class
from tests.observability import parse


def test_function_labels_are_bounded_and_the_rest_is_other() -> None:
    metrics = Metrics(max_functions=3)
    for n in range(10):
        metrics.observe_execution(f"test/f{n}", "completed", 0.01)
    _, samples = parse(metrics.render().decode())
    functions = {dict(labels)["function"] for (name, labels) in samples if name == "fleet_executions_total"}
    assert functions == {"test/f0", "test/f1", "test/f2", OTHER}
    assert samples[("fleet_executions_total", (("function", OTHER), ("outcome", "completed")))] == 7
    assert samples[("fleet_execution_duration_seconds_count", (("function", OTHER),))] == 7


def test_outcomes_outside_the_contract_are_other() -> None:
    metrics = Metrics()
    metrics.observe_execution("system/fail", "function_failed", 0.01)
    metrics.observe_execution("system/fail", "my_own_code", 0.01)
    metrics.observe_execution("system/fail", "retry", 0.01)
    _, samples = parse(metrics.render().decode())
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "fleet_executions_total"
    }
    assert outcomes == {"function_failed": 1, OTHER: 1, "retry": 1}
    assert set(outcomes) <= EXECUTION_OUTCOMES


def test_hostile_label_values_are_escaped_by_the_library() -> None:
    metrics = Metrics()
    hostile = 'evil"} 1\nfleet_fake 1'
    metrics.count_provider_call(hostile, 200)
    metrics.count_ssrf_refusal(hostile)
    names, samples = parse(metrics.render().decode())
    assert "fleet_fake" not in names
    assert samples[("fleet_provider_http_calls_total", (("provider", hostile), ("status_class", "2xx")))] == 1
    assert samples[("fleet_ssrf_refusals_total", (("reason", hostile),))] == 1


def test_deferrals_are_counted_by_a_fixed_set_of_reasons() -> None:
    metrics = Metrics()
    for reason in ("rate_limit", "rate_limit", "concurrency_limit", "a reason of its own"):
        metrics.count_deferral(reason)
    _, samples = parse(metrics.render().decode())
    reasons = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "fleet_deferrals_total"
    }
    assert reasons == {"rate_limit": 2, "concurrency_limit": 1, OTHER: 1}
    assert set(reasons) <= DEFERRAL_REASONS


def test_provider_and_refusal_labels_are_bounded() -> None:
    metrics = Metrics()
    for n in range(200):
        metrics.count_provider_call(f"p{n}", 500)
        metrics.count_ssrf_refusal(f"r{n}")
    assert len({provider for provider, _ in metrics.provider_calls}) <= 51
    assert len(metrics.ssrf_refusals) <= 51
    assert metrics.provider_calls[(OTHER, "5xx")] == 150


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 302, 404, 503, None, 42)] == [
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "error",
        "error",
    ]


def test_two_workers_share_no_registry_and_the_global_one_is_untouched() -> None:
    a, b = Metrics(domain="ai"), Metrics(domain="comms")
    a.observe_execution("system/echo", "completed", 0.01)
    _, a_samples = parse(a.render().decode())
    _, b_samples = parse(b.render().decode())
    key = ("fleet_executions_total", (("function", "system/echo"), ("outcome", "completed")))
    assert a_samples[key] == 1
    assert key not in b_samples
    assert REGISTRY.get_sample_value("fleet_executions_total") is None
    info = [dict(labels) for (name, labels) in b_samples if name == "fleet_build_info"]
    assert len(info) == 1
    assert info[0]["domain"] == "comms"
