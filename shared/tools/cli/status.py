"""`fleet status`: one screen per fleet — queue depth, processes, rates and the last scale
events — read from Redis only, so it works from any terminal and against a cluster
(docs/scaling.md, "fleet status")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

import click

from shared.domains import DOMAINS
from shared.errors import TransportError
from shared.settings import Settings
from shared.tools.cli.common import make_settings, read_up_state, redis_client, resolve_broker, run
from shared.tools.cli.options import home_option, redis_url_option
from shared.tools.scaling.snapshot import take_snapshot

__all__ = ["render", "status"]

#: ANSI: cursor home, clear screen (how --watch redraws in place).
CLEAR = "\x1b[H\x1b[2J"
_NO_GROUP, _NULL_LAG = "*", "?"


@click.command()
@click.option(
    "--watch",
    is_flag=True,
    envvar="FLEET_STATUS_WATCH",
    show_envvar=True,
    help="Redraw every --interval (Ctrl-C stops).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="FLEET_JSON",
    show_envvar=True,
    help="Print one JSON document (with --watch: one compact document per line).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    envvar="FLEET_STATUS_INTERVAL",
    show_envvar=True,
    help="Seconds between redraws with --watch.",
)
@redis_url_option
@home_option
def status(watch: bool, as_json: bool, interval: float, redis_url: str | None, home: str | None) -> None:
    """Show per domain the lag, pending, dead letters, processes (current/desired/min/max),
    executions per second and p50/p99 over the last minute and the last scale event; per
    process its consumer, in-flight count and idle time; then the recent scale events.

    Reads Redis only: it finds a running `fleet up` like `fleet invoke` does, or takes
    --redis-url (a fleet in a cluster: processes are the live consumers of each group).
    """
    settings = resolve_broker(make_settings(redis_url=redis_url, home=home))
    state = read_up_state(settings.home)
    local = state is not None and state.get("redis_url") == settings.redis_url
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how --watch ends
        run(_show(settings, local=local, watch=watch, as_json=as_json, interval=interval))


async def _show(settings: Settings, *, local: bool, watch: bool, as_json: bool, interval: float) -> None:
    async with redis_client(settings) as redis:
        if not watch:
            doc = await take_snapshot(redis, settings, DOMAINS, local=local)
            click.echo(json.dumps(doc, indent=2) if as_json else render(doc))
            return
        while True:
            try:
                doc = await take_snapshot(redis, settings, DOMAINS, local=local)
            except TransportError as exc:
                # A watch outlives a broker restart: say so and try again next interval.
                click.echo(f"{CLEAR}broker unreachable: {exc} (retrying every {interval:g} s)")
            else:
                click.echo(json.dumps(doc) if as_json else CLEAR + render(doc))
            await asyncio.sleep(interval)


def render(doc: dict[str, Any]) -> str:
    """The status document as the screen people read (see docs/scaling.md)."""
    fleet = doc["fleet"]
    where = "fleet up on this machine" if fleet["local"] else "broker (processes = live consumers)"
    lines = [
        f"fleet status  {_clock(fleet['at'])}  {where}  "
        f"rates over the last {fleet['window_s']:g} s ({fleet['results_sampled']} results)",
        "",
    ]
    rows = [_domain_cells(d) for d in doc["domains"]]
    headers = ["DOMAIN", "LAG", "PENDING", "DEAD", "PROCS cur/des/min/max", "EXEC/S", "P50 MS", "P99 MS"]
    lines += _table(rows, [*headers, "LAST SCALE EVENT"])
    domains = doc["domains"]
    if any(not d["group_exists"] and not d["error"] for d in domains):
        lines.append(f"{_NO_GROUP} no consumer group yet: the stream length (XLEN) stands in for the lag")
    if any(d["group_exists"] and d["lag"] is None and not d["error"] for d in domains):
        lines.append(f"{_NULL_LAG} Redis reports the lag as NULL (undeterminable); KEDA reads it as 0")
    lines += [f"{d['name']}: error: {d['error']}" for d in domains if d["error"]]
    processes = [
        [c["name"], d["name"], c["in_flight"], _idle(c["idle_ms"]), "live" if c["live"] else "gone"]
        for d in domains
        for c in d["consumers"]
    ]
    lines.append("")
    if processes:
        lines += _table(processes, ["PROCESS (consumer)", "DOMAIN", "IN-FLIGHT", "IDLE", "STATE"])
    else:
        lines.append("no processes: no consumer in any group")
    lines.append("")
    if doc["scale_events"]:
        lines.append("RECENT SCALE EVENTS (newest first)")
        lines += [f"  {d['domain']:<10} {_event(d)}" for d in doc["scale_events"]]
    else:
        lines.append("no scale events yet")
    running = doc.get("limits", {}).get("running") or {}
    if running:
        lines.append("")
        lines.append("CONCURRENCY LIMITS IN USE (executions holding a slot; maxima: fleet functions show)")
        lines += [f"  {slug:<40} {n}" for slug, n in running.items()]
    return "\n".join(lines)


def _domain_cells(d: dict[str, Any]) -> list[Any]:
    if d["error"]:
        lag: Any = "error"
    elif not d["group_exists"]:
        lag = f"{d['stream_length']}{_NO_GROUP}"
    elif d["lag"] is None:
        lag = _NULL_LAG
    else:
        lag = d["lag"]
    p = d["processes"]
    procs = "/".join("-" if p[k] is None else str(p[k]) for k in ("current", "desired", "min", "max"))
    event = d["last_scale_event"]
    return [
        d["name"],
        lag,
        d["pending"],
        d["dead_letters"],
        procs,
        f"{d['executions_per_s']:g}",
        _ms(d["p50_ms"]),
        _ms(d["p99_ms"]),
        "-" if event is None else _event(event),
    ]


def _event(e: dict[str, Any]) -> str:
    metrics = ", ".join(f"{k} {e[k]}" for k in ("lag", "pending") if e.get(k) is not None)
    return f"{_clock(e['at'])} {e['current']}→{e['desired']} {e['reason']}" + (
        f" ({metrics})" if metrics else ""
    )


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> list[str]:
    cells = [list(headers), *([("-" if c is None else str(c)) for c in r] for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return [out[0], "  ".join("-" * w for w in widths), *out[1:]]


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _idle(ms: int | None) -> str:
    if ms is None:
        return "-"  # started, not yet a consumer in Redis (it has had no delivery)
    return f"{ms / 1000:.1f} s" if ms < 120_000 else f"{ms / 60_000:.0f} min"
