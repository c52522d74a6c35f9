"""The models a node holds, the state of each, and the calls each is running.

A model is ``loading`` until its runner is made, then ``ready``; ``draining`` while it is
being unloaded (or the node shuts down): its calls finish, new ones are refused so the
gateway tries another peer; ``failed`` when it could not be loaded, with the reason. Each
ready model has its own scheduler (its slots and its queue), so one model's backlog never
holds up another's calls; the node advertises the sum as its load.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

from node.worker.runners.base import Measured, ModelRunner
from node.worker.scheduler import Changes, Scheduler
from protocols import Load, ModelInfo, ModelLoad
from protocols.operator import ModelSpec


class Busy(Exception):
    """The model is already on this node (or on its way)."""


@dataclass
class Held:
    spec: ModelSpec
    task: str
    state: str  # loading | ready | draining | failed
    runner: ModelRunner | None = None
    scheduler: Scheduler | None = None
    reason: str = ""  # why it failed
    ready_at: float = 0.0  # when it became ready (time.monotonic)

    @property
    def info(self) -> ModelInfo:
        if self.runner is not None:
            return replace(self.runner.info, state=self.state)
        return ModelInfo(self.spec.id, self.task, self.spec.dtype, 0, self.spec.slots, self.state)

    @property
    def tokens_per_s(self) -> float:
        if isinstance(self.runner, Measured) and self.runner.tokens_per_s:
            return self.runner.tokens_per_s
        return 0.0 if self.scheduler is None else self.scheduler.tokens_per_s


class Roster:
    """Every model of one node, keyed by id. ``capacity`` > 0 caps each model's slots."""

    def __init__(self, max_queue: int, capacity: int = 0) -> None:
        self.max_queue = max_queue
        self.capacity = capacity
        self.changes = Changes()
        self.draining = False
        self._held: dict[str, Held] = {}

    @classmethod
    def of(cls, runners: Mapping[str, ModelRunner], capacity: int, max_queue: int) -> Roster:
        """A roster already serving ``runners``, each with ``capacity`` slots."""
        roster = cls(max_queue, capacity)
        for model, runner in runners.items():
            roster.begin(ModelSpec(model), runner.info.task)
            roster.ready(model, runner)
        return roster

    def __iter__(self) -> Iterator[Held]:
        return iter(list(self._held.values()))

    def get(self, model: str) -> Held | None:
        return self._held.get(model)

    def begin(self, spec: ModelSpec, task: str) -> Held:
        """Mark ``spec`` as loading; ``Busy`` if it is here already (a failed one is retried)."""
        held = self._held.get(spec.id)
        if held is not None and held.state != "failed":
            raise Busy(f"{spec.id} is already {held.state} on this node")
        held = self._held[spec.id] = Held(spec, task, "loading")
        self.changes.bump()
        return held

    def ready(self, model: str, runner: ModelRunner) -> Held:
        held = self._held[model]
        slots = runner.info.max_batch if self.capacity <= 0 else self.capacity
        held.runner, held.state = runner, "draining" if self.draining else "ready"
        held.ready_at = time.monotonic()
        held.scheduler = Scheduler(max(1, slots), self.max_queue, self.changes)
        if self.draining:
            held.scheduler.drain()
        self.changes.bump()
        return held

    def failed(self, model: str, reason: str) -> None:
        held = self._held[model]
        held.state, held.reason, held.runner, held.scheduler = "failed", reason, None, None
        self.changes.bump()

    def drain_model(self, model: str) -> Held:
        """Stop taking calls for ``model``; the ones in hand go on."""
        held = self._held[model]
        held.state = "draining"
        if held.scheduler is not None:
            held.scheduler.drain()
        self.changes.bump()
        return held

    def remove(self, model: str) -> Held | None:
        held = self._held.pop(model, None)
        self.changes.bump()
        return held

    def drain(self) -> None:
        """The whole node is shutting down: every model drains."""
        self.draining = True
        for held in self._held.values():
            if held.state == "ready":
                self.drain_model(held.spec.id)
        self.changes.bump()

    async def wait_idle(self) -> None:
        """Return once no model has a call running or queued."""
        while self.inflight or self.queued:
            await self.changes.wait_changed(self.changes.version)

    @property
    def version(self) -> int:
        return self.changes.version

    async def wait_changed(self, seen: int) -> None:
        await self.changes.wait_changed(seen)

    @property
    def inflight(self) -> int:
        return sum(s.inflight for s in self._schedulers())

    @property
    def queued(self) -> int:
        return sum(s.queued for s in self._schedulers())

    def load(self, memory_free: int) -> Load:
        """The node's live load: every ready model's slots, calls and speed, summed."""
        serving = [h for h in self._held.values() if h.scheduler is not None]
        return Load(
            self.inflight,
            self.queued,
            sum(h.scheduler.capacity for h in serving if h.state == "ready" and h.scheduler),
            round(sum(h.tokens_per_s for h in serving), 2),
            memory_free,
            self.draining,
        )

    def model_loads(self) -> dict[str, ModelLoad]:
        """Each ready model's slots, calls, queue room (gateways send no more than fits) and
        speed (what a gateway expects a call to take before it has timed one)."""
        return {
            h.spec.id: ModelLoad(
                s.inflight, s.queued, s.capacity, s.max_queue, round(h.tokens_per_s, 2)
            )
            for h in self._held.values()
            if h.state == "ready" and (s := h.scheduler) is not None
        }

    def _schedulers(self) -> list[Scheduler]:
        return [h.scheduler for h in self._held.values() if h.scheduler is not None]
