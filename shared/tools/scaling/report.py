"""The report of `fleet scale simulate`: every domain of a trace under each scaling profile,
as one JSON-ready document, as text, and as an optional PNG (matplotlib, the ``plot`` extra).

Document shape (``--json``; checked by tests/scaling/test_cli.py)::

    {"trace": {"source", "requests", "span_s"}, "cold_start_s", "wait_bound_s",
     "domains": [{"name", "concurrency", "requests",
                  "profiles": [{"profile", "spec": {min_replicas, max_replicas,
                                polling_interval, cooldown_period, stabilization_window,
                                sync_period, tolerance, initial_cooldown, triggers: [...]},
                                "replica_seconds", "peak_replicas", "cold_starts",
                                "wait_p50_s", "wait_p99_s", "wait_max_s",
                                "waited_over_bound", "wait_bound_s", "requests", "end_s"}]}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shared.domains import get_domain
from shared.errors import ConfigError
from shared.settings import Settings
from shared.tools.scaling.simulate import Arrival, DomainRun, group_by_domain, simulate_domain
from shared.tools.scaling.spec import Profile, for_domain

__all__ = ["PlotUnavailable", "compare", "plot", "plot_available", "render_text"]


class PlotUnavailable(ConfigError):
    """``--plot`` without matplotlib installed."""


def compare(
    arrivals: Sequence[Arrival],
    settings: Settings,
    *,
    profiles: Sequence[Profile],
    cold_start: float,
    wait_bound: float,
    source: str,
    record: bool = False,
) -> tuple[dict[str, Any], dict[tuple[str, str], DomainRun]]:
    """Simulate every domain of ``arrivals`` under each of ``profiles``: the report document
    and the runs by ``(domain, profile)`` (with their series when ``record``).

    Raises:
        ConfigError: a domain the fleet does not declare.
    """
    grouped = group_by_domain(arrivals)
    runs: dict[tuple[str, str], DomainRun] = {}
    rows = []
    for name in sorted(grouped):
        domain = get_domain(name)
        times, durations = grouped[name]
        entries = []
        for profile in profiles:
            spec = for_domain(domain, settings, profile)
            run = simulate_domain(
                times,
                durations,
                spec,
                concurrency=domain.concurrency,
                cold_start=cold_start,
                wait_bound=wait_bound,
                record=record,
            )
            runs[(domain.name, profile)] = run
            spec_doc = asdict(spec)
            spec_doc.pop("profile")
            entries.append({"profile": profile, "spec": spec_doc, **run.summary()})
        rows.append(
            {
                "name": domain.name,
                "concurrency": domain.concurrency,
                "requests": len(times),
                "profiles": entries,
            }
        )
    span = max(a.time for a in arrivals) - min(a.time for a in arrivals) if arrivals else 0.0
    doc = {
        "trace": {"source": source, "requests": len(arrivals), "span_s": round(span, 3)},
        "cold_start_s": cold_start,
        "wait_bound_s": wait_bound,
        "domains": rows,
    }
    return doc, runs


def render_text(doc: dict[str, Any]) -> list[str]:
    """The report as lines of text: one table per domain, one row per profile."""
    trace = doc["trace"]
    lines = [
        f"trace: {trace['source']} — {trace['requests']} requests over {_duration(trace['span_s'])}; "
        f"cold start {doc['cold_start_s']:g} s, wait bound {doc['wait_bound_s']:g} s",
    ]
    headers = ("profile", "poll/cool/stab s", "replica-s", "peak", "cold", "wait p50", "p99", "max", ">bound")
    for d in doc["domains"]:
        lines += ["", f"{d['name']} (concurrency {d['concurrency']}, {d['requests']} requests)"]
        rows = []
        for p in d["profiles"]:
            s = p["spec"]
            rows.append(
                (
                    p["profile"],
                    f"{s['polling_interval']:g}/{s['cooldown_period']:g}/{s['stabilization_window']:g}",
                    f"{p['replica_seconds']:.0f}",
                    str(p["peak_replicas"]),
                    str(p["cold_starts"]),
                    _seconds(p["wait_p50_s"]),
                    _seconds(p["wait_p99_s"]),
                    _seconds(p["wait_max_s"]),
                    str(p["waited_over_bound"]),
                )
            )
        lines += _table(rows, headers)
    return lines


def plot_available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(runs: dict[tuple[str, str], DomainRun], path: Path) -> None:
    """Write a PNG: per domain, queue depth and replicas over time for each profile.

    Raises:
        PlotUnavailable: matplotlib is not installed.
    """
    if not plot_available():
        raise PlotUnavailable("--plot needs matplotlib: pip install 'function-fleet[plot]'")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted({d for d, _ in runs})
    fig, axes = plt.subplots(len(domains), 2, figsize=(12, 3 * len(domains)), squeeze=False)
    for row, domain in enumerate(domains):
        queue_ax, replica_ax = axes[row]
        for (name, profile), run in runs.items():
            if name != domain:
                continue
            times = [t for t, _, _ in run.series]
            queue_ax.step(times, [q for _, q, _ in run.series], where="post", label=profile)
            replica_ax.step(times, [r for _, _, r in run.series], where="post", label=profile)
        queue_ax.set_title(f"{domain}: queued requests")
        replica_ax.set_title(f"{domain}: replicas")
        for ax in (queue_ax, replica_ax):
            ax.set_xlabel("seconds")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> list[str]:
    cells = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.0f} s"
