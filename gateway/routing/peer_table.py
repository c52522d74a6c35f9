"""What a gateway knows about the nodes of the swarm, and how it ranks them.

Fed by verified DHT records (what a node has) and by each node's live load stream (how
busy it is). No I/O here: ``Tracker`` feeds the table, ``Router`` reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from protocols import Load, ModelLoad, NodeRecord

# Seconds without a load update (one a second at least): two and a half missed heartbeats,
# so a hung node is out of routing within 3 s of its last word.
SUSPECT_AFTER = 2.5
# A node's load is its own claim: past these, a claim ranks it no better. A node cannot
# draw every call with a made-up capacity or speed, only rank as a big honest one would.
MAX_RANKED_CAPACITY = 64
# Speed is a whole batch's tokens/s: past this (a GPU's batch is well past it) it only
# separates fast from slow, so a liar gains little.
MAX_RANKED_TOKENS_PER_S = 400.0
# The seconds a call is taken to hold a slot on a node no call of the model has been timed
# on yet, anywhere: a short chat answer, shortened for a node that says it is fast.
SLOT_SECONDS = 2.0
# Weight of the newest call in a node's timed seconds per call.
HELD_WEIGHT = 0.2


@dataclass
class PeerEntry:
    record: NodeRecord
    load: Load
    last_seen: float
    connected: bool = False
    rtt: float = 0.0
    # This gateway's calls started minus calls ended since the node's last load update.
    # Counted at once, so a burst between two updates does not herd onto one node, and
    # a call that just ended frees its slot before the node says so.
    local_delta: int = 0
    # This gateway's calls open on the node now, whatever the node says about its load.
    open_calls: int = 0
    # Each ready model's slots and queue, as of the node's last load update.
    models: dict[str, ModelLoad] = field(default_factory=dict)
    # Per model: this gateway's calls sent since that update, and its calls open now.
    sent: dict[str, int] = field(default_factory=dict)
    open_by_model: dict[str, int] = field(default_factory=dict)
    # Models the node refused a call for (OVERLOADED) since its last load update.
    refused: set[str] = field(default_factory=set)
    # Per model: seconds this gateway's calls held a slot here (a moving average). Timed
    # here, not claimed by the node: a node cannot draw calls by saying it is fast.
    held: dict[str, float] = field(default_factory=dict)

    @property
    def peer_id(self) -> str:
        return self.record.peer_id

    def suspect(self, now: float) -> bool:
        return not self.connected or now - self.last_seen > SUSPECT_AFTER

    def call_seconds(self, model: str, timed_elsewhere: float | None) -> float:
        """Seconds a call of ``model`` holds a slot here: as timed here; before that, as on
        the fastest node it was timed on (so a new node is tried, then timed); failing
        both, a guess from the node's own claimed speed, capped."""
        held = self.held.get(model)
        if held is not None:
            return held
        if timed_elsewhere is not None:
            return timed_elsewhere
        speed = 1.0 + min(max(0.0, self.load.tokens_per_s), MAX_RANKED_TOKENS_PER_S) / 100.0
        return SLOT_SECONDS / speed

    def expected_wait(self, call_seconds: float) -> float:
        """Seconds until a new call would end here: the work ahead of it (at least this
        gateway's own open calls, and itself) spread over the slots, each call holding a
        slot ``call_seconds``. Capacity counts up to a cap."""
        load = self.load
        ahead = max(0, load.inflight + load.queued + self.local_delta, self.open_calls) + 1
        capacity = min(max(1, load.capacity), MAX_RANKED_CAPACITY)
        return ahead / capacity * call_seconds

    def note_held(self, model: str, seconds: float) -> None:
        last = self.held.get(model)
        self.held[model] = seconds if last is None else last + HELD_WEIGHT * (seconds - last)

    def room(self, model: str, node_queue: int) -> int:
        """How many more calls for ``model`` this gateway may send now: the node's free
        slots plus up to ``node_queue`` places in its own queue, less what this gateway
        sent since the node last spoke. Other gateways' calls count once the node reports
        them, so a node's slots are not promised twice for longer than one update."""
        if model in self.refused:
            return 0
        slots = self.models.get(model)
        if slots is None:  # a node that reports only its total load
            load = self.load
            slots = ModelLoad(load.inflight, load.queued, load.capacity, node_queue)
        busy = max(
            slots.inflight + slots.queued + self.sent.get(model, 0),
            self.open_by_model.get(model, 0),
        )
        return max(0, slots.capacity + min(slots.max_queue, node_queue) - busy)

    def rank(self, model: str, timed_elsewhere: float | None = None) -> float:
        """Expected seconds to the end of a new call of ``model``, the round trip to the
        node included; lower is better. Ranking by when a call would end, not by how busy
        a node is, sends work to a node three times faster three times as often."""
        return self.expected_wait(self.call_seconds(model, timed_elsewhere)) + self.rtt


@dataclass
class PeerTable:
    entries: dict[str, PeerEntry] = field(default_factory=dict)
    # Nodes whose connection ended, by id: their last record and when they left, kept until
    # the record expires. A call for a model only they served is "not responding, try again"
    # (a node restarting, or a network blip) rather than "no such model".
    departed: dict[str, tuple[NodeRecord, float]] = field(default_factory=dict)

    def upsert(self, record: NodeRecord, now: float | None = None) -> PeerEntry:
        """Add or refresh a node from a verified record; never go back to an older seq."""
        now = time.time() if now is None else now
        self.departed.pop(record.peer_id, None)
        entry = self.entries.get(record.peer_id)
        if entry is None:
            entry = PeerEntry(record, record.load, now)
            self.entries[record.peer_id] = entry
        elif record.seq >= entry.record.seq:
            entry.record = record
        return entry

    def update_load(
        self,
        peer_id: str,
        load: Load,
        now: float | None = None,
        models: dict[str, ModelLoad] | None = None,
    ) -> None:
        entry = self.entries.get(peer_id)
        if entry is not None:
            entry.load = load
            entry.last_seen = time.time() if now is None else now
            entry.connected = True
            entry.local_delta = 0
            entry.models = models or {}
            entry.sent = {}
            entry.refused = set()

    def loadable(self, model: str) -> bool:
        """Whether a node would load ``model`` (or is loading it) if it were wanted."""
        return any(
            model in e.record.can_load
            or any(m.id == model and m.state == "loading" for m in e.record.models)
            for e in self.entries.values()
        )

    def remove(self, peer_id: str, now: float | None = None) -> None:
        entry = self.entries.pop(peer_id, None)
        if entry is not None:
            self.departed[peer_id] = (entry.record, time.time() if now is None else now)

    def forget(self, peer_id: str) -> None:
        """Drop a node without keeping it as departed (it was revoked)."""
        self.entries.pop(peer_id, None)
        self.departed.pop(peer_id, None)

    def expire(self, now: float) -> list[str]:
        """Drop nodes whose record passed its TTL; return their ids."""
        gone = [p for p, e in self.entries.items() if now > e.record.expires_at]
        for peer_id in gone:
            del self.entries[peer_id]
        for peer_id in [p for p, (r, _) in self.departed.items() if now > r.expires_at]:
            del self.departed[peer_id]
        return gone

    def departed_serving(self, model: str, task: str | None, now: float) -> list[tuple[str, float]]:
        """The departed nodes whose unexpired record lists ``model`` (for ``task``, when
        given): id and seconds gone."""
        return [
            (peer_id, now - left)
            for peer_id, (record, left) in self.departed.items()
            if now <= record.expires_at
            and any(m.id == model and task in (None, m.task) for m in record.models)
        ]

    def models(self) -> dict[str, list[PeerEntry]]:
        """Every advertised model id, with the entries that list it."""
        found: dict[str, list[PeerEntry]] = {}
        for entry in self.entries.values():
            for model in entry.record.models:
                found.setdefault(model.id, []).append(entry)
        return found

    def candidates(
        self, model: str, now: float, exclude: frozenset[str] | set[str] = frozenset()
    ) -> list[PeerEntry]:
        """Healthy nodes with ``model`` ready, best first."""
        ready = [
            e
            for e in self.entries.values()
            if e.peer_id not in exclude
            and not e.load.draining
            and not e.suspect(now)
            and any(m.id == model and m.state == "ready" for m in e.record.models)
        ]
        timed = [e.held[model] for e in ready if model in e.held]
        fastest = min(timed) if timed else None
        return sorted(ready, key=lambda e: (e.rank(model, fastest), e.rtt, e.peer_id))
