"""Where models run: each node decides for itself from what the gateways report of demand.

Gateways tell every node they reach, about once a second while calls wait, how many calls
wait for each model, how long the oldest has waited, how many they refused lately, and how
many nodes serve or load it (``Demand``). A node whose placement policy allows a model
loads it when it is wanted and under-served for ``wanted_for`` seconds running and no node
is loading it already; it unloads a model of its policy's that has been idle for
``idle_unload`` seconds and is not wanted. No node decides for another, and nothing is
central: two nodes may both load a model now and then, and the idle one unloads it later.

Hysteresis keeps the swarm from flapping: demand must last before a load, a model stays at
least ``idle_unload`` after it is ready, only one load runs at a time, and a model that
failed to load is not tried again for ``retry_after`` seconds.

No I/O here: ``Board`` keeps the reports, ``Placement.decide`` turns them and the node's
state into ``Action``s; ``node.worker.runtime`` carries them out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from protocols import Demand, ModelDemand

# A gateway's report counts this long (it sends one a second while calls wait).
REPORT_TTL = 3.0
MAX_GATEWAYS = 64  # reports kept: a node hears from the swarm's gateways, which are few


@dataclass(frozen=True)
class Policy:
    """``[node.placement]``: off unless ``allowed`` names a model."""

    allowed: list[str] = field(default_factory=list)  # models this node may load on demand
    pinned: list[str] = field(default_factory=list)  # never unloaded for being idle
    reserve_bytes: int = 0  # memory kept free of on-demand models
    idle_unload: float = 300.0  # seconds a model may sit idle before it is unloaded
    wanted_for: float = 1.0  # seconds demand must last before a load
    retry_after: float = 60.0  # seconds before a model that failed to load is tried again
    pull: bool = False  # fetch a model missing from the store (else: only what is there)

    @property
    def enabled(self) -> bool:
        return bool(self.allowed)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Policy:
        """The policy from its TOML table; ``ValueError`` naming what is wrong."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"unknown placement settings: {', '.join(unknown)}")
        policy = cls(**table)
        for name in ("allowed", "pinned"):
            value = getattr(policy, name)
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise ValueError(f"placement {name} must be a list of model ids")
        if not isinstance(policy.reserve_bytes, int) or policy.reserve_bytes < 0:
            raise ValueError("placement reserve_bytes must be 0 or more")
        for name in ("idle_unload", "wanted_for", "retry_after"):
            if not isinstance(getattr(policy, name), int | float) or getattr(policy, name) < 0:
                raise ValueError(f"placement {name} must be a number of seconds, 0 or more")
        return policy


class Board:
    """The latest demand report of each gateway, merged per model."""

    def __init__(self) -> None:
        self._reports: dict[str, tuple[float, Demand]] = {}

    def report(self, gateway: str, demand: Demand, now: float) -> None:
        if gateway not in self._reports and len(self._reports) >= MAX_GATEWAYS:
            oldest = min(self._reports, key=lambda g: self._reports[g][0])
            del self._reports[oldest]
        self._reports[gateway] = (now, demand)

    def merged(self, now: float) -> dict[str, ModelDemand]:
        """Per model: calls waiting and refused summed over gateways; the longest wait; the
        most nodes any gateway sees serving or loading it."""
        found: dict[str, ModelDemand] = {}
        for gateway, (at, demand) in list(self._reports.items()):
            if now - at > REPORT_TTL:
                del self._reports[gateway]
                continue
            for model, d in demand.models.items():
                seen = found.get(model)
                found[model] = d if seen is None else _merge(seen, d)
        return found


def _merge(a: ModelDemand, b: ModelDemand) -> ModelDemand:
    return ModelDemand(
        queued=a.queued + b.queued,
        oldest_wait=max(a.oldest_wait, b.oldest_wait),
        refused=a.refused + b.refused,
        ready=max(a.ready, b.ready),
        loading=max(a.loading, b.loading),
    )


@dataclass(frozen=True)
class Here:
    """One model on this node as placement sees it."""

    state: str  # loading | ready | draining | failed
    idle_for: float  # seconds since its last call ended (0 while it has calls)
    ready_for: float  # seconds since it became ready


@dataclass(frozen=True)
class Action:
    kind: Literal["load", "unload"]
    model: str


@dataclass
class Placement:
    policy: Policy
    _wanted_since: dict[str, float] = field(default_factory=dict)
    _failed_at: dict[str, float] = field(default_factory=dict)

    def failed(self, model: str, now: float) -> None:
        """A load of ``model`` failed: leave it for ``retry_after``."""
        self._failed_at[model] = now

    def decide(
        self,
        now: float,
        demand: Mapping[str, ModelDemand],
        here: Mapping[str, Here],
        room: Mapping[str, bool],
    ) -> list[Action]:
        """What to do now. ``room``: per model this node has, whether it would fit in the
        free memory less the reserve (a model missing is taken to fit: admission checks)."""
        policy = self.policy
        wanted = {m for m, d in demand.items() if _under_served(d, policy.wanted_for)}
        for model in list(self._wanted_since):
            if model not in wanted:
                del self._wanted_since[model]
        for model in wanted:
            self._wanted_since.setdefault(model, now)
        actions = [
            Action("unload", m)
            for m, h in here.items()
            if m in policy.allowed
            and m not in policy.pinned
            and h.state == "ready"
            and m not in wanted
            and min(h.idle_for, h.ready_for) >= policy.idle_unload
        ]
        if any(h.state == "loading" for h in here.values()):
            return actions  # one load at a time
        unloading = {a.model for a in actions}
        # Idle models that may make room for a wanted one, least recently used first.
        spare = sorted(
            (
                m
                for m, h in here.items()
                if m in policy.allowed
                and m not in policy.pinned
                and m not in wanted | unloading
                and h.state == "ready"
                and h.idle_for >= policy.wanted_for
            ),
            key=lambda m: -here[m].idle_for,
        )
        for model in _by_longest_wait(wanted, demand):
            failed = self._failed_at.get(model)
            if (
                model not in policy.allowed
                or model in here
                or now - self._wanted_since[model] < policy.wanted_for
                or demand[model].loading > 0
                or (failed is not None and now - failed < policy.retry_after)
            ):
                continue
            if room.get(model, True):
                return [*actions, Action("load", model)]
            if spare and not unloading:  # the load follows once memory is read again
                return [*actions, Action("unload", spare[0])]
        return actions


def _under_served(d: ModelDemand, patience: float) -> bool:
    """Calls are refused, or wait for a model no node serves, or have waited ``patience``
    where nodes serve it (the ones there do not keep up)."""
    if d.refused:
        return True
    if not d.queued:
        return False
    return d.ready == 0 or d.oldest_wait >= patience


def _by_longest_wait(models: Iterable[str], demand: Mapping[str, ModelDemand]) -> list[str]:
    return sorted(models, key=lambda m: (-demand[m].oldest_wait, -demand[m].queued, m))
