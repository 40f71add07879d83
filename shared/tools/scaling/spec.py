"""What a scaling decision follows: a domain's bounds, timings and triggers, per profile.

* ``cluster``: the domain's rendered ScaledObject (:func:`shared.tools.manifests.render.
  scaled_object`, read here the way KEDA reads it: the same values ``keda/*.yaml`` holds) plus
  the HPA's defaults KEDA relies on (sync 15 s, downscale stabilization 300 s, tolerance 0.1).
* ``keda-defaults``: the same ScaledObject with KEDA's default timings (polling 30 s, cooldown
  300 s): what the rendered values buy, side by side in `fleet scale simulate`.
* ``local``: `fleet up`'s autoscaler: the ScaledObject's bounds and triggers with the laptop
  timings of :class:`~shared.settings.Settings` (``FLEET_SCALE_*``); one loop does both KEDA's
  poll and the HPA's sync, so the sync period is the polling interval.

See docs/scaling.md for the values side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Literal

from shared.domains import Domain
from shared.errors import ConfigError
from shared.settings import Settings

__all__ = [
    "HPA_SYNC_PERIOD",
    "HPA_TOLERANCE",
    "KEDA_DEFAULT_COOLDOWN",
    "KEDA_DEFAULT_POLLING",
    "PROFILES",
    "STABILIZATION_WINDOW",
    "Profile",
    "ScalingSpec",
    "Trigger",
    "for_domain",
    "local_max_processes",
    "spec_from_scaled_object",
]

Profile = Literal["cluster", "keda-defaults", "local"]
PROFILES: tuple[Profile, ...] = ("cluster", "keda-defaults", "local")

#: kube-controller-manager ``--horizontal-pod-autoscaler-sync-period`` default (keda.md §4).
HPA_SYNC_PERIOD = 15.0
#: ``--horizontal-pod-autoscaler-downscale-stabilization`` default, used while the
#: ScaledObject sets no ``behavior`` (ours sets none).
STABILIZATION_WINDOW = 300.0
#: ``--horizontal-pod-autoscaler-tolerance`` default.
HPA_TOLERANCE = 0.1
#: ScaledObject defaults when ``pollingInterval`` / ``cooldownPeriod`` are omitted (keda.md §3).
KEDA_DEFAULT_POLLING = 30.0
KEDA_DEFAULT_COOLDOWN = 300.0
KEDA_DEFAULT_MAX = 100

_STREAM_TRIGGERS = {"redis-streams", "redis-cluster-streams", "redis-sentinel-streams"}


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """One redis-streams trigger: its ``metric`` (``lag`` via XINFO GROUPS with the XLEN
    fallback, ``pending`` via the XPENDING summary, or ``xlen``), the AverageValue ``target``
    per replica and the ``activation`` threshold (active iff metric > activation)."""

    name: str
    metric: Literal["lag", "pending", "xlen"]
    target: float
    activation: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ScalingSpec:
    """Everything :func:`~shared.tools.scaling.decision.decide` needs of one domain.

    Times are seconds. ``initial_cooldown`` is KEDA's ``initialCooldownPeriod`` (0: a domain
    that was never active may scale to zero at once).
    """

    profile: str
    min_replicas: int
    max_replicas: int
    polling_interval: float
    cooldown_period: float
    stabilization_window: float
    sync_period: float
    triggers: tuple[Trigger, ...]
    tolerance: float = HPA_TOLERANCE
    initial_cooldown: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(f"scaling spec: need 0 <= min <= max, max >= 1 ({self})")
        if self.polling_interval <= 0 or self.sync_period <= 0:
            raise ConfigError("scaling spec: polling interval and sync period must be > 0")
        if not self.triggers or any(t.target <= 0 for t in self.triggers):
            raise ConfigError("scaling spec: needs triggers with targets > 0")


def for_domain(domain: Domain, settings: Settings, profile: Profile = "cluster") -> ScalingSpec:
    """The spec of ``domain`` under ``profile`` (see the module docstring). The cluster values
    come from the rendered ScaledObject, so there is one declaration: shared/domains.py."""
    # Imported here: the renderer is the one source, but `fleet status` need not load it.
    from shared.tools.manifests.render import Platform, default_settings, scaled_object

    cluster = spec_from_scaled_object(scaled_object(default_settings(), domain, Platform()))
    if profile == "cluster":
        return cluster
    if profile == "keda-defaults":
        return replace(
            cluster,
            profile="keda-defaults",
            polling_interval=KEDA_DEFAULT_POLLING,
            cooldown_period=KEDA_DEFAULT_COOLDOWN,
        )
    if profile == "local":
        top = min(cluster.max_replicas, local_max_processes(settings))
        return replace(
            cluster,
            profile="local",
            min_replicas=min(cluster.min_replicas, top),
            max_replicas=top,
            polling_interval=settings.scale_polling_interval,
            cooldown_period=settings.scale_cooldown,
            stabilization_window=settings.scale_stabilization,
            sync_period=settings.scale_polling_interval,
        )
    raise ConfigError(f"unknown scaling profile {profile!r}; known: {', '.join(PROFILES)}")


def local_max_processes(settings: Settings) -> int:
    """``FLEET_SCALE_MAX_PROCESSES``, or the number of CPUs when unset (the local profile's
    ``max_replicas`` is the smaller of this and the domain's declared maximum)."""
    return settings.scale_max_processes or os.cpu_count() or 1


def spec_from_scaled_object(body: dict[str, Any]) -> ScalingSpec:
    """The cluster spec of a ScaledObject body, read with KEDA's defaults and its trigger-mode
    rules (keda.md §1 ``Validate``): ``consumerGroup`` with a non-zero ``lagCount`` → lag;
    ``consumerGroup`` alone → pending (``pendingEntriesCount``, default 5); no group → xlen
    (``streamLength``, default 5); ``activationLagCount`` (default 0) in every mode.

    Raises:
        ConfigError: a trigger this model does not cover (not redis-streams, or a metricType
            other than AverageValue).
    """
    spec = body["spec"]
    triggers = tuple(_trigger(i, t) for i, t in enumerate(spec["triggers"]))
    return ScalingSpec(
        profile="cluster",
        min_replicas=int(spec.get("minReplicaCount", 0)),
        max_replicas=int(spec.get("maxReplicaCount", KEDA_DEFAULT_MAX)),
        polling_interval=float(spec.get("pollingInterval", KEDA_DEFAULT_POLLING)),
        cooldown_period=float(spec.get("cooldownPeriod", KEDA_DEFAULT_COOLDOWN)),
        initial_cooldown=float(spec.get("initialCooldownPeriod", 0)),
        stabilization_window=STABILIZATION_WINDOW,
        sync_period=HPA_SYNC_PERIOD,
        triggers=triggers,
    )


def _trigger(index: int, trigger: dict[str, Any]) -> Trigger:
    name = str(trigger.get("name") or f"s{index}")
    if trigger.get("type") not in _STREAM_TRIGGERS:
        raise ConfigError(f"trigger {name!r}: only redis-streams triggers are modelled")
    if trigger.get("metricType", "AverageValue") != "AverageValue":
        raise ConfigError(f"trigger {name!r}: only metricType AverageValue is modelled")
    md: dict[str, str] = trigger["metadata"]
    activation = float(md.get("activationLagCount", "0"))
    if md.get("consumerGroup"):
        lag = float(md.get("lagCount", "0"))
        if lag != 0:
            return Trigger(name=name, metric="lag", target=lag, activation=activation)
        target = float(md.get("pendingEntriesCount", "5"))
        return Trigger(name=name, metric="pending", target=target, activation=activation)
    return Trigger(name=name, metric="xlen", target=float(md.get("streamLength", "5")), activation=activation)
