"""`fleet scale`: the scaling tools. `fleet scale simulate` replays an arrival trace through the
autoscaler's decision function (docs/scaling.md, "Tuning with the simulator")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import click

from shared.errors import ConfigError
from shared.tools.cli.common import echo_json, make_settings
from shared.tools.scaling.spec import PROFILES, Profile

__all__ = ["scale", "simulate"]


@click.group()
def scale() -> None:
    """Scaling tools: replay traffic through the autoscaler's rules (docs/scaling.md)."""


@scale.command()
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="FLEET_SCALE_TRACE",
    show_envvar=True,
    help="Arrival trace: JSON Lines {time, domain, duration} or CSV with that header (.csv).",
)
@click.option(
    "--generate",
    type=click.Choice(["burst", "steady", "diurnal", "workflow"]),
    envvar="FLEET_SCALE_GENERATE",
    show_envvar=True,
    help="Generate a trace instead: a burst, steady Poisson arrivals, a daily cycle, or workflow "
    "runs (steps seconds apart).",
)
@click.option(
    "--domain",
    envvar="FLEET_SCALE_DOMAIN",
    show_envvar=True,
    default=None,
    help="Domain of a generated trace (default ai); with --trace, simulate only this domain.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    envvar="FLEET_SCALE_COUNT",
    show_envvar=True,
    help="burst: requests in the burst (default 500).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    envvar="FLEET_SCALE_RATE",
    show_envvar=True,
    help="steady/diurnal: mean requests per second (default 1); workflow: runs per second (default 1/120).",
)
@click.option(
    "--span",
    type=click.FloatRange(min=0, min_open=True),
    envvar="FLEET_SCALE_SPAN",
    show_envvar=True,
    help="Seconds of generated traffic (default 3600; diurnal a week).",
)
@click.option(
    "--mean-duration",
    type=click.FloatRange(min=0),
    envvar="FLEET_SCALE_MEAN_DURATION",
    show_envvar=True,
    help="Mean execution seconds of generated requests (exponential; default 2).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    envvar="FLEET_SCALE_STEPS",
    show_envvar=True,
    help="workflow: steps per run (default 5).",
)
@click.option(
    "--gap",
    type=click.FloatRange(min=0),
    envvar="FLEET_SCALE_GAP",
    show_envvar=True,
    help="workflow: seconds between steps (default 10, ±20%).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    envvar="FLEET_SCALE_SEED",
    show_envvar=True,
    help="Random seed of the generator (same seed, same trace).",
)
@click.option(
    "--profile",
    "profiles",
    type=click.Choice(list(PROFILES)),
    multiple=True,
    envvar="FLEET_SCALE_PROFILES",
    show_envvar=True,
    help="Scaling settings to compare (repeatable; default: cluster and keda-defaults). "
    "cluster = the rendered ScaledObjects; keda-defaults = polling 30 s, cooldown 300 s; "
    "local = `fleet up`'s FLEET_SCALE_* settings.",
)
@click.option(
    "--cold-start",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    envvar="FLEET_SCALE_COLD_START",
    show_envvar=True,
    help="Seconds from asking for a replica to it taking work (pod, daprd, worker start).",
)
@click.option(
    "--wait-bound",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    envvar="FLEET_SCALE_WAIT_BOUND",
    show_envvar=True,
    help="Count the requests that waited longer than this many seconds to start.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="FLEET_JSON",
    show_envvar=True,
    help="Print one JSON document (shape in docs/scaling.md).",
)
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FLEET_SCALE_PLOT",
    show_envvar=True,
    help="Also write a PNG of queue depth and replicas over time (needs the plot extra: "
    "pip install 'function-fleet[plot]').",
)
def simulate(
    trace_file: Path | None,
    generate: str | None,
    domain: str | None,
    count: int | None,
    rate: float | None,
    span: float | None,
    mean_duration: float | None,
    steps: int | None,
    gap: float | None,
    seed: int,
    profiles: tuple[str, ...],
    cold_start: float,
    wait_bound: float,
    as_json: bool,
    plot_file: Path | None,
) -> None:
    """Replay an arrival trace through the autoscaler's decision function on a virtual clock
    and print per domain and profile: replica-seconds, peak replicas, cold starts, queue wait
    p50/p99/max and the requests that waited longer than --wait-bound.

    Give --trace FILE or --generate KIND (with its parameters). Time 0 is the scaler's first
    poll; trace times are seconds from then.
    """
    from shared.domains import get_domain
    from shared.tools.scaling import report
    from shared.tools.scaling.simulate import GENERATORS, Arrival, read_trace

    if (trace_file is None) == (generate is None):
        raise click.UsageError("give exactly one of --trace FILE and --generate KIND")
    if plot_file is not None and not report.plot_available():
        raise click.UsageError("--plot needs matplotlib: pip install 'function-fleet[plot]'")
    try:
        name = None if domain is None else get_domain(domain).name
        arrivals: list[Arrival]
        if trace_file is not None:
            arrivals = read_trace(trace_file)
            if name is not None:
                arrivals = [a for a in arrivals if a.domain == name]
            source = str(trace_file)
        else:
            assert generate is not None
            params: dict[str, Any] = {
                "count": count,
                "rate": rate,
                "span": span,
                "mean": mean_duration,
                "steps": steps,
                "gap": gap,
            }
            arrivals = _generate(GENERATORS[generate], name or "ai", params, seed)
            source = f"generated {generate} (seed {seed})"
        if not arrivals:
            raise click.UsageError("the trace has no requests" + (f" for domain {name}" if name else ""))
        chosen = cast(tuple[Profile, ...], profiles or ("cluster", "keda-defaults"))
        doc, runs = report.compare(
            arrivals,
            make_settings(),
            profiles=chosen,
            cold_start=cold_start,
            wait_bound=wait_bound,
            source=source,
            record=plot_file is not None,
        )
        if plot_file is not None:
            report.plot(runs, plot_file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        echo_json(doc)
        return
    for line in report.render_text(doc):
        click.echo(line)
    if plot_file is not None:
        click.echo(f"\nplot: {plot_file}")


def _generate(generator: Any, domain: str, params: dict[str, Any], seed: int) -> list[Any]:
    """Call ``generator`` with the parameters it takes that were given (others: its defaults)."""
    import inspect

    accepted = inspect.signature(generator).parameters
    given = {k: v for k, v in params.items() if v is not None}
    unused = sorted(k for k in given if k not in accepted)
    if unused:
        flags = ", ".join("--" + {"mean": "mean-duration"}.get(k, k) for k in unused)
        raise click.UsageError(f"{flags} does not apply to this generator")
    result: list[Any] = generator(domain, seed=seed, **given)
    return result
